"""`rulec.analysis.explain`: the packet spelling, and what the explanation of one packet says
(hooks, chains, the rules that matched with their source, verdict, rewrites)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from rulec import api
from rulec.analysis.explain import (
    Explanation,
    PacketSpec,
    as_json,
    document,
    explain,
    parse_packet,
    text,
)
from rulec.diagnostics import RulecError
from rulec.ir.evaluate import Host, Packet, Path, Verdict, evaluate
from rulec.ir.nodes import Hook, Ruleset
from rulec.ir.values import CtState, Family, TcpFlag


def _ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


# --- the spelling ---------------------------------------------------------------------------

def test_a_forwarded_tcp_packet_with_every_default() -> None:
    spec = parse_packet("tcp 198.51.100.7 -> 203.0.113.1:22")
    assert spec.packet == Packet(family=Family.IP, proto=6, saddr=_ip("198.51.100.7"),
                                 daddr=_ip("203.0.113.1"), sport=40000, dport=22,
                                 tcp_flags=frozenset({TcpFlag.SYN}))
    assert spec.host == Host() and not spec.to_host  # no to-host: routed on, not delivered


def test_every_option() -> None:
    spec = parse_packet("tcp 198.51.100.7:1234 -> 203.0.113.1:443 in eth0 out br0 ct established "
                        "mark 0x10 flags ack,psh mss 1400 orig-dport 8443 over-limit to-host")
    p = spec.packet
    assert (p.sport, p.dport, p.iif, p.oif) == (1234, 443, "eth0", "br0")
    assert (p.ct_state, p.mark, p.mss, p.ct_orig_dport, p.under_limit) == (
        CtState.ESTABLISHED, 0x10, 1400, 8443, False)
    assert p.tcp_flags == {TcpFlag.ACK, TcpFlag.PSH}
    assert spec.to_host and spec.host.local == {(Family.IP, _ip("203.0.113.1"))}
    # The address it came in on is the host's: a redirect rewrites to it.
    assert spec.host.address_of("eth0", Family.IP) == _ip("203.0.113.1")


def test_a_later_tcp_packet_defaults_to_ack() -> None:
    assert parse_packet("tcp 192.0.2.1 -> 192.0.2.2:80 ct established").packet.tcp_flags == {
        TcpFlag.ACK}


def test_from_host_is_the_local_path_from_one_of_its_addresses() -> None:
    spec = parse_packet("udp 192.0.2.1:5353 -> 192.0.2.9:53 out eth1 from-host")
    assert spec.packet.path is Path.LOCAL
    assert spec.host.local == {(Family.IP, _ip("192.0.2.1"))}
    assert spec.host.address_of("eth1", Family.IP) == _ip("192.0.2.1")


def test_an_interface_address_for_masquerade() -> None:
    spec = parse_packet("tcp 172.17.0.2 -> 198.51.100.7:443 in docker0 out eth0 addr 203.0.113.1")
    assert spec.host.address_of("eth0", Family.IP) == _ip("203.0.113.1")
    assert (Family.IP, _ip("203.0.113.1")) in spec.host.local


def test_icmp_types_by_name_and_number() -> None:
    assert parse_packet("icmp 192.0.2.1 -> 192.0.2.2 type echo-request").packet.icmp_type == 8
    assert parse_packet("icmp 192.0.2.1 -> 192.0.2.2 type 3").packet.icmp_type == 3
    v6 = parse_packet("icmpv6 2001:db8::1 -> 2001:db8::2 type echo-request").packet
    assert (v6.family, v6.icmp_type, v6.sport, v6.dport) == (Family.IP6, 128, None, None)


def test_ipv6_ports_in_brackets() -> None:
    p = parse_packet("TCP [2001:db8::1]:40000 -> [2001:db8::2]:443").packet
    assert (p.family, p.saddr, p.sport, p.daddr, p.dport) == (
        Family.IP6, _ip("2001:db8::1"), 40000, _ip("2001:db8::2"), 443)


def test_the_arrow_needs_no_spaces() -> None:
    assert parse_packet("udp 192.0.2.1:5->192.0.2.2:53").packet.dport == 53


@pytest.mark.parametrize(("spelling", "column", "message"), [
    ("", 1, "expected a protocol"),
    ("tpc 192.0.2.1 -> 192.0.2.2:22", 1, "unknown protocol 'tpc'"),
    ("tcp 192.0.2.300 -> 192.0.2.2:22", 5, "source '192.0.2.300' is no IPv4 or IPv6 address"),
    ("tcp 192.0.2.1 => 192.0.2.2:22", 15, "expected `->`"),
    ("tcp 192.0.2.1 -> 192.0.2.2", 18, "needs a destination port"),
    ("tcp 192.0.2.1 -> 192.0.2.2:70000", 18, "port '70000' is no number"),
    ("tcp 192.0.2.1 -> [2001:db8::1]:22", 18, "different families"),
    ("tcp [2001:db8::1:22 -> [2001:db8::2]:22", 5, "never closes"),
    ("icmp 192.0.2.1:5 -> 192.0.2.2", 6, "only tcp, udp, sctp, udplite and dccp have ports"),
    ("icmp 192.0.2.1 -> 192.0.2.2", 28, "needs `type`"),
    ("icmpv6 192.0.2.1 -> 192.0.2.2 type 1", 8, "icmpv6 is for IPv6 packets"),
    ("tcp 192.0.2.1 -> 192.0.2.2:22 ct fresh", 34, "unknown conntrack state 'fresh'"),
    ("tcp 192.0.2.1 -> 192.0.2.2:22 flags syn,fyn", 37, "unknown tcp flag"),
    ("udp 192.0.2.1 -> 192.0.2.2:53 flags syn", 31, "only tcp packets have flags"),
    ("tcp 192.0.2.1 -> 192.0.2.2:22 in eth0 in eth1", 39, "`in` is given twice"),
    ("tcp 192.0.2.1 -> 192.0.2.2:22 in", 33, "expected an interface name"),
    ("tcp 192.0.2.1 -> 192.0.2.2:22 in eth+", 34, "is no interface name"),
    ("tcp 192.0.2.1 -> 192.0.2.2:22 mark 0x100000000", 36, "mark '0x100000000' is no number"),
    ("tcp 192.0.2.1 -> 192.0.2.2:22 to-host from-host", 39, "either to-host or from-host"),
    ("tcp 192.0.2.1 -> 192.0.2.2:22 from-host in eth0", 41, "has no input interface"),
    ("tcp 192.0.2.1 -> 192.0.2.2:22 tohost", 31, "unknown option 'tohost'"),
])
def test_bad_spellings_name_the_column(spelling: str, column: int, message: str) -> None:
    with pytest.raises(RulecError) as caught:
        parse_packet(spelling)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "E0801" and message in diagnostic.message
    assert diagnostic.span is not None and diagnostic.span.file == "--packet"
    assert (diagnostic.span.line, diagnostic.span.column) == (1, column)


def test_a_misspelt_option_gets_a_suggestion() -> None:
    with pytest.raises(RulecError) as caught:
        parse_packet("tcp 192.0.2.1 -> 192.0.2.2:22 flag syn")
    assert "did you mean flags?" in caught.value.diagnostics[0].notes


# --- the explanation ------------------------------------------------------------------------

SSH = """\
table ip filter {
  chain INPUT policy drop {
    accept ct state established
    jump ssh
    accept tcp dport 80
  }
  chain ssh {
    drop from 198.51.100.66
    return
  }
}
"""


def _explain(policy: str, spelling: str, name: str = "host.rules"
             ) -> tuple[Ruleset, PacketSpec, Explanation]:
    ruleset = api.parse_text(policy, name)
    spec = parse_packet(spelling)
    return ruleset, spec, explain(ruleset, spec.packet, spec.host)


def test_a_jump_into_a_user_chain_and_back_to_the_policy() -> None:
    _, _, result = _explain(SSH, "tcp 198.51.100.7 -> 203.0.113.1:22 in eth0 to-host")
    assert result.verdict is Verdict.DROP and result.path == "to this host"
    assert [h.hook for h in result.hooks] == [Hook.PREROUTING, Hook.INPUT]
    (input_pass,) = [h for h in result.hooks if h.hook is Hook.INPUT]
    assert input_pass.chains == (("filter", "INPUT"), ("filter", "ssh"))
    assert [(h.chain, h.action, h.where, h.source) for h in input_pass.hits] == [
        ("INPUT", "jump", "host.rules:4", "jump ssh"),
        ("ssh", "return", "host.rules:9", "return"),
        ("INPUT", "policy drop", None, None),
    ]
    assert result.decided_by is input_pass.hits[-1]
    assert text(result).splitlines()[-1] == "verdict: drop by the policy drop of filter INPUT"


def test_the_rule_after_the_jump_decides() -> None:
    _, _, result = _explain(SSH, "tcp 198.51.100.7 -> 203.0.113.1:80 in eth0 to-host")
    assert result.verdict is Verdict.ACCEPT
    assert result.decided_by is not None and result.decided_by.where == "host.rules:5"
    assert "    filter INPUT: host.rules:5  accept tcp dport 80" in text(result).splitlines()


def test_a_chain_entered_without_a_match_is_listed() -> None:
    policy = SSH.replace("    return\n", "")
    _, _, result = _explain(policy, "tcp 198.51.100.7 -> 203.0.113.1:80 in eth0 to-host")
    (input_pass,) = [h for h in result.hooks if h.hook is Hook.INPUT]
    assert ("filter", "ssh") in input_pass.chains
    assert all(h.chain == "INPUT" for h in input_pass.hits)


def test_without_to_host_an_incoming_packet_is_forwarded() -> None:
    _, _, result = _explain(SSH, "tcp 198.51.100.7 -> 203.0.113.1:22 in eth0")
    assert result.path == "forwarded" and result.verdict is Verdict.ACCEPT
    assert [h.hook for h in result.hooks] == [Hook.PREROUTING, Hook.FORWARD, Hook.POSTROUTING]
    assert any("add `to-host`" in note for note in result.notes)


DNAT = """\
table ip nat {
  chain PREROUTING {
    dnat to 198.18.2.2:8080 tcp dport 80 in eth0
  }
  chain POSTROUTING {
    masquerade out eth1
  }
}
table ip filter {
  chain FORWARD policy drop {
    accept tcp to 198.18.2.2 dport 8080
  }
}
"""


def test_a_dnat_rewrite_is_shown_with_the_rule_that_made_it() -> None:
    _, _, result = _explain(
        DNAT, "tcp 198.51.100.7 -> 203.0.113.1:80 in eth0 out eth1 addr 198.18.2.1 to-host",
        "nat.rules")
    assert result.verdict is Verdict.ACCEPT and result.path == "forwarded"
    assert [(r.field, r.by) for r in result.rewrites] == [
        ("saddr", "masquerade"), ("daddr", "dnat"), ("dport", "dnat")]
    assert result.outcome.packet.daddr == _ip("198.18.2.2")
    lines = text(result).splitlines()
    assert "    nat PREROUTING: nat.rules:3  dnat to 198.18.2.2:8080 tcp dport 80 in eth0" in lines
    assert "rewritten: daddr 203.0.113.1 -> 198.18.2.2 (dnat)" in lines
    assert "rewritten: dport 80 -> 8080 (dnat)" in lines
    assert "rewritten: saddr 198.51.100.7 -> 198.18.2.1 (masquerade)" in lines
    assert result.decided_by is not None and result.decided_by.where == "nat.rules:11"


def test_masquerade_without_an_address_says_why_it_drops() -> None:
    _, _, result = _explain(DNAT, "tcp 198.51.100.7 -> 203.0.113.1:80 in eth0 out eth1",
                            "nat.rules")
    assert result.verdict is Verdict.DROP
    assert any("out IFACE addr ADDR" in note for note in result.notes)


def test_the_json_document() -> None:
    _, _, result = _explain(DNAT, "tcp 198.51.100.7:1234 -> 203.0.113.1:80 in eth0 out eth1 "
                               "addr 198.18.2.1", "nat.rules")
    doc = json.loads(as_json(result))
    assert doc == document(result)
    assert doc["schema"] == 1 and doc["verdict"] == "accept" and doc["path"] == "forwarded"
    assert doc["packet"]["daddr"] == "203.0.113.1" and doc["after"]["daddr"] == "198.18.2.2"
    assert [h["hook"] for h in doc["hooks"]] == ["PREROUTING", "FORWARD", "POSTROUTING"]
    assert doc["hooks"][0]["chains"] == [{"table": "nat", "chain": "PREROUTING"}]
    assert doc["hooks"][0]["steps"] == [{
        "table": "nat", "chain": "PREROUTING", "index": 0, "action": "dnat",
        "rule": "nat.rules:3", "source": "dnat to 198.18.2.2:8080 tcp dport 80 in eth0",
        "compiled": "dnat to 198.18.2.2:8080 tcp dport 80 in eth0"}]
    assert doc["decided_by"]["rule"] == "nat.rules:11"
    assert {"field": "dport", "from": 80, "to": 8080, "by": "dnat"} in doc["rewrites"]
    assert doc["delivered_locally"] is False and isinstance(doc["notes"], list)


def test_the_explanation_agrees_with_the_evaluator() -> None:
    ruleset, spec, result = _explain(DNAT, "tcp 198.51.100.7 -> 203.0.113.1:80 in eth0 out eth1 "
                                     "addr 198.18.2.1", "nat.rules")
    outcome = evaluate(ruleset, spec.packet, spec.host)
    assert result.outcome == outcome and result.outcome.trace == outcome.trace
    assert [s for h in result.hooks for s in h.hits] == [
        result.hooks[0].hits[0], *result.hooks[1].hits, *result.hooks[2].hits]
    assert len([s for h in result.hooks for s in h.hits]) == len(outcome.trace)


def test_api_explain_takes_a_spelling() -> None:
    ruleset = api.parse_text(SSH, "host.rules")
    result = api.explain(ruleset, "tcp 198.51.100.66 -> 203.0.113.1:22 to-host")
    assert result.verdict is Verdict.DROP
    assert result.decided_by is not None and result.decided_by.where == "host.rules:8"
    packet = parse_packet("tcp 198.51.100.66 -> 203.0.113.1:22").packet
    assert api.explain(ruleset, packet).path == "forwarded"  # a Packet meets no host address


DOCKER = """\
docker {
  network frontend {
    bridge br-frontend
    subnet 172.20.0.0/16 gateway 172.20.0.1
  }
  container proxy {
    network frontend 172.20.0.2
    publish "8080:80"
  }
}
"""


def test_a_docker_published_port_is_dnated_to_the_container() -> None:
    ruleset = api.parse_text(DOCKER, "docker.rules", docker=api.docker_options("iptables"))
    spec = parse_packet("tcp 198.51.100.7 -> 203.0.113.1:8080 in eth0 out br-frontend to-host")
    result = explain(ruleset, spec.packet, spec.host)
    assert result.verdict is Verdict.ACCEPT and result.path == "forwarded"
    assert [(r.field, r.after) for r in result.rewrites] == [
        ("daddr", _ip("172.20.0.2")), ("dport", 80)]
    dnat = next(h for p in result.hooks for h in p.hits if h.action == "dnat")
    assert (dnat.where, dnat.source) == ("docker.rules:8", '"8080:80"')
    # userland-proxy on (the default): the bridge's own traffic is not DNATed here.
    assert dnat.compiled == "dnat to 172.20.0.2:80 tcp dport 8080 in != br-frontend"
    assert '"8080:80"   [dnat to 172.20.0.2:80 tcp dport 8080 in != br-frontend]' in text(result)
