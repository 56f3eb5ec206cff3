"""YAML and JSON documents whose mappings and lists remember where each key and value was.

A SafeLoader subclass composes the node tree; `_convert` turns it into plain dicts, lists and
scalars, with the positions kept beside the data (never as keys inside it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import yaml

from rulec.diagnostics import Collector, SourceFile, Span

# Kubernetes reads YAML with sigs.k8s.io/yaml (go-yaml): strict about duplicate keys, and it
# knows merge keys. PyYAML's scalar resolution (YAML 1.1) matches go-yaml v2's.
MAX_DEPTH = 64


class Loader(yaml.SafeLoader):
    """SafeLoader that composes nodes only; `documents` converts them and keeps positions."""


# libyaml's composer, where PyYAML was built with it (yaml.CSafeLoader is absent otherwise).
FastLoader: type[yaml.CSafeLoader] | None = getattr(yaml, "CSafeLoader", None)
if TYPE_CHECKING:
    AnyLoader = Loader | yaml.CSafeLoader


class YMap(dict[str, Any]):
    """A mapping that knows the span of itself, of each key and of each value."""

    span: Span
    key_spans: dict[str, Span]
    value_spans: dict[str, Span]

    def value_span(self, key: str) -> Span:
        return self.value_spans.get(key, self.span)

    def key_span(self, key: str) -> Span:
        return self.key_spans.get(key, self.span)


class YList(list[Any]):
    """A list that knows the span of itself and of each item."""

    span: Span
    item_spans: list[Span]


def span_of(source: SourceFile, node: yaml.Node) -> Span:
    start = node.start_mark.index
    end = node.end_mark.index
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and not node.flow_style:
        # A block collection ends where the next one starts; point at its first line only.
        first_line_end = source.text.find("\n", start)
        end = min(end, first_line_end) if first_line_end >= 0 else end
    return source.span(start, max(start + 1, end))


class _Converter:
    def __init__(self, source: SourceFile, loader: AnyLoader, out: Collector) -> None:
        self.source = source
        self.loader = loader
        self.out = out
        self.active: set[int] = set()  # node ids on the current path: recursive aliases

    def value(self, node: yaml.Node, depth: int = 0) -> Any:
        if depth > MAX_DEPTH or id(node) in self.active:
            self.out.error("E0601", "recursive or too deeply nested YAML",
                           span_of(self.source, node))
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, depth)
            if isinstance(node, yaml.SequenceNode):
                items = YList(self.value(item, depth + 1) for item in node.value)
                items.span = span_of(self.source, node)
                items.item_spans = [span_of(self.source, item) for item in node.value]
                return items
            return self.loader.construct_object(node, deep=True)
        finally:
            self.active.discard(id(node))

    def mapping(self, node: yaml.MappingNode, depth: int) -> YMap:
        self.loader.flatten_mapping(node)  # merge keys (<<), as go-yaml does
        result = YMap()
        result.span = span_of(self.source, node)
        result.key_spans, result.value_spans = {}, {}
        for key_node, value_node in node.value:
            key_span = span_of(self.source, key_node)
            key = self.loader.construct_object(key_node, deep=True) if isinstance(
                key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.out.error("E0604", "mapping keys must be strings", key_span)
                continue
            if key in result:
                self.out.error("E0610", f"key {key!r} appears twice in this mapping", key_span,
                               f"first at line {result.key_spans[key].line}")
                continue
            result[key] = self.value(value_node, depth + 1)
            result.key_spans[key] = key_span
            result.value_spans[key] = span_of(self.source, value_node)
        return result


def _yaml_text(text: str) -> str:
    """JSON is read as YAML; JSON may indent with tabs, YAML may not. A raw tab inside a JSON
    string is invalid anyway, so tabs become spaces and every offset stays the same."""
    if text.lstrip()[:1] in ("{", "["):
        return text.replace("\t", " ")
    return text


def documents(source: SourceFile, out: Collector) -> list[tuple[Any, Span]]:
    """Every non-empty document of a file, converted, with its span; a syntax error is
    reported (E0601) and ends the file.

    libyaml reads a cluster's files about 2.5x faster; on any error the pure-Python reader
    reads the file again, so that messages and positions do not depend on libyaml."""
    if FastLoader is not None:
        scratch = Collector()
        try:
            found = list(_documents(FastLoader(_yaml_text(source.text)), source, scratch))
        except yaml.YAMLError:
            pass
        else:
            out.extend(scratch.items)
            return found
    loader = Loader(_yaml_text(source.text))
    found = []
    try:
        found.extend(_documents(loader, source, out))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        index = min(mark.index, len(source.text)) if mark is not None else 0
        problem = exc.problem or "invalid YAML"
        notes = [exc.context] if exc.context else []
        out.error("E0601", f"YAML syntax error: {problem}", source.span(index, index + 1),
                  *notes)
    except yaml.YAMLError as exc:  # reader errors (control characters) carry no mark
        position = getattr(exc, "position", 0)
        out.error("E0601", f"YAML syntax error: {exc}", source.span(position, position + 1))
    return found


def _documents(loader: AnyLoader, source: SourceFile,
               out: Collector) -> Iterator[tuple[Any, Span]]:
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            value = _Converter(source, loader, out).value(node)
            if value is not None:
                yield value, span_of(source, node)
    finally:
        loader.dispose()
