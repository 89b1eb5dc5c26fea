"""YAML documents as small trees that remember their line numbers.

We read PyYAML's event stream (its scanner and parser keep explicit stacks, so
they do not recurse) and build our own nodes with an explicit stack too, so
every value (and every mapping key) knows its line and field path for error
messages. PyYAML's composer is not used: it recurses once per nesting level and
follows aliases without counting, so one hostile file could exhaust the stack
or memory ("billion laughs"). Here, while building:

- nesting deeper than MAX_YAML_DEPTH is refused;
- every node counts toward MAX_YAML_NODES, and an alias counts as the whole
  subtree it repeats, so alias expansion is bounded (validators walk the
  expanded tree);
- an alias inside the node it names (`a: &a [*a]`) is refused;
- numbers longer than MAX_NUMBER_TEXT characters, and NUL bytes in strings
  other than one at the end (see _scalar_value), are refused.

Scalars are typed with PyYAML's safe resolver and constructor, so YAML typing
stays standard (`true` is a bool, `0x10` an int, `"1"` a string).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import yaml

from . import limits
from .errors import clip, shown


@dataclass(eq=False)
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
    size: int = 1    # nodes in this subtree, aliases expanded
    height: int = 1  # nesting levels of this subtree, aliases expanded

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
        if isinstance(self.value, (int, float)):
            return f"the number {clip(str(self.value))}"
        return f'the string {shown(self.value)}'


class YamlSyntaxError(Exception):
    """The stream cannot be read as YAML, or breaks a limit of this module.

    `path` is the field path where the problem is ("" when unknown)."""

    def __init__(self, line: int, message: str, path: str = ""):
        self.line = line
        self.message = message
        self.path = path
        super().__init__(f"line {line}: {message}")


# libyaml's parser when PyYAML has it (ten times faster; like the Python one,
# it keeps explicit stacks rather than recursing)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_constructor = yaml.constructor.SafeConstructor()
_resolver = yaml.resolver.Resolver()
_TAG = "tag:yaml.org,2002:"
_CONSTRUCTED = {_TAG + t for t in ("null", "bool", "int", "float", "str")}
_NUMBERS = {_TAG + "int", _TAG + "float"}
_MERGE = _TAG + "merge"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Frame:
    """A mapping or list being built."""

    __slots__ = ("node", "path", "depth", "anchor", "key", "merges")

    def __init__(self, node: YNode, path: str, depth: int, anchor: str | None):
        self.node = node
        self.path = path
        self.depth = depth
        self.anchor = anchor
        self.key: tuple | None = None   # map: (key text or None for a bad key, line, is_merge)
        self.merges: list[YNode] = []   # map: values of "<<" keys

    def child_path(self) -> str:
        if self.node.kind == "seq":
            return f"{self.path}[{len(self.node.items)}]"
        if self.key is None:
            return self.path            # building a key
        return _join(self.path, self.key[0] or "?")


class _Builder:
    """Turns the events of one stream into YNode trees, one per document."""

    def __init__(self) -> None:
        self.nodes = 0      # across the whole stream, aliases expanded
        self.anchors: dict[str, YNode] = {}
        self.stack: list[_Frame] = []
        self.root: YNode | None = None

    def here(self) -> tuple[str, int]:
        if not self.stack:
            return "", 0
        top = self.stack[-1]
        return top.child_path(), top.depth + 1

    def count(self, line: int, path: str, nodes: int, height: int) -> None:
        self.nodes += nodes
        if self.nodes > limits.MAX_YAML_NODES:
            raise YamlSyntaxError(line, f"more than {limits.MAX_YAML_NODES} YAML nodes "
                                  "(aliases counted as what they repeat): refused", path)
        depth = self.here()[1] + height
        if depth > limits.MAX_YAML_DEPTH:
            raise YamlSyntaxError(line, f"nested more than {limits.MAX_YAML_DEPTH} levels deep: refused", path)

    def start(self, event, kind: str) -> None:
        line = event.start_mark.line + 1
        path, depth = self.here()
        self.count(line, path, 1, 1)
        self.stack.append(_Frame(YNode(kind, line), path, depth, event.anchor))

    def end(self) -> None:
        frame = self.stack.pop()
        node = frame.node
        if frame.merges:
            _merge(node, frame.merges, frame.path)
        children = node.items if node.kind == "seq" else [v for _, v in node.entries.values()]
        node.height = 1 + max((c.height for c in children), default=0)
        if frame.anchor:
            self.anchors[frame.anchor] = node
        self.attach(node)

    def scalar(self, event) -> None:
        line = event.start_mark.line + 1
        path, _ = self.here()
        self.count(line, path, 1, 1)
        node = YNode("scalar", line, value=_scalar_value(event, line, path))
        if event.anchor:
            self.anchors[event.anchor] = node
        self.attach(node, tag=_scalar_tag(event))

    def alias(self, event) -> None:
        line = event.start_mark.line + 1
        path, _ = self.here()
        name = event.anchor
        if any(frame.anchor == name for frame in self.stack):
            raise YamlSyntaxError(line, f"alias *{clip(name)} is used inside the node it names "
                                  "(a recursive alias): refused", path)
        node = self.anchors.get(name)
        if node is None:
            raise YamlSyntaxError(line, f"alias *{clip(name)} names no anchor defined before it", path)
        self.count(line, path, node.size, node.height)
        self.attach(node, tag=_TAG + "str" if node.kind == "scalar" else "")

    def attach(self, node: YNode, tag: str = "") -> None:
        if not self.stack:
            self.root = node
            return
        frame = self.stack[-1]
        parent = frame.node
        parent.size += node.size
        if parent.kind == "seq":
            parent.items.append(node)
            return
        if frame.key is None:           # node is a key
            if node.kind != "scalar":
                frame.key = (None, node.line, False)
                parent.bad_keys.append(("<complex key>", node.line))
            elif tag == _MERGE:
                frame.key = ("<<", node.line, True)
            else:
                key = node.value
                if not isinstance(key, str):
                    parent.bad_keys.append((clip(repr(key)), node.line))
                frame.key = (key if isinstance(key, str) else None, node.line, False)
            return
        key, key_line, is_merge = frame.key
        frame.key = None
        if is_merge:
            frame.merges.append(node)
        elif key is None:
            pass                        # reported in bad_keys
        elif key in parent.entries:
            parent.duplicate_keys.append((key, key_line))
        else:
            parent.entries[key] = (key_line, node)


def _merge(node: YNode, sources: list[YNode], path: str) -> None:
    """`<<: *base` / `<<: [*a, *b]`: keys written in the mapping win, then the
    earlier sources (YAML's merge key rule)."""
    for source in sources:
        maps = source.items if source.kind == "seq" else [source]
        for item in maps:
            if item.kind != "map":
                raise YamlSyntaxError(source.line, "a merge key (<<) takes a mapping or a list of "
                                      f"mappings, got {item.describe()}", path)
            for key, entry in item.entries.items():
                node.entries.setdefault(key, entry)


def _scalar_tag(event) -> str:
    tag = event.tag
    if tag is None or tag == "!":
        tag = _resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
    return tag


def _scalar_value(event, line: int, path: str) -> Any:
    tag = _scalar_tag(event)
    text = event.value
    if tag in _NUMBERS and len(text) > limits.MAX_NUMBER_TEXT:
        # No field takes a number this long; converting it could take seconds.
        raise YamlSyntaxError(line, f"a number of {len(text)} characters is out of range for every "
                              f"field (at most {limits.MAX_NUMBER_TEXT} characters)", path)
    if "\0" in text.rstrip("\0") or text.endswith("\0\0"):
        # One trailing NUL is Tetragon's way to match a string exactly
        # ("security.capability\0"); anywhere else it would cut names and
        # fields short in the kernel, journald and file names.
        raise YamlSyntaxError(line, "a NUL byte (\\0) is only allowed as the last character of a string", path)
    if tag in _CONSTRUCTED:
        node = yaml.ScalarNode(tag, text, event.start_mark, event.end_mark, event.style)
        try:
            return _constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            raise YamlSyntaxError(line, f"cannot read {shown(text)} as {tag[len(_TAG):]}: "
                                  f"{clip(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 100)}",
                                  path) from None
    if tag.startswith(_TAG):
        return text  # timestamps, binary, ...: keep the text; validators will complain about the type
    raise YamlSyntaxError(line, f"unknown YAML tag {shown(tag)}", path)


def parse_documents(text: str) -> Iterator[tuple[int, YNode]]:
    """Yield (document start line, root node) for each document of a YAML stream.

    Raises YamlSyntaxError with the line (and field path) of the problem.
    """
    builder = _Builder()
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            if isinstance(event, yaml.ScalarEvent):
                builder.scalar(event)
            elif isinstance(event, yaml.SequenceStartEvent):
                builder.start(event, "seq")
            elif isinstance(event, yaml.MappingStartEvent):
                builder.start(event, "map")
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                builder.end()
            elif isinstance(event, yaml.AliasEvent):
                builder.alias(event)
            elif isinstance(event, yaml.DocumentStartEvent):
                builder.anchors = {}    # anchors do not cross documents
                builder.root = None
                start_line = event.start_mark.line + 1
            elif isinstance(event, yaml.DocumentEndEvent) and builder.root is not None:
                yield start_line, builder.root
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = exc.problem or "not YAML"
        if exc.context:
            problem = f"{exc.context}, {problem}"
        # PyYAML's problems quote at most a character or a token; clip anyway
        raise YamlSyntaxError(line, f"invalid YAML: {clip(problem, 160)}") from None
    except yaml.YAMLError as exc:
        # ReaderError (a character YAML does not allow) carries no mark
        position = getattr(exc, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else 0
        reason = getattr(exc, "reason", "") or "not YAML"
        character = getattr(exc, "character", None)
        detail = f" (character #x{ord(character):04x})" if isinstance(character, str) and character else ""
        raise YamlSyntaxError(line, f"invalid YAML: {clip(reason, 100)}{detail}") from None
