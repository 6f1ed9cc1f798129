"""Paths walked through directory descriptors, for a filesystem another local user shares.

Input: a path or an open directory fd and a name. Output: fds, bytes, or a removal. A path
is walked from `/` one component at a time (`O_DIRECTORY|O_NOFOLLOW`), and every directory
on the way must be owned by us or root and writable by nobody else (or be sticky, like
/dev/shm), so another user cannot swap a component between check and use. Everything below
an opened directory is done relative to its fd (`dir_fd=`), with owner and type checked by
`fstat` on what was opened. No policy here: which directories are ours to reuse or remove is
`runtime_dir`'s call. Raises OSError or `UnsafePathError`.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import secrets as _random
import shutil
import stat
from pathlib import Path

from devsecrets.atomic import write_at
from devsecrets.errors import TmpfsError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO must not block
_WRITE = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_MAX_LINKS = 40
TRASH = ".trash-"  # a directory being removed: renamed away first


class UnsafePathError(TmpfsError):
    """A path another user could change under us, or a directory that is not ours."""


class NotOurs(UnsafePathError):
    """A directory (or symlink) on the way belongs to another user: `owner`."""

    def __init__(self, message: str, owner: int) -> None:
        super().__init__(message)
        self.owner = owner


def who(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def check_dir(fd: int, shown: str) -> os.stat_result:
    """A directory on the way to the root: ours or root's, and nobody else can rename in it."""
    info = os.fstat(fd)
    if info.st_uid not in (os.geteuid(), 0):
        raise NotOurs(
            f"{shown} belongs to {who(info.st_uid)}, who could swap what is inside it; "
            "refusing to use it",
            info.st_uid,
        )
    sticky = bool(info.st_mode & stat.S_ISVTX)
    others = info.st_mode & 0o002 or (info.st_mode & 0o020 and _shared_group(info.st_gid))
    if others and not sticky:
        raise UnsafePathError(
            f"{shown} is writable by other users, who could swap what is inside it; "
            "refusing to use it",
            hint="point DEVSECRETS_RUNTIME_DIR at a directory only you (or root) can write",
        )
    return info


def _shared_group(gid: int) -> bool:
    """Whether a user other than us or root belongs to group `gid` (as a member or by primary
    group): a directory that group may write is then one they can swap entries in. Looked up
    (not cached: groups change) only for a group-writable directory on the way, so rarely."""
    me = {0, os.geteuid()}
    try:
        members = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        members = set()
    for user in pwd.getpwall():
        if user.pw_uid not in me and (user.pw_gid == gid or user.pw_name in members):
            return True
    return bool(members - {u.pw_name for u in pwd.getpwall() if u.pw_uid in me})


def walk(path: Path) -> tuple[int, str, list[str]]:
    """Open the deepest existing directory of `path`; returns (fd, its real path, missing
    components). Symlinks are followed by hand, only inside directories checked safe."""
    parts = [p for p in os.path.abspath(path).split("/") if p]
    fds = [os.open("/", DIR_FLAGS)]
    names: list[str] = []
    links = 0
    try:
        check_dir(fds[0], "/")
        while parts:
            name = parts.pop(0)
            if name == "..":
                if len(fds) > 1:
                    os.close(fds.pop())
                    names.pop()
                continue
            shown = "/" + "/".join([*names, name])
            try:
                fd = os.open(name, DIR_FLAGS, dir_fd=fds[-1])
            except PermissionError:
                owner = os.stat(name, dir_fd=fds[-1], follow_symlinks=False).st_uid
                raise NotOurs(
                    f"{shown} belongs to {who(owner)}; refusing to use it", owner
                ) from None
            except FileNotFoundError:
                if ".." in parts:
                    raise UnsafePathError(f"{path}: '..' after a missing directory") from None
                return fds.pop(), "/" + "/".join(names), [name, *parts]
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                link = os.stat(name, dir_fd=fds[-1], follow_symlinks=False)
                if not stat.S_ISLNK(link.st_mode):
                    raise UnsafePathError(f"{shown} is not a directory") from None
                if link.st_uid not in (os.geteuid(), 0):  # planted in a sticky dir like /tmp
                    raise NotOurs(
                        f"{shown} is a symlink owned by {who(link.st_uid)}; refusing to follow it",
                        link.st_uid,
                    ) from None
                links += 1
                if links > _MAX_LINKS:
                    raise UnsafePathError(f"{path}: too many symlinks") from None
                target = os.readlink(name, dir_fd=fds[-1])
                if target.startswith("/"):
                    while len(fds) > 1:
                        os.close(fds.pop())
                    names.clear()
                parts = [p for p in target.split("/") if p and p != "."] + parts
                continue
            fds.append(fd)
            names.append(name)
            check_dir(fd, shown)
        return fds.pop(), "/" + "/".join(names), []
    finally:
        for fd in fds:
            os.close(fd)


def open_dir(path: Path) -> int:
    """An fd on the existing directory `path`, reached safely (see `walk`); FileNotFoundError
    if it is missing."""
    fd, _, missing = walk(path)
    if missing:
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "no such directory", str(path))
    return fd


def make_dirs(fd: int, names: list[str]) -> int:
    """mkdir each of `names` below `fd`, one inside the other (0700; an existing one is
    reused if it passes `check_dir`); returns the last one's fd. Takes `fd` over: it is
    closed in every case."""
    try:
        for name in names:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=fd)
            child = os.open(name, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
            check_dir(fd, name)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_child(parent: int, name: str) -> int:
    """An fd on the directory `name` in `parent`; OSError if it is a symlink or no directory."""
    return os.open(name, DIR_FLAGS, dir_fd=parent)


def still_there(parent: int, name: str, fd: int) -> bool:
    """`name` in `parent` is still the directory open as `fd` (not removed, not swapped)."""
    try:
        now = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def read_file(dir_fd: int, name: str, *, limit: int = 1 << 20) -> bytes | None:
    """A regular file of ours in `dir_fd`, or None (missing, a symlink, someone else's)."""
    try:
        fd = os.open(name, READ_FILE, dir_fd=dir_fd)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return None
        return f.read(limit)


def write_file(dir_fd: int, name: str, data: bytes, mode: int = 0o600) -> None:
    """Atomically replace `name` in `dir_fd` (temp file + rename in the same directory)."""
    write_at(dir_fd, name, data, mode=mode)


def remove_dir(parent: int, name: str, fd: int) -> bool:
    """Remove the directory `name` in `parent`, open as `fd`, and everything in it; False if
    the name no longer leads to `fd`. Renamed first, so no one finds a half-removed directory
    under its name; a removal killed midway leaves a `TRASH*` directory behind."""
    trash = f"{TRASH}{_random.token_hex(6)}"
    os.rename(name, trash, src_dir_fd=parent, dst_dir_fd=parent)
    if not still_there(parent, trash, fd):  # pragma: no cover - swapped between open and rename
        os.rename(trash, name, src_dir_fd=parent, dst_dir_fd=parent)
        return False
    remove_tree(parent, trash)
    return True


def remove_tree(parent: int, name: str) -> None:
    """Remove `name` in `parent` and everything below it, following no symlink."""
    # shutil.rmtree walks with dir fds (O_NOFOLLOW) when dir_fd is given:
    # https://docs.python.org/3/library/shutil.html#shutil.rmtree.avoids_symlink_attacks
    shutil.rmtree(name, dir_fd=parent, ignore_errors=True)


def shred_all(dir_fd: int) -> None:
    """Overwrite our regular files in `dir_fd` before they are unlinked: keeps the bytes out
    of a later page reuse. A read-only file of ours (0400) is made writable first."""
    for name in os.listdir(dir_fd):
        with contextlib.suppress(OSError):
            _shred(dir_fd, name)


def _shred(dir_fd: int, name: str) -> None:
    fd = os.open(name, READ_FILE, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or not info.st_size:
            return
        if not info.st_mode & stat.S_IWUSR:
            os.fchmod(fd, stat.S_IMODE(info.st_mode) | stat.S_IWUSR)
        out = os.open(name, _WRITE, dir_fd=dir_fd)
        try:
            if (os.fstat(out).st_dev, os.fstat(out).st_ino) == (info.st_dev, info.st_ino):
                os.write(out, b"\0" * info.st_size)
        finally:
            os.close(out)
    finally:
        os.close(fd)
