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
from rulec.passes.context import PassContext

PassFn = Callable[[Ruleset, PassContext], Ruleset]

# Filled in below as passes land; order of DEFAULT_PIPELINE matters and is explained there.
_ALL: tuple[PassFn, ...] = ()

PASSES: dict[str, PassFn] = {fn.__name__: fn for fn in _ALL}
DEFAULT_PIPELINE: tuple[str, ...] = tuple(PASSES)


@dataclass(frozen=True, slots=True)
class PassStats:
    name: str
    rules_in: int
    rules_out: int
    seconds: float


def run_pipeline(ruleset: Ruleset, ctx: PassContext,
                 names: Sequence[str] = DEFAULT_PIPELINE) -> tuple[Ruleset, tuple[PassStats, ...]]:
    """Run the named passes in order; returns the result and per-pass statistics."""
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise RulecError.single("E0001", f"unknown pass {', '.join(unknown)}; known passes: "
                                f"{', '.join(PASSES) or 'none'}", None)
    stats = []
    for name in names:
        before = rule_count(ruleset)
        start = time.perf_counter()
        ruleset = PASSES[name](ruleset, ctx)
        elapsed = time.perf_counter() - start
        if ctx.verify:
            verify(ruleset)
        stats.append(PassStats(name, before, rule_count(ruleset), elapsed))
    return ruleset, tuple(stats)


__all__ = ["DEFAULT_PIPELINE", "PASSES", "PassContext", "PassFn", "PassStats", "run_pipeline"]
