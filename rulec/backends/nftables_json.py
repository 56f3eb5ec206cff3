"""The `nft-json` backend: the same transaction as `nft`, in libnftables JSON for `nft -j -f`.

Built from plain dicts by one small fragment function per construct; the decisions about
what a rule spells out are shared with the text backend (rulec.backends.nft).
"""

from __future__ import annotations

import json
from typing import Any, assert_never

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
    LIMITS_JSON,
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
    Chain,
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

Json = dict[str, Any]


class NftJsonBackend(Backend):
    name = "nft-json"
    limits = LIMITS_JSON

    def emit(self, ruleset: Ruleset, options: EmitOptions) -> Artifact:
        return Artifact(target=self.name, text=print_ruleset(lower(ruleset, self.limits)),
                        load_command=("nft", "-j", "-f", "-"))


def print_ruleset(ruleset: Ruleset) -> str:
    """The JSON document for an already lowered and checked ruleset."""
    commands: list[Json] = [{"metainfo": {"json_schema_version": 1}}]
    # Adding first makes the delete valid when the table does not exist yet.
    for family, name in owned_tables(ruleset):
        commands += [{"add": {"table": {"family": family, "name": name}}},
                     {"delete": {"table": {"family": family, "name": name}}}]
    for table in ruleset.tables:
        commands.extend(_table(table))
    return json.dumps({"nftables": commands}, indent=2) + "\n"


def text(value: str, span: Span | None, unquotable: str = "") -> str:
    """The only way user text enters the document: refused if nft could not list it back."""
    problem = text_problem(value, LIMITS_JSON, unquotable)
    if problem:
        raise RulecError.single("E0405", f"text {value!r} contains {problem}", span)
    return value


def _table(table: Table) -> list[Json]:
    ident = {"family": table.family.value, "name": table_name(table)}
    out: list[Json] = [{"add": {"table": dict(ident)}}]
    out.extend({"add": {"set": _set_declaration(table, value)}} for value in named_sets(table))
    # Every chain before any rule: a jump needs its target to exist.
    out.extend({"add": {"chain": _chain(table, chain)}} for chain in table.chains)
    for chain in table.chains:
        out.extend({"add": {"rule": _rule(table, chain, rule)}} for rule in chain.rules)
    return out


def _set_declaration(table: Table, value: NamedSet) -> Json:
    out: Json = {"family": table.family.value, "table": table_name(table), "name": value.name,
                 "type": set_type(value)}
    if set_interval(value):
        out["flags"] = ["interval"]
    out["elem"] = [_element(e) for e in disjoint_elements(value)]
    return out


def _element(item: Element) -> Any:
    if isinstance(item, Prefix):
        return _prefix(item)
    if isinstance(item, CtState):
        return item.value
    if isinstance(item, tuple):
        return _range(*item)
    return text(item, None)


def _chain(table: Table, chain: Chain) -> Json:
    out: Json = {"family": table.family.value, "table": table_name(table),
                 "name": identifier(chain_name(table, chain), chain.span)}
    if chain.hook is not None:
        out |= {"type": chain_type(table, chain.hook), "hook": chain.hook.value.lower(),
                "prio": priority(table, chain.hook),
                "policy": chain.policy.value if chain.policy is not None else "accept"}
    return out


def _rule(table: Table, chain: Chain, rule: Rule) -> Json:
    """Matches in Match field order, then statements and the action; the comment as a key."""
    expr = _matches(table, rule)
    expr.extend(_statement(item, rule.span) for item in rule.statements)
    expr.append(_action(table, rule.action, rule.span, rule.match))
    out: Json = {"family": table.family.value, "table": table_name(table),
                 "chain": identifier(chain_name(table, chain), chain.span)}
    if rule.comment is not None:
        out["comment"] = text(rule.comment, rule.span)
    out["expr"] = expr
    return out


def _matches(table: Table, rule: Rule) -> list[Json]:
    m, span = rule.match, rule.span
    out = []
    family = nfproto(table, decision_rule(rule))
    if family is not None:
        out.append(_match(_meta("nfproto"), NFPROTO[family]))
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
        out.append(_match({"ct": {"key": "proto-dst", "dir": "original"}},
                          _ports(m.ct_orig_dport), _op(m.ct_orig_dport.negated)))
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


def _match(left: Any, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _op(negated: bool) -> str:
    return "!=" if negated else "=="


def _meta(key: str) -> Json:
    return {"meta": {"key": key}}


def _payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def _set(items: list[Any]) -> Any:
    return items[0] if len(items) == 1 else {"set": items}


def _proto(value: Protocol) -> Json:
    return _match(_meta("l4proto"), protocol_value(value.number), _op(value.negated))


def _prefix(value: Prefix) -> str | Json:
    if value.is_host:
        return value.address_text()
    return {"prefix": {"addr": value.address_text(), "len": value.length}}


def _address(field: str, value: AddressSet) -> Json:
    protocol = ADDRESS_PROTOCOL[value.prefixes[0].family]
    right = f"@{value.name}" if value.name is not None else _set(
        [_prefix(p) for p in value.prefixes])
    return _match(_payload(protocol, field), right, _op(value.negated))


def _range(low: int, high: int) -> int | Json:
    return low if low == high else {"range": [low, high]}


def _ports(value: PortSet) -> Any:
    if value.name is not None:
        return f"@{value.name}"
    return _set([_range(low, high) for low, high in value.ranges])


def _port(m: Match, field: str, value: PortSet) -> Json:
    assert m.proto is not None  # verify: ports need a positive port protocol
    return _match(_payload(PROTOCOL_WORDS[m.proto.number], field), _ports(value),
                  _op(value.negated))


def _interface(field: str, value: Interface, span: Span | None) -> Json:
    return _match(_meta(field), text(interface_pattern(value), span), _op(value.negated))


def _ct_state(value: CtStates) -> Json:
    # States are bits: "in" tests that one is set, "!" that none is ("==" would compare all).
    names = [s.value for s in value.ordered]
    return _match({"ct": {"key": "state"}}, names, "!" if value.negated else "in")


def _fib(field: str, value: AddrType) -> Json:
    return _match({"fib": {"result": "type", "flags": [field]}}, value.kind.value,
                  _op(value.negated))


def _flags(flags: frozenset[TcpFlag]) -> Any:
    names = [TCP_FLAG_NAMES[f] for f in TcpFlag if f in flags]
    return 0 if not names else names[0] if len(names) == 1 else names


def _tcp_flags(value: TcpFlags) -> Json:
    return _match({"&": [_payload("tcp", "flags"), _flags(value.mask)]}, _flags(value.value),
                  _op(value.negated))


def _icmp_type(value: IcmpType) -> Json:
    protocol = "icmp" if value.family is Family.IP else "icmpv6"
    return _match(_payload(protocol, "type"), _set(icmp_type_values(value)),
                  _op(value.negated))


def _mark(value: Mark) -> Json:
    left = _meta("mark") if value.mask == MAX_MARK else {"&": [_meta("mark"), value.mask]}
    return _match(left, value.value, _op(value.negated))


def _limit(value: Limit) -> Json:
    return {"limit": {"rate": value.rate, "burst": value.burst, "per": value.unit.value}}


def _statement(item: Statement, span: Span | None) -> Json:
    match item:
        case Log():
            return _log(item, span)
        case Counter():
            return {"counter": None}
        case _:
            assert_never(item)


def _log(item: Log, span: Span | None) -> Json:
    out: Json = {}
    if item.prefix is not None:
        out["prefix"] = text(item.prefix, span, LIMITS_JSON.unquotable_in_log_prefix)
    if item.level is not None and item.level is not LogLevel.WARNING:  # warn is the default
        out["level"] = LOG_LEVELS[item.level]
    return {"log": out or None}


def _nat(table: Table, address: Prefix, ports: tuple[int, int] | None) -> Json:
    out: Json = {}
    if table.family is Family.INET:
        out["family"] = ADDRESS_PROTOCOL[address.family]
    out["addr"] = address.address_text()
    if ports is not None:
        out["port"] = _range(*ports)
    return out


def _mark_value(action: SetMark) -> Any:
    keep, op, operand = mark_update(action)
    if not keep:
        return operand
    kept = {"&": [_meta("mark"), keep]}
    return {op: [kept, operand]} if operand else kept


def _map_key(m: Match, vmap: Vmap, index: int) -> Json:
    key = vmap.keys[index]
    match key:
        case MapKey.SADDR | MapKey.DADDR:
            return _payload(ADDRESS_PROTOCOL[map_key_family(vmap, index)], key.value)
        case MapKey.SPORT | MapKey.DPORT:
            assert m.proto is not None  # verify: ports need a positive port protocol
            return _payload(PROTOCOL_WORDS[m.proto.number], key.value)
        case MapKey.IIFNAME | MapKey.OIFNAME:
            return _meta(key.value)
        case MapKey.CT_STATE:
            return {"ct": {"key": "state"}}
        case _:
            assert_never(key)


def _concat(items: list[Any]) -> Any:
    return items[0] if len(items) == 1 else {"concat": items}


def _verdict(verdict: MapVerdict, span: Span | None) -> Json:
    match verdict:
        case Accept():
            return {"accept": None}
        case Drop():
            return {"drop": None}
        case Return():
            return {"return": None}
        case Jump(target):
            return {"jump": {"target": identifier(target, span)}}
        case Goto(target):
            return {"goto": {"target": identifier(target, span)}}
        case _:
            assert_never(verdict)


def _vmap(m: Match, vmap: Vmap, span: Span | None) -> Json:
    data = [[_concat([_element(e) for e in elements]), _verdict(verdict, span)]
            for values, verdict in vmap.entries for elements in map_elements(values)]
    key = _concat([_map_key(m, vmap, i) for i in range(len(vmap.keys))])
    return {"vmap": {"key": key, "data": {"set": data}}}


def _action(table: Table, action: Action, span: Span | None, m: Match = ANY) -> Json:
    match action:
        case Accept():
            return {"accept": None}
        case Drop():
            return {"drop": None}
        case Return():
            return {"return": None}
        case Jump(target):
            return {"jump": {"target": identifier(target, span)}}
        case Goto(target):
            return {"goto": {"target": identifier(target, span)}}
        case Reject(with_):
            code = reject_code(table.family, with_)
            if code is None:
                return {"reject": None}
            return {"reject": {"type": code[0]} | ({"expr": code[1]} if code[1] else {})}
        case Log():
            return _log(action, span)
        case Dnat(address, ports):
            return {"dnat": _nat(table, address, ports)}
        case Snat(address, ports):
            return {"snat": _nat(table, address, ports)}
        case Masquerade(ports):
            return {"masquerade": None if ports is None else {"port": _range(*ports)}}
        case Redirect(ports):
            return {"redirect": {"port": _range(*ports)}}
        case SetMss(mss):
            return _mangle({"tcp option": {"name": "maxseg", "field": "size"}}, mss)
        case ClampMss():
            return _mangle({"tcp option": {"name": "maxseg", "field": "size"}},
                           {"rt": {"key": "mtu"}})
        case SetMark():
            return _mangle(_meta("mark"), _mark_value(action))
        case Vmap():
            return _vmap(m, action, span)
        case _:
            assert_never(action)


def _mangle(key: Json, value: Any) -> Json:
    return {"mangle": {"key": key, "value": value}}
