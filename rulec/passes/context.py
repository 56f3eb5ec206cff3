"""What a pass may know besides the ruleset: the target's abilities and where warnings go."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rulec.diagnostics import Diagnostic

if TYPE_CHECKING:
    from rulec.passes.synthesize_sets import Thresholds


@dataclass(frozen=True, slots=True, kw_only=True)
class PassContext:
    # The target has named sets and verdict maps (nft): synthesize_sets may use them.
    named_sets: bool = False
    # Run ir.verify after every pass (tests always do).
    verify: bool = False
    # Warnings the passes report (e.g. shadowed rules), with spans; the list is the sink.
    warnings: list[Diagnostic] = field(default_factory=list)
    # synthesize_sets' thresholds, if not its defaults (tests lower them for small rulesets).
    thresholds: Thresholds | None = None
