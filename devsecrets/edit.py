"""`devsecrets edit`: the user's editor on a copy that lives only on tmpfs.

Input: store, name, editor command. Output: whether the store changed. The copy is 0600 in a
0700 directory on tmpfs and is removed in every case (editor failure, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType

from devsecrets.errors import EditError, SecretNotFoundError
from devsecrets.keys import Identities
from devsecrets.store import Store, validate_name, validate_size


def editor_command(env: Mapping[str, str]) -> list[str]:
    for var in ("VISUAL", "EDITOR"):
        if env.get(var):
            return shlex.split(env[var])
    for fallback in ("vim", "nano", "vi"):
        if shutil.which(fallback):
            return [fallback]
    raise EditError("no editor found", hint="set $VISUAL or $EDITOR")


def edit_secret(
    store: Store,
    name: str,
    identities: Identities,
    editor: list[str],
    private_dir: Path,
    confirm_empty: Callable[[], bool],
    strip_newline: Callable[[], bool] = lambda: False,
) -> bool:
    """Edit `name` (new if absent); returns True when the store was written.

    When the editor added a trailing newline the old value did not have (most do),
    `strip_newline()` decides whether it goes; by default it stays."""
    validate_name(name)
    try:
        before = store.read(name, identities).value
    except SecretNotFoundError:
        identities.require()
        before = None
    with _scratch_file(private_dir, name, before or b"") as path:
        try:
            result = subprocess.run([*editor, str(path)], check=False)  # noqa: S603
        except OSError as e:
            raise EditError(f"could not start editor {editor[0]!r}: {e.strerror}") from e
        if result.returncode != 0:
            raise EditError(f"editor exited with code {result.returncode}; nothing stored")
        after = path.read_bytes()
    if added_newline(before, after) and strip_newline():
        after = after[:-1]
    if after == before:
        return False
    if after == b"" and not confirm_empty():
        raise EditError("empty value; nothing stored")
    validate_size(after)
    return store.write(name, after, identities)


def added_newline(before: bytes | None, after: bytes) -> bool:
    """The editor appended a newline the old value lacked. For a new secret, only a one-line
    value counts: a typed password, not a PEM file that should end in a newline."""
    if not after.endswith(b"\n") or after.endswith(b"\r\n"):
        return False
    if before is None:
        return after.count(b"\n") == 1 and len(after) > 1
    return not before.endswith(b"\n") and after[:-1] != b""


@contextlib.contextmanager
def _scratch_file(private_dir: Path, name: str, content: bytes) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="edit-", dir=private_dir))  # 0700
    path = directory / name  # keeps the secret's name, so editors pick a sensible mode
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwinds through the finally below

    signal.signal(signal.SIGTERM, on_term)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        yield path
    finally:
        for leftover in directory.rglob("*"):  # the editor may have left swap or backup files
            _shred(leftover)
        shutil.rmtree(directory, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)


def _shred(path: Path) -> None:
    """Overwrite before unlink: cheap, and it keeps the bytes out of a later tmpfs page reuse."""
    with contextlib.suppress(OSError):
        if path.is_file() and not path.is_symlink():
            size = path.stat().st_size
            with open(path, "r+b") as out:
                out.write(b"\0" * size)
