"""What changes between two rulesets, for every packet: the engine's classes where the two
differ, grouped by what each side does (verdict, rewrite, deciding rule) and merged into few
boxes, each group with one witness packet re-checked on the whole rulesets."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rulec.analysis.engine import Engine, Leaf
from rulec.analysis.space import FIELDS, Context, F
from rulec.diagnostics import Span
from rulec.ir import nodes as ir
from rulec.ir.evaluate import Host, Outcome, Packet, Step, Verdict, evaluate
from rulec.ir.intervals import Intervals, merge
from rulec.ir.values import Family

# The fields a rewrite may change, as Packet names them.
_REWRITTEN = ("saddr", "daddr", "sport", "dport", "mark", "mss")
_VERDICT_ACTIONS = {"accept", "drop", "reject", "policy accept", "policy drop"}


@dataclass(frozen=True, slots=True)
class Decider:
    """The rule (its span) or the policy (span None) that decided, and where."""

    table: str
    chain: str
    action: str
    span: Span | None  # compared: two rules of one chain decide differently

    @property
    def where(self) -> str | None:
        return f"{self.span.file}:{self.span.line}" if self.span else None


@dataclass(frozen=True, slots=True)
class Effect:
    """What one side does to the packets of a change."""

    verdict: Verdict
    delivered_locally: bool
    # (Packet field, value after) for every field a rewrite changed, e.g. ("daddr", ...).
    rewrites: tuple[tuple[str, int | None], ...]
    rewritten_by: tuple[str, ...]  # the rewriting actions met: dnat, snat, masquerade...
    decided_by: Decider | None  # the rule or policy that gave the verdict; None: no chain


def effect_of(packet: Packet, outcome: Outcome) -> Effect:
    after = outcome.packet
    rewrites = tuple((name, getattr(after, name)) for name in _REWRITTEN
                     if getattr(after, name) != getattr(packet, name))
    rewriting = tuple(s.action for s in outcome.trace
                      if s.action in ("dnat", "snat", "masquerade", "redirect", "setmark",
                                      "setmss"))
    return Effect(outcome.verdict, outcome.delivered_locally, rewrites, rewriting,
                  _deciding(outcome))


def _deciding(outcome: Outcome) -> Decider | None:
    """The step that decided: for a drop or reject the last one; for an accept the last
    verdict of a filter chain (the one a reviewer reads), else the last verdict met."""
    trace = outcome.trace
    if not trace:
        return None
    if outcome.verdict is not Verdict.ACCEPT:
        return _decider(trace[-1])
    verdicts = [s for s in trace if s.action in _VERDICT_ACTIONS]
    filtering = [s for s in verdicts if s.table == ir.TableKind.FILTER.value]
    chosen = filtering or verdicts or list(trace)
    return _decider(chosen[-1])


def _decider(step: Step) -> Decider:
    return Decider(step.table, step.chain, step.action, step.span)


@dataclass(frozen=True, slots=True)
class Box:
    """Packets of one family whose fields each lie in the given values (F -> values; a
    field left out, or None, is not restricted)."""

    family: Family
    values: tuple[Intervals | None, ...]

    def get(self, fld: F) -> Intervals | None:
        return self.values[fld]

    def holds(self, values: Sequence[int | None]) -> bool:
        """Whether a packet at these values (Engine.values_of) lies in the box."""
        return all(box is None or (v is not None and any(lo <= v <= hi for lo, hi in box))
                   for box, v in zip(self.values, values, strict=True))


@dataclass(frozen=True, slots=True)
class Change:
    """Packets both sides treat differently, and the same way on each side."""

    old: Effect
    new: Effect
    boxes: tuple[Box, ...]
    witness: Packet
    witness_host: Host
    to_host: bool  # the witness's destination is this host's address
    # Only under or only over a rate limit: the change depends on state the engine models
    # as a free choice.
    limited: bool = False
    # The unmodelled conditions (opaque imports) the change needs to hold and to fail: the
    # answer relies on what rulec cannot see. Empty when it holds either way.
    assumes: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())

    @property
    def kind(self) -> str:
        old, new = self.old, self.new
        if old.verdict is not new.verdict:
            if new.verdict is Verdict.ACCEPT:
                return "newly accepted"
            if old.verdict is Verdict.ACCEPT:
                return "newly dropped" if new.verdict is Verdict.DROP else "newly rejected"
            return f"now {new.verdict.value}ed, was {old.verdict.value}ed".replace("ee", "e")
        if old.rewrites != new.rewrites or old.rewritten_by != new.rewritten_by:
            return "rewritten differently"
        return "delivered differently"


@dataclass(frozen=True, slots=True)
class Diff:
    changes: tuple[Change, ...]
    families: tuple[Family, ...]
    nodes: int = 0  # engine nodes walked
    classes: int = 0  # leaves compared
    seconds: float = field(default=0.0, compare=False)
    # Per family, the lines the engine split (interface names and mark bits, for reports).
    contexts: dict[Family, Context] = field(default_factory=dict, compare=False)

    @property
    def equivalent(self) -> bool:
        return not self.changes

    @property
    def unmodelled(self) -> tuple[str, ...]:
        """The conditions rulec does not model that the engine tried both ways."""
        return tuple(sorted({c for ctx in self.contexts.values() for c in ctx.conditions}))


def diff(old: ir.Ruleset, new: ir.Ruleset,
         families: Sequence[Family] = (Family.IP, Family.IP6)) -> Diff:
    """Every packet of `families` whose fate differs between `old` and `new`, grouped."""
    start = time.perf_counter()
    changes: list[Change] = []
    nodes = classes = 0
    analysed = []
    contexts = {}
    for family in families:
        engine = Engine.build([old, new], family)
        engine.compare = True
        groups: dict[tuple[Effect, Effect], list[Leaf]] = defaultdict(list)
        for leaf in engine.leaves_of():
            before, after = leaf.outcomes
            if before == after:
                continue
            key = (effect_of(leaf.packet, before), effect_of(leaf.packet, after))
            groups[key].append(leaf)
        nodes += engine.nodes
        classes += engine.leaves
        contexts[family] = engine.ctx
        if any(e.rule is not None for e in engine.entries):
            analysed.append(family)
        for (was, now), leaves in groups.items():
            changes.append(_change(engine, old, new, was, now, leaves))
    changes.sort(key=_order)
    return Diff(tuple(changes), tuple(analysed), nodes, classes, time.perf_counter() - start,
                contexts)


def _change(engine: Engine, old: ir.Ruleset, new: ir.Ruleset, was: Effect, now: Effect,
            leaves: list[Leaf]) -> Change:
    first = leaves[0]
    # The engine's claim, re-checked on the whole rulesets: a witness that does not differ
    # there is a bug in the engine, never something to print.
    before, after = (evaluate(r, first.packet, first.host) for r in (old, new))
    if before == after or (before, after) != first.outcomes:
        raise AssertionError(f"the engine's witness does not differ: {first.packet}")
    cells = merge_cells([leaf.cell for leaf in leaves])
    limits = {v for leaf in leaves for v in _values(leaf.cell[F.LIMIT])}
    to_host = bool(first.host.local & {(first.packet.family, first.packet.daddr)})
    return Change(was, now, tuple(Box(engine.family, c) for c in cells), first.packet,
                  first.host, to_host, limited=len(limits) == 1,
                  assumes=_assumes(engine.ctx, leaves))


def _assumes(ctx: Context, leaves: list[Leaf]) -> tuple[frozenset[str], frozenset[str]]:
    """The conditions every packet of the change has holding, and those failing."""
    if not ctx.conditions or any(leaf.cell[F.UNKNOWN] is None for leaf in leaves):
        return frozenset(), frozenset()  # not split on: holds whatever they do
    seen = {v for leaf in leaves for v in _values(leaf.cell[F.UNKNOWN])}
    if not seen:
        return frozenset(), frozenset()
    all_bits = (1 << len(ctx.conditions)) - 1
    ones = all_bits
    zeros = all_bits
    for v in seen:
        ones &= v
        zeros &= ~v
    return ctx.holding(ones), ctx.holding(zeros)


def _values(values: Intervals | None) -> Iterable[int]:
    for low, high in values or ():
        yield from range(low, high + 1)


def merge_cells(cells: Sequence[tuple[Intervals | None, ...]]
                ) -> list[tuple[Intervals | None, ...]]:
    """Join cells that differ in one field only, field after field, until none do: what a
    reviewer reads is a few boxes, not the engine's many classes."""
    current = list(dict.fromkeys(cells))
    changed = True
    while changed and len(current) > 1:
        changed = False
        for fld in FIELDS:
            buckets: dict[tuple[Intervals | None, ...], list[Intervals | None]] = {}
            for cell in current:
                rest = (*cell[:fld], None, *cell[fld + 1:])
                buckets.setdefault(rest, []).append(cell[fld])
            if len(buckets) == len(current):
                continue
            before = len(current)
            current = []
            for rest, values in buckets.items():
                if any(v is None for v in values):  # the field is split in some only
                    current.extend((*rest[:fld], v, *rest[fld + 1:]) for v in values)
                    continue
                joined = merge(i for v in values if v is not None for i in v)
                current.append((*rest[:fld], joined, *rest[fld + 1:]))
            changed = changed or len(current) < before
    return sorted(current, key=lambda c: tuple(v or () for v in c))


def _order(change: Change) -> tuple[object, ...]:
    """Newly accepted first (what review must see), then by where the new side decides."""
    rank = {"newly accepted": 0, "newly dropped": 1, "newly rejected": 1}.get(change.kind, 2)
    span: Span | None = change.new.decided_by.span if change.new.decided_by else None
    return (rank, change.witness.family.value, span.file if span else "",
            span.start if span else -1, change.witness.saddr, change.witness.daddr)


__all__ = ["Box", "Change", "Decider", "Diff", "Effect", "diff", "effect_of", "merge_cells"]
