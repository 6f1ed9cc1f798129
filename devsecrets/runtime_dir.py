"""The runtime tree on tmpfs: its root, per-project directories, their state, locks, cleanup.

Input: the environment, paths under the root. Output: directories devsecrets created and can
prove it created (a marker file owned by us, checked through an open descriptor). This module
is the policy: which root, what counts as ours, who holds what, what is stale. Every path is
reached and every change made through directory descriptors (`fdpath`), so another local user
cannot swap a component between check and use. Never deletes, chmods or reuses a directory
without our marker; never follows a symlink that another user could have planted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets as _random
import stat
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from devsecrets import fdpath, tmpfs
from devsecrets.errors import DevsecretsError, TmpfsError
from devsecrets.fdpath import NotOurs, UnsafePathError, open_dir, read_file, who, write_file

MARKER = ".devsecrets-owned"  # "this directory was made by devsecrets for uid N"
LOCK = ".lock"  # flock'ed (shared) by every process that uses the directory
STATE = "state.json"
COMPOSE_CACHE = ".compose-version.json"  # in the root, beside the project dirs
OVERRIDE = "override.yml"  # in a project dir
STAGING = ".staging"
POINTER = "runtime-dir"  # in the user's cache dir: where a squatted default went
SHM = Path("/dev/shm")  # noqa: S108 - sticky; our directory in it is checked and 0700

Warn = Callable[[str], None]


def _open_or_make(path: Path, mode: int = 0o700) -> int:
    """An fd on directory `path`, reached safely; missing components are created (0700,
    unmarked: a parent such as ~/.cache is the user's once it exists), the last one marked
    ours with `mode`."""
    fd, _, missing = fdpath.walk(path)
    return _make_missing(fd, missing, mode) if missing else fd


def _make_missing(fd: int, missing: list[str], mode: int) -> int:
    """The missing components below `fd` made (see `_open_or_make`); returns the last one's
    fd. Takes `fd` over: it is closed in every case."""
    fd = fdpath.make_dirs(fd, missing[:-1])
    try:
        return make_owned(fd, missing[-1], mode)
    finally:
        os.close(fd)


def make_owned(parent: int, name: str, mode: int = 0o700) -> int:
    """mkdir `name` in `parent` (it must not exist), mark it ours; returns its fd."""
    os.mkdir(name, mode & 0o700, dir_fd=parent)  # group/other bits only once it is marked
    fd = fdpath.open_child(parent, name)
    try:
        marker = os.open(MARKER, fdpath.NEW_FILE, 0o600, dir_fd=fd)
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
            child = fdpath.open_child(fd, path.name)
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
        root = _hinted(
            lambda: _claim_explicit(Path(explicit), allow_disk),
            "point DEVSECRETS_RUNTIME_DIR at a tmpfs directory of your own "
            f"(e.g. {SHM}/devsecrets-{os.geteuid()})",
        )
        assert root is not None
        return root
    looked = []
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg:
        looked.append(xdg)
        claimed = _hinted(
            lambda: (
                _claim(Path(xdg) / "devsecrets")
                if Path(xdg).is_dir() and _memory_backed(Path(xdg))
                else None
            ),
            "unset XDG_RUNTIME_DIR, or set DEVSECRETS_RUNTIME_DIR="
            f"{SHM}/devsecrets-{os.geteuid()} (any tmpfs directory of your own)",
        )
        if claimed is not None:
            return claimed
    shm = SHM
    looked.append(str(shm))
    if shm.is_dir() and _memory_backed(shm):
        default = shm / f"devsecrets-{os.geteuid()}"
        try:
            return _claim(default)
        except UnsafePathError as e:
            owner = e.owner if isinstance(e, NotOurs) else _squatter(default)
            if owner is None:
                raise
            fallback = _fallback(env, shm)
            warn(
                f"{default} belongs to {who(owner)}, not you; using {fallback} instead "
                "(set DEVSECRETS_RUNTIME_DIR to a private tmpfs directory to choose)"
            )
            return fallback
    if allow_disk:
        return _claim(_cache_home(env) / "devsecrets" / "run")
    raise TmpfsError(
        f"no tmpfs for plaintext: looked at {', '.join(looked)}",
        hint="mount a tmpfs there, or pass --allow-disk to accept plaintext on disk",
    )


def _squatter(path: Path) -> int | None:
    """The other user who put something that is not a directory (a file, a FIFO) at our
    default name; None when it is ours or gone."""
    try:
        owner = os.lstat(path).st_uid
    except OSError:
        return None
    return owner if owner != os.geteuid() else None


def _claim_explicit(explicit: Path, allow_disk: bool) -> Path:
    if not (allow_disk or _memory_backed(explicit)):
        raise TmpfsError(
            f"DEVSECRETS_RUNTIME_DIR={explicit} is not on a tmpfs",
            hint="point it at a tmpfs, or pass --allow-disk to accept plaintext on disk",
        )
    return _claim(explicit)


def _hinted(claim: Callable[[], Path | None], hint: str) -> Path | None:
    """`claim()`, with `hint` on a refusal that has none (another user's directory)."""
    try:
        return claim()
    except UnsafePathError as e:
        e.hint = e.hint or hint
        raise


def _memory_backed(path: Path) -> bool:
    """Whether `path`, or its deepest existing ancestor, is on tmpfs."""
    fd, real, _ = fdpath.walk(path)
    os.close(fd)
    return tmpfs.is_memory_backed(Path(real))


def _claim(base: Path, *, depth: int = 0) -> Path:
    """`base` if it is ours or absent (then made ours), else a subdirectory of our own."""
    fd, real, missing = fdpath.walk(base)
    if missing:
        os.close(_make_missing(fd, missing, 0o700))
        return Path(real, *missing)
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise NotOurs(f"{real} belongs to {who(info.st_uid)}; refusing to use it", info.st_uid)
        if is_owned(fd):
            if stat.S_IMODE(info.st_mode) != 0o700:
                os.fchmod(fd, 0o700)
            return Path(real)
    finally:
        os.close(fd)
    if depth >= 2:
        raise NotOurs(f"{real} was not made by devsecrets; refusing to use it", os.geteuid())
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
    cache_fd = _open_or_make(cache)
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
                if fdpath.still_there(parent, project_dir.name, fd):
                    return Held(lock)
            finally:
                os.close(parent)
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
    """Remove our directory `name` in `parent`; False if it is not ours (no marker)."""
    try:
        fd = fdpath.open_child(parent, name)
    except OSError:
        return False
    try:
        return is_owned(fd) and fdpath.remove_dir(parent, name, fd)
    finally:
        os.close(fd)


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
            if name.startswith(fdpath.TRASH):
                _remove(root_fd, name)
    finally:
        os.close(root_fd)
    return removed


def _clean_one(root_fd: int, name: str, is_stale: IsStale) -> bool:
    try:
        fd = fdpath.open_child(root_fd, name)
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
    (with its content overwritten first) at the end. Yields its path and fd. Those of the
    same `prefix` that no process holds any more (a SIGKILLed edit or run) go first."""
    try:
        root_fd = open_dir(root)
    except OSError as e:
        raise TmpfsError(f"cannot open {root}: {e.strerror}") from e
    try:
        clean_scratch(root_fd, prefix)
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
            fdpath.shred_all(fd)
            _remove(root_fd, name)
            if lock is not None:
                os.close(lock)
            os.close(fd)
    finally:
        os.close(root_fd)


def clean_scratch(root_fd: int, prefix: str) -> list[str]:
    """Remove our `prefix*` scratch dirs in `root_fd` that nobody holds locked, their files
    overwritten first (they may hold plaintext). Returns the names removed."""
    if not is_owned(root_fd):
        return []
    removed = []
    for name in sorted(os.listdir(root_fd)):
        if not name.startswith(prefix):
            continue
        with contextlib.suppress(OSError):
            fd = fdpath.open_child(root_fd, name)
            try:
                lock = _lock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB) if is_owned(fd) else None
                if lock is None:
                    continue  # not ours, or a live edit/run holds it
                try:
                    fdpath.shred_all(fd)
                    if _remove(root_fd, name):
                        removed.append(name)
                finally:
                    os.close(lock)
            finally:
                os.close(fd)
    return removed
