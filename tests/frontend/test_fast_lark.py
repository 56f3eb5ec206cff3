"""The frontend's faster Lark loops (rulec/frontends/fast_lark.py) read every text exactly as
Lark does: the same tokens with the same positions, the same tree, and the same error at the
same place, with the same parser state, where the text does not lex or parse."""

from __future__ import annotations

from typing import Any

import interegular
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lark import Lark, Token
from lark.exceptions import UnexpectedInput

from rulec.frontends.fast_lark import PLUGINS, SKIPPED_AHEAD
from rulec.frontends.grammar import OPTIONS, grammar_text
from tests.frontend.test_fuzz import POLICIES, SEEDS, mutated

# keep_all_tokens: the tree then holds every token the lexer made, keywords and braces too.
_LARK = Lark(grammar_text(), keep_all_tokens=True, **OPTIONS)
_FAST = Lark(grammar_text(), keep_all_tokens=True, _plugins=PLUGINS, **OPTIONS)


def _read(parser: Lark, text: str) -> Any:
    try:
        tree = parser.parse(text)
    except UnexpectedInput as exc:
        # Expected and allowed terminals are sets: compared sorted, not in str(exc)'s order.
        token = getattr(exc, "token", None)
        return (type(exc).__name__, exc.pos_in_stream, exc.line, exc.column,
                token and (token.type, str(token), token.start_pos, token.end_pos),
                sorted(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or ()),
                [t and (t.type, str(t)) for t in getattr(exc, "token_history", None) or ()],
                _where(exc))
    return tree, [(t.type, str(t), t.start_pos, t.line, t.column, t.end_line, t.end_column,
                   t.end_pos) for t in tree.scan_values(lambda v: isinstance(v, Token))]


def _where(exc: UnexpectedInput) -> Any:
    """What the error's interactive parser knows: the parser's stacks and what it accepts
    next (rulec's syntax errors are built from these)."""
    parser = getattr(exc, "interactive_parser", None)
    if parser is None:
        return None
    state = parser.parser_state
    stack = [(v.type, str(v)) if isinstance(v, Token) else repr(v) for v in state.value_stack]
    return len(state.state_stack), stack, sorted(parser.accepts())


def _same(text: str) -> None:
    assert _read(_FAST, text) == _read(_LARK, text)


def test_what_is_skipped_ahead_starts_no_other_terminal() -> None:
    """The loop skips WS_INLINE before matching a token, which is what Lark's lexer does only
    if no other terminal can match from a space or tab."""
    regexps = {t.name: t.pattern.to_regexp() for t in _LARK.terminals}
    for name in SKIPPED_AHEAD:
        assert name in _LARK.ignore_tokens
        starts = {"start": "(?:" + regexps[name] + ")[\\s\\S]*"}
        comparator = interegular.Comparator.from_regexes({**regexps, **starts})
        clashes = [other for other in regexps if other != name
                   and not comparator.isdisjoint("start", other)]
        assert clashes == []


def test_seeds_read_the_same() -> None:
    for text in SEEDS:
        _same(text + "\n")


def test_errors_read_the_same() -> None:
    # A bad character, a terminal defined elsewhere (an unexpected token), an unterminated
    # string, a comment at the end, a CRLF file, a text without a final newline.
    for text in ("table ip filter { chain INPUT { accept from 10.0.0.1 ^ } }\n",
                 "define x = accept\n", 'table ip filter { chain INPUT { log prefix "x } }\n',
                 "table ip filter { # c\n chain INPUT { accept } } # end",
                 "table ip filter {\r\n chain INPUT {\r\n accept\r\n }\r\n}\r\n",
                 "table ip filter { chain INPUT { accept }"):
        _same(text)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(mutated(), POLICIES))
def test_random_texts_read_the_same(text: str) -> None:
    _same(text)
