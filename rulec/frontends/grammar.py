"""The cached LALR parser for the policy grammar, loaded from the installed package or the tree."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from lark import Lark


def grammar_text() -> str:
    """The grammar: shipped as rulec/grammars/policy.lark in a wheel, grammars/ in a checkout."""
    packaged = resources.files("rulec").joinpath("grammars", "policy.lark")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "grammars" / "policy.lark").read_text("utf-8")


OPTIONS = {"parser": "lalr", "lexer": "contextual", "maybe_placeholders": True}


@functools.cache
def parser() -> Lark:
    # No propagate_positions: it doubles the parse time; spans come from the tokens instead.
    # cache: Lark keeps the built tables in a file keyed by the grammar's hash, which takes a
    # CLI run's start from ~0.7 s to ~0.08 s. The grammar is checked with strict=True (terminal
    # collisions are grammar bugs) by tests/frontend/test_grammar_strict.py, not at every start.
    return Lark(grammar_text(), cache=True, **OPTIONS)
