"""Canonical text of the IR, written in the policy language itself (parse(print(r)) == r)."""

from __future__ import annotations

import re
from typing import assert_never

from rulec.ir import nodes as ir
from rulec.ir.values import PROTOCOL_NAMES, Family, Interface

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
            parts.append(f"{word} {value}")
    if m.iifname is not None:
        parts.append(f"in {_interface(m.iifname)}")
    if m.oifname is not None:
        parts.append(f"out {_interface(m.oifname)}")
    if m.ct_state is not None:
        parts.append(f"ct state {m.ct_state}")
    if m.ct_orig_dport is not None:
        parts.append(f"ct original dport {m.ct_orig_dport}")
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


def _nat_target(address: ir.Prefix, ports: tuple[int, int] | None) -> str:
    text = address.address_text()
    if ports is None:
        return text
    if address.family.value == "ip6":
        text = f"[{text}]"
    return f"{text}:{_ports(ports)}"


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
        case _:
            assert_never(action)


def rule_text(rule: ir.Rule) -> str:
    parts = [action_text(rule.action), *match_text(rule.match)]
    for statement in rule.statements:
        parts.append("counter" if isinstance(statement, ir.Counter) else _log(statement))
    if rule.comment is not None:
        parts.append(f"comment {quote(rule.comment)}")
    return " ".join(parts)


def print_ruleset(ruleset: ir.Ruleset) -> str:
    lines: list[str] = []
    for table in ruleset.tables:
        lines.append(f"table {table.family.value} {table.kind.value} {{")
        for chain in table.chains:
            policy = f" policy {chain.policy.value}" if chain.policy else ""
            lines.append(f"  chain {chain.name}{policy} {{")
            lines.extend(f"    {rule_text(rule)}" for rule in chain.rules)
            lines.append("  }")
        lines.append("}")
    return "\n".join(lines) + "\n"
