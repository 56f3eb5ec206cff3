"""Lark's UnexpectedInput -> a positioned Diagnostic that names tokens the way users write them."""

from __future__ import annotations

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

from rulec.diagnostics import Diagnostic, SourceFile, error

# Regex terminals, described as a user would say them.
_DESCRIBED = {
    "NAME": "a name",
    "INT": "a number",
    "HEX": "a hex number",
    "IPV4": "an IPv4 address",
    "IPV6": "an IPv6 address",
    "STRING": "a quoted string",
    "VAR": "a $variable",
    "RANGE": "a port range",
    "_NL": "end of line",
    "$END": "end of file",
    "PROTO_NAME": "a protocol (tcp, udp, icmp, ...)",
    "SADDR": "'from'",
    "DADDR": "'to'",
    "NEG": "'!='",
}
_CLAUSE_WORDS = {"tcp", "udp", "icmp", "icmpv6", "from", "to", "saddr", "daddr", "dport", "sport",
                 "in", "out", "ct", "iifname", "oifname", "ip", "ip6", "meta"}
_ACTIONS = ("accept, drop, reject, return, jump, goto, log, dnat, snat, masquerade, redirect, "
            "mss, mark set")
_CLAUSES = "tcp, udp, from, to, sport, dport, in, out, ct, ..."
_VALUES = {"INT", "RANGE", "IPV4", "IPV6", "VAR"}


def _describe(name: str, grammar: Lark) -> str:
    if name in _DESCRIBED:
        return _DESCRIBED[name]
    for terminal in grammar.terminals:
        if terminal.name == name and isinstance(terminal.pattern, PatternStr):
            return repr(terminal.pattern.value)
    return name.lower()


def _found(exc: UnexpectedToken) -> str:
    token = exc.token
    if token.type == "$END":
        return "end of file"
    if token.type == "_NL":
        return "end of line"
    return repr(str(token))


def _one_of(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _accepted(exc: UnexpectedToken) -> set[str]:
    # LALR merges lookaheads across contexts, so exc.expected can list tokens that are wrong
    # here (e.g. rule clauses after a define's value); the interactive parser knows exactly.
    parser = exc.interactive_parser
    accepted: set[str] = (parser.accepts()  # type: ignore[no-untyped-call]
                          if parser is not None else set())
    return accepted or set(exc.expected)


def _stack(exc: UnexpectedToken) -> list[object]:
    parser = exc.interactive_parser
    return list(parser.parser_state.value_stack) if parser is not None else []


def _unclosed_brace(exc: UnexpectedToken, source: SourceFile) -> str:
    # Unreduced tokens on the value stack are the constructs still open at the end of the input.
    open_braces: list[Token] = []
    for item in _stack(exc):
        if isinstance(item, Token) and item.type in ("LBRACE", "SET_OPEN"):
            open_braces.append(item)
        elif isinstance(item, Token) and item.type == "RBRACE" and open_braces:
            open_braces.pop()
    if not open_braces or open_braces[-1].start_pos is None:
        return "a `{` is probably not closed"
    where = source.span(open_braces[-1].start_pos, open_braces[-1].start_pos + 1)
    return f"the `{{` at {where} is not closed"


def syntax_diagnostic(exc: UnexpectedInput, source: SourceFile, grammar: Lark) -> Diagnostic:
    """Convert a Lark parse error into E0101 (unexpected token), E0102 (bad character) or
    E0103 (unexpected end of file)."""
    if isinstance(exc, UnexpectedCharacters):
        start = exc.pos_in_stream if exc.pos_in_stream is not None else len(source.text)
        char = source.text[start] if start < len(source.text) else ""
        if char == '"':
            return error("E0102", "unterminated string", source.span(start, start + 1),
                         'a string ends with `"` on the same line; write \\" for a quote '
                         "inside it")
        return error("E0102", f"unexpected character {char!r}", source.span(start, start + 1))
    if isinstance(exc, UnexpectedEOF):
        end = len(source.text.rstrip())
        return error("E0103", "unexpected end of file", source.span(end, end),
                     "a `{` is probably not closed")
    assert isinstance(exc, UnexpectedToken)
    token = exc.token
    start = token.start_pos if token.start_pos is not None else len(source.text)
    end = token.end_pos if token.end_pos is not None else start
    if token.type == "_NL":
        # Point at the end of the line, not at the blank lines or comments after it.
        end = start = start
    if token.type == "$END":
        end = start = len(source.text.rstrip())
        return error("E0103", "unexpected end of file", source.span(start, end),
                     _unclosed_brace(exc, source))
    accepted = _accepted(exc)
    notes = []
    if "ACCEPT" in accepted:
        # LALR merges lookaheads, so this state also lists top-level words; name the real choice.
        shown = f"an action ({_ACTIONS}) to start a rule, or '}}'"
        if str(token) in _CLAUSE_WORDS:
            notes.append("a rule starts with its action, e.g. `accept tcp dport 22`")
        elif token.type in ("CHAIN", "TABLE"):
            notes.append("a `}` is probably missing before this line: "
                         + _unclosed_brace(exc, source))
    elif "DPORT" in accepted:
        # After an action or a clause: the rule goes on or ends.
        shown = f"a clause ({_CLAUSES}) or the end of the rule"
    else:
        shown = _one_of(sorted({_describe(name, grammar) for name in accepted}))
    top = next(reversed(_stack(exc)), None)
    after_value = (isinstance(top, Token) and top.type in _VALUES) or (
        isinstance(top, Tree) and top.data == "atom")
    if after_value and (token.type in _VALUES or token.type == "COMMA"):
        notes.append("several values make a set in braces: `{ 22, 80, 8000-8100 }`")
    return error("E0101", f"unexpected {_found(exc)}; expected {shown}",
                 source.span(start, end), *notes)
