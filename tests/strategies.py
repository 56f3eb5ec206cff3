"""Hypothesis strategies for IR values, matches, rules, chains and whole rulesets.

`rulesets()` draws rulesets that pass `rulec.ir.verify.verify` and are in the form the DSL
frontend produces (e.g. `icmp` sets the rule's family), so `parse(print(r)) == r` must hold.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from hypothesis import strategies as st

from rulec.ir import nodes as ir
from rulec.ir.values import (
    ICMP,
    ICMP_TYPES,
    ICMPV6,
    ICMPV6_TYPES,
    MAX_MARK,
    MAX_PORT,
    PORT_PROTOCOLS,
    PROTOCOLS,
    TCP,
    AddressSet,
    AddrType,
    AddrTypeKind,
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
from rulec.ir.verify import IFNAMSIZ, never_matches

SINGLE_FAMILIES = (Family.IP, Family.IP6)
SYN_MASK = frozenset({TcpFlag.FIN, TcpFlag.SYN, TcpFlag.RST, TcpFlag.ACK})

# ------------------------------------------------------------------ values


# Parametrised strategies are cached: hypothesis validates every new strategy object, and
# building them inside composites made drawing ten times slower than parsing.
@functools.cache
def prefixes(family: Family | None = None) -> st.SearchStrategy[Prefix]:
    """A network of `family` (either if None); host prefixes and boundary lengths are common."""
    return _prefixes(family)


@st.composite
def _prefixes(draw: st.DrawFn, family: Family | None) -> Prefix:
    fam = family or draw(st.sampled_from(SINGLE_FAMILIES))
    bits = fam.bits
    length = draw(st.one_of(st.sampled_from((0, 8, 16, 24, bits)), st.integers(0, bits)))
    address = draw(st.integers(0, (1 << bits) - 1))
    network = address & ~((1 << (bits - length)) - 1) & ((1 << bits) - 1)
    return Prefix(fam, network, length)


@functools.cache
def address_sets(family: Family | None = None, *, both: bool = False,
                 negated: bool | None = None) -> st.SearchStrategy[AddressSet]:
    """Non-empty sets of prefixes of `family` (any mix if None). `both`: at least one prefix
    of each family, so a non-negated set keeps a rule in an inet table dual-stack."""

    @st.composite
    def build(draw: st.DrawFn) -> AddressSet:
        items = draw(st.lists(prefixes(family), min_size=1, max_size=4))
        if both:
            items += [draw(prefixes(Family.IP)), draw(prefixes(Family.IP6))]
        neg = draw(st.booleans()) if negated is None else negated
        return AddressSet(tuple(items), neg)

    return build()


@st.composite
def port_ranges(draw: st.DrawFn) -> tuple[int, int]:
    edge = st.sampled_from((0, 1, 22, 80, 443, 1023, 1024, 8080, MAX_PORT - 1, MAX_PORT))
    low = draw(st.one_of(edge, st.integers(0, MAX_PORT)))
    if draw(st.booleans()):
        return (low, low)
    width = draw(st.sampled_from((1, 10, 1000, MAX_PORT)))
    high = draw(st.integers(low, min(MAX_PORT, low + width)))
    return (low, high)


@functools.cache
def port_sets(negated: bool | None = None) -> st.SearchStrategy[PortSet]:
    neg = st.booleans() if negated is None else st.just(negated)
    return st.builds(lambda ranges, n: PortSet(tuple(ranges), n),
                     st.lists(port_ranges(), min_size=1, max_size=5), neg)


_IFNAME_PLAIN = st.from_regex(r"[a-z][a-z0-9._-]{0,13}\+?", fullmatch=True)
# Names that need quotes in the DSL: a leading digit, `@`, non-ASCII; never the characters the
# frontend refuses (space, quotes, '/', ':', '\'), and at most the kernel's 15 bytes.
_IFNAME_QUOTED = st.from_regex(r"[0-9@é][a-z0-9@é._-]{0,13}\+?", fullmatch=True).filter(
    lambda name: len(name.encode()) <= IFNAMSIZ)
_IFNAME_KEYWORDS = st.sampled_from(("in", "out", "tcp", "accept", "from", "lo", "eth0", "br-apps",
                                    "wg+", "+", "veth.100"))


@functools.cache
def interface_names() -> st.SearchStrategy[str]:
    return st.one_of(_IFNAME_KEYWORDS, _IFNAME_PLAIN, _IFNAME_QUOTED).filter(
        lambda n: n not in (".", "..") and len(n) <= 15)


@functools.cache
def interfaces() -> st.SearchStrategy[Interface]:
    return st.builds(Interface, interface_names(), st.booleans())


@functools.cache
def ct_states() -> st.SearchStrategy[CtStates]:
    return st.builds(CtStates, st.frozensets(st.sampled_from(list(CtState)), min_size=1),
                     st.booleans())


@functools.cache
def tcp_flags(syn: bool = False) -> st.SearchStrategy[TcpFlags]:
    """`flags VALUE / MASK`; `syn`: a non-negated match that requires SYN (mss actions)."""
    return _tcp_flags(syn)


@st.composite
def _tcp_flags(draw: st.DrawFn, syn: bool) -> TcpFlags:
    if syn and draw(st.booleans()):
        return TcpFlags(frozenset({TcpFlag.SYN}), SYN_MASK)  # what `syn` means
    mask = draw(st.frozensets(st.sampled_from(list(TcpFlag))))
    value = draw(st.frozensets(st.sampled_from(sorted(mask, key=list(TcpFlag).index))
                               if mask else st.nothing()))
    if syn:
        mask, value = mask | {TcpFlag.SYN}, value | {TcpFlag.SYN}
    return TcpFlags(value, mask, False if syn else draw(st.booleans()))


@functools.cache
def icmp_types(family: Family) -> st.SearchStrategy[IcmpType]:
    return _icmp_types(family)


@st.composite
def _icmp_types(draw: st.DrawFn, family: Family) -> IcmpType:
    names = ICMP_TYPES if family is Family.IP else ICMPV6_TYPES
    number = st.one_of(st.sampled_from(sorted(names.values())), st.integers(0, 255))
    return IcmpType(family, tuple(draw(st.lists(number, min_size=1, max_size=3))),
                    draw(st.booleans()))


@functools.cache
def marks() -> st.SearchStrategy[tuple[int, int]]:
    return _marks()


@st.composite
def _marks(draw: st.DrawFn) -> tuple[int, int]:
    mask = draw(st.one_of(st.just(MAX_MARK), st.integers(0, MAX_MARK)))
    value = draw(st.integers(0, MAX_MARK)) & mask
    return value, mask


@functools.cache
def limits() -> st.SearchStrategy[Limit]:
    return st.builds(Limit, st.integers(1, 10**6), st.sampled_from(list(RateUnit)),
                     st.integers(1, 10000))


@functools.cache
def addr_types() -> st.SearchStrategy[AddrType]:
    return st.builds(AddrType, st.sampled_from(list(AddrTypeKind)), st.booleans())


@functools.cache
def texts() -> st.SearchStrategy[str]:
    """Comment and log-prefix text: anything but a newline (which a DSL string cannot hold)."""
    return st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"),
                   max_size=30)


# ------------------------------------------------------------------ matches and rules


@dataclass(frozen=True, slots=True)
class Need:
    """What a rule's action requires of its match."""

    port_proto: bool = False  # NAT to a port: a protocol with ports
    tcp: bool = False  # reject with tcp-reset
    syn: bool = False  # mss: tcp and a SYN match


@functools.cache
def matches(table_family: Family = Family.INET, need: Need = Need(),
            family: Family | None = None, hook: ir.Hook | None = None
            ) -> st.SearchStrategy[ir.Match]:
    """A match valid in a table of `table_family`, in a chain of `hook`. `family`: the one
    address family the rule must match (None: both, possible only in inet tables)."""
    return _matches(table_family, need, family, hook)


_PROTOCOLS = st.none() | st.builds(Protocol, st.sampled_from([*PROTOCOLS.values(), 0, 4, 41, 99,
                                                             255]), st.booleans())


@functools.cache
def _optional_fields(hook: ir.Hook | None) -> tuple[tuple[str, st.SearchStrategy[object]], ...]:
    optional: dict[str, st.SearchStrategy[object]] = {
        "iifname": interfaces(), "oifname": interfaces(), "ct_state": ct_states(),
        "ct_orig_dport": port_sets(), "src_type": addr_types(), "dst_type": addr_types(),
        "mark": marks().flatmap(lambda m: st.builds(Mark, st.just(m[0]), st.just(m[1]),
                                                    st.booleans())),
        "limit": limits(),
    }
    # Built-in chains where an interface is never known (E0316).
    if hook in (ir.Hook.OUTPUT, ir.Hook.POSTROUTING):
        del optional["iifname"]
    if hook in (ir.Hook.PREROUTING, ir.Hook.INPUT):
        del optional["oifname"]
    return tuple(optional.items())


@st.composite
def _matches(draw: st.DrawFn, table_family: Family, need: Need, family: Family | None,
             hook: ir.Hook | None) -> ir.Match:
    if family is None and table_family is not Family.INET:
        family = table_family
    fields: dict[str, object] = {}

    # Protocol first: ports, flags and icmp types depend on it.
    if need.tcp or need.syn:
        proto = Protocol(TCP)
    elif need.port_proto:
        proto = Protocol(draw(st.sampled_from(sorted(PORT_PROTOCOLS))))
    else:
        proto = draw(_PROTOCOLS)
    if proto is not None and not proto.negated and proto.number in (ICMP, ICMPV6):
        implied = Family.IP if proto.number == ICMP else Family.IP6
        if family not in (None, implied):
            proto = Protocol(proto.number, negated=True)  # `proto != icmp` is fine anywhere
        else:
            family = implied
            fields["family"] = implied  # the frontend sets it for icmp and icmpv6
    if proto is not None:
        fields["proto"] = proto
    positive = proto is not None and not proto.negated

    if family is not None and draw(st.booleans()):
        fields["family"] = family
    for name in ("saddr", "daddr"):
        if draw(st.booleans()):
            negated = draw(st.booleans())
            if negated:
                fields[name] = draw(address_sets(negated=True))
            else:
                fields[name] = draw(address_sets(family, both=family is None, negated=False))
    if positive and proto is not None and proto.number in PORT_PROTOCOLS:
        for name in ("sport", "dport"):
            if draw(st.booleans()):
                fields[name] = draw(port_sets())
    for name, strategy in _optional_fields(hook):
        if draw(st.integers(0, 3)) == 0:
            fields[name] = draw(strategy)
    if need.syn:
        fields["tcp_flags"] = draw(tcp_flags(syn=True))
    elif positive and proto is not None and proto.number == TCP and draw(st.booleans()):
        fields["tcp_flags"] = draw(tcp_flags())
    if positive and proto is not None and proto.number in (ICMP, ICMPV6) and draw(st.booleans()):
        fields["icmp_type"] = draw(icmp_types(Family.IP if proto.number == ICMP else Family.IP6))
    return ir.Match(**fields)  # type: ignore[arg-type]


@functools.cache
def logs() -> st.SearchStrategy[ir.Log]:
    return st.builds(ir.Log, st.none() | texts(), st.none() | st.sampled_from(list(ir.LogLevel)))


@dataclass(frozen=True, slots=True)
class Place:
    """Where a rule lives: what decides which actions are valid there."""

    kind: ir.TableKind
    family: Family
    hook: ir.Hook | None
    targets: tuple[str, ...] = ()  # user chains this chain may jump to (no loops)


_NAT_HOOKS = {
    "dnat": (ir.Hook.PREROUTING, ir.Hook.OUTPUT),
    "redirect": (ir.Hook.PREROUTING, ir.Hook.OUTPUT),
    "snat": (ir.Hook.POSTROUTING, ir.Hook.INPUT),
    "masquerade": (ir.Hook.POSTROUTING,),
}


@functools.cache
def rules(place: Place = Place(ir.TableKind.FILTER, Family.INET, ir.Hook.INPUT)
          ) -> st.SearchStrategy[ir.Rule]:
    """A rule whose action is valid at `place` and whose match satisfies the action (and
    that some packet can match: verify refuses the others)."""
    table = ir.Table(kind=place.kind, family=place.family, chains=())
    return _rules(place).filter(lambda rule: not never_matches(table, rule))


_nat_ports = port_ranges().filter(lambda ports: ports[0] > 0)  # port 0: E0302
_STATEMENTS = st.lists(st.one_of(logs(), st.just(ir.Counter())), max_size=2)


@st.composite
def _rules(draw: st.DrawFn, place: Place) -> ir.Rule:
    kinds = ["accept", "return", "log", "mark", "mss_set"]
    if place.kind is not ir.TableKind.NAT:  # the nat table refuses drop (E0315)
        kinds.append("drop")
    if place.targets:
        kinds += ["jump", "goto"]
    if place.kind is ir.TableKind.FILTER:
        kinds.append("reject")
    if place.kind is ir.TableKind.NAT and place.hook is not None:
        kinds += [k for k, hooks in _NAT_HOOKS.items() if place.hook in hooks]
    if place.hook in (ir.Hook.FORWARD, ir.Hook.OUTPUT, ir.Hook.POSTROUTING):
        kinds.append("mss_clamp")
    kind = draw(st.sampled_from(kinds))

    family = None if place.family is Family.INET else place.family
    if kind in ("dnat", "snat") or (place.family is Family.INET and draw(st.booleans())):
        family = family or draw(st.sampled_from(SINGLE_FAMILIES))
    need = Need()
    action: ir.Action
    match kind:
        case "accept":
            action = ir.Accept()
        case "drop":
            action = ir.Drop()
        case "return":
            action = ir.Return()
        case "log":
            action = draw(logs())
        case "mark":
            action = ir.SetMark(*draw(marks()))
        case "mss_set":
            action, need = ir.SetMss(draw(st.integers(1, 65535))), Need(syn=True)
        case "mss_clamp":
            action, need = ir.ClampMss(), Need(syn=True)
        case "jump":
            action = ir.Jump(draw(st.sampled_from(place.targets)))
        case "goto":
            action = ir.Goto(draw(st.sampled_from(place.targets)))
        case "reject":
            with_ = draw(st.none() | st.sampled_from(list(ir.RejectWith)))
            action = ir.Reject(with_)
            need = Need(tcp=with_ is ir.RejectWith.TCP_RESET)
        case "dnat" | "snat":
            assert family is not None
            ports = draw(st.none() | _nat_ports)
            address = Prefix(family, draw(st.integers(0, (1 << family.bits) - 1)), family.bits)
            action = (ir.Dnat if kind == "dnat" else ir.Snat)(address, ports)
            need = Need(port_proto=ports is not None)
        case "redirect":
            action, need = ir.Redirect(draw(_nat_ports)), Need(port_proto=True)
        case "masquerade":
            action = ir.Masquerade()  # the DSL has no syntax for masquerade's port range
        case _:
            raise AssertionError(kind)
    match_ = draw(matches(place.family, need, family, place.hook))
    statements = draw(_STATEMENTS)
    comment = draw(st.none() | texts())
    return ir.Rule(match=match_, statements=tuple(statements), action=action, comment=comment)


# ------------------------------------------------------------------ chains, tables, rulesets

# User chain names: plain, with '-', and words that are keywords elsewhere in the language.
chain_names = st.one_of(
    st.from_regex(r"[a-z_][A-Za-z0-9_-]{0,20}", fullmatch=True),
    st.sampled_from(("DOCKER-USER", "logdrop", "from", "tcp", "accept", "chain", "policy")),
).filter(lambda n: n not in ir.Hook.__members__)


@functools.cache
def tables(kind: ir.TableKind, family: Family) -> st.SearchStrategy[ir.Table]:
    return _tables(kind, family)


@st.composite
def _tables(draw: st.DrawFn, kind: ir.TableKind, family: Family) -> ir.Table:
    builtins = list(ir.BUILTIN_CHAINS[kind])
    hooks = draw(st.lists(st.sampled_from(builtins), unique=True))
    users = draw(st.lists(chain_names, unique=True, max_size=4))
    chains: list[ir.Chain] = []
    # A user chain jumps only to user chains after it, so jumps never loop.
    for index, name in enumerate(users):
        place = Place(kind, family, None, tuple(users[index + 1:]))
        body = draw(st.lists(rules(place), max_size=3))
        chains.append(ir.Chain(name=name, rules=tuple(body)))
    for hook in hooks:
        place = Place(kind, family, hook, tuple(users))
        body = draw(st.lists(rules(place), max_size=4))
        policies = [ir.Policy.ACCEPT] if kind is ir.TableKind.NAT else list(ir.Policy)
        policy = draw(st.none() | st.sampled_from(policies))
        chains.append(ir.Chain(name=hook.value, hook=hook, policy=policy, rules=tuple(body)))
    order = draw(st.permutations(range(len(chains)))) if chains else []
    return ir.Table(kind=kind, family=family, chains=tuple(chains[i] for i in order))


_TABLE_KEYS = st.lists(st.tuples(st.sampled_from(list(ir.TableKind)),
                                 st.sampled_from(list(Family))), unique=True, max_size=3)


def rulesets() -> st.SearchStrategy[ir.Ruleset]:
    """Rulesets that pass verify(): at most one table per (family, kind), as the parser merges."""
    return _rulesets()


@st.composite
def _rulesets(draw: st.DrawFn) -> ir.Ruleset:
    keys = draw(_TABLE_KEYS)
    drawn = tuple(draw(tables(kind, family)) for kind, family in keys)
    users = sorted({c.name for t in drawn for c in t.chains if c.hook is None})
    # Some user chains are `external`; DOCKER-USER always is, as the parser makes it.
    external = set(draw(st.lists(st.sampled_from(users), unique=True))) if users else set()
    external |= {"DOCKER-USER"} & set(users)
    return ir.Ruleset(tables=drawn, entry_points=frozenset(external))
