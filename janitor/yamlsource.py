"""Safe YAML loading that remembers where every key and item came from.

Only `yaml.SafeLoader` semantics: no python tags. On top of it: duplicate keys are errors
(a duplicated key once made another tool delete everything, because the last one silently
won), aliases are capped (an alias bomb must not hang us), and each mapping and sequence
carries the line of each of its keys and items so validation errors can name a line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

MAX_ALIASES = 100
# Aliases are shared when constructed, but validation walks them expanded: 9 levels of
# 9 aliases ("billion laughs") is only 81 aliases yet 387 million values.
MAX_EXPANDED_NODES = 100_000


class LineDict(dict[str, Any]):
    """A mapping that knows its own line and the line of each key (1-based)."""

    line: int
    key_lines: dict[str, int]


class LineList(list[Any]):
    """A sequence that knows its own line and the line of each item (1-based)."""

    line: int
    item_lines: list[int]


@dataclass(frozen=True)
class YamlProblem:
    line: int
    message: str


class YamlProblems(Exception):
    def __init__(self, problems: list[YamlProblem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


class _LineLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.problems: list[YamlProblem] = []
        self.alias_count = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.alias_count += 1
            if self.alias_count > MAX_ALIASES:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_ALIASES} YAML aliases (an alias bomb?)", event.start_mark
                )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineDict:  # type: ignore[override]
        self.flatten_mapping(node)  # resolves `<<:` merge keys
        result = LineDict()
        result.line = node.start_mark.line + 1
        result.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            line = key_node.start_mark.line + 1
            if key in result:
                self.problems.append(
                    YamlProblem(
                        line,
                        f"duplicate key {key!r} (first at line {result.key_lines[key]}); "
                        "a duplicated key silently replaces the first one, so it is refused",
                    )
                )
                continue
            result[key] = self.construct_object(value_node, deep=True)
            result.key_lines[key] = line
        return result

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> LineList:
        result = LineList(self.construct_object(child, deep=True) for child in node.value)
        result.line = node.start_mark.line + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result


_LineLoader.add_constructor("tag:yaml.org,2002:map", _LineLoader.construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _LineLoader.construct_sequence)


def load_yaml_with_lines(text: str) -> tuple[Any, list[YamlProblem]]:
    """Parse one YAML document: (data, problems that did not stop parsing).

    Duplicate keys are reported but parsing goes on (the first value is kept) so that
    validation can report everything else at once. Raises YamlProblems when the text
    cannot be parsed at all.
    """
    try:
        loader = _LineLoader(text)  # the reader already rejects unprintable characters here
    except yaml.YAMLError as exc:
        raise YamlProblems([YamlProblem(_reader_line(text, exc), f"invalid YAML: {_describe(exc)}")]) from None
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_EXPANDED_NODES:
            raise YamlProblems([YamlProblem(
                node.start_mark.line + 1,
                f"the document expands to more than {MAX_EXPANDED_NODES} values through aliases "
                "(an alias bomb?); refusing it",
            )])
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = str(exc.problem or exc)
        if "could not determine a constructor" in problem:
            problem = f"tag {problem.split('tag ', 1)[-1].split(chr(10))[0]} is not allowed (only plain YAML)"
        raise YamlProblems([YamlProblem(line, f"invalid YAML: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise YamlProblems([YamlProblem(_reader_line(text, exc), f"invalid YAML: {_describe(exc)}")]) from None
    except RecursionError:
        raise YamlProblems([YamlProblem(1, "invalid YAML: nested too deeply")]) from None
    finally:
        loader.dispose()
    return data, loader.problems


def _reader_line(text: str, exc: yaml.YAMLError) -> int:
    position = getattr(exc, "position", None)
    return text.count("\n", 0, position) + 1 if isinstance(position, int) else 1


def _describe(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return f"character #x{exc.character:04x} is not allowed in YAML" if isinstance(exc.character, int) else str(exc)
    return str(exc).splitlines()[0]


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Number of values the node stands for once every alias is expanded."""
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = 1  # a recursive structure counts once instead of looping
    size = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            size += _expanded_size(child, memo)
            if size > MAX_EXPANDED_NODES:
                break
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            size += _expanded_size(key, memo) + _expanded_size(value, memo)
            if size > MAX_EXPANDED_NODES:
                break
    memo[id(node)] = size
    return size


def line_of(data: Any, loc: tuple[str | int, ...]) -> int:
    """The line of the deepest element of `loc` that the source knows about."""
    line = getattr(data, "line", 1)
    node = data
    for part in loc:
        if isinstance(node, LineDict) and isinstance(part, str) and part in node:
            line = node.key_lines.get(part, line)
            node = node[part]
        elif isinstance(node, LineList) and isinstance(part, int) and 0 <= part < len(node):
            line = node.item_lines[part]
            node = node[part]
        else:
            break
    return line
