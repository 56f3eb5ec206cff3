"""`rulec check`'s engine findings: rules that can never match (W0901), allow/deny
conflicts with a witness packet both rules match (W0902), and the chains too long to search
(W0903); and what they leave alone: state layering, an exception before its rule, a rule
inside an earlier one (that is W0102's)."""

from __future__ import annotations

from rulec import api
from rulec.analysis import findings as finding
from rulec.diagnostics import Diagnostic
from rulec.ir.evaluate import matches


def _found(text: str) -> list[Diagnostic]:
    return finding.findings(api.parse_text(text, "policy.rules"))


def _chain(*rules: str) -> str:
    body = "\n".join(f"    {r}" for r in rules)
    return f"table ip filter {{\n  chain INPUT policy drop {{\n{body}\n  }}\n}}\n"


def test_a_partial_overlap_of_opposite_verdicts_is_a_conflict_with_a_witness() -> None:
    [found] = _found(_chain("drop from 10.0.0.0/8 tcp dport 20-30",
                            "accept from 10.1.0.0/16 tcp dport 22-80"))
    assert found.code == "W0902" and found.span is not None and found.span.line == 4
    assert "(policy.rules:3)" in found.message and "dropped by that one" in found.message
    assert found.notes[0] == "e.g. tcp 10.1.0.1:40000 -> 192.0.2.1:22 in eth0 ct new"


def test_the_witness_matches_both_rules() -> None:
    ruleset = api.parse_text(_chain("accept tcp dport 1000-2000 from 10.0.0.0/8",
                                    "reject tcp dport 1500-3000 from 10.0.0.0/24"))
    [found] = finding.findings(ruleset)
    rules = ruleset.tables[0].chains[0].rules
    packet_text = found.notes[0]
    assert "10.0.0.1" in packet_text and ":1500" in packet_text
    # The engine's own check: both matches hold on the packet it prints.
    from rulec.analysis.engine import Engine
    from rulec.ir.values import Family

    engine = Engine.build([ruleset], Family.IP)
    tests = [engine.tests_of(r) for r in rules]
    packet = finding._witness(engine, rules[0], rules[1], tests[0], tests[1],  # type: ignore[arg-type]
                              frozenset(engine.reach(0)["INPUT"]))
    assert packet is not None and all(matches(r.match, packet) for r in rules)


def test_layering_and_exceptions_are_not_conflicts() -> None:
    assert _found(_chain("accept ct state established,related",
                         "drop from 10.0.0.0/8",              # the state rule is layering
                         "drop from 192.0.2.1",
                         "accept from 192.0.2.0/24",          # an exception before its rule
                         "accept from 10.1.0.0/16")) == []   # inside an earlier: W0102's


def test_an_input_interface_where_only_output_reaches_never_matches() -> None:
    [found] = _found("table ip filter {\n  chain OUTPUT {\n    jump checks\n  }\n"
                     "  chain checks {\n    accept in eth0\n  }\n}\n")
    assert found.code == "W0901" and found.span is not None and found.span.line == 6
    assert "only OUTPUT reaches its chain" in found.message


def test_an_address_type_its_own_addresses_rule_out_never_matches() -> None:
    [found] = _found(_chain("accept to 10.0.0.0/8 to type multicast"))
    assert found.code == "W0901" and "outside 224.0.0.0/4" in found.message


def test_a_chain_too_long_to_search_is_said(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(finding, "MAX_CONFLICT_RULES", 2)
    [found] = _found(_chain("accept from 10.0.0.1", "accept from 10.0.0.2",
                            "drop from 10.0.0.3"))
    assert found.code == "W0903" and "3 accept and deny rules, more than 2" in found.message
