"""The frontend's faster lexer loop (rulec/frontends/lexer.py) reads every text exactly as
Lark's contextual lexer does: the same tokens with the same positions, and the same error at
the same place where the text does not lex or parse."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lark import Lark, Token
from lark.exceptions import UnexpectedInput

from rulec.frontends.grammar import OPTIONS, grammar_text
from rulec.frontends.lexer import FastContextualLexer
from tests.frontend.test_fuzz import POLICIES, SEEDS, mutated

# keep_all_tokens: the tree then holds every token the lexer made, keywords and braces too.
_LARK = Lark(grammar_text(), keep_all_tokens=True, **OPTIONS)
_FAST = Lark(grammar_text(), keep_all_tokens=True,
             _plugins={"ContextualLexer": FastContextualLexer}, **OPTIONS)


def _read(parser: Lark, text: str) -> Any:
    try:
        tree = parser.parse(text)
    except UnexpectedInput as exc:
        # Expected and allowed terminals are sets: compared sorted, not in str(exc)'s order.
        token = getattr(exc, "token", None)
        return (type(exc).__name__, exc.pos_in_stream, exc.line, exc.column,
                token and (token.type, str(token), token.start_pos, token.end_pos),
                sorted(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or ()),
                [t and (t.type, str(t)) for t in getattr(exc, "token_history", None) or ()])
    return [(t.type, str(t), t.start_pos, t.line, t.column, t.end_line, t.end_column,
             t.end_pos) for t in tree.scan_values(lambda v: isinstance(v, Token))]


def _same(text: str) -> None:
    assert _read(_FAST, text) == _read(_LARK, text)


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
