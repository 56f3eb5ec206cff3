"""The one lowering of a checked IR to nft: an expression tree in libnftables' JSON shape.

Both nft targets print this tree and nothing else: nftables_json.py as JSON (as it is),
nftables.py as `nft -f` text. So every decision that changes what the kernel holds (family
tests, implied protocols, set names and types, element order, verdict maps, refusals of text
that cannot be quoted) is made here, once, and the two targets cannot differ in meaning.

The tree is plain JSON values in libnftables' vocabulary: `{"match": {"op", "left", "right"}}`,
`{"set": [...]}`, `{"prefix": ...}`, `{"range": [lo, hi]}`, `{"concat": [...]}` (n fields),
`{"elem": {"val", "comment"}}` (built by set_element() only), verdicts and statements; the
tables, sets, chains and rules around them are grouped by the dataclasses below.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any, assert_never

from rulec.backends.lowering import disjoint_prefixes, merged_ranges
from rulec.backends.nft.check import lower
from rulec.backends.nft.vocabulary import (
    ADDRESS_PROTOCOL,
    ICMP_NAMES,
    ICMPV6_NAMES,
    LOG_LEVELS,
    NFPROTO,
    PROTOCOL_WORDS,
    REJECT_CODES,
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
    MapValue,
    MapValues,
    MapVerdict,
    Masquerade,
    Match,
    Redirect,
    Reject,
    RejectWith,
    Return,
    Rule,
    Ruleset,
    SetMark,
    SetMss,
    Snat,
    Statement,
    Table,
    Vmap,
    keyed,
)
from rulec.ir.provenance import joined_notes, shared_terms, summary, terms_of
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
    Terms,
)
from rulec.ir.verify import TargetLimits, rule_families

Json = dict[str, Any]  # one libnftables JSON object
Expr = Any  # an nft expression in JSON: a str, an int, a list of flags or an object


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainTree:
    chain: Json  # the libnftables "chain" object
    rules: tuple[Json, ...]  # its "rule" objects, in order


@dataclass(frozen=True, slots=True, kw_only=True)
class TableTree:
    table: Json  # {"family", "name"}
    sets: tuple[Json, ...]  # "set" objects, sorted by name
    chains: tuple[ChainTree, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Script:
    """One transaction: every table rulec owns is replaced, then `tables` are added."""

    owned: tuple[Json, ...]  # {"family", "name"} of each table to replace
    tables: tuple[TableTree, ...]


def to_tree(ruleset: Ruleset, limits: TargetLimits) -> Script:
    """The nft lowerings and refusals (RulecError), then the tree of what is left.

    `limits` decides only what is refused (JSON refuses a few strings more) and how errors
    name the target: a ruleset both targets accept gets the same tree for text and JSON.
    """
    ruleset = lower(ruleset, limits)
    owned = tuple({"family": family, "name": name} for family, name in owned_tables(ruleset))
    return Script(owned=owned, tables=tuple(_table(t, limits) for t in ruleset.tables))


# --- decisions: which tests a rule spells out ----------------------------------------------

def decision_rule(rule: Rule) -> Rule:
    """The rule as nfproto() and explicit_proto() should judge it: a verdict map's key is
    printed like a match on its field, with the same implied protocol and family."""
    action = rule.action
    if not isinstance(action, Vmap) or not action.entries:
        return rule
    return replace(rule, match=keyed(rule.match, action.keys, action.entries[0][0]))


NamedSet = AddressSet | PortSet


def named_sets(table: Table) -> list[NamedSet]:
    """The named sets the table's rules use, one per name, sorted by name; where a user names
    its terms (rulec.ir.provenance), each element names the terms of every user."""
    found: dict[str, NamedSet] = {}
    users: dict[str, list[tuple[NamedSet, Terms]]] = {}
    for chain in table.chains:
        for rule in chain.rules:
            m = rule.match
            for value in (m.saddr, m.daddr, m.sport, m.dport, m.ct_orig_dport):
                if value is not None and value.name is not None:
                    found.setdefault(value.name, value)
                    if rule.comment is not None:
                        users.setdefault(value.name, []).append((value, terms_of(rule)))
    for name, uses in users.items():
        joined = joined_notes([v for v, _ in uses], [t for _, t in uses])
        if all(n == t for n in joined.notes for _, t in uses):
            continue  # every element from every user's terms: the rules' comments say it
        found[name] = replace(found[name], notes=joined.notes)
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


# --- the tree -------------------------------------------------------------------------------

def text(value: str, limits: TargetLimits, span: Span | None, unquotable: str = "") -> str:
    """The only way user text enters the tree: refused if nft could not quote it or list it
    back (JSON could carry `"`, but a saved ruleset must load back as text)."""
    problem = text_problem(value, limits, unquotable)
    if problem:
        raise RulecError.single("E0405", f"text {value!r} contains {problem}", span)
    return value


def set_element(value: Expr, note: str | None = None) -> Expr:
    """The one place a set or map element is built. A `note` (already passed through text())
    becomes nft's element comment, which named sets, anonymous sets and verdict maps keep."""
    if note is None:
        return value
    return {"elem": {"val": value, "comment": note}}


def _table(table: Table, limits: TargetLimits) -> TableTree:
    sets = tuple(_set_declaration(table, value, limits) for value in named_sets(table))
    chains = tuple(ChainTree(chain=_chain(table, chain), rules=tuple(
        _rule(table, chain, rule, limits) for rule in chain.rules)) for chain in table.chains)
    return TableTree(table={"family": table.family.value, "name": table_name(table)},
                     sets=sets, chains=chains)


def _set_declaration(table: Table, value: NamedSet, limits: TargetLimits) -> Json:
    out: Json = {"family": table.family.value, "table": table_name(table), "name": value.name,
                 "type": set_type(value)}
    if set_interval(value):
        out["flags"] = ["interval"]
    known = _element_terms(value) if len(disjoint_elements(value)) > 1 else {}
    out["elem"] = [set_element(_member(e, limits), _note(t, limits, None) if (
        t := known.get(e)) else None) for e in disjoint_elements(value)]
    return out


def _member(item: Element, limits: TargetLimits) -> Expr:
    """One member of a named set or map key, as an expression."""
    if isinstance(item, Prefix):
        return _prefix(item)
    if isinstance(item, CtState):
        return item.value
    if isinstance(item, tuple):
        return _range(*item)
    return text(item, limits, None)


def _chain(table: Table, chain: Chain) -> Json:
    out: Json = {"family": table.family.value, "table": table_name(table),
                 "name": identifier(chain_name(table, chain), chain.span)}
    if chain.hook is not None:
        out |= {"type": chain_type(table, chain.hook), "hook": chain.hook.value.lower(),
                "prio": priority(table, chain.hook),
                "policy": chain.policy.value if chain.policy is not None else "accept"}
    return out


def _rule(table: Table, chain: Chain, rule: Rule, limits: TargetLimits) -> Json:
    """Matches in Match field order, then statements and the action; the comment as a key."""
    expr = _matches(table, rule, limits)
    expr.extend(_statement(item, rule.span, limits) for item in rule.statements)
    expr.append(_action(table, rule.action, rule.span, limits, rule.match))
    out: Json = {"family": table.family.value, "table": table_name(table),
                 "chain": identifier(chain_name(table, chain), chain.span)}
    if rule.comment is not None:
        out["comment"] = text(rule.comment, limits, rule.span)
    out["expr"] = expr
    return out


def _matches(table: Table, rule: Rule, limits: TargetLimits) -> list[Json]:
    m, span = rule.match, rule.span
    out = []
    family = nfproto(table, decision_rule(rule))
    if family is not None:
        out.append(_match(_meta("nfproto"), NFPROTO[family]))
    if m.proto is not None and explicit_proto(decision_rule(rule).match):
        out.append(_proto(m.proto))
    if m.saddr is not None:
        out.append(_address("saddr", m.saddr, _notes(m.saddr, limits, span)))
    if m.daddr is not None:
        out.append(_address("daddr", m.daddr, _notes(m.daddr, limits, span)))
    if m.sport is not None:
        out.append(_port(m, "sport", m.sport, _notes(m.sport, limits, span)))
    if m.dport is not None:
        out.append(_port(m, "dport", m.dport, _notes(m.dport, limits, span)))
    if m.iifname is not None:
        out.append(_interface("iifname", m.iifname, span, limits))
    if m.oifname is not None:
        out.append(_interface("oifname", m.oifname, span, limits))
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


def _match(left: Expr, right: Expr, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _op(negated: bool) -> str:
    return "!=" if negated else "=="


def _meta(key: str) -> Json:
    return {"meta": {"key": key}}


def _payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def _set(items: list[Expr]) -> Expr:
    """An anonymous set, or its only item alone; an element with a comment keeps the set
    (nft 1.0.6 loads it, but then folds it into a plain comparison and forgets the comment)."""
    alone = len(items) == 1 and not (isinstance(items[0], dict) and "elem" in items[0])
    return items[0] if alone else {"set": items}


def _proto(value: Protocol) -> Json:
    return _match(_meta("l4proto"), protocol_value(value.number), _op(value.negated))


def _prefix(value: Prefix) -> Expr:
    if value.is_host:
        return value.address_text()
    return {"prefix": {"addr": value.address_text(), "len": value.length}}


def _notes(value: AddressSet | PortSet, limits: TargetLimits,
           span: Span | None) -> list[str | None]:
    """Each element's comment: the terms it comes from (rulec.ir.provenance), where they are
    not simply the rule's. A set of one element has none: nft loads it as a plain comparison,
    which keeps no comment, and the rule's own comment names its terms."""
    count = len(value.prefixes) if isinstance(value, AddressSet) else len(value.ranges)
    if not value.notes or count < 2:
        return [None] * count
    return [_note(terms, limits, span) for terms in value.notes]


def _note(terms: Terms, limits: TargetLimits, span: Span | None) -> str | None:
    note = summary(terms)
    return None if note is None else text(note, limits, span)


def _address(field: str, value: AddressSet, notes: list[str | None]) -> Json:
    protocol = ADDRESS_PROTOCOL[value.prefixes[0].family]
    right = f"@{value.name}" if value.name is not None else _set(
        [set_element(_prefix(p), n) for p, n in zip(value.prefixes, notes, strict=True)])
    return _match(_payload(protocol, field), right, _op(value.negated))


def _range(low: int, high: int) -> Expr:
    return low if low == high else {"range": [low, high]}


def _ports(value: PortSet, notes: list[str | None] | None = None) -> Expr:
    if value.name is not None:
        return f"@{value.name}"
    notes = notes or [None] * len(value.ranges)
    return _set([set_element(_range(low, high), n)
                 for (low, high), n in zip(value.ranges, notes, strict=True)])


def _port(m: Match, field: str, value: PortSet, notes: list[str | None]) -> Json:
    assert m.proto is not None  # verify: ports need a positive port protocol
    return _match(_payload(PROTOCOL_WORDS[m.proto.number], field), _ports(value, notes),
                  _op(value.negated))


def _interface(field: str, value: Interface, span: Span | None, limits: TargetLimits) -> Json:
    return _match(_meta(field), text(interface_pattern(value), limits, span),
                  _op(value.negated))


def _ct_state(value: CtStates) -> Json:
    # States are bits: "in" tests that one is set, "!" that none is ("==" would compare all).
    names = [s.value for s in value.ordered]
    return _match({"ct": {"key": "state"}}, names, "!" if value.negated else "in")


def _fib(field: str, value: AddrType) -> Json:
    return _match({"fib": {"result": "type", "flags": [field]}}, value.kind.value,
                  _op(value.negated))


def _flags(flags: frozenset[TcpFlag]) -> Expr:
    names = [TCP_FLAG_NAMES[f] for f in TcpFlag if f in flags]
    return 0 if not names else names[0] if len(names) == 1 else names


def _tcp_flags(value: TcpFlags) -> Json:
    return _match({"&": [_payload("tcp", "flags"), _flags(value.mask)]}, _flags(value.value),
                  _op(value.negated))


def _icmp_type(value: IcmpType) -> Json:
    protocol = "icmp" if value.family is Family.IP else "icmpv6"
    return _match(_payload(protocol, "type"),
                  _set([set_element(v) for v in icmp_type_values(value)]), _op(value.negated))


def _mark(value: Mark) -> Json:
    left = _meta("mark") if value.mask == MAX_MARK else {"&": [_meta("mark"), value.mask]}
    return _match(left, value.value, _op(value.negated))


def _limit(value: Limit) -> Json:
    return {"limit": {"rate": value.rate, "burst": value.burst, "per": value.unit.value}}


def _statement(item: Statement, span: Span | None, limits: TargetLimits) -> Json:
    match item:
        case Log():
            return _log(item, span, limits)
        case Counter():
            return {"counter": None}
        case _:
            assert_never(item)


def _log(item: Log, span: Span | None, limits: TargetLimits) -> Json:
    out: Json = {}
    if item.prefix is not None:
        out["prefix"] = text(item.prefix, limits, span, limits.unquotable_in_log_prefix)
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


def _mark_value(action: SetMark) -> Expr:
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


def _concat(items: list[Expr]) -> Expr:
    """n fields joined (nft `a . b . c`); one field alone."""
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


def _element_terms(value: MapValue) -> dict[Element, Terms]:
    if isinstance(value, AddressSet) and value.notes:
        return dict(zip(value.prefixes, value.notes, strict=True))
    if isinstance(value, PortSet) and value.notes:
        return dict(zip(value.ranges, value.notes, strict=True))
    return {}


def _entry_note(elements: tuple[Element, ...], notes: list[dict[Element, Terms]],
                limits: TargetLimits, span: Span | None) -> str | None:
    """A map element's comment: the terms all its parts come from (one combination of the
    entry's values, so one term's own, unless terms share it)."""
    shared = shared_terms(terms for element, known in zip(elements, notes, strict=True)
                          if (terms := known.get(element)) is not None)
    return _note(shared, limits, span) if shared else None


def _vmap(m: Match, vmap: Vmap, span: Span | None, limits: TargetLimits) -> Json:
    data = []
    for values, verdict in vmap.entries:
        notes = [_element_terms(v) for v in values]
        for elements in map_elements(values):
            data.append([set_element(_concat([_member(e, limits) for e in elements]),
                                     _entry_note(elements, notes, limits, span)),
                         _verdict(verdict, span)])
    key = _concat([_map_key(m, vmap, i) for i in range(len(vmap.keys))])
    return {"vmap": {"key": key, "data": {"set": data}}}


def _action(table: Table, action: Action, span: Span | None, limits: TargetLimits,
            m: Match = ANY) -> Json:
    match action:
        case Accept() | Drop() | Return() | Jump() | Goto():
            return _verdict(action, span)
        case Reject(with_):
            code = reject_code(table.family, with_)
            if code is None:
                return {"reject": None}
            return {"reject": {"type": code[0]} | ({"expr": code[1]} if code[1] else {})}
        case Log():
            return _log(action, span, limits)
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
            return _vmap(m, action, span, limits)
        case _:
            assert_never(action)


def _mangle(key: Json, value: Expr) -> Json:
    return {"mangle": {"key": key, "value": value}}
