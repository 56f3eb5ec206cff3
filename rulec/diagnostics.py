"""Source files, spans and diagnostics: the only place where errors are formatted.

Error codes are stable and grouped by kind:
  E01xx syntax        E02xx names, includes, definitions
  E03xx semantics     E04xx unsupported by the chosen target
  E05xx a ruleset dump read back (rulec import, diff)   E06xx Kubernetes   E07xx Docker
  E08xx a packet given to `rulec explain`
  W0xxx warnings
"""

from __future__ import annotations

import bisect
import enum
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, eq=False)
class SourceFile:
    """One input text and its name; compared by identity, so spans stay cheap to hash."""

    name: str
    text: str
    _line_starts: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        starts = [0, *(m.end() for m in re.finditer("\n", self.text))]
        object.__setattr__(self, "_line_starts", tuple(starts))

    def line_text(self, line: int) -> str:
        """The text of a 1-based line, without its newline."""
        start, end = self.line_bounds(line)
        return self.text[start:end]

    def line_bounds(self, line: int) -> tuple[int, int]:
        """Offsets [start, end) of a 1-based line without its newline ((0, 0) past the end)."""
        if not 1 <= line <= len(self._line_starts):
            return 0, 0
        start = self._line_starts[line - 1]
        if line < len(self._line_starts):
            return start, self._line_starts[line] - 1
        return start, len(self.text)

    @property
    def line_count(self) -> int:
        return len(self._line_starts)

    def position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of a character offset."""
        index = bisect.bisect_right(self._line_starts, offset) - 1
        return index + 1, offset - self._line_starts[index] + 1

    def span(self, start: int, end: int) -> Span:
        return Span(self, start, max(start, end))


@dataclass(frozen=True, slots=True)
class Span:
    """Character offsets [start, end) in a source file; lines and columns (1-based) are
    computed when asked for, since most spans are never shown."""

    source: SourceFile
    start: int
    end: int

    @property
    def file(self) -> str:
        return self.source.name

    @property
    def line(self) -> int:
        return self.source.position(self.start)[0]

    @property
    def column(self) -> int:
        return self.source.position(self.start)[1]

    @property
    def end_line(self) -> int:
        return self.source.position(self.end)[0]

    @property
    def end_column(self) -> int:
        return self.source.position(self.end)[1]

    def __str__(self) -> str:
        return f"{escape(self.source.name)}:{self.line}:{self.column}"


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A message about the input, with the span it concerns and optional notes."""

    severity: Severity
    code: str
    message: str
    span: Span | None = None
    notes: tuple[str, ...] = ()

    def render(self) -> str:
        return render(self)


def error(code: str, message: str, span: Span | None, *notes: str) -> Diagnostic:
    return Diagnostic(Severity.ERROR, code, message, span, tuple(notes))


def warning(code: str, message: str, span: Span | None, *notes: str) -> Diagnostic:
    return Diagnostic(Severity.WARNING, code, message, span, tuple(notes))


class RulecError(Exception):
    """One or more errors in the input; nothing was emitted."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        # The same problem met by several rules at one place (generated rules share the span of
        # what they came from) is said once.
        self.diagnostics = tuple(dict.fromkeys(diagnostics))
        super().__init__("\n".join(d.message for d in self.diagnostics))

    @classmethod
    def single(cls, code: str, message: str, span: Span | None, *notes: str) -> RulecError:
        return cls([error(code, message, span, *notes)])

    def render(self) -> str:
        return "\n".join(render(d) for d in self.diagnostics)


class Collector:
    """Gathers diagnostics so one run reports every problem, then raises once."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def error(self, code: str, message: str, span: Span | None, *notes: str) -> None:
        self.items.append(error(code, message, span, *notes))

    def warning(self, code: str, message: str, span: Span | None, *notes: str) -> None:
        self.items.append(warning(code, message, span, *notes))

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.items.extend(diagnostics)

    @property
    def has_errors(self) -> bool:
        return any(d.severity is Severity.ERROR for d in self.items)

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.items if d.severity is Severity.WARNING)

    def raise_if_errors(self) -> None:
        if self.has_errors:
            raise RulecError(self.items)


# Characters that never reach the terminal as they are: controls (Cc: newline, ESC), format
# characters (Cf: the bidi embeddings, overrides and isolates U+202A-U+202E and U+2066-U+2069,
# the marks U+200E/U+200F/U+061C, zero-width characters, the BOM), line and paragraph
# separators, surrogates, private-use and unassigned code points, and spaces other than ' '.
# Named by category rather than left to str.isprintable(), so the rule is explicit.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _hidden(ch: str) -> bool:
    return ch != " " and unicodedata.category(ch) in _HIDDEN


def escape(text: str) -> str:
    """`text` with every hidden character written as an escape (`\\n`, `\\x1b`, `\\u202e`):
    for file names and messages, which are read, not aligned with anything."""
    if not any(_hidden(ch) for ch in text):
        return text
    return "".join(_ESCAPES.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else
                                        f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else
                                        f"\\U{ord(ch):08x}") if _hidden(ch) else ch
                   for ch in text)


def _shown_line(text: str) -> str:
    # An echoed source line keeps one column per character, so the caret stays aligned: a tab
    # is a space, any other hidden character U+FFFD.
    return "".join(" " if ch == "\t" else "\ufffd" if _hidden(ch) else ch for ch in text)


# An echoed source line is cut to this many characters around the caret, `...` marking what is
# left out (a generated policy may have one very long line).
ECHO_WIDTH = 120
_ECHO_BEFORE = 40  # characters kept before the caret, when the line is cut
_ELIDED = "..."


def _window(length: int, column: int) -> tuple[int, int]:
    """The [start, end) part of a line of `length` characters shown around a caret at the
    0-based `column`."""
    if length <= ECHO_WIDTH:
        return 0, length
    start = max(0, min(column - _ECHO_BEFORE, length - ECHO_WIDTH))
    return start, start + ECHO_WIDTH


def render(diagnostic: Diagnostic) -> str:
    """`file:line:col: error[CODE]: message`, the source line and a caret under the span."""
    head = f"{diagnostic.severity.value}[{diagnostic.code}]: {escape(diagnostic.message)}"
    span = diagnostic.span
    if span is None:
        lines = [head]
    else:
        lines = [f"{span}: {head}"]
        source = span.source
        line_start, line_end = source.line_bounds(span.line)
        length = line_end - line_start
        if length or span.line <= source.line_count:
            gutter = str(span.line)
            pad = " " * len(gutter)
            width = 1
            if span.end_line == span.line:
                width = max(1, span.end_column - span.column)
            column = span.column - 1
            width = max(1, min(width, length - column))
            # Only the shown part of the line is copied: a generated policy may be one line.
            start, end = _window(length, column)
            mark = _ELIDED if start else ""
            shown = (mark + _shown_line(source.text[line_start + start:line_start + end])
                     + (_ELIDED if end < length else ""))
            lines.append(f"{gutter:>4} | {shown}")
            caret = column - start + len(mark)
            lines.append(f"{pad:>4} | {' ' * caret}{'^' * max(1, min(width, end - column))}")
    lines.extend(f"note: {escape(note)}" for note in diagnostic.notes)
    return "\n".join(lines)
