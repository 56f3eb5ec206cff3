"""Strict JSON (RFC 8259) parsed into values that remember where they are in the file, so that
errors about `docker inspect` output point at a line and column. The stdlib parser keeps no
positions; this one is small because JSON is."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import NoReturn

from rulec.diagnostics import RulecError, SourceFile, Span

MAX_DEPTH = 200  # deeper input is refused rather than exhausting the stack

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"')


@dataclass(frozen=True, slots=True)
class JValue:
    """A JSON value: dict[str, JValue], list[JValue], str, int, float, bool or None."""

    value: object
    span: Span
    # For objects: where each key is written (to point at a field, not only its value).
    key_spans: dict[str, Span] = field(default_factory=dict, compare=False)

    def kind(self) -> str:
        match self.value:
            case dict():
                return "an object"
            case list():
                return "an array"
            case str():
                return "a string"
            case bool():
                return "a boolean"
            case None:
                return "null"
            case _:
                return "a number"


def parse(source: SourceFile) -> JValue:
    """The document's value; RulecError E0701 at the first syntax error."""
    parser = _Parser(source)
    parser.skip()
    value = parser.value(0)
    parser.skip()
    if parser.pos != len(source.text):
        parser.fail("unexpected text after the JSON value")
    return value


class _Parser:
    def __init__(self, source: SourceFile) -> None:
        self.source = source
        self.text = source.text
        self.pos = 0

    def fail(self, message: str, start: int | None = None) -> NoReturn:
        at = self.pos if start is None else start
        raise RulecError.single("E0701", message, self.source.span(at, at + 1))

    def skip(self) -> None:
        match = _WS.match(self.text, self.pos)
        assert match is not None
        self.pos = match.end()

    def value(self, depth: int) -> JValue:
        if depth > MAX_DEPTH:
            self.fail(f"JSON nested deeper than {MAX_DEPTH} levels")
        start = self.pos
        char = self.text[start:start + 1]
        if char == "{":
            return self.object(depth)
        if char == "[":
            return self.array(depth)
        if char == '"':
            return JValue(self.string(), self.source.span(start, self.pos))
        for word, constant in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, start):
                self.pos += len(word)
                return JValue(constant, self.source.span(start, self.pos))
        match = _NUMBER.match(self.text, start)
        if match is None or match.end() == start:
            self.fail("expected a JSON value" if char else "unexpected end of file")
        assert match is not None
        self.pos = match.end()
        number = match.group()
        parsed: object = int(number) if re.fullmatch(r"-?[0-9]+", number) and len(number) < 40 \
            else float(number)
        return JValue(parsed, self.source.span(start, self.pos))

    def string(self) -> str:
        start = self.pos
        match = _STRING.match(self.text, start)
        if match is None:
            end = self.text.find('"', start + 1)
            self.fail("unterminated string" if end < 0 else "invalid string (a control "
                      "character or a bad escape)", start)
        assert match is not None
        self.pos = match.end()
        result = json.loads(match.group())
        assert isinstance(result, str)
        return result

    def expect(self, char: str) -> None:
        self.skip()
        if self.text[self.pos:self.pos + 1] != char:
            found = self.text[self.pos:self.pos + 1] or "end of file"
            self.fail(f"expected {char!r}, found {found!r}")
        self.pos += 1

    def object(self, depth: int) -> JValue:
        start = self.pos
        self.pos += 1
        items: dict[str, JValue] = {}
        keys: dict[str, Span] = {}
        self.skip()
        if self.text[self.pos:self.pos + 1] == "}":
            self.pos += 1
            return JValue(items, self.source.span(start, self.pos), keys)
        while True:
            self.skip()
            key_start = self.pos
            if self.text[key_start:key_start + 1] != '"':
                self.fail("expected a string key")
            key = self.string()
            key_span = self.source.span(key_start, self.pos)
            if key in items:
                self.fail(f"key {key!r} appears twice in one object", key_start)
            self.expect(":")
            self.skip()
            items[key] = self.value(depth + 1)
            keys[key] = key_span
            self.skip()
            if self.text[self.pos:self.pos + 1] == ",":
                self.pos += 1
                continue
            self.expect("}")
            return JValue(items, self.source.span(start, self.pos), keys)

    def array(self, depth: int) -> JValue:
        start = self.pos
        self.pos += 1
        items: list[JValue] = []
        self.skip()
        if self.text[self.pos:self.pos + 1] == "]":
            self.pos += 1
            return JValue(items, self.source.span(start, self.pos))
        while True:
            self.skip()
            items.append(self.value(depth + 1))
            self.skip()
            if self.text[self.pos:self.pos + 1] == ",":
                self.pos += 1
                continue
            self.expect("]")
            return JValue(items, self.source.span(start, self.pos))
