"""Facts the passes share: interval algebra on addresses and ports, a sound disjointness test
for matches, and when a rule may merge into an earlier one without breaking first-match order.

Everything is judged by the reference evaluator's semantics (rulec.ir.evaluate): a test that
says "disjoint" or "may merge" must be true there for every packet; "unsure" is always False.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from operator import attrgetter, itemgetter
from typing import Any

from rulec.ir.nodes import (
    NON_TERMINAL,
    Jump,
    Match,
    Rule,
    Ruleset,
    SetMark,
    Table,
    vmap_rules,
)
from rulec.ir.nodes import targets as action_targets
from rulec.ir.provenance import (
    NOTED_FIELDS,
    element_terms,
    merged_comment,
    rest_notes,
    terms_of,
    without_redundant,
)
from rulec.ir.values import (
    MAX_PORT,
    TCP,
    AddressSet,
    AddrType,
    AddrTypeKind,
    CtState,
    CtStates,
    Family,
    IcmpType,
    Interface,
    Mark,
    PortSet,
    Prefix,
    TcpFlag,
    TcpFlags,
    Terms,
    join_terms,
    prefixes_of,
)

Interval = tuple[int, int]  # inclusive

# --------------------------------------------------------------------------------------------
# Intervals


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted intervals with the overlapping and adjacent ones joined."""
    merged: list[Interval] = []
    for low, high in sorted(intervals):
        if merged and low <= merged[-1][1] + 1:
            if high > merged[-1][1]:
                merged[-1] = (merged[-1][0], high)
        else:
            merged.append((low, high))
    return merged


def _complement(intervals: list[Interval], top: int) -> list[Interval]:
    """[0, top] minus `intervals` (sorted and merged)."""
    out: list[Interval] = []
    start = 0
    for low, high in intervals:
        if low > start:
            out.append((start, low - 1))
        start = high + 1
    if start <= top:
        out.append((start, top))
    return out


def meet(a: Sequence[Interval], b: Sequence[Interval]) -> bool:
    """Whether two sorted, merged interval lists share a point."""
    if len(a) == 1 and len(b) == 1:  # the common case, e.g. one prefix against one
        return a[0][0] <= b[0][1] and b[0][0] <= a[0][1]
    if len(a) > len(b):
        a, b = b, a
    if len(b) > 8 * len(a):
        # Few against many (a rule's prefix against a merged set of thousands): look each
        # of the few up in the many.
        for low, high in a:
            at = bisect.bisect_left(b, low, key=_high)  # the first that reaches `low`
            if at < len(b) and b[at][0] <= high:
                return True
        return False
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][1] < b[j][0]:
            i += 1
        elif b[j][1] < a[i][0]:
            j += 1
        else:
            return True
    return False


_low, _high = itemgetter(0), itemgetter(1)


def collapse_prefixes(prefixes: Iterable[Prefix]) -> tuple[Prefix, ...]:
    """The fewest prefixes covering the same addresses, per family (contained prefixes
    disappear, adjacent ones join). Integer arithmetic: `ipaddress.collapse_addresses` is
    7-13x slower (kernel-costs.md, part 3)."""
    by_family: dict[Family, list[Interval]] = {}
    for p in prefixes:
        by_family.setdefault(p.family, []).append((p.first, p.last))
    out: list[Prefix] = []
    for family in (Family.IP, Family.IP6):
        for low, high in merge_intervals(by_family.get(family, ())):
            out.extend(prefixes_of(family, low, high))
    return tuple(out)


def collapse_noted(items: Iterable[tuple[int, int, Terms]]) -> list[tuple[int, int, Terms]]:
    """Intervals with their terms, joined as merge_intervals joins them, except that adjacent
    intervals join only if their terms are the same: an element then still names exactly
    the terms it comes from. Overlapping ones must join (nft refuses overlapping elements);
    the join keeps the terms of both."""
    out: list[list[Any]] = []
    for low, high, terms in sorted(items, key=lambda item: (item[0], -item[1])):
        if out and low <= out[-1][1]:
            last = out[-1]
            last[1] = max(last[1], high)
            last[2] = join_terms(last[2], terms)
        elif out and low == out[-1][1] + 1 and out[-1][2] == terms:
            out[-1][1] = high
        else:
            out.append([low, high, terms])
    return [(low, high, terms) for low, high, terms in out]


def noted_addresses(values: Sequence[AddressSet], terms: Sequence[Sequence[Terms]]) -> AddressSet:
    """The union of non-negated address sets, each element with its terms (`terms[i]` aligned
    with `values[i]`'s prefixes), collapsed by collapse_noted."""
    prefixes: list[Prefix] = []
    notes: list[Terms] = []
    for family in (Family.IP, Family.IP6):
        items = [(p.first, p.last, t) for v, ts in zip(values, terms, strict=True)
                 for p, t in zip(v.prefixes, ts, strict=True) if p.family is family]
        for low, high, t in collapse_noted(items):
            for p in prefixes_of(family, low, high):
                prefixes.append(p)
                notes.append(t)
    return AddressSet(tuple(prefixes), notes=tuple(notes))


def noted_ports(values: Sequence[PortSet], terms: Sequence[Sequence[Terms]]) -> PortSet:
    """noted_addresses() for port sets."""
    items = [(low, high, t) for v, ts in zip(values, terms, strict=True)
             for (low, high), t in zip(v.ranges, ts, strict=True)]
    joined = collapse_noted(items)
    return PortSet(tuple((low, high) for low, high, _ in joined),
                   notes=tuple(t for _, _, t in joined))


def collapse_ranges(ranges: Iterable[Interval]) -> tuple[Interval, ...]:
    """Port ranges with the overlapping and adjacent ones joined."""
    return tuple(merge_intervals(ranges))


def address_union(a: AddressSet, b: AddressSet) -> AddressSet:
    """The union of two non-negated sets, collapsed."""
    assert not a.negated and not b.negated
    return AddressSet(collapse_prefixes((*a.prefixes, *b.prefixes)))


def port_union(a: PortSet, b: PortSet) -> PortSet:
    """The union of two non-negated port sets, collapsed."""
    assert not a.negated and not b.negated
    return PortSet(collapse_ranges((*a.ranges, *b.ranges)))


# Entries per block of a Column: an insert shifts at most twice this many.
_BLOCK = 256


class Column:
    """(low, entry) pairs sorted by low, for counting and listing the entries whose low lies in
    a range. Kept in blocks of _BLOCK to 2 * _BLOCK pairs, so that an insert shifts one block,
    not every entry after it: one sorted list made remove_shadowed's index quadratic (2 M list
    inserts, 14 s of a 100k-rule chain)."""

    __slots__ = ("entries", "firsts", "lows")

    def __init__(self) -> None:
        self.firsts: list[int] = []  # each block's first low
        self.lows: list[list[int]] = []
        self.entries: list[list[tuple[int, int]]] = []

    def insert(self, low: int, entry: tuple[int, int]) -> None:
        firsts = self.firsts
        if not firsts:
            firsts.append(low)
            self.lows.append([low])
            self.entries.append([entry])
            return
        b = max(0, bisect.bisect_right(firsts, low) - 1)
        lows, entries = self.lows[b], self.entries[b]
        at = bisect.bisect_right(lows, low)
        lows.insert(at, low)
        entries.insert(at, entry)
        if at == 0:
            firsts[b] = low
        if len(lows) > 2 * _BLOCK:
            self.lows.insert(b + 1, lows[_BLOCK:])
            self.entries.insert(b + 1, entries[_BLOCK:])
            firsts.insert(b + 1, lows[_BLOCK])
            del lows[_BLOCK:], entries[_BLOCK:]

    def _blocks(self, low: int, high: int) -> tuple[int, int]:
        """The first and last block that may hold a low in [low, high]: blocks before the
        first hold only lows below `low`, blocks after the last only lows above `high`."""
        return (max(0, bisect.bisect_left(self.firsts, low) - 1),
                bisect.bisect_right(self.firsts, high) - 1)

    def count(self, low: int, high: int) -> int:
        """How many lows lie in [low, high]."""
        i, j = self._blocks(low, high)
        if j < i:
            return 0
        first, last = self.lows[i], self.lows[j]
        if i == j:
            return bisect.bisect_right(first, high) - bisect.bisect_left(first, low)
        return (len(first) - bisect.bisect_left(first, low) + sum(map(len, self.lows[i + 1:j]))
                + bisect.bisect_right(last, high))

    def between(self, low: int, high: int) -> list[tuple[int, int]]:
        """The entries whose low lies in [low, high]."""
        i, j = self._blocks(low, high)
        if j < i:
            return []
        first = self.lows[i]
        start = bisect.bisect_left(first, low)
        if i == j:
            return self.entries[i][start:bisect.bisect_right(first, high, start)]
        out = self.entries[i][start:]
        for block in self.entries[i + 1:j]:
            out += block
        out += self.entries[j][:bisect.bisect_right(self.lows[j], high)]
        return out



# --------------------------------------------------------------------------------------------
# Disjointness: can no packet match both?

_BOTH = frozenset({Family.IP, Family.IP6})
_ALL_STATES = frozenset(CtState)
# The kinds the evaluator's addr_type() can return; a packet's address has exactly one.
_ALL_KINDS = frozenset(AddrTypeKind)


def _families(m: Match) -> frozenset[Family]:
    """Packet families the match can see; address sets are judged per family later."""
    families = _BOTH
    if m.family is not None:
        families = families & {m.family}
    if m.icmp_type is not None:  # even a negated type needs an ICMP packet of its family
        families = families & {m.icmp_type.family}
    return families


def _address_space(value: AddressSet | None, family: Family) -> list[Interval]:
    bits = family.bits
    top = (1 << bits) - 1
    if value is None:
        return [(0, top)]
    prefixes = value.prefixes
    if len(prefixes) == 1:  # most sets: no merging to do
        p = prefixes[0]
        inside = [(p.network, p.network | ((1 << (bits - p.length)) - 1))] if (
            p.family is family) else []
    else:
        inside = merge_intervals((p.first, p.last) for p in prefixes if p.family is family)
    return _complement(inside, top) if value.negated else inside


def _port_space(value: PortSet) -> list[Interval]:
    inside = list(value.ranges) if len(value.ranges) == 1 else merge_intervals(value.ranges)
    return _complement(inside, MAX_PORT) if value.negated else inside


def _ports_disjoint(a: PortSet | None, b: PortSet | None) -> bool:
    # A port test needs a port, so None ("no test") is the only value that matches port-less
    # packets; two tests meet only where their port sets do.
    if a is None or b is None:
        return False
    if len(a.ranges) == 1 and len(b.ranges) == 1 and not a.negated and not b.negated:
        (low_a, high_a), (low_b, high_b) = a.ranges[0], b.ranges[0]  # the common case
        return high_a < low_b or high_b < low_a
    return not meet(_port_space(a), _port_space(b))


def _required(m: Match) -> tuple[int | None, int | None, bool]:
    """(the protocol it needs, the one it excludes, whether it can match at all)"""
    need = m.proto.number if m.proto is not None and not m.proto.negated else None
    exclude = m.proto.number if m.proto is not None and m.proto.negated else None
    if m.tcp_flags is not None:  # the evaluator tests flags of TCP packets only
        if (need is not None and need != TCP) or exclude == TCP:
            return None, None, False
        need = TCP
    return need, exclude, True


def _protos_disjoint(a: Match, b: Match) -> bool:
    need_a, exclude_a, ok_a = _required(a)
    need_b, exclude_b, ok_b = _required(b)
    if not ok_a or not ok_b:
        return True
    if need_a is not None and need_b is not None:
        return need_a != need_b
    return (need_a is not None and need_a == exclude_b) or (
        need_b is not None and need_b == exclude_a)


def _prefix_of(value: Interface) -> str:
    return value.name[:-1] if value.is_wildcard else value.name


def _iface_within(x: Interface, y: Interface) -> bool:
    """Every name x matches, y matches too (both read as non-negated)."""
    if y.is_wildcard:
        return _prefix_of(x).startswith(_prefix_of(y))
    return not x.is_wildcard and x.name == y.name


def _ifaces_meet(x: Interface, y: Interface) -> bool:
    """Some name matches both (both read as non-negated)."""
    if x.is_wildcard and y.is_wildcard:
        px, py = _prefix_of(x), _prefix_of(y)
        return px.startswith(py) or py.startswith(px)
    if x.is_wildcard:
        return y.name.startswith(_prefix_of(x))
    if y.is_wildcard:
        return x.name.startswith(_prefix_of(y))
    return x.name == y.name


def _ifaces_disjoint(a: Interface | None, b: Interface | None) -> bool:
    if a is None or b is None or (a.negated and b.negated):
        return False  # a packet without that interface matches every negated test
    if not a.negated and not b.negated:
        return not _ifaces_meet(a, b)
    positive, negative = (a, b) if b.negated else (b, a)
    return _iface_within(positive, negative)


def _ct_states(value: CtStates) -> frozenset[CtState]:
    return _ALL_STATES - value.states if value.negated else value.states


def _addr_kinds(value: AddrType) -> frozenset[AddrTypeKind]:
    return _ALL_KINDS - {value.kind} if value.negated else frozenset({value.kind})


@functools.cache
def _flag_values(value: TcpFlags) -> frozenset[int]:
    """Every combination of the eight flags (as a bit number) the test matches."""
    order = list(TcpFlag)
    return frozenset(n for n in range(256) if value.matches(
        frozenset(f for i, f in enumerate(order) if n >> i & 1)))


def _icmp_disjoint(a: IcmpType, b: IcmpType) -> bool:
    if a.family is not b.family:
        return True
    if a.negated and b.negated:  # disjoint only if the two exclusions leave no type
        return len(set(a.types) | set(b.types)) == 256
    if not a.negated and not b.negated:
        return not set(a.types) & set(b.types)
    positive, negative = (a, b) if b.negated else (b, a)
    return set(positive.types) <= set(negative.types)


def _mark_empty(value: Mark) -> bool:
    return value.negated and value.mask == 0  # "mark & 0 != 0": nothing matches


def _marks_disjoint(a: Mark, b: Mark) -> bool:
    if _mark_empty(a) or _mark_empty(b):
        return True
    if not a.negated and not b.negated:
        return bool((a.value ^ b.value) & a.mask & b.mask)
    if a.negated and b.negated:
        # Two complements are disjoint only if the two tests cover every mark: the two halves
        # of one bit.
        return a.mask == b.mask and a.mask.bit_count() == 1 and a.value != b.value
    positive, negative = (a, b) if b.negated else (b, a)
    # Disjoint iff every mark the positive test accepts also passes the negated one's test.
    return (negative.mask & ~positive.mask) == 0 and (
        positive.value & negative.mask) == negative.value


def _other_fields_disjoint(a: Match, b: Match, marks: bool) -> bool:
    """Fields that do not depend on the address family."""
    if _protos_disjoint(a, b):
        return True
    if _ports_disjoint(a.sport, b.sport) or _ports_disjoint(a.dport, b.dport):
        return True
    if _ports_disjoint(a.ct_orig_dport, b.ct_orig_dport):
        return True
    if _ifaces_disjoint(a.iifname, b.iifname) or _ifaces_disjoint(a.oifname, b.oifname):
        return True
    if a.ct_state is not None and b.ct_state is not None and not (
            _ct_states(a.ct_state) & _ct_states(b.ct_state)):
        return True
    for x, y in ((a.src_type, b.src_type), (a.dst_type, b.dst_type)):
        if x is not None and y is not None and not (_addr_kinds(x) & _addr_kinds(y)):
            return True
    if a.tcp_flags is not None and b.tcp_flags is not None and not (
            _flag_values(a.tcp_flags) & _flag_values(b.tcp_flags)):
        return True
    if a.icmp_type is not None and b.icmp_type is not None and _icmp_disjoint(
            a.icmp_type, b.icmp_type):
        return True
    return marks and a.mark is not None and b.mark is not None and _marks_disjoint(
        a.mark, b.mark)
    # `limit` never separates two matches: both buckets may have tokens.


def disjoint(a: Match, b: Match, *, marks: bool = True) -> bool:
    """True only if no packet can match both `a` and `b`; False when unsure.

    Field by field: incompatible families (`family`, icmp types), different protocols (or
    `tcp` against `proto != tcp`; tcp flags imply tcp), address sets of a family that share no
    address (negated sets read as their complement within that family), port sets that share
    no port, interfaces no name satisfies both (wildcards and negation included), ct state or
    address-type sets with no common member, tcp flag tests no flag combination passes, icmp
    types, marks that cannot both hold. `marks=False` ignores marks: for packets whose mark
    may change between the two tests.

    >>> from rulec.ir.values import PortSet, Protocol
    >>> web = Match(proto=Protocol(6), dport=PortSet.of(80, 443))
    >>> disjoint(web, Match(proto=Protocol(6), dport=PortSet.of(22)))
    True
    >>> disjoint(web, Match(proto=Protocol(6), dport=PortSet.of(22, 80)))
    False
    """
    # Ports first: the common way rules differ, and the cheapest test (a shortcut only: the
    # same test runs again below).
    if _ports_disjoint(a.dport, b.dport) or _ports_disjoint(a.sport, b.sport):
        return True
    families = _families(a) & _families(b)
    if not families or _other_fields_disjoint(a, b, marks):
        return True
    if a.saddr is None and b.saddr is None and a.daddr is None and b.daddr is None:
        return False
    # Every family both can see must be ruled out by one of the two address fields.
    return all(
        not meet(_address_space(a.saddr, f), _address_space(b.saddr, f))
        or not meet(_address_space(a.daddr, f), _address_space(b.daddr, f))
        for f in families)


# --------------------------------------------------------------------------------------------
# First-match order


def mark_setting_chains(table: Table) -> frozenset[str]:
    """Chains whose run may change a packet's mark, directly or through jumps and gotos."""
    # targets(): a verdict map's jump and goto entries are edges too.
    edges = {c.name: {t for r in c.rules for t in action_targets(r.action)} for c in table.chains}
    setting = {c.name for c in table.chains
               if any(isinstance(r.action, SetMark) for r in c.rules)}
    changed = True
    while changed:
        changed = False
        for name, targets in edges.items():
            if name not in setting and targets & setting:
                setting.add(name)
                changed = True
    return frozenset(setting)


def sets_mark(rule: Rule, setting: frozenset[str]) -> bool:
    # The mark is the only field a packet's walk through one hook can change and a later rule
    # can test (NAT ends the walk). A goto never comes back to this chain, so it cannot matter.
    # A verdict map acts as its entries.
    return any(isinstance(r.action, SetMark)
               or (isinstance(r.action, Jump) and r.action.target in setting)
               for r in vmap_rules(rule))


def may_merge(earlier: Rule, between: Sequence[Rule], later: Rule,
              setting: frozenset[str]) -> bool:
    """Whether `later` may be tested where `earlier` stands (merged into it), so that every
    packet still meets the same actions in the same order.

    `earlier` and `later` must have the same statements and action. Every rule between them
    must be disjoint from `later`, or (terminal actions only) carry the same action and
    statements and no rate limit (a limit is a token bucket that later's packets would stop
    draining). If a rule between, or a non-terminal action itself, may change the mark,
    disjointness must hold without the marks. A non-terminal action must not run twice for a
    packet that matched both, so then `earlier` and `later` must be disjoint too.
    `setting`: mark_setting_chains() of the table.
    """
    terminal = not isinstance(later.action, NON_TERMINAL)
    marks = not any(sets_mark(k, setting) for k in between) and (
        terminal or not sets_mark(later, setting))
    if not terminal and not disjoint(earlier.match, later.match, marks=marks):
        return False
    return all(may_pass(later, k, terminal=terminal, marks=marks) for k in between)


def may_pass(later: Rule, k: Rule, *, terminal: bool, marks: bool) -> bool:
    """Whether `later` may move before `k` (may_merge's test of one rule in between): no
    packet meets both, or `later` ends the walk and `k` would end it the same way (same action
    and statements, no rate limit whose bucket later's packets would stop draining)."""
    if disjoint(k.match, later.match, marks=marks):
        return True
    return (terminal and k.action == later.action and k.statements == later.statements
            and k.match.limit is None)


def merge_rules(ruleset: Ruleset, fields: tuple[str, ...]) -> Ruleset:
    """In every chain, merge each rule into the nearest earlier rule that differs from it only
    in one of `fields` (both sets non-negated, neither rule rate-limited) where may_merge()
    allows; the merged rule gets the union, keeps the earlier rule's span and lists the later
    one's in `origins`. Sweeps the fields in turn until none merges anything; returns
    `ruleset` itself if nothing merged.

    On address and port fields, rules whose comments differ merge too (both commented, or
    neither): the merged rule keeps every term (rulec.ir.provenance), each element of its
    sets names the terms it comes from, and its comment summarises them. Other fields
    (icmp types) merge only rules with the same comment."""
    tables = []
    for table in ruleset.tables:
        setting = mark_setting_chains(table)  # merging never changes which chains set marks
        chains = []
        for chain in table.chains:
            rules = chain.rules
            while True:
                before = rules
                for name in fields:
                    rules = _merge_field(rules, name, setting)
                if rules is before:
                    break
            chains.append(chain if rules is chain.rules else replace(chain, rules=rules))
        same = all(a is b for a, b in zip(chains, table.chains, strict=True))
        tables.append(table if same else replace(table, chains=tuple(chains)))
    if all(a is b for a, b in zip(tables, ruleset.tables, strict=True)):
        return ruleset
    return replace(ruleset, tables=tuple(tables))


def _union(values: Sequence[AddressSet | PortSet | IcmpType]) -> AddressSet | PortSet | IcmpType:
    """The collapsed union of non-negated sets of one kind, computed once for all of them."""
    if isinstance(values[0], IcmpType):
        family = values[0].family
        assert all(isinstance(v, IcmpType) and v.family is family for v in values)
        return IcmpType(family, tuple(t for v in values if isinstance(v, IcmpType)
                                      for t in v.types))
    if isinstance(values[0], AddressSet):
        prefixes = [p for v in values if isinstance(v, AddressSet) for p in v.prefixes]
        return AddressSet(collapse_prefixes(prefixes))
    ranges = [r for v in values if isinstance(v, PortSet) for r in v.ranges]
    return PortSet(collapse_ranges(ranges))


@dataclass(slots=True)
class _Group:
    """Rules equal but for one field, merging into the rule at `head` of the output."""

    head: int
    # The head's match without the field: every member's match lies inside it. Built when a
    # second rule arrives (most groups never get one).
    key: Match | None
    # Indices after `head` already sorted into relevant or not (the rest are not yet looked
    # at). Relevant: rules after `head` that may stop a merge, not disjoint from `key` or
    # setting the mark. A rule disjoint from `key` is disjoint from every member, so
    # may_merge need not see it; nor one that every member may pass whatever it matches (a
    # terminal group's own action and statements, no limit), which is left out too.
    scanned: int
    # Heads of other groups after `head` that merges have widened, and how many of their
    # members this group has found disjoint from `key` so far.
    judged: dict[int, int] = field(default_factory=dict)
    # Widened heads it need not judge again: relevant, at or before `head`, or with a key
    # disjoint from `key` (so are all their members, however many more come), or passed.
    settled: set[int] = field(default_factory=set)
    # Whether a relevant rule may change the mark (may_merge then ignores marks).
    marks: bool = False
    # The relevant rules in two parts: those whose merged field has a value on the field's
    # line (_line), which a member whose value it does not meet is disjoint from; the rest.
    lined: set[int] = field(default_factory=set)
    unlined: list[int] = field(default_factory=list)


# The fields that make two rules equal (span and origins do not): a rule's group key is them
# with the merged field left out, a tuple being far cheaper to build than a rule.
_RULE_REST = attrgetter(*(f.name for f in fields(Rule) if f.compare and f.name != "match"))
_RULE_REST_UNCOMMENTED = attrgetter(
    *(f.name for f in fields(Rule) if f.compare and f.name not in ("match", "comment")))


def _group_rest(field_name: str) -> Callable[[Rule], tuple[Any, ...]]:
    if field_name not in NOTED_FIELDS:
        return _RULE_REST
    return lambda rule: (_RULE_REST_UNCOMMENTED(rule), rule.comment is None)


def merge_provenance(rules: Sequence[Rule], field_name: str
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """For commented `rules` (the head first) merging on `field_name`: the match changes
    (the union, each element naming its terms) and rule changes that carry their terms
    (rulec.ir.provenance)."""
    own = [terms_of(r) for r in rules]
    values = [getattr(r.match, field_name) for r in rules]
    per = [element_terms(v, t) for v, t in zip(values, own, strict=True)]
    union = (noted_addresses(values, per) if isinstance(values[0], AddressSet)
             else noted_ports(values, per))
    terms = join_terms(*own)
    match = {field_name: without_redundant(union, terms), **rest_notes(rules, (field_name,))}
    return match, merged_comment(terms)


def carried_notes(piece: Any, source: Any, default: Terms) -> Any:
    """`piece` (a set inside `source`, e.g. what is left of it after a cut) with each element
    naming the terms of the elements of `source` it overlaps; `default` for an unnoted
    source."""
    terms = element_terms(source, default)
    spans: list[tuple[Family | None, int, int]]
    wanted: list[tuple[Family | None, int, int]]
    if isinstance(source, AddressSet):
        spans = [(p.family, p.first, p.last) for p in source.prefixes]
        wanted = [(p.family, p.first, p.last) for p in piece.prefixes]
    else:
        spans = [(None, low, high) for low, high in source.ranges]
        wanted = [(None, low, high) for low, high in piece.ranges]
    exact = dict(zip(spans, terms, strict=True))
    notes = []
    for family, low, high in wanted:
        found = exact.get((family, low, high))
        if found is None:  # cut from a larger element (rare): every element it overlaps
            found = join_terms(*(t for (f, lo, hi), t in zip(spans, terms, strict=True)
                                 if f is family and lo <= high and low <= hi))
        notes.append(found)
    return replace(piece, notes=tuple(notes))


@functools.cache
def _match_rest(field_name: str) -> Callable[[Match], tuple[Any, ...]]:
    return attrgetter(*(f.name for f in fields(Match) if f.compare and f.name != field_name))


# Rules to look at below which checking each one beats asking a field index: a scan tests
# each with disjoint(), a new member each with a meet() of two lines.
_FEW_TO_SCAN = 8
_FEW_TO_MEET = 48
# The fields with a line (_line) a group's scan may look rules up by.
_LINED = ("saddr", "daddr", "sport", "dport")
_MARKING, _PLAIN = "marking", "plain"  # kinds of rules in merge_rules' scans
# Where ICMPv6 types start on the icmp_type line, and IPv6 addresses on the address line.
_ICMP6_BASE = 256
_IP6_BASE = 1 << 32


def _line(field_name: str, value: Any) -> list[Interval] | None:
    """A non-negated value of a mergeable field as sorted, merged intervals on one line that
    holds every family (IPv6 addresses above IPv4 ones, ICMPv6 types above ICMP ones); None
    for no value, a negated one, or another field. Two rules whose values of the field do not
    meet on the line are disjoint() whatever else they match: that test of the field alone
    decides it (ports and ICMP types first of all; addresses in every family)."""
    if value is None or value.negated:
        return None
    if field_name in ("saddr", "daddr"):
        return merge_intervals((p.first, p.last) if p.family is Family.IP
                               else (_IP6_BASE + p.first, _IP6_BASE + p.last)
                               for p in value.prefixes)
    if field_name in ("sport", "dport"):
        return merge_intervals(value.ranges)
    if field_name == "icmp_type":
        base = 0 if value.family is Family.IP else _ICMP6_BASE
        return merge_intervals((base + t, base + t) for t in value.types)
    return None


def _widen(line: list[Interval], low: int, high: int) -> None:
    """Add [low, high] to sorted, merged intervals, keeping them so."""
    start = bisect.bisect_left(line, low - 1, key=_high)  # the first that reaches low - 1
    end = bisect.bisect_right(line, high + 1, key=_low)  # the first past high + 1
    if start < end:
        low, high = min(low, line[start][0]), max(high, line[end - 1][1])
    line[start:end] = [(low, high)]


class _FieldIndex:
    """Where each rule of a sweep's output has the merged field, on its line: which rules'
    values may meet a value. A widened head holds its members' values too. By width class
    as in remove_shadowed: an interval of class c is narrower than 2**c."""

    __slots__ = ("columns",)

    def __init__(self) -> None:
        self.columns: dict[int, Column] = {}

    def add(self, line: list[Interval], index: int) -> None:
        for low, high in line:
            width_class = (high - low).bit_length()
            column = self.columns.get(width_class)
            if column is None:
                column = self.columns[width_class] = Column()
            column.insert(low, (high, index))

    def estimate(self, line: list[Interval], bound: int) -> int:
        """At least the number of entries meeting `line` (a few that end too early too),
        counted up to `bound`."""
        total = 0
        for width_class, column in self.columns.items():
            reach = (1 << width_class) - 1
            for low, high in line:
                total += column.count(low - reach, high)
                if total >= bound:
                    return bound
        return total

    def meeting(self, line: list[Interval]) -> set[int]:
        found: set[int] = set()
        for width_class, column in self.columns.items():
            reach = (1 << width_class) - 1
            for low, high in line:
                found.update(index for _, index in column.between(low, high))
                if reach:
                    found.update(index for end, index in column.between(low - reach, low - 1)
                                 if end >= low)
        return found


def _merge_field(rules: tuple[Rule, ...], field_name: str,
                 setting: frozenset[str]) -> tuple[Rule, ...]:
    """One sweep for one field; the same tuple if nothing merged. A refused merge stays
    refused in later sweeps (merging only grows sets), so sweeps reach a fixed point.

    Linear in practice: each group looks at each rule after its head once (not once per
    member), and only at the rules its members may not pass whatever they match (another
    action, a limit, a mark); a widened head of another group is judged by its key once
    (disjoint keys stay disjoint however it grows), else member by member, each once; a
    new member is tested only against the relevant rules whose field value meets its own
    (the rest are disjoint from it: _line), found through an index of the field's values
    when there are many; a head's union is collapsed once when next needed, not once per
    merge. The decisions are may_merge()'s, rule for rule."""
    out: list[Rule] = []
    groups: dict[tuple[Any, ...], _Group] = {}  # rule without the field -> its group
    match_rest = _match_rest(field_name)
    rule_rest = _group_rest(field_name)
    keys: dict[int, Match] = {}  # head -> its group's key
    members: dict[int, list[Rule]] = {}  # head -> every rule merged into it, in order
    pending: dict[int, int] = {}  # head -> how many of its members are not yet in its set
    changed = False
    # Output index -> its field's line (None: no value, or not on a line); a widened head's
    # holds its members' values.
    lines: list[list[Interval] | None] = []
    # The rules a group's scan may have to look at, by kind: terminal ones without a limit,
    # by (action, statements) (a terminal group with that pair passes them whatever they
    # match); those that may set the mark (relevant to every group); the rest.
    kinds: list[tuple[Any, Any] | str] = []  # output index -> its pair, _MARKING or _PLAIN
    passing: dict[tuple[Any, Any], list[int]] = {}
    marking: list[int] = []
    plain: list[int] = []
    index: _FieldIndex | None = None  # built when a group first has many lined rules
    # For scanning past many rules: per other field, an index of the rules' values there
    # and the rules without one (built on first need).
    around: dict[str, tuple[_FieldIndex, list[int]]] = {}
    widened: dict[tuple[Any, Any] | str, set[int]] = {}  # kind -> heads with members
    scanned = [0]  # rules scans have looked at one by one
    ready = False  # whether the above describe `out` (from the first group of two on)

    def current(j: int) -> Rule:
        count = pending.pop(j, 0)
        if count:
            head, new = out[j], members[j][-count:]
            merging = (head, *new)
            rule_changes: dict[str, Any] = {}
            if field_name in NOTED_FIELDS and any(r.comment is not None for r in merging):
                union, rule_changes = merge_provenance(merging, field_name)
            else:
                union = {field_name: _union([getattr(r.match, field_name) for r in merging])}
            origins = [o for r in new for o in ((r.span,) if r.span is not None else ())
                       + r.origins]
            out[j] = replace(head, match=replace(head.match, **union),
                             origins=(*head.origins, *origins), **rule_changes)
        return out[j]

    def field_index() -> _FieldIndex:
        nonlocal index
        if index is None:
            index = _FieldIndex()
            for j, line in enumerate(lines):
                if line is not None:
                    index.add(line, j)
        return index

    def take(group: _Group, j: int) -> None:
        """Make out[j] relevant to the group (it may stop a merge)."""
        group.settled.add(j)
        group.marks = group.marks or sets_mark(out[j], setting)
        if lines[j] is not None:
            group.lined.add(j)
        else:
            group.unlined.append(j)

    def scan_index(name: str) -> tuple[_FieldIndex, list[int]]:
        by_field = around.get(name)
        if by_field is None:
            by_field = around[name] = (_FieldIndex(), [])
            for j, rule in enumerate(out):
                place(rule, j, name, by_field)
        return by_field

    def place(rule: Rule, j: int, name: str, by_field: tuple[_FieldIndex, list[int]]) -> None:
        line = _line(name, getattr(rule.match, name))
        if line is None:
            by_field[1].append(j)
        else:
            by_field[0].add(line, j)

    def scan(group: _Group, key: Match) -> None:
        """Sort the rules after those already scanned into relevant or not."""
        start, end = group.scanned, len(out)
        head = out[group.head]
        for j in marking[bisect.bisect_left(marking, start):]:
            take(group, j)
        if isinstance(head.action, NON_TERMINAL):
            candidates: Iterable[int] = (j for j in range(start, end) if kinds[j] != _MARKING)
        else:
            own = (head.action, head.statements)
            lists = [p for pair, p in passing.items() if pair != own] + [plain]
            best = sum(len(p) - bisect.bisect_left(p, start) for p in lists)
            chosen = None
            # Many to look at, and scans have looked at as many rules as indexing them all
            # costs (so an index never costs more than twice what it saves): the rules
            # meeting the key in a field where few do (the rest are disjoint from it:
            # _line), if that leaves fewer.
            if best > _FEW_TO_SCAN and (around or scanned[0] > len(out)):
                for name in _LINED:
                    line = _line(name, getattr(key, name))
                    if line is None or name == field_name:
                        continue
                    found, unlined = scan_index(name)
                    count = len(unlined) - bisect.bisect_left(unlined, start)
                    if count < best:
                        count += found.estimate(line, best - count)
                        if count < best:
                            best, chosen = count, (found, unlined, line)
            if chosen is None:
                scanned[0] += best
                candidates = sorted(j for p in lists for j in p[bisect.bisect_left(p, start):])
            else:
                found, unlined, line = chosen
                hits = found.meeting(line)
                hits.update(unlined[bisect.bisect_left(unlined, start):])
                candidates = sorted(j for j in hits if start <= j < end
                                    and kinds[j] != own and kinds[j] != _MARKING)
        for j in candidates:
            if not disjoint(out[j].match, key, marks=False):
                take(group, j)
        group.scanned = end

    def widened_blockers(group: _Group) -> list[int]:
        """Widened heads after the group's head whose new members may meet its key."""
        assert group.key is not None
        found = []
        head = out[group.head]
        own = None if isinstance(head.action, NON_TERMINAL) else (head.action, head.statements)
        # Set differences in C: most widened heads are settled for this group early on; those
        # of the group's own action and statements it passes whatever they match.
        for j in set().union(*(heads - group.settled for kind, heads in widened.items()
                               if kind != own)):
            if j <= group.head:
                group.settled.add(j)
                continue
            done = group.judged.get(j, 0)
            if done == 0 and disjoint(keys[j], group.key, marks=False):
                group.settled.add(j)
                continue
            grown = members[j]
            if all(disjoint(r.match, group.key, marks=False) for r in grown[done:]):
                group.judged[j] = len(grown)
            else:
                found.append(j)
        return found

    def may_join(group: _Group, rule: Rule, line: list[Interval] | None) -> bool:
        """may_merge(the head, the relevant rules, rule), testing only the relevant rules
        the members may not pass and whose field value meets the rule's."""
        head = out[group.head]
        terminal = not isinstance(rule.action, NON_TERMINAL)
        marks = not group.marks and (terminal or not sets_mark(rule, setting))
        if not terminal and not disjoint(current(group.head).match, rule.match, marks=marks):
            return False
        lined: Iterable[int] = group.lined
        if line is not None and len(group.lined) > _FEW_TO_MEET:
            found = field_index()
            if found.estimate(line, len(group.lined)) < len(group.lined):
                lined = found.meeting(line) & group.lined
        for j in (*group.unlined, *lined):
            k = out[j]
            if terminal and k.action == head.action and k.statements == head.statements \
                    and k.match.limit is None:
                continue  # may_pass's second case
            if line is not None and (own := lines[j]) is not None and not meet(own, line):
                continue  # disjoint: values of the field that do not meet
            if not may_pass(rule, current(j), terminal=terminal, marks=marks):
                return False
        return True

    def prepare() -> None:
        """Describe the rules so far (a sweep where no two rules share a group never
        needs to)."""
        nonlocal ready
        ready = True
        for j, rule in enumerate(out):
            describe(rule, j)

    def append(rule: Rule) -> None:
        out.append(rule)
        if ready:
            describe(rule, len(out) - 1)

    def describe(rule: Rule, j: int) -> None:
        line = _line(field_name, getattr(rule.match, field_name))
        lines.append(line)
        if index is not None and line is not None:
            index.add(line, j)
        if sets_mark(rule, setting):
            kinds.append(_MARKING)
            marking.append(j)
        elif not isinstance(rule.action, NON_TERMINAL) and rule.match.limit is None:
            pair = (rule.action, rule.statements)
            kinds.append(pair)
            passing.setdefault(pair, []).append(j)
        else:
            kinds.append(_PLAIN)
            plain.append(j)
        for name, by_field in around.items():
            place(rule, j, name, by_field)

    for rule in rules:
        value = getattr(rule.match, field_name)
        if value is None or value.negated or rule.match.limit is not None:
            append(rule)
            continue
        key = (match_rest(rule.match), rule_rest(rule))
        group = groups.get(key)
        if group is not None:
            if not ready:
                prepare()
            if group.key is None:
                group.key = replace(out[group.head].match, **{field_name: None})
                keys[group.head] = group.key
            scan(group, group.key)
            for j in widened_blockers(group):  # sets only grow: once in, stays
                take(group, j)
            line = _line(field_name, value)
            if may_join(group, rule, line):
                members.setdefault(group.head, []).append(rule)
                widened.setdefault(kinds[group.head], set()).add(group.head)
                pending[group.head] = pending.get(group.head, 0) + 1
                if line is not None and (own := lines[group.head]) is not None:
                    for low, high in line:
                        _widen(own, low, high)
                    if index is not None:
                        index.add(line, group.head)
                changed = True
                continue
        groups[key] = _Group(head=len(out), key=None, scanned=len(out) + 1)
        append(rule)
    for j in list(pending):
        current(j)
    return tuple(out) if changed else rules
