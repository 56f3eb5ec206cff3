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


@functools.cache
def parser() -> Lark:
    # strict: terminal collisions are grammar bugs, not something to resolve by priority.
    # No propagate_positions: it doubles the parse time; spans come from the tokens instead.
    return Lark(grammar_text(), parser="lalr", lexer="contextual", strict=True,
                maybe_placeholders=True)
