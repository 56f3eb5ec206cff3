"""Unmodelled tests kept by an opaque import (ir.Unknown): the engine tries each condition both
ways, so a difference that depends on one says so, and an answer never relies on one."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rulec import api
from rulec.analysis import render
from rulec.analysis.space import MAX_CONDITIONS, AnalysisError
from rulec.diagnostics import RulecError
from rulec.ir import nodes as ir

U32 = "-m u32 --u32 0x0>>22&0x3C@0>>16=0x50"


def _with_unknown(text: str, rule_index: int, unknown: ir.Unknown) -> ir.Ruleset:
    ruleset = api.parse_text(text)
    table = ruleset.tables[0]
    chain = table.chains[0]
    rules = list(chain.rules)
    rules[rule_index] = replace(rules[rule_index],
                                match=replace(rules[rule_index].match, unknown=unknown))
    return replace(ruleset, tables=(replace(table, chains=(replace(chain, rules=tuple(rules)),
                                                           *table.chains[1:])),))


POLICY = "table ip filter {\n  chain INPUT policy drop {\n    accept tcp dport 22\n  }\n}\n"


def test_a_rule_that_also_needs_an_unmodelled_test_differs_only_where_it_fails() -> None:
    opaque = _with_unknown(POLICY, 0, ir.Unknown(holds=frozenset({U32})))
    result = api.diff(api.parse_text(POLICY), opaque)
    [change] = result.changes
    assert change.kind == "newly dropped"
    assert change.assumes == (frozenset(), frozenset({U32}))
    assert U32 not in change.witness.holds and change.witness.dport == 22
    text = render.text(result)
    assert f"where `{U32}` does not hold, which rulec does not model" in text
    assert "tried both ways" in text
    assert render.document(result)["unmodelled"] == [U32]


def test_the_same_unmodelled_test_on_both_sides_is_equivalent_and_says_what_it_tried() -> None:
    opaque = _with_unknown(POLICY, 0, ir.Unknown(fails=frozenset({U32})))
    result = api.diff(opaque, opaque)
    assert result.equivalent
    assert f"`{U32}`" in render.text(result) and f"`{U32}`" in render.markdown(result)


def test_a_negated_condition_is_the_complement() -> None:
    holds = _with_unknown(POLICY, 0, ir.Unknown(holds=frozenset({U32})))
    fails = _with_unknown(POLICY, 0, ir.Unknown(fails=frozenset({U32})))
    changes = api.diff(holds, fails).changes  # accepted exactly where the other is not
    assert {(c.kind, c.assumes) for c in changes} == {
        ("newly dropped", (frozenset({U32}), frozenset())),
        ("newly accepted", (frozenset(), frozenset({U32})))}


def test_too_many_conditions_is_an_analysis_error_not_a_guess() -> None:
    body = "\n".join("    accept tcp dport 22" for _ in range(MAX_CONDITIONS + 1))
    text = f"table ip filter {{\n  chain INPUT policy drop {{\n{body}\n  }}\n}}\n"
    ruleset = api.parse_text(text)
    chain = ruleset.tables[0].chains[0]
    rules = tuple(replace(r, match=replace(r.match, unknown=ir.Unknown(
        holds=frozenset({f"cond{i}"})))) for i, r in enumerate(chain.rules))
    opaque = replace(ruleset, tables=(replace(ruleset.tables[0],
                                              chains=(replace(chain, rules=rules),)),))
    with pytest.raises(AnalysisError, match="at most 12"):
        api.diff(opaque, opaque)


def test_no_target_compiles_an_unmodelled_test() -> None:
    opaque = _with_unknown(POLICY, 0, ir.Unknown(holds=frozenset({U32})))
    for target in ("iptables", "nft", "nft-json"):
        with pytest.raises(RulecError) as caught:
            api.compile_ruleset(opaque, target)
        assert [d.code for d in caught.value.diagnostics] == ["E0411"]
