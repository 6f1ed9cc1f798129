"""What an interrupted `recipients rm` still owes: `.devsecrets/.journal`, local, gitignored.

`recipients rm` writes it (under the writers' lock, atomically) before it changes anything,
naming the removed members and their keys, and deletes it once every file is rotated. A run
killed in between leaves it: every command then says the removal is incomplete, and running
`recipients rm NAME` again rotates the files that still hold a removed key, then deletes it.
Input: the store directory. Output: {member: key}. No crypto here.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from devsecrets.errors import StoreError

JOURNAL_FILE = ".journal"
MAX_SIZE = 256 * 1024


def read(root: Path, read_capped: Callable[..., bytes]) -> dict[str, str]:
    """The removed members still owed a rotation; {} when nothing is pending."""
    path = root / JOURNAL_FILE
    try:
        text = read_capped(path, MAX_SIZE, lambda: FileNotFoundError(path))
    except FileNotFoundError:
        return {}
    except StoreError as e:  # a symlink, a FIFO, a directory: not what `recipients rm` wrote
        if e.hint == "restore it from git" or e.hint is None:
            e.hint = f"it is local and never part of the store: delete it (`rm {path}`)"
        raise
    try:
        raw = json.loads(text)
        removed = raw["removed"]
        if not isinstance(removed, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in removed.items()
        ):
            raise ValueError
    except (ValueError, KeyError, TypeError) as e:
        raise StoreError(
            f"{path} is damaged",
            hint="run `devsecrets rekey` to rotate every data key, then delete it",
        ) from e
    return dict(removed)


def write(root: Path, removed: Mapping[str, str], atomic_write: Callable[..., None]) -> None:
    atomic_write(root / JOURNAL_FILE, json.dumps({"removed": dict(removed)}).encode() + b"\n")


def clear(root: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(root / JOURNAL_FILE)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def describe(removed: Mapping[str, str]) -> StoreError:
    first = sorted(removed)[0]  # finishing one finishes all: every owed key is rotated away
    return StoreError(
        f"an interrupted `recipients rm` of {', '.join(sorted(removed))} did not finish: "
        "some secrets may still be readable by the removed key",
        hint=f"run `devsecrets recipients rm {first}` again to finish it",
    )
