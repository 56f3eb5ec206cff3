"""Frontends: each input language -> IR. What they share is how a named input is read: `-` on
the command line is standard input, shown in diagnostics as `<stdin>`."""

from __future__ import annotations

import sys
from pathlib import Path

STDIN = Path("-")
# Standard input is read once and kept, keyed by the stream: `check` compiles the same inputs
# once per target, and a second read of a pipe would find it empty.
_read: tuple[object, bytes] | None = None


def is_stdin(path: Path) -> bool:
    return path == STDIN


def source_name(path: Path) -> str:
    """The name diagnostics give the input."""
    return "<stdin>" if is_stdin(path) else str(path)


def read_input(path: Path, limit: int | None = None) -> bytes:
    """The input's bytes (OSError if it cannot be read). Of standard input at most `limit` + 1
    bytes are read, so a caller can refuse an endless stream without holding all of it."""
    global _read
    if not is_stdin(path):
        return path.read_bytes()
    if _read is not None and _read[0] is sys.stdin:
        return _read[1]
    stream = getattr(sys.stdin, "buffer", None)
    if stream is not None:
        data: bytes = stream.read() if limit is None else stream.read(limit + 1)
    else:  # a text stream with no bytes underneath (tests, embedders)
        data = sys.stdin.read().encode("utf-8")
    _read = (sys.stdin, data)
    return data
