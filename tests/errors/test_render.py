"""render(): what reaches the terminal. A source line is cut around the caret, and file names
and messages carry no control or bidi character raw."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from rulec.diagnostics import SourceFile, error, render

ECHO_WIDTH = 120  # characters of a long source line shown around the caret

# Every code point that changes how a terminal shows the text around it, or hides itself:
# the bidi embeddings, overrides, isolates and marks among them.
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
HIDDEN = [chr(cp) for cp in range(sys.maxunicode + 1)
          if unicodedata.category(chr(cp)) in ("Cc", "Cf", "Zl", "Zp") and chr(cp) != "\t"]


def _caret_target(rendered: str) -> str:
    """The characters of the echoed line above the carets."""
    lines = rendered.splitlines()
    source, carets = lines[1].split(" | ", 1)[1], lines[2].split(" | ", 1)[1]
    start = carets.index("^")
    return source[start:start + carets.count("^")]


@pytest.mark.parametrize("position", [5, 500_000, 1_000_000 - 10])
def test_long_line_is_cut_around_the_caret(position: int) -> None:
    text = "x" * position + "accept" + "y" * (1_000_000 - position)
    source = SourceFile("long.rules", text + "\n")
    rendered = render(error("E0101", "unexpected", source.span(position, position + 6)))
    line = rendered.splitlines()[1].split(" | ", 1)[1]
    assert len(line) <= ECHO_WIDTH + 6
    assert _caret_target(rendered) == "accept"
    assert line.startswith("...") == (position > 40)
    assert line.endswith("...") == (position + ECHO_WIDTH - 40 < len(text))


def test_caret_wider_than_the_window_stops_at_its_edge() -> None:
    source = SourceFile("long.rules", "a" * 100 + "b" * 5000 + "\n")
    rendered = render(error("E0101", "unexpected", source.span(100, 5100)))
    target = _caret_target(rendered)
    assert target and set(target) == {"b"} and rendered.splitlines()[1].endswith("...")


def test_short_line_is_shown_whole() -> None:
    source = SourceFile("p.rules", "accept from from\n")
    assert render(error("E0101", "unexpected", source.span(12, 16))).splitlines()[1:] == [
        "   1 | accept from from", "     |             ^^^^"]


@pytest.mark.parametrize(("name", "shown"), [
    ("evil\nrules:1:1: error[E0000]: fake.rules", "evil\\nrules:1:1: error[E0000]: fake.rules"),
    (f"a{BIDI}b.rules", "a" + "".join(f"\\u{ord(c):04x}" for c in BIDI) + "b.rules"),
    ("esc\x1b[31mred.rules", "esc\\x1b[31mred.rules"),
    ("nul\x00.rules", "nul\\x00.rules"),
    ("plain é.rules", "plain é.rules"),
])
def test_file_name_is_escaped_wherever_it_is_printed(name: str, shown: str) -> None:
    source = SourceFile(name, "accept\n")
    other = SourceFile(name, "define a = 1\n")
    diagnostic = error("E0202", "$a is already defined", source.span(0, 6),
                       f"first defined at {other.span(7, 8)}")
    lines = render(diagnostic).splitlines()
    assert lines[0] == f"{shown}:1:1: error[E0202]: $a is already defined"
    assert lines[3] == f"note: first defined at {shown}:1:8"
    assert len(lines) == 4


@pytest.mark.parametrize("ch", HIDDEN)
def test_no_hidden_character_reaches_the_terminal(ch: str) -> None:
    source = SourceFile(f"f{ch}.rules", f"accept comment x{ch}y\n")
    rendered = render(error("E0405", f"comment contains x{ch}y", source.span(0, 6),
                            f"note x{ch}y"))
    lines = rendered.split("\n")
    assert len(lines) == 4 and not any(ch in line for line in lines), rendered


def test_bidi_override_in_a_message_is_visible() -> None:
    rendered = render(error("E0301", "unknown table \u202eelbat", None))
    assert rendered == "error[E0301]: unknown table \\u202eelbat"
