"""Provenance survives the optimiser: on a policy with a comment per term, the merged output
still names every term that decides a packet, and an element names only terms whose rule
really holds it (rulec.ir.provenance)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rulec import api
from rulec.ir import nodes as ir
from rulec.ir.provenance import NOTED_FIELDS, element_terms, terms_of
from rulec.ir.values import AddressSet, PortSet
from rulec.passes import PassContext, run_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import enterprise_policy


def _spans(value: AddressSet | PortSet) -> list[tuple[object, int, int]]:
    if isinstance(value, AddressSet):
        return [(p.family, p.first, p.last) for p in value.prefixes]
    return [(None, low, high) for low, high in value.ranges]


def _overlaps(value: AddressSet | PortSet | None, element: tuple[object, int, int]) -> bool:
    if value is None:
        return True
    family, low, high = element
    return any(f is family and lo <= high and low <= hi for f, lo, hi in _spans(value))


@pytest.fixture(scope="module")
def policy() -> ir.Ruleset:
    return api.parse_text(enterprise_policy.to_rulec(enterprise_policy.generate(400, seed=7)))


@pytest.mark.parametrize("named_sets", [False, True], ids=["iptables", "nft"])
def test_every_surviving_term_is_named_and_every_note_is_true(policy: ir.Ruleset,
                                                               named_sets: bool) -> None:
    ctx = PassContext(named_sets=named_sets, verify=True)
    out, _ = run_pipeline(policy, ctx)
    by_term: dict[str, list[ir.Rule]] = {}
    for _, _, rule in ir.iter_rules(policy):
        if rule.comment is not None:
            by_term.setdefault(rule.comment, []).append(rule)
    shadowed = {d.span.line for d in ctx.warnings if d.code == "W0102" and d.span}
    named: set[str] = set()
    merged = 0
    for _, _, rule in ir.iter_rules(out):
        for entry in ir.vmap_rules(rule):
            terms = terms_of(entry)
            named.update(terms)
            merged += len(terms) > 1
            for field in NOTED_FIELDS:
                value = getattr(entry.match, field)
                if value is None:
                    continue
                named.update(t for note in value.notes for t in note)
                for element, note in zip(_spans(value), element_terms(value, terms),
                                         strict=True):
                    assert note, f"{field} element {element} of {entry} names no term"
                    for term in note:
                        assert any(_overlaps(getattr(r.match, field), element)
                                   for r in by_term[term]), (
                            f"{term} is named on {field} element {element}, which it does "
                            "not hold")
    missing = {t for t, rules in by_term.items()
               if t not in named and not all(r.span and r.span.line in shadowed for r in rules)}
    assert not missing, f"terms no longer named in the output: {sorted(missing)[:10]}"
    assert merged, "nothing merged: the test shows nothing"
