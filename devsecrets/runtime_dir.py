"""The runtime tree on tmpfs: its root, per-project directories, their state, locks, cleanup.

Input: the environment, paths under the root. Output: directories devsecrets created and can
prove it created (a marker file owned by us, checked through an open descriptor). Every path
is walked from `/` one component at a time through directory descriptors (`O_NOFOLLOW`), and
every directory on the way must be owned by us or root and writable by nobody else (or be
sticky, like /dev/shm), so another local user cannot swap a component between check and use.
Never deletes, chmods or reuses a directory without our marker; never follows a symlink that
another user could have planted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pwd
import re
import secrets as _random
import shutil
import stat
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from devsecrets import tmpfs
from devsecrets.atomic import write_at
from devsecrets.errors import DevsecretsError, TmpfsError

MARKER = ".devsecrets-owned"  # "this directory was made by devsecrets for uid N"
LOCK = ".lock"  # flock'ed (shared) by every process that uses the directory
STATE = "state.json"
COMPOSE_CACHE = ".compose-version.json"  # in the root, beside the project dirs
OVERRIDE = "override.yml"  # in a project dir
STAGING = ".staging"
POINTER = "runtime-dir"  # in the user's cache dir: where a squatted default went
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO must not block
_WRITE = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_MAX_LINKS = 40
SHM = Path("/dev/shm")  # noqa: S108 - sticky; our directory in it is checked and 0700

Warn = Callable[[str], None]


class UnsafePathError(TmpfsError):
    """A path another user could change under us, or a directory that is not ours."""


class _NotOurs(UnsafePathError):
    def __init__(self, message: str, owner: int) -> None:
        super().__init__(message)
        self.owner = owner


def _who(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _check_dir(fd: int, shown: str) -> os.stat_result:
    """A directory on the way to the root: ours or root's, and nobody else can rename in it."""
    info = os.fstat(fd)
    if info.st_uid not in (os.geteuid(), 0):
        raise _NotOurs(
            f"{shown} belongs to {_who(info.st_uid)}, who could swap what is inside it; "
            "refusing to use it",
            info.st_uid,
        )
    sticky = bool(info.st_mode & stat.S_ISVTX)
    others = info.st_mode & 0o002 or (info.st_mode & 0o020 and info.st_gid != os.getegid())
    if others and not sticky:
        raise UnsafePathError(
            f"{shown} is writable by other users, who could swap what is inside it; "
            "refusing to use it",
            hint="point DEVSECRETS_RUNTIME_DIR at a directory only you (or root) can write",
        )
    return info


def _walk(path: Path) -> tuple[int, str, list[str]]:
    """Open the deepest existing directory of `path`; returns (fd, its real path, missing
    components). Symlinks are followed by hand, only inside directories checked safe."""
    parts = [p for p in os.path.abspath(path).split("/") if p]
    fds = [os.open("/", _DIR_FLAGS)]
    names: list[str] = []
    links = 0
    try:
        _check_dir(fds[0], "/")
        while parts:
            name = parts.pop(0)
            if name == "..":
                if len(fds) > 1:
                    os.close(fds.pop())
                    names.pop()
                continue
            shown = "/" + "/".join([*names, name])
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=fds[-1])
            except PermissionError:
                owner = os.stat(name, dir_fd=fds[-1], follow_symlinks=False).st_uid
                raise _NotOurs(
                    f"{shown} belongs to {_who(owner)}; refusing to use it", owner
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
                    raise _NotOurs(
                        f"{shown} is a symlink owned by {_who(link.st_uid)}; refusing to follow it",
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
            _check_dir(fd, shown)
        return fds.pop(), "/" + "/".join(names), []
    finally:
        for fd in fds:
            os.close(fd)


def open_dir(path: Path, *, create: bool = False, mode: int = 0o700) -> int:
    """An fd on directory `path`, reached safely; missing components are created (`mode`)
    when `create`, and those we create get our marker. Raises FileNotFoundError otherwise."""
    fd, _, missing = _walk(path)
    try:
        if missing and not create:
            raise FileNotFoundError(errno.ENOENT, "no such directory", str(path))
        return _make_missing(fd, missing, mode) if missing else fd
    except BaseException:
        os.close(fd)
        raise


def _make_missing(fd: int, missing: list[str], mode: int) -> int:
    """mkdir each missing component (0700, unmarked: a parent such as ~/.cache is the user's
    once it exists), the last one marked ours; returns its fd and closes `fd`."""
    for name in missing[:-1]:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=fd)
        fd = _replace(fd, os.open(name, _DIR_FLAGS, dir_fd=fd))
        _check_dir(fd, name)
    return _replace(fd, make_owned(fd, missing[-1], mode))


def _replace(old: int, new: int) -> int:
    os.close(old)
    return new


def make_owned(parent: int, name: str, mode: int = 0o700) -> int:
    """mkdir `name` in `parent` (it must not exist), mark it ours; returns its fd."""
    os.mkdir(name, mode & 0o700, dir_fd=parent)  # group/other bits only once it is marked
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    try:
        marker = os.open(MARKER, NEW_FILE, 0o600, dir_fd=fd)
        with os.fdopen(marker, "w") as out:
            out.write(f"made by devsecrets for uid {os.geteuid()}\n")
        os.fchmod(fd, mode)
        return fd
    except BaseException:
        os.close(fd)
        raise


def is_owned(fd: int) -> bool:
    """The directory holds our marker: a regular file owned by us (checked with fstat)."""
    try:
        marker = os.open(MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        return False
    try:
        info = os.fstat(marker)
        return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()
    finally:
        os.close(marker)


def open_owned(path: Path, *, mode: int = 0o700) -> int:
    """An fd on our directory `path`, created if missing; refused if it exists without our
    marker (someone else's directory is never reused), brought back to `mode` if changed."""
    fd = open_dir(path.parent)
    try:
        try:
            child = os.open(path.name, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            return make_owned(fd, path.name, mode)
    finally:
        os.close(fd)
    if not is_owned(child) or os.fstat(child).st_uid != os.geteuid():
        os.close(child)
        raise UnsafePathError(
            f"{path} exists but was not made by devsecrets; refusing to use it",
            hint="move it away, or point DEVSECRETS_RUNTIME_DIR elsewhere",
        )
    if stat.S_IMODE(os.fstat(child).st_mode) != mode:
        os.fchmod(child, mode)
    return child


# -- the root --------------------------------------------------------------------------------


def private_root(
    env: Mapping[str, str], *, allow_disk: bool = False, warn: Warn | None = None
) -> Path:
    """The runtime root: a 0700 directory on tmpfs that devsecrets made; created if missing.

    DEVSECRETS_RUNTIME_DIR if set (refused on disk unless `allow_disk`), else
    `$XDG_RUNTIME_DIR/devsecrets`, else `/dev/shm/devsecrets-<uid>` (if another user made
    that one: a private `/dev/shm/devsecrets-<uid>-<random>`, remembered in the cache dir).
    A directory that exists but is not ours gets a `devsecrets` subdirectory of our own."""
    try:
        return _private_root(env, allow_disk, warn or (lambda line: None))
    except OSError as e:
        raise TmpfsError(f"runtime dir: {e.filename or ''}: {e.strerror}") from e


def _private_root(env: Mapping[str, str], allow_disk: bool, warn: Warn) -> Path:
    explicit = env.get("DEVSECRETS_RUNTIME_DIR")
    if explicit:
        if not (allow_disk or _memory_backed(Path(explicit))):
            raise TmpfsError(
                f"DEVSECRETS_RUNTIME_DIR={explicit} is not on a tmpfs",
                hint="point it at a tmpfs, or pass --allow-disk to accept plaintext on disk",
            )
        return _claim(Path(explicit))
    looked = []
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg:
        looked.append(xdg)
        if Path(xdg).is_dir() and _memory_backed(Path(xdg)):
            return _claim(Path(xdg) / "devsecrets")
    shm = SHM
    looked.append(str(shm))
    if shm.is_dir() and _memory_backed(shm):
        default = shm / f"devsecrets-{os.geteuid()}"
        try:
            return _claim(default)
        except _NotOurs as e:
            fallback = _fallback(env, shm)
            warn(
                f"{default} belongs to {_who(e.owner)}, not you; using {fallback} instead "
                "(set DEVSECRETS_RUNTIME_DIR to a private tmpfs directory to choose)"
            )
            return fallback
    if allow_disk:
        return _claim(_cache_home(env) / "devsecrets" / "run")
    raise TmpfsError(
        f"no tmpfs for plaintext: looked at {', '.join(looked)}",
        hint="mount a tmpfs there, or pass --allow-disk to accept plaintext on disk",
    )


def _memory_backed(path: Path) -> bool:
    """Whether `path`, or its deepest existing ancestor, is on tmpfs."""
    fd, real, _ = _walk(path)
    os.close(fd)
    return tmpfs.is_memory_backed(Path(real))


def _claim(base: Path, *, depth: int = 0) -> Path:
    """`base` if it is ours or absent (then made ours), else a subdirectory of our own."""
    fd, real, missing = _walk(base)
    try:
        if missing:
            fd = _make_missing(fd, missing, 0o700)
            return Path(real, *missing)
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise _NotOurs(
                f"{real} belongs to {_who(info.st_uid)}; refusing to use it", info.st_uid
            )
        if is_owned(fd):
            if stat.S_IMODE(info.st_mode) != 0o700:
                os.fchmod(fd, 0o700)
            return Path(real)
    finally:
        os.close(fd)
    if depth >= 2:
        raise _NotOurs(f"{real} was not made by devsecrets; refusing to use it", os.geteuid())
    return _claim(Path(real) / "devsecrets", depth=depth + 1)


def _cache_home(env: Mapping[str, str]) -> Path:
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"])
    return Path(env.get("HOME") or Path.home()) / ".cache"


def _fallback(env: Mapping[str, str], shm: Path) -> Path:
    """Our private directory in /dev/shm when the default name is squatted, found again by
    later commands through a pointer file in the user's cache dir."""
    pattern = re.compile(rf"devsecrets-{os.geteuid()}-[0-9a-f]{{16}}")
    cache = _cache_home(env) / "devsecrets"
    recorded = _read_small(cache / POINTER)
    if recorded is not None and recorded.parent == shm and pattern.fullmatch(recorded.name):
        with contextlib.suppress(OSError, UnsafePathError):
            fd = open_dir(recorded)
            try:
                if is_owned(fd) and os.fstat(fd).st_uid == os.geteuid():
                    return recorded
            finally:
                os.close(fd)
    shm_fd = open_dir(shm)
    try:
        while True:
            name = f"devsecrets-{os.geteuid()}-{_random.token_hex(8)}"
            with contextlib.suppress(FileExistsError):
                os.close(make_owned(shm_fd, name))
                break
    finally:
        os.close(shm_fd)
    chosen = shm / name
    cache_fd = open_dir(cache, create=True)
    try:
        write_file(cache_fd, POINTER, f"{chosen}\n".encode())
    finally:
        os.close(cache_fd)
    return chosen


def _read_small(path: Path) -> Path | None:
    try:
        fd = open_dir(path.parent)
    except (OSError, UnsafePathError):
        return None
    try:
        data = read_file(fd, path.name, limit=4096)
    finally:
        os.close(fd)
    return Path(data.decode(errors="replace").strip()) if data else None


# -- files inside our directories --------------------------------------------------------------


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


def read_state(project_dir: Path) -> dict[str, Any]:
    try:
        fd = open_dir(project_dir)
    except (OSError, UnsafePathError):
        return {}
    try:
        return _state(fd)
    finally:
        os.close(fd)


def _state(fd: int) -> dict[str, Any]:
    try:
        state = json.loads(read_file(fd, STATE) or b"{}")
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def update_state(project_dir: Path, **changes: Any) -> None:
    """Merge `changes` into the project's state.json (who runs it, what was rendered)."""
    try:
        _update_state(project_dir, changes)
    except OSError as e:
        raise TmpfsError(f"cannot write {project_dir / STATE}: {e.strerror}") from e


def _update_state(project_dir: Path, changes: dict[str, Any]) -> None:
    fd = open_owned(project_dir)
    try:
        state = {**_state(fd), **changes}
        write_file(fd, STATE, json.dumps(state, indent=2, sort_keys=True).encode())
    finally:
        os.close(fd)


def existing_override(env: Mapping[str, str], project: str) -> Path | None:
    """The override a running stack was started with, if there is one (no root: none)."""
    try:
        root = private_root(env, allow_disk=False)
    except DevsecretsError:
        return None
    override = root / project / OVERRIDE
    return override if override.exists() else None


# -- locks and removal -----------------------------------------------------------------------


class Held:
    """A flock on a directory's lock file, for as long as this object lives."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:
        self.release()


def _lock(dir_fd: int, flags: int) -> int | None:
    """flock our directory's lock file; None if `LOCK_NB` and someone holds it."""
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        fcntl.flock(fd, flags)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def hold(project_dir: Path, *, exclusive: bool = False) -> Held:
    """Lock our directory `project_dir` (made if missing) against cleanup by others, and make
    sure the locked directory is still the one at that path (cleanup may have just removed
    the one we opened)."""
    try:
        return _hold(project_dir, exclusive)
    except OSError as e:
        raise TmpfsError(f"cannot lock {project_dir}: {e.strerror}") from e


def _hold(project_dir: Path, exclusive: bool) -> Held:
    while True:
        fd = open_owned(project_dir)
        try:
            lock = _lock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            assert lock is not None  # noqa: S101 - a blocking flock always returns an fd
            parent = open_dir(project_dir.parent)
            try:
                now = os.stat(project_dir.name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                now = None
            finally:
                os.close(parent)
            mine = os.fstat(fd)
            if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                return Held(lock)
            os.close(lock)
        finally:
            os.close(fd)


def wipe(project_dir: Path) -> bool:
    """Remove our directory `project_dir` and everything in it; False if it is not ours."""
    try:
        parent = open_dir(project_dir.parent)
    except (OSError, UnsafePathError):
        return False
    try:
        return _remove(parent, project_dir.name)
    finally:
        os.close(parent)


def _remove(parent: int, name: str) -> bool:
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError:
        return False
    try:
        if not is_owned(fd):
            return False
        # renamed first so no one finds a half-removed directory under its name
        trash = f".trash-{_random.token_hex(6)}"
        os.rename(name, trash, src_dir_fd=parent, dst_dir_fd=parent)
        moved = os.stat(trash, dir_fd=parent, follow_symlinks=False)
        mine = os.fstat(fd)
        if (moved.st_dev, moved.st_ino) != (mine.st_dev, mine.st_ino):  # pragma: no cover
            os.rename(trash, name, src_dir_fd=parent, dst_dir_fd=parent)  # only we write here
            return False
    finally:
        os.close(fd)
    # shutil.rmtree walks with dir fds (O_NOFOLLOW) when dir_fd is given:
    # https://docs.python.org/3/library/shutil.html#shutil.rmtree.avoids_symlink_attacks
    shutil.rmtree(trash, dir_fd=parent, ignore_errors=True)
    return True


IsStale = Callable[[str, dict[str, Any]], bool]


def clean_stale(root: Path, keep: str, is_stale: IsStale) -> list[str]:
    """Remove our project directories in `root` that nobody holds locked and that `is_stale`
    (given the name and its state) says are done with. Returns the names removed."""
    try:
        root_fd = open_dir(root)
    except (OSError, UnsafePathError):
        return []
    removed: list[str] = []
    try:
        if not is_owned(root_fd):  # a root we did not make: its entries are not ours either
            return removed
        for name in sorted(os.listdir(root_fd)):
            if name == keep or name.startswith("."):
                continue
            with contextlib.suppress(OSError):
                if _clean_one(root_fd, name, is_stale):
                    removed.append(name)
        for name in os.listdir(root_fd):  # leftovers of a removal that was killed midway
            if name.startswith(".trash-"):
                _remove(root_fd, name)
    finally:
        os.close(root_fd)
    return removed


def _clean_one(root_fd: int, name: str, is_stale: IsStale) -> bool:
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
    except OSError:
        return False  # a file (the compose version cache), a symlink, gone meanwhile
    try:
        if not is_owned(fd):
            return False
        lock = _lock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if lock is None:
            return False  # a running up, watch or edit holds it
        try:
            if not is_stale(name, _state(fd)):
                return False
            return _remove(root_fd, name)
        finally:
            os.close(lock)
    finally:
        os.close(fd)


@contextlib.contextmanager
def scratch_dir(root: Path, prefix: str) -> Iterator[tuple[Path, int]]:
    """A new private directory of ours in `root`, locked exclusively while in use, removed
    (with its content overwritten first) at the end. Yields its path and fd."""
    try:
        root_fd = open_dir(root)
    except OSError as e:
        raise TmpfsError(f"cannot open {root}: {e.strerror}") from e
    try:
        while True:
            name = f"{prefix}{_random.token_hex(6)}"
            try:
                fd = make_owned(root_fd, name)
                break
            except FileExistsError:
                continue
            except OSError as e:
                raise TmpfsError(f"cannot make a private directory in {root}: {e.strerror}") from e
        lock = _lock(fd, fcntl.LOCK_EX)
        try:
            yield Path(root, name), fd
        finally:
            _shred_all(fd)
            _remove(root_fd, name)
            if lock is not None:
                os.close(lock)
            os.close(fd)
    finally:
        os.close(root_fd)


def _shred_all(dir_fd: int) -> None:
    """Overwrite regular files before unlink: keeps the bytes out of a later page reuse."""
    for name in os.listdir(dir_fd):
        with contextlib.suppress(OSError):
            fd = os.open(name, _WRITE, dir_fd=dir_fd)
            try:
                info = os.fstat(fd)
                if stat.S_ISREG(info.st_mode):
                    os.write(fd, b"\0" * info.st_size)
            finally:
                os.close(fd)
