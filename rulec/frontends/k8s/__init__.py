"""Kubernetes NetworkPolicy frontend: policies plus a cluster inventory -> IR for a node that
routes between pods. `source` reads YAML/JSON with positions, `model` validates into typed
objects, `compiler` builds the IR.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from rulec.diagnostics import Collector, Diagnostic, SourceFile, Span
from rulec.frontends import is_stdin, read_input, source_name
from rulec.frontends.k8s.compiler import compile_cluster, effective_types, named_port_warnings
from rulec.frontends.k8s.model import Inventory, Policy, read_inventory, read_policies
from rulec.frontends.k8s.source import MAX_CHARS
from rulec.ir.nodes import Ruleset


@dataclass(frozen=True, slots=True)
class Cluster:
    """What the inputs say: the inventory, every policy, and the warnings about them."""

    inventory: Inventory
    policies: tuple[Policy, ...]
    warnings: tuple[Diagnostic, ...] = ()


def read_source(path: Path, out: Collector) -> SourceFile | None:
    name = source_name(path)
    try:
        size = None if is_stdin(path) else path.stat().st_size
        data = read_input(path, MAX_CHARS) if size is None or size <= MAX_CHARS else b""
        size = len(data) if size is None else size
        if size > MAX_CHARS:  # a file is measured before it is read into memory
            out.error("E0611", f"{name} has {size:,} bytes or more; rulec reads files of up "
                      f"to {MAX_CHARS:,}", None)
            return None
    except OSError as exc:
        out.error("E0203", f"cannot read {name}: {exc.strerror or exc}", None)
        return None
    try:
        return SourceFile(name, data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        # Point at the first bad byte, in the text as far as it decodes.
        offset = len(data[:exc.start].decode("utf-8"))
        shown = SourceFile(name, data.decode("utf-8", errors="replace"))
        out.error("E0601", f"invalid UTF-8 (byte 0x{data[exc.start]:02x}): YAML and JSON "
                  "files are UTF-8 text", shown.span(offset, offset + 1))
        return None


# A file with more problems than this is not read further: a hostile file of millions of bad
# keys would otherwise cost minutes and print gigabytes, and nobody reads past the first few.
MAX_DIAGNOSTICS = 200
T = TypeVar("T")


class _TooMany(Exception):
    def __init__(self, span: Span | None) -> None:
        self.span = span


class _FileCollector(Collector):
    """One file's diagnostics; the one past MAX_DIAGNOSTICS stops the file's reading."""

    def error(self, code: str, message: str, span: Span | None, *notes: str) -> None:
        self._room(span)
        super().error(code, message, span, *notes)

    def warning(self, code: str, message: str, span: Span | None, *notes: str) -> None:
        self._room(span)
        super().warning(code, message, span, *notes)

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        for d in diagnostics:
            self._room(d.span)
            self.items.append(d)

    def _room(self, span: Span | None) -> None:
        if len(self.items) >= MAX_DIAGNOSTICS:
            raise _TooMany(span)


def _read(source: SourceFile, reader: Callable[[SourceFile, Collector], T], empty: T,
          out: Collector) -> T:
    """`reader` on one file, with its diagnostics capped; `empty` when it had too many."""
    mine = _FileCollector()
    try:
        result = reader(source, mine)
    except _TooMany as exc:
        out.extend(mine.items)
        out.error("E0611", f"more than {MAX_DIAGNOSTICS} errors and warnings in "
                  f"{source.name}; the rest of the file is not read", exc.span)
        return empty
    out.extend(mine.items)
    return result


def load_texts(inventory: tuple[str, str], policies: Sequence[tuple[str, str]]) -> Cluster:
    """Parse and validate (name, text) pairs; RulecError listing every problem."""
    out = Collector()
    return _load(SourceFile(*inventory), [SourceFile(n, t) for n, t in policies], out)


def load_files(inventory: str | Path, policies: Sequence[str | Path]) -> Cluster:
    out = Collector()
    inv = read_source(Path(inventory), out)
    sources = [s for p in policies if (s := read_source(Path(p), out)) is not None]
    if inv is None:
        out.raise_if_errors()
        raise AssertionError("unreachable: a missing inventory is an error")
    return _load(inv, sources, out)


def _load(inventory_source: SourceFile, sources: list[SourceFile], out: Collector) -> Cluster:
    inventory = _read(inventory_source, read_inventory, Inventory((), ()), out)
    policies: dict[str, Policy] = {}
    namespaces = {ns.name for ns in inventory.namespaces}
    for source in sources:
        none: list[Policy] = []
        for policy in _read(source, read_policies, none, out):
            first = policies.get(policy.key)
            if first is not None:
                first_at = first.name_span or first.span
                out.error("E0610", f"{policy.key}: metadata.name: NetworkPolicy defined twice",
                          policy.name_span or policy.span,
                          *([f"first defined at {first_at}"] if first_at else []))
                continue
            policies[policy.key] = policy
            if namespaces and policy.namespace not in namespaces:
                out.warning("W0601", f"{policy.key}: metadata.namespace: namespace "
                            f"{policy.namespace!r} is not in the inventory, so the policy "
                            "selects no pod", policy.namespace_span or policy.span)
    if not out.has_errors:  # on a partial model the warning could be wrong
        out.extend(named_port_warnings(inventory, list(policies.values())))
    out.raise_if_errors()
    return Cluster(inventory, tuple(policies[k] for k in sorted(policies)), out.warnings)


def compile_to_ir(cluster: Cluster) -> Ruleset:
    return compile_cluster(cluster.inventory, cluster.policies)


__all__ = ["Cluster", "Inventory", "Policy", "compile_cluster", "compile_to_ir",
           "effective_types", "load_files", "load_texts"]
