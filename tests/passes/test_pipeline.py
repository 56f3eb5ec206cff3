"""run_pipeline runs a pass again only when something it is not blind to changed since its
last run; that saves time and nothing else: the result is what running every pass in every
round (until a round changes nothing) gives. The blindness it relies on is checked here too:
aggregate_addresses only re-spells sets."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given

from rulec.api import parse_text
from rulec.ir import nodes as ir
from rulec.ir.values import AddressSet, Family, PortSet
from rulec.passes import DEFAULT_PIPELINE, MAX_ROUNDS, PASSES, PassContext, run_pipeline
from rulec.passes.aggregate_addresses import aggregate_addresses
from rulec.passes.synthesize_sets import Thresholds
from tests.passes.strategies import Case, cases
from tests.passes.test_semantics import PROPERTY

_LOW = Thresholds(map_rules=2, set_uses=2, large_set=3)
_CONTEXTS = (PassContext(), PassContext(named_sets=True),
             PassContext(named_sets=True, thresholds=_LOW))


def _every_pass_every_round(ruleset: ir.Ruleset, ctx: PassContext) -> ir.Ruleset:
    """The pipeline without skipping: each round runs every pass."""
    for _ in range(MAX_ROUNDS):
        start = ruleset
        for name in DEFAULT_PIPELINE:
            ruleset = PASSES[name](ruleset, ctx)
        if ruleset is start:
            break
    return ruleset


@PROPERTY
@given(case=cases(dispatch=True, widening=True))
def test_skipping_passes_changes_no_result(case: Case) -> None:
    for ctx in _CONTEXTS:
        expected = _every_pass_every_round(case.ruleset, ctx)
        out, _ = run_pipeline(case.ruleset, ctx)
        assert out == expected


def _values(value: AddressSet | PortSet | None) -> object:
    """The values a set holds, by brute force on its own terms: (first, last) pieces joined."""
    if value is None:
        return None
    if isinstance(value, AddressSet):
        pieces = sorted((p.family is Family.IP6, p.first, p.last) for p in value.prefixes)
    else:
        pieces = sorted((False, low, high) for low, high in value.ranges)
    joined: list[tuple[bool, int, int]] = []
    for six, low, high in pieces:
        if joined and joined[-1][0] == six and low <= joined[-1][2] + 1:
            joined[-1] = (six, joined[-1][1], max(joined[-1][2], high))
        else:
            joined.append((six, low, high))
    return value.negated, joined


_SET_FIELDS = ("saddr", "daddr", "sport", "dport", "ct_orig_dport")


@PROPERTY
@given(case=cases())
def test_aggregate_addresses_only_respells_sets(case: Case) -> None:
    """What lets run_pipeline skip remove_shadowed after it: rule for rule, the same rule but
    for sets that hold the same values."""
    out = aggregate_addresses(case.ruleset, PassContext())
    for table, new_table in zip(case.ruleset.tables, out.tables, strict=True):
        assert [c.name for c in table.chains] == [c.name for c in new_table.chains]
        for chain, new_chain in zip(table.chains, new_table.chains, strict=True):
            for rule, new in zip(chain.rules, new_chain.rules, strict=True):
                for name in _SET_FIELDS:
                    assert _values(getattr(rule.match, name)) == _values(
                        getattr(new.match, name))
                # Everything else as it was (== ignores spans, so compare them apart).
                assert _unset(rule) == _unset(new) and rule.span == new.span


def _unset(rule: ir.Rule) -> ir.Rule:
    return replace(rule, match=replace(rule.match, **dict.fromkeys(_SET_FIELDS)))


def _rounds(text: str) -> list[tuple[int, str]]:
    _, stats = run_pipeline(parse_text(text, "p.rules"), PassContext(named_sets=True))
    return [(s.round, s.name) for s in stats if s.round > 1]


def test_a_second_round_only_after_a_change_that_can_shadow() -> None:
    # Round 1 only canonicalises ({ 10.0.0.0/25, 10.0.0.128/25 } is 10.0.0.0/24) and names a
    # set used twice: nothing can be shadowed that was not, nothing can merge.
    respelled = ("table ip filter { chain INPUT {\n"
                 "accept from { 10.0.0.0/25, 10.0.0.128/25 } tcp dport 22 comment \"a\"\n"
                 "accept from { 10.0.1.0/25, 10.0.1.128/25 } udp dport 53 comment \"b\"\n"
                 "drop from { 10.0.1.0/25, 10.0.1.128/25 } tcp comment \"c\" } }")
    assert _rounds(respelled) == []
    # A merge widens the first rule, which then covers the second: round 2 removes it.
    merged = ("table ip filter { chain INPUT {\n accept from 10.0.1.0/24\n"
              "accept from 10.0.0.0/24 to 10.0.0.0/24 in eth0\n accept from 10.0.0.0/24 } }")
    assert (2, "remove_shadowed") in _rounds(merged)
