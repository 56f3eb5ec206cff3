"""Kubernetes NetworkPolicy frontend: policies plus a cluster inventory -> IR for a node that
routes between pods. `source` reads YAML/JSON with positions, `model` validates into typed
objects, `compiler` builds the IR.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rulec.diagnostics import Collector, Diagnostic, SourceFile
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
    try:
        if path.stat().st_size > MAX_CHARS:  # before reading it all into memory
            out.error("E0611", f"{path} has {path.stat().st_size:,} bytes; rulec reads files "
                      f"of up to {MAX_CHARS:,}", None)
            return None
        data = path.read_bytes()
    except OSError as exc:
        out.error("E0203", f"cannot read {path}: {exc.strerror or exc}", None)
        return None
    try:
        return SourceFile(str(path), data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        # Point at the first bad byte, in the text as far as it decodes.
        offset = len(data[:exc.start].decode("utf-8"))
        shown = SourceFile(str(path), data.decode("utf-8", errors="replace"))
        out.error("E0601", f"invalid UTF-8 (byte 0x{data[exc.start]:02x}): YAML and JSON "
                  "files are UTF-8 text", shown.span(offset, offset + 1))
        return None


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
    inventory = read_inventory(inventory_source, out)
    policies: dict[str, Policy] = {}
    namespaces = {ns.name for ns in inventory.namespaces}
    for source in sources:
        for policy in read_policies(source, out):
            first = policies.get(policy.key)
            if first is not None:
                first_at = first.name_span or first.span
                out.error("E0610", f"{policy.key}: metadata.name: NetworkPolicy defined twice",
                          policy.name_span or policy.span,
                          f"first defined at {first_at}" if first_at else "")
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
