"""Library entry points: parse a policy, verify it, and emit it for a target."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rulec.backends import Artifact, EmitOptions, get_backend
from rulec.diagnostics import Diagnostic, RulecError
from rulec.frontends import dsl
from rulec.ir.nodes import Ruleset
from rulec.ir.verify import verify

TARGETS = ("iptables", "ip6tables", "nft", "nft-json")


@dataclass(frozen=True, slots=True)
class CompileResult:
    ruleset: Ruleset
    artifact: Artifact
    warnings: tuple[Diagnostic, ...]


def parse_text(text: str, name: str = "<string>") -> Ruleset:
    """Parse DSL source text into a verified IR ruleset (RulecError on bad input)."""
    ruleset = dsl.parse_text(text, name)
    verify(ruleset)
    return ruleset


def parse_files(paths: Sequence[str | Path]) -> Ruleset:
    """Parse one or more .rules files (their tables are merged, in order) into a verified IR."""
    ruleset = dsl.parse_files([Path(p) for p in paths])
    verify(ruleset)
    return ruleset


def emit(ruleset: Ruleset, target: str, *, noflush: bool = False) -> Artifact:
    """Check `ruleset` against the target's limits, then print it."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    backend = get_backend(target)
    verify(ruleset, backend.limits)
    return backend.emit(ruleset, EmitOptions(noflush=noflush))


def compile_text(text: str, target: str, *, name: str = "<string>",
                 noflush: bool = False) -> Artifact:
    """parse_text + emit: the whole pipeline on a string."""
    return emit(parse_text(text, name), target, noflush=noflush)


__all__ = ["TARGETS", "CompileResult", "RulecError", "compile_text", "emit", "parse_files",
           "parse_text"]
