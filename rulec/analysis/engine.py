"""The symbolic engine: what one or two rulesets do to every packet at once.

It partitions packet space into classes on which every rule's match is constant, field by
field (a decision diagram built on the fly): at each node the rules still alive are those
whose tests on the fields split so far hold for the class, each field's line is cut where
the alive rules' tests start and end, and the pieces with the same set of rules whose test
holds become one child. A rule whose tests all hold and whose action ends its chain leaves
the rules after it dead. At a leaf the reference evaluator (rulec.ir.evaluate) runs on one
representative packet over the alive rules only: it is the specification, and it is exact
for the whole class because

- a dead rule matches no packet of the class (its test failed on a field nothing rewrites
  before it is evaluated: a rule that may see a DNATed destination, a set mark or an SNATed
  source keeps its test of that field alive, yet still splits on it);
- every alive rule's test is constant on the class, and so is every rewrite: DNAT, SNAT,
  redirect and masquerade targets, MSS clamps and the host's addresses are cut points too, so
  a field a rewrite keeps differs from one it sets on every packet of the class or none.

Comparing two rulesets walks both at once, and a node where both sides have the same alive
rules in the same chains and order is the same on every packet below it: the walk stops
there. So a one-rule change costs about what the rules that overlap the change cost.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from rulec.analysis.space import (
    ABSENT,
    CT_STATES,
    PATH_INCOMING,
    PATH_LOCAL,
    TCP_FLAGS,
    AnalysisError,
    Context,
    F,
    Marks,
    Names,
    flags_of,
    interfaces,
    mark_masks,
    tests,
    unknown_conditions,
)
from rulec.ir import nodes as ir
from rulec.ir.evaluate import Host, Outcome, Packet, Path, evaluate
from rulec.ir.intervals import Intervals, contains, merge, points
from rulec.ir.values import (
    PORT_PROTOCOLS,
    TCP,
    UDP,
    AddrType,
    AddrTypeKind,
    CtState,
    Family,
    Mark,
)

# Actions after which a chain goes on no further for the packet.
_ENDS_CHAIN = (ir.Accept, ir.Drop, ir.Reject, ir.Return, ir.Goto, *ir.NAT_ACTIONS)
_REWRITES_DESTINATION = (ir.Dnat, ir.Redirect)
_REWRITES_SOURCE = (ir.Snat, ir.Masquerade)
# The hooks a packet passes on each path; incoming packets for this host end in INPUT.
_HOOKS_LOCAL = frozenset({ir.Hook.OUTPUT, ir.Hook.POSTROUTING})
_HOOKS_TO_HOST = frozenset({ir.Hook.PREROUTING, ir.Hook.INPUT})
_HOOKS_THROUGH = frozenset({ir.Hook.PREROUTING, ir.Hook.FORWARD, ir.Hook.POSTROUTING})
_BEFORE_DNAT = {(ir.TableKind.RAW, ir.Hook.PREROUTING), (ir.TableKind.MANGLE, ir.Hook.PREROUTING),
                (ir.TableKind.RAW, ir.Hook.OUTPUT), (ir.TableKind.MANGLE, ir.Hook.OUTPUT)}
# A test of 'this host's address' by the values it lets through (both: no test).
_LOCAL_TESTS: dict[frozenset[int], Intervals | None] = {
    frozenset(): (), frozenset({0}): ((0, 0),), frozenset({1}): ((1, 1),),
    frozenset({0, 1}): None}
_MULTICAST = {Family.IP: (0xE0000000, 0xEFFFFFFF), Family.IP6: (0xFF << 120, (1 << 128) - 1)}
_BROADCAST = 0xFFFFFFFF
_LOOPBACK = {Family.IP: 0x7F000001, Family.IP6: 1}
# Witness addresses when the class allows them: RFC 5737 and RFC 3849 documentation ranges.
_NICE_SOURCE = {Family.IP: 0xCB007107, Family.IP6: (0x20010DB8 << 96) | 0x7}  # 203.0.113.7
_NICE_DESTINATION = {Family.IP: 0xC0000201, Family.IP6: (0x20010DB8 << 96) | 0x1}  # 192.0.2.1


def interface_address(family: Family, index: int) -> int:
    """The address the engine gives the interface with this index (masquerade and redirect
    use it): 0.0.0.0/8 and 100::/64 hold no real host's address, so no rule confuses them."""
    return index if family is Family.IP else (0x100 << 112) | index


@dataclass(slots=True)
class _Entry:
    """A rule (verdict maps become one rule per entry) of one side, with its tests."""

    side: int
    table: int
    chain: str
    position: int
    rule: ir.Rule | None  # None: the chain's policy (a base chain's end)
    tests: dict[F, Intervals]
    # Fields whose test the rule may see rewritten (by an earlier DNAT, SNAT or mark): the
    # test splits but never kills.
    rewritten: frozenset[F]
    key: int  # equal keys: the same rule of the same chain (for comparing two sides)
    hooks: frozenset[ir.Hook]
    ends_chain: bool
    # The fields whose tests must hold for every packet of a class before the rule is
    # known to match all of them (its tests and its address types).
    needs: frozenset[F] = frozenset()
    group: tuple[int, int, str] = (0, 0, "")  # (side, table, chain)

    def __post_init__(self) -> None:
        self.group = (self.side, self.table, self.chain)
        if self.rule is None:
            return
        needs = set(self.tests)
        if self.rule.match.dst_type is not None:
            needs.add(F.DADDR_LOCAL)
        if self.rule.match.src_type is not None:
            needs.add(F.SADDR_LOCAL)
        self.needs = frozenset(needs)


@dataclass(frozen=True, slots=True)
class Leaf:
    """A class of packets and what each side does to it."""

    cell: tuple[Intervals | None, ...]  # by F: the values of the class (None: not split)
    packet: Packet  # a representative: every packet of the class has the same outcomes
    host: Host
    outcomes: tuple[Outcome, ...]  # one per side


@dataclass
class _Side:
    ruleset: ir.Ruleset
    tables: list[ir.Table]
    dnat: bool
    snat: bool
    marks: bool
    entries: list[int] = field(default_factory=list)
    # (table index, chain name) -> the hooks whose base chains reach the chain
    reach: dict[tuple[int, str], frozenset[ir.Hook]] = field(default_factory=dict)


@dataclass
class Engine:
    """One family of one or two rulesets, ready to walk."""

    family: Family
    sides: list[_Side]
    entries: list[_Entry]
    ctx: Context
    splitters: dict[F, list[Intervals]]
    order: list[F]
    # A node whose sides' alive rules are the same needs no walk below it.
    compare: bool = False
    dst_types: bool = False  # some rule tests the destination's address type
    src_types: bool = False
    nodes: int = 0
    leaves: int = 0
    budget: int = 20_000_000  # nodes: about an hour's walk; beyond it the engine gives up
    # By entry: the depth from which its tests all hold on the classes it is alive in, if it
    # ends its chain (None: never known to decide; a rewritten field's test never does).
    decides_at: list[int | None] = field(default_factory=list)
    # By (side, table, chain name): the chain with no rules, what a leaf's pruned ruleset
    # holds for a chain none of whose rules is alive.
    empty_chains: dict[tuple[int, int, str], ir.Chain] = field(default_factory=dict)
    rank: list[int] = field(default_factory=list)  # by entry: its place in the walk's order

    by_field: dict[F, dict[int, Intervals]] = field(default_factory=dict)  # f -> entry -> test
    # By depth: the entries that come to decide there (what a truncation there looks for).
    deciders: dict[int, frozenset[int]] = field(default_factory=dict)
    # (entry, field, routing, address kind) -> its derived test (path, routing, address type)
    derived: dict[tuple[int, F, bool, AddrTypeKind | None], Intervals | None] = field(
        default_factory=dict)

    def __post_init__(self) -> None:
        depth = {f: d for d, f in enumerate(self.order)}
        self.decides_at = [
            max((depth[f] for f in e.needs), default=-1)
            if e.ends_chain and not e.needs & e.rewritten else None
            for e in self.entries]
        by_depth: dict[int, set[int]] = defaultdict(set)
        for i, at in enumerate(self.decides_at):
            if at is not None:
                by_depth[at].add(i)
        self.deciders = {d: frozenset(v) for d, v in by_depth.items()}
        self.by_field = {f: {i: e.tests[f] for i, e in enumerate(self.entries) if f in e.tests}
                         for f in F}

    @classmethod
    def build(cls, rulesets: Sequence[ir.Ruleset], family: Family) -> Engine:
        plain: list[list[tuple[int, ir.Table, ir.Chain, int, ir.Rule]]] = []
        all_rules: list[ir.Rule] = []
        for ruleset in rulesets:
            rows = []
            for t, table in enumerate(ruleset.tables):
                if table.family not in (family, Family.INET):
                    continue
                for chain in table.chains:
                    position = 0
                    for rule in chain.rules:
                        for flat in ir.vmap_rules(rule):
                            rows.append((t, table, chain, position, flat))
                            all_rules.append(flat)
                            position += 1
            plain.append(rows)
        names = Names(interfaces(r.match for r in all_rules))
        masks = mark_masks(all_rules)
        ctx = Context(family, names, Marks(masks) if masks else None,
                      any(r.match.limit is not None for r in all_rules),
                      any(isinstance(r.action, ir.SetMss) for r in all_rules),
                      any(r.match.ct_orig_dport is not None for r in all_rules),
                      unknown_conditions(all_rules))
        keys: dict[object, int] = {}
        entries: list[_Entry] = []
        sides = []
        for s, (ruleset, rows) in enumerate(zip(rulesets, plain, strict=True)):
            actions = [r.action for *_, r in rows]
            side = _Side(ruleset, list(ruleset.tables),
                         dnat=any(isinstance(a, _REWRITES_DESTINATION) for a in actions),
                         snat=any(isinstance(a, _REWRITES_SOURCE) for a in actions),
                         marks=any(isinstance(a, ir.SetMark) for a in actions))
            reach = side.reach = _reachable_hooks(ruleset, family)
            for t, table, chain, position, rule in rows:
                found = tests(rule.match, ctx)
                if found is None:
                    continue  # matches no packet of this family
                hooks = reach.get((t, chain.name), frozenset())
                if not hooks:
                    continue  # in a chain no hook reaches
                rewritten = _rewritten(side, table, chain, hooks)
                where = (table.kind, table.family, table.name, chain.name)
                key = keys.setdefault((where, rule.match, rule.action, rule.statements),
                                      len(keys))
                entry = _Entry(s, t, chain.name, position, rule, found, rewritten, key, hooks,
                               isinstance(rule.action, _ENDS_CHAIN))
                side.entries.append(len(entries))
                entries.append(entry)
            # Each base chain's policy ends it: an entry every packet reaching it matches,
            # so two sides with different policies never look the same.
            for t, table in enumerate(ruleset.tables):
                if table.family not in (family, Family.INET):
                    continue
                for chain in table.chains:
                    if chain.hook is None:
                        continue
                    policy = (table.kind, table.family, table.name, chain.name, chain.hook,
                              chain.policy)
                    key = keys.setdefault(policy, len(keys))
                    side.entries.append(len(entries))
                    entries.append(_Entry(s, t, chain.name, 1 << 62, None, {}, frozenset(), key,
                                          frozenset({chain.hook}), True))
            side.entries.sort(key=lambda i: (entries[i].table, entries[i].chain,
                                             entries[i].position))
            sides.append(side)
        types = (any(r.match.dst_type is not None for r in all_rules),
                 any(r.match.src_type is not None for r in all_rules))
        return cls(family, sides, entries, ctx, _splitters(sides, ctx, family, types),
                   _order(entries, ctx), dst_types=types[0], src_types=types[1])

    # ------------------------------------------------------------------ the walk

    def leaves_of(self) -> Iterator[Leaf]:
        """Every class (for comparing: every class whose sides may differ) with outcomes."""
        alive = [i for side in self.sides for i in side.entries]
        self.rank = [0] * len(self.entries)
        for r, i in enumerate(alive):
            self.rank[i] = r
        cell: list[Intervals | None] = [None] * len(F)
        yield from self._walk(0, self._truncate(alive, -1), cell)

    def _walk(self, depth: int, alive: list[int], cell: list[Intervals | None]
              ) -> Iterator[Leaf]:
        self.nodes += 1
        if self.nodes > self.budget:
            raise AnalysisError(
                f"the rulesets split packet space into more than {self.budget:,} pieces "
                "before the comparison ended; the engine stops rather than run for hours "
                "(compare smaller parts, e.g. one table's files at a time)")
        if self.compare and self._same(alive):
            return
        if depth == len(self.order):
            leaf = self._leaf(alive, cell)
            if leaf is not None:
                self.leaves += 1
                yield leaf
            return
        fld = self.order[depth]
        domain = self._domain(fld, cell)
        if domain is None:  # the field is not split: no alive rule tests it
            assert not any(fld in self.entries[i].tests for i in alive), fld
            cell[fld] = None
            yield from self._walk(depth + 1, alive, cell)
            return
        testers: list[tuple[int, Intervals]] = []
        if fld is F.PATH or fld is F.DADDR_LOCAL or fld is F.SADDR_LOCAL:
            for i in alive:
                test = self._test(i, fld, cell)
                if test is not None:
                    testers.append((i, test))
        else:
            of_field = self.by_field[fld]
            testers = [(i, t) for i in alive if (t := of_field.get(i)) is not None]
        splits = self.splitters.get(fld, ())
        if not testers and not splits:
            cell[fld] = domain
            yield from self._walk(depth + 1, alive, cell)
            return
        killable = {i for i, _ in testers if fld not in self.entries[i].rewritten}
        # What no piece kills, once; each piece adds the killable rules whose test holds
        # (scanning every alive rule per piece made a 10k-rule walk quadratic).
        survivors = [i for i in alive if i not in killable]
        rank = self.rank.__getitem__
        for signature, values in _classes(domain, testers, splits):
            cell[fld] = values
            held = sorted((i for i in signature if i in killable), key=rank)
            kept = list(heapq.merge(survivors, held, key=rank)) if held else survivors
            yield from self._walk(depth + 1, self._truncate(kept, depth), cell)
        cell[fld] = None

    def _truncate(self, alive: list[int], depth: int) -> list[int]:
        """Drop the rules after one that decides every packet of the class in its chain."""
        # Rules that came to decide at an earlier depth had their followers dropped then,
        # and `alive` is a part of what that truncation kept: only new deciders matter.
        if self.deciders.get(depth, frozenset()).isdisjoint(alive):
            return alive
        decides_at = self.decides_at
        # Chain -> whether its policy is still met: a return, or a goto whose chain returns,
        # leaves a base chain's later rules but goes on to its policy.
        ended: dict[tuple[int, int, str], bool] = {}
        out = []
        for i in alive:
            entry = self.entries[i]
            if entry.group in ended and not (entry.rule is None and ended[entry.group]):
                continue
            out.append(i)
            # Which hooks reach the chain does not matter: whatever path a packet of the
            # class comes by, in this chain it meets this rule before the later ones.
            at = decides_at[i]
            if at is not None and at <= depth and entry.group not in ended:
                ended[entry.group] = entry.rule is not None and isinstance(
                    entry.rule.action, ir.Return | ir.Goto)
        return out

    def _same(self, alive: list[int]) -> bool:
        """Whether both sides' alive rules are the same rules in the same chains and order
        (policies included): then every packet of the class fares alike on both."""
        if len(self.sides) != 2:
            return False
        keys: tuple[list[int], list[int]] = ([], [])
        for i in alive:
            entry = self.entries[i]
            keys[entry.side].append(entry.key)
        return keys[0] == keys[1]

    def reach(self, table: int, side: int = 0) -> dict[str, frozenset[ir.Hook]]:
        """Chain name -> the hooks that reach it, for one table of a side."""
        return {name: hooks for (t, name), hooks in self.sides[side].reach.items()
                if t == table}

    def tests_of(self, rule: ir.Rule) -> dict[F, Intervals] | None:
        """A rule's tests on the engine's lines (None: it matches no packet of the family)."""
        return tests(rule.match, self.ctx)

    def domain(self, fld: F, cell: list[Intervals | None]) -> Intervals | None:
        """The values a field takes given the protocol and path already in `cell`."""
        return self._domain(fld, cell)

    def _domain(self, fld: F, cell: list[Intervals | None]) -> Intervals | None:
        if fld is F.PROTO or fld is F.PATH:
            return ((0, self.ctx.top(fld)),)
        proto = cell[F.PROTO]
        assert proto is not None
        incoming = cell[F.PATH] == ((PATH_INCOMING, PATH_INCOMING),)
        match fld:
            case F.IIF:
                return ((1, self.ctx.names.top),) if incoming else ((0, 0),)
            case F.OIF:
                return ((0, self.ctx.names.top),) if incoming else ((1, self.ctx.names.top),)
            case F.DADDR_LOCAL:  # routing needs it for incoming packets
                return ((0, 1),) if incoming or self.dst_types else ((0, 0),)
            case F.SADDR_LOCAL:
                return ((0, 1),) if self.src_types else ((0, 0),)
        return self.ctx.domain(fld, proto)

    def _test(self, i: int, fld: F, cell: list[Intervals | None]) -> Intervals | None:
        entry = self.entries[i]
        if fld is not F.PATH and fld is not F.DADDR_LOCAL and fld is not F.SADDR_LOCAL:
            return entry.tests.get(fld)
        # Derived tests depend on the rule, whether routing applies and the address's kind:
        # worked out once per combination (a k8s walk asked 2M times).
        match = entry.rule.match if entry.rule is not None else ir.ANY
        routing = fld is F.DADDR_LOCAL and cell[F.PATH] == ((PATH_INCOMING, PATH_INCOMING),)
        wanted = match.dst_type if fld is F.DADDR_LOCAL else match.src_type
        address = F.DADDR if fld is F.DADDR_LOCAL else F.SADDR
        values = cell[address] if wanted is not None and fld is not F.PATH else None
        kind = _kind(self.family, values[0][0]) if values else None
        key = (i, fld, routing, kind)
        if key not in self.derived:
            if fld is F.PATH:
                self.derived[key] = _path_test(entry.hooks)
            else:
                self.derived[key] = self._local_test(entry, cell, wanted, address,
                                                     routing=routing)
        return self.derived[key]

    def _local_test(self, entry: _Entry, cell: list[Intervals | None],
                    wanted: object, address: F, *, routing: bool) -> Intervals | None:
        """A test of 'the address is this host's': from the rule's address type, and for
        incoming packets from routing (INPUT rules see only packets for this host)."""
        values = {0, 1}
        # PREROUTING comes before routing: its rules see both kinds of packets.
        if routing and not self.sides[entry.side].dnat and ir.Hook.PREROUTING not in entry.hooks:
            if entry.hooks <= _HOOKS_TO_HOST:
                values &= {1}
            elif entry.hooks <= _HOOKS_THROUGH:
                values &= {0}
        if wanted is not None:
            assert isinstance(wanted, AddrType)
            addresses = cell[address]
            assert addresses is not None
            other = _kind(self.family, addresses[0][0])
            values = {v for v in values
                      if ((AddrTypeKind.LOCAL if v else other) is wanted.kind)
                      != wanted.negated}
        return _LOCAL_TESTS[frozenset(values)]

    # ------------------------------------------------------------------ leaves

    def _leaf(self, alive: list[int], cell: list[Intervals | None]) -> Leaf | None:
        found = self.representative(cell)
        if found is None:
            return None
        packet, host = found
        outcomes = []
        for s, side in enumerate(self.sides):
            pruned = self._pruned(s, side, [i for i in alive if self.entries[i].side == s])
            outcomes.append(evaluate(pruned, packet, host))
        return Leaf(tuple(cell), packet, host, tuple(outcomes))

    def _empty(self, side: int, table: int, chain: ir.Chain) -> ir.Chain:
        found = self.empty_chains.get((side, table, chain.name))
        if found is None:
            found = self.empty_chains[(side, table, chain.name)] = replace(chain, rules=())
        return found

    def _pruned(self, s: int, side: _Side, alive: list[int]) -> ir.Ruleset:
        by_chain: dict[tuple[int, str], list[ir.Rule]] = defaultdict(list)
        for i in alive:
            entry = self.entries[i]
            if entry.rule is not None:
                by_chain[(entry.table, entry.chain)].append(entry.rule)
        tables = []
        for t, table in enumerate(side.tables):
            if table.family not in (self.family, Family.INET):
                continue
            # The base chains and the chains their alive rules jump or go to: the evaluator
            # enters no other (a chain alive rules of no reached chain call is left out).
            wanted = {c.name for c in table.chains if c.is_base}
            todo = list(wanted)
            while todo:
                for rule in by_chain.get((t, todo.pop()), ()):
                    for name in ir.targets(rule.action):
                        if name not in wanted:
                            wanted.add(name)
                            todo.append(name)
            chains = tuple(replace(c, rules=tuple(by_chain[(t, c.name)]))
                           if (t, c.name) in by_chain else self._empty(s, t, c)
                           for c in table.chains if c.is_base or c.name in wanted)
            tables.append(replace(table, chains=chains))
        return replace(side.ruleset, tables=tuple(tables))

    def representative(self, cell: Sequence[Intervals | None]) -> tuple[Packet, Host] | None:
        """A packet of the class, as ordinary as the class allows, and the host around it."""
        family = self.family
        proto = _pick(cell[F.PROTO], (TCP, UDP, self.ctx.icmp, *sorted(PORT_PROTOCOLS), 47))
        assert proto is not None
        local_path = cell[F.PATH] == ((PATH_LOCAL, PATH_LOCAL),)
        saddr = _address(cell[F.SADDR], _NICE_SOURCE[family])
        daddr = _address(cell[F.DADDR], _NICE_DESTINATION[family])
        sport = _pick(cell[F.SPORT], (40000, 50000, 1024, 1))
        dport = _pick(cell[F.DPORT], (80, 443, 22, 53, 8080, 1))
        names = self.ctx.names
        iif = names.names[_pick(cell[F.IIF], ()) or 0]
        to_host = _pick(cell[F.DADDR_LOCAL], (1,)) == 1
        from_host = _pick(cell[F.SADDR_LOCAL], ()) == 1
        if saddr == daddr and to_host != from_host:
            # One address cannot be this host's and not: take another of either class.
            other = _other(cell[F.SADDR], saddr)
            if other is not None:
                saddr = other
            elif (other := _other(cell[F.DADDR], daddr)) is not None:
                daddr = other
            else:
                return None
        # A packet for this host has no output interface; any other has one if it can.
        oifs = cell[F.OIF]
        assert oifs is not None
        oif_index = 0 if to_host and not local_path and contains(oifs, 0) else next(
            (v for low, high in oifs for v in range(max(low, 1), high + 1)), 0)
        oif = names.names[oif_index]
        state = _pick(cell[F.CT_STATE], (CT_STATES.index(s) for s in (
            CtState.NEW, CtState.ESTABLISHED, CtState.RELATED)))
        flags = _pick(cell[F.TCP_FLAGS], (2, 16, 18))  # syn, ack, syn+ack
        icmp = _pick(cell[F.ICMP_TYPE], (8 if family is Family.IP else 128, 0))
        mark = _pick(cell[F.MARK], ())
        under = _pick(cell[F.LIMIT], (1,))
        holding = _pick(cell[F.UNKNOWN], (0,))
        mss = _pick(cell[F.MSS], (1460,))
        orig = _pick(cell[F.CT_ORIG_DPORT], (dport,) if dport not in (None, ABSENT) else ())
        packet = Packet(
            family=family, proto=proto, saddr=saddr, daddr=daddr,
            sport=None if sport in (None, ABSENT) else sport,
            dport=None if dport in (None, ABSENT) else dport,
            path=Path.LOCAL if local_path else Path.INCOMING, iif=iif, oif=oif,
            ct_state=CT_STATES[state if state is not None else CT_STATES.index(
                CtState.NEW)],
            ct_orig_dport=None if orig in (None, ABSENT) else orig,
            tcp_flags=flags_of(flags if flags is not None and flags >= 0 else 2),
            icmp_type=None if icmp in (None, ABSENT) else icmp,
            mark=self.ctx.marks.value(mark) if self.ctx.marks and mark is not None else 0,
            mss=None if mss in (None, ABSENT) else mss,
            under_limit=under != 0,
            holds=self.ctx.holding(holding) if holding is not None else frozenset())
        return packet, self.host_for(packet, to_host=to_host, from_host=from_host)

    def values_of(self, packet: Packet, *, to_host: bool, from_host: bool = False
                  ) -> tuple[int | None, ...]:
        """Where a packet lies on each line (by F), as a box's values are given."""
        ctx = self.ctx
        orig = packet.ct_orig_dport if packet.ct_orig_dport is not None else packet.dport
        by_field = {
            F.PROTO: packet.proto, F.SADDR: packet.saddr, F.DADDR: packet.daddr,
            F.SPORT: ABSENT if packet.sport is None else packet.sport,
            F.DPORT: ABSENT if packet.dport is None else packet.dport,
            F.CT_ORIG_DPORT: ABSENT if orig is None else orig,
            F.IIF: ctx.names.index_of(packet.iif), F.OIF: ctx.names.index_of(packet.oif),
            F.CT_STATE: CT_STATES.index(packet.ct_state),
            F.TCP_FLAGS: sum(1 << i for i, f in enumerate(TCP_FLAGS) if f in packet.tcp_flags)
            if packet.proto == TCP else ABSENT,
            F.ICMP_TYPE: ABSENT if packet.icmp_type is None else packet.icmp_type,
            F.MARK: ctx.marks.assignment(packet.mark) if ctx.marks else 0,
            F.LIMIT: int(packet.under_limit),
            F.UNKNOWN: ctx.condition_bits(packet.holds),
            F.MSS: ABSENT if packet.mss is None else packet.mss,
            F.PATH: PATH_LOCAL if packet.path is Path.LOCAL else PATH_INCOMING,
            # Only split where something tells them apart (routing, address types).
            F.DADDR_LOCAL: int(to_host and (packet.path is Path.INCOMING or self.dst_types)),
            F.SADDR_LOCAL: int(from_host and self.src_types),
        }
        return tuple(by_field[f] for f in F)

    def host_for(self, packet: Packet, *, to_host: bool, from_host: bool = False) -> Host:
        """The host the engine evaluates a packet on: its destination (and source) this
        host's address or not, each interface with its made-up address."""
        local = set()
        if to_host:
            local.add((packet.family, packet.daddr))
        if from_host:
            local.add((packet.family, packet.saddr))
        return Host(local=frozenset(local), interface_addresses=tuple(
            (name, self.family, interface_address(self.family, i))
            for i, name in enumerate(self.ctx.names.names) if name is not None))


def _classes(domain: Intervals, testers: list[tuple[int, Intervals]],
             splits: Sequence[Intervals]) -> list[tuple[frozenset[int], Intervals]]:
    """The domain cut where any test starts or ends; pieces with the same tests that hold
    joined (splitters count as tests of no rule)."""
    starts: dict[int, list[int]] = defaultdict(list)
    ends: dict[int, list[int]] = defaultdict(list)
    cuts: set[int] = set()
    for low, high in domain:
        cuts.update((low, high + 1))
    numbered = [*testers, *((-1 - k, s) for k, s in enumerate(splits))]
    for i, test in numbered:
        for low, high in test:
            starts[low].append(i)
            ends[high + 1].append(i)
            cuts.update((low, high + 1))
    ordered = sorted(cuts)
    groups: dict[frozenset[int], list[tuple[int, int]]] = {}
    active: set[int] = set()
    d = 0
    for a, b in itertools.pairwise(ordered):
        for i in ends.get(a, ()):
            active.discard(i)
        for i in starts.get(a, ()):
            active.add(i)
        while d < len(domain) and domain[d][1] < a:
            d += 1
        if d == len(domain) or domain[d][0] > a:
            continue  # outside the domain
        groups.setdefault(frozenset(active), []).append((a, b - 1))
    return [(frozenset(i for i in key if i >= 0), merge(values))
            for key, values in groups.items()]


def _path_test(hooks: frozenset[ir.Hook]) -> Intervals | None:
    values = set()
    if hooks - _HOOKS_LOCAL or ir.Hook.POSTROUTING in hooks:
        values.add(PATH_INCOMING)
    if hooks & _HOOKS_LOCAL:
        values.add(PATH_LOCAL)
    return None if values == {0, 1} else points(values)


def _kind(family: Family, address: int) -> AddrTypeKind:
    low, high = _MULTICAST[family]
    if low <= address <= high:
        return AddrTypeKind.MULTICAST
    if family is Family.IP and address == _BROADCAST:
        return AddrTypeKind.BROADCAST
    return AddrTypeKind.UNICAST


def _pick(values: Intervals | None, preferred: Sequence[int | None] | Iterator[int]
          ) -> int | None:
    """The first preferred value the class holds, else its lowest (None: not split)."""
    if values is None:
        return None
    for value in preferred:
        if value is not None and contains(values, value):
            return value
    return values[0][0]


def _other(values: Intervals | None, taken: int) -> int | None:
    """A value of the class other than `taken`, if it has one."""
    for low, high in values or ():
        for value in (low, high):
            if value != taken:
                return value
    return None


def _address(values: Intervals | None, nice: int) -> int:
    """A documentation address if the class holds one, else its first host address."""
    assert values is not None
    if contains(values, nice):
        return nice
    low, high = values[0]
    return low + 1 if high > low and low & 0xFF == 0 else low


def _rewritten(side: _Side, table: ir.Table, chain: ir.Chain,
               hooks: frozenset[ir.Hook]) -> frozenset[F]:
    out: set[F] = set()
    before_dnat = all((table.kind, h) in _BEFORE_DNAT for h in hooks)
    if side.dnat and not before_dnat:
        out.update((F.DADDR, F.DPORT, F.DADDR_LOCAL))
    if side.snat and ir.Hook.POSTROUTING in hooks and table.kind is ir.TableKind.NAT:
        out.update((F.SADDR, F.SPORT, F.SADDR_LOCAL))
    if side.marks:
        out.add(F.MARK)
    return frozenset(out)


def _reachable_hooks(ruleset: ir.Ruleset, family: Family
                     ) -> dict[tuple[int, str], frozenset[ir.Hook]]:
    """For each chain, the hooks whose base chains reach it through jumps and gotos."""
    reach: dict[tuple[int, str], set[ir.Hook]] = defaultdict(set)
    for t, table in enumerate(ruleset.tables):
        if table.family not in (family, Family.INET):
            continue
        calls = {c.name: {n for r in c.rules for n in ir.targets(r.action)}
                 for c in table.chains}
        for chain in table.chains:
            if chain.hook is None:
                continue
            todo, seen = [chain.name], {chain.name}
            while todo:
                name = todo.pop()
                reach[(t, name)].add(chain.hook)
                for callee in calls.get(name, ()):
                    if callee not in seen:
                        seen.add(callee)
                        todo.append(callee)
    return {k: frozenset(v) for k, v in reach.items()}


def _splitters(sides: list[_Side], ctx: Context, family: Family,
               types: tuple[bool, bool]) -> dict[F, list[Intervals]]:
    """Cut points no test makes but outcomes depend on: which protocols have ports, the
    address kinds, rewrite targets, the host's made-up interface addresses, MSS clamps and
    mark sets."""
    out: dict[F, list[Intervals]] = {F.PROTO: ctx.proto_splitters()}
    low, high = _MULTICAST[family]
    kinds = [((low, high),), *([points((_BROADCAST,))] if family is Family.IP else [])]
    interfaces_at = points(interface_address(family, i) for i in range(1, ctx.names.top + 1))
    daddr = list(kinds) if types[0] else []
    saddr = list(kinds) if types[1] else []
    dport: list[Intervals] = []
    sport: list[Intervals] = []
    mss: list[Intervals] = []
    marks: list[Intervals] = []
    for side in sides:
        for table in side.tables:
            for chain in table.chains:
                for rule in chain.rules:
                    for flat in ir.vmap_rules(rule):
                        action = flat.action
                        match action:
                            case ir.Dnat(address=address, ports=ports):
                                if address.family is family:
                                    daddr.append(points((address.network,)))
                                if ports:
                                    dport.append(points((ports[0],)))
                            case ir.Redirect(ports=ports):
                                daddr.extend((interfaces_at, points((_LOOPBACK[family],))))
                                dport.append(points((ports[0],)))
                            case ir.Snat(address=address, ports=ports):
                                if address.family is family:
                                    saddr.append(points((address.network,)))
                                if ports:
                                    sport.append(points((ports[0],)))
                            case ir.Masquerade(ports=ports):
                                saddr.append(interfaces_at)
                                if ports:
                                    sport.append(points((ports[0],)))
                            case ir.SetMss(mss=value):
                                mss.append(((0, value),))
                            case ir.SetMark(value=value, mask=mask) if ctx.marks:
                                # The marks the set keeps as they are, apart from those
                                # it changes, as a test of the same bits would.
                                marks.append(ctx.marks.test(Mark(value & mask, mask)))
    out.update({F.SADDR: saddr, F.DADDR: daddr})
    for fld, found in ((F.DPORT, dport), (F.SPORT, sport), (F.MSS, mss), (F.MARK, marks)):
        if found:
            out[fld] = found
    return out


def _order(entries: list[_Entry], ctx: Context) -> list[F]:
    """Protocol and path first (later fields' lines depend on them), then the fields with
    the fewest distinct tests: each split then keeps most rules together, and a walk that
    compares two rulesets parts the unchanged rules from the changed ones early. Routing and
    address types follow their address. The order changes how fast, never what, the walk
    finds: any order partitions the same space."""
    distinct: dict[F, set[Intervals]] = defaultdict(set)
    for entry in entries:
        for fld, test in entry.tests.items():
            distinct[fld].add(test)
    # Comparing: the fields the rules of one side only test come first. Their pieces where
    # those rules fail have the same rules alive on both sides, and the walk stops there.
    # Only for a change of a few rules: when most rules differ (unrelated policies, a
    # relabelling that rewrites many sets), the cheap splits on few distinct tests (the
    # conntrack state) cut more (unrelated 10k-rule policies: 6x the nodes otherwise).
    counts: Counter[tuple[int, int]] = Counter((e.side, e.key) for e in entries)
    differing = [e for e in entries if counts[(e.side, e.key)] != counts[(1 - e.side, e.key)]]
    few = any(e.side for e in entries) and len(differing) <= max(50, len(entries) // 20)
    changed = {fld for e in differing for fld in e.tests} if few else set()
    rest = [f for f in F if f not in (F.PROTO, F.PATH, F.DADDR_LOCAL, F.SADDR_LOCAL)]
    rest.sort(key=lambda f: (f not in changed, len(distinct.get(f, ())), f.value))
    order = [F.PROTO, F.PATH]
    for fld in rest:
        order.append(fld)
        if fld is F.DADDR:
            order.append(F.DADDR_LOCAL)
        if fld is F.SADDR:
            order.append(F.SADDR_LOCAL)
    return order


__all__ = ["Engine", "Leaf", "interface_address"]
