"""The one way devsecrets replaces a file: write a hidden temp file, then rename it over.

Used by the store (SOPS files, recipients.yaml), the runtime directory (secret files, the
override, the state; through directory descriptors) and the compose-version cache. A reader
sees the old or the new bytes, never a mix; a writer killed half-way leaves at most a hidden
temp file (`.NAME.tmp-*`) and the old file. The temp file is created with O_EXCL|O_NOFOLLOW,
so nothing planted at its name is followed. Raises OSError: each caller turns it into its own
error, naming what it was writing.
"""

from __future__ import annotations

import contextlib
import os
import secrets as _random
from pathlib import Path

TEMP_GLOB = ".*.tmp-*"  # what a killed writer can leave behind (the store's .gitignore)
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_at(
    dir_fd: int,
    name: str,
    data: bytes,
    *,
    mode: int = 0o600,
    umask: bool = True,
    owner: tuple[int, int] | None = None,
    temp_dir_fd: int | None = None,
    durable: bool = False,
    sync_dir: bool = True,
) -> None:
    """Replace `name` in the directory `dir_fd` with `data`.

    `mode`: the file's mode, minus the process umask unless `umask` is False (then exact).
    `owner`: (uid, gid) set on the open file before it becomes visible (root only).
    `temp_dir_fd`: where the temp file goes, on the same filesystem (default: `dir_fd`).
    `durable`: fsync the file and the directory, for files on disk that must survive a crash.
    `sync_dir`: False leaves the directory's fsync to the caller (one for several files).
    """
    where = dir_fd if temp_dir_fd is None else temp_dir_fd
    temp = f".{name}.tmp-{os.getpid()}-{_random.token_hex(4)}"
    fd = os.open(temp, _NEW, mode if umask else 0o600, dir_fd=where)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if owner is not None and owner != (os.getuid(), os.getgid()):
                os.fchown(out.fileno(), *owner)
            if not umask:
                os.fchmod(out.fileno(), mode)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.rename(temp, name, src_dir_fd=where, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=where)
        raise
    if durable and sync_dir:
        os.fsync(dir_fd)


def write_atomic(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o600,
    umask: bool = True,
    durable: bool = False,
    sync_dir: bool = True,
) -> None:
    """`write_at` for a path: replace `path` with `data` (see `write_at`)."""
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        write_at(
            dir_fd, path.name, data, mode=mode, umask=umask, durable=durable, sync_dir=sync_dir
        )
    finally:
        os.close(dir_fd)
