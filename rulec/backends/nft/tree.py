"""The decisions about which tests a rule spells out in nft, shared by the text and JSON
printers."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import assert_never

from rulec.backends.lowering import disjoint_prefixes, merged_ranges
from rulec.backends.nft.vocabulary import (
    ICMP_NAMES,
    ICMPV6_NAMES,
    PROTOCOL_WORDS,
    REJECT_CODES,
    interface_pattern,
)
from rulec.ir.nodes import (
    MapValue,
    MapValues,
    Match,
    RejectWith,
    Rule,
    SetMark,
    Table,
    Vmap,
    keyed,
)
from rulec.ir.values import (
    MAX_MARK,
    AddressSet,
    CtState,
    CtStates,
    Family,
    IcmpType,
    Interface,
    PortSet,
    Prefix,
)
from rulec.ir.verify import (
    rule_families,
)


def decision_rule(rule: Rule) -> Rule:
    """The rule as nfproto() and explicit_proto() should judge it: a verdict map's key is
    printed like a match on its field, with the same implied protocol and family."""
    action = rule.action
    if not isinstance(action, Vmap) or not action.entries:
        return rule
    return replace(rule, match=keyed(rule.match, action.keys, action.entries[0][0]))

NamedSet = AddressSet | PortSet


def named_sets(table: Table) -> list[NamedSet]:
    """The named sets the table's rules use, one per name, sorted by name."""
    found: dict[str, NamedSet] = {}
    for chain in table.chains:
        for rule in chain.rules:
            m = rule.match
            for value in (m.saddr, m.daddr, m.sport, m.dport, m.ct_orig_dport):
                if value is not None and value.name is not None:
                    found.setdefault(value.name, value)
    return [found[name] for name in sorted(found)]


def set_type(value: NamedSet) -> str:
    if isinstance(value, PortSet):
        return "inet_service"
    return "ipv4_addr" if value.prefixes[0].family is Family.IP else "ipv6_addr"


def set_interval(value: NamedSet) -> bool:
    """Whether the set needs `flags interval`: only for prefixes and port ranges, since exact
    keys in a hash are cheaper to look up (kernel-costs.md, "What a compiler can do", 4)."""
    if isinstance(value, PortSet):
        return any(low != high for low, high in value.ranges)
    return not all(p.is_host for p in value.prefixes)


def disjoint_elements(
    value: MapValue,
) -> list[Prefix] | list[tuple[int, int]] | list[str] | list[CtState]:
    """A value's elements with none overlapping, as named sets and maps need ("conflicting
    intervals specified"; anonymous sets merge by themselves): a prefix inside another goes,
    overlapping port ranges join. Membership is unchanged. A packet has exactly one ct state,
    so a map looks each state up as its own element."""
    if isinstance(value, Interface):
        return [interface_pattern(value)]
    if isinstance(value, CtStates):
        return list(value.ordered)
    if isinstance(value, PortSet):
        return list(merged_ranges(value.ranges))
    return list(disjoint_prefixes(value.prefixes))


Element = Prefix | tuple[int, int] | str | CtState


def map_elements(values: MapValues) -> list[tuple[Element, ...]]:
    """A map entry's elements: with two keys, every pair (nft `a . b`) of the two values'
    disjoint elements, so no two elements of the map overlap."""
    return list(itertools.product(*(disjoint_elements(v) for v in values)))


def map_key_family(vmap: Vmap, index: int) -> Family:
    value = vmap.entries[0][0][index]
    assert isinstance(value, AddressSet)
    return value.prefixes[0].family


def nfproto(table: Table, rule: Rule) -> Family | None:
    """The family an inet rule must test with `meta nfproto`, when no printed match implies it.

    `ip saddr`, `ip6 daddr` (negated too) and `icmp type` carry a hidden family test in inet
    tables; `meta l4proto icmp` and `dnat ip to` do not.
    """
    m = rule.match
    implied = m.saddr is not None or m.daddr is not None or m.icmp_type is not None
    if table.family is not Family.INET or implied:
        return None
    families = rule_families(table, rule)
    return next(iter(families)) if len(families) == 1 else None


def explicit_proto(m: Match) -> bool:
    """Whether `meta l4proto` is printed: nothing later implies it, or ct original needs it."""
    if m.proto is None:
        return False
    if m.proto.negated:
        return True
    if m.sport is not None or m.dport is not None:
        return False
    # `ct original proto-dst` needs the protocol before it; tcp flags and icmp type come after.
    return m.ct_orig_dport is not None or (m.tcp_flags is None and m.icmp_type is None)


def protocol_value(number: int) -> str | int:
    return PROTOCOL_WORDS.get(number, number)


def icmp_type_values(value: IcmpType) -> list[str | int]:
    names = ICMP_NAMES if value.family is Family.IP else ICMPV6_NAMES
    return [names.get(t, t) for t in value.types]


def reject_code(family: Family, with_: RejectWith | None) -> tuple[str, str | None] | None:
    """(type, code) of a reject, or None for nft's default (port unreachable)."""
    if with_ is None or with_ is RejectWith.PORT_UNREACHABLE:
        return None
    if with_ is RejectWith.TCP_RESET:
        return ("tcp reset", None)
    inet, ip, ip6 = REJECT_CODES[with_]
    match family:
        case Family.INET:
            return ("icmpx", inet)
        case Family.IP:
            return ("icmp", ip)
        case Family.IP6:
            return ("icmpv6", ip6)
        case _:
            assert_never(family)


def mark_update(action: SetMark) -> tuple[int, str, int]:
    """(and_mask, op, operand): mark = (mark & and_mask) op operand, in nft's canonical form.

    An and_mask of 0 means a plain assignment, an operand of 0 no second operation.
    """
    keep = ~action.mask & MAX_MARK
    if action.value & keep:  # bits outside the mask are toggled, as --set-xmark does
        return keep, "^", action.value
    return (keep | action.value if keep else 0), "|", action.value

