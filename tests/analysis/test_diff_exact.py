"""The diff engine against its specification, the reference evaluator: for drawn pairs of
rulesets (one a mutation of the other) and packets at their boundaries,

- whenever the evaluator treats a packet differently on the two sides, the packet lies in a
  reported change (no difference is missed);
- every reported change's witness differs (diff() re-checks it on the whole rulesets);
- when the diff says equivalent, no drawn packet differs;
- the optimiser's output is equivalent to its input.

The packet space is the kernel's: an incoming packet has an input interface, a packet this
host sends has an output one and no input one; the drawn packets outside it are skipped.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rulec.analysis.diff import Diff, diff
from rulec.analysis.engine import Engine
from rulec.diagnostics import RulecError
from rulec.ir import nodes as ir
from rulec.ir.evaluate import Host, Packet, Path, evaluate
from rulec.ir.verify import verify
from rulec.passes import DEFAULT_PIPELINE, PassContext, run_pipeline
from tests.passes import strategies as ps

# At least 300 drawn pairs; the ci profile's count when it asks for more.
_PAIRS = max(300, settings.default.max_examples)


def _possible(packet: Packet) -> bool:
    if packet.path is Path.INCOMING:
        return packet.iif is not None
    return packet.iif is None and packet.oif is not None


@st.composite
def _mutations(draw: st.DrawFn, ruleset: ir.Ruleset, pool: ps.Pool) -> ir.Ruleset:
    """The ruleset with one edit: a rule removed, two swapped, one copied, a chain's policy
    flipped, a rule's action changed, or a rule drawn from the pool put somewhere."""
    table = ruleset.tables[0]
    chain_index = draw(st.integers(0, len(table.chains) - 1))
    chain = table.chains[chain_index]
    rules = list(chain.rules)
    edit = draw(st.sampled_from(("remove", "swap", "copy", "policy", "action", "insert")))
    if edit == "policy" and chain.is_base:
        chain = replace(chain, policy=draw(st.sampled_from((None, ir.Policy.ACCEPT,
                                                            ir.Policy.DROP))))
    elif edit == "remove" and rules:
        del rules[draw(st.integers(0, len(rules) - 1))]
    elif edit == "swap" and len(rules) > 1:
        i = draw(st.integers(0, len(rules) - 2))
        rules[i], rules[i + 1] = rules[i + 1], rules[i]
    elif edit == "copy" and rules:
        rules.insert(draw(st.integers(0, len(rules))),
                     rules[draw(st.integers(0, len(rules) - 1))])
    elif edit == "action" and rules:
        i = draw(st.integers(0, len(rules) - 1))
        if not isinstance(rules[i].action, ir.Jump | ir.Goto | ir.Vmap):
            rules[i] = replace(rules[i], action=draw(st.sampled_from(
                (ir.Accept(), ir.Drop(), ir.Reject(), ir.Return()))))
    else:
        other = draw(ps.rulesets(pool))
        donor = [r for t in other.tables for c in t.chains for r in c.rules
                 if not isinstance(r.action, ir.Jump | ir.Goto | ir.Vmap)]
        if donor:
            rules.insert(draw(st.integers(0, len(rules))), draw(st.sampled_from(donor)))
    chains = list(table.chains)
    chains[chain_index] = replace(chain, rules=tuple(rules))
    return replace(ruleset, tables=(replace(table, chains=tuple(chains)),))


@st.composite
def _pairs(draw: st.DrawFn) -> tuple[ir.Ruleset, ir.Ruleset, list[tuple[Packet, Host]]]:
    pool = draw(ps.pools())
    old = draw(ps.rulesets(pool, dispatch=draw(st.booleans())))
    new = draw(_mutations(old, pool)) if draw(st.integers(0, 5)) else draw(ps.rulesets(pool))
    family = old.tables[0].family
    found = draw(st.lists(ps.packets(pool, family), min_size=8, max_size=40))
    host = draw(ps.hosts(pool))
    return old, new, [(p, host) for p in found if _possible(p)]


def _covered(result: Diff, old: ir.Ruleset, new: ir.Ruleset, packet: Packet, host: Host
             ) -> None:
    engine = Engine.build([old, new], packet.family)
    to_host = (packet.family, packet.daddr) in host.local
    from_host = (packet.family, packet.saddr) in host.local
    modelled = engine.host_for(packet, to_host=to_host, from_host=from_host)
    before, after = evaluate(old, packet, modelled), evaluate(new, packet, modelled)
    if before == after:
        return
    assert not result.equivalent, f"diff says equivalent, but {packet} differs"
    values = engine.values_of(packet, to_host=to_host, from_host=from_host)
    assert any(box.holds(values) for change in result.changes for box in change.boxes
               if box.family is packet.family), f"difference missed: {packet}"


@settings(max_examples=_PAIRS, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_pairs())
def test_every_difference_is_reported(case: tuple[ir.Ruleset, ir.Ruleset, list]) -> None:
    old, new, probes = case
    try:
        verify(new)
    except RulecError:
        assume(False)  # a drawn edit the parser would refuse (e.g. families mixed)
    result = diff(old, new)  # re-checks every witness on the whole rulesets itself
    for packet, host in probes:
        _covered(result, old, new, packet, host)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ps.cases(dispatch=True))
def test_the_optimiser_changes_no_packet(case: ps.Case) -> None:
    optimised, _ = run_pipeline(case.ruleset, PassContext(named_sets=True), DEFAULT_PIPELINE)
    result = diff(case.ruleset, optimised)
    assert result.equivalent, [c.witness for c in result.changes]


@settings(max_examples=100, deadline=None)
@given(ps.cases())
def test_a_ruleset_is_equivalent_to_itself(case: ps.Case) -> None:
    assert diff(case.ruleset, case.ruleset).equivalent
