"""Where plaintext may live: a private directory on a tmpfs (DESIGN.md decision 4).

Input: the environment. Output: a 0700 directory we own on tmpfs (`$XDG_RUNTIME_DIR`, else
`/dev/shm`). Refuses a disk-backed place unless the caller explicitly allows it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from devsecrets.errors import TmpfsError

_MEMORY_FS = {"tmpfs", "ramfs"}


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding `path`, from /proc/self/mountinfo."""
    target = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return kind
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount_point = fields[4].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, right.split()[0]
    return kind


def is_memory_backed(path: Path) -> bool:
    return filesystem_type(path) in _MEMORY_FS


def private_root(env: Mapping[str, str], *, allow_disk: bool = False) -> Path:
    """A per-user 0700 directory on tmpfs for devsecrets' plaintext; created if missing.

    DEVSECRETS_RUNTIME_DIR is taken as given (and refused if not on tmpfs, unless
    `allow_disk`); otherwise `$XDG_RUNTIME_DIR/devsecrets`, then `/dev/shm/devsecrets-<uid>`."""
    explicit = env.get("DEVSECRETS_RUNTIME_DIR")
    if explicit:
        chosen = Path(explicit)
        if is_memory_backed(chosen.parent) or allow_disk:
            return _ensure_private(chosen)
        raise TmpfsError(
            f"DEVSECRETS_RUNTIME_DIR={chosen} is not on a tmpfs",
            hint="point it at a tmpfs, or pass --allow-disk to accept plaintext on disk",
        )
    candidates: list[Path] = []
    if env.get("XDG_RUNTIME_DIR"):
        candidates.append(Path(env["XDG_RUNTIME_DIR"]) / "devsecrets")
    candidates.append(Path("/dev/shm") / f"devsecrets-{os.getuid()}")  # noqa: S108 - checked 0700, ours
    for candidate in candidates:
        if candidate.parent.is_dir() and is_memory_backed(candidate.parent):
            return _ensure_private(candidate)
    if allow_disk:
        home = Path(env.get("HOME") or Path.home())
        return _ensure_private(home / ".cache" / "devsecrets" / "run")
    raise TmpfsError(
        f"no tmpfs for plaintext: looked at {', '.join(str(c.parent) for c in candidates)}",
        hint="mount a tmpfs there, or pass --allow-disk to accept plaintext on disk",
    )


def _ensure_private(directory: Path) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(directory)
    # /dev/shm is shared and sticky: never trust a directory someone else made or a symlink.
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise TmpfsError(f"{directory} is not a directory owned by you; refusing to use it")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)
    return directory
