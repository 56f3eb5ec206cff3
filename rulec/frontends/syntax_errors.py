"""Lark's UnexpectedInput -> a positioned Diagnostic that names tokens the way users write them."""

from __future__ import annotations

from lark import Lark
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


def syntax_diagnostic(exc: UnexpectedInput, source: SourceFile, grammar: Lark) -> Diagnostic:
    """Convert a Lark parse error into E0101 (unexpected token) or E0102 (bad character)."""
    if isinstance(exc, UnexpectedCharacters):
        start = exc.pos_in_stream
        char = source.text[start] if start < len(source.text) else ""
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
        return error("E0103", "unexpected end of file", source.span(start, end),
                     "a `{` is probably not closed")
    notes = []
    if "ACCEPT" in exc.expected:
        # LALR merges lookaheads, so this state also lists top-level words; name the real choice.
        shown = f"an action ({_ACTIONS}) to start a rule, or '}}'"
        if str(token) in _CLAUSE_WORDS:
            notes.append("a rule starts with its action, e.g. `accept tcp dport 22`")
    else:
        expected = sorted({_describe(name, grammar) for name in exc.expected})
        shown = ", ".join(expected[:10]) + (", ..." if len(expected) > 10 else "")
    return error("E0101", f"unexpected {_found(exc)}; expected {shown}",
                 source.span(start, end), *notes)
