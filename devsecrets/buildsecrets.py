"""Build-time secrets: the store's values for `build.secrets` (`RUN --mount=type=secret`).

Input: `Needs` (what `needs` found of `StackModel.build_secrets`). Output: `BuildPlan` (pure
data): one `BuildFile` per top-level secret key a build uses and the store provides, and the
store names a build needs but the store lacks. `materialize` writes each file under the
project's runtime directory (`build/<key>`, 0400, ours: compose reads it as this user and
hands it to BuildKit), and `render` points compose's top-level secret at it (`file:`), so
`devsecrets build`, `up --build` and `compose build` get the value from the same tmpfs.
BuildKit mounts it on a tmpfs for that RUN step only: it is in no layer, no build argument and
no cache key (ARCHITECTURE.md, "Build-time secrets"). Compose accepts only `file:` and
`environment:` sources for builds; an `external:` one fails the build without devsecrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from devsecrets.needs import Needs

BUILD_DIR = "build"  # in the project's runtime directory, 0700


@dataclass(frozen=True, slots=True)
class BuildFile:
    key: str  # the top-level secret key the services' `build.secrets` refer to
    store_name: str
    services: tuple[str, ...]  # whose build uses it

    @property
    def host_path(self) -> str:
        """Relative to the project's runtime directory."""
        return f"{BUILD_DIR}/{self.key}"


@dataclass(frozen=True, slots=True)
class BuildPlan:
    files: tuple[BuildFile, ...] = ()
    # store name -> services whose build needs it, for what the store lacks
    missing: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def store_names(self) -> set[str]:
        return {f.store_name for f in self.files}


def plan_build(need: Needs) -> BuildPlan:
    """The build secrets the store provides and those it lacks, as `needs` found them (the
    same rules as for running services: `external`/`driver` sources always, a `file:` source
    when the store holds its name, the store winning; `environment:` sources never, compose
    reads those itself)."""
    files = tuple(
        BuildFile(n.key, n.store_name, n.services)
        for n in need.build
        if n.key in need.build_provided
    )
    return BuildPlan(files, dict(need.build_missing))
