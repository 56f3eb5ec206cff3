"""remove_shadowed: a rule whose every packet an earlier terminal rule of its chain decides
(one rule, or several together) is removed with warning W0102 naming where they all are; a
rule is kept whenever that is not certain."""

from __future__ import annotations

from pathlib import Path

import pytest

from rulec import cli
from rulec.api import compile_ruleset, parse_text
from rulec.diagnostics import Diagnostic, Severity
from rulec.ir import nodes as ir
from rulec.ir.printer import rule_text
from rulec.ir.values import Family, PortSet, Protocol
from rulec.ir.verify import verify
from rulec.passes import DEFAULT_PIPELINE, PassContext
from rulec.passes.remove_shadowed import CODE, remove_shadowed

USER_CHAINS = """
  chain u { accept tcp dport 80 }
  chain m { mark set 0x1 }
"""


def policy(rules: list[str], family: str = "ip") -> str:
    body = "\n".join(f"    {r}" for r in rules)
    return f"table {family} filter {{\n  chain INPUT {{\n{body}\n  }}\n{USER_CHAINS}}}\n"


def run(rules: list[str], family: str = "ip") -> tuple[list[str], list[Diagnostic]]:
    """The INPUT rules the pass keeps, and its warnings."""
    ruleset = parse_text(policy(rules, family), "policy.rules")
    ctx = PassContext()
    out = remove_shadowed(ruleset, ctx)
    verify(out)
    kept = next(c for c in out.tables[0].chains if c.name == "INPUT").rules
    return [rule_text(r) for r in kept], ctx.warnings


def removed(rules: list[str], family: str = "ip") -> list[int]:
    """Indexes of the removed rules."""
    kept, warnings = run(rules, family)
    parsed = [rule_text(r) for r in parse_text(policy(rules, family)).tables[0].chains[0].rules]
    gone = [i for i, text in enumerate(parsed) if text not in kept]
    assert len(warnings) == len(gone)
    return gone


MUST_FIRE = {
    "one earlier rule holds it": (["accept tcp dport 1-100", "drop tcp dport 50-60"], [1]),
    "two earlier rules hold it together": (
        ["accept tcp dport 1-100", "drop tcp dport 101-200", "accept tcp dport 50-150"], [2]),
    "the halves of a prefix": (
        ["accept from 10.0.0.0/25", "drop from 10.0.0.128/25", "accept from 10.0.0.0/24 tcp"],
        [2]),
    "a grid of addresses and ports": (
        ["accept from 10.0.0.0/25 tcp dport 1-10", "drop from 10.0.0.128/25 tcp dport 1-5",
         "accept from 10.0.0.128/25 tcp dport 6-10", "drop from 10.0.0.0/24 tcp dport 3-7"],
        [3]),
    "a protocol and its negation": (["accept tcp", "drop proto != tcp", "accept udp"], [2]),
    "every conntrack state": (
        ["accept ct state established,related", "drop ct state invalid",
         "accept ct state new,untracked", "drop tcp dport 22"], [3]),
    "a wildcard interface holds a name": (["accept in eth+", "drop in eth0 tcp"], [1]),
    "an interface test and its negation, packets without one included": (
        ["accept in eth+", "drop in != eth+", "accept tcp dport 22"], [2]),
    "a negated set": (["accept from != 10.0.0.0/8", "drop from 192.168.0.0/16"], [1]),
    "tcp flags and their negation": (
        ["accept tcp flags syn / syn,ack", "accept tcp flags != syn / syn,ack",
         "drop tcp dport 22"], [2]),
    "a mark under a prefix mask": (["accept mark 0x100/0xffffff00", "drop mark 0x1ff"], [1]),
    "icmp types": (["accept icmp type echo-request", "drop icmp type != echo-request",
                    "accept icmp type 3"], [2]),
    "return, reject and goto end the walk as well": (
        ["return tcp dport 1", "reject tcp dport 2", "goto u tcp dport 3",
         "accept tcp dport 1-3"], [3]),
    "a mark changed only after the rule": (
        ["accept mark 0x1", "drop mark 0x1 tcp", "mark set 0x2"], [1]),
    "whatever the shadowed rule does": (
        ["drop tcp", "log tcp dport 22", "jump u tcp dport 23", "mark set 0x1 tcp"],
        [1, 2, 3]),
}

MUST_NOT_FIRE = {
    "a jump comes back": ["jump u tcp", "accept tcp dport 22"],
    "log and mark go on": ["log tcp", "mark set 0x1 tcp", "accept tcp dport 22"],
    "a rate limit may run out": ["accept tcp limit 10/second", "drop tcp dport 22"],
    "only a part is covered": ["accept tcp dport 1-100", "drop tcp dport 50-150"],
    "a negation leaves a part": ["accept from != 10.0.0.0/8", "drop from 10.1.0.0/16"],
    "a name does not hold its wildcard": ["accept in eth0", "drop in eth+"],
    "packets without an interface": ["accept in eth+", "drop in != eth0"],
    "a conntrack state is missing": ["accept ct state established,related",
                                     "accept ct state new", "drop tcp"],
    "tcp flags say nothing of udp": ["accept tcp flags syn / syn,ack",
                                     "accept tcp flags != syn / syn,ack", "drop proto != icmp"],
    "the mark is set in between": ["accept mark 0x1", "mark set 0x1", "drop mark 0x1"],
    "a jump in between may set the mark": ["accept mark 0x1", "jump m", "drop mark 0x1"],
    "a mark mask that is not a prefix is not modelled": ["accept mark 0x1/0x1",
                                                         "drop mark 0x1"],
    "the covering rule comes later": ["drop tcp dport 22", "accept tcp"],
    "icmp does not hold icmpv6": ["accept icmp", "drop proto != tcp"],
}


@pytest.mark.parametrize("rules,gone", MUST_FIRE.values(), ids=MUST_FIRE.keys())
def test_must_fire(rules: list[str], gone: list[int]) -> None:
    assert removed(rules) == gone


@pytest.mark.parametrize("rules", MUST_NOT_FIRE.values(), ids=MUST_NOT_FIRE.keys())
def test_must_not_fire(rules: list[str]) -> None:
    ruleset = parse_text(policy(rules))
    ctx = PassContext()
    assert remove_shadowed(ruleset, ctx) is ruleset
    assert ctx.warnings == []


def test_inet_needs_both_families_covered() -> None:
    both = ["accept from 10.0.0.0/8", "accept from 2001:db8::/32",
            "drop from { 10.1.0.0/16, 2001:db8:1::/48 }"]
    assert removed(both, "inet") == [2]
    assert removed(["accept family ip tcp", "drop tcp dport 22"], "inet") == []
    assert removed(["accept family ip tcp", "accept family ip6 tcp", "drop tcp dport 22"],
                   "inet") == [2]


def test_other_chains_and_tables_do_not_shadow() -> None:
    text = """table ip filter {
      chain INPUT { accept tcp }
      chain FORWARD { drop tcp dport 22 }
    }
    table ip6 filter { chain INPUT { drop tcp dport 22 } }"""
    ruleset = parse_text(text)
    assert remove_shadowed(ruleset, PassContext()) is ruleset


def _vmap_ruleset(*later: ir.Rule) -> ir.Ruleset:
    tcp = Protocol(6)
    vmap = ir.Vmap.on(ir.MapKey.DPORT, ((PortSet.of(22), ir.Drop()), (PortSet.of(80), ir.Jump("u")),
                                        (PortSet.of(443), ir.Accept())))
    rules = (ir.Rule(match=ir.Match(proto=tcp), action=vmap), *later)
    return ir.Ruleset(tables=(ir.Table(kind=ir.TableKind.FILTER, family=Family.IP, chains=(
        ir.Chain(name="INPUT", hook=ir.Hook.INPUT, rules=rules),
        ir.Chain(name="u", rules=(ir.Rule(action=ir.Accept()),))),),))


def test_verdict_map_entries_shadow_as_their_rules() -> None:
    """The drop and accept entries end the walk; the jump entry comes back."""
    tcp = Protocol(6)
    shadowed = ir.Rule(match=ir.Match(proto=tcp, dport=PortSet.of(22, 443)), action=ir.Drop())
    ruleset = _vmap_ruleset(shadowed)
    out = remove_shadowed(ruleset, PassContext())
    assert out.tables[0].chains[0].rules == ruleset.tables[0].chains[0].rules[:1]
    kept = _vmap_ruleset(ir.Rule(match=ir.Match(proto=tcp, dport=PortSet.of(80)),
                                 action=ir.Drop()))
    assert remove_shadowed(kept, PassContext()) is kept


def test_a_verdict_map_can_be_shadowed() -> None:
    ruleset = _vmap_ruleset()
    chain = ruleset.tables[0].chains[0]
    covered = (ir.Rule(match=ir.Match(proto=Protocol(6)), action=ir.Drop()), *chain.rules)
    shadowed = ir.Ruleset(tables=(ir.Table(kind=ir.TableKind.FILTER, family=Family.IP, chains=(
        ir.Chain(name="INPUT", hook=ir.Hook.INPUT, rules=covered), ruleset.tables[0].chains[1]),
    ),))
    out = remove_shadowed(shadowed, PassContext())
    assert [type(r.action) for r in out.tables[0].chains[0].rules] == [ir.Drop]


# ------------------------------------------------------------------ warnings


def test_warning_names_the_rule_and_the_rules_that_shadow_it() -> None:
    _, warnings = run(["accept tcp dport 1-100", "drop tcp dport 101-200",
                       "accept tcp dport 50-150"])
    [w] = warnings
    assert w.severity is Severity.WARNING and w.code == CODE == "W0102"
    assert w.render().splitlines() == [
        "policy.rules:5:5: warning[W0102]: rule is shadowed: 2 earlier rules of chain INPUT "
        "together decide every packet it matches",
        "   5 |     accept tcp dport 50-150",
        "     |     ^^^^^^^^^^^^^^^^^^^^^^^",
        "note: shadowed in part by the rule at policy.rules:3:5",
        "note: shadowed in part by the rule at policy.rules:4:5",
        "note: the rule is removed; if it should take effect, move it before those rules",
    ]


def test_warning_with_one_shadowing_rule_names_it_in_the_message() -> None:
    _, [w] = run(["accept tcp dport 1-100", "drop tcp dport 50-60"])
    assert w.message == ("rule is shadowed: the rule at policy.rules:3:5 decides every packet "
                         "it matches")
    assert w.span is not None and (w.span.line, w.span.column) == (4, 5)


def test_warning_lists_at_most_four_rules() -> None:
    rules = [f"accept tcp dport {p}" for p in range(1, 7)] + ["drop tcp dport 1-6"]
    _, [w] = run(rules)
    assert w.message.startswith("rule is shadowed: 6 earlier rules")
    assert w.notes[:4] == tuple(f"shadowed in part by the rule at policy.rules:{line}:5"
                                for line in range(3, 7))
    assert w.notes[4] == "and by 2 more rules of chain INPUT"


def test_without_spans_rules_are_named_by_place() -> None:
    tcp = Protocol(6)
    rules = (ir.Rule(match=ir.Match(proto=tcp), action=ir.Accept()),
             ir.Rule(match=ir.Match(proto=tcp, dport=PortSet.of(22)), action=ir.Drop()))
    ruleset = ir.Ruleset(tables=(ir.Table(kind=ir.TableKind.FILTER, family=Family.IP, chains=(
        ir.Chain(name="INPUT", hook=ir.Hook.INPUT, rules=rules),)),))
    ctx = PassContext()
    remove_shadowed(ruleset, ctx)
    assert ctx.warnings[0].message == ("rule 2 of chain INPUT is shadowed: rule 1 of chain "
                                       "INPUT decides every packet it matches")


# ------------------------------------------------------------------ pass contract


@pytest.mark.parametrize("rules", [r for r, _ in MUST_FIRE.values()], ids=MUST_FIRE.keys())
def test_idempotent_and_quiet_the_second_time(rules: list[str]) -> None:
    once = remove_shadowed(parse_text(policy(rules)), PassContext())
    ctx = PassContext()
    assert remove_shadowed(once, ctx) is once
    assert ctx.warnings == []


def test_in_the_default_pipeline_and_reported_by_the_api(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    assert "remove_shadowed" in DEFAULT_PIPELINE
    text = ("table ip filter {\n  chain INPUT {\n    accept tcp dport 1-100\n"
            "    drop tcp dport 50-60\n  }\n}\n")
    result = compile_ruleset(parse_text(text, "p.rules"), "iptables")
    assert [w.code for w in result.warnings] == [CODE]
    assert "--dport 50:60" not in result.artifact.text
    path = tmp_path / "p.rules"
    path.write_text(text)
    assert cli.main(["compile", "--target", "nft", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"{path}:4:5: warning[W0102]: rule is shadowed" in err


def test_a_rule_covered_only_after_a_merge_goes_without_a_warning() -> None:
    """The third rule merges into the first (it may pass the second: same action), and the
    widened first rule then covers the second. The source was not wrong, so the pipeline's
    next round removes the second rule silently; rerunning the pipeline changes nothing."""
    ruleset = parse_text("table ip filter {\n  chain INPUT {\n    accept from 10.0.1.0/24\n"
                         "    accept from 10.0.0.0/24 to 10.0.0.0/24 in eth0\n"
                         "    accept from 10.0.0.0/24\n  }\n}\n", "p.rules")
    result = compile_ruleset(ruleset, "nft")
    assert [rule_text(r) for r in result.ruleset.tables[0].chains[0].rules] == [
        "accept from 10.0.0.0/23"]
    assert not [w for w in result.warnings if w.code == CODE]
    again = compile_ruleset(result.ruleset, "nft")
    assert again.ruleset == result.ruleset and not again.warnings

