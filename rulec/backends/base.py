"""What every backend shares: the Backend interface, its capabilities, and the emitted artifact."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

from rulec.ir.nodes import Ruleset
from rulec.ir.verify import TargetLimits


@dataclass(frozen=True, slots=True, kw_only=True)
class EmitOptions:
    # iptables only: emit just the chains the policy declares, for `iptables-restore --noflush`.
    noflush: bool = False
    # iptables only: test an address set of several prefixes with one ipset match (one hash
    # lookup) instead of one rule per prefix; the sets come in Artifact.ipsets.
    ipset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Artifact:
    """One emitted file and the command (reading it on stdin) that loads it atomically."""

    target: str
    text: str
    load_command: tuple[str, ...]
    # `ipset restore -exist` input that must load before `text` (EmitOptions.ipset), else None.
    ipsets: str | None = None


class Backend(abc.ABC):
    """A target: lowers the IR to what it can express, then prints it. Printing never fails
    for a ruleset that passed `check` — every refusal happens in `check`, with a span."""

    name: ClassVar[str]
    limits: ClassVar[TargetLimits]

    @abc.abstractmethod
    def emit(self, ruleset: Ruleset, options: EmitOptions) -> Artifact:
        """Print the (already verified) ruleset; raise RulecError for what it cannot express."""
