"""What shell completion offers: secret names and service names, cheaply.

Input: cwd, environment, the --store/-f options typed so far. Output: sorted names.
Secret names come from the store's file names (nothing is decrypted); service names from a
plain YAML read of the stack files compose would find (no compose process, no `include` or
`extends`). Never raises: a completion that fails offers nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from devsecrets.errors import DevsecretsError
from devsecrets.store.sopsfile import YAML_LOADER

SHELLS = ("bash", "zsh", "fish")
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
        try:
            model: Any = yaml.load(path.read_bytes(), Loader=YAML_LOADER)  # noqa: S506
        except (OSError, yaml.YAMLError):
            continue
        services = model.get("services") if isinstance(model, dict) else None
        if isinstance(services, dict):
            names.update(str(k) for k in services)
    return sorted(names)
