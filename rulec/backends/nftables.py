"""The `nft` backend: one `nft -f` transaction that replaces only rulec's own tables.

What it shares with the JSON backend (limits, vocabulary, checks, decisions) is in
rulec.backends.nft.
"""

from __future__ import annotations

from typing import assert_never

from rulec.backends.base import Artifact, Backend, EmitOptions
from rulec.backends.nft.check import lower
from rulec.backends.nft.tree import (
    Element,
    NamedSet,
    decision_rule,
    disjoint_elements,
    explicit_proto,
    icmp_type_values,
    map_elements,
    map_key_family,
    mark_update,
    named_sets,
    nfproto,
    protocol_value,
    reject_code,
    set_interval,
    set_type,
)
from rulec.backends.nft.vocabulary import (
    ADDRESS_PROTOCOL,
    HEADER,
    LIMITS,
    LOG_LEVELS,
    NFPROTO,
    PROTOCOL_WORDS,
    TCP_FLAG_NAMES,
    chain_name,
    chain_type,
    identifier,
    interface_pattern,
    owned_tables,
    priority,
    table_name,
    text_problem,
)
from rulec.diagnostics import RulecError, Span
from rulec.ir.nodes import (
    ANY,
    Accept,
    Action,
    ClampMss,
    Counter,
    Dnat,
    Drop,
    Goto,
    Jump,
    Log,
    LogLevel,
    MapKey,
    MapVerdict,
    Masquerade,
    Match,
    Redirect,
    Reject,
    Return,
    Rule,
    Ruleset,
    SetMark,
    SetMss,
    Snat,
    Statement,
    Table,
    Vmap,
)
from rulec.ir.values import (
    MAX_MARK,
    AddressSet,
    AddrType,
    CtState,
    CtStates,
    Family,
    IcmpType,
    Interface,
    Limit,
    Mark,
    PortSet,
    Prefix,
    Protocol,
    TcpFlag,
    TcpFlags,
)


def quote(text: str, span: Span | None, unquotable: str = "") -> str:
    """The only way user text enters the nft script: refused if it cannot be quoted."""
    problem = text_problem(text, LIMITS, unquotable)
    if problem:
        raise RulecError.single("E0405", f"text {text!r} contains {problem}", span)
    return f'"{text}"'

# --- text ---------------------------------------------------------------------------------

class NftBackend(Backend):
    name = "nft"
    limits = LIMITS

    def emit(self, ruleset: Ruleset, options: EmitOptions) -> Artifact:
        return Artifact(target=self.name, text=print_ruleset(lower(ruleset, self.limits)),
                        load_command=("nft", "-f", "-"))


def print_ruleset(ruleset: Ruleset) -> str:
    """The script for an already lowered and checked ruleset: one atomic transaction."""
    # Declaring first makes the delete valid when the table does not exist yet.
    prologue = [HEADER, "# replace every rulec-* table, in one transaction"]
    for family, name in owned_tables(ruleset):
        prologue += [f"table {family} {name}", f"delete table {family} {name}"]
    tables = "\n\n".join("\n".join(_table(table)) for table in ruleset.tables)
    return "\n".join(prologue) + "\n" + ("\n" + tables + "\n" if tables else "")


def _table(table: Table) -> list[str]:
    ident = f"{table.family.value} {table_name(table)}"
    lines = [f"table {ident} {{"]
    for value in named_sets(table):
        lines.extend(_set_declaration(value))
    for chain in table.chains:
        lines.append(f"\tchain {identifier(chain_name(table, chain), chain.span)} {{")
        if chain.hook is not None:
            policy = chain.policy.value if chain.policy is not None else "accept"
            lines.append(f"\t\ttype {chain_type(table, chain.hook)} hook "
                         f"{chain.hook.value.lower()} priority {priority(table, chain.hook)}; "
                         f"policy {policy};")
        lines.extend("\t\t" + rule_text(table, rule) for rule in chain.rules)
        lines.append("\t}")
    lines.append("}")
    return lines


def _set_declaration(value: NamedSet) -> list[str]:
    assert value.name is not None
    lines = [f"\tset {value.name} {{", f"\t\ttype {set_type(value)}"]
    if set_interval(value):
        lines.append("\t\tflags interval")
    items = [_element(e) for e in disjoint_elements(value)]
    lines += [f"\t\telements = {{ {', '.join(items)} }}", "\t}"]
    return lines


def _element(item: Element) -> str:
    if isinstance(item, Prefix):
        return str(item)
    if isinstance(item, CtState):
        return item.value
    if isinstance(item, tuple):
        return _port_range(item)
    return quote(item, None)


def rule_text(table: Table, rule: Rule) -> str:
    """Matches in Match field order, then statements, the action and the comment."""
    parts = _matches(table, rule)
    parts.extend(_statement(item, rule.span) for item in rule.statements)
    parts.append(_action(table, rule.action, rule.span, rule.match))
    if rule.comment is not None:
        parts.append("comment " + quote(rule.comment, rule.span))
    return " ".join(parts)


def _matches(table: Table, rule: Rule) -> list[str]:
    m, span = rule.match, rule.span
    out = []
    family = nfproto(table, decision_rule(rule))
    if family is not None:
        out.append(f"meta nfproto {NFPROTO[family]}")
    if m.proto is not None and explicit_proto(decision_rule(rule).match):
        out.append(_proto(m.proto))
    if m.saddr is not None:
        out.append(_address("saddr", m.saddr))
    if m.daddr is not None:
        out.append(_address("daddr", m.daddr))
    if m.sport is not None:
        out.append(_port(m, "sport", m.sport))
    if m.dport is not None:
        out.append(_port(m, "dport", m.dport))
    if m.iifname is not None:
        out.append(_interface("iifname", m.iifname, span))
    if m.oifname is not None:
        out.append(_interface("oifname", m.oifname, span))
    if m.ct_state is not None:
        out.append(_ct_state(m.ct_state))
    if m.ct_orig_dport is not None:
        out.append("ct original proto-dst " + _ports(m.ct_orig_dport))
    if m.src_type is not None:
        out.append(_fib("saddr", m.src_type))
    if m.dst_type is not None:
        out.append(_fib("daddr", m.dst_type))
    if m.tcp_flags is not None:
        out.append(_tcp_flags(m.tcp_flags))
    if m.icmp_type is not None:
        out.append(_icmp_type(m.icmp_type))
    if m.mark is not None:
        out.append(_mark(m.mark))
    if m.limit is not None:
        out.append(_limit(m.limit))
    return out


def _neg(negated: bool) -> str:
    return "!= " if negated else ""


def _set(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _proto(value: Protocol) -> str:
    return f"meta l4proto {_neg(value.negated)}{protocol_value(value.number)}"


def _address(field: str, value: AddressSet) -> str:
    protocol = ADDRESS_PROTOCOL[value.prefixes[0].family]
    if value.name is not None:
        return f"{protocol} {field} {_neg(value.negated)}@{value.name}"
    return f"{protocol} {field} {_neg(value.negated)}{_set([str(p) for p in value.prefixes])}"


def _ports(value: PortSet) -> str:
    if value.name is not None:
        return f"{_neg(value.negated)}@{value.name}"
    items = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in value.ranges]
    return _neg(value.negated) + _set(items)


def _port(m: Match, field: str, value: PortSet) -> str:
    assert m.proto is not None  # verify: ports need a positive port protocol
    return f"{PROTOCOL_WORDS[m.proto.number]} {field} {_ports(value)}"


def _interface(field: str, value: Interface, span: Span | None) -> str:
    return f"{field} {_neg(value.negated)}{quote(interface_pattern(value), span)}"


def _ct_state(value: CtStates) -> str:
    # `ct state != a,b` would compare against the OR of both bits; `!` tests that none is set.
    names = ",".join(s.value for s in value.ordered)
    return f"ct state ! {names}" if value.negated else f"ct state {names}"


def _fib(field: str, value: AddrType) -> str:
    return f"fib {field} type {_neg(value.negated)}{value.kind.value}"


def _tcp_flags(value: TcpFlags) -> str:
    mask = [TCP_FLAG_NAMES[f] for f in TcpFlag if f in value.mask]
    flags = ",".join(TCP_FLAG_NAMES[f] for f in TcpFlag if f in value.value) or "0x0"
    if len(mask) > 1:
        return f"tcp flags {_neg(value.negated)}{flags} / {','.join(mask)}"
    # 1.0.6 cannot parse `/` followed by a single flag.
    op = "!=" if value.negated else "=="
    return f"tcp flags & {mask[0] if mask else '0x0'} {op} {flags}"


def _icmp_type(value: IcmpType) -> str:
    protocol = "icmp" if value.family is Family.IP else "icmpv6"
    items = [str(v) for v in icmp_type_values(value)]
    return f"{protocol} type {_neg(value.negated)}{_set(items)}"


def _mark(value: Mark) -> str:
    if value.mask == MAX_MARK:
        return f"meta mark {_neg(value.negated)}{value.value:#010x}"
    op = "!=" if value.negated else "=="
    return f"meta mark & {value.mask:#010x} {op} {value.value:#010x}"


def _limit(value: Limit) -> str:
    burst = "" if value.burst == 5 else f" burst {value.burst} packets"  # 5 is nft's default
    return f"limit rate {value.rate}/{value.unit.value}{burst}"


def _statement(item: Statement, span: Span | None) -> str:
    match item:
        case Log():
            return _log(item, span)
        case Counter():
            return "counter"
        case _:
            assert_never(item)


def _log(item: Log, span: Span | None) -> str:
    text = "log"
    if item.prefix is not None:
        text += " prefix " + quote(item.prefix, span, LIMITS.unquotable_in_log_prefix)
    if item.level is not None and item.level is not LogLevel.WARNING:  # warn is the default
        text += f" level {LOG_LEVELS[item.level]}"
    return text


def _nat_to(table: Table, address: Prefix, ports: tuple[int, int] | None) -> str:
    family = f" {ADDRESS_PROTOCOL[address.family]}" if table.family is Family.INET else ""
    target = address.address_text()
    if ports is not None:
        if address.family is Family.IP6:
            target = f"[{target}]"
        target += ":" + _port_range(ports)
    return f"{family} to {target}"


def _port_range(ports: tuple[int, int]) -> str:
    return str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}-{ports[1]}"


def _map_key(m: Match, vmap: Vmap, index: int) -> str:
    key = vmap.keys[index]
    match key:
        case MapKey.SADDR | MapKey.DADDR:
            return f"{ADDRESS_PROTOCOL[map_key_family(vmap, index)]} {key.value}"
        case MapKey.SPORT | MapKey.DPORT:
            assert m.proto is not None  # verify: ports need a positive port protocol
            return f"{PROTOCOL_WORDS[m.proto.number]} {key.value}"
        case MapKey.IIFNAME | MapKey.OIFNAME:
            return "iifname" if key is MapKey.IIFNAME else "oifname"
        case MapKey.CT_STATE:
            return "ct state"
        case _:
            assert_never(key)


def _vmap(m: Match, vmap: Vmap, span: Span | None) -> str:
    items = [" . ".join(map(_element, elements)) + f" : {_verdict(verdict, span)}"
             for values, verdict in vmap.entries for elements in map_elements(values)]
    key = " . ".join(_map_key(m, vmap, i) for i in range(len(vmap.keys)))
    return f"{key} vmap {{ {', '.join(items)} }}"


def _verdict(verdict: MapVerdict, span: Span | None) -> str:
    match verdict:
        case Accept():
            return "accept"
        case Drop():
            return "drop"
        case Return():
            return "return"
        case Jump(target):
            return "jump " + identifier(target, span)
        case Goto(target):
            return "goto " + identifier(target, span)
        case _:
            assert_never(verdict)


def _action(table: Table, action: Action, span: Span | None, m: Match = ANY) -> str:
    match action:
        case Accept():
            return "accept"
        case Drop():
            return "drop"
        case Return():
            return "return"
        case Jump(target):
            return "jump " + identifier(target, span)
        case Goto(target):
            return "goto " + identifier(target, span)
        case Reject(with_):
            code = reject_code(table.family, with_)
            if code is None:
                return "reject"
            return f"reject with {code[0]}" + (f" {code[1]}" if code[1] else "")
        case Log():
            return _log(action, span)
        case Dnat(address, ports):
            return "dnat" + _nat_to(table, address, ports)
        case Snat(address, ports):
            return "snat" + _nat_to(table, address, ports)
        case Masquerade(ports):
            return "masquerade" if ports is None else "masquerade to :" + _port_range(ports)
        case Redirect(ports):
            return "redirect to :" + _port_range(ports)
        case SetMss(mss):
            return f"tcp option maxseg size set {mss}"
        case ClampMss():
            return "tcp option maxseg size set rt mtu"
        case SetMark():
            keep, op, operand = mark_update(action)
            if not keep:
                return f"meta mark set {operand:#010x}"
            tail = f" {op} {operand:#010x}" if operand else ""
            return f"meta mark set meta mark & {keep:#010x}{tail}"
        case Vmap():
            return _vmap(m, action, span)
        case _:
            assert_never(action)

