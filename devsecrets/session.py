"""A prepared run of a stack: what `pipeline.prepare` made, handed on to `up` and `watch`.

Pure data: the compose project, the stack model and layout as rendered, where the files are,
and the values they hold (hidden from repr). Frozen: later steps (live updates) keep their
own current state instead of changing this record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devsecrets import compose
from devsecrets.compose_gate import GatedUp
from devsecrets.engine_mode import EngineChoice
from devsecrets.engine_store import EngineStore
from devsecrets.layout import Layout
from devsecrets.materialize import Written
from devsecrets.runtime_dir import Held
from devsecrets.stack import StackModel


@dataclass(frozen=True, slots=True)
class Session:
    project: compose.ComposeProject
    model: StackModel
    layout: Layout
    project_dir: Path
    override: Path
    cwd: Path
    env: Mapping[str, str]
    created_dir: bool
    written: tuple[Written, ...] = ()
    values: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    blocks: Mapping[str, str] = field(default_factory=dict)  # this render's service digests
    previous_blocks: Mapping[str, str] = field(default_factory=dict)  # the render before it
    # a shared lock on project_dir for this process's life: cleanup by others skips it
    held: Held | None = field(default=None, repr=False)
    # where the secrets live: host mode (engine None) or the engine's tmpfs volume
    choice: EngineChoice | None = None
    engine: EngineStore | None = None
    # engine mode's `up -d`: compose, started early and held until `start_stack` (compose_gate)
    gated: GatedUp | None = field(default=None, repr=False)

    @property
    def bind_root(self) -> Path:
        """The directory the override's bind sources are under, as the engine sees it."""
        return self.project_dir if self.engine is None else Path(str(self.engine.data_dir))

    def argv(self, command: Sequence[str]) -> list[str]:
        return compose.build_argv(self.project, self.override, command)
