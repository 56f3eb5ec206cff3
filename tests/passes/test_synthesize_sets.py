"""synthesize_sets (nft only): rules that dispatch on one key become a verdict map where
first-match order allows it exactly, and large or repeated sets become named sets."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given

from rulec.api import compile_ruleset, parse_text
from rulec.ir import nodes as ir
from rulec.ir.evaluate import Packet, evaluate
from rulec.ir.printer import print_ruleset
from rulec.ir.values import TCP, AddressSet, Family, Interface, PortSet, Prefix, Protocol
from rulec.ir.verify import verify
from rulec.passes import DEFAULT_PIPELINE, PassContext
from rulec.passes.synthesize_sets import (
    LARGE_SET,
    MIN_MAP_RULES,
    Thresholds,
    _group_keys,
    _pair_groups,
    _shared,
    synthesize,
    synthesize_sets,
)
from tests.passes.strategies import Case, cases
from tests.passes.test_semantics import PROPERTY

NFT = PassContext(named_sets=True)
CHAINS = "  chain a { accept }\n  chain b { drop }\n"


def policy(rules: list[str], family: str = "ip") -> str:
    body = "\n".join(f"    {r}" for r in rules)
    # The user chains only where a rule jumps: nft refuses a chain nothing reaches.
    chains = CHAINS if any(" a " in f"{r} " or " b " in f"{r} " for r in rules) else ""
    return f"table {family} filter {{\n  chain FORWARD {{\n{body}\n  }}\n{chains}}}\n"


def forward(ruleset: ir.Ruleset) -> tuple[ir.Rule, ...]:
    return ruleset.tables[0].chains[0].rules


def maps(ruleset: ir.Ruleset) -> list[ir.Vmap]:
    return [r.action for _, _, r in ir.iter_rules(ruleset) if isinstance(r.action, ir.Vmap)]


def synthesized(rules: list[str], family: str = "ip") -> ir.Ruleset:
    ruleset = parse_text(policy(rules, family))
    out = synthesize_sets(ruleset, NFT)
    verify(out)
    assert synthesize_sets(out, NFT) is out, "not idempotent"
    return out


# With maps of 4 or more, three plain dispatch rules and an odd one make a map only if the
# odd one joins it.
FOUR = Thresholds(map_rules=4)


def synthesized_four(rules: list[str]) -> ir.Ruleset:
    ruleset = parse_text(policy(rules))
    out = synthesize(ruleset, FOUR)
    verify(out)
    assert synthesize(out, FOUR) is out, "not idempotent"
    return out


# ------------------------------------------------------------------ verdict maps


def test_interface_dispatch_becomes_one_map_rule() -> None:
    out = synthesized(["jump a in eth0", "goto b in eth1", "accept in eth2", "drop in eth3",
                       "return in eth4", "accept tcp"])
    [vmap] = maps(out)
    assert vmap.keys == (ir.MapKey.IIFNAME,)
    assert {(v.name, type(d).__name__) for (v,), d in vmap.entries if isinstance(v, Interface)} \
        == {("eth0", "Jump"), ("eth1", "Goto"), ("eth2", "Accept"), ("eth3", "Drop"),
            ("eth4", "Return")}
    assert len(forward(out)) == 2 and forward(out)[0].match == ir.ANY
    assert "iifname vmap {" in compile_ruleset(out, "nft", passes=()).artifact.text


def test_the_map_takes_the_place_of_its_first_rule_and_keeps_the_spans() -> None:
    rules = ["accept tcp dport 22", "jump a to 10.0.0.1", "jump b to 10.0.0.2",
             "drop to 10.0.0.3", "accept to 10.0.0.4"]
    ruleset = parse_text(policy(rules), "p.rules")
    out = synthesize_sets(ruleset, NFT)
    first, vmap_rule = forward(out)
    assert first is forward(ruleset)[0]
    assert isinstance(vmap_rule.action, ir.Vmap) and vmap_rule.action.keys == (ir.MapKey.DADDR,)
    assert vmap_rule.span is not None and vmap_rule.span.line == 4
    assert [s.line for s in vmap_rule.origins] == [5, 6, 7]


def test_rules_in_between_that_cannot_meet_it_are_passed() -> None:
    """The udp and port-22 rules cannot match a packet of the map's rules, so the later
    interface rules move up to the first one."""
    out = synthesized(["jump a in eth0 tcp", "drop udp", "jump b in eth1 tcp",
                       "accept tcp dport 22 in eth9", "accept in eth2 tcp", "drop in eth3 tcp"])
    assert [type(r.action) for r in forward(out)] == [ir.Vmap, ir.Drop, ir.Accept]


def test_overlaps_are_resolved_in_first_match_order() -> None:
    """10.1.0.0/16 goes to a before the broader 10.0.0.0/8 rule is met, so the map entry of
    the later rule is what is left of it; the evaluator sees no difference."""
    rules = ["goto a to 10.1.0.0/16", "drop to 10.0.0.0/8", "goto b to 10.1.2.0/24",
             "accept to 192.168.0.0/16", "return to 172.16.0.0/12"]
    ruleset = parse_text(policy(rules))
    out = synthesize_sets(ruleset, NFT)
    verify(out)
    [vmap] = maps(out)
    entries = {type(d).__name__: v for (v,), d in vmap.entries}
    assert len(vmap.entries) == 4  # 10.1.2.0/24 lies in 10.1.0.0/16: nothing left of it
    dropped = entries["Drop"]
    assert isinstance(dropped, AddressSet)
    assert Prefix.parse("10.1.0.0/16") not in dropped.prefixes
    assert dropped.contains(Family.IP, 0x0A000000) and not dropped.contains(Family.IP, 0x0A010203)
    for address in (0x0A010203, 0x0A020000, 0x0AFFFFFF, 0xC0A80001, 0xAC100001, 0x08080808):
        packet = Packet(family=Family.IP, proto=TCP, saddr=0x01010101, daddr=address,
                        sport=1000, dport=80)
        assert evaluate(out, packet) == evaluate(ruleset, packet)
    assert "vmap {" in compile_ruleset(out, "nft", passes=()).artifact.text


def test_two_rules_make_a_map_as_nft_o_would() -> None:
    """`nft -o` maps two adjacent rules; rulec's output must never be larger than its."""
    out = synthesized(["accept ct state established,related", "drop ct state invalid",
                       "accept in lo"])
    [vmap] = maps(out)
    assert vmap.keys == (ir.MapKey.CT_STATE,) and len(forward(out)) == 2
    text = compile_ruleset(out, "nft", passes=()).artifact.text
    assert "ct state vmap { invalid : drop, established : accept, related : accept }" in text


def test_a_lone_dispatch_rule_stays_a_rule() -> None:
    assert not maps(synthesized(["jump a in eth0", "accept tcp"]))


# Each case: three rules that would make a map, and one that must not join it.
MUST_NOT_FIRE = {
    "a statement": ["jump a in eth0", "jump b in eth1", "drop in eth2", "accept in eth3 counter"],
    "a rate limit": ["jump a in eth0", "jump b in eth1", "drop in eth2",
                     "accept in eth3 limit 5/second"],
    "another match besides the key": ["jump a in eth0", "jump b in eth1", "drop in eth2 tcp",
                                       "accept in eth3"],
    "a wildcard interface": ["jump a in eth0", "jump b in eth1", "drop in eth2", "accept in wg+"],
    "a negated key": ["jump a to 10.0.0.1", "jump b to 10.0.0.2", "drop to 10.0.0.3",
                      "accept to != 10.0.0.4"],
    "not a verdict": ["jump a in eth0", "jump b in eth1", "drop in eth2", "reject in eth3"],
    "different comments": ["jump a in eth0", "jump b in eth1", "drop in eth2",
                           'accept in eth3 comment "x"'],
    "an earlier jump overlaps a later entry (the packet comes back)": [
        "jump a to 10.0.0.0/8", "goto b to 10.1.0.0/16", "drop to 10.2.0.0/16",
        "accept to 10.3.0.0/16"],
    "a rule in between that may match with another action": [
        "jump a in eth0 tcp", "jump b in eth1 tcp", "drop tcp dport 22", "accept in eth2 tcp",
        "drop in eth3 tcp"],
    "the same interface twice": ["jump a in eth0", "jump b in eth1", "drop in eth0",
                                 "accept in eth3"],
}


@pytest.mark.parametrize("rules", MUST_NOT_FIRE.values(), ids=MUST_NOT_FIRE.keys())
def test_must_not_fire(rules: list[str]) -> None:
    assert not maps(synthesized_four(rules))


def test_a_mark_set_in_between_is_judged_without_marks() -> None:
    """`mark 0x1` and `mark 0x2` keep the rule between disjoint from the later ones only while
    no mark changes; a mark set in between can make the packet meet both."""
    base = ["jump a in eth0 mark 0x1", "jump b in eth1 mark 0x1", "drop mark 0x2",
            "accept in eth2 mark 0x1", "drop in eth3 mark 0x1"]
    assert maps(synthesized_four(base))
    assert not maps(synthesized_four([*base[:2], "mark set 0x2", *base[2:]]))


def test_address_maps_hold_one_family() -> None:
    rules = ["jump a from 10.0.0.1", "jump b from 2001:db8::1", "drop from 10.0.0.2",
             "accept from 2001:db8::2", "accept from 10.0.0.3", "drop from 2001:db8::3",
             "drop from 10.0.0.4", "drop from 2001:db8::4"]
    out = synthesized(rules, "inet")
    assert sorted(len(v.entries) for v in maps(out)) == [4, 4]


def test_off_without_named_sets() -> None:
    ruleset = parse_text(policy(["jump a in eth0", "jump b in eth1", "accept in eth2",
                                 "drop in eth3"]))
    assert synthesize_sets(ruleset, PassContext()) is ruleset
    assert synthesize_sets(ruleset, NFT) is not ruleset


def test_thresholds_are_what_the_module_says() -> None:
    rules = [f"accept in eth{i}" if i % 2 else f"drop in eth{i}" for i in range(MIN_MAP_RULES)]
    assert maps(synthesized(rules))
    assert not maps(synthesized(rules[:-1]))
    assert maps(synthesize(parse_text(policy(rules[:2])), Thresholds(map_rules=2)))


# ------------------------------------------------------------------ named sets


def named(ruleset: ir.Ruleset) -> dict[str, AddressSet | PortSet]:
    found: dict[str, AddressSet | PortSet] = {}
    for _, _, rule in ir.iter_rules(ruleset):
        for value in (rule.match.saddr, rule.match.daddr, rule.match.sport, rule.match.dport):
            if value is not None and value.name is not None:
                found[value.name] = value
    return found


def test_a_repeated_set_is_named_once() -> None:
    out = synthesized(["accept tcp to { 10.0.0.1, 10.0.0.2 } dport { 80, 443 }",
                       "drop udp from { 10.0.0.1, 10.0.0.2 }",
                       "accept udp dport { 80, 443 }", "drop tcp to 10.0.0.9"])
    sets = named(out)
    assert sorted(n.split("_")[0] for n in sets) == ["addr4", "ports"]
    first, second, third, fourth = forward(out)
    assert first.match.daddr is not None and second.match.saddr is not None
    assert first.match.daddr.name == second.match.saddr.name
    assert first.match.dport is not None and third.match.dport is not None
    assert first.match.dport.name == third.match.dport.name
    assert fourth.match.daddr is not None and fourth.match.daddr.name is None
    text = compile_ruleset(out, "nft", passes=()).artifact.text
    assert f"set {first.match.daddr.name} {{" in text
    assert f"ip daddr @{first.match.daddr.name}" in text


def test_a_large_set_is_named_even_once() -> None:
    ports = ", ".join(str(1000 + 2 * i) for i in range(LARGE_SET))
    out = synthesized([f"accept tcp dport {{ {ports} }}",
                       f"accept tcp dport {{ {ports.rsplit(',', 1)[0]} }}"])
    first, second = forward(out)
    assert first.match.dport is not None and first.match.dport.name is not None
    assert second.match.dport is not None and second.match.dport.name is None


def test_never_named() -> None:
    """One element (nft compares it, no lookup), or both families (nft has no such set)."""
    out = synthesized(["accept to 10.0.0.1", "drop to 10.0.0.1",
                       "accept to { 10.0.0.1, 2001:db8::1 }", "drop to { 10.0.0.1, 2001:db8::1 }"],
                      "inet")
    assert named(out) == {}


def test_names_depend_only_on_the_content() -> None:
    rules = ["accept to { 10.0.0.1, 10.0.0.2 }", "drop from { 10.0.0.1, 10.0.0.2 }"]
    alone = named(synthesized(rules))
    with_others = named(synthesized(["drop tcp dport { 1, 2 }", *rules,
                                     "accept udp dport { 1, 2 }"]))
    assert alone.keys() < with_others.keys()


def test_the_default_pipeline_ends_with_it() -> None:
    assert DEFAULT_PIPELINE[-1] == "synthesize_sets"
    text = policy(["jump a in eth0", "jump b in eth1", "accept in eth2", "drop in eth3"])
    nft = compile_ruleset(parse_text(text), "nft").artifact.text
    assert 'iifname vmap { "eth0" : jump a, "eth1" : jump b, "eth2" : accept, ' \
        '"eth3" : drop }' in nft
    assert "vmap" not in compile_ruleset(parse_text(text), "iptables").artifact.text
    assert print_ruleset(compile_ruleset(parse_text(text), "nft").ruleset).count("# vmap") == 1


def test_a_name_the_frontend_gave_is_kept() -> None:
    # The Kubernetes frontend names peer sets after their policy; a digest would hide that.
    peers = AddressSet((Prefix.parse("198.18.0.3"), Prefix.parse("198.18.0.4")), name="x_web_in0")
    rules = tuple(ir.Rule(match=ir.Match(proto=Protocol(TCP), saddr=peers,
                                         dport=PortSet.of(port)),
                          action=ir.Accept()) for port in (80, 443))
    ruleset = ir.Ruleset(tables=(ir.Table(kind=ir.TableKind.FILTER, family=Family.IP, chains=(
        ir.Chain(name="FORWARD", hook=ir.Hook.FORWARD, rules=rules),)),))
    out = synthesize_sets(ruleset, PassContext(named_sets=True))
    assert {r.match.saddr.name for r in forward(out) if r.match.saddr} == {"x_web_in0"}
    assert synthesize_sets(out, PassContext(named_sets=True)) is out


@PROPERTY
@given(case=cases(dispatch=True))
def test_rules_that_share_a_group_share_what_the_pass_screens_by(case: Case) -> None:
    """synthesize_sets builds no group keys for a rule whose _shared() part no other rule
    of its chain has: that holds only if equal group keys (one key or a pair) mean equal
    _shared() parts."""
    rules = [r for t in case.ruleset.tables for c in t.chains for r in c.rules]
    for a, b in itertools.product(rules, repeat=2):
        groups_a = {g for _, g, _ in _group_keys(a)} | {g for g, _ in _pair_groups(a)}
        groups_b = {g for _, g, _ in _group_keys(b)} | {g for g, _ in _pair_groups(b)}
        if groups_a & groups_b:
            assert _shared(a) == _shared(b)
