"""The optimiser: a registry of passes (pure functions Ruleset -> Ruleset) and the pipeline.

Every pass preserves what the ruleset does to every packet (tests/passes check it against
rulec.ir.evaluate), is idempotent, and returns its input object when it changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rulec.diagnostics import RulecError
from rulec.ir.nodes import Ruleset, rule_count
from rulec.ir.verify import verify
from rulec.passes.aggregate_addresses import aggregate_addresses
from rulec.passes.context import PassContext
from rulec.passes.dedup_chains import dedup_chains
from rulec.passes.merge_addresses import merge_addresses
from rulec.passes.merge_icmp_types import merge_icmp_types
from rulec.passes.merge_multiport import merge_multiport
from rulec.passes.remove_shadowed import remove_shadowed
from rulec.passes.remove_unreachable import remove_unreachable
from rulec.passes.synthesize_sets import synthesize_sets

PassFn = Callable[[Ruleset, PassContext], Ruleset]

# Every pass, by name; order of DEFAULT_PIPELINE matters and is explained there.
_ALL: tuple[PassFn, ...] = (
    remove_unreachable, aggregate_addresses, dedup_chains, merge_multiport, merge_icmp_types,
    merge_addresses, remove_shadowed, synthesize_sets,
)

PASSES: dict[str, PassFn] = {fn.__name__: fn for fn in _ALL}
# Names, run in order; a name may appear twice.
DEFAULT_PIPELINE: tuple[str, ...] = (
    # Dead rules first: fewer rules to compare, and none to block a merge.
    "remove_unreachable",
    # Shadowed rules next, while the rules are still as written: each warning points at a
    # rule of the source, and a removed rule no longer blocks a merge.
    "remove_shadowed",
    # A shadowed jump can leave its chain with nothing jumping to it.
    "remove_unreachable",
    # Canonical sets, so that rules equal up to set spelling compare equal below.
    "aggregate_addresses",
    # Retargeting makes `jump a` / `jump b` equal rules, which the merges can then join.
    "dedup_chains",
    "merge_multiport",
    "merge_icmp_types",
    # After the port merges: rules that differed in ports and addresses now differ in one.
    "merge_addresses",
    # Address merges make rules that differed in both differ only in ports: merge again.
    "merge_multiport",
    # Merges inside chains can leave chains equal.
    "dedup_chains",
    # Last (nft only): maps and named sets are built from the final rules and sets, and no
    # pass after it has to look inside a verdict map.
    "synthesize_sets",
)


@dataclass(frozen=True, slots=True)
class PassStats:
    name: str
    rules_in: int
    rules_out: int
    seconds: float
    round: int = 1  # run_pipeline's round (later rounds list only the passes that ran)


# Rounds of the whole list before run_pipeline settles for what it has (always correct, if
# then not a fixed point); real policies settle in one or two.
MAX_ROUNDS = 4

# What a pass changed, as run_pipeline tells it apart: EQUAL, the result == its input (only
# set names, spans, origins or provenance notes and terms differ, which take no part in
# equality, and which no pass's decisions read); RESPELLED, every set
# holds the same values as before, spelled otherwise (the passes in _RESPELLS, and only
# they, change nothing else); OTHER, anything (a rule removed, merged, moved or widened).
EQUAL, RESPELLED, OTHER = "equal", "respelled", "other"
_RESPELLS = frozenset({"aggregate_addresses"})
# The changes a pass is blind to: if it changed nothing in a ruleset, it changes nothing
# after any number of them either, so run_pipeline need not run it again. A pass absent here
# is blind to nothing.
_BLIND: dict[str, frozenset[str]] = {
    # They judge a rule by the packets it matches (remove_shadowed by interval boxes,
    # remove_unreachable by `match == ANY`, which no re-spelling makes or unmakes), never by
    # how its sets are written or named. So the second round need not look for shadowed rules
    # when the first only canonicalised and named sets.
    "remove_unreachable": frozenset({EQUAL, RESPELLED}),
    "remove_shadowed": frozenset({EQUAL, RESPELLED}),
    # They compare rules and chains with == (or hash them): blind to names, spans and
    # origins; not to spelling (sets equal once canonical make rules equal, hence mergeable).
    "aggregate_addresses": frozenset({EQUAL}),
    "dedup_chains": frozenset({EQUAL}),
    "merge_multiport": frozenset({EQUAL}),
    "merge_icmp_types": frozenset({EQUAL}),
    "merge_addresses": frozenset({EQUAL}),
    # synthesize_sets reads set names (it keeps a frontend's, and leaves named sets out of
    # concatenated maps): it is blind to nothing.
}


def _change(name: str, before: Ruleset, after: Ruleset) -> str | None:
    """What pass `name` changed (None: nothing, it returned its input)."""
    if after is before:
        return None
    if name in _RESPELLS:
        return RESPELLED
    return EQUAL if after == before else OTHER


# What `rulec import` makes of a host's rules: only the merges (rules joined, sets named and
# shared as defines), so the printed policy keeps every rule and chain the host had, in its
# order, just fewer and shorter; removing dead or shadowed rules is left to `rulec check`.
IMPORT_PIPELINE: tuple[str, ...] = (
    "aggregate_addresses", "merge_multiport", "merge_icmp_types", "merge_addresses",
    "synthesize_sets",
)

def run_pipeline(ruleset: Ruleset, ctx: PassContext,
                 names: Sequence[str] = DEFAULT_PIPELINE) -> tuple[Ruleset, tuple[PassStats, ...]]:
    """Run the named passes in order, and the whole list again until a round changes nothing,
    so that running the pipeline on its own output changes nothing either: a merge can join a
    later rule into an earlier one that then covers a rule between them, which only the next
    round's remove_shadowed sees. Returns the result and statistics for every pass run.

    A pass runs again only if a pass after its last run changed something it is not blind to
    (_BLIND): it is idempotent (tests/passes holds every pass to it), so run on a ruleset it
    already left as it was, it would return that very ruleset. The result is the one running
    every pass in every round gives; only the time differs."""
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise RulecError.single("E0001", f"unknown pass {', '.join(unknown)}; known passes: "
                                f"{', '.join(PASSES) or 'none'}", None)
    stats = []
    # Passes to run: not run yet, or something they are not blind to changed since.
    due = dict.fromkeys(names, True)
    for round_ in range(MAX_ROUNDS):
        if not any(due.values()):
            break
        for name in names:
            if not due[name]:
                if round_ == 0:
                    stats.append(PassStats(name, rule_count(ruleset), rule_count(ruleset), 0.0,
                                           round_ + 1))
                continue
            before, count = ruleset, rule_count(ruleset)
            start = time.perf_counter()
            ruleset = PASSES[name](ruleset, ctx)
            elapsed = time.perf_counter() - start
            if ctx.verify:
                verify(ruleset)
            stats.append(PassStats(name, count, rule_count(ruleset), elapsed, round_ + 1))
            due[name] = False
            change = _change(name, before, ruleset)
            if change is not None:
                for other in due:
                    if other != name and change not in _BLIND.get(other, frozenset()):
                        due[other] = True
    return ruleset, tuple(stats)


__all__ = ["DEFAULT_PIPELINE", "PASSES", "PassContext", "PassFn", "PassStats", "run_pipeline"]
