"""Kubernetes NetworkPolicy frontend: policies plus a cluster inventory -> IR for a node that
routes between pods. `source` reads YAML/JSON with positions, `model` validates into typed
objects, `compiler` builds the IR.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rulec.diagnostics import Collector, Diagnostic, SourceFile
from rulec.frontends.k8s.compiler import compile_cluster, effective_types
from rulec.frontends.k8s.model import Inventory, Policy, read_inventory, read_policies
from rulec.ir.nodes import Ruleset


@dataclass(frozen=True, slots=True)
class Cluster:
    """What the inputs say: the inventory, every policy, and the warnings about them."""

    inventory: Inventory
    policies: tuple[Policy, ...]
    warnings: tuple[Diagnostic, ...] = ()


def read_source(path: Path, out: Collector) -> SourceFile | None:
    try:
        return SourceFile(str(path), path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        out.error("E0203", f"cannot read {path}: {reason}", None)
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
                where = f"{first.span}" if first.span is not None else "another file"
                out.error("E0610", f"{policy.key}: NetworkPolicy defined twice", policy.span,
                          f"first defined at {where}")
                continue
            policies[policy.key] = policy
            if namespaces and policy.namespace not in namespaces:
                out.warning("W0601", f"{policy.key}: namespace {policy.namespace!r} is not in "
                            "the inventory, so the policy selects no pod", policy.span)
    out.raise_if_errors()
    return Cluster(inventory, tuple(policies[k] for k in sorted(policies)), out.warnings)


def compile_to_ir(cluster: Cluster) -> Ruleset:
    return compile_cluster(cluster.inventory, cluster.policies)


__all__ = ["Cluster", "Inventory", "Policy", "compile_cluster", "compile_to_ir",
           "effective_types", "load_files", "load_texts"]
