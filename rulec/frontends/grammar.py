"""The cached LALR parsers for the policy grammar, loaded from the installed package or the tree."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from lark import Lark, Transformer


def grammar_text() -> str:
    """The grammar: shipped as rulec/grammars/policy.lark in a wheel, grammars/ in a checkout."""
    packaged = resources.files("rulec").joinpath("grammars", "policy.lark")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "grammars" / "policy.lark").read_text("utf-8")


OPTIONS = {"parser": "lalr", "lexer": "contextual", "maybe_placeholders": True}


@functools.cache
def parser() -> Lark:
    """A parser that returns the parse tree (for tools and tests; the frontend lowers while
    it parses, with `lowering_parser`)."""
    return _build(None)


@functools.cache
def lowering_parser(callbacks: object) -> Lark:
    """A parser that calls `callbacks.<rule>(children)` as it reduces each grammar rule that
    `callbacks` has a method for, and returns what the start rule's callback (or tree) is."""
    return _build(callbacks)


def _build(callbacks: object) -> Lark:
    # No propagate_positions: it doubles the parse time; spans come from the tokens instead.
    # cache: Lark keeps the built tables in a file keyed by the grammar's hash (not the
    # callbacks), which takes a CLI run's start from ~0.7 s to ~0.08 s. The grammar is checked
    # with strict=True (terminal collisions are grammar bugs) by
    # tests/frontend/test_grammar_strict.py, not at every start. Lark takes any object with
    # methods named after rules as an inline transformer; a plain object (not a Transformer)
    # leaves the other rules' trees to Lark's own Tree, with no per-node default handler.
    # The lexer is Lark's contextual lexer in a faster loop (rulec/frontends/fast_lark.py).
    from rulec.frontends.fast_lark import PLUGINS

    transformer: Transformer[object, object] | None = callbacks  # type: ignore[assignment]
    return Lark(grammar_text(), cache=True, transformer=transformer,
                _plugins=PLUGINS, **OPTIONS)
