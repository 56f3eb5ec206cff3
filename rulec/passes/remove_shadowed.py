"""Remove rules that earlier terminal rules of the same chain shadow: every packet the rule
matches is decided before it, by one earlier rule or by several together.

    before:  chain INPUT {                         after:  chain INPUT {
               accept tcp dport 1-100                        accept tcp dport 1-100
               drop tcp dport 101-200                        drop tcp dport 101-200
               accept tcp dport 50-150  # shadowed         }
             }

A rule's match is a union of boxes, one per address family: a product of integer interval
sets, one per field (protocol, addresses, ports, interfaces, conntrack state, ...). The rule is
shadowed when its boxes minus the union of the earlier terminal rules' boxes is empty. The
subtraction is a depth-first search that stops at the first piece no earlier rule touches, and
the earlier rules it considers come from an index (per field, intervals bucketed by width), so
a chain of 10k rules takes seconds, not the minutes of a pairwise check.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from itertools import compress
from operator import itemgetter

from rulec.diagnostics import Diagnostic, warning
from rulec.ir.intervals import Intervals, complement, intersect, merge, within
from rulec.ir.nodes import (
    NON_TERMINAL,
    Chain,
    Jump,
    Match,
    Rule,
    Ruleset,
    SetMark,
    Table,
    Vmap,
    vmap_rules,
)
from rulec.ir.values import (
    MAX_MARK,
    MAX_PORT,
    PORT_PROTOCOLS,
    TCP,
    AddressSet,
    AddrType,
    AddrTypeKind,
    CtState,
    Family,
    Interface,
    Mark,
    PortSet,
    TcpFlag,
    TcpFlags,
)
from rulec.passes.analysis import Column, mark_setting_chains, meet
from rulec.passes.context import PassContext

CODE = "W0102"
# Work (overlap tests and pieces) one rule's search may cost before the rule is kept unproven;
# this, not the chain length, bounds the time spent on a rule.
WORK_PER_RULE = 4000
# Candidate covers below which a second index lookup does not pay.
_FEW = 16
# Earlier rules named in a warning before "and N more".
_SHOWN = 4

# --------------------------------------------------------------------------------------------
# Interval sets (rulec.ir.intervals) for each field.

def _size(value: Intervals) -> int:
    return sum(b - a + 1 for a, b in value)


# --------------------------------------------------------------------------------------------
# Boxes. A packet is a point: one integer per dimension below (the family is kept apart, each
# box has one). `None` in a box means the whole domain. A packet without ports, interfaces or
# an ICMP type has -1 there; a test on the field needs the field, as in the evaluator.

PROTO, SADDR, DADDR, SPORT, DPORT, IIF, OIF, CT, CT_DPORT, STYPE, DTYPE, FLAGS, ICMP, MARK = (
    range(14))
_DIMS = 14
_IFNAME_BYTES = 32  # longer names (the kernel takes 15) are not modelled: the test is ignored
_IFNAME_TOP = 257 ** _IFNAME_BYTES - 1
_CT_ORDER = tuple(CtState)
_KIND_ORDER = tuple(AddrTypeKind)  # the kernel knows all eight; the evaluator four
_FLAG_ORDER = tuple(TcpFlag)
# Dimensions worth indexing: wide domains, where a rule's interval usually singles it out.
_INDEXED = (SADDR, DADDR, DPORT, SPORT, IIF, OIF, PROTO, CT_DPORT, ICMP, MARK)


def _domains(family: Family) -> tuple[tuple[int, int], ...]:
    top = (1 << family.bits) - 1
    ports = (-1, MAX_PORT)
    ifaces = (-1, _IFNAME_TOP)
    return ((0, 255), (0, top), (0, top), ports, ports, ifaces, ifaces, (0, len(_CT_ORDER) - 1),
            ports, (0, len(_KIND_ORDER) - 1), (0, len(_KIND_ORDER) - 1), (0, 255), (-1, 255),
            (0, MAX_MARK))


_DOMAINS = {f: _domains(f) for f in (Family.IP, Family.IP6)}
Box = tuple[Intervals | None, ...]


class _Inexact(Exception):
    """A test the boxes do not model exactly (a rate limit, an odd mark mask)."""


def _ifname(value: str) -> int:
    """Names in lexicographic order: UTF-8 bytes + 1 as base-257 digits, zero-padded."""
    data = value.encode()
    number = 0
    for index in range(_IFNAME_BYTES):
        number = number * 257 + (data[index] + 1 if index < len(data) else 0)
    return number


def _interface(value: Interface) -> Intervals:
    body = value.name[:-1] if value.is_wildcard else value.name
    if len(body.encode()) >= _IFNAME_BYTES:
        raise _Inexact
    low = _ifname(body)
    # Every name starting with `body` lies between body+"\0..." and body+"\xff...".
    high = low + 257 ** (_IFNAME_BYTES - len(body.encode())) - 1 if value.is_wildcard else low
    inside = ((low, high),)
    return complement(inside, -1, _IFNAME_TOP) if value.negated else inside


def _ports(value: PortSet) -> Intervals:
    inside = merge(value.ranges)
    return complement(inside, 0, MAX_PORT) if value.negated else inside


def _addresses(value: AddressSet, family: Family) -> Intervals:
    bits = family.bits
    # Prefixes are sorted by address (AddressSet keeps them so): join them without sorting.
    out: list[tuple[int, int]] = []
    for p in value.prefixes:
        if p.family is not family:
            continue
        low = p.network
        high = low | ((1 << (bits - p.length)) - 1)
        if out and low <= out[-1][1] + 1:
            if high > out[-1][1]:
                out[-1] = (out[-1][0], high)
        else:
            out.append((low, high))
    inside = tuple(out)
    return complement(inside, 0, (1 << bits) - 1) if value.negated else inside


def _kinds(value: AddrType) -> Intervals:
    index = _KIND_ORDER.index(value.kind)
    inside = ((index, index),)
    return complement(inside, 0, len(_KIND_ORDER) - 1) if value.negated else inside


@functools.cache
def _flags(value: TcpFlags) -> Intervals:
    return merge((n, n) for n in range(256) if value.matches(
        frozenset(f for i, f in enumerate(_FLAG_ORDER) if n >> i & 1)))


def _mark(value: Mark) -> Intervals:
    low_bits = ~value.mask & MAX_MARK
    if low_bits & (low_bits + 1):  # the mask is not "high bits only": not one interval
        raise _Inexact
    inside = ((value.value, value.value | low_bits),)
    return complement(inside, 0, MAX_MARK) if value.negated else inside


_PORT_PROTOS = merge((p, p) for p in PORT_PROTOCOLS)


def _box(m: Match, family: Family, exact: list[bool]) -> Box | None:
    """The packets of `family` that `m` matches, or None if there are none. Sets exact[0]
    to False when a test is left out (the box is then larger than the match)."""
    if m.family is not None and m.family is not family:
        return None
    if m.icmp_type is not None and m.icmp_type.family is not family:
        return None
    dims: list[Intervals | None] = [None] * _DIMS
    if m.proto is not None:
        point = ((m.proto.number, m.proto.number),)
        dims[PROTO] = complement(point, 0, 255) if m.proto.negated else point
    if m.tcp_flags is not None:  # the evaluator tests flags of TCP packets only
        dims[PROTO] = intersect(dims[PROTO] or ((0, 255),), ((TCP, TCP),))
        dims[FLAGS] = _flags(m.tcp_flags)
    if m.sport is not None or m.dport is not None:  # only port protocols carry ports
        dims[PROTO] = intersect(dims[PROTO] or ((0, 255),), _PORT_PROTOS)
    if m.saddr is not None:
        dims[SADDR] = _addresses(m.saddr, family)
    if m.daddr is not None:
        dims[DADDR] = _addresses(m.daddr, family)
    if m.sport is not None:
        dims[SPORT] = _ports(m.sport)
    if m.dport is not None:
        dims[DPORT] = _ports(m.dport)
    if m.ct_orig_dport is not None:
        dims[CT_DPORT] = _ports(m.ct_orig_dport)
    for dim, iface in ((IIF, m.iifname), (OIF, m.oifname)):
        if iface is not None:
            try:
                dims[dim] = _interface(iface)
            except _Inexact:
                exact[0] = False
    if m.ct_state is not None:
        inside = merge((i, i) for i, s in enumerate(_CT_ORDER) if s in m.ct_state.states)
        dims[CT] = complement(inside, 0, len(_CT_ORDER) - 1) if m.ct_state.negated else inside
    if m.src_type is not None:
        dims[STYPE] = _kinds(m.src_type)
    if m.dst_type is not None:
        dims[DTYPE] = _kinds(m.dst_type)
    if m.icmp_type is not None:
        inside = merge((t, t) for t in m.icmp_type.types)
        dims[ICMP] = complement(inside, 0, 255) if m.icmp_type.negated else inside
    if m.mark is not None:
        try:
            dims[MARK] = _mark(m.mark)
        except _Inexact:
            exact[0] = False
    if m.limit is not None:  # a token bucket: the rule may not match when the box says so
        exact[0] = False
    domains = _DOMAINS[family]
    for dim, value in enumerate(dims):
        if value is None:
            continue
        if not value:
            return None
        if value == (domains[dim],):
            dims[dim] = None
    return tuple(dims)


def _boxes(rules: Iterable[Rule], families: tuple[Family, ...]) -> tuple[list[_Placed], bool]:
    """The boxes of every packet the rules match, and whether they are exact."""
    exact = [True]
    out = [(family, box) for rule in rules for family in families
           if (box := _box(rule.match, family, exact)) is not None]
    return out, exact[0]


_Placed = tuple[Family, Box]


def _subtract_intervals(x: Intervals, y: Intervals) -> Intervals:
    """x minus y."""
    out: list[tuple[int, int]] = []
    j = 0
    for low, high in x:
        start = low
        while j < len(y) and y[j][1] < start:
            j += 1
        k = j
        while k < len(y) and y[k][0] <= high:
            if y[k][0] > start:
                out.append((start, y[k][0] - 1))
            start = max(start, y[k][1] + 1)
            if start > high:
                break
            k += 1
        if start <= high:
            out.append((start, high))
    return tuple(out)


# log2 of each dimension's domain size, per family: _cover() is hot.
_LOG_DOMAINS = {f: tuple(math.log2(high - low + 1) for low, high in domains)
                for f, domains in _DOMAINS.items()}


@dataclass(slots=True, eq=False)
class _Cover:
    """An earlier terminal rule's box, as the index holds it."""

    position: int  # in the chain, from 0
    box: Box
    dims: tuple[int, ...]  # the constrained dimensions
    volume: float  # log2 of the share of the family's packets it holds: broadest first
    # (dimension, intervals) of each constrained dimension, for the hot tests below.
    tests: tuple[tuple[int, Intervals], ...]
    alive: bool = True  # False once a mark change between it and later rules makes it unsafe


def _cover(position: int, box: Box, family: Family) -> _Cover:
    tests = tuple((d, value) for d, value in enumerate(box) if value is not None)
    volume = 0.0
    logs = _LOG_DOMAINS[family]
    for d, value in tests:
        size = value[0][1] - value[0][0] + 1 if len(value) == 1 else _size(value)
        volume += math.log2(size) - logs[d]
    return _Cover(position, box, tuple(d for d, _ in tests), volume, tests)



def _overlaps(piece: Box, cover: _Cover) -> bool:
    for d, other in cover.tests:
        value = piece[d]
        if value is None:
            continue
        if len(value) == 1 and len(other) == 1:  # meet() inlined: the common case, and hot
            if value[0][0] > other[0][1] or other[0][0] > value[0][1]:
                return False
        elif not meet(value, other):
            return False
    return True


def _contains(cover: _Cover, piece: Box) -> bool:
    for d, other in cover.tests:
        value = piece[d]
        if value is None or not within(value, other):
            return False
    return True


def _pieces(piece: Box, cover: _Cover, domains: tuple[tuple[int, int], ...]) -> list[Box]:
    """piece minus cover, as disjoint boxes (they overlap): one per constrained dimension, the
    part outside the cover there and inside it in the dimensions before."""
    out = []
    current = list(piece)
    for d in cover.dims:
        value = current[d] or (domains[d],)
        inside = cover.box[d] or ()
        outside = _subtract_intervals(value, inside)
        if outside:
            current[d] = outside
            out.append(tuple(current))
        current[d] = intersect(value, inside)
    return out


_first, _second = itemgetter(0), itemgetter(1)
class _Index:
    """The usable earlier terminal rules of one family, found by interval overlap."""

    def __init__(self, family: Family) -> None:
        self.family = family
        self.covers: list[_Cover] = []
        self.wild: dict[int, set[int]] = {d: set() for d in _INDEXED}  # unconstrained there
        # dimension -> width class -> [(low, (high, cover id))] by low; an interval of class
        # c is narrower than 2**c, so one meeting [a, b] starts in (a - 2**c, b].
        self.buckets: dict[int, dict[int, Column]] = {d: {} for d in _INDEXED}
        self.marked: list[int] = []

    def add(self, cover: _Cover) -> None:
        cid = len(self.covers)
        self.covers.append(cover)
        if cover.box[MARK] is not None:
            self.marked.append(cid)
        for d in _INDEXED:
            value = cover.box[d]
            if value is None:
                self.wild[d].add(cid)
                continue
            buckets = self.buckets[d]
            for low, high in value:
                width_class = (high - low).bit_length()
                column = buckets.get(width_class)
                if column is None:
                    column = buckets[width_class] = Column()
                column.insert(low, (high, cid))

    def forget_marks(self) -> None:
        """A rule that may change the mark runs here: earlier mark tests say nothing about the
        packets after it."""
        for cid in self.marked:
            self.covers[cid].alive = False
        self.marked.clear()

    def _estimate(self, d: int, query: Intervals, bound: int) -> int:
        """At least the number of covers meeting `query` in dimension `d` (entries are
        counted by where they start, so a few that end too early are counted too); stops
        counting at `bound`."""
        total = len(self.wild[d])
        for width_class, column in self.buckets[d].items():
            reach = (1 << width_class) - 1
            for low, high in query:
                total += column.count(low - reach, high)
                if total >= bound:
                    return bound
        return total

    def _hits(self, d: int, query: Intervals, *, wild: bool = True) -> set[int]:
        """Covers meeting `query` in dimension `d`; without those unconstrained there if not
        `wild`."""
        found = set(self.wild[d]) if wild else set()
        for width_class, column in self.buckets[d].items():
            reach = (1 << width_class) - 1
            for low, high in query:
                # Those starting inside [low, high] meet it; those starting before, if they
                # reach `low`. Slices, map() and compress() keep the loop out of Python.
                found.update(map(_second, column.between(low, high)))
                if reach:
                    before = column.between(low - reach, low - 1)
                    found.update(compress(map(_second, before),
                                          map(low.__le__, map(_first, before))))
        return found

    def candidates(self, box: Box, cap: int) -> list[_Cover]:
        """Usable covers meeting `box`, broadest first. They are looked up in the dimension
        where the fewest covers can meet the box (and, if that leaves many, intersected with
        the next best); at most `cap` covers are looked at (a subset is always safe: fewer
        covers prove less)."""
        scan = min(len(self.covers), cap)  # looking at every cover in order costs this much
        ranked: list[tuple[int, int]] = []  # (estimate, dimension), the two best
        for d in sorted((d for d in _INDEXED if box[d] is not None),
                        key=lambda d: len(self.wild[d])):
            bound = ranked[-1][0] if len(ranked) == 2 else scan
            if len(self.wild[d]) >= bound:
                break  # this and every later dimension cannot do better
            value = box[d]
            assert value is not None
            count = self._estimate(d, value, bound)
            if count < bound:
                ranked = sorted([*ranked, (count, d)])[:2]
        if not ranked:
            ids: Iterable[int] = range(scan)
        else:
            first = box[ranked[0][1]]
            assert first is not None
            hits = self._hits(ranked[0][1], first)
            if len(hits) > _FEW and len(ranked) == 2:
                second = box[ranked[1][1]]
                assert second is not None
                hits &= self._hits(ranked[1][1], second)
            # Many left (e.g. rules differing only in a field most covers leave open): drop
            # those that miss the box in another dimension where few covers are constrained
            # and meet it, by set operations in C before the exact test below in Python.
            for d in _INDEXED:
                value = box[d]
                if len(hits) <= _FEW:
                    break
                if value is None or d == ranked[0][1] or d == ranked[-1][1]:
                    continue
                wild = len(self.wild[d])
                if self._estimate(d, value, wild + len(hits)) - wild < len(hits):
                    hits = (hits & self.wild[d]) | (hits & self._hits(d, value, wild=False))
            ids = sorted(hits)
        found = [c for cid in ids if (c := self.covers[cid]).alive and _overlaps(box, c)]
        found.sort(key=lambda c: (-c.volume, c.position))
        return found


def _search(box: Box, candidates: list[_Cover], domains: tuple[tuple[int, int], ...],
            budget: list[int]) -> dict[int, _Cover] | None:
    """The covers that together hold `box`, or None: a piece no cover meets, or out of work.

    Depth first over the pieces `box` breaks into; a piece cut by candidate k only meets
    candidates after k (the ones before did not meet the piece it came from)."""
    used: dict[int, _Cover] = {}
    stack = [(box, 0)]
    count = len(candidates)
    while stack:
        piece, k = stack.pop()
        start = k
        while k < count and not _overlaps(piece, candidates[k]):
            k += 1
        budget[0] -= k - start + 1
        if k == count or budget[0] < 0:
            return None
        cover = candidates[k]
        used[cover.position] = cover
        if _contains(cover, piece):
            continue
        pieces = _pieces(piece, cover, domains)
        budget[0] -= len(pieces)
        stack.extend((p, k + 1) for p in pieces)
    return used


def _covering(boxes: list[_Placed], indexes: dict[Family, _Index],
              work: int) -> list[int] | None:
    """Positions of earlier rules that together decide every packet of `boxes`, or None."""
    budget = [work]
    per_box = []
    for family, box in boxes:
        found = indexes[family].candidates(box, work)
        budget[0] -= len(found)
        per_box.append((family, box, found))
    # One rule holding everything makes the clearest warning.
    whole: set[int] | None = None
    for _, box, found in per_box:
        holding = {c.position for c in found if _contains(c, box)}
        whole = holding if whole is None else whole & holding
        if not whole:
            break
    if whole:
        return [min(whole)]
    used: dict[int, _Cover] = {}
    for family, box, found in per_box:
        part = _search(box, found, _DOMAINS[family], budget)
        if part is None:
            return None
        used.update(part)
    return sorted(used)


# --------------------------------------------------------------------------------------------
# The pass


def remove_shadowed(ruleset: Ruleset, ctx: PassContext) -> Ruleset:
    """Remove every rule whose packets are all decided by earlier rules of its chain; each
    removal is a W0102 warning in `ctx.warnings` naming the rules that shadow it.

    Earlier rules count only if they end the packet's walk through the chain (accept, drop,
    reject, return, goto, NAT; the ending entries of a verdict map) and are modelled exactly:
    not jump, log, mark or mss (the packet comes back), no rate limit (the bucket may be
    empty), no mark test with a mask that is not one interval, no interface name over 31
    bytes. Once a rule that may change the mark runs (mark set, or a jump to a chain that
    does), earlier rules that test the mark no longer count. The shadowed rule itself may have
    any action. A rule whose search exceeds WORK_PER_RULE steps is kept: the pass only removes
    what it proved unreachable, and its time grows with the chain, not its square.

    >>> from rulec.api import parse_text
    >>> from rulec.ir.printer import print_ruleset
    >>> r = parse_text('''table ip filter { chain INPUT {
    ...     accept tcp dport 1-100
    ...     drop tcp dport 101-200
    ...     accept tcp dport 50-150
    ... } }''')
    >>> ctx = PassContext()
    >>> print(print_ruleset(remove_shadowed(r, ctx)), end="")
    table ip filter {
      chain INPUT {
        accept tcp dport 1-100
        drop tcp dport 101-200
      }
    }
    >>> w = ctx.warnings[0]
    >>> for line in (str(w.span), w.message, *w.notes):
    ...     print(line)
    <string>:4:5
    rule is shadowed: 2 earlier rules of chain INPUT together decide every packet it matches
    shadowed in part by the rule at <string>:2:5
    shadowed in part by the rule at <string>:3:5
    the rule is removed; if it should take effect, move it before those rules
    """
    tables = tuple(_table(t, ctx.warnings) for t in ruleset.tables)
    if all(a is b for a, b in zip(tables, ruleset.tables, strict=True)):
        return ruleset
    return replace(ruleset, tables=tables)


def _table(table: Table, warnings: list[Diagnostic]) -> Table:
    families = (Family.IP, Family.IP6) if table.family is Family.INET else (table.family,)
    setting = mark_setting_chains(table)
    chains = tuple(_chain(chain, families, setting, warnings) for chain in table.chains)
    if all(a is b for a, b in zip(chains, table.chains, strict=True)):
        return table
    return replace(table, chains=chains)


def _changes_mark(rule: Rule, setting: frozenset[str]) -> bool:
    action = rule.action
    if isinstance(action, SetMark):
        return True
    # Only calls return to this chain; after a goto no later rule of it runs.
    return any(isinstance(r.action, Jump) and r.action.target in setting
               for r in vmap_rules(rule))


def _chain(chain: Chain, families: tuple[Family, ...], setting: frozenset[str],
           warnings: list[Diagnostic]) -> Chain:
    indexes = {f: _Index(f) for f in families}
    kept: list[Rule] = []
    for position, rule in enumerate(chain.rules):
        boxes, exact_boxes = _boxes(vmap_rules(rule), families)
        covering = _covering(boxes, indexes, WORK_PER_RULE) if boxes else None
        if covering is not None:
            if not _made_by_merges(chain, rule, covering):
                warnings.append(_warning(chain, position, rule, covering))
            continue
        kept.append(rule)
        if _changes_mark(rule, setting):
            for index in indexes.values():
                index.forget_marks()
        if isinstance(rule.action, Vmap):
            decided = [r for r in vmap_rules(rule) if not isinstance(r.action, NON_TERMINAL)]
            ends, exact = _boxes(decided, families)
        elif isinstance(rule.action, NON_TERMINAL):
            continue
        else:  # a plain rule that ends the walk: its boxes are the ones just searched
            ends, exact = boxes, exact_boxes
        if exact:
            for family, box in ends:
                indexes[family].add(_cover(position, box, family))
    if len(kept) == len(chain.rules):
        return chain
    return replace(chain, rules=tuple(kept))


def _made_by_merges(chain: Chain, rule: Rule, covering: list[int]) -> bool:
    """Whether a cover holds a rule written after `rule`, merged into an earlier one (a merge
    may pass a rule with the same action): the source was not wrong, so no warning."""
    span = rule.span
    if span is None:
        return False
    return any(o.source is span.source and o.start > span.start
               for index in covering for o in chain.rules[index].origins)


def _warning(chain: Chain, position: int, rule: Rule, covering: list[int]) -> Diagnostic:
    """Positions by span (source file:line:col); by place in the chain where there is none."""

    def where(index: int) -> str:
        span = chain.rules[index].span
        if span is None:
            return f"rule {index + 1} of chain {chain.name}"
        return f"the rule at {span}"

    subject = "rule" if rule.span is not None else f"rule {position + 1} of chain {chain.name}"
    notes = []
    if len(covering) == 1:
        by = f"{where(covering[0])} decides every packet it matches"
    else:
        by = (f"{len(covering)} earlier rules of chain {chain.name} together decide every "
              "packet it matches")
        notes = [f"shadowed in part by {where(p)}" for p in covering[:_SHOWN]]
        if len(covering) > _SHOWN:
            notes.append(f"and by {len(covering) - _SHOWN} more rules of chain {chain.name}")
    them = "the rule that shadows it" if len(covering) == 1 else "those rules"
    notes.append(f"the rule is removed; if it should take effect, move it before {them}")
    return warning(CODE, f"{subject} is shadowed: {by}", rule.span, *notes)


__all__ = ["CODE", "WORK_PER_RULE", "remove_shadowed"]
