"""Every IR node in one file: Ruleset -> Table -> Chain -> Rule (Match + statements + Action).

Nodes are frozen and slotted; spans are excluded from equality so structurally equal rules
compare equal wherever they came from. A rewrite builds new nodes (`dataclasses.replace`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace

from rulec.diagnostics import Span
from rulec.ir.values import (
    AddressSet,
    AddrType,
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


Action = (
    Accept | Drop | Return | Reject | Jump | Goto | Log | Dnat | Snat | Masquerade | Redirect
    | SetMss | ClampMss | SetMark
)
# Actions after which the chain goes on with the next rule.
NON_TERMINAL = (Log, SetMss, ClampMss, SetMark, Jump)
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


def rule_count(ruleset: Ruleset) -> int:
    return sum(len(c.rules) for t in ruleset.tables for c in t.chains)
