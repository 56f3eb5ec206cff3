"""Lowerings shared by backends: pure rewrites of a verified IR into what a target can print.

Each keeps the verdict of every packet (first-match order included) and returns the same
object when it has nothing to do.
"""

from __future__ import annotations

from dataclasses import replace

from rulec.ir.nodes import Chain, Rule, Ruleset, Table, map_rules
from rulec.ir.values import AddressSet, Family, Prefix
from rulec.ir.verify import rule_families

_NEVER = AddressSet(())  # marker: a non-negated set left with no address of the family


def split_families(ruleset: Ruleset) -> Ruleset:
    """Give every rule address sets of a single family, copying the rule once per family.

    An nft rule cannot test `ip saddr` and `ip6 saddr` at once, and in an inet table even a
    negated `ip saddr != X` only matches IPv4 packets. In an inet table:

        before:  accept saddr != { 10.0.0.0/8, fc00::/7 }
        after:   accept family ip saddr != 10.0.0.0/8
                 accept family ip6 saddr != fc00::/7

    IPv4 comes first. A non-negated set with no address of a family drops that family's copy;
    a negated one becomes no constraint. The copies match disjoint packets, so their order
    and duplicated statements cannot change a verdict. In ip/ip6 tables the sets are only
    restricted to the table's family. Rules without addresses are left alone.
    """
    return map_rules(ruleset, _split_rule)


def _split_rule(table: Table, chain: Chain, rule: Rule) -> tuple[Rule, ...]:
    m = rule.match
    if m.saddr is None and m.daddr is None:
        return (rule,)
    families = rule_families(table, rule)
    # No family can match (verify reports it); no copy is exactly equivalent.
    split = len(families) > 1
    out = []
    for family in (f for f in (Family.IP, Family.IP6) if f in families):
        saddr, daddr = _restrict(m.saddr, family), _restrict(m.daddr, family)
        if saddr is _NEVER or daddr is _NEVER:
            continue
        match = replace(m, saddr=saddr, daddr=daddr, family=family if split else m.family)
        out.append(rule if match == m else replace(rule, match=match))
    return tuple(out)


def _restrict(value: AddressSet | None, family: Family) -> AddressSet | None:
    if value is None:
        return None
    kept = value.restrict(family)
    if kept.prefixes:
        return kept if kept != value else value
    return None if value.negated else _NEVER


def disjoint_prefixes(prefixes: tuple[Prefix, ...]) -> tuple[Prefix, ...]:
    """The prefixes without those inside another: same addresses, none matched twice."""
    # Prefixes nest or are disjoint; in AddressSet's sorted order a cover comes right before
    # what it covers.
    kept: list[Prefix] = []
    for prefix in prefixes:
        last = kept[-1] if kept else None
        if last is None or not (last.family is prefix.family and last.first <= prefix.first
                                and prefix.last <= last.last):
            kept.append(prefix)
    return tuple(kept)


def merged_ranges(ranges: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """Port ranges with the overlapping ones joined: same ports, none matched twice."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
        else:
            merged.append((low, high))
    return tuple(merged)
