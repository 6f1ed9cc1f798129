"""What shell completion offers: secret names and service names, cheaply.

Input: cwd, environment, the --store/-f options typed so far. Output: sorted names.
Secret names come from the store's file names (nothing is decrypted); service names from a
YAML read of the stack files compose would find (no compose process, no `include` or
`extends`), with the hardened loader (`yamlload.load_stack`: aliases never expanded, no deep
nesting) on at most `MAX_STACK_BYTES` of a regular file, so a hostile stack file cannot make
TAB hang, eat memory or crash. Never raises: a completion that fails offers nothing.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from devsecrets.errors import DevsecretsError

SHELLS = ("bash", "zsh", "fish")
MAX_STACK_BYTES = 1 << 20  # a stack file larger than this offers no service names
# compose subcommands offered after `devsecrets compose`
COMPOSE_COMMANDS = (
    "build", "config", "cp", "create", "down", "events", "exec", "images", "kill", "logs",
    "ls", "pause", "port", "ps", "pull", "push", "restart", "rm", "run", "start", "stop",
    "top", "unpause", "up", "version", "wait", "watch",
)  # fmt: skip


def secret_names(cwd: Path, store: str | None, env: Mapping[str, str]) -> list[str]:
    from devsecrets.store import find_store

    explicit = store or env.get("DEVSECRETS_STORE") or None
    try:
        return find_store(cwd, Path(explicit) if explicit else None).names()
    except (DevsecretsError, OSError):
        return []


def service_names(
    cwd: Path, env: Mapping[str, str], files: Sequence[str], project_directory: str | None
) -> list[str]:
    from devsecrets.compose import ComposeOptions, discover_files

    options = ComposeOptions(files=tuple(files), project_directory=project_directory)
    try:
        paths = discover_files(options, cwd, env)
    except (DevsecretsError, OSError):
        return []
    names: set[str] = set()
    for path in paths:
        names.update(_services(path))
    return sorted(names)


def _services(path: Path) -> list[str]:
    """The service names one stack file declares; none if it cannot be read as YAML."""
    import yaml

    from devsecrets.store import yamlload

    text = _read_small(path)
    if text is None:
        return []
    try:
        model: Any = yamlload.load_stack(text)
    except (yaml.YAMLError, RecursionError):
        return []
    services = model.get("services") if isinstance(model, dict) else None
    if not isinstance(services, dict):
        return []
    merged = services.get("<<")  # services: {<<: *common, ...}: the merged-in names count
    blocks = [services, *(merged if isinstance(merged, list) else [merged])]
    return [str(k) for block in blocks if isinstance(block, dict) for k in block if k != "<<"]


def _read_small(path: Path) -> bytes | None:
    """A regular file's bytes, at most `MAX_STACK_BYTES` (a FIFO neither blocks nor counts)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        data = f.read(MAX_STACK_BYTES + 1)
    return data if len(data) <= MAX_STACK_BYTES else None
