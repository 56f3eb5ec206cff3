"""Every IR node in one file: Ruleset -> Table -> Chain -> Rule (Match + statements + Action).

Nodes are frozen and slotted; spans are excluded from equality so structurally equal rules
compare equal wherever they came from. A rewrite builds new nodes (`dataclasses.replace`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any

from rulec.diagnostics import Span
from rulec.ir.values import (
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
    TcpFlags,
)


class TableKind(enum.Enum):
    FILTER = "filter"
    NAT = "nat"
    MANGLE = "mangle"
    RAW = "raw"


class Hook(enum.Enum):
    """Netfilter hooks, named as iptables names its built-in chains."""

    PREROUTING = "PREROUTING"
    INPUT = "INPUT"
    FORWARD = "FORWARD"
    OUTPUT = "OUTPUT"
    POSTROUTING = "POSTROUTING"


# The built-in chains of each table, in iptables-save order.
BUILTIN_CHAINS: dict[TableKind, tuple[Hook, ...]] = {
    TableKind.FILTER: (Hook.INPUT, Hook.FORWARD, Hook.OUTPUT),
    TableKind.NAT: (Hook.PREROUTING, Hook.INPUT, Hook.OUTPUT, Hook.POSTROUTING),
    TableKind.MANGLE: (Hook.PREROUTING, Hook.INPUT, Hook.FORWARD, Hook.OUTPUT, Hook.POSTROUTING),
    TableKind.RAW: (Hook.PREROUTING, Hook.OUTPUT),
}


class Policy(enum.Enum):
    ACCEPT = "accept"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Unknown:
    """Tests rulec does not model, read from a dump only in opaque mode (analysis, never
    output): each is named by its text, and the rule matches only where every `holds` one
    holds and no `fails` one does. A packet says which hold (`Packet.holds`); the analysis
    tries each both ways, so no answer relies on what they do."""

    holds: frozenset[str] = frozenset()
    fails: frozenset[str] = frozenset()

    def __str__(self) -> str:
        return " ".join([*sorted(self.holds), *(f"! {t}" for t in sorted(self.fails))])


@dataclass(frozen=True, slots=True, kw_only=True)
class Match:
    """A conjunction of header tests; None means the field is not constrained."""

    family: Family | None = None  # restricts the rule to IPv4 or IPv6 packets
    proto: Protocol | None = None
    saddr: AddressSet | None = None
    daddr: AddressSet | None = None
    sport: PortSet | None = None
    dport: PortSet | None = None
    iifname: Interface | None = None
    oifname: Interface | None = None
    ct_state: CtStates | None = None
    ct_orig_dport: PortSet | None = None  # conntrack original destination port (before DNAT)
    src_type: AddrType | None = None
    dst_type: AddrType | None = None
    tcp_flags: TcpFlags | None = None
    icmp_type: IcmpType | None = None
    mark: Mark | None = None
    limit: Limit | None = None
    unknown: Unknown | None = None  # only from an opaque import: analysis, never printed

    def present(self) -> Iterator[tuple[str, object]]:
        """(field name, value) for every constrained field, in declaration order."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                yield f.name, value


ANY = Match()


class RejectWith(enum.Enum):
    """How a REJECT answers; backends map these to per-family names."""

    PORT_UNREACHABLE = "port-unreachable"
    HOST_UNREACHABLE = "host-unreachable"
    NET_UNREACHABLE = "net-unreachable"
    ADMIN_PROHIBITED = "admin-prohibited"
    TCP_RESET = "tcp-reset"


class LogLevel(enum.Enum):
    EMERG = "emerg"
    ALERT = "alert"
    CRIT = "crit"
    ERR = "err"
    WARNING = "warning"
    NOTICE = "notice"
    INFO = "info"
    DEBUG = "debug"

    @property
    def number(self) -> int:
        return list(LogLevel).index(self)


@dataclass(frozen=True, slots=True)
class Accept:
    pass


@dataclass(frozen=True, slots=True)
class Drop:
    pass


@dataclass(frozen=True, slots=True)
class Return:
    pass


@dataclass(frozen=True, slots=True)
class Reject:
    with_: RejectWith | None = None


@dataclass(frozen=True, slots=True)
class Jump:
    target: str


@dataclass(frozen=True, slots=True)
class Goto:
    target: str


@dataclass(frozen=True, slots=True)
class Log:
    """Log the packet and continue; usable as a rule's action or as a statement before it."""

    prefix: str | None = None
    level: LogLevel | None = None


@dataclass(frozen=True, slots=True)
class Dnat:
    address: Prefix  # a host prefix
    ports: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Snat:
    address: Prefix
    ports: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Masquerade:
    ports: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    ports: tuple[int, int]


@dataclass(frozen=True, slots=True)
class SetMss:
    mss: int


@dataclass(frozen=True, slots=True)
class ClampMss:
    """Clamp the TCP MSS option to the path MTU."""


@dataclass(frozen=True, slots=True)
class SetMark:
    """mark = (mark & ~mask) ^ value, as iptables' --set-xmark."""

    value: int
    mask: int = 0xFFFFFFFF


class MapKey(enum.Enum):
    """The packet field a verdict map looks up; the value is the Match field's name."""

    SADDR = "saddr"
    DADDR = "daddr"
    SPORT = "sport"
    DPORT = "dport"
    IIFNAME = "iifname"
    OIFNAME = "oifname"
    CT_STATE = "ct_state"


# What a verdict map entry holds: a non-negated value of its key's field, and a verdict.
MapValue = AddressSet | PortSet | Interface | CtStates
MapVerdict = Accept | Drop | Return | Jump | Goto
# A map entry's values, one per key field: a concatenation (`a . b . c`) when there are more.
MapValues = tuple[MapValue, ...]


def _value_key(value: MapValue) -> tuple[object, ...]:
    if isinstance(value, AddressSet):
        return tuple(p.sort_key for p in value.prefixes)
    if isinstance(value, PortSet):
        return value.ranges
    if isinstance(value, CtStates):
        return tuple(list(CtState).index(s) for s in value.ordered)
    return (value.name,)


def _entry_key(entry: tuple[MapValues, MapVerdict]) -> tuple[object, ...]:
    return tuple(_value_key(v) for v in entry[0])


@dataclass(frozen=True, slots=True)
class Vmap:
    """A verdict map (nft `vmap`), made by synthesize_sets: the entry whose values hold the
    packet's `keys` fields acts as the rule `<key> <value> ... <verdict>` would; no entry, the
    next rule. One key is a plain map; more are a concatenation (nft `a . b vmap`), where an
    entry needs all of them to match. Entries are disjoint (verify checks it), so their order does
    not matter and is canonical; the rule's own match must leave the keys unconstrained."""

    keys: tuple[MapKey, ...]
    entries: tuple[tuple[MapValues, MapVerdict], ...]

    def __post_init__(self) -> None:
        canonical = tuple(sorted(self.entries, key=_entry_key))
        if canonical != self.entries:
            object.__setattr__(self, "entries", canonical)

    @classmethod
    def on(cls, key: MapKey, entries: Iterable[tuple[MapValue, MapVerdict]]) -> Vmap:
        """A map on one key."""
        return cls((key,), tuple(((value,), verdict) for value, verdict in entries))


Action = (
    Accept | Drop | Return | Reject | Jump | Goto | Log | Dnat | Snat | Masquerade | Redirect
    | SetMss | ClampMss | SetMark | Vmap
)
# Actions after which the chain may go on with the next rule (a verdict map on a miss or a
# jump).
NON_TERMINAL = (Log, SetMss, ClampMss, SetMark, Jump, Vmap)
NAT_ACTIONS = (Dnat, Snat, Masquerade, Redirect)


@dataclass(frozen=True, slots=True)
class Counter:
    pass


Statement = Log | Counter


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """Tests, then non-terminal statements, then one action."""

    match: Match = ANY
    statements: tuple[Statement, ...] = ()
    action: Action
    comment: str | None = None
    span: Span | None = field(default=None, compare=False, repr=False)
    origins: tuple[Span, ...] = field(default=(), compare=False, repr=False)
    # The comments of the rules merged into this one, in order, when there are several
    # (rulec.ir.provenance); then `comment` summarises them.
    terms: tuple[str, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Chain:
    """A built-in chain (hook set, optional policy) or a user chain (hook None)."""

    name: str
    hook: Hook | None = None
    policy: Policy | None = None
    rules: tuple[Rule, ...] = ()
    span: Span | None = field(default=None, compare=False, repr=False)

    @property
    def is_base(self) -> bool:
        return self.hook is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Table:
    kind: TableKind
    family: Family
    chains: tuple[Chain, ...] = ()
    # nft only: the table's own name (default rulec-<kind>). Tables of several kinds may share
    # one name (Docker's `docker-bridges`), so nft names their base chains <kind>-<HOOK>.
    name: str | None = None
    span: Span | None = field(default=None, compare=False, repr=False)

    def chain(self, name: str) -> Chain | None:
        return next((c for c in self.chains if c.name == name), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ruleset:
    tables: tuple[Table, ...] = ()
    # User chains owned by someone else's jumps (e.g. DOCKER-USER): never removed as unused.
    entry_points: frozenset[str] = frozenset()


def iter_rules(ruleset: Ruleset) -> Iterator[tuple[Table, Chain, Rule]]:
    for table in ruleset.tables:
        for chain in table.chains:
            for rule in chain.rules:
                yield table, chain, rule


def map_rules(
    ruleset: Ruleset, fn: Callable[[Table, Chain, Rule], tuple[Rule, ...]]
) -> Ruleset:
    """Replace every rule by the rules `fn` returns; returns `ruleset` itself if nothing changed."""
    tables = []
    for table in ruleset.tables:
        chains = []
        for chain in table.chains:
            rules: list[Rule] = []
            for rule in chain.rules:
                rules.extend(fn(table, chain, rule))
            same = len(rules) == len(chain.rules) and all(
                a is b for a, b in zip(rules, chain.rules, strict=True))
            chains.append(chain if same else replace(chain, rules=tuple(rules)))
        same_table = all(a is b for a, b in zip(chains, table.chains, strict=True))
        tables.append(table if same_table else replace(table, chains=tuple(chains)))
    if all(a is b for a, b in zip(tables, ruleset.tables, strict=True)):
        return ruleset
    return replace(ruleset, tables=tuple(tables))


def targets(action: Action) -> tuple[str, ...]:
    """The chains an action may continue in: a jump's or goto's target, a verdict map's."""
    if isinstance(action, Jump | Goto):
        return (action.target,)
    if isinstance(action, Vmap):
        return tuple(v.target for _, v in action.entries if isinstance(v, Jump | Goto))
    return ()


def keyed(match: Match, keys: tuple[MapKey, ...], values: MapValues) -> Match:
    """`match` with a verdict map's key fields set to an entry's values."""
    changes: dict[str, Any] = {key.value: value for key, value in zip(keys, values, strict=True)}
    return replace(match, **changes)


def vmap_rules(rule: Rule) -> tuple[Rule, ...]:
    """A verdict-map rule as the equivalent plain rules, one per entry (they are disjoint, so
    their order does not matter); any other rule as itself."""
    action = rule.action
    if not isinstance(action, Vmap):
        return (rule,)
    return tuple(replace(rule, match=keyed(rule.match, action.keys, values), action=verdict)
                 for values, verdict in action.entries)


def rule_count(ruleset: Ruleset) -> int:
    return sum(len(c.rules) for t in ruleset.tables for c in t.chains)
