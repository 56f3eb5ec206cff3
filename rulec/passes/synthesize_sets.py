"""For nft: rules that dispatch on one field (or on a pair of fields) become a verdict map,
and large or repeated address and port sets become named sets.

    before:  chain FORWARD {                    after:  chain FORWARD {
               jump web in eth0                           in vmap { eth0: jump web,
               jump db in eth1                                      eth1: jump db,
               goto mgmt in eth2                                    eth2: goto mgmt,
               drop in eth3                                         eth3: drop }
               accept to { 10.0.0.1, 10.0.0.2 }            accept to @addr4_… (x2)
               accept to { 10.0.0.1, 10.0.0.2 }            ...
             }                                             }
    (the IR printer writes the map as its rules under `# vmap on in:`, a set as `$name`)

Rules that differ in two fields (`accept from 10.0.0.1 dport 22`, `drop from 10.0.0.2
dport 80`) become a concatenated map (`ip saddr . tcp dport vmap`),
as `nft -o` makes of adjacent ones.

Why these thresholds (kernel-costs.md): a packet pays about 6 ns for every linear rule it
does not match, and one map or set lookup costs about what no rule costs; so a map is never
dearer than its rules, and already MIN_MAP_RULES = 2 rules save the packets that miss the
first one a rule evaluation. `nft -o` maps two adjacent rules too (the wiki's
`ct state vmap { established : accept, related : accept, invalid : drop }`), and rulec's
output must never hold more rules than nft's own optimiser leaves.

A named set costs the kernel no more than an anonymous one, but is declared and loaded once
however many rules use it (nft's load time grows faster than linearly with the number of
anonymous sets), and its elements can later be changed in one cheap transaction: so a set of
2 or more elements used by MIN_SET_USES = 2 rules of a table is named, and so is any set of
LARGE_SET = 16 or more elements (a rule line that long is unreadable, and it is the set one
wants to update). A single element is never named: nft compares it directly, which is
cheaper than a set lookup.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from operator import attrgetter
from typing import Any

from rulec.diagnostics import Span
from rulec.ir.nodes import (
    NON_TERMINAL,
    Accept,
    Chain,
    Drop,
    Goto,
    Jump,
    MapKey,
    MapValue,
    MapVerdict,
    Match,
    Return,
    Rule,
    Ruleset,
    Table,
    Vmap,
    keyed,
)
from rulec.ir.provenance import (
    NOTED_FIELDS,
    joined_notes,
    merged_comment,
    merged_terms,
    rest_notes,
    terms_of,
)
from rulec.ir.values import (
    AddressSet,
    CtState,
    CtStates,
    Family,
    Interface,
    PortSet,
    prefixes_of,
)
from rulec.ir.verify import MAX_CONCAT_BYTES, key_bytes
from rulec.passes.analysis import (
    carried_notes,
    disjoint,
    mark_setting_chains,
    may_merge,
    may_pass,
    merge_intervals,
    sets_mark,
)
from rulec.passes.context import PassContext

MIN_MAP_RULES = 2
MIN_SET_USES = 2
LARGE_SET = 16
# Rule comparisons one rule's search for a map to join may cost before it stays where it is
# (always safe); keeps chains where many maps interleave from going quadratic.
MAX_LOOKBACK = 256
# Scans of a chain before giving up on its maps: each scan leaves out the rules of groups
# too small for a map; it rarely takes more than two.
MAX_SCANS = 4
# Places one rule may try to join, per group key: beyond them it stays where it is.
MAX_OPEN = 8
# Rules a pair-map entry may move past (each tested against it every time): a run of pairs
# written together joins whatever its length; scattered ones stay rules, which is safe.
PAIR_LOOKBACK = 32
# The match fields that may name a set (each prints as `<field> @name` in nft).
_SET_FIELDS = ("saddr", "daddr", "sport", "dport")


@dataclass(frozen=True, slots=True, kw_only=True)
class Thresholds:
    """When synthesize_sets acts; tests lower them to make small rulesets fire."""

    map_rules: int = MIN_MAP_RULES
    set_uses: int = MIN_SET_USES
    large_set: int = LARGE_SET


def synthesize_sets(ruleset: Ruleset, ctx: PassContext) -> Ruleset:
    """Verdict maps and named sets (module docstring), for targets that have them
    (`ctx.named_sets`); returns `ruleset` itself otherwise or when nothing qualifies.

    Verdict maps: rules of one chain with the same match but for one key field (in, out, from,
    to, sport, dport, ct state), no statements, no rate limit, a map verdict (accept, drop,
    return, jump, goto) and the same comment (on address and port keys: each a comment, or none;
    every entry then names its terms, rulec.ir.provenance) become one rule `<key> vmap { ... }`
    at the place of the first of them. First-match order is kept exactly: a later rule joins
    only if every rule it moves past is disjoint from it or ends the walk with the same action
    (analysis.may_merge's condition, marks included). Key values that overlap an earlier entry
    are resolved as the chain did: the part an earlier accept, drop, return or goto already
    decided is cut from the later entry; an overlap with an earlier jump (the packet comes back
    and goes on) refuses the rule. Interface keys must be exact names, address keys of one
    family, nothing negated.

    Concatenated maps come first, under the same order rule: rules equal but for two key
    fields holding unnamed values of at most LARGE_SET elements together; a pair that
    overlaps an entry is not cut but stays a rule. A map whose entries all share one key's
    value is written as that match and a one-key map.

    Named sets: see the module docstring; names are `addr4_`, `addr6_` or `ports_` and a
    hash of the content, so they do not change when unrelated rules do. Sets with both
    address families stay anonymous (the backend splits them per family).

    >>> from rulec.api import parse_text
    >>> from rulec.ir.printer import print_ruleset
    >>> r = parse_text('''table ip filter {
    ...   chain FORWARD { jump a in eth0
    ...     jump b in eth1
    ...     accept in eth2
    ...     drop in eth3 }
    ...   chain a { accept }
    ...   chain b { drop } }''')
    >>> out = synthesize_sets(r, PassContext(named_sets=True))
    >>> out.tables[0].chains[0].rules[0].action.keys
    (<MapKey.IIFNAME: 'iifname'>,)
    >>> print(print_ruleset(out), end="")
    table ip filter {
      chain FORWARD {
        # vmap on in:
        jump a in eth0
        jump b in eth1
        accept in eth2
        drop in eth3
      }
      chain a {
        accept
      }
      chain b {
        drop
      }
    }
    """
    if not ctx.named_sets:
        return ruleset
    return synthesize(ruleset, ctx.thresholds or Thresholds())


def synthesize(ruleset: Ruleset, limits: Thresholds) -> Ruleset:
    """synthesize_sets() with explicit thresholds."""
    tables = tuple(_table(t, limits) for t in ruleset.tables)
    if all(a is b for a, b in zip(tables, ruleset.tables, strict=True)):
        return ruleset
    return replace(ruleset, tables=tables)


def _table(table: Table, limits: Thresholds) -> Table:
    setting = mark_setting_chains(table)  # maps move no mark change: the same before/after
    # Pairs first: their groups leave out two fields, so more rules share one, and what
    # joins no pair map can still join a one-key map.
    chains = tuple(_chain_maps(_chain_pairs(c, setting, limits.map_rules), setting,
                               limits.map_rules) for c in table.chains)
    if any(a is not b for a, b in zip(chains, table.chains, strict=True)):
        table = replace(table, chains=chains)
    return _name_sets(table, limits)


# --------------------------------------------------------------------------------------------
# Verdict maps

_VERDICTS = (Accept, Drop, Return, Jump, Goto)
# (key, address family or None, the match without the key, _group_comment): rules with equal
# group keys differ only in the key field.
_GroupKey = tuple[MapKey, Family | None, Match, str | bool | None]


@dataclass(slots=True, eq=False)
class _Slot:
    """A rule of the output being built: one input rule, or a map forming at this place."""

    members: list[Rule]  # input rules, in chain order
    entries: list[tuple[MapValue, MapVerdict]]  # their key values, overlaps cut
    key: MapKey | None = None  # fixed by the second member
    rest: Match | None = None  # the members' common match (key unconstrained)
    sets_mark: bool = False
    positions: list[int] = field(default_factory=list)
    taken: _Taken | None = None  # the entries' values, once the key is fixed
    group: _GroupKey | None = None  # likewise


def _chain_maps(chain: Chain, setting: frozenset[str], minimum: int) -> Chain:
    """The chain with its dispatch runs as verdict maps; itself if there are none."""
    blocked: set[int] = set()
    for _ in range(MAX_SCANS):
        slots = _scan(chain.rules, blocked, setting)
        small = [p for s in slots if 1 < len(s.members) < minimum for p in s.positions]
        if not small:
            break
        # A group too small to become a map stays as rules, at their own places; the other
        # groups were checked with these rules at the group's place, so check them again.
        blocked.update(small)
    else:
        return chain  # no fixed point in reach: the chain stays as it is (always safe)
    if all(len(s.members) == 1 for s in slots):
        return chain
    return replace(chain, rules=tuple(_slot_rule(s) for s in slots))


def _scan(rules: Sequence[Rule], blocked: set[int],
          setting: frozenset[str]) -> list[_Slot]:
    slots: list[_Slot] = []
    # group key -> the slots a rule with that group key may join, in chain order.
    open_slots: dict[_GroupKey, list[int]] = {}
    alone = _alone(rules)
    for position, rule in enumerate(rules):
        keys = [] if position in blocked or alone[position] else list(_group_keys(rule))
        # Every slot it may join; one that became a map on another key is dropped for good.
        options = []
        for key, group, value in keys:
            found = open_slots.get(group)
            if found is None:
                continue
            if any(slots[i].key not in (None, key) for i in found[-MAX_OPEN:]):
                found[:] = [i for i in found if slots[i].key in (None, key)]
            options += [(index, key, group, value) for index in found[-MAX_OPEN:]]
        # A forming map first (the fewest rules left behind), then the nearest place.
        options.sort(key=lambda o: (slots[o[0]].key is None, -o[0]))
        budget = [MAX_LOOKBACK]
        for index, key, group, value in options:
            slot = slots[index]
            assert isinstance(rule.action, _VERDICTS)
            taken = _taken(slot, key)
            trimmed = taken.cut(value)
            if trimmed is None:
                continue
            cut, intervals = trimmed
            later = replace(rule, match=keyed(rule.match, (key,), (cut,)))
            if not _may_move(slots[index + 1:], later, group, intervals, setting, budget):
                if budget[0] <= 0:
                    break
                continue
            if slot.key is None:
                slot.key, slot.rest, slot.taken, slot.group = key, group[2], taken, group
                first = slot.members[0]
                source = _plain(getattr(first.match, key.value))
                slot.entries = [(_noted(source, first, source), _verdict(first))]
            taken.add(cut, intervals, isinstance(rule.action, Jump))
            slot.members.append(rule)
            slot.entries.append((_noted(cut, rule, value), rule.action))
            slot.positions.append(position)
            slot.sets_mark = slot.sets_mark or sets_mark(rule, setting)
            break
        else:
            slots.append(_Slot([rule], [], sets_mark=sets_mark(rule, setting),
                               positions=[position]))
            for _, group, _ in keys:
                open_slots.setdefault(group, []).append(len(slots) - 1)
    return slots


def _verdict(rule: Rule) -> MapVerdict:
    assert isinstance(rule.action, _VERDICTS)
    return rule.action


def _plain(value: Any) -> MapValue:
    assert isinstance(value, AddressSet | PortSet | Interface | CtStates)
    if isinstance(value, AddressSet | PortSet) and value.name is not None:
        return replace(value, name=None)
    return value


def _noted(value: MapValue, rule: Rule, source: MapValue) -> MapValue:
    """An entry's value (`source`, the rule's, or what a cut left of it) naming the terms
    of its elements, if the rule has any (rulec.ir.provenance)."""
    if rule.comment is None or not isinstance(value, AddressSet | PortSet):
        return value
    noted: MapValue = carried_notes(value, source, terms_of(rule))
    return noted


def _group_comment(keys: Sequence[MapKey], rule: Rule) -> str | bool | None:
    """What of the comment a map group keeps equal: on address and port keys, whose entries
    name their terms, only whether there is one; on other keys the comment itself."""
    if all(k.value in NOTED_FIELDS for k in keys):
        return rule.comment is None
    return rule.comment


def _map_rule(members: Sequence[Rule], keys: Sequence[MapKey], rest: Match,
              action: Vmap) -> Rule:
    """The rule a map's members become: the first, testing `rest` and acting as the map;
    its comment and terms stand for every member's, and the sets `rest` holds name the terms
    of every member's elements."""
    rule_changes: dict[str, Any] = {}
    if any(r.comment is not None for r in members):
        rule_changes = merged_comment(merged_terms(members))
        rest = replace(rest, **rest_notes(members, [k.value for k in keys]))
    return replace(members[0], match=rest, action=action, origins=_origins(members),
                   **rule_changes)


def _key_values(rule: Rule) -> list[tuple[MapKey, Family | None, MapValue]]:
    """The fields `rule` tests in a way a map entry can hold (with the address family of an
    address key); none if the rule cannot be an entry at all."""
    m = rule.match
    if not isinstance(rule.action, _VERDICTS) or rule.statements or m.limit is not None:
        return []
    out = []
    for key in MapKey:
        value = getattr(m, key.value)
        if value is None or value.negated:
            continue
        family = None
        if isinstance(value, AddressSet):
            if len(value.families) != 1:
                continue
            family = value.prefixes[0].family
        elif isinstance(value, Interface) and value.is_wildcard:
            continue
        out.append((key, family, _plain(value)))
    return out


# The match fields no map key is: every group key (one key or a pair) holds them as they are.
_NOT_KEYS = attrgetter(*(f.name for f in fields(Match)
                         if f.compare and f.name not in {k.value for k in MapKey}))


def _shared(rule: Rule) -> tuple[Any, ...]:
    """What every group key of `rule` (_group_keys, _pair_groups) holds besides key fields:
    two rules that differ here share no group, so neither can join the other's map. Of the
    comment only whether there is one: on address and port keys rules whose comments differ
    share groups (_group_comment)."""
    return (_NOT_KEYS(rule.match), rule.comment is None)


def _alone(rules: Sequence[Rule]) -> list[bool]:
    """For each rule, whether no other rule of the chain has its _shared() part. Cheap next
    to building group keys, and on policies whose rules carry their own comments it is every
    rule: synthesize_sets spent 7.7 s of a 100k-rule policy building keys no rule shared."""
    shared = [_shared(r) for r in rules]
    counts = Counter(shared)
    return [counts[s] == 1 for s in shared]


def _group_keys(rule: Rule) -> Iterable[tuple[MapKey, _GroupKey, MapValue]]:
    """The ways `rule` could be a map entry: one per key field it tests suitably."""
    for key, family, value in _key_values(rule):
        rest = replace(rule.match, **{key.value: None})
        yield key, (key, family, rest, _group_comment((key,), rule)), value


class _Taken:
    """The key values a forming map holds, to cut a new entry to what is left: disjoint
    intervals (addresses of one family, ports) sorted by start, or exact names; each knows
    whether its entry is a jump (the packet comes back and would go on to later entries)."""

    __slots__ = ("calls", "highs", "lows", "names")

    def __init__(self) -> None:
        self.lows: list[int] = []
        self.highs: list[int] = []
        self.calls: list[bool] = []
        self.names: dict[str, bool] = {}

    def cut(self, value: MapValue) -> tuple[MapValue, list[tuple[int, int]]] | None:
        """`value` without what the entries decide for good, and its intervals; None if
        nothing is left or it meets a jump's value. Logarithmic in the entries: a map of
        10k entries is built in linear time."""
        if isinstance(value, Interface):
            # An exact name is all or nothing: decided already, or met twice.
            return None if value.name in self.names else (value, [])
        own = _intervals(value)
        left: list[tuple[int, int]] = []
        for low, high in own:
            j = bisect.bisect_left(self.highs, low)  # the first that may overlap
            while j < len(self.lows) and self.lows[j] <= high:
                if self.calls[j]:
                    return None
                if self.lows[j] > low:
                    left.append((low, self.lows[j] - 1))
                low = self.highs[j] + 1
                if low > high:
                    break
                j += 1
            if low <= high:
                left.append((low, high))
        if not left:
            return None
        if left == own:
            return value, left
        if isinstance(value, PortSet):
            return PortSet(tuple(left)), left
        if isinstance(value, CtStates):
            return CtStates(frozenset(_STATES[i] for low, high in left
                                      for i in range(low, high + 1))), left
        assert isinstance(value, AddressSet)
        family = value.prefixes[0].family
        return AddressSet(tuple(p for low, high in left
                                for p in prefixes_of(family, low, high))), left

    def meets(self, value: MapValue, intervals: list[tuple[int, int]]) -> bool:
        """Whether `value` (its intervals given) shares a packet with an entry."""
        if isinstance(value, Interface):
            return value.name in self.names
        for low, high in intervals:
            j = bisect.bisect_left(self.highs, low)
            if j < len(self.lows) and self.lows[j] <= high:
                return True
        return False

    def add(self, value: MapValue, intervals: list[tuple[int, int]], call: bool) -> None:
        """Take the values cut() left (disjoint from every value held)."""
        if isinstance(value, Interface):
            self.names[value.name] = call
            return
        for low, high in intervals:
            at = bisect.bisect_left(self.lows, low)
            self.lows.insert(at, low)
            self.highs.insert(at, high)
            self.calls.insert(at, call)


_STATES = tuple(CtState)  # a state's interval is its index here


def _intervals(value: MapValue) -> list[tuple[int, int]]:
    if isinstance(value, PortSet):
        return merge_intervals(value.ranges)
    if isinstance(value, CtStates):
        return merge_intervals((i, i) for i, s in enumerate(_STATES) if s in value.states)
    assert isinstance(value, AddressSet)
    return merge_intervals((p.first, p.last) for p in value.prefixes)


def _taken(slot: _Slot, key: MapKey) -> _Taken:
    """What the slot holds if its key is (or becomes) `key`."""
    if slot.taken is not None:
        return slot.taken
    first = slot.members[0]
    value = _plain(getattr(first.match, key.value))
    taken = _Taken()
    taken.add(value, [] if isinstance(value, Interface) else _intervals(value),
              isinstance(first.action, Jump))
    return taken


def _may_move(between: Sequence[_Slot], later: Rule, group: _GroupKey,
              intervals: list[tuple[int, int]], setting: frozenset[str],
              budget: list[int]) -> bool:
    """Whether `later` (of `group`, its key value cut to `intervals`) may act before the
    rules of `between` (analysis.may_merge's rule): each is disjoint from it, or it ends the
    walk and they end it the same way; without marks if a mark may change on the way. Each
    comparison spends one unit of `budget`; none left, the answer is no."""
    if len(between) > budget[0]:
        budget[0] = 0
        return False
    terminal = not isinstance(later.action, NON_TERMINAL)
    marks = not any(s.sets_mark for s in between) and (
        terminal or not sets_mark(later, setting))
    for slot in between:
        budget[0] -= 1
        if budget[0] < 0:
            return False
        if slot.group == group and slot.taken is not None:
            # A map of the same group: the same match but for the key, so it meets `later`
            # exactly where an entry's value does.
            value = getattr(later.match, group[0].value)
            if not slot.taken.meets(value, intervals):
                continue
        elif slot.rest is not None and disjoint(slot.rest, later.match, marks=marks):
            continue  # a map that cannot meet it, whatever its key
        # The members as written: their values hold the cut ones, so this is the safe side.
        for k in slot.members:
            budget[0] -= 1
            if budget[0] < 0:
                return False
            if not may_pass(later, k, terminal=terminal, marks=marks):
                return False
    return True


def _slot_rule(slot: _Slot) -> Rule:
    if slot.key is None or slot.rest is None:
        return slot.members[0]
    return _map_rule(slot.members, (slot.key,), slot.rest, Vmap.on(slot.key, slot.entries))


def _origins(members: Sequence[Rule]) -> tuple[Span, ...]:
    """A map rule's origins: the first member's, then every other member's span and origins."""
    first, others = members[0], members[1:]
    origins = [*first.origins]
    for other in others:
        origins.extend((other.span,) if other.span is not None else ())
        origins.extend(other.origins)
    return tuple(origins)


# --------------------------------------------------------------------------------------------
# Concatenated maps: rules equal but for two or more key fields
# (`ip saddr . ip daddr . tcp dport vmap { ... }`)

# (the keys, their address families, the match without them, _group_comment)
_PairGroup = tuple[tuple[MapKey, ...], tuple[Family | None, ...], Match, str | bool | None]

class _ConcatIndex:
    """The entries of a forming concatenated map, to tell whether a new entry overlaps one:
    entries are grouped by their exact first value; first values that differ must not
    overlap (else the new entry stays a rule, which is always safe), and under one first
    value the rest of the entries must not either, by the same rule one field on.
    Logarithmic per field, like _Taken."""

    __slots__ = ("by_first", "firsts")

    def __init__(self) -> None:
        self.firsts = _Taken()
        self.by_first: dict[MapValue, _ConcatIndex | None] = {}

    def fits(self, values: Sequence[MapValue]) -> bool:
        first = values[0]
        if first in self.by_first:
            rest = self.by_first[first]
            return rest is not None and rest.fits(values[1:])
        return not self.firsts.meets(first, _spans(first))

    def add(self, values: Sequence[MapValue]) -> None:
        first = values[0]
        if first not in self.by_first:
            self.firsts.add(first, _spans(first), False)
            self.by_first[first] = _ConcatIndex() if len(values) > 1 else None
        rest = self.by_first[first]
        if rest is not None:
            rest.add(values[1:])


def _spans(value: MapValue) -> list[tuple[int, int]]:
    return [] if isinstance(value, Interface) else _intervals(value)


@dataclass(slots=True, eq=False)
class _PairSlot:
    members: list[Rule]
    group: _PairGroup | None = None
    index: _ConcatIndex | None = None


def _elements(value: MapValue) -> int:
    if isinstance(value, AddressSet):
        return len(value.prefixes)
    if isinstance(value, PortSet):
        return len(value.ranges)
    if isinstance(value, CtStates):
        return len(value.states)
    return 1


def _pair_groups(rule: Rule) -> list[tuple[_PairGroup, tuple[MapValue, ...]]]:
    """The sets of two or more key fields `rule` could be an entry of, the most fields
    first (more rules share a group that leaves out more fields; a field the same in every
    entry is taken out of the map again by _pair_rule). An entry's values multiply into map
    elements, so their product may not pass LARGE_SET (beyond, a set lookup per rule is the
    better deal), nor the key nft's MAX_CONCAT_BYTES; a set the frontend named, to update it
    on its own, stays out (it would vanish into the map)."""
    found = [(k, f, v) for k, f, v in _key_values(rule)
             if not (isinstance(raw := getattr(rule.match, k.value), AddressSet | PortSet)
                     and raw.name is not None)]
    out = []
    for size in range(len(found), 1, -1):
        for combo in itertools.combinations(found, size):
            if math.prod(_elements(v) for _, _, v in combo) > LARGE_SET:
                continue
            if sum(key_bytes(k, f) for k, f, _ in combo) > MAX_CONCAT_BYTES:
                continue
            keys = tuple(k for k, _, _ in combo)
            rest = replace(rule.match, **{k.value: None for k in keys})
            out.append(((keys, tuple(f for _, f, _ in combo), rest,
                         _group_comment(keys, rule)), tuple(v for _, _, v in combo)))
    return out


def _chain_pairs(chain: Chain, setting: frozenset[str], minimum: int) -> Chain:
    """The chain with runs of rules that differ in two or more key fields as concatenated
    maps (what `nft -o` builds from adjacent rules; here, as for one key, a rule joins across
    every rule it may pass under analysis.may_merge). Overlapping entries are not cut: a rule
    whose entry meets another stays where it is. Itself if no map forms."""
    slots: list[_PairSlot] = []
    open_slots: dict[_PairGroup, list[int]] = {}
    for rule, alone in zip(chain.rules, _alone(chain.rules), strict=True):
        groups = [] if alone else _pair_groups(rule)
        joined = False
        for group, values in groups:
            for index in reversed(open_slots.get(group, [])[-MAX_OPEN:]):
                slot = slots[index]
                if slot.group not in (None, group):
                    continue  # it became a map on other keys
                index_ = slot.index if slot.index is not None else _first_index(slot, group)
                if not index_.fits(values):
                    continue
                between = _rules_after(slots, index)
                if between is None or not may_merge(slot.members[0], between, rule, setting):
                    continue
                slot.group, slot.index = group, index_
                index_.add(values)
                slot.members.append(rule)
                joined = True
                break
            if joined:
                break
        if not joined:
            slots.append(_PairSlot([rule]))
            for group, _ in groups:
                open_slots.setdefault(group, []).append(len(slots) - 1)
    if all(len(s.members) < max(minimum, 2) for s in slots):
        return chain
    rules: list[Rule] = []
    for slot in slots:
        if slot.group is None or len(slot.members) < max(minimum, 2):
            rules.extend(slot.members)  # too small: its rules in their own places
        else:
            rules.append(_pair_rule(slot, slot.group))
    return replace(chain, rules=tuple(rules))


def _first_index(slot: _PairSlot, group: _PairGroup) -> _ConcatIndex:
    """The index of a slot's lone first rule, as an entry of `group`."""
    first = slot.members[0]
    index = _ConcatIndex()
    index.add([_plain(getattr(first.match, k.value)) for k in group[0]])
    return index


def _rules_after(slots: Sequence[_PairSlot], index: int) -> list[Rule] | None:
    """The rules of the slots after `index`, or None if there are more than PAIR_LOOKBACK."""
    between: list[Rule] = []
    for slot in slots[index + 1:]:
        between.extend(slot.members)
        if len(between) > PAIR_LOOKBACK:
            return None
    return between


def _pair_rule(slot: _PairSlot, group: _PairGroup) -> Rule:
    keys, _, rest, _ = group
    members = slot.members
    entries = [(tuple(_noted(v := _plain(getattr(r.match, k.value)), r, v) for k in keys),
                _verdict(r)) for r in members]
    # A key the same in every entry reads better as a plain match: take it out of the map
    # (one key left, a plain map).
    fixed: dict[str, Any] = {}
    varying: list[int] = []
    for i, key in enumerate(keys):
        column = [values[i] for values, _ in entries]
        if len(varying) + (len(keys) - i) > 1 and len(set(column)) == 1:
            value = column[0]
            if isinstance(value, AddressSet | PortSet) and value.notes:
                value = joined_notes(column, [terms_of(r) for r in members])
            fixed[key.value] = value
        else:
            varying.append(i)
    vmap = Vmap(tuple(keys[i] for i in varying),
                tuple((tuple(values[i] for i in varying), verdict) for values, verdict in entries))
    return _map_rule(members, keys, replace(rest, **fixed), vmap)


# --------------------------------------------------------------------------------------------
# Named sets

# (kind, number of elements, canonical text of the elements): equal sets, equal contents.
_Content = tuple[str, int, str]


def _content(value: AddressSet | PortSet) -> _Content | None:
    if isinstance(value, PortSet):
        text = ",".join(f"{low}-{high}" for low, high in value.ranges)
        return ("ports", len(value.ranges), text)
    families = value.families
    if len(families) != 1:
        return None  # nft has no set of both families; the backend splits the rule
    kind = "addr4" if Family.IP in families else "addr6"
    # Integers, not str(prefix): ipaddress would cost more than the whole pass.
    return (kind, len(value.prefixes),
            ",".join(f"{p.network:x}/{p.length}" for p in value.prefixes))


def _name_sets(table: Table, limits: Thresholds) -> Table:
    uses: Counter[_Content] = Counter()
    given: dict[_Content, set[str]] = {}  # names a frontend already chose (e.g. k8s peers)
    # A set of one element is never named (below) unless large_set is 1: then it need not be
    # rendered as text to find that out, twice per rule.
    singles = limits.large_set <= 1
    for chain in table.chains:
        for rule in chain.rules:
            for name in _SET_FIELDS:
                value = getattr(rule.match, name)
                if value is not None and (singles or _many(value)) and (
                        content := _content(value)) is not None:
                    uses[content] += 1
                    if value.name is not None:
                        given.setdefault(content, set()).add(value.name)
    chosen = sorted(c for c, n in uses.items()
                    if c[1] >= limits.large_set or (c[1] >= 2 and n >= limits.set_uses))
    if not chosen:
        return table
    names: dict[_Content, str] = {}
    # A name a frontend gave reads better in review than a digest: keep the first (sorted)
    # one, unless another content already holds it.
    taken: set[str] = set()
    for content in chosen:
        kept = next((n for n in sorted(given.get(content, ())) if n not in taken), None)
        if kept is not None:
            taken.add(kept)
            names[content] = kept
    for content in chosen:
        if content in names:
            continue
        kind, _, text = content
        digest = hashlib.sha256(f"{kind}:{text}".encode()).hexdigest()
        length = 8  # 32 bits: a clash in one table is unlikely, and resolved here
        while (name := f"{kind}_{digest[:length]}") in taken:
            length *= 2
        taken.add(name)
        names[content] = name
    chains = tuple(_named_chain(c, names, singles) for c in table.chains)
    if all(a is b for a, b in zip(chains, table.chains, strict=True)):
        return table
    return replace(table, chains=chains)


def _many(value: AddressSet | PortSet) -> bool:
    return len(value.prefixes if isinstance(value, AddressSet) else value.ranges) > 1


def _named_chain(chain: Chain, names: dict[_Content, str], singles: bool) -> Chain:
    rules = tuple(_named_rule(r, names, singles) for r in chain.rules)
    if all(a is b for a, b in zip(rules, chain.rules, strict=True)):
        return chain
    return replace(chain, rules=rules)


def _named_rule(rule: Rule, names: dict[_Content, str], singles: bool) -> Rule:
    changes: dict[str, Any] = {}
    for name in _SET_FIELDS:
        value = getattr(rule.match, name)
        if value is None or not (singles or _many(value)) or (
                content := _content(value)) is None:
            continue
        wanted = names.get(content)
        if wanted is not None and value.name != wanted:
            changes[name] = replace(value, name=wanted)
    if not changes:
        return rule
    return replace(rule, match=replace(rule.match, **changes))


__all__ = ["LARGE_SET", "MIN_MAP_RULES", "MIN_SET_USES", "Thresholds", "synthesize",
           "synthesize_sets"]
