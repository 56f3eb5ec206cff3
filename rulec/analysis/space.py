"""The packet space the engine partitions: one integer line per field, and how each rule's
match constrains each line.

Every field the reference evaluator reads (rulec.ir.evaluate.Packet and Host) is a line of
integers; a match's test of a field is a sorted list of disjoint intervals on its line (None:
no test). Interface names become indices of a finite list of representative names (`Names`),
mark values the assignments of the bits any rule tests or sets, TCP flag sets their bitmask.
A value the packet does not have (ports of ICMP, the ICMP type of TCP) is ABSENT, -1, which
no test contains, as in the evaluator where a port test never matches a packet without ports.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from rulec.ir import nodes as ir
from rulec.ir.intervals import (
    Intervals,
    complement,
    intersect,
    merge,
    points,
)
from rulec.ir.values import (
    ICMP,
    ICMPV6,
    MAX_PORT,
    PORT_PROTOCOLS,
    TCP,
    AddressSet,
    CtState,
    Family,
    Interface,
    Mark,
    PortSet,
    TcpFlag,
    TcpFlags,
)

ABSENT = -1
# At most 2**16 classes of marks (what the rules' tests and sets tell apart).
MAX_MARK_BITS = 16
# Each unmodelled condition is tried both ways: at most 2**12 combinations.
MAX_CONDITIONS = 12


class AnalysisError(Exception):
    """A ruleset the engine cannot analyse exactly (it says why; it never guesses)."""


class F(enum.IntEnum):
    """The fields, in the order the engine splits on them (most discriminating first)."""

    PROTO = 0
    SADDR = 1
    DADDR = 2
    SPORT = 3
    DPORT = 4
    CT_ORIG_DPORT = 5
    IIF = 6
    OIF = 7
    CT_STATE = 8
    TCP_FLAGS = 9
    ICMP_TYPE = 10
    MARK = 11
    LIMIT = 12
    MSS = 13
    PATH = 14  # 0 incoming, 1 generated here
    DADDR_LOCAL = 15  # 1: the destination is one of this host's addresses (routing: INPUT)
    SADDR_LOCAL = 16
    UNKNOWN = 17  # which unmodelled conditions (ir.Unknown) hold: one bit each


FIELDS = tuple(F)
CT_STATES = tuple(CtState)
TCP_FLAGS = tuple(TcpFlag)
PATH_INCOMING, PATH_LOCAL = 0, 1


class Names:
    """Interface names, as the finite list of names that stands for every name: None (no
    interface), each exact name a rule tests, and for each wildcard prefix (and the empty
    one) a made-up name with that prefix that no exact name, no longer prefix and nothing
    else a rule tests shares. Any real name passes exactly the tests one of these passes."""

    def __init__(self, tested: Iterable[Interface]) -> None:
        exact = {i.name for i in tested if not i.is_wildcard}
        prefixes = {i.name[:-1] for i in tested if i.is_wildcard} | {""}
        self.exact = frozenset(exact)
        self.names: list[str | None] = [None, *sorted(exact)]
        self.prefix_of: dict[int, str] = {}  # index of a made-up name -> its prefix
        for prefix in sorted(prefixes):
            longer = [q for q in prefixes if len(q) > len(prefix) and q.startswith(prefix)]
            for suffix in ("eth0", "ens3", "if0") if not prefix else ("0", "9", "x", "~"):
                name = prefix + suffix
                if name not in exact and not any(name.startswith(q) for q in longer):
                    break
            else:
                name = self._unused(prefix, exact, longer)
            self.prefix_of[len(self.names)] = prefix
            self.names.append(name)
        self._cache: dict[Interface, Intervals] = {}

    @staticmethod
    def _unused(prefix: str, exact: set[str], longer: list[str]) -> str:
        # Of any n + 1 names that differ in their last character, n prefixes and exact
        # names can take at most n: one is free.
        for k in range(len(exact) + len(longer) + 1):
            name = f"{prefix}~{k}"
            if name not in exact and not any(name.startswith(q) for q in longer):
                return name
        raise AnalysisError(f"no representative interface name for {prefix}+")

    def test(self, value: Interface) -> Intervals:
        found = self._cache.get(value)
        if found is None:
            found = self._cache[value] = points(
                i for i, name in enumerate(self.names) if value.matches(name))
        return found

    def index_of(self, name: str | None) -> int:
        """The index that stands for a real name (None: no interface)."""
        if name is None:
            return 0
        if name in self.exact:
            return self.names.index(name)
        return max((i for i, p in self.prefix_of.items() if name.startswith(p)),
                   key=lambda i: len(self.prefix_of[i]))

    def label(self, index: int) -> str | None:
        """How a report names the class of names an index stands for."""
        if index in self.prefix_of:
            prefix = self.prefix_of[index]
            return f"{prefix}+" if prefix else "*"
        return self.names[index]

    @property
    def top(self) -> int:
        return len(self.names) - 1


class Marks:
    """Mark values by what every test and every set makes of them. Bits that all tests and
    sets treat alike (the same in each mask and each value) form a group, and a group is all
    zeros, all ones or mixed: a test sees no more (it needs each bit of its mask to equal its
    value's), and a set keeps the three apart. Bits no rule touches are never looked at or
    changed, so 0 stands for them. A class of marks is a number in mixed radix, one digit
    (0 zeros, 1 ones, 2 mixed) per group."""

    def __init__(self, touched: Iterable[tuple[int, int]]) -> None:
        pairs = list(dict.fromkeys(touched))
        # The common case, every test and set on the whole mark: the classes are the values
        # named and "any other" (a set then makes the mark one of the named values).
        self.exact: list[int] | None = None
        if all(mask == 0xFFFFFFFF for mask, _ in pairs):
            self.exact = sorted({value for _, value in pairs})
            self.other = next(v for v in range(len(self.exact) + 1) if v not in self.exact)
            self.size = len(self.exact) + 1
            self._cache: dict[Mark, Intervals] = {}
            return
        groups: dict[tuple[tuple[bool, bool], ...], int] = {}
        for b in range(32):
            signature = tuple((bool(mask >> b & 1), bool(value >> b & 1))
                              for mask, value in pairs)
            if any(m or v for m, v in signature):
                groups[signature] = groups.get(signature, 0) | 1 << b
        self.groups = list(groups.values())
        self.radix = [3 if g & (g - 1) else 2 for g in self.groups]
        size = 1
        for r in self.radix:
            size *= r
        if size > 1 << MAX_MARK_BITS:
            raise AnalysisError(f"the rules' mark tests and sets make {size} classes of "
                                f"marks; the engine tells at most {1 << MAX_MARK_BITS} apart")
        self.size = size
        self._cache = {}

    @property
    def top(self) -> int:
        return self.size - 1

    def value(self, assignment: int) -> int:
        """A mark of the class: each group all zeros, all ones, or only its lowest bit."""
        if self.exact is not None:
            return self.exact[assignment] if assignment < len(self.exact) else self.other
        out = 0
        for group, radix in zip(self.groups, self.radix, strict=True):
            assignment, digit = divmod(assignment, radix)
            if digit == 1:
                out |= group
            elif digit == 2:
                out |= group & -group
        return out

    def assignment(self, value: int) -> int:
        if self.exact is not None:
            return self.exact.index(value) if value in self.exact else len(self.exact)
        out, scale = 0, 1
        for group, radix in zip(self.groups, self.radix, strict=True):
            bits = value & group
            digit = 0 if not bits else 1 if bits == group else 2
            out += digit * scale
            scale *= radix
        return out

    def test(self, mark: Mark) -> Intervals:
        found = self._cache.get(mark)
        if found is None:
            found = self._cache[mark] = points(
                a for a in range(self.size)
                if ((self.value(a) & mark.mask) == mark.value) != mark.negated)
        return found


def flags_of(bitmask: int) -> frozenset[TcpFlag]:
    return frozenset(f for i, f in enumerate(TCP_FLAGS) if bitmask >> i & 1)


_FLAG_TESTS: dict[TcpFlags, Intervals] = {}


def flags_test(value: TcpFlags) -> Intervals:
    found = _FLAG_TESTS.get(value)
    if found is None:
        found = _FLAG_TESTS[value] = points(
            b for b in range(1 << len(TCP_FLAGS)) if value.matches(flags_of(b)))
    return found


def address_test(value: AddressSet, family: Family) -> Intervals:
    """The addresses of `family` the set matches (negation included)."""
    inside = merge((p.first, p.last) for p in value.prefixes if p.family is family)
    if value.negated:
        return complement(inside, 0, (1 << family.bits) - 1)
    return inside


def port_test(value: PortSet) -> Intervals:
    inside = merge(value.ranges)
    return complement(inside, 0, MAX_PORT) if value.negated else inside


@dataclass(frozen=True, slots=True)
class Context:
    """What the lines are for one family and one pair of rulesets: the interface names and
    mark bits any of them tests."""

    family: Family
    names: Names
    marks: Marks | None  # None: no rule tests or sets a mark
    limits: bool  # some rule has a rate limit
    mss: bool  # some rule sets the MSS
    orig_dport: bool  # some rule tests the conntrack original port
    conditions: tuple[str, ...] = ()  # the unmodelled conditions some rule tests, bit i each

    def holding(self, bits: int) -> frozenset[str]:
        """The conditions a value of F.UNKNOWN says hold."""
        return frozenset(c for i, c in enumerate(self.conditions) if bits >> i & 1)

    def condition_bits(self, holds: frozenset[str]) -> int:
        return sum(1 << i for i, c in enumerate(self.conditions) if c in holds)

    def unknown_test(self, unknown: ir.Unknown) -> Intervals:
        need = self.condition_bits(unknown.holds)
        refuse = self.condition_bits(unknown.fails)
        return points(v for v in range(1 << len(self.conditions))
                      if v & need == need and not v & refuse)

    @property
    def icmp(self) -> int:
        return ICMP if self.family is Family.IP else ICMPV6

    def top(self, field: F) -> int:
        match field:
            case F.SADDR | F.DADDR:
                return (1 << self.family.bits) - 1
            case F.PROTO | F.ICMP_TYPE:
                return 255
            case F.SPORT | F.DPORT | F.CT_ORIG_DPORT | F.MSS:
                return MAX_PORT
            case F.IIF | F.OIF:
                return self.names.top
            case F.CT_STATE:
                return len(CT_STATES) - 1
            case F.TCP_FLAGS:
                return (1 << len(TCP_FLAGS)) - 1
            case F.MARK:
                return self.marks.top if self.marks else 0
            case F.LIMIT | F.PATH | F.DADDR_LOCAL | F.SADDR_LOCAL:
                return 1
            case F.UNKNOWN:
                return (1 << len(self.conditions)) - 1

    def domain(self, field: F, proto: Intervals) -> Intervals | None:
        """The values the field takes in a class of protocols (uniform in having ports, being
        TCP, being this family's ICMP); None when the field is not split on at all."""
        ports = proto[0][0] in PORT_PROTOCOLS
        match field:
            case F.SPORT | F.DPORT:
                return ((0, MAX_PORT),) if ports else ((ABSENT, ABSENT),)
            # ABSENT rather than None where a test exists but the packet lacks the field: a
            # test of it then fails, as in the evaluator, instead of going unchecked.
            case F.CT_ORIG_DPORT:
                if not self.orig_dport:
                    return None
                return ((0, MAX_PORT),) if ports else ((ABSENT, ABSENT),)
            case F.TCP_FLAGS:
                return ((0, self.top(field)),) if proto[0][0] == TCP else ((ABSENT, ABSENT),)
            case F.ICMP_TYPE:
                return ((0, 255),) if proto[0][0] == self.icmp else ((ABSENT, ABSENT),)
            case F.MARK:
                return ((0, self.top(field)),) if self.marks else None
            case F.LIMIT:
                return ((0, 1),) if self.limits else None
            case F.UNKNOWN:
                return ((0, self.top(field)),) if self.conditions else None
            case F.MSS:  # ABSENT: the packet carries no MSS option
                return ((ABSENT, MAX_PORT),) if self.mss and proto[0][0] == TCP else None
            case _:
                return ((0, self.top(field)),)

    def proto_splitters(self) -> list[Intervals]:
        """Every class of protocols is within one of: TCP, other port protocols, this
        family's ICMP, the rest (the fields after depend on which)."""
        return [points(PORT_PROTOCOLS), points((TCP,)), points((self.icmp,))]


def tests(match: ir.Match, ctx: Context) -> dict[F, Intervals] | None:
    """The match's tests, one per field; None if it can match no packet of the family."""
    if match.family is not None and match.family is not ctx.family:
        return None
    out: dict[F, Intervals] = {}
    if match.proto is not None:
        number = points((match.proto.number,))
        out[F.PROTO] = complement(number, 0, 255) if match.proto.negated else number
    for field, value in ((F.SADDR, match.saddr), (F.DADDR, match.daddr)):
        if value is not None:
            out[field] = address_test(value, ctx.family)
    for field, ports in ((F.SPORT, match.sport), (F.DPORT, match.dport),
                         (F.CT_ORIG_DPORT, match.ct_orig_dport)):
        if ports is not None:
            out[field] = port_test(ports)
    for field, name in ((F.IIF, match.iifname), (F.OIF, match.oifname)):
        if name is not None:
            out[field] = ctx.names.test(name)
    if match.ct_state is not None:
        out[F.CT_STATE] = points(i for i, s in enumerate(CT_STATES)
                                 if (s in match.ct_state.states) != match.ct_state.negated)
    if match.tcp_flags is not None:
        out[F.TCP_FLAGS] = flags_test(match.tcp_flags)
        out[F.PROTO] = intersect(out.get(F.PROTO, ((0, 255),)), points((TCP,)))
    if match.icmp_type is not None:
        if match.icmp_type.family is not ctx.family:
            return None
        out[F.ICMP_TYPE] = points(t for t in range(256) if match.icmp_type.contains(t))
    if match.mark is not None:
        assert ctx.marks is not None
        out[F.MARK] = ctx.marks.test(match.mark)
    if match.limit is not None:
        out[F.LIMIT] = ((1, 1),)
    if match.unknown is not None:
        out[F.UNKNOWN] = ctx.unknown_test(match.unknown)
    if any(not v for v in out.values()):
        return None
    return out


def interfaces(matches: Iterable[ir.Match]) -> list[Interface]:
    return [i for m in matches for i in (m.iifname, m.oifname) if i is not None]


def unknown_conditions(rules: Iterable[ir.Rule]) -> tuple[str, ...]:
    """Every unmodelled condition the rules test, sorted; AnalysisError past MAX_CONDITIONS."""
    found = sorted({c for r in rules if r.match.unknown is not None
                    for c in r.match.unknown.holds | r.match.unknown.fails})
    if len(found) > MAX_CONDITIONS:
        raise AnalysisError(f"the rules test {len(found)} conditions rulec does not model; "
                            f"the engine tries each both ways and takes at most "
                            f"{MAX_CONDITIONS}")
    return tuple(found)


def mark_masks(rules: Iterable[ir.Rule]) -> list[tuple[int, int]]:
    """(mask, value) of every mark test and set."""
    out = []
    for rule in rules:
        if rule.match.mark is not None:
            out.append((rule.match.mark.mask, rule.match.mark.value))
        if isinstance(rule.action, ir.SetMark):
            out.append((rule.action.mask, rule.action.value))
    return out
