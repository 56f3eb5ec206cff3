"""Lark's contextual lexer and LALR driver in faster loops, for the policy grammar's parser.

The grammar, its terminals and their order, each parser state's choice of terminals, the
parse tables, the tree builder and every error are Lark's; plugged in through Lark's
`_plugins` option, these only run them in tighter loops (Lark costs ~4.6 µs a token, most of
it calls around one regex match and one table lookup).

The lexer runs each state's Lark lexer (its compiled pattern) with keyword re-typing as a
dict lookup and whitespace skipped as a prefix of the next match; where the text does not
match, Lark's own lexer takes the token, so lexing errors are raised as Lark raises them.
The driver is lalr_parser._Parser's loop in one function over a table of precomputed steps,
on Lark's ParserState, so an error carries the same state and interactive parser. What the
loops cannot prove they handle as Lark would (several patterns per state, flagged keywords,
other callbacks, states of another class) goes through Lark unchanged.
tests/frontend/test_fast_lark.py compares tokens, positions, trees and errors with Lark's."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import BasicLexer, ContextualLexer, LexerState, PatternStr, UnlessCallback
from lark.parsers.lalr_analysis import Shift
from lark.parsers.lalr_interactive_parser import InteractiveParser
from lark.parsers.lalr_parser import LALR_Parser, _Parser
from lark.parsers.lalr_parser_state import ParseConf, ParserState

# Token(...) checks for a deprecated keyword, then calls this; the loop makes ~15 a rule.
_new_token: Callable[..., Token] = getattr(Token, "_future_new", Token)


# Ignored terminals that no other terminal of the grammar can match the start of (that is,
# wherever one matches, Lark's lexer takes it): the loop skips them as a prefix of the next
# token's match instead of as a token of their own, a third of the matches. The premise is
# proved for the policy grammar by tests/frontend/test_fast_lark.py.
SKIPPED_AHEAD = ("WS_INLINE",)


class _State:
    """One parser state's lexer, prepared for the fast loop."""

    __slots__ = ("basic", "keywords", "match", "newline_types", "other_callbacks",
                 "plain_skip", "skip")

    def __init__(self, basic: BasicLexer) -> None:
        self.basic = basic
        self.match: Callable[..., re.Match[str] | None] | None = None
        empty: frozenset[str] = frozenset()
        self.skip = self.newline_types = self.plain_skip = empty
        self.keywords: dict[str, dict[str, str]] = {}
        self.other_callbacks: dict[str, Callable[[Token], Token]] = {}
        if type(basic) is not BasicLexer:
            return  # left to Lark
        scanner = basic.scanner  # builds Lark's pattern and callbacks
        mres: list[re.Pattern[str]] = scanner._mres
        if len(mres) == 1:
            ahead = [t.pattern.to_regexp() for t in basic.terminals
                     if t.name in SKIPPED_AHEAD and t.name in basic.ignore_types
                     and t.name not in basic.callback]
            # Possessive: the skipped prefix is never given back to let the token match.
            prefix = "".join(f"(?:{regexp})?+" for regexp in ahead)
            self.match = re.compile(prefix + f"(?:{mres[0].pattern})", mres[0].flags).match
        self.skip = basic.ignore_types
        self.newline_types = basic.newline_types
        # type -> {keyword text: keyword type}, from Lark's "unless" callbacks
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


class _Prepared(dict[Any, _State]):
    """Parser state -> its prepared lexer, each prepared when the state is first met: as
    Lark builds a state's pattern only then, a small policy compiles few of them."""

    def __init__(self, lexers: dict[Any, Any]) -> None:
        super().__init__()
        self._lexers = lexers
        self._by_lexer: dict[int, _State] = {}  # states share Lark lexers, and so these

    def __missing__(self, state: Any) -> _State:
        basic = self._lexers[state]  # a KeyError here is Lark's too
        prepared = self._by_lexer.get(id(basic))
        if prepared is None:
            prepared = self._by_lexer[id(basic)] = _State(basic)
        self[state] = prepared
        return prepared


class FastContextualLexer(ContextualLexer):
    """Plugged in with Lark's `_plugins={"ContextualLexer": ...}` option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast = _Prepared(self.lexers)

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
            lexer = fast[stack[-1]]
            m = lexer.match(text, pos, end) if lexer.match is not None else None
            if m is None:
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
            value = m.group(type_)
            start = m.start(type_)  # after what was skipped ahead (never a newline)
            start_line, column = line, start - line_start + 1
            pos = m.end()
            if type_ in lexer.newline_types:
                newlines = value.count("\n")
                if newlines:
                    line += newlines
                    line_start = start + value.rindex("\n") + 1
            if type_ in lexer.plain_skip:
                continue  # (an ignored terminal with a callback is made, called, then skipped)
            token = _new_token(type_, value, start, start_line, column, line,
                               pos - line_start + 1, pos)
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


class _FastLoop(_Parser):
    """Lark's LALR driver (lalr_parser._Parser) with its loop in one function: the same
    tables, callbacks, stacks and errors, without a call, an assert and a Rule hash per
    step. ParserState.feed_token stays Lark's for the end of input and for the interactive
    parser that errors carry."""

    def parse_from_state(self, state: ParserState[Any], last_token: Token | None = None) -> Any:
        conf = state.parse_conf
        if type(state) is not ParserState or not conf.callbacks:
            return super().parse_from_state(state, last_token)
        table = self._table(conf)
        state_stack, value_stack = state.state_stack, state.value_stack
        callbacks = conf.callbacks
        token = last_token
        try:
            for token in state.lexer.lex(state):  # type: ignore[no-untyped-call]
                type_ = token.type
                while True:
                    step = table[state_stack[-1]].get(type_)
                    if step is None:
                        expected = {s for s in conf.states[state_stack[-1]] if s.isupper()}
                        raise UnexpectedToken(  # type: ignore[no-untyped-call]
                            token, expected, state=state, interactive_parser=None)
                    size, target = step
                    if size < 0:  # shift
                        state_stack.append(target)
                        value_stack.append(
                            token if type_ not in callbacks else callbacks[type_](token))
                        break
                    callback, origin = target
                    if size:
                        children = value_stack[-size:]
                        del state_stack[-size:]
                        del value_stack[-size:]
                    else:
                        children = []
                    value = callback(children)
                    state_stack.append(table[state_stack[-1]][origin][1])
                    value_stack.append(value)
            end_token = (Token.new_borrow_pos("$END", "", token) if token
                         else Token("$END", "", 0, 1, 1))
            return state.feed_token(end_token, True)
        except UnexpectedInput as e:
            e.interactive_parser = InteractiveParser(self, state, state.lexer)
            raise e

    def _table(self, conf: ParseConf[Any]) -> _Steps:
        cached: _Steps | None = getattr(self, "_steps", None)
        if cached is None or cached.conf.callbacks is not conf.callbacks:
            cached = self._steps = _Steps(conf)
        return cached


class _Steps(dict[Any, dict[str, tuple[int, Any]]]):
    """Lark's action table with each step spelled for the loop: (-1, next state) to shift,
    (size, (callback, rule name)) to reduce; a state's row is made when it is first met."""

    def __init__(self, conf: ParseConf[Any]) -> None:
        super().__init__()
        self.conf = conf

    def __missing__(self, state: Any) -> dict[str, tuple[int, Any]]:
        callbacks = self.conf.callbacks
        row = self[state] = {
            symbol: (-1, arg) if action is Shift else (
                len(arg.expansion), (callbacks[arg], arg.origin.name))
            for symbol, (action, arg) in self.conf.states[state].items()}
        return row


class FastLALR(LALR_Parser):
    """Plugged in with `_plugins={"LALR_Parser": ...}`: Lark's LALR parser with _FastLoop."""

    def __init__(self, parser_conf: Any, debug: bool = False, strict: bool = False) -> None:
        super().__init__(parser_conf, debug, strict)
        self.parser = _FastLoop(self._parse_table, parser_conf.callbacks, debug)

    @classmethod
    def deserialize(  # type: ignore[override]  # Lark's own override adds the arguments
            cls, data: Any, memo: Any, callbacks: Any, debug: bool = False) -> Any:
        inst = super().deserialize(data, memo, callbacks, debug)  # type: ignore[no-untyped-call]
        inst.parser = _FastLoop(inst._parse_table, callbacks, debug)
        return inst


PLUGINS = {"ContextualLexer": FastContextualLexer, "LALR_Parser": FastLALR}
