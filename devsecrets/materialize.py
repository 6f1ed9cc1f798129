"""Write secret values into the project's runtime directory on tmpfs.

Input: `Layout`, the values (bytes), the project directory. Output: files with the grant's
mode and owner, written atomically (staging file + rename inside the same tmpfs), so a reader
in a container sees the old or the new bytes, never a mix. Never writes outside `project_dir`,
and never by path: everything goes through directory descriptors opened with `O_NOFOLLOW`
below a project directory that `runtime_dir` made and checked.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from devsecrets import fdpath, runtime_dir
from devsecrets.atomic import write_at
from devsecrets.buildsecrets import BUILD_DIR
from devsecrets.errors import MaterializeError, reason
from devsecrets.layout import Layout, MountedFile

STAGING = runtime_dir.STAGING
STATE = runtime_dir.STATE
OVERRIDE = runtime_dir.OVERRIDE
PENDING = "override-pending.yml"  # compose_gate: what a compose waiting at its gate read
_HINT = "check that the runtime directory is yours and its tmpfs has room"
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Written:
    mounted: MountedFile
    changed: bool


def owner_warnings(layout: Layout, rootless: Callable[[], bool] = lambda: False) -> list[str]:
    """When we cannot chown (not root), say which grants will not get their exact uid/gid.

    `rootless()` (asked only when some grant is not ours): the engine is a rootless one run
    by this user. It maps our uid and gid to 0 in its containers, so what they see of our
    files is 0:0, which is exact for a grant with the default owner."""
    if os.geteuid() == 0:
        return []
    uid, gid = str(os.getuid()), str(os.getgid())
    grants = [(s.service, f.grant) for s in layout.services for f in s.files]
    if all((g.uid, g.gid) == (uid, gid) for _, g in grants):
        return []
    if rootless():
        return [
            f"service {service}: {g.target} wants uid:gid {g.uid}:{g.gid}; a rootless engine "
            "shows your files to its containers as 0:0 (the mode is exact); "
            "--engine-mode engine gives the exact owner"
            for service, g in grants
            if (g.uid, g.gid) != ("0", "0")
        ]
    return [
        f"service {service}: {g.target} wants uid:gid {g.uid}:{g.gid}; "
        f"as a non-root user devsecrets can only give {uid}:{gid} (the mode is exact)"
        for service, g in grants
        if (g.uid, g.gid) != (uid, gid)
    ]


def materialize(project_dir: Path, layout: Layout, values: Mapping[str, bytes]) -> list[Written]:
    """Bring `project_dir` to exactly `layout`: write what changed, remove what is gone."""
    with _project(project_dir) as top:
        staging = _subdir(top, [STAGING], 0o700)
        dirs: dict[tuple[str, ...], int] = {}  # each directory opened (and checked) once
        try:
            expected: set[str] = set()
            written: list[Written] = []
            for service in layout.services:
                # /run/secrets itself is 0755 root:root under Swarm; so is our directory for it.
                _cached_subdir(top, _parts(service.secrets_dir), dirs)
                for mounted in service.files:
                    expected.add(mounted.host_path)
                    value = values[mounted.store_name]
                    changed = _install(top, staging, mounted.host_path, value, mounted, dirs)
                    written.append(Written(mounted, changed))
                for relative in service.placeholders:
                    path = f"{service.secrets_dir}/{relative}"
                    expected.add(path)
                    *parents, name = _parts(path)
                    parent = _subdir(top, parents, 0o755)
                    try:  # a mount point for compose's own secret; never overwrites anything
                        with contextlib.suppress(FileExistsError):
                            os.close(os.open(name, _NEW, 0o444, dir_fd=parent))
                    finally:
                        os.close(parent)
            _build_files(top, staging, layout, values)
            with contextlib.suppress(FileNotFoundError):
                services = os.open("services", _DIR, dir_fd=top)
                try:
                    _remove_unexpected(services, "services", expected)
                finally:
                    os.close(services)
            return written
        finally:
            for fd in dirs.values():
                os.close(fd)
            os.close(staging)


def materialize_build(project_dir: Path, layout: Layout, values: Mapping[str, bytes]) -> None:
    """Only the build secrets' files: the engine mode puts the services' files in the engine,
    but compose reads build secrets on this machine."""
    with _project(project_dir) as top:
        staging = _subdir(top, [STAGING], 0o700)
        try:
            _build_files(top, staging, layout, values)
        finally:
            os.close(staging)


def _build_files(top: int, staging: int, layout: Layout, values: Mapping[str, bytes]) -> None:
    """`build/<key>`, 0400 and ours (compose reads it as this user) in a 0700 directory;
    files the layout no longer has are removed."""
    expected = {f.host_path for f in layout.build.files}
    if expected:
        os.close(_subdir(top, [BUILD_DIR], 0o700))
    for built in layout.build.files:
        *parents, name = _parts(built.host_path)
        if parents != [BUILD_DIR]:
            raise MaterializeError(f"refusing a build secret named {built.key!r}")
        directory = _subdir(top, parents, 0o700)
        try:
            value = values[built.store_name]
            if not _same(directory, name, value, 0o400, os.getuid(), os.getgid()):
                write_at(directory, name, value, mode=0o400, umask=False, temp_dir_fd=staging)
        finally:
            os.close(directory)
    try:
        directory = os.open(BUILD_DIR, _DIR, dir_fd=top)
    except FileNotFoundError:
        return
    try:
        _remove_unexpected(directory, BUILD_DIR, expected)
    finally:
        os.close(directory)
    if not expected:
        os.rmdir(BUILD_DIR, dir_fd=top)


@contextlib.contextmanager
def _project(project_dir: Path) -> Iterator[int]:
    try:
        fd = runtime_dir.open_owned(project_dir)
    except OSError as e:
        raise MaterializeError(f"cannot open {project_dir}: {reason(e)}", hint=_HINT) from e
    try:
        yield fd
    except OSError as e:
        raise MaterializeError(f"cannot write in {project_dir}: {reason(e)}", hint=_HINT) from e
    finally:
        os.close(fd)


def _parts(relative: str) -> list[str]:
    parts = relative.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise MaterializeError(f"refusing a secret path with empty, . or .. parts: {relative}")
    return parts


def _subdir(top: int, parts: list[str], mode: int) -> int:
    """An fd on `top/parts…`, made with `mode` where missing; each must be our directory."""
    fd = os.dup(top)
    try:
        for name in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, mode, dir_fd=fd)
            child = os.open(name, _DIR, dir_fd=fd)  # ENOTDIR/ELOOP if a file or a symlink
            os.close(fd)
            fd = child
            info = os.fstat(fd)
            if info.st_uid != os.geteuid():
                raise MaterializeError(f"{name} in the runtime dir is not ours; refusing it")
            if stat.S_IMODE(info.st_mode) != mode:
                os.fchmod(fd, mode)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _cached_subdir(top: int, parts: list[str], dirs: dict[tuple[str, ...], int]) -> int:
    """`_subdir(top, parts, 0o755)`, opened once per `materialize` (1,000 secrets: `render`);
    the caller closes every fd in `dirs`."""
    key = tuple(parts)
    fd = dirs.get(key)
    if fd is None:
        fd = dirs[key] = _subdir(top, parts, 0o755)
    return fd


def _install(
    top: int,
    staging: int,
    relative: str,
    value: bytes,
    mounted: MountedFile,
    dirs: dict[tuple[str, ...], int],
) -> bool:
    """Put `value` at `relative` with the grant's mode/owner by rename; False if already so."""
    uid, gid = _ids(mounted)
    mode = mounted.grant.mode
    *parents, name = _parts(relative)
    parent = _cached_subdir(top, parents, dirs)  # nested targets get 0755 dirs, as under Swarm
    if _same(parent, name, value, mode, uid, gid):
        return False
    # atomic within one tmpfs: readers see old or new
    write_at(parent, name, value, mode=mode, umask=False, owner=(uid, gid), temp_dir_fd=staging)
    return True


def _same(parent: int, name: str, value: bytes, mode: int, uid: int, gid: int) -> bool:
    try:
        fd = os.open(name, _READ, dir_fd=parent)
    except OSError:  # missing, or a 0400 file owned by someone else as non-root: rewrite it
        return False
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        return (
            stat.S_ISREG(info.st_mode)
            and stat.S_IMODE(info.st_mode) == mode
            and (info.st_uid, info.st_gid) == (uid, gid)
            and info.st_size == len(value)
            and f.read(len(value) + 1) == value
        )


def _ids(mounted: MountedFile) -> tuple[int, int]:
    grant = mounted.grant
    try:
        uid, gid = int(grant.uid), int(grant.gid)
    except ValueError as e:
        raise MaterializeError(
            f"service {grant.service}: secret {grant.source} has non-numeric uid/gid "
            f"{grant.uid}:{grant.gid}; Swarm needs numbers"
        ) from e
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    return uid, gid


def _remove_unexpected(dir_fd: int, relative: str, expected: set[str]) -> None:
    for entry in list(os.scandir(dir_fd)):
        path = f"{relative}/{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            child = os.open(entry.name, _DIR, dir_fd=dir_fd)
            try:
                _remove_unexpected(child, path, expected)
                empty = not os.listdir(child)
            finally:
                os.close(child)
            if empty and not any(e.startswith(path + "/") for e in expected):
                os.rmdir(entry.name, dir_fd=dir_fd)
        elif path not in expected:
            os.unlink(entry.name, dir_fd=dir_fd)


def write_text(project_dir: Path, name: str, text: str) -> Path:
    """Write a devsecrets-owned file (override, state) atomically at 0600."""
    with _project(project_dir) as top:
        fdpath.write_file(top, name, text.encode())
    return project_dir / name
