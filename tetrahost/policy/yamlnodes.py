"""YAML documents as small trees that remember their line numbers.

PyYAML's compose step keeps a start mark on every node; the constructor that turns
nodes into Python objects throws that away. We compose, then build our own nodes
so every value (and every mapping key) still knows its line for error messages.
Scalars are constructed with PyYAML's safe constructor so YAML typing stays
standard (`true` is a bool, `0x10` an int, `"1"` a string).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import yaml


@dataclass
class YNode:
    kind: str  # "map" | "seq" | "scalar"
    line: int  # 1-based line of the node's first character
    value: Any = None  # scalar value (str, int, float, bool, None)
    items: list["YNode"] = field(default_factory=list)  # for "seq"
    # for "map": key -> (key line, value node), insertion ordered
    entries: dict[str, tuple[int, "YNode"]] = field(default_factory=dict)
    # duplicate keys found while building a map: (key, line)
    duplicate_keys: list[tuple[str, int]] = field(default_factory=list)
    # non-string keys found while building a map: (repr, line)
    bad_keys: list[tuple[str, int]] = field(default_factory=list)

    def get(self, key: str) -> "YNode | None":
        entry = self.entries.get(key)
        return entry[1] if entry else None

    def key_line(self, key: str) -> int:
        entry = self.entries.get(key)
        return entry[0] if entry else self.line

    def describe(self) -> str:
        """Short human description of the node's type for error messages."""
        if self.kind == "map":
            return "a mapping"
        if self.kind == "seq":
            return "a list"
        if self.value is None:
            return "null"
        if isinstance(self.value, bool):
            return f"the boolean {str(self.value).lower()}"
        if isinstance(self.value, int):
            return f"the number {self.value}"
        if isinstance(self.value, float):
            return f"the number {self.value}"
        return f'the string "{self.value}"'


class YamlSyntaxError(Exception):
    def __init__(self, line: int, message: str):
        self.line = line
        self.message = message
        super().__init__(f"line {line}: {message}")


_scalar_constructor = yaml.constructor.SafeConstructor()


def _build(node: yaml.Node) -> YNode:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = YNode("map", line)
        # Merge keys (<<) are rare in policies; flatten them like PyYAML would.
        _scalar_constructor.flatten_mapping(node)
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                out.bad_keys.append(("<complex key>", key_line))
                continue
            key = _scalar_constructor.construct_object(key_node)
            if not isinstance(key, str):
                out.bad_keys.append((repr(key), key_line))
                key = str(key)
            if key in out.entries:
                out.duplicate_keys.append((key, key_line))
                continue
            out.entries[key] = (key_line, _build(value_node))
        return out
    if isinstance(node, yaml.SequenceNode):
        return YNode("seq", line, items=[_build(item) for item in node.value])
    value = _scalar_constructor.construct_object(node)
    if not isinstance(value, (str, int, float, bool, type(None))):
        # timestamps, binary: keep the text; validators will complain about the type
        value = node.value
    return YNode("scalar", line, value=value)


def parse_documents(text: str) -> Iterator[tuple[int, YNode | None]]:
    """Yield (document start line, root node) for each document of a YAML stream.

    Raises YamlSyntaxError with the line of the problem.
    """
    try:
        for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
            if node is None:
                continue
            yield node.start_mark.line + 1, _build(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = exc.problem or str(exc)
        if exc.context:
            problem = f"{exc.context}, {problem}"
        raise YamlSyntaxError(line, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:  # pragma: no cover - unmarked errors are rare
        raise YamlSyntaxError(0, f"invalid YAML: {exc}") from None
