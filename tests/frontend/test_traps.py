"""Policies that compile cleanly today but can match no packet, or do something else than
they say, are refused with a positioned error; the look-alikes that mean what they say still
compile. Each refusal names the clause and how to write what was probably meant."""

from __future__ import annotations

import pytest

from rulec import api
from rulec.diagnostics import RulecError
from rulec.ir.evaluate import Host, Packet, Verdict, evaluate
from rulec.ir.values import TCP, Family


def _policy(table: str, chain: str, rule: str) -> str:
    return f"table {table} {{\n  chain {chain} {{\n    {rule}\n  }}\n}}\n"


REFUSED = {
    "dnat to port 0": ("ip nat", "PREROUTING", "dnat to 10.0.0.2:0 tcp", "E0302", 3, 22),
    "dnat to a range from 0": ("ip nat", "PREROUTING", "dnat to 10.0.0.2:0-80 tcp", "E0302",
                               3, 22),
    "snat to port 0": ("ip nat", "POSTROUTING", "snat to 10.0.0.2:0 udp", "E0302", 3, 22),
    "redirect to port 0": ("ip nat", "PREROUTING", "redirect to 0 tcp", "E0302", 3, 17),
    "ipv6 dnat to port 0": ("ip6 nat", "PREROUTING", "dnat to [2001:db8::1]:0 tcp", "E0302",
                            3, 27),
    "ct state != every state": (
        "inet filter", "INPUT", "accept ct state != invalid,established,related,new,untracked",
        "E0318", 3, 5),
    "dport != every port": ("ip filter", "INPUT", "accept tcp dport != { 0-100, 101-65535 }",
                            "E0318", 3, 5),
    "sport != 0-65535": ("ip filter", "INPUT", "accept udp sport != 0-65535", "E0318", 3, 5),
    "ct original dport != every port": (
        "ip nat", "PREROUTING", "accept tcp ct original dport != 0-65535", "E0318", 3, 5),
    "type != every icmp type": (
        "ip filter", "INPUT",
        "accept icmp type != { " + ", ".join(map(str, range(256))) + " }", "E0318", 3, 5),
    "mark != anything under an empty mask": ("ip filter", "INPUT", "accept mark != 0x0/0x0",
                                             "E0318", 3, 5),
    "flags != none / none": ("ip filter", "INPUT", "accept tcp flags != none / none", "E0318",
                             3, 5),
    "from != 0.0.0.0/0 in ip": ("ip filter", "INPUT", "drop from != 0.0.0.0/0", "E0318", 3, 5),
    "to != ::/0 in ip6": ("ip6 filter", "OUTPUT", "drop to != ::/0", "E0318", 3, 5),
    "from != two halves of IPv4": ("ip filter", "INPUT",
                                   "drop from != { 0.0.0.0/1, 128.0.0.0/1 }", "E0318", 3, 5),
    "inet rule of IPv4 only, its whole family excluded": (
        "inet filter", "INPUT", "drop family ip from != 0.0.0.0/0", "E0318", 3, 5),
    "inet, both families excluded": (
        "inet filter", "INPUT", "drop from != { 0.0.0.0/0, ::/0 }", "E0318", 3, 5),
    "inet, each family excluded by one side": (
        "inet filter", "INPUT", "drop from != 0.0.0.0/0 to != ::/0", "E0318", 3, 5),
    "ipv6 nat target read as address:port": (
        "ip6 nat", "PREROUTING", "dnat to 2001:db8::1:8080 tcp", "E0319", 3, 13),
    "ipv6 nat target, short form": ("ip6 nat", "OUTPUT", "dnat to ::1:80 tcp", "E0319", 3, 13),
    "drop in nat": ("ip nat", "PREROUTING", "drop tcp dport 22", "E0315", 3, 5),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_trap_is_a_positioned_error(name: str) -> None:
    table, chain, rule, code, line, column = REFUSED[name]
    with pytest.raises(RulecError) as info:
        api.parse_text(_policy(table, chain, rule), "trap.rules")
    (first, *_) = info.value.diagnostics
    assert (first.code, first.span is not None) == (code, True), info.value.render()
    assert first.span is not None
    assert (first.span.file, first.span.line, first.span.column) == ("trap.rules", line, column)
    assert first.notes, "say what to write instead"


MEANT = {
    "dnat to port 1": ("ip nat", "PREROUTING", "dnat to 10.0.0.2:1 tcp"),
    "dnat without a port": ("ip nat", "PREROUTING", "dnat to 10.0.0.2 tcp dport 0"),
    "ipv6 address alone": ("ip6 nat", "PREROUTING", "dnat to 2001:db8::1 tcp"),
    "ipv6 address ending in a number group, bracketed": (
        "ip6 nat", "PREROUTING", "dnat to [2001:db8::1:8080] tcp"),
    "ipv6 address and port": ("ip6 nat", "PREROUTING", "dnat to [2001:db8::1]:8080 tcp"),
    "ipv6 address ending in hex letters": ("ip6 nat", "PREROUTING", "dnat to 2001:db8::1:beef"),
    "ipv6 full form": ("ip6 nat", "PREROUTING", "dnat to 2001:db8:0:0:0:0:0:1"),
    "ct state != all but one": (
        "inet filter", "INPUT", "accept ct state != invalid,established,related,new"),
    "dport != all but one port": ("ip filter", "INPUT", "accept tcp dport != { 0-21, 23-65535 }"),
    "inet: from != all IPv4 keeps IPv6": ("inet filter", "INPUT", "drop from != 0.0.0.0/0"),
    "inet: all IPv4, and IPv6 outside a prefix": (
        "inet filter", "INPUT", "drop from != { 0.0.0.0/0, 2001:db8::/32 }"),
    "positive catch-all": ("ip filter", "INPUT", "accept from 0.0.0.0/0 tcp dport 0-65535"),
    "mark under an empty mask matches all": ("ip filter", "INPUT", "accept mark 0x0/0x0"),
    "return in nat": ("ip nat", "PREROUTING", "return tcp dport 22"),
}


@pytest.mark.parametrize("name", list(MEANT))
def test_look_alike_that_means_what_it_says_compiles(name: str) -> None:
    table, chain, rule = MEANT[name]
    ruleset = api.parse_text(_policy(table, chain, rule), "meant.rules")
    for target in api.TARGETS:
        try:
            api.emit(ruleset, target)
        except RulecError as exc:  # only a target limit, never the traps above
            assert all(d.code.startswith("E04") for d in exc.diagnostics), exc.render()


def test_inet_negated_ipv4_catch_all_matches_every_ipv6_packet() -> None:
    """The documented inet semantics the E0318 check must keep: a negated set only restricts
    its own family, so this rule drops all IPv6 and no IPv4."""
    ruleset = api.parse_text(_policy("inet filter", "INPUT", "drop from != 0.0.0.0/0"))
    host = Host(local=frozenset({(Family.IP, 0xC6120202), (Family.IP6, 2)}))
    v4 = Packet(family=Family.IP, proto=TCP, saddr=0xC6120101, daddr=0xC6120202, sport=1,
                dport=22)
    v6 = Packet(family=Family.IP6, proto=TCP, saddr=1, daddr=2, sport=1, dport=22)
    assert evaluate(ruleset, v4, host).verdict is Verdict.ACCEPT
    assert evaluate(ruleset, v6, host).verdict is Verdict.DROP
