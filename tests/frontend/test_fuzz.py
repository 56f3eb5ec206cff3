"""Parser fuzzing: whatever the input, `parse_text` returns a ruleset or raises RulecError, and
`rulec check` answers with diagnostics, never a traceback.

Inputs come from the real grammar (hypothesis' from_lark, with realistic values for the regex
terminals) and from random edits of known texts (examples, docs, error cases).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark import Lark
from lark.lexer import PatternStr

from rulec import cli
from rulec.api import parse_text
from rulec.diagnostics import RulecError
from rulec.frontends.grammar import OPTIONS, grammar_text

# Built from the grammar, not Lark's cache: from_lark needs the grammar object it keeps.
_PARSER = Lark(grammar_text(), **OPTIONS)


def parser() -> Lark:
    return _PARSER

ROOT = Path(__file__).resolve().parents[2]
SEEDS = [p.read_text(encoding="utf-8", errors="replace") for p in [
    *sorted((ROOT / "examples").glob("*.rules")),
    *sorted((ROOT / "tests" / "errors" / "cases").glob("*.rules")),
]] + [m.group(1) for m in re.finditer(r"```rules\n(.*?)```",
                                       (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
                                       if (ROOT / "docs" / "language.md").exists() else "",
                                       re.S)]

# Words a NAME can be in some position: families, tables, chains, states, flags, types, units...
_WORDS = ("ip", "ip6", "inet", "filter", "nat", "mangle", "raw", "INPUT", "FORWARD", "OUTPUT",
          "PREROUTING", "POSTROUTING", "accept", "drop", "established", "related", "new",
          "invalid", "untracked", "syn", "ack", "rst", "fin", "none", "echo-request",
          "neighbour-solicitation", "second", "minutes", "local", "unicast", "tcp-reset",
          "admin-prohibited", "info", "warning", "eth0", "lo", "br-x+", "tcp", "gre", "logdrop",
          "DOCKER-USER", "a.b", "x")
_VALUES: dict[str, st.SearchStrategy[str]] = {
    "NAME": st.one_of(st.sampled_from(_WORDS), st.sampled_from(_WORDS),
                      st.from_regex(r"[A-Za-z_][A-Za-z0-9_.+-]{0,16}", fullmatch=True)),
    "VAR": st.sampled_from(("$a", "$ports", "$nets", "$x")),
    "STRING": st.one_of(st.sampled_from(('""', '"x: "', '"a\\"b"', '"\\\\"', '"\\q"')),
                        st.from_regex(r'"(?:[^"\\\n]|\\[^\n]){0,12}"', fullmatch=True)),
    "HEX": st.sampled_from(("0x0", "0x1", "0xff", "0xffffffff", "0x100000000", "0XdeadBEEF")),
    "INT": st.one_of(st.sampled_from(("0", "1", "22", "255", "256", "65535", "65536", "10000",
                                      "99999999999999999999")), st.integers(0, 70000).map(str)),
    "RANGE": st.one_of(st.sampled_from(("1-2", "80-8080", "8080-80", "0-65535", "1-70000")),
                       st.tuples(st.integers(0, 70000), st.integers(0, 70000)).map(
                           lambda t: f"{t[0]}-{t[1]}")),
    "IPV4": st.one_of(st.sampled_from(("10.0.0.1", "10.0.0.0/8", "10.0.0.1/8", "0.0.0.0/0",
                                       "192.168.300.1", "1.2.3.4/33", "01.2.3.4")),
                      st.ip_addresses(v=4).map(str)),
    "IPV6": st.one_of(st.sampled_from(("::", "::1", "::/0", "2001:db8::/32", "fe80::1/10",
                                       "::ffff:1.2.3.4", "1::2::3", ":", "2001:db8::/129")),
                      st.ip_addresses(v=6).map(str)),
    "_NL": st.sampled_from(("\n", "\n  ", "\n\n# comment\n", "\r\n")),
    "WS_INLINE": st.just(" "),
    "COMMENT": st.just(" "),  # a comment mid-line would swallow the rest of the line
}


def _terminal_strategies(start: str) -> dict[str, st.SearchStrategy[str]]:
    """Every terminal followed by a space: from_lark joins tokens with nothing between them."""
    terminals, _, ignored = parser().grammar.compile([start], ())
    used = {t.name for t in terminals} | set(ignored)
    explicit = {}
    for terminal in parser().terminals:
        if terminal.name not in used:
            continue
        if terminal.name in _VALUES:
            base = _VALUES[terminal.name]
        elif isinstance(terminal.pattern, PatternStr):
            base = st.just(terminal.pattern.value)
        else:  # keyword alternations such as PROTO_NAME, SADDR, NEG
            base = st.from_regex(terminal.pattern.to_regexp(), fullmatch=True)
        explicit[terminal.name] = base.map(lambda text: text + " ")
    return explicit


POLICIES = from_lark(parser(), start="start", explicit=_terminal_strategies("start"))

# Whole files rarely get past `table <random name> <random name>`; rules drawn alone and put in
# a valid table and chain reach the lowering of every clause and action.
_PRELUDE = ("define a = 22\ndefine ports = { 80, 443 }\ndefine nets = { 10.0.0.0/8, ::1 }\n"
            "define x = 10.0.0.1\n")
_PLACES = st.sampled_from((("ip filter", "INPUT"), ("inet filter", "FORWARD"),
                           ("ip6 filter", "OUTPUT"), ("ip nat", "PREROUTING"),
                           ("ip6 nat", "POSTROUTING"), ("inet mangle", "FORWARD"),
                           ("ip raw", "PREROUTING"), ("inet filter", "logdrop")))
RULES = st.tuples(_PLACES, st.lists(from_lark(parser(), start="rule",
                                              explicit=_terminal_strategies("rule")),
                                    min_size=1, max_size=3)).map(
    lambda t: f"{_PRELUDE}table {t[0][0]} {{\n  chain {t[0][1]} {{\n"
              + "".join(f"    {r}\n" for r in t[1]) + "  }\n  chain logdrop {\n  }\n}\n")


def parses_or_fails_cleanly(text: str) -> None:
    try:
        parse_text(text, "fuzz.rules")
    except RulecError as exc:
        rendered = exc.render()  # rendering must not fail either
        assert exc.diagnostics and all(d.code[0] in "EW" for d in exc.diagnostics), rendered


_INSERTS = st.sampled_from((" ", "\n", "{", "}", ";", ",", "!=", "/", ":", "$x", '"', "#", "\\",
                            "\x00", "accept", "from", "to", "dport", "table", "chain", "define",
                            "include"))


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[str] | None = None,
            inserts: st.SearchStrategy[str] | None = None) -> str:
    """A seed text with a few random edits: deletions, insertions, duplications, swaps.
    By default the seeds are policies and the insertions the language's words."""
    text = draw(st.sampled_from(SEEDS if seeds is None else seeds))
    inserted = _INSERTS if inserts is None else inserts
    tokens = re.findall(r"\S+|\s+", text) or [""]
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(("delete", "insert", "duplicate", "swap", "char")))
        i = draw(st.integers(0, len(tokens) - 1))
        j = draw(st.integers(i, min(len(tokens), i + 6)))
        if edit == "delete":
            del tokens[i:j]
        elif edit == "insert":
            tokens.insert(i, draw(st.one_of(inserted, st.text(max_size=4))))
        elif edit == "duplicate":
            tokens[i:i] = tokens[i:j]
        elif edit == "swap" and j > i:
            tokens[i], tokens[j - 1] = tokens[j - 1], tokens[i]
        elif edit == "char" and tokens:
            token = tokens[i]
            k = draw(st.integers(0, len(token)))
            tokens[i] = token[:k] + draw(st.characters()) + token[k + 1:]
        if not tokens:
            tokens = [""]
    return "".join(tokens)


@given(mutated())
def test_mutated_texts_parse_or_fail_cleanly(text: str) -> None:
    parses_or_fails_cleanly(text)


@pytest.mark.slow
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.data_too_large])
@given(POLICIES)
def test_grammar_texts_parse_or_fail_cleanly(text: str) -> None:
    parses_or_fails_cleanly(text)


@pytest.mark.slow
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.data_too_large])
@given(RULES)
def test_grammar_rules_parse_or_fail_cleanly(text: str) -> None:
    parses_or_fails_cleanly(text)


def test_seeds_are_loaded() -> None:
    assert len(SEEDS) > 30


@pytest.mark.slow
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
          max_examples=settings.default.max_examples // 2)
@given(text=st.one_of(mutated(), POLICIES, RULES))
def test_check_never_prints_a_traceback(text: str,
                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.rules"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = cli.main(["check", str(path)])
    assert "Traceback" not in err.getvalue()
    # 3 is rulec's "internal error": a bug, whatever the input.
    assert code in (cli.EXIT_OK, cli.EXIT_POLICY), err.getvalue()
