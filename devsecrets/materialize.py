"""Write secret values into the project's runtime directory on tmpfs.

Input: `Layout`, the values (bytes), the project directory. Output: files with the grant's
mode and owner, written atomically (staging file + rename inside the same tmpfs), so a reader
in a container sees the old or the new bytes, never a mix. Never writes outside `project_dir`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets as _random
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devsecrets.errors import MaterializeError
from devsecrets.layout import Layout, MountedFile

STAGING = ".staging"
STATE = "state.json"
OVERRIDE = "override.yml"


@dataclass(frozen=True, slots=True)
class Written:
    mounted: MountedFile
    changed: bool


def owner_warnings(layout: Layout) -> list[str]:
    """When we cannot chown (not root), say which grants will not get their exact uid/gid."""
    if os.geteuid() == 0:
        return []
    uid, gid = str(os.getuid()), str(os.getgid())
    return [
        f"service {s.service}: {f.grant.target} wants uid:gid {f.grant.uid}:{f.grant.gid}; "
        f"as a non-root user devsecrets can only give {uid}:{gid} (the mode is exact)"
        for s in layout.services
        for f in s.files
        if (f.grant.uid, f.grant.gid) != (uid, gid)
    ]


def materialize(project_dir: Path, layout: Layout, values: Mapping[str, bytes]) -> list[Written]:
    """Bring `project_dir` to exactly `layout`: write what changed, remove what is gone."""
    _make_dir(project_dir, 0o700)
    _make_dir(project_dir / STAGING, 0o700)
    expected: set[Path] = set()
    written: list[Written] = []
    for service in layout.services:
        # /run/secrets itself is 0755 root:root under Swarm; so is our directory for it.
        _make_dir(project_dir / service.secrets_dir, 0o755)
        for mounted in service.files:
            path = project_dir / mounted.host_path
            expected.add(path)
            changed = install(project_dir, path, values[mounted.store_name], mounted)
            written.append(Written(mounted, changed))
        for relative in service.placeholders:
            path = project_dir / service.secrets_dir / relative
            expected.add(path)
            if not path.exists():
                _make_parents(path)
                path.touch(mode=0o444)
    _remove_unexpected(project_dir / "services", expected)
    return written


def install(project_dir: Path, path: Path, value: bytes, mounted: MountedFile) -> bool:
    """Put `value` at `path` with the grant's mode/owner by rename; False if already so."""
    uid, gid = _ids(mounted)
    mode = mounted.grant.mode
    with contextlib.suppress(OSError):
        info = path.lstat()
        if (
            stat.S_ISREG(info.st_mode)
            and stat.S_IMODE(info.st_mode) == mode
            and (info.st_uid, info.st_gid) == (uid, gid)
            and info.st_size == len(value)
            and _read_as_root(path) == value
        ):
            return False
    _make_parents(path)
    staging = project_dir / STAGING / f"{path.name}.{_random.token_hex(6)}"
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(value)
            if (uid, gid) != (os.getuid(), os.getgid()):
                os.fchown(out.fileno(), uid, gid)
            os.fchmod(out.fileno(), mode)
        os.replace(staging, path)  # atomic within one tmpfs: readers see old or new
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return True


def _read_as_root(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except PermissionError:  # a 0400 file owned by someone else, as non-root: rewrite it
        return None


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


def _make_dir(path: Path, mode: int) -> None:
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != mode:
        os.chmod(path, mode)


def _make_parents(path: Path) -> None:
    """Nested targets (/run/secrets/app/key) get 0755 directories, as the runtime makes them."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)


def _remove_unexpected(services_dir: Path, expected: set[Path]) -> None:
    if not services_dir.exists():
        return
    for path in sorted(services_dir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()) and not any(e.is_relative_to(path) for e in expected):
                path.rmdir()
        elif path not in expected:
            path.unlink()


def write_text(project_dir: Path, name: str, text: str) -> Path:
    """Write a devsecrets-owned file (override, state) atomically at 0600."""
    path = project_dir / name
    staging = project_dir / STAGING / f"{name}.{_random.token_hex(6)}"
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(staging, path)
    return path


def read_state(project_dir: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((project_dir / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state


def update_state(project_dir: Path, **changes: Any) -> None:
    """Merge `changes` into the project's state.json (who runs it, what was rendered)."""
    state = {**read_state(project_dir), **changes}
    write_text(project_dir, STATE, json.dumps(state, indent=2, sort_keys=True))


def wipe(project_dir: Path) -> None:
    """Remove a project's runtime directory and every value in it."""
    shutil.rmtree(project_dir, ignore_errors=True)
