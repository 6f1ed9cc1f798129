"""A YAML loader for files anyone with push access can write: the store and recipients.yaml.

Input: bytes. Output: plain `str`/`list`/`dict` (BaseLoader semantics: every scalar a string),
or `yaml.YAMLError`. On top of BaseLoader it refuses what no file devsecrets or sops writes
contains and what turns a small file into a large tree: aliases and anchors (an 805-byte alias
bomb expands to gigabytes), duplicate keys (sops refuses them too), non-scalar keys, and nesting
deeper than `MAX_DEPTH` (deep nesting would exhaust the stack). libyaml's C parser makes the
events when present; composing them here costs little on files of a few nodes.

`load_stack` is the variant for compose files, which use anchors and aliases for shared
blocks (`x-common: &common`): an alias is allowed there but never expanded. The composer
returns the anchored node itself and BaseConstructor builds one object per node, so a bomb
of nested aliases stays as small as its text; merge keys (`<<`) stay plain keys (completion
reads their value itself). Duplicate keys, non-scalar keys and deep nesting are refused as
for the store.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import BaseConstructor
from yaml.events import AliasEvent, MappingStartEvent, ScalarEvent, SequenceStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.resolver import BaseResolver

MAX_DEPTH = 16  # a store file nests 4 deep (sops > age > list > stanza)
STACK_DEPTH = 64  # compose files nest deeper (services > s > deploy > resources > ...)

_Parser: Any
try:
    from yaml.cyaml import CParser as _Parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - pure-Python fallback without libyaml

    class _PyParser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
        def __init__(self, stream: Any) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)

    _Parser = _PyParser


class _StrictComposer(Composer):
    _depth = 0
    _aliases = False
    _max_depth = MAX_DEPTH

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event: Any = self.peek_event()  # type: ignore[attr-defined]  # from the parser
        mark: Any = event.start_mark
        if isinstance(event, AliasEvent) and not self._aliases:
            raise ComposerError(None, None, "YAML aliases are not allowed", mark)
        if (
            isinstance(event, ScalarEvent | SequenceStartEvent | MappingStartEvent)
            and event.anchor is not None
            and not self._aliases
        ):
            raise ComposerError(None, None, "YAML anchors are not allowed", mark)
        if self._depth >= self._max_depth:
            raise ComposerError(None, None, "YAML nested too deeply", mark)
        self._depth += 1
        try:
            node: Any = super().compose_node(parent, index)
            return node  # type: ignore[no-any-return]
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        node: MappingNode = super().compose_mapping_node(anchor)
        seen: set[str] = set()
        for key, _ in node.value:
            if not isinstance(key, ScalarNode):
                raise ComposerError(None, None, "only plain keys are allowed", key.start_mark)
            if key.value in seen:
                raise ComposerError(None, None, f"duplicate key {key.value!r}", key.start_mark)
            seen.add(key.value)
        return node


class StrictLoader(_StrictComposer, _Parser, BaseConstructor, BaseResolver):  # type: ignore[misc]
    def __init__(self, stream: Any) -> None:
        _Parser.__init__(self, stream)
        Composer.__init__(self)
        BaseConstructor.__init__(self)
        BaseResolver.__init__(self)


class StackLoader(StrictLoader):
    """`StrictLoader` that lets aliases through (shared, never expanded): compose files."""

    _aliases = True
    _max_depth = STACK_DEPTH


def load(text: bytes) -> Any:
    """One YAML document as plain data; `yaml.YAMLError` on anything refused."""
    return _load(StrictLoader(text))


def load_stack(text: bytes) -> Any:
    """One compose file as plain data (see the module's docstring); `yaml.YAMLError` on
    anything refused."""
    return _load(StackLoader(text))


def _load(loader: StrictLoader) -> Any:
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def reason(error: yaml.YAMLError) -> str:
    """A short why, with the line: never the offending text (it may be a secret)."""
    problem = getattr(error, "problem", None) or "invalid YAML"
    mark = getattr(error, "problem_mark", None)
    return f"{problem}, line {mark.line + 1}" if mark is not None else str(problem)
