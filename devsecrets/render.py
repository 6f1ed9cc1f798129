"""The compose override: paths only, never values (ARCHITECTURE.md, decision 5).

Input: `Layout` and the project's runtime directory. Output: an override dict and its YAML.
Pure. Every string is `$`-escaped because compose interpolates the override too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devsecrets.layout import Layout
from devsecrets.stack import SECRETS_DIR


class Override(list[Any]):
    """A sequence compose must take as-is instead of merging (`!override`, compose >= 2.24.4)."""


class OverrideMap(dict[str, Any]):
    """A mapping compose must take as-is instead of merging (`!override`)."""


def _pyyaml(escaped: dict[str, Any]) -> str:
    """The override's text by PyYAML (imported only here: `up` and `render` rarely need it)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(
        Override, lambda dumper, data: dumper.represent_sequence("!override", list(data))
    )
    Dumper.add_representer(
        OverrideMap, lambda dumper, data: dumper.represent_mapping("!override", dict(data))
    )
    return yaml.dump(escaped, Dumper=Dumper, sort_keys=False, default_flow_style=False)


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
    escaped = _escape(override)
    fast = fast_text(escaped)  # PyYAML's own text, many times faster (1,000 secrets: render)
    if fast is not None:
        return header + fast
    return header + _pyyaml(escaped)


def fast_text(escaped: dict[str, Any]) -> str | None:
    """What yaml.dump writes for `escaped`, or None when it is not the common override."""
    lines = _block(escaped, 0) if escaped else None
    return None if lines is None else "\n".join(lines) + "\n"


# The text `yaml.dump` above writes, for the common override: str keys, plain strings that
# PyYAML writes unquoted, bools, ints, lists of those or of mappings. None for anything else
# (then PyYAML writes it: `_pyyaml`); tests/test_layout_render.py compares the two on
# generated trees.
_PLAIN_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_/")
_PLAIN = _PLAIN_START | frozenset("0123456789.-")
_RESERVED = frozenset({"yes", "no", "true", "false", "on", "off", "null", "y", "n"})


def _plain(text: object) -> str | None:
    if type(text) is not str or not text or len(text) >= 128:
        return None
    if text[0] not in _PLAIN_START or not set(text) <= _PLAIN or text.lower() in _RESERVED:
        return None
    return text


def _scalar(node: object) -> str | None:
    if node is True or node is False:
        return "true" if node else "false"
    if type(node) is int:
        return str(node)
    return _plain(node)


def _tag(node: object) -> str:
    return " !override" if isinstance(node, (Override, OverrideMap)) else ""


def _block(mapping: dict[str, Any], indent: int) -> list[str] | None:
    lines: list[str] = []
    pad = " " * indent
    for key, value in mapping.items():
        name = _plain(key)
        if name is None:
            return None
        head = f"{pad}{name}:{_tag(value)}"
        if isinstance(value, dict):
            if not value:
                lines.append(head + " {}")
                continue
            inner = _block(value, indent + 2)
        elif isinstance(value, list):
            if not value:
                lines.append(head + " []")
                continue
            inner = _sequence(value, indent)
        else:
            scalar = _scalar(value)
            if scalar is None:
                return None
            lines.append(f"{head} {scalar}")
            continue
        if inner is None:
            return None
        lines.append(head)
        lines.extend(inner)
    return lines


def _sequence(items: list[Any], indent: int) -> list[str] | None:
    lines: list[str] = []
    pad = " " * indent
    for item in items:
        if isinstance(item, (Override, OverrideMap, list)):
            return None
        if isinstance(item, dict):
            if not item:
                lines.append(pad + "- {}")
                continue
            inner = _block(item, indent + 2)
            if inner is None:
                return None
            lines.append(pad + "- " + inner[0][indent + 2 :])
            lines.extend(inner[1:])
            continue
        scalar = _scalar(item)
        if scalar is None:
            return None
        lines.append(f"{pad}- {scalar}")
    return lines


def to_json(override: dict[str, Any]) -> str:
    """The override as one JSON document (compose reads JSON as YAML): a copy cut short
    anywhere is no document at all, which compose refuses (compose_gate)."""
    import json

    return json.dumps(_escape(override))


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
