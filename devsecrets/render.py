"""The compose override: paths only, never values (ARCHITECTURE.md, decision 5).

Input: `Layout` and the project's runtime directory. Output: an override dict and its YAML.
Pure. Every string is `$`-escaped because compose interpolates the override too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from devsecrets.layout import Layout
from devsecrets.stack import SECRETS_DIR


class Override(list[Any]):
    """A sequence compose must take as-is instead of merging (`!override`, compose >= 2.24.4)."""


class OverrideMap(dict[str, Any]):
    """A mapping compose must take as-is instead of merging (`!override`)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    Override, lambda dumper, data: dumper.represent_sequence("!override", list(data))
)
_Dumper.add_representer(
    OverrideMap, lambda dumper, data: dumper.represent_mapping("!override", dict(data))
)


def render(layout: Layout, project_dir: Path, build_root: Path | None = None) -> dict[str, Any]:
    """`project_dir`: where the engine finds the services' files; `build_root`: where
    compose (on this machine) finds the build secrets' files (default: `project_dir`)."""
    services: dict[str, Any] = {}
    for service in layout.services:
        volumes = []
        if service.binds_secrets_dir:
            volumes.append(_bind(project_dir / service.secrets_dir, SECRETS_DIR))
        for mounted in service.files:
            if not mounted.in_secrets_dir:
                volumes.append(_bind(project_dir / mounted.host_path, mounted.grant.target))
        services[service.service] = {
            # compose must not mount these itself: `external` ones would fail, and file ones
            # would land on top of our directory.
            "secrets": Override(dict(ref) for ref in service.kept_refs),
            "volumes": volumes,
        }
    rendered: dict[str, Any] = {"services": services}
    if layout.build.files:
        # a build secret becomes a `file:` secret on tmpfs: compose reads it and hands it to
        # BuildKit (it accepts no `external:` source for builds); whatever else the key had
        # (external, name, a plaintext file) is replaced
        root = build_root or project_dir
        rendered["secrets"] = {
            f.key: OverrideMap(file=str(root / f.host_path)) for f in layout.build.files
        }
    return rendered


def _bind(source: Path, target: str) -> dict[str, Any]:
    return {
        "type": "bind",
        "source": str(source),
        "target": target,
        "read_only": True,
        # a missing source (tmpfs wiped by a reboot) must fail the start, never be created empty
        "bind": {"create_host_path": False},
    }


def to_yaml(override: dict[str, Any]) -> str:
    header = "# Rendered by devsecrets: paths only, no secret values. Regenerated on every run.\n"
    body = yaml.dump(_escape(override), Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    return header + body


def _escape(node: Any) -> Any:
    if isinstance(node, str):
        return node.replace("$", "$$")
    if isinstance(node, Override):
        return Override(_escape(item) for item in node)
    if isinstance(node, OverrideMap):
        return OverrideMap({key: _escape(value) for key, value in node.items()})
    if isinstance(node, list):
        return [_escape(item) for item in node]
    if isinstance(node, dict):
        return {key: _escape(value) for key, value in node.items()}
    return node
