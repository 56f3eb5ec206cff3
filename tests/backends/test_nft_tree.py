"""The nft tree: one lowering for both nft targets. It does not depend on the target, the JSON
target prints it as it is, and the text printer spells every expression of it, including
n-field concatenations and element comments the IR cannot produce yet."""

from __future__ import annotations

import json

from hypothesis import given, settings

from rulec.backends.nft.tree import set_element, to_tree
from rulec.backends.nft.vocabulary import LIMITS, LIMITS_JSON
from rulec.backends.nftables import print_script as print_text
from rulec.backends.nftables_json import print_script as print_json
from rulec.diagnostics import RulecError
from rulec.ir.nodes import Ruleset
from rulec.ir.verify import verify
from tests.backends.nft_fixtures import representative
from tests.backends.trio_tree import TRIO_TEXT, trio_script
from tests.strategies import rulesets


def _tree_or_codes(ruleset: Ruleset, limits: object) -> object:
    try:
        verify(ruleset, limits)  # type: ignore[arg-type]
        return to_tree(ruleset, limits)  # type: ignore[arg-type]
    except RulecError as exc:
        return sorted((d.code, str(d.span)) for d in exc.diagnostics)


@settings(max_examples=100, deadline=None)
@given(rulesets())
def test_the_tree_is_the_same_for_text_and_json(ruleset: Ruleset) -> None:
    """The limits only name the target in errors (and JSON refuses a few strings more)."""
    as_text, as_json = _tree_or_codes(ruleset, LIMITS), _tree_or_codes(ruleset, LIMITS_JSON)
    if isinstance(as_json, list):  # refused: by text too, or for what only JSON cannot carry
        shared = as_text if isinstance(as_text, list) else []
        assert set(shared) <= set(as_json), (as_text, as_json)
        assert {code for code, _ in set(as_json) - set(shared)} <= {"E0409", "E0408"}, as_json
    else:
        assert as_text == as_json


def test_json_is_the_tree_laid_out_as_commands() -> None:
    script = to_tree(representative(), LIMITS_JSON)
    commands = json.loads(print_json(script))["nftables"]
    table = script.tables[0]
    assert {"add": {"table": table.table}} in commands
    rules = [c["add"]["rule"] for c in commands if "rule" in c.get("add", {})]
    assert rules == [r for t in script.tables for c in t.chains for r in c.rules]
    for t in script.tables:  # in each table, a jump's target exists before any rule
        ident = (t.table["family"], t.table["name"])
        kinds = [kind for kind, body in (next(iter(c["add"].items())) for c in commands
                                         if "add" in c and "table" not in c["add"])
                 if (body["family"], body["table"]) == ident]
        assert kinds == sorted(kinds, key=["set", "chain", "rule"].index)


def test_text_spells_three_field_concatenations_and_element_comments() -> None:
    text = print_text(trio_script())
    assert text.split("\n\n", 1)[1] == TRIO_TEXT


def test_an_element_without_a_note_is_the_bare_value() -> None:
    assert set_element("198.18.0.1") == "198.18.0.1"
    assert set_element({"range": [1, 2]}, "t") == {"elem": {"val": {"range": [1, 2]},
                                                            "comment": "t"}}
