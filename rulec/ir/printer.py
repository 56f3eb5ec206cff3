"""Canonical text of the IR, written in the policy language itself (parse(print(r)) == r).

Two things synthesize_sets makes have no syntax of their own: a named set prints as a `define`
(before the tables) and `$name` where it is used, which parses back to an equal IR (names take
no part in equality); a verdict map prints as its equivalent rules, one per entry, under a
`# vmap on <field>:` comment line, so it parses back to rules that do the same. The terms
behind each element of a merged rule's sets print as a `# terms:` comment line above it.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import assert_never

from rulec.ir import nodes as ir
from rulec.ir.values import PROTOCOL_NAMES, AddressSet, Family, Interface, PortSet, Prefix

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.+-]*\Z")
# Protocol names the grammar has keywords for.
_PROTO_WORDS = frozenset({"tcp", "udp", "icmpv6", "icmp", "sctp", "udplite", "dccp", "esp", "ah",
                          "gre", "igmp"})


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _interface(value: Interface) -> str:
    name = value.name if _PLAIN_NAME.match(value.name) else quote(value.name)
    return f"!= {name}" if value.negated else name


def match_text(m: ir.Match) -> list[str]:
    parts: list[str] = []
    # `icmp` and `icmpv6` imply their family (the parser sets it); `proto != icmp` does not.
    implied = None
    if m.proto is not None and not m.proto.negated and m.proto.number in (1, 58):
        implied = Family.IP if m.proto.number == 1 else Family.IP6
    if m.family is not None and m.family is not implied:
        parts.append(f"family {m.family.value}")
    if m.proto is not None:
        name = PROTOCOL_NAMES.get(m.proto.number, str(m.proto.number))
        if not m.proto.negated and name in _PROTO_WORDS:
            parts.append(name)
        else:
            parts.append(f"proto {'!= ' if m.proto.negated else ''}{name}")
    for word, value in (("from", m.saddr), ("to", m.daddr), ("sport", m.sport),
                        ("dport", m.dport)):
        if value is not None:
            parts.append(f"{word} {_value(value)}")
    if m.iifname is not None:
        parts.append(f"in {_interface(m.iifname)}")
    if m.oifname is not None:
        parts.append(f"out {_interface(m.oifname)}")
    if m.ct_state is not None:
        parts.append(f"ct state {m.ct_state}")
    if m.ct_orig_dport is not None:
        parts.append(f"ct original dport {_value(m.ct_orig_dport)}")
    if m.src_type is not None:
        parts.append(f"from type {m.src_type}")
    if m.dst_type is not None:
        parts.append(f"to type {m.dst_type}")
    if m.tcp_flags is not None:
        parts.append(f"flags {m.tcp_flags}")
    if m.icmp_type is not None:
        parts.append(f"type {m.icmp_type}")
    if m.mark is not None:
        parts.append(f"mark {m.mark}")
    if m.limit is not None:
        parts.append(f"limit {m.limit}")
    return parts


def _value(value: AddressSet | PortSet) -> str:
    if value.name is None:
        return str(value)
    return f"!= ${value.name}" if value.negated else f"${value.name}"


def named_sets(ruleset: ir.Ruleset) -> dict[str, AddressSet | PortSet]:
    """Every named set of the ruleset, by name in order of first use (verify() makes one name
    one content per table; the DSL's variables are global, so the first content wins)."""
    found: dict[str, AddressSet | PortSet] = {}
    for _, _, rule in ir.iter_rules(ruleset):
        m = rule.match
        for value in (m.saddr, m.daddr, m.sport, m.dport, m.ct_orig_dport):
            if value is not None and value.name is not None:
                found.setdefault(value.name, value)
    return found


def _ports(ports: tuple[int, int]) -> str:
    low, high = ports
    return str(low) if low == high else f"{low}-{high}"


def _log(log: ir.Log) -> str:
    text = "log"
    if log.prefix is not None:
        text += f" prefix {quote(log.prefix)}"
    if log.level is not None:
        text += f" level {log.level.value}"
    return text


def _nat_target(address: Prefix, ports: tuple[int, int] | None) -> str:
    # IPv6 always in brackets: `::1:80` alone would read as address and port (E0319).
    text = address.address_text()
    if address.family.value == "ip6":
        text = f"[{text}]"
    return text if ports is None else f"{text}:{_ports(ports)}"


def action_text(action: ir.Action) -> str:
    match action:
        case ir.Accept():
            return "accept"
        case ir.Drop():
            return "drop"
        case ir.Return():
            return "return"
        case ir.Reject(with_=with_):
            return "reject" if with_ is None else f"reject with {with_.value}"
        case ir.Jump(target=target):
            return f"jump {target}"
        case ir.Goto(target=target):
            return f"goto {target}"
        case ir.Log():
            return _log(action)
        case ir.Dnat(address=address, ports=ports):
            return f"dnat to {_nat_target(address, ports)}"
        case ir.Snat(address=address, ports=ports):
            return f"snat to {_nat_target(address, ports)}"
        case ir.Masquerade():
            return "masquerade"
        case ir.Redirect(ports=ports):
            return f"redirect to {_ports(ports)}"
        case ir.SetMss(mss=mss):
            return f"mss set {mss}"
        case ir.ClampMss():
            return "mss clamp to pmtu"
        case ir.SetMark(value=value, mask=mask):
            return f"mark set {value:#x}" + ("" if mask == 0xFFFFFFFF else f"/{mask:#x}")
        case ir.Vmap():
            raise ValueError("a verdict map has no action syntax; print its rules (vmap_rules)")
        case _:
            assert_never(action)


def rule_text(rule: ir.Rule) -> str:
    parts = [action_text(rule.action), *match_text(rule.match)]
    for statement in rule.statements:
        parts.append("counter" if isinstance(statement, ir.Counter) else _log(statement))
    if rule.comment is not None:
        parts.append(f"comment {quote(rule.comment)}")
    return " ".join(parts)


_MAP_WORDS = {ir.MapKey.SADDR: "from", ir.MapKey.DADDR: "to", ir.MapKey.SPORT: "sport",
              ir.MapKey.DPORT: "dport", ir.MapKey.IIFNAME: "in", ir.MapKey.OIFNAME: "out",
              ir.MapKey.CT_STATE: "ct state"}


def _notes_line(rule: ir.Rule) -> list[str]:
    """`# terms: from 10.0.0.0/24 "t1", 10.0.1.0/24 "t2"`: the terms behind each element of
    the rule's noted sets (rulec.ir.provenance), as a comment, so the text still parses."""
    parts = []
    for name, word in (("saddr", "from"), ("daddr", "to"), ("sport", "sport"),
                       ("dport", "dport")):
        value = getattr(rule.match, name)
        if value is None or not value.notes:
            continue
        elements = ([str(p) for p in value.prefixes] if isinstance(value, AddressSet) else
                    [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in value.ranges])
        parts.append(word + " " + ", ".join(
            f"{e} {quote(', '.join(t))}" for e, t in zip(elements, value.notes, strict=True)))
    return [f"    # terms: {'; '.join(parts)}"] if parts else []


def _rule_lines(rule: ir.Rule) -> list[str]:
    if not isinstance(rule.action, ir.Vmap):
        return [*_notes_line(rule), f"    {rule_text(rule)}"]
    return [f"    # vmap on {' . '.join(_MAP_WORDS[k] for k in rule.action.keys)}:",
            *(line for r in ir.vmap_rules(rule)
              for line in (*_notes_line(r), f"    {rule_text(r)}"))]


def print_ruleset(ruleset: ir.Ruleset) -> str:
    lines = [f"define {name} = {replace(value, negated=False)}"
             for name, value in named_sets(ruleset).items()]
    for table in ruleset.tables:
        lines.append(f"table {table.family.value} {table.kind.value} {{")
        for chain in table.chains:
            policy = f" policy {chain.policy.value}" if chain.policy else ""
            external = " external" if chain.name in ruleset.entry_points else ""
            lines.append(f"  chain {chain.name}{external}{policy} {{")
            for rule in chain.rules:
                lines.extend(_rule_lines(rule))
            lines.append("  }")
        lines.append("}")
    return "\n".join(lines) + "\n"
