"""The cached LALR parsers for the policy grammar, loaded from the installed package or the tree."""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import sys
from importlib import resources
from pathlib import Path

import lark
from lark import Lark, Transformer


def grammar_text() -> str:
    """The grammar: shipped as rulec/grammars/policy.lark in a wheel, grammars/ in a checkout."""
    packaged = resources.files("rulec").joinpath("grammars", "policy.lark")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "grammars" / "policy.lark").read_text("utf-8")


OPTIONS = {"parser": "lalr", "lexer": "contextual", "maybe_placeholders": True}


@functools.cache
def parser() -> Lark:
    """A parser that returns the parse tree (for tools and tests; the frontend lowers while
    it parses, with `lowering_parser`)."""
    return _build(None)


@functools.cache
def lowering_parser(callbacks: object) -> Lark:
    """A parser that calls `callbacks.<rule>(children)` as it reduces each grammar rule that
    `callbacks` has a method for, and returns what the start rule's callback (or tree) is."""
    return _build(callbacks)


def cache_file(text: str) -> str | None:
    """Where Lark keeps the parser tables it built from `text`: a file in the user's own cache
    directory ($XDG_CACHE_HOME/rulec or ~/.cache/rulec, made 0700). Lark's default is a file
    of a predictable name in the shared /tmp, and it unpickles what it finds there: another
    local user could plant code for root's next compile. None (build the tables, ~0.7 s) if
    the directory cannot be had, or is not ours alone."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):
        return None  # no home (expanduser left "~"), or a relative XDG_CACHE_HOME
    directory = Path(base) / "rulec"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.lstat()
    except OSError:
        return None
    if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid()
            or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
        return None
    # Lark checks the grammar's hash inside the file too; the name keeps installs with
    # different grammars, Lark or Python versions from overwriting each other's tables.
    key = f"{text}\0{lark.__version__}\0{sys.version_info[:2]}\0{sorted(OPTIONS.items())}"
    return str(directory / f"policy-{hashlib.sha256(key.encode()).hexdigest()[:20]}.lark")


def _build(callbacks: object) -> Lark:
    # No propagate_positions: it doubles the parse time; spans come from the tokens instead.
    # The cache takes a CLI run's start from ~0.7 s to ~0.01 s. The grammar is checked with
    # strict=True (terminal collisions are grammar bugs) by
    # tests/frontend/test_grammar_strict.py, not at every start. Lark takes any object with
    # methods named after rules as an inline transformer; a plain object (not a Transformer)
    # leaves the other rules' trees to Lark's own Tree, with no per-node default handler.
    # The lexer and LALR loop are Lark's, run faster (rulec/frontends/fast_lark.py).
    from rulec.frontends.fast_lark import PLUGINS

    text = grammar_text()
    transformer: Transformer[object, object] | None = callbacks  # type: ignore[assignment]
    return Lark(text, cache=cache_file(text) or False, transformer=transformer,
                _plugins=PLUGINS, **OPTIONS)
