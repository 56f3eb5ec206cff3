"""The grammar has no terminal collisions: Lark's strict mode (with interegular) proves it.

The runtime parser is built without strict mode, from a cached table, to start fast; this
test is what keeps collisions out of the grammar."""

from __future__ import annotations

from lark import Lark

from rulec.frontends.grammar import OPTIONS, grammar_text


def test_grammar_builds_in_strict_mode() -> None:
    Lark(grammar_text(), strict=True, **OPTIONS)  # raises on a collision or a conflict
