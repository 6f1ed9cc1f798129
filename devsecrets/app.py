"""What every command needs, without click: the store and identities (resolved lazily), the
lines devsecrets writes, and the exact command to suggest for a stack. `cli` and the lean
paths of the console script (`fastpath`) share it, so both say the same, byte for byte.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs start-up time
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from devsecrets.keys import Identities
    from devsecrets.store import Store
    from devsecrets.store.trust import Approvals


@dataclass
class App:
    """What every command needs, resolved lazily so `get` pays only for what it uses."""

    env: dict[str, str]
    cwd: Path
    store_option: Path | None
    _identities: Identities | None = field(default=None, repr=False)

    def store(self) -> Store:
        from devsecrets.store import find_store

        store = find_store(self.cwd, self.store_option)
        pending = store.pending()  # an interrupted `recipients rm`: every command says so
        if pending:
            warn(pending.message)
            say(f"hint: {pending.hint}")
        store.approvals = self.approvals(store.root)
        return store

    def approvals(self, root: Path) -> Approvals:
        """This user's approved recipients for the store at `root` (kept outside the repo)."""
        from devsecrets.store.trust import Approvals

        return Approvals(root, self.env, lambda: self.identities().public)

    def identities(self) -> Identities:
        if self._identities is None:
            from devsecrets.keys import find_identities

            self._identities = find_identities(self.env)
        return self._identities


def current(store_option: str | os.PathLike[str] | None) -> App:
    """The App of this process: its environment and directory."""
    option = Path(store_option) if store_option else None
    return App(env=dict(os.environ), cwd=Path.cwd(), store_option=option)


def say(line: str) -> None:
    """One line on stderr, with the prefix every devsecrets line has. As click.echo did:
    terminal escape sequences are dropped when stderr is not a terminal."""
    if "\x1b" in line and not sys.stderr.isatty():
        import re

        line = re.sub(r"\033\[[;?0-9]*[a-zA-Z]", "", line)
    sys.stderr.write(f"devsecrets: {line}\n")
    sys.stderr.flush()


def warn(line: str) -> None:
    say(f"warning: {line}")


def command(app: App, kwargs: Mapping[str, Any], command: str, project: str) -> str:
    """The exact devsecrets command for this stack, with the flags that found it (a project
    name from -p or COMPOSE_PROJECT_NAME is spelled out: another shell may not have it)."""
    import shlex

    parts = ["devsecrets", *command.split()]
    for path in kwargs["files"]:
        parts += ["-f", path]
    if kwargs["project_name"] or app.env.get("COMPOSE_PROJECT_NAME"):
        parts += ["-p", project]
    for profile in kwargs["profiles"]:
        parts += ["--profile", profile]
    for env_file in kwargs["env_files"]:
        parts += ["--env-file", env_file]
    if kwargs["project_directory"]:
        parts += ["--project-directory", kwargs["project_directory"]]
    if kwargs["allow_disk"]:
        parts.append("--allow-disk")
    return shlex.join(parts)


def speller(app: App, kwargs: Mapping[str, Any]) -> Callable[[str, str], str]:
    return lambda name, project: command(app, kwargs, name, project)
