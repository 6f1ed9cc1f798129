"""Is a path on memory (tmpfs/ramfs)? Plaintext may live only there unless the user opts in.

Input: a path. Output: its filesystem type, from /proc/self/mountinfo. Choosing and making the
runtime directory is `runtime_dir`'s job.
"""

from __future__ import annotations

import os
from pathlib import Path

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
