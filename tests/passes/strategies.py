"""Small filter rulesets built to make the passes fire, and packets aimed at their edges.

A case draws a *pool* first (a few nested and adjacent prefixes per family, a few adjacent port
ranges, interface names, marks), then builds every rule from it, often as a copy of an earlier
rule of the chain with one field or the action changed: that is what makes rules differ "only in
dport" or overlap a rule in between. Packets take their addresses and ports from the pool's
boundaries and one past them, so a merge or a collapse that is off by one shows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import strategies as st

from rulec.diagnostics import RulecError
from rulec.ir import nodes as ir
from rulec.ir.evaluate import Host, Packet, Path
from rulec.ir.values import (
    ICMP,
    ICMPV6,
    MAX_MARK,
    MAX_PORT,
    TCP,
    UDP,
    AddressSet,
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
    RateUnit,
    TcpFlag,
    TcpFlags,
)
from rulec.ir.verify import never_matches, rule_families, verify

FAMILIES = (Family.IP, Family.IP6)
USER_CHAINS = ("u0", "u1", "u2")
IFACES = ("eth0", "eth1", "eth+", "wg0")
PACKET_IFACES = ("eth0", "eth1", "eth9", "wg0", "lo")  # the names packets come and go on
MARK_VALUES = (0, 1, 2, 3)
_BASES = {Family.IP: 0x0A000000, Family.IP6: 0x20010DB8 << 96}
SYN_MASK = frozenset({TcpFlag.FIN, TcpFlag.SYN, TcpFlag.RST, TcpFlag.ACK})
FLAG_TESTS = (
    TcpFlags(frozenset({TcpFlag.SYN}), SYN_MASK),
    TcpFlags(frozenset({TcpFlag.ACK}), frozenset({TcpFlag.ACK})),
    TcpFlags(frozenset({TcpFlag.SYN}), SYN_MASK, negated=True),
)
PACKET_FLAGS = (frozenset({TcpFlag.SYN}), frozenset({TcpFlag.ACK}),
                frozenset({TcpFlag.SYN, TcpFlag.ACK}), frozenset({TcpFlag.RST}))


@dataclass(frozen=True)
class Pool:
    prefixes: dict[Family, tuple[Prefix, ...]]
    ports: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Case:
    ruleset: ir.Ruleset
    packets: tuple[Packet, ...]
    host: Host


@st.composite
def _family_prefixes(draw: st.DrawFn, family: Family) -> tuple[Prefix, ...]:
    """Prefixes around one base: equal-size neighbours (adjacent), halves and hosts (inside)."""
    bits = family.bits
    length = draw(st.sampled_from((bits - 8, bits - 4, bits - 2, 8, 1)))
    base = _BASES[family] & ~((1 << (bits - length)) - 1)
    if length <= 8:
        base = 0  # short prefixes start at 0, so a pair of /1 covers the family
    out = []
    for _ in range(draw(st.integers(2, 5))):
        size = draw(st.sampled_from((length, length, length + 1, length + 2, bits)))
        block = 1 << (bits - size)
        # Modulo the address space: a /1 has only two blocks.
        network = (base + draw(st.integers(0, 3)) * block) & ((1 << bits) - 1)
        out.append(Prefix(family, network, size))
    return tuple(out)


@st.composite
def pools(draw: st.DrawFn) -> Pool:
    prefixes = {f: draw(_family_prefixes(f)) for f in FAMILIES}
    base = draw(st.sampled_from((0, 22, 80, 1024, MAX_PORT - 3)))
    ports = []
    for _ in range(draw(st.integers(2, 5))):
        low = min(MAX_PORT, base + draw(st.sampled_from((0, 1, 2, 3, 4, 10, 100))))
        high = min(MAX_PORT, low + draw(st.sampled_from((0, 0, 1, 3))))
        ports.append((low, high))
    if draw(st.integers(0, 4)) == 0:
        # Many separate ports and ranges, so that merged sets outgrow multiport's 15 slots
        # and the iptables lowering has to chunk them.
        start = base + 200 if base + 250 <= MAX_PORT else base - 250
        ports += [(start + 3 * i, start + 3 * i + i % 2) for i in range(draw(st.integers(12, 16)))]
    return Pool(prefixes, tuple(ports))


# ------------------------------------------------------------------ rules


@dataclass(frozen=True)
class Place:
    family: Family  # the table's
    hook: ir.Hook | None
    targets: tuple[str, ...]  # user chains this chain may jump to (later ones: no loops)


def _address_set(draw: st.DrawFn, pool: Pool, families: tuple[Family, ...]) -> AddressSet:
    candidates = [p for f in families for p in pool.prefixes[f]]
    chosen = draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=3))
    return AddressSet(tuple(chosen), draw(st.sampled_from((False, False, False, True))))


def _port_set(draw: st.DrawFn, pool: Pool) -> PortSet:
    distinct = sorted(set(pool.ports))
    if len(distinct) > 5 and draw(st.booleans()):  # most of a large pool
        chosen = sorted(draw(st.sets(st.sampled_from(distinct), min_size=len(distinct) - 4)))
    else:
        chosen = draw(st.lists(st.sampled_from(pool.ports), min_size=1, max_size=3))
    return PortSet(tuple(chosen), draw(st.sampled_from((False, False, False, True))))


def _mark(draw: st.DrawFn) -> Mark:
    mask = draw(st.sampled_from((MAX_MARK, MAX_MARK, 1, 3)))
    return Mark(draw(st.sampled_from(MARK_VALUES)) & mask, mask, draw(st.booleans()))


@st.composite
def _match(draw: st.DrawFn, pool: Pool, place: Place) -> ir.Match:
    if draw(st.integers(0, 11)) == 0:
        return ir.ANY  # unconditional: everything after it is dead
    fields: dict[str, object] = {}
    if place.family is Family.INET:
        family = draw(st.sampled_from((None, None, Family.IP, Family.IP6)))
        if family is not None and draw(st.booleans()):
            fields["family"] = family
    else:
        family = place.family
    proto_kind = draw(st.sampled_from(("none", "tcp", "tcp", "udp", "icmp", "not-tcp")))
    proto = None
    if proto_kind == "icmp":
        number = ICMP if family is Family.IP or (family is None and draw(st.booleans())) \
            else ICMPV6
        family = Family.IP if number == ICMP else Family.IP6
        if place.family not in (Family.INET, family):
            number, family = (ICMPV6, Family.IP6) if number == ICMP else (ICMP, Family.IP)
        fields["family"] = family  # as the frontend does for icmp and icmpv6
        proto = Protocol(number)
        if draw(st.booleans()):
            types = draw(st.lists(st.sampled_from((0, 3, 8)), min_size=1, max_size=2))
            fields["icmp_type"] = IcmpType(family, tuple(types), draw(st.booleans()))
    elif proto_kind in ("tcp", "udp"):
        proto = Protocol(TCP if proto_kind == "tcp" else UDP)
    elif proto_kind == "not-tcp":
        proto = Protocol(TCP, negated=True)
    if proto is not None:
        fields["proto"] = proto
    families = FAMILIES if family is None else (family,)
    for name in ("saddr", "daddr"):
        if draw(st.integers(0, 2)) == 0:
            fields[name] = _address_set(draw, pool, families)
    if proto is not None and not proto.negated and proto.number in (TCP, UDP):
        if draw(st.integers(0, 3)) > 0:  # dport is the common case, sport the rare one
            fields["dport"] = _port_set(draw, pool)
        if draw(st.integers(0, 3)) == 0:
            fields["sport"] = _port_set(draw, pool)
        if proto.number == TCP and draw(st.integers(0, 4)) == 0:
            fields["tcp_flags"] = draw(st.sampled_from(FLAG_TESTS))
    if place.hook not in (ir.Hook.OUTPUT,) and draw(st.integers(0, 4)) == 0:
        fields["iifname"] = Interface(draw(st.sampled_from(IFACES)), draw(st.booleans()))
    if place.hook not in (ir.Hook.INPUT,) and draw(st.integers(0, 5)) == 0:
        fields["oifname"] = Interface(draw(st.sampled_from(IFACES)), draw(st.booleans()))
    if draw(st.integers(0, 3)) == 0:
        states = draw(st.frozensets(st.sampled_from(list(CtState)), min_size=1, max_size=2))
        fields["ct_state"] = CtStates(states, draw(st.booleans()))
    if draw(st.integers(0, 3)) == 0:
        fields["mark"] = _mark(draw)
    if draw(st.integers(0, 9)) == 0:
        fields["limit"] = Limit(10, RateUnit.SECOND)
    return ir.Match(**fields)  # type: ignore[arg-type]


@st.composite
def _action(draw: st.DrawFn, place: Place) -> ir.Action:
    kinds = ["accept", "accept", "drop", "drop", "reject", "return", "log", "mark"]
    if place.targets:
        kinds += ["jump", "jump", "goto"]
    kind = draw(st.sampled_from(kinds))
    match kind:
        case "accept":
            return ir.Accept()
        case "drop":
            return ir.Drop()
        case "reject":
            return ir.Reject()
        case "return":
            return ir.Return()
        case "log":
            return ir.Log(prefix="p")
        case "mark":
            return ir.SetMark(draw(st.sampled_from(MARK_VALUES)),
                              draw(st.sampled_from((MAX_MARK, 1, 3))))
        case "jump":
            return ir.Jump(draw(st.sampled_from(place.targets)))
        case _:
            return ir.Goto(draw(st.sampled_from(place.targets)))


@st.composite
def _variant(draw: st.DrawFn, rule: ir.Rule, pool: Pool, place: Place) -> ir.Rule:
    """A copy of `rule` with one thing changed: the kind of rule a merge looks for, or one
    that overlaps it."""
    m = rule.match
    what = draw(st.sampled_from(("dport", "dport", "dport", "sport", "saddr", "saddr",
                                 "daddr", "action", "mark", "ct_state", "same", "two",
                                 "key", "key")))
    if what == "key":  # another key value and verdict: what a verdict map gathers
        key = draw(st.sampled_from(("iifname", "oifname", "dport", "daddr")))
        value: object = None
        # `in` is refused in OUTPUT, `out` in INPUT.
        no_iface = ir.Hook.OUTPUT if key == "iifname" else ir.Hook.INPUT
        if key in ("iifname", "oifname") and place.hook is not no_iface:
            value = Interface(draw(st.sampled_from(PACKET_IFACES)))
        elif key == "dport" and m.dport is not None:
            value = replace(_port_set(draw, pool), negated=False)
        elif key == "daddr" and m.daddr is not None:
            families = tuple(f for f in FAMILIES if place.family in (Family.INET, f))
            value = replace(_address_set(draw, pool, families), negated=False)
        if value is None:
            return rule
        verdicts: list[ir.Action] = [ir.Accept(), ir.Drop(), ir.Return()]
        verdicts += [k(t) for t in place.targets for k in (ir.Jump, ir.Goto)]
        return replace(rule, match=replace(m, **{key: value}), statements=(),
                       action=draw(st.sampled_from(verdicts)))
    if what == "two":  # e.g. another port and another action: the rule a merge crosses
        once = draw(_variant(rule, pool, place))
        if draw(st.integers(0, 2)) == 0:  # a mark that a later copy of the rule tests
            return replace(once, action=ir.SetMark(draw(st.sampled_from(MARK_VALUES))))
        return replace(once, action=draw(_action(place)))
    proto = m.proto
    has_ports = proto is not None and not proto.negated and proto.number in (TCP, UDP)
    if what in ("dport", "sport") and has_ports:
        return replace(rule, match=replace(m, **{what: _port_set(draw, pool)}))
    if what in ("saddr", "daddr"):
        families = tuple(f for f in FAMILIES if m.family in (None, f)
                         and (place.family in (Family.INET, f)))
        value = _address_set(draw, pool, families)
        return replace(rule, match=replace(m, **{what: value}))
    if what == "action":
        return replace(rule, action=draw(_action(place)))
    if what == "mark":
        return replace(rule, match=replace(m, mark=_mark(draw)))
    if what == "ct_state":
        states = draw(st.frozensets(st.sampled_from(list(CtState)), min_size=1, max_size=2))
        return replace(rule, match=replace(m, ct_state=CtStates(states, False)))
    return rule


@st.composite
def _dispatch(draw: st.DrawFn, pool: Pool, place: Place) -> list[ir.Rule]:
    """Rules equal but for one key field, with verdicts, some rules in between: what
    synthesize_sets turns into a verdict map (or must refuse to, where values overlap)."""
    rest = replace(draw(_match(pool, place)), limit=None)
    proto = rest.proto
    keys = ["saddr", "daddr"]
    keys += ["iifname"] if place.hook is not ir.Hook.OUTPUT else []
    keys += ["oifname"] if place.hook is not ir.Hook.INPUT else []
    keys += ["dport"] if proto is not None and not proto.negated and proto.number in (
        TCP, UDP) else []
    key = draw(st.sampled_from(keys))
    families = tuple(f for f in FAMILIES if rest.family in (None, f)
                     and place.family in (Family.INET, f))
    verdicts: list[ir.Action] = [ir.Accept(), ir.Drop(), ir.Return()]
    verdicts += [k(t) for t in place.targets for k in (ir.Jump, ir.Goto)]
    out: list[ir.Rule] = []
    for _ in range(draw(st.integers(2, 6))):
        value: object
        if key in ("iifname", "oifname"):
            value = Interface(draw(st.sampled_from(PACKET_IFACES)))
        elif key == "dport":
            value = replace(_port_set(draw, pool), negated=False)
        else:
            value = replace(_address_set(draw, pool, families), negated=False)
        out.append(ir.Rule(match=replace(rest, **{key: value}),
                           action=draw(st.sampled_from(verdicts))))
        if draw(st.integers(0, 3)) == 0:  # a rule the later ones must move past
            out.append(ir.Rule(match=draw(_match(pool, place)), action=draw(_action(place))))
    return out


@st.composite
def _widening(draw: st.DrawFn, pool: Pool, place: Place) -> list[ir.Rule]:
    """A rule, one like it (often with its action) in a set spanning the first's and the
    third's, and a third equal to the first but for that set: once the third merges into the
    first, the widened first may cover the second, which only a later remove_shadowed sees."""
    rest = replace(draw(_match(pool, place)), limit=None)
    proto = rest.proto
    keys = ["saddr", "daddr"]
    keys += ["dport"] if proto is not None and not proto.negated and proto.number in (
        TCP, UDP) else []
    key = draw(st.sampled_from(keys))
    families = tuple(f for f in FAMILIES if rest.family in (None, f)
                     and place.family in (Family.INET, f))

    def value() -> AddressSet | PortSet:
        if key == "dport":
            return replace(_port_set(draw, pool), negated=False)
        return replace(_address_set(draw, pool, families), negated=False)

    first, third = value(), value()
    action = draw(_action(place))
    between: AddressSet | PortSet
    if isinstance(first, PortSet) and isinstance(third, PortSet):
        between = PortSet((*first.ranges, *third.ranges))
    else:
        assert isinstance(first, AddressSet) and isinstance(third, AddressSet)
        between = AddressSet((*first.prefixes, *third.prefixes))
    second = ir.Rule(match=replace(rest, **{key: between}), action=action)
    second = draw(_variant(second, pool, place))  # often narrower, or another action
    if draw(st.booleans()):
        second = replace(second, action=action)
    return [ir.Rule(match=replace(rest, **{key: first}), action=action), second,
            ir.Rule(match=replace(rest, **{key: third}), action=action)]


@st.composite
def _chain_rules(draw: st.DrawFn, pool: Pool, place: Place, max_size: int,
                 dispatch: bool = False, widening: bool = False) -> tuple[ir.Rule, ...]:
    table = ir.Table(kind=ir.TableKind.FILTER, family=place.family)
    out: list[ir.Rule] = []
    if dispatch and draw(st.booleans()):
        out.extend(r for r in draw(_dispatch(pool, place))
                   if rule_families(table, r) and not never_matches(table, r))
    if widening and draw(st.booleans()):
        out.extend(r for r in draw(_widening(pool, place))
                   if rule_families(table, r) and not never_matches(table, r))
    for _ in range(draw(st.integers(0, max_size))):
        if out and draw(st.integers(0, 2)) > 0:
            # Often the last rule (nothing in between), else any (rules in between decide).
            source = out[-1] if draw(st.booleans()) else draw(st.sampled_from(out))
            rule = draw(_variant(source, pool, place))
        else:
            statements = (ir.Counter(),) if draw(st.integers(0, 5)) == 0 else ()
            rule = ir.Rule(match=draw(_match(pool, place)), action=draw(_action(place)),
                           statements=statements)
        # A variant may mix families, or match nothing: verify refuses such a rule.
        if rule_families(table, rule) and not never_matches(table, rule):
            out.append(rule)
    return tuple(out)


@st.composite
def rulesets(draw: st.DrawFn, pool: Pool, dispatch: bool = False,
             widening: bool = False) -> ir.Ruleset:
    """One filter table: 1-3 base chains and 0-3 user chains (each jumps only to later ones);
    `dispatch`: half the chains start with a run of rules that differ in one key field;
    `widening`: half the chains hold a merge that makes an earlier rule cover a later one."""
    family = draw(st.sampled_from((Family.IP, Family.IP6, Family.INET, Family.INET)))
    users = USER_CHAINS[:draw(st.integers(0, 3))]
    chains: list[ir.Chain] = []
    # Last first, so that a chain can copy a later one (jumps only go to later chains): the
    # copies are what dedup_chains merges.
    for index in reversed(range(len(users))):
        place = Place(family, None, users[index + 1:])
        if chains and draw(st.integers(0, 2)) == 0:
            rules = draw(st.sampled_from(chains)).rules
        else:
            rules = draw(_chain_rules(pool, place, 4, dispatch, widening))
        chains.insert(0, ir.Chain(name=users[index], rules=rules))
    hooks = draw(st.lists(st.sampled_from(ir.BUILTIN_CHAINS[ir.TableKind.FILTER]),
                          min_size=1, max_size=3, unique=True))
    for hook in hooks:
        place = Place(family, hook, users)
        policy = draw(st.sampled_from((None, ir.Policy.ACCEPT, ir.Policy.DROP)))
        chains.append(ir.Chain(name=hook.value, hook=hook, policy=policy,
                               rules=draw(_chain_rules(pool, place, 7, dispatch,
                                                       widening))))
    entry = frozenset(draw(st.lists(st.sampled_from(users), max_size=1))) if users \
        else frozenset()
    table = ir.Table(kind=ir.TableKind.FILTER, family=family, chains=tuple(chains))
    return ir.Ruleset(tables=(table,), entry_points=entry)


# ------------------------------------------------------------------ packets


def _edges(pool: Pool, family: Family) -> list[int]:
    top = (1 << family.bits) - 1
    out = []
    for p in pool.prefixes[family]:
        out += [p.first, p.last, max(p.first - 1, 0), min(p.last + 1, top),
                (p.first + p.last) // 2]
    return out


@st.composite
def packets(draw: st.DrawFn, pool: Pool, table_family: Family) -> Packet:
    family = table_family if table_family is not Family.INET else draw(st.sampled_from(FAMILIES))
    edges = _edges(pool, family)
    address = st.one_of(st.sampled_from(edges), st.sampled_from(edges),
                        st.integers(0, (1 << family.bits) - 1))
    proto = draw(st.sampled_from((TCP, TCP, UDP, ICMP if family is Family.IP else ICMPV6, 47)))
    port_edges = sorted({v for low, high in pool.ports
                         for v in (low - 1, low, high, high + 1) if 0 <= v <= MAX_PORT})
    port = st.one_of(st.sampled_from(port_edges), st.integers(0, MAX_PORT))
    ports = proto in (TCP, UDP)
    iface = st.one_of(st.none(), st.sampled_from(PACKET_IFACES))
    return Packet(
        family=family, proto=proto, saddr=draw(address), daddr=draw(address),
        sport=draw(port) if ports else None, dport=draw(port) if ports else None,
        path=draw(st.sampled_from(list(Path))), iif=draw(iface), oif=draw(iface),
        ct_state=draw(st.sampled_from(list(CtState))),
        tcp_flags=draw(st.sampled_from(PACKET_FLAGS)),
        icmp_type=draw(st.sampled_from((0, 8, 3))) if proto in (ICMP, ICMPV6) else None,
        mark=draw(st.sampled_from(MARK_VALUES)), under_limit=draw(st.booleans()),
    )


@st.composite
def hosts(draw: st.DrawFn, pool: Pool) -> Host:
    """A host owning some of the pool's addresses, so packets go both to INPUT and FORWARD."""
    local = [(f, a) for f in FAMILIES for a in draw(st.lists(st.sampled_from(_edges(pool, f)),
                                                             max_size=3))]
    return Host(local=frozenset(local))


@st.composite
def cases(draw: st.DrawFn, max_packets: int = 24, dispatch: bool = False,
          widening: bool = False) -> Case:
    """A verified ruleset, a host and packets aimed at the ruleset's boundaries."""
    pool = draw(pools())
    ruleset = draw(rulesets(pool, dispatch, widening))
    try:
        verify(ruleset)
    except RulecError as error:  # the strategy should only build valid rulesets
        raise AssertionError(f"strategy drew an invalid ruleset: {error.render()}") from error
    family = ruleset.tables[0].family
    found = draw(st.lists(packets(pool, family), min_size=1, max_size=max_packets))
    return Case(ruleset, tuple(found), draw(hosts(pool)))
