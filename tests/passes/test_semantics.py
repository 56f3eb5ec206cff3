"""The proof that the optimiser changes nothing: for drawn rulesets and packets aimed at their
boundaries, every pass, the default pipeline and the backends' lowerings give every packet the
outcome the reference evaluator gives it on the input; passes are idempotent and keep the
ruleset valid."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings

from rulec.backends.iptables import lower_table, select_tables
from rulec.backends.nftables import NftBackend
from rulec.backends.nftables import lower as nft_lower
from rulec.diagnostics import RulecError
from rulec.ir import nodes as ir
from rulec.ir.evaluate import Host, Packet, evaluate
from rulec.ir.printer import print_ruleset
from rulec.ir.values import Family
from rulec.ir.verify import verify
from rulec.passes import DEFAULT_PIPELINE, PASSES, PassContext, run_pipeline
from rulec.passes.synthesize_sets import Thresholds, synthesize
from tests.passes.strategies import Case, cases

# At least 200 examples per property; a profile asking for more (ci) gets more.
EXAMPLES = max(200, settings.default.max_examples)
PROPERTY = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _same_outcomes(before: ir.Ruleset, after: ir.Ruleset, packets: tuple[Packet, ...],
                   host: Host, what: str) -> None:
    for packet in packets:
        expected, actual = evaluate(before, packet, host), evaluate(after, packet, host)
        if actual != expected:
            pytest.fail(
                f"{what} changed the outcome of {packet}\n"
                f"  before: {expected.verdict} via {[str(s) for s in expected.trace]}\n"
                f"  after:  {actual.verdict} via {[str(s) for s in actual.trace]}\n"
                f"--- input\n{print_ruleset(before)}--- output\n{print_ruleset(after)}")


@pytest.mark.parametrize("name", sorted(PASSES))
@PROPERTY
@given(case=cases())
def test_pass_preserves_outcomes(name: str, case: Case) -> None:
    run = PASSES[name]
    # named_sets: as for nft, so that synthesize_sets acts; the other passes ignore it.
    out = run(case.ruleset, PassContext(named_sets=True))
    verify(out)
    _same_outcomes(case.ruleset, out, case.packets, case.host, name)
    assert run(out, PassContext(named_sets=True)) is out, f"{name} is not idempotent"


@PROPERTY
@given(case=cases(widening=True))
def test_pipeline_preserves_outcomes(case: Case) -> None:
    out, _ = run_pipeline(case.ruleset, PassContext(verify=True), DEFAULT_PIPELINE)
    _same_outcomes(case.ruleset, out, case.packets, case.host, "the default pipeline")
    again, _ = run_pipeline(out, PassContext(verify=True), DEFAULT_PIPELINE)
    assert again == out, "the default pipeline is not idempotent"


def _iptables_view(ruleset: ir.Ruleset, family: Family,
                   ipset: bool = False) -> ir.Ruleset | None:
    """What one family's restore file holds, as IR (None: iptables refuses the ruleset)."""
    try:
        tables = tuple(lower_table(t, family, ipset=ipset)
                       for t in select_tables(ruleset, family, "test"))
    except RulecError:
        return None
    return ir.Ruleset(tables=tables, entry_points=ruleset.entry_points)


@PROPERTY
@given(case=cases())
def test_iptables_lowering_preserves_outcomes(case: Case) -> None:
    """Family split, set expansion (or, with ipsets, whole address sets), multiport chunking
    and helper chains, with and without the pipeline before them: what the optimiser builds
    (large port and address sets) is what the lowering must cut up."""
    optimised, _ = run_pipeline(case.ruleset, PassContext(verify=True), DEFAULT_PIPELINE)
    for family, ipset in itertools.product((Family.IP, Family.IP6), (False, True)):
        packets = tuple(p for p in case.packets if p.family is family)
        plain = _iptables_view(case.ruleset, family, ipset)
        if plain is None:  # iptables refuses the input itself (e.g. return + negated set)
            continue
        _same_outcomes(case.ruleset, plain, packets, case.host, "iptables lowering")
        lowered = _iptables_view(optimised, family, ipset)
        assert lowered is not None, "the pipeline made a ruleset iptables refuses"
        _same_outcomes(case.ruleset, lowered, packets, case.host,
                       "pipeline + iptables lowering")


def _nft_view(ruleset: ir.Ruleset) -> ir.Ruleset | RulecError:
    """The nft backends' lowering (family split, then their checks), as IR."""
    try:
        return nft_lower(ruleset, NftBackend.limits)
    except RulecError as error:
        return error


@PROPERTY
@given(case=cases())
def test_nft_lowering_preserves_outcomes(case: Case) -> None:
    plain = _nft_view(case.ruleset)
    if isinstance(plain, RulecError):
        return
    _same_outcomes(case.ruleset, plain, case.packets, case.host, "nft lowering")
    optimised, _ = run_pipeline(case.ruleset, PassContext(verify=True, named_sets=True),
                                DEFAULT_PIPELINE)
    lowered = _nft_view(optimised)
    if isinstance(lowered, RulecError):
        # The one refusal the passes may cause: once remove_unreachable drops a dead jump to
        # an external chain, nft sees that nothing can reach the chain (true before too).
        assert all("is never reached" in d.message for d in lowered.diagnostics), \
            f"the pipeline made a ruleset nft refuses:\n{lowered.render()}"
        return
    _same_outcomes(case.ruleset, lowered, case.packets, case.host, "pipeline + nft lowering")


# Low enough that the few rules of a drawn chain make verdict maps and named sets.
_LOW = Thresholds(map_rules=2, set_uses=2, large_set=3)


def _optimise_for_nft(ruleset: ir.Ruleset) -> ir.Ruleset:
    """The default pipeline for nft, with synthesize_sets at the low thresholds."""
    ctx = PassContext(verify=True, named_sets=True, thresholds=_LOW)
    return run_pipeline(ruleset, ctx, DEFAULT_PIPELINE)[0]


@PROPERTY
@given(case=cases(dispatch=True))
def test_verdict_maps_and_named_sets_preserve_outcomes(case: Case) -> None:
    """On chains full of rules that differ in one key (overlapping values, rules in between):
    synthesize_sets alone, at the end of the pipeline (run twice: the other passes then meet
    verdict maps), and through the nft lowering."""
    out = synthesize(case.ruleset, _LOW)
    verify(out)
    _same_outcomes(case.ruleset, out, case.packets, case.host, "synthesize_sets")
    assert synthesize(out, _LOW) is out, "synthesize_sets is not idempotent"
    optimised = _optimise_for_nft(case.ruleset)
    verify(optimised)
    _same_outcomes(case.ruleset, optimised, case.packets, case.host, "pipeline for nft")
    again = _optimise_for_nft(optimised)
    assert again == optimised, (
        f"the nft pipeline is not idempotent\n--- input\n{print_ruleset(case.ruleset)}"
        f"--- once\n{print_ruleset(optimised)}--- twice\n{print_ruleset(again)}")
    lowered = _nft_view(optimised)
    if not isinstance(lowered, RulecError):
        _same_outcomes(case.ruleset, lowered, case.packets, case.host,
                       "pipeline for nft + nft lowering")
