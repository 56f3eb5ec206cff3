"""Collapse address sets (per family: contained prefixes go, adjacent ones join) and port
sets (overlapping and adjacent ranges join), negated or not.

    before:  accept from { 10.0.0.0/25, 10.0.0.128/25, 10.0.0.7, fc00::/8, fc00::1 }
             drop dport != { 20-29, 25, 30 }
    after:   accept from { 10.0.0.0/24, fc00::/8 }
             drop dport != 20-30
"""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from typing import Any

from rulec.ir.nodes import Chain, Rule, Ruleset, Table, map_rules
from rulec.ir.values import AddressSet, PortSet, Prefix
from rulec.passes.analysis import collapse_prefixes, collapse_ranges, noted_addresses, noted_ports
from rulec.passes.context import PassContext


def aggregate_addresses(ruleset: Ruleset, ctx: PassContext) -> Ruleset:
    """Rewrite every address set (source, destination) and port set (sport, dport, ct
    original dport) to the fewest prefixes or ranges covering the same values.

    Preserves the set of values each field matches, hence every match and every rule; a
    set whose elements name their terms (rulec.ir.provenance) joins adjacent elements only
    where their terms are the same, so each still names its own. A
    negated set keeps its negation (the complement of the same union). Never refuses, but
    changes nothing already minimal, and never turns a set into "any": a set that covers a
    whole family stays a /0.

    >>> from rulec.api import parse_text
    >>> from rulec.ir.printer import print_ruleset
    >>> r = parse_text("table ip filter { chain INPUT { accept tcp dport { 22, 23, 20-21 } } }")
    >>> print(print_ruleset(aggregate_addresses(r, PassContext())), end="")
    table ip filter {
      chain INPUT {
        accept tcp dport 20-23
      }
    }
    """
    return map_rules(ruleset, _rule)


def _rule(_table: Table, _chain: Chain, rule: Rule) -> tuple[Rule, ...]:
    m = rule.match
    changes: dict[str, Any] = {}
    for name in ("saddr", "daddr"):
        addresses: AddressSet | None = getattr(m, name)
        if addresses is not None and len(addresses.prefixes) > 1 and not _minimal(
                addresses.prefixes):
            if addresses.notes:  # keep each element's terms (analysis.collapse_noted)
                noted = noted_addresses((addresses,), (addresses.notes,))
                if noted.prefixes != addresses.prefixes:
                    changes[name] = replace(noted, negated=addresses.negated,
                                            name=addresses.name)
                continue
            collapsed = collapse_prefixes(addresses.prefixes)
            if collapsed != addresses.prefixes:
                changes[name] = AddressSet(collapsed, addresses.negated, addresses.name)
    for name in ("sport", "dport", "ct_orig_dport"):
        ports: PortSet | None = getattr(m, name)
        if ports is not None and len(ports.ranges) > 1 and any(
                low <= high + 1 for (_, high), (low, _) in pairwise(ports.ranges)):
            if ports.notes:
                noted_set = noted_ports((ports,), (ports.notes,))
                if noted_set.ranges != ports.ranges:
                    changes[name] = replace(noted_set, negated=ports.negated, name=ports.name)
                continue
            merged = collapse_ranges(ports.ranges)
            if merged != ports.ranges:
                changes[name] = PortSet(merged, ports.negated, ports.name)
    if not changes:
        return (rule,)
    return (replace(rule, match=replace(m, **changes)),)


def _minimal(prefixes: tuple[Prefix, ...]) -> bool:
    """Whether sorted prefixes (as an AddressSet keeps them) are already collapsed because
    each ends before the next starts with a gap: then no two join or contain one another
    (the common case, checked without building anything)."""
    return all(a.family is not b.family or b.first > a.last + 1 for a, b in pairwise(prefixes))
