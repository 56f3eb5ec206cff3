"""The diff engine against its specification, the reference evaluator: for drawn pairs of
rulesets (one a mutation of the other) and packets at their boundaries,

- whenever the evaluator treats a packet differently on the two sides, the packet lies in a
  reported change (no difference is missed);
- every reported change's witness differs (diff() re-checks it on the whole rulesets);
- when the diff says equivalent, no drawn packet differs;
- the optimiser's output is equivalent to its input;
- and the same for rulesets of every table kind (DNAT, SNAT, masquerade, redirect, marks,
  MSS), probed at the values their rules test and set.

The packet space is the kernel's: an incoming packet has an input interface, a packet this
host sends has an output one and no input one; the drawn packets outside it are skipped.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rulec.analysis.diff import Diff, diff
from rulec.analysis.engine import Engine
from rulec.analysis.space import AnalysisError
from rulec.diagnostics import RulecError
from rulec.ir import nodes as ir
from rulec.ir.evaluate import Host, Packet, Path, evaluate
from rulec.ir.values import ICMP, ICMPV6, MAX_PORT, TCP, UDP, CtState, Family
from rulec.ir.verify import verify
from rulec.passes import DEFAULT_PIPELINE, PassContext, run_pipeline
from tests import strategies
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


# ------------------------------------------------------------------ every table kind

def _constants(rulesets: tuple[ir.Ruleset, ...]) -> dict[str, list]:
    """The values the rules test or set, and one past each: where packets' fates change."""
    found: dict[str, set] = {"ip": set(), "ip6": set(), "port": {0, 80, 40000, MAX_PORT},
                             "iface": {"eth0", "lo"}, "mark": {0}}
    for ruleset in rulesets:
        for _, _, rule in ir.iter_rules(ruleset):
            for flat in ir.vmap_rules(rule):
                m, action = flat.match, flat.action
                for value in (m.saddr, m.daddr):
                    for p in value.prefixes if value else ():
                        top = (1 << p.family.bits) - 1
                        found[p.family.value].update(
                            (p.first, p.last, max(p.first - 1, 0), min(p.last + 1, top)))
                for ports in (m.sport, m.dport, m.ct_orig_dport):
                    for low, high in ports.ranges if ports else ():
                        found["port"].update((low, high, max(low - 1, 0),
                                              min(high + 1, MAX_PORT)))
                for name in (m.iifname, m.oifname):
                    if name is not None:
                        found["iface"].add(name.name.rstrip("+") + ("7" if name.is_wildcard
                                                                     else ""))
                if m.mark is not None:
                    found["mark"].update((m.mark.value, m.mark.value ^ 1, m.mark.mask))
                if isinstance(action, ir.SetMark):
                    found["mark"].update((action.value, action.mask))
                if isinstance(action, ir.Dnat | ir.Snat):
                    found[action.address.family.value].add(action.address.network)
                    if action.ports:
                        found["port"].add(action.ports[0])
                if isinstance(action, ir.Redirect):
                    found["port"].add(action.ports[0])
    return {k: sorted(v) for k, v in found.items()}


@st.composite
def _probe(draw: st.DrawFn, constants: dict[str, list]) -> tuple[Packet, bool, bool]:
    family = draw(st.sampled_from((Family.IP, Family.IP6)))
    addresses = constants[family.value] or [1]
    address = st.one_of(st.sampled_from(addresses),
                        st.integers(0, (1 << family.bits) - 1))
    proto = draw(st.sampled_from((TCP, TCP, UDP, ICMP if family is Family.IP else ICMPV6, 47)))
    port = st.sampled_from(constants["port"])
    ports = proto in (TCP, UDP)
    path = draw(st.sampled_from(list(Path)))
    iface = st.sampled_from(constants["iface"])
    packet = Packet(
        family=family, proto=proto, saddr=draw(address), daddr=draw(address),
        sport=draw(port) if ports else None, dport=draw(port) if ports else None,
        ct_orig_dport=draw(st.none() | port) if ports else None,
        path=path, iif=draw(iface) if path is Path.INCOMING else None,
        oif=draw(st.none() | iface) if path is Path.INCOMING else draw(iface),
        ct_state=draw(st.sampled_from(list(CtState))),
        tcp_flags=draw(st.sampled_from(ps.PACKET_FLAGS)),
        icmp_type=draw(st.sampled_from((0, 8, 128))) if proto in (ICMP, ICMPV6) else None,
        mark=draw(st.sampled_from(constants["mark"])), under_limit=draw(st.booleans()),
        mss=draw(st.none() | st.integers(500, 1500)) if proto == TCP else None)
    return packet, draw(st.booleans()), draw(st.booleans())


@st.composite
def _edited(draw: st.DrawFn, ruleset: ir.Ruleset) -> ir.Ruleset:
    """One rule removed, two swapped, one copied elsewhere in its chain, or a policy flipped,
    in any table (nat, mangle and raw included)."""
    tables = list(ruleset.tables)
    candidates = [(t, c) for t, table in enumerate(tables) for c in range(len(table.chains))]
    if not candidates:
        return ruleset
    t, c = draw(st.sampled_from(candidates))
    chain = tables[t].chains[c]
    rules = list(chain.rules)
    edit = draw(st.sampled_from(("remove", "swap", "copy", "policy")))
    if edit == "remove" and rules:
        del rules[draw(st.integers(0, len(rules) - 1))]
    elif edit == "swap" and len(rules) > 1:
        i = draw(st.integers(0, len(rules) - 2))
        rules[i], rules[i + 1] = rules[i + 1], rules[i]
    elif edit == "copy" and rules:
        rules.insert(draw(st.integers(0, len(rules))),
                     rules[draw(st.integers(0, len(rules) - 1))])
    elif chain.is_base and tables[t].kind is not ir.TableKind.NAT:
        chain = replace(chain, policy=draw(st.sampled_from((None, ir.Policy.ACCEPT,
                                                            ir.Policy.DROP))))
    chains = list(tables[t].chains)
    chains[c] = replace(chain, rules=tuple(rules))
    tables[t] = replace(tables[t], chains=tuple(chains))
    return replace(ruleset, tables=tuple(tables))


# Drawing whole rulesets of every kind is slow (about 1 s each): 40 by default, the ci
# profile's count when it asks for more.
@settings(deadline=None, max_examples=40 if settings.default.max_examples <= 100
          else settings.default.max_examples,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.data())
def test_nat_mark_and_mss_differences_are_reported(data: st.DataObject) -> None:
    old = data.draw(strategies.rulesets())
    new = data.draw(_edited(old)) if data.draw(st.integers(0, 4)) else data.draw(
        strategies.rulesets())
    try:
        verify(new)
        result = diff(old, new)
    except RulecError:
        assume(False)  # an edit verify refuses
    except AnalysisError:
        assume(False)  # random 32-bit masks: more classes of marks than the engine tells apart
    constants = _constants((old, new))
    for packet, to_host, from_host in data.draw(st.lists(_probe(constants), min_size=10,
                                                         max_size=30)):
        host = Host(local=frozenset(
            {*(((packet.family, packet.daddr),) if to_host else ()),
             *(((packet.family, packet.saddr),) if from_host else ())}))
        _covered(result, old, new, packet, host)
