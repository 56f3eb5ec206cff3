"""Lark's contextual lexer with a faster loop, for the policy grammar's parser.

The terminals, their order, each parser state's choice of terminals and every error are
Lark's own: each state's lexer is Lark's, and this only runs its compiled pattern in one
tight loop (Lark's costs ~2.8 µs a token, most of it calls around the one regex match).
Keyword re-typing (a NAME that is a keyword of the state) is a dict lookup instead of a
second regex. Where the text does not match, Lark's own lexer takes over from the same
position, so errors are raised exactly as Lark raises them. Whatever this cannot prove it
runs as Lark would (several patterns per state, flagged keywords, other callbacks) goes
through Lark's lexer unchanged. tests/frontend/test_lexer.py compares the two."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedToken
from lark.lexer import BasicLexer, ContextualLexer, LexerState, PatternStr, UnlessCallback


class _State:
    """One parser state's lexer, prepared for the fast loop."""

    __slots__ = ("basic", "keywords", "match", "newline_types", "other_callbacks",
                 "plain_skip", "skip")

    def __init__(self, basic: BasicLexer) -> None:
        self.basic = basic
        scanner = basic.scanner  # builds Lark's pattern and callbacks
        mres: list[re.Pattern[str]] = scanner._mres
        self.match: Callable[..., re.Match[str] | None] | None = (
            mres[0].match if len(mres) == 1 else None)
        self.skip = basic.ignore_types
        self.newline_types = basic.newline_types
        # type -> {keyword text: keyword type}, from Lark's "unless" callbacks
        self.keywords: dict[str, dict[str, str]] = {}
        self.other_callbacks: dict[str, Callable[[Token], Token]] = {}
        for type_, callback in basic.callback.items():
            words = _keywords(callback)
            if words is None:
                self.other_callbacks[type_] = callback
            else:
                self.keywords[type_] = words
        self.plain_skip = frozenset(t for t in self.skip if t not in basic.callback)


def _keywords(callback: object) -> dict[str, str] | None:
    """The keyword map an UnlessCallback stands for, if its keywords are plain strings."""
    if type(callback) is not UnlessCallback:
        return None
    words: dict[str, str] = {}
    for terminal in callback.scanner.terminals:
        pattern = terminal.pattern
        if not isinstance(pattern, PatternStr) or pattern.flags:
            return None
        words.setdefault(pattern.value, terminal.name)
    return words


class FastContextualLexer(ContextualLexer):
    """Plugged in with Lark's `_plugins={"ContextualLexer": ...}` option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast: dict[Any, _State] = {}
        by_lexer: dict[int, _State] = {}
        for state, basic in self.lexers.items():
            if not isinstance(basic, BasicLexer):
                continue
            prepared = by_lexer.get(id(basic))
            if prepared is None:
                prepared = by_lexer[id(basic)] = _State(basic)
            self._fast[state] = prepared

    def lex(self, lexer_state: LexerState, parser_state: Any) -> Iterator[Token]:
        text_slice = lexer_state.text
        text, end = text_slice.text, text_slice.end
        if not isinstance(text, str):
            yield from super().lex(lexer_state, parser_state)
            return
        counter = lexer_state.line_ctr
        stack = parser_state.state_stack
        fast = self._fast
        pos, line, line_start = counter.char_pos, counter.line, counter.line_start_pos
        while pos < end:
            lexer = fast.get(stack[-1])
            m = None
            if lexer is not None and lexer.match is not None:
                m = lexer.match(text, pos, end)
            if m is None or lexer is None:
                # No match (an error), or a state this loop does not handle: Lark's lexer
                # takes one token from here, raising what Lark raises.
                counter.char_pos, counter.line, counter.line_start_pos = pos, line, line_start
                counter.column = pos - line_start + 1
                token = self._lark_token(lexer_state, parser_state)
                if token is None:
                    return
                yield token
                pos, line, line_start = counter.char_pos, counter.line, counter.line_start_pos
                continue
            type_ = m.lastgroup
            assert type_ is not None
            value = m.group()
            start, start_line, column = pos, line, pos - line_start + 1
            pos = m.end()
            if type_ in lexer.newline_types:
                newlines = value.count("\n")
                if newlines:
                    line += newlines
                    line_start = start + value.rindex("\n") + 1
            if type_ in lexer.plain_skip:
                continue  # (an ignored terminal with a callback is made, called, then skipped)
            token = Token(type_, value, start, start_line, column, line, pos - line_start + 1,
                          pos)
            words = lexer.keywords.get(type_)
            if words is not None:
                keyword = words.get(value)
                if keyword is not None:
                    token.type = keyword
            if type_ in lexer.other_callbacks:
                token = lexer.other_callbacks[type_](token)
            counter.char_pos, counter.line, counter.line_start_pos = pos, line, line_start
            counter.column = pos - line_start + 1
            if type_ in lexer.skip:
                continue
            lexer_state.last_token = token
            yield token
        counter.char_pos, counter.line, counter.line_start_pos = pos, line, line_start
        counter.column = pos - line_start + 1

    def _lark_token(self, lexer_state: LexerState, parser_state: Any) -> Token | None:
        """One token by Lark's ContextualLexer.lex, or None at the end of the text."""
        try:
            return self.lexers[parser_state.position].next_token(lexer_state, parser_state)
        except EOFError:
            return None
        except UnexpectedCharacters as e:
            # As ContextualLexer.lex: a terminal defined elsewhere reads as an unexpected
            # token rather than an unexpected character.
            try:
                last_token = lexer_state.last_token
                token = self.root_lexer.next_token(lexer_state, parser_state)
                raise UnexpectedToken(  # type: ignore[no-untyped-call]
                    token, e.allowed, state=parser_state,
                    token_history=[last_token],
                    terminals_by_name=self.root_lexer.terminals_by_name) from None
            except UnexpectedCharacters:
                raise e from None
