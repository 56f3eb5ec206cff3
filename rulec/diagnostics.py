"""Source files, spans and diagnostics: the only place where errors are formatted.

Error codes are stable and grouped by kind:
  E01xx syntax        E02xx names, includes, definitions
  E03xx semantics     E04xx unsupported by the chosen target
  W0xxx warnings
"""

from __future__ import annotations

import bisect
import enum
import re
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
        if not 1 <= line <= len(self._line_starts):
            return ""
        start = self._line_starts[line - 1]
        end = self.text.find("\n", start)
        return self.text[start:] if end < 0 else self.text[start:end]

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
        return f"{self.source.name}:{self.line}:{self.column}"


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
        self.diagnostics = tuple(diagnostics)
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


def _printable(text: str) -> str:
    # Input text is echoed back; keep control characters from reaching the terminal raw.
    return "".join(ch if ch == "\t" or ch.isprintable() else "\ufffd" for ch in text)


def render(diagnostic: Diagnostic) -> str:
    """`file:line:col: error[CODE]: message`, the source line and a caret under the span."""
    head = f"{diagnostic.severity.value}[{diagnostic.code}]: {_printable(diagnostic.message)}"
    span = diagnostic.span
    if span is None:
        lines = [head]
    else:
        lines = [f"{span}: {head}"]
        text = _printable(span.source.line_text(span.line)).replace("\t", " ")
        if text or span.line <= len(span.source.text.splitlines()) + 1:
            gutter = str(span.line)
            pad = " " * len(gutter)
            width = 1
            if span.end_line == span.line:
                width = max(1, span.end_column - span.column)
            width = max(1, min(width, len(text) - span.column + 1))
            lines.append(f"{gutter:>4} | {text}")
            lines.append(f"{pad:>4} | {' ' * (span.column - 1)}{'^' * width}")
    lines.extend(f"note: {_printable(note)}" for note in diagnostic.notes)
    return "\n".join(lines)
