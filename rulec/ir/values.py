"""Immutable, canonical match values: addresses, ports, interfaces, protocols, states.

Addresses are integers, not `ipaddress` objects: they are compared, sorted and hashed far
more often than printed (see kernel-costs.md, part 3). Constructors sort and deduplicate
but never merge: aggregation is a pass.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

MAX_PORT = 65535
_IPV4 = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(/[0-9]{1,2})?\Z")
MAX_MARK = 0xFFFFFFFF


class Family(enum.Enum):
    """Address family of a table or rule; INET means both (tables only)."""

    IP = "ip"
    IP6 = "ip6"
    INET = "inet"

    @property
    def bits(self) -> int:
        return 32 if self is Family.IP else 128


@dataclass(frozen=True, slots=True)
class Prefix:
    """An IPv4 or IPv6 network: `network` is an integer with the host bits zero."""

    family: Family
    network: int
    length: int

    def __post_init__(self) -> None:
        bits = self.family.bits
        if self.family is Family.INET or not 0 <= self.length <= bits:
            raise ValueError(f"bad prefix length {self.length}")
        if not 0 <= self.network < 1 << bits:
            raise ValueError(f"address {self.network:#x} out of range")
        if self.network & ((1 << (bits - self.length)) - 1):
            raise ValueError("host bits set")

    @classmethod
    def parse(cls, text: str) -> Prefix:
        """Parse `a.b.c.d[/n]` or `v6[/n]`; raises ValueError with a reason."""
        if _IPV4.match(text):
            # Fast path: ipaddress costs ~10 µs per network, a third of a rule's compile time.
            address, _, length = text.partition("/")
            octets = [int(o) for o in address.split(".")]
            bits = int(length) if length else 32
            if max(octets) <= 255 and bits <= 32 and all(
                    o == "0" or not o.startswith("0") for o in address.split(".")):
                network = (octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]
                if network & ((1 << (32 - bits)) - 1):
                    raise ValueError(f"{text} has host bits set")
                return cls(Family.IP, network, bits)
        net = ipaddress.ip_network(text, strict=True)
        family = Family.IP if net.version == 4 else Family.IP6
        return cls(family, int(net.network_address), net.prefixlen)

    @property
    def sort_key(self) -> tuple[int, int, int]:
        """IPv4 before IPv6, then by address, shorter prefixes first."""
        return (self.family.bits, self.network, self.length)

    @property
    def first(self) -> int:
        return self.network

    @property
    def last(self) -> int:
        return self.network | ((1 << (self.family.bits - self.length)) - 1)

    @property
    def is_host(self) -> bool:
        return self.length == self.family.bits

    def address_text(self) -> str:
        return str(ipaddress.ip_address(self.network) if self.family is Family.IP
                   else ipaddress.IPv6Address(self.network))

    def contains(self, family: Family, address: int) -> bool:
        return family is self.family and self.first <= address <= self.last

    def __str__(self) -> str:
        text = self.address_text()
        return text if self.is_host else f"{text}/{self.length}"


def _prefix_key(prefix: Prefix) -> tuple[int, int, int]:
    return prefix.sort_key


# The terms (source rules' comments) an element of a set comes from, in order, each once.
Terms = tuple[str, ...]


def join_terms(*groups: Terms) -> Terms:
    """The terms of every group, in order of first appearance, each once."""
    if len(groups) == 1:
        return groups[0]
    return tuple(dict.fromkeys(t for group in groups for t in group))


def _canonical_noted(elements: tuple[Any, ...], notes: tuple[Terms, ...],
                     key: Callable[[Any], Any] | None) -> tuple[tuple[Any, ...], tuple[Terms, ...]]:
    """Elements sorted and deduplicated as usual, each element's notes following it (an
    element given twice keeps the terms of both)."""
    if len(notes) != len(elements):
        raise ValueError(f"{len(notes)} notes for {len(elements)} elements")
    by_element: dict[Any, Terms] = {}
    for element, terms in zip(elements, notes, strict=True):
        seen = by_element.get(element)
        by_element[element] = terms if seen is None else join_terms(seen, terms)
    order = tuple(sorted(by_element, key=key))
    return order, tuple(by_element[e] for e in order)


def prefixes_of(family: Family, low: int, high: int) -> Iterator[Prefix]:
    """The fewest prefixes covering exactly [low, high]: the largest aligned block each time."""
    bits = family.bits
    while low <= high:
        size = low & -low if low else 1 << bits  # the alignment of `low`
        room = high - low + 1
        if size > room:
            size = 1 << (room.bit_length() - 1)
        yield Prefix(family, low, bits - size.bit_length() + 1)
        low += size



@dataclass(frozen=True, slots=True)
class AddressSet:
    """A set of prefixes, possibly of both families; `negated` matches everything else.

    `name`, set only by synthesize_sets, asks nft to declare the prefixes once per table as a
    named set and refer to it as `@name`; it changes no packet's fate, so it takes no part in
    equality, and targets without named sets ignore it.
    """

    prefixes: tuple[Prefix, ...]
    negated: bool = False
    name: str | None = field(default=None, compare=False)
    # Provenance (rulec.ir.provenance): the terms behind each prefix, aligned with
    # `prefixes`; empty when every prefix comes from all of the rule's terms.
    notes: tuple[Terms, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.notes:
            prefixes, notes = _canonical_noted(self.prefixes, self.notes, _prefix_key)
            object.__setattr__(self, "prefixes", prefixes)
            object.__setattr__(self, "notes", notes)
            return
        canonical = tuple(sorted(set(self.prefixes), key=_prefix_key))
        if canonical != self.prefixes:
            object.__setattr__(self, "prefixes", canonical)

    @property
    def families(self) -> frozenset[Family]:
        return frozenset(p.family for p in self.prefixes)

    def restrict(self, family: Family) -> AddressSet:
        """The prefixes of one family (same negation); may be empty."""
        if self.notes:
            kept = [(p, n) for p, n in zip(self.prefixes, self.notes, strict=True)
                    if p.family is family]
            return AddressSet(tuple(p for p, _ in kept), self.negated,
                              notes=tuple(n for _, n in kept))
        return AddressSet(tuple(p for p in self.prefixes if p.family is family), self.negated)

    def contains(self, family: Family, address: int) -> bool:
        inside = any(p.contains(family, address) for p in self.prefixes)
        return inside != self.negated

    def __str__(self) -> str:
        body = ", ".join(map(str, self.prefixes))
        text = body if len(self.prefixes) == 1 else "{ " + body + " }"
        return f"!= {text}" if self.negated else text


@dataclass(frozen=True, slots=True)
class PortSet:
    """Inclusive port ranges; a single port is a range of one. `name` as for AddressSet."""

    ranges: tuple[tuple[int, int], ...]
    negated: bool = False
    name: str | None = field(default=None, compare=False)
    notes: tuple[Terms, ...] = field(default=(), compare=False)  # as for AddressSet

    def __post_init__(self) -> None:
        for low, high in self.ranges:
            if not 0 <= low <= high <= MAX_PORT:
                raise ValueError(f"bad port range {low}-{high}")
        if self.notes:
            ranges, notes = _canonical_noted(self.ranges, self.notes, None)
            object.__setattr__(self, "ranges", ranges)
            object.__setattr__(self, "notes", notes)
            return
        canonical = tuple(sorted(set(self.ranges)))
        if canonical != self.ranges:
            object.__setattr__(self, "ranges", canonical)

    @classmethod
    def of(cls, *ports: int | tuple[int, int], negated: bool = False) -> PortSet:
        return cls(tuple(p if isinstance(p, tuple) else (p, p) for p in ports), negated)

    @property
    def slots(self) -> int:
        """multiport slots: a single port takes one, a range two."""
        return sum(1 if low == high else 2 for low, high in self.ranges)

    def contains(self, port: int) -> bool:
        inside = any(low <= port <= high for low, high in self.ranges)
        return inside != self.negated

    def __str__(self) -> str:
        items = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ranges]
        body = items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"
        return f"!= {body}" if self.negated else body


@dataclass(frozen=True, slots=True)
class Interface:
    """An interface name; a trailing `+` matches every name with that prefix."""

    name: str
    negated: bool = False

    @property
    def is_wildcard(self) -> bool:
        return self.name.endswith("+")

    def matches(self, name: str | None) -> bool:
        if name is None:
            inside = False
        elif self.is_wildcard:
            inside = name.startswith(self.name[:-1])
        else:
            inside = name == self.name
        return inside != self.negated

    def __str__(self) -> str:
        return f"!= {self.name}" if self.negated else self.name


PROTOCOLS: dict[str, int] = {
    "icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "dccp": 33, "gre": 47, "esp": 50, "ah": 51,
    "icmpv6": 58, "sctp": 132, "udplite": 136,
}
PROTOCOL_NAMES: dict[int, str] = {number: name for name, number in PROTOCOLS.items()}
# Protocols whose header carries ports (multiport and --dport accept exactly these).
PORT_PROTOCOLS = frozenset({6, 17, 33, 132, 136})
ICMP, TCP, UDP, ICMPV6 = 1, 6, 17, 58


@dataclass(frozen=True, slots=True)
class Protocol:
    """An IP protocol number (layer-4 protocol in nft terms)."""

    number: int
    negated: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.number <= 255:
            raise ValueError(f"bad protocol number {self.number}")

    @property
    def name(self) -> str:
        return PROTOCOL_NAMES.get(self.number, str(self.number))

    def __str__(self) -> str:
        return f"proto != {self.name}" if self.negated else self.name


class CtState(enum.Enum):
    """Conntrack states, in the order backends print them."""

    INVALID = "invalid"
    ESTABLISHED = "established"
    RELATED = "related"
    NEW = "new"
    UNTRACKED = "untracked"


@dataclass(frozen=True, slots=True)
class CtStates:
    states: frozenset[CtState]
    negated: bool = False

    @property
    def ordered(self) -> tuple[CtState, ...]:
        return tuple(s for s in CtState if s in self.states)

    def __str__(self) -> str:
        body = ",".join(s.value for s in self.ordered)
        return f"!= {body}" if self.negated else body


class TcpFlag(enum.Enum):
    FIN = "fin"
    SYN = "syn"
    RST = "rst"
    PSH = "psh"
    ACK = "ack"
    URG = "urg"
    ECE = "ece"
    CWR = "cwr"


@dataclass(frozen=True, slots=True)
class TcpFlags:
    """Matches when (flags & mask) == value; value must be a subset of mask."""

    value: frozenset[TcpFlag]
    mask: frozenset[TcpFlag]
    negated: bool = False

    def __post_init__(self) -> None:
        if not self.value <= self.mask:
            raise ValueError("tcp flags value must be a subset of the mask")

    @staticmethod
    def text(flags: frozenset[TcpFlag]) -> str:
        return ",".join(f.value for f in TcpFlag if f in flags) or "none"

    def matches(self, flags: frozenset[TcpFlag]) -> bool:
        return ((flags & self.mask) == self.value) != self.negated

    def __str__(self) -> str:
        body = f"{self.text(self.value)} / {self.text(self.mask)}"
        return f"!= {body}" if self.negated else body


# Names both iptables and nft accept for ICMP and ICMPv6 types; other types are numbers.
ICMP_TYPES: dict[str, int] = {
    "echo-reply": 0, "destination-unreachable": 3, "redirect": 5, "echo-request": 8,
    "router-advertisement": 9, "router-solicitation": 10, "time-exceeded": 11,
    "parameter-problem": 12, "timestamp-request": 13, "timestamp-reply": 14,
}
ICMPV6_TYPES: dict[str, int] = {
    "destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3,
    "parameter-problem": 4, "echo-request": 128, "echo-reply": 129,
    "router-solicitation": 133, "router-advertisement": 134, "neighbour-solicitation": 135,
    "neighbour-advertisement": 136, "redirect": 137,
}


@dataclass(frozen=True, slots=True)
class IcmpType:
    """A set of ICMP (family IP) or ICMPv6 (family IP6) types; `negated` matches every other
    type of that family (still only ICMP packets of it)."""

    family: Family
    types: tuple[int, ...]
    negated: bool = False

    def __post_init__(self) -> None:
        if self.family is Family.INET or not self.types or not all(
                0 <= t <= 255 for t in self.types):
            raise ValueError(f"bad icmp types {self.types}")
        canonical = tuple(sorted(set(self.types)))
        if canonical != self.types:
            object.__setattr__(self, "types", canonical)

    @classmethod
    def of(cls, family: Family, *types: int, negated: bool = False) -> IcmpType:
        return cls(family, types, negated)

    def name(self, number: int) -> str | None:
        table = ICMP_TYPES if self.family is Family.IP else ICMPV6_TYPES
        return next((n for n, t in table.items() if t == number), None)

    def contains(self, number: int) -> bool:
        return (number in self.types) != self.negated

    def __str__(self) -> str:
        items = [self.name(t) or str(t) for t in self.types]
        body = items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"
        return f"!= {body}" if self.negated else body


@dataclass(frozen=True, slots=True)
class Mark:
    """Matches when (mark & mask) == value."""

    value: int
    mask: int = MAX_MARK
    negated: bool = False

    def __post_init__(self) -> None:
        if not (0 <= self.value <= MAX_MARK and 0 <= self.mask <= MAX_MARK):
            raise ValueError("mark out of range")
        if self.value & ~self.mask:
            raise ValueError("mark value has bits outside the mask")

    def __str__(self) -> str:
        body = hex(self.value) if self.mask == MAX_MARK else f"{self.value:#x}/{self.mask:#x}"
        return f"!= {body}" if self.negated else body


class RateUnit(enum.Enum):
    SECOND = "second"
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"


@dataclass(frozen=True, slots=True)
class Limit:
    """Token bucket: matches while under `rate` per `unit`, allowing `burst` packets at once."""

    rate: int
    unit: RateUnit
    burst: int = 5

    def __post_init__(self) -> None:
        if self.rate < 1 or not 1 <= self.burst <= 10000:
            raise ValueError("rate and burst must be positive (burst at most 10000)")

    def __str__(self) -> str:
        return f"{self.rate}/{self.unit.value} burst {self.burst}"


class AddrTypeKind(enum.Enum):
    """Routing address types (iptables addrtype, nft fib ... type)."""

    UNICAST = "unicast"
    LOCAL = "local"
    BROADCAST = "broadcast"
    ANYCAST = "anycast"
    MULTICAST = "multicast"
    BLACKHOLE = "blackhole"
    UNREACHABLE = "unreachable"
    PROHIBIT = "prohibit"


@dataclass(frozen=True, slots=True)
class AddrType:
    kind: AddrTypeKind
    negated: bool = False

    def __str__(self) -> str:
        return f"!= {self.kind.value}" if self.negated else self.kind.value
