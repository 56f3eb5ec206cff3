"""The proof that the optimiser changes nothing: for drawn rulesets and packets aimed at their
boundaries, every pass, the default pipeline and the backends' lowerings give every packet the
outcome the reference evaluator gives it on the input; passes are idempotent and keep the
ruleset valid."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from rulec.backends.iptables import lower_table, select_tables
from rulec.backends.lowering import split_families
from rulec.diagnostics import RulecError
from rulec.ir import nodes as ir
from rulec.ir.evaluate import Host, Packet, evaluate
from rulec.ir.printer import print_ruleset
from rulec.ir.values import Family
from rulec.ir.verify import verify
from rulec.passes import DEFAULT_PIPELINE, PASSES, PassContext, run_pipeline
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
    out = run(case.ruleset, PassContext())
    verify(out)
    _same_outcomes(case.ruleset, out, case.packets, case.host, name)
    assert run(out, PassContext()) is out, f"{name} is not idempotent"


@PROPERTY
@given(case=cases())
def test_pipeline_preserves_outcomes(case: Case) -> None:
    out, _ = run_pipeline(case.ruleset, PassContext(verify=True), DEFAULT_PIPELINE)
    _same_outcomes(case.ruleset, out, case.packets, case.host, "the default pipeline")
    again, _ = run_pipeline(out, PassContext(verify=True), DEFAULT_PIPELINE)
    assert again == out, "the default pipeline is not idempotent"


def _iptables_view(ruleset: ir.Ruleset, family: Family) -> ir.Ruleset | None:
    """What one family's restore file holds, as IR (None: iptables refuses the ruleset)."""
    try:
        tables = tuple(lower_table(t, family) for t in select_tables(ruleset, family, "test"))
    except RulecError:
        return None
    return ir.Ruleset(tables=tables, entry_points=ruleset.entry_points)


@PROPERTY
@given(case=cases())
def test_iptables_lowering_preserves_outcomes(case: Case) -> None:
    """Family split, set expansion, multiport chunking and helper chains, with and without
    the pipeline before them: what the optimiser builds (large port and address sets) is
    what the lowering must cut up."""
    optimised, _ = run_pipeline(case.ruleset, PassContext(verify=True), DEFAULT_PIPELINE)
    for family in (Family.IP, Family.IP6):
        packets = tuple(p for p in case.packets if p.family is family)
        for source, what in ((case.ruleset, "iptables lowering"),
                             (optimised, "pipeline + iptables lowering")):
            lowered = _iptables_view(source, family)
            if lowered is not None:
                _same_outcomes(case.ruleset, lowered, packets, case.host, what)


@PROPERTY
@given(case=cases())
def test_nft_family_split_preserves_outcomes(case: Case) -> None:
    optimised, _ = run_pipeline(case.ruleset, PassContext(verify=True), DEFAULT_PIPELINE)
    _same_outcomes(case.ruleset, split_families(optimised), case.packets, case.host,
                   "pipeline + split_families")
