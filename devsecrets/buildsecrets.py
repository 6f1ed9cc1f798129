"""Build-time secrets: the store's values for `build.secrets` (`RUN --mount=type=secret`).

Input: `StackModel.build_secrets` and the names the store holds. Output: `BuildPlan` (pure
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

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from devsecrets.stack import SourceKind, StackModel

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


def plan_build(model: StackModel, in_store: Collection[str]) -> BuildPlan:
    """Which build secrets the store provides: `external`/`driver` sources always (missing
    ones are listed), a `file:` source when the store holds its name (the store wins, as for
    running services), `environment:` sources never (compose reads those itself)."""
    users: dict[str, set[str]] = {}
    for service, keys in model.build_secrets.items():
        for key in keys:
            users.setdefault(key, set()).add(service)
    files: list[BuildFile] = []
    missing: dict[str, set[str]] = {}
    for key in sorted(users):
        source = model.sources[key]
        services = tuple(sorted(users[key]))
        if source.kind in (SourceKind.EXTERNAL, SourceKind.DRIVER):
            if source.store_name in in_store:
                files.append(BuildFile(key, source.store_name, services))
            else:
                missing.setdefault(source.store_name, set()).update(services)
        elif source.kind is SourceKind.FILE and source.store_name in in_store:
            files.append(BuildFile(key, source.store_name, services))
    return BuildPlan(tuple(files), {name: tuple(sorted(s)) for name, s in sorted(missing.items())})
