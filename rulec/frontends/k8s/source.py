"""YAML and JSON documents whose mappings and lists remember where each key and value was.

The parser's events are composed here, without recursion, into plain dicts, lists and scalars
with the positions kept beside the data (never as keys inside it). Scalars resolve as
Kubernetes' reader resolves them, and input that could exhaust memory or time is refused.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from rulec.diagnostics import Collector, SourceFile, Span

# A List's matchExpressions values are 10 levels deep; the bound keeps every walk shallow.
MAX_DEPTH = 64
# Aliases share what they repeat, but every later walk visits each repetition: a 450-byte
# alias bomb names 387 million values. Repetitions are bounded by this or by ALIAS_FACTOR
# times the values the file writes out, whichever is more (go-yaml bounds them likewise).
MAX_ALIAS_VALUES = 100_000
ALIAS_FACTOR = 2
# A file is read whole and each character costs ~50 bytes once composed: 32 MiB is ~1.6 GB,
# an inventory of some 150,000 pods (Kubernetes' own cluster limit).
MAX_CHARS = 32 * 1024 * 1024
# Kubernetes' reader (go-yaml v2) holds integers in 64 bits.
INT_MIN, UINT_MAX = -(1 << 63), (1 << 64) - 1
MAX_CONTROL_ERRORS = 10
# On a syntax error the pure-Python parser reads the failing document again, for messages
# that do not depend on libyaml, but only this far: it reads ~0.4 MB/s, 0.1 MB/s at worst.
MAX_REREAD = 128 * 1024

Path = tuple[str | int, ...]
# The object a path in a document belongs to and the path within it, e.g. `x/web:
# spec.ingress[0]`, given the document's root (complete, or as far as it was composed).
Where = Callable[[Any, Path], str]

# What the YAML spec forbids in a stream (PyYAML's Reader.NON_PRINTABLE), and a byte order
# mark past the start, which libyaml refuses and PyYAML reads.
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd"
                            "\U00010000-\U0010ffff]|(?<!^)\ufeff")


class Loader(yaml.SafeLoader):
    """The pure-Python parser; only its events are used."""


# libyaml's parser, where PyYAML was built with it (yaml.CSafeLoader is absent otherwise).
FastLoader: type[yaml.CSafeLoader] | None = getattr(yaml, "CSafeLoader", None)
if TYPE_CHECKING:
    AnyLoader = Loader | yaml.CSafeLoader


class YMap(dict[str, Any]):
    """A mapping that knows the span of itself, of each key and of each value."""

    span: Span
    key_spans: dict[str, Span]
    value_spans: dict[str, Span]
    size: int  # values inside it, itself included, aliases counted as often as they occur

    def value_span(self, key: str) -> Span:
        return self.value_spans.get(key, self.span)

    def key_span(self, key: str) -> Span:
        return self.key_spans.get(key, self.span)


class YList(list[Any]):
    """A list that knows the span of itself and of each item."""

    span: Span
    item_spans: list[Span]
    size: int


def size_of(value: Any) -> int:
    return value.size if isinstance(value, YMap | YList) else 1


def clip(text: str, limit: int = 64) -> str:
    """Text from the input as shown in a message: a long one is cut, so that no message is a
    megabyte."""
    return text if len(text) <= limit else f"{text[:limit // 2]}...({len(text):,} characters)"


def quote(text: str, limit: int = 64) -> str:
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit // 2]!r}...({len(text):,} characters)"


def format_path(path: Path) -> str:
    """`spec.ingress[0].from`; a very long path keeps its first and last steps."""
    steps = [f"[{p}]" if isinstance(p, int) else clip(p) for p in path]
    if len(steps) > 12:
        steps = [*steps[:6], f"[...{len(steps) - 10} more...]", *steps[-4:]]
    text = ""
    for step in steps:
        text += step if step.startswith("[") or not text else f".{step}"
    return text


# --------------------------------------------------------------------------------------------
# Scalars, resolved as go-yaml v2 resolves them for Kubernetes (sigs.k8s.io/yaml): YAML 1.1
# booleans, no base-60 numbers, timestamps kept as strings, 0o octal, 1e3 a float. One
# difference: go-yaml also reads y and n as booleans, PyYAML and most YAML 1.1 writers do not
# (they leave `ns: y` unquoted), and the upstream conformance model names a namespace y.

_TAG = "tag:yaml.org,2002:"
_WORDS: dict[str, Any] = {
    **dict.fromkeys(("yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True),
    **dict.fromkeys(("no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), None),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
# strconv.ParseInt(s, 0, 64) after go-yaml removes underscores.
_INT = re.compile(r"([-+]?)(?:0[xX]([0-9a-fA-F]+)|0[oO]([0-7]+)|0[bB]([01]+)|0([0-7]*)|"
                  r"([1-9][0-9]*))\Z")
_BASES = {2: 16, 3: 8, 4: 2, 5: 8, 6: 10}  # _INT's group -> base
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")


class OutOfRange(ValueError):
    """An integer beyond 64 bits."""


def resolve_plain(text: str) -> Any:
    """The value of a plain (unquoted, untagged) scalar; OutOfRange for a huge integer."""
    if not text or text[0] in "yYnNtTfFoO~" or text in _WORDS:
        return _WORDS.get(text, text)
    if text[0] == ".":
        return _float(text, text)
    if text[0] not in "+-0123456789":
        return text
    plain = text.replace("_", "")
    match = _INT.match(plain)
    if match is not None:
        sign, group = match.group(1), match.lastindex or 0  # the alternative that matched
        digits, base = match.group(group), _BASES[group]
        # int() of a long decimal string is slow (and refused past 4300 digits); 64 bits
        # never need more than 64 digits in any base.
        if len(digits) > 64 and len(digits.lstrip("0")) > 64:
            raise OutOfRange(text)
        value = int(digits or "0", base) * (-1 if sign == "-" else 1)
        if not INT_MIN <= value <= UINT_MAX or (value >= 1 << 63 and sign):
            raise OutOfRange(text)
        return value
    return _float(plain, text)


def _float(plain: str, text: str) -> Any:
    if _FLOAT.match(plain):
        value = float(plain)
        if not math.isinf(value):  # ParseFloat's ErrRange: go-yaml keeps the string
            return value
    return text


def short_tag(tag: str) -> str:
    return clip("!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag)


class TagError(ValueError):
    pass


def resolve_tagged(tag: str, text: str) -> Any:
    """A scalar with an explicit tag: the core schema's, as go-yaml reads them."""
    if tag in (f"{_TAG}str", "!", f"{_TAG}timestamp"):
        return text
    wanted = {f"{_TAG}int": int, f"{_TAG}float": float, f"{_TAG}bool": bool,
              f"{_TAG}null": type(None)}.get(tag)
    if wanted is None:
        raise TagError(f"the tag {short_tag(tag)} is not supported: Kubernetes objects hold "
                       "only strings, numbers, booleans, null, lists and mappings")
    value = resolve_plain(text)
    if wanted is float and type(value) is int:
        return float(value)
    if type(value) is not wanted:
        raise TagError(f"{quote(text)} is not a valid {short_tag(tag)}")
    return value


# --------------------------------------------------------------------------------------------
# Composing


class _Stop(Exception):
    """The file cannot be read further; the error is reported already."""


@dataclass(eq=False)
class _Frame:
    value: YMap | YList
    path: Path
    start: int
    anchor: str | None
    has_key: bool = False  # a mapping's key was read and its value comes next:
    key: Any = None  # that key (_BAD_KEY if it is not a string) ...
    key_span: Span | None = None
    merge: bool = False  # ... and whether it is `<<`
    merges: list[tuple[Any, Span]] = field(default_factory=list)


_KEY_NOTE = ("quote it: YAML reads yes, no, on, off, true, false, numbers and null as "
             "non-strings",)
_BAD_KEY = object()  # a key that is not a string: its value is skipped
_INVALID = object()  # a scalar reported as an error; its document is left out


@dataclass(frozen=True, slots=True)
class _Problem:
    code: str
    path: Path | None  # None: not inside any value
    message: str
    span: Span
    notes: tuple[str, ...] = ()


class _Composer:
    """Turns one loader's events into documents. Errors inside a document wait for its end,
    so that they can name the object they are in."""

    def __init__(self, source: SourceFile, loader: AnyLoader, out: Collector, where: Where,
                 bad: list[int], *, offset: int = 0, resume: _Composer | None = None) -> None:
        self.source = source
        self.loader = loader
        self.out = out
        self.where = where
        self.offset = offset  # where the loader's text starts in the file
        self.bad = bad  # offsets of control characters, claimed by the scalars holding them
        self.claimed: set[int] = set()
        self.anchors: dict[str, Any] = {}
        self.open: set[str] = set()  # anchors of collections not yet complete
        self.written = 0  # values written out in the file
        self.aliased = 0  # values repeated by aliases
        # At the start of the current document: its offset, and written, aliased, claimed.
        self.document: tuple[int, int, int, frozenset[int]] = (0, 0, 0, frozenset())
        if resume is not None:  # read `resume`'s failing document again
            _, self.written, self.aliased, claimed = resume.document
            self.claimed = set(claimed)
        self.stack: list[_Frame] = []
        self.root: Any = None
        self.root_span: Span | None = None
        self.problems: list[_Problem] = []

    def documents(self) -> Iterator[tuple[Any, Span]]:
        """The documents without errors; raises yaml.YAMLError on a syntax error."""
        loader = self.loader
        try:
            while True:
                event = loader.get_event()
                if isinstance(event, yaml.ScalarEvent):
                    self.scalar(event)
                elif isinstance(event, yaml.CollectionStartEvent):
                    self.start(event)
                elif isinstance(event, yaml.CollectionEndEvent):
                    self.end(event)
                elif isinstance(event, yaml.AliasEvent):
                    self.alias(event)
                elif isinstance(event, yaml.DocumentStartEvent):
                    self.document = (self.at(event.start_mark), self.written, self.aliased,
                                     frozenset(self.claimed))
                    self.root, self.root_span, self.stack = None, None, []
                    self.anchors, self.open = {}, set()  # anchors are per document
                elif isinstance(event, yaml.DocumentEndEvent):
                    has_errors = self.flush()
                    if self.root is not None and self.root_span is not None and not has_errors:
                        yield self.root, self.root_span
                elif isinstance(event, yaml.StreamEndEvent) or event is None:
                    break
        except _Stop:
            # So that the error can name the object: the open collections, joined up.
            for parent, child in itertools.pairwise(self.stack):
                if isinstance(parent.value, YList):
                    parent.value.append(child.value)
                elif parent.has_key and isinstance(parent.key, str) and not parent.merge:
                    parent.value.setdefault(parent.key, child.value)
            self.flush()

    # -- events

    def scalar(self, event: yaml.ScalarEvent) -> None:
        # The hottest path (a value per event): the path is only made for a problem.
        start, end = self.at(event.start_mark), self.end_of(event)
        span = self.source.span(start, max(start + 1, end))
        self.written += 1
        if self.bad:
            self.claim(start, end, self.child_path())
        text = event.value
        plain = event.tag is None and event.implicit[0]
        try:
            if plain:
                value = resolve_plain(text)
            elif event.tag is None:
                value = text  # quoted
            else:
                value = resolve_tagged(event.tag, text)
        except OutOfRange:
            self.problem("E0612", self.child_path(), f"the number {clip(text, 24)} is out of "
                         "range", span, "Kubernetes reads integers of 64 bits")
            value = _INVALID
        except TagError as exc:
            self.problem("E0612", self.child_path(), str(exc), span)
            value = _INVALID
        self.add(value, span, event.anchor, merge=plain and text == "<<")

    def start(self, event: yaml.CollectionStartEvent) -> None:
        start = self.at(event.start_mark)
        path = self.child_path()
        self.written += 1
        if len(self.stack) >= MAX_DEPTH:
            self.problem("E0611", path, f"nested more than {MAX_DEPTH} levels deep",
                         self.source.span(start, start + 1))
            raise _Stop
        mapping = isinstance(event, yaml.MappingStartEvent)
        tag = event.tag
        if tag is not None and tag not in ("!", f"{_TAG}{'map' if mapping else 'seq'}"):
            self.problem("E0612", path, f"the tag {short_tag(tag)} is not supported: "
                         "Kubernetes objects hold only strings, numbers, booleans, null, lists "
                         "and mappings", self.source.span(start, start + 1))
        value: YMap | YList
        if mapping:
            value = YMap()
            value.key_spans, value.value_spans = {}, {}
        else:
            value = YList()
            value.item_spans = []
        if event.anchor is not None:
            self.open.add(event.anchor)
        self.stack.append(_Frame(value, path, start, event.anchor))

    def end(self, event: yaml.CollectionEndEvent) -> None:
        frame = self.stack.pop()
        value = frame.value
        if isinstance(value, YMap):
            self.apply_merges(frame)
            value.size = 1 + sum(size_of(v) for v in value.values())
        else:
            value.size = 1 + sum(size_of(v) for v in value)
        value.span = self.span(frame.start, self.end_of(event), value)
        if frame.anchor is not None:
            self.open.discard(frame.anchor)
        self.add(value, value.span, frame.anchor)

    def alias(self, event: yaml.AliasEvent) -> None:
        start = self.at(event.start_mark)
        span = self.source.span(start, max(start + 1, self.end_of(event)))
        path = self.child_path()
        name = event.anchor
        if name in self.open:
            self.problem("E0612", path, f"the alias *{name} refers to a collection that "
                         "contains it", span, "a Kubernetes object is a tree, not a cycle")
            raise _Stop
        if name not in self.anchors:
            self.problem("E0601", path, f"YAML syntax error: the alias *{name} has no anchor "
                         f"&{name} before it", span)
            raise _Stop
        value = self.anchors[name]
        self.aliased += size_of(value)
        if self.aliased > max(MAX_ALIAS_VALUES, ALIAS_FACTOR * self.written):
            self.problem("E0611", path, f"aliases repeat {self.aliased:,} values up to here, "
                         f"where the file has written out {self.written:,}", span,
                         f"aliases may repeat up to {MAX_ALIAS_VALUES:,} values, or "
                         f"{ALIAS_FACTOR} times as many as the file writes out up to there")
            raise _Stop
        self.add(value, span, None)

    def at(self, mark: Any) -> int:
        return (mark.index if mark is not None else 0) + self.offset

    def end_of(self, event: yaml.Event) -> int:
        return self.at(event.end_mark if event.end_mark is not None else event.start_mark)

    # -- building

    def child_path(self) -> Path:
        if not self.stack:
            return ()
        frame = self.stack[-1]
        if isinstance(frame.value, YList):
            return (*frame.path, len(frame.value))
        if frame.has_key and isinstance(frame.key, str) and not frame.merge:
            return (*frame.path, frame.key)
        return frame.path

    def add(self, value: Any, span: Span, anchor: str | None, *, merge: bool = False) -> None:
        """Put a complete value where the parser is: the root, a list item, a key or the value
        of the key before it."""
        if anchor is not None:  # a later anchor of the same name replaces the earlier
            self.anchors[anchor] = value
            self.open.discard(anchor)
        if not self.stack:
            self.root, self.root_span = value, span
            return
        frame = self.stack[-1]
        parent = frame.value
        if isinstance(parent, YList):
            parent.append(value)
            parent.item_spans.append(span)
            return
        if not frame.has_key:
            frame.has_key, frame.key_span, frame.merge = True, span, merge
            if merge:
                frame.key = "<<"
            elif isinstance(value, str):
                frame.key = value
            else:
                if value is not _INVALID:  # else reported already
                    self.problem("E0604", frame.path, "mapping keys must be strings", span,
                                 *_KEY_NOTE if not isinstance(value, YMap | YList) else ())
                frame.key = _BAD_KEY
            return
        key, key_span = frame.key, frame.key_span
        frame.has_key, frame.key, frame.key_span = False, None, None
        assert key_span is not None
        if frame.merge:
            frame.merges.append((value, span))
        elif key is _BAD_KEY:
            pass
        elif key in parent:
            self.problem("E0610", frame.path, f"key {quote(key)} appears twice in this mapping",
                         key_span, f"first at line {parent.key_spans[key].line}")
        else:
            parent[key] = value
            parent.key_spans[key] = key_span
            parent.value_spans[key] = span

    def apply_merges(self, frame: _Frame) -> None:
        """`<<: {..}` or `<<: [{..}, ..]` (go-yaml knows merge keys): keys written in the
        mapping win, and earlier mappings of a list win over later ones."""
        target = frame.value
        assert isinstance(target, YMap)
        for value, span in frame.merges:
            sources = value if isinstance(value, YList) else [value]
            if not all(isinstance(s, YMap) for s in sources):
                self.problem("E0601", frame.path, "YAML syntax error: expected a mapping or "
                             "list of mappings for merging", span)
                continue
            for source in sources:
                for key, item in source.items():
                    if key not in target:
                        target[key] = item
                        target.key_spans[key] = source.key_spans[key]
                        target.value_spans[key] = source.value_spans[key]

    def span(self, start: int, end: int, value: Any) -> Span:
        if isinstance(value, YMap | YList) and self.source.text[start:start + 1] not in "{[":
            # A block collection ends where the next one starts; point at its first line only.
            first_line_end = self.source.text.find("\n", start)
            end = min(end, first_line_end) if first_line_end >= 0 else end
        return self.source.span(start, max(start + 1, end))

    # -- errors

    def problem(self, code: str, path: Path | None, message: str, span: Span,
                *notes: str) -> None:
        self.problems.append(_Problem(code, path, message, span, notes))

    def flush(self) -> bool:
        """Report the document's problems, naming the object; True if there were any."""
        root = self.root if self.root is not None else (
            self.stack[0].value if self.stack else None)
        for p in self.problems:
            where = self.where(root, p.path) if p.path is not None else ""
            message = f"{where}: {p.message}" if where else p.message
            self.out.error(p.code, message, p.span, *p.notes)
        found = bool(self.problems)
        self.problems = []
        return found

    def claim(self, start: int, end: int, path: Path) -> None:
        i = bisect.bisect_left(self.bad, start)
        while i < len(self.bad) and self.bad[i] < end:
            offset = self.bad[i]
            if offset not in self.claimed:
                self.claimed.add(offset)
                self.problem("E0601", path, _control_message(self.source, offset),
                             self.source.span(offset, offset + 1))
            i += 1

    def claim_remaining(self) -> None:
        """Control characters outside every value (comments, between tokens)."""
        for offset in self.bad:
            if offset not in self.claimed:
                self.out.error("E0601", _control_message(self.source, offset),
                               self.source.span(offset, offset + 1))


def _control_message(source: SourceFile, offset: int) -> str:
    if source.text[offset] == "\ufeff":
        return "a byte order mark (U+FEFF) is allowed only at the start of a file"
    return f"control character U+{ord(source.text[offset]):04X} is not allowed in YAML"


def _no_where(_root: Any, path: Path) -> str:
    return format_path(path)


def _yaml_text(text: str) -> str:
    """JSON is read as YAML; JSON may indent with tabs, YAML may not. A raw tab inside a JSON
    string is invalid anyway, so tabs become spaces and every offset stays the same."""
    if text.lstrip("\ufeff \t\r\n")[:1] in ("{", "["):
        return text.replace("\t", " ")
    return text


def documents(source: SourceFile, out: Collector,
              where: Where = _no_where) -> list[tuple[Any, Span]]:
    """Every non-empty document of a file, converted, with its span. A document with errors
    is left out; a syntax error, or input past the limits, also ends the file.

    libyaml parses a cluster's files about 2.5x faster; on a syntax error the pure-Python
    parser reads the file again, so that messages and positions do not depend on libyaml."""
    text = source.text
    if len(text) > MAX_CHARS:
        out.error("E0611", f"{source.name} has {len(text):,} characters; rulec reads files of "
                  f"up to {MAX_CHARS:,}", None)
        return []
    bad = [m.start() for m in _NON_PRINTABLE.finditer(text)]
    if bad:
        # Each becomes U+FFFD (offsets stay), so that the scalar holding it can be named.
        text = _NON_PRINTABLE.sub("\ufffd", text)
    text = _yaml_text(text)
    shown = bad[:MAX_CONTROL_ERRORS]
    found: list[tuple[Any, Span]] = []
    composer = _Composer(source, FastLoader(text) if FastLoader else Loader(text), out, where,
                         shown)
    try:
        _compose(composer, found)
    except yaml.YAMLError as exc:
        start = composer.document[0]
        if isinstance(composer.loader, Loader) or _mark(exc, 0) - start > MAX_REREAD:
            composer.flush()  # the failing document's problems found before the error
            _syntax_error(out, source, exc, 0)
        else:
            composer = _Composer(source, Loader(text[start:]), out, where, shown,
                                 offset=start, resume=composer)
            try:
                _compose(composer, found)
            except yaml.YAMLError as again:
                composer.flush()
                _syntax_error(out, source, again, start)
    composer.claim_remaining()
    _more_control(out, source, bad)
    return [] if bad else found


def _compose(composer: _Composer, found: list[tuple[Any, Span]]) -> None:
    try:
        found.extend(composer.documents())
    finally:
        composer.loader.dispose()


def _mark(exc: yaml.YAMLError, offset: int) -> int:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return (mark.index if mark is not None else 0) + offset


def _syntax_error(out: Collector, source: SourceFile, exc: yaml.YAMLError, offset: int) -> None:
    index = min(_mark(exc, offset), len(source.text))
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = exc.problem or "invalid YAML"
        notes = [exc.context] if exc.context else []
    else:
        problem, notes = str(exc), []
    out.error("E0601", f"YAML syntax error: {problem}", source.span(index, index + 1), *notes)


def _more_control(out: Collector, source: SourceFile, bad: list[int]) -> None:
    if len(bad) > MAX_CONTROL_ERRORS:
        at = bad[MAX_CONTROL_ERRORS]
        out.error("E0601", f"{len(bad) - MAX_CONTROL_ERRORS:,} more control characters, from "
                  "here on, are not shown", source.span(at, at + 1))
