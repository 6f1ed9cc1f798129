"""Publish the compose override for a layout: render it, write it, record its digests.

Input: `Layout`, the project's runtime directory. Output: the override's path and one digest
per service. When a service's digest changes, compose must recreate its containers (new
mounts); when only files change, nothing must. Writes only in the project directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from devsecrets import materialize, runtime_dir
from devsecrets.layout import Layout
from devsecrets.render import render, to_json, to_yaml


def publish_override(
    project_dir: Path, layout: Layout, bind_root: Path | None = None
) -> tuple[Path, dict[str, str]]:
    """Render once: write the override and record a digest of each service's part of it.
    `bind_root`: where the engine finds the files (the engine mode's tmpfs volume);
    `project_dir` by default."""
    rendered = render(layout, bind_root or project_dir, build_root=project_dir)
    override = materialize.write_text(project_dir, materialize.OVERRIDE, to_yaml(rendered))
    blocks = {
        name: hashlib.sha256(json.dumps(block, sort_keys=True).encode()).hexdigest()
        for name, block in rendered["services"].items()
    }
    runtime_dir.update_state(project_dir, blocks=blocks, project=layout.project)
    return override, blocks


PENDING_HEADER = (
    "# Not in effect: what `up -d` in engine mode gave compose while the values went in; its\n"
    "# binds under .unreleased never exist. The override in effect is override.yml.\n"
)


def publish_pending(project_dir: Path, layout: Layout, unreleased: Path) -> Path:
    """The override compose reads while it waits at its gate (compose_gate): the real one's
    keys, but every bind under `unreleased`, a directory that never exists. Records nothing."""
    rendered = render(layout, unreleased, build_root=project_dir)
    text = PENDING_HEADER + to_yaml(rendered)
    return materialize.write_text(project_dir, materialize.PENDING, text)


def gate_text(project_dir: Path, layout: Layout, bind_root: Path) -> bytes:
    """What compose_gate sends once the values are in: the real override's binds (with the
    pending override before it, that is the real override), as one JSON document."""
    rendered = render(layout, bind_root, build_root=project_dir)
    binds = {
        name: {"volumes": block["volumes"]}
        for name, block in rendered["services"].items()
        if block["volumes"]
    }
    return to_json({"services": binds}).encode()
