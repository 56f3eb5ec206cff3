"""The evaluator's own specification: hand-written rulesets and the fate of chosen packets."""

from __future__ import annotations

import pytest

from rulec.api import parse_text
from rulec.ir.evaluate import Host, Packet, Path, Verdict, evaluate
from rulec.ir.values import CtState, Family, Prefix, TcpFlag


def ip(text: str) -> int:
    return Prefix.parse(text).network


def tcp(src: str, dst: str, dport: int, **kw: object) -> Packet:
    family = Family.IP6 if ":" in src else Family.IP
    return Packet(family=family, proto=6, saddr=ip(src), daddr=ip(dst), sport=40000,
                  dport=dport, **kw)  # type: ignore[arg-type]


ROUTER = Host(local=frozenset({(Family.IP, ip("198.18.1.1")), (Family.IP, ip("198.18.2.1"))}),
              interface_addresses=(("cl0", Family.IP, ip("198.18.1.1")),
                                   ("sv0", Family.IP, ip("198.18.2.1"))))

FORWARD = """
table ip filter {
  chain FORWARD policy drop {
    accept ct state established,related
    jump web tcp
    drop from 198.18.1.4
    accept udp dport 53
  }
  chain web {
    return from 198.18.1.3
    accept tcp dport { 80, 443 }
    goto tail tcp dport 8000-8080
  }
  chain tail {
    accept from 198.18.1.2
  }
}
"""


@pytest.mark.parametrize(("packet", "verdict", "decided_by"), [
    (tcp("198.18.1.2", "198.18.2.2", 80), Verdict.ACCEPT, ("web", 1)),
    (tcp("198.18.1.2", "198.18.2.2", 22), Verdict.DROP, ("FORWARD", None)),
    # return from web: the drop rule after the jump sees it, then the policy
    (tcp("198.18.1.3", "198.18.2.2", 80), Verdict.DROP, ("FORWARD", None)),
    # goto tail: tail's end returns to FORWARD's caller, i.e. the policy, not to `drop from`
    (tcp("198.18.1.2", "198.18.2.2", 8001), Verdict.ACCEPT, ("tail", 0)),
    (tcp("198.18.1.5", "198.18.2.2", 8001), Verdict.DROP, ("FORWARD", None)),
    (tcp("198.18.1.4", "198.18.2.2", 80), Verdict.ACCEPT, ("web", 1)),
    (tcp("198.18.1.9", "198.18.2.2", 22, ct_state=CtState.ESTABLISHED), Verdict.ACCEPT,
     ("FORWARD", 0)),
])
def test_forward_chain_walk(packet: Packet, verdict: Verdict,
                            decided_by: tuple[str, int | None]) -> None:
    """First match wins; jump returns, goto does not; the policy decides the rest."""
    outcome = evaluate(parse_text(FORWARD), packet, ROUTER)
    assert outcome.verdict is verdict
    last = outcome.trace[-1]
    assert (last.chain, last.index) == decided_by


def test_udp_port_rule_and_goto_fallthrough() -> None:
    udp = Packet(family=Family.IP, proto=17, saddr=ip("198.18.1.2"), daddr=ip("198.18.2.2"),
                 sport=5000, dport=53)
    assert evaluate(parse_text(FORWARD), udp, ROUTER).verdict is Verdict.ACCEPT


NAT = """
table ip nat {
  chain PREROUTING { dnat to 198.18.2.2:8080 tcp dport 80 in cl0 }
  chain POSTROUTING { masquerade out sv0 }
}
table ip filter {
  chain FORWARD policy drop {
    accept tcp dport 8080 ct original dport 80
  }
  chain INPUT policy drop { }
}
"""


def test_dnat_then_forward_then_masquerade() -> None:
    """DNAT happens before routing (the packet is forwarded, not delivered), the filter sees the
    new port and the original one, and the server sees the router's address."""
    packet = tcp("198.18.1.2", "198.18.1.1", 80, iif="cl0", oif="sv0")
    outcome = evaluate(parse_text(NAT), packet, ROUTER)
    assert outcome.verdict is Verdict.ACCEPT and not outcome.delivered_locally
    assert outcome.packet.daddr == ip("198.18.2.2") and outcome.packet.dport == 8080
    assert outcome.packet.saddr == ip("198.18.2.1")


def test_without_dnat_the_packet_is_for_the_router() -> None:
    packet = tcp("198.18.1.2", "198.18.1.1", 22, iif="cl0")
    outcome = evaluate(parse_text(NAT), packet, ROUTER)
    assert outcome.verdict is Verdict.DROP and outcome.trace[-1].chain == "INPUT"


def test_nat_skipped_for_established_packets() -> None:
    packet = tcp("198.18.1.2", "198.18.1.1", 80, iif="cl0", ct_state=CtState.ESTABLISHED)
    outcome = evaluate(parse_text(NAT), packet, ROUTER)
    assert outcome.packet.daddr == ip("198.18.1.1")


def test_mark_and_mss_rewrites_are_seen_by_later_rules() -> None:
    policy = """
    table ip mangle {
      chain FORWARD {
        mark set 0x10/0xf0
        mss set 1200 tcp flags syn / syn,rst
      }
    }
    table ip filter {
      chain FORWARD policy drop { accept mark 0x10/0xf0 }
    }
    """
    packet = tcp("198.18.1.2", "198.18.2.2", 80, mark=0x3, mss=1460,
                 tcp_flags=frozenset({TcpFlag.SYN}))
    outcome = evaluate(parse_text(policy), packet, ROUTER)
    assert outcome.verdict is Verdict.ACCEPT
    assert outcome.packet.mark == 0x13 and outcome.packet.mss == 1200


def test_inet_table_negated_set_of_the_other_family_matches() -> None:
    """`from != 10.0.0.0/8` holds for every IPv6 packet: the address is not in the set."""
    policy = "table inet filter { chain INPUT policy accept { drop from != 10.0.0.0/8 } }"
    host = Host(local=frozenset({(Family.IP6, ip("2001:db8::1"))}))
    packet = tcp("2001:db8::2", "2001:db8::1", 22)
    assert evaluate(parse_text(policy), packet, host).verdict is Verdict.DROP


def test_local_output_and_addrtype() -> None:
    policy = """
    table ip filter {
      chain OUTPUT policy drop {
        accept to type local
        reject tcp dport 25
      }
    }
    """
    host = Host(local=frozenset({(Family.IP, ip("198.18.1.1"))}))
    to_self = tcp("198.18.1.1", "198.18.1.1", 25, path=Path.LOCAL)
    out = tcp("198.18.1.1", "198.18.9.9", 25, path=Path.LOCAL)
    other = tcp("198.18.1.1", "198.18.9.9", 80, path=Path.LOCAL)
    ruleset = parse_text(policy)
    assert evaluate(ruleset, to_self, host).verdict is Verdict.ACCEPT
    assert evaluate(ruleset, out, host).verdict is Verdict.REJECT
    assert evaluate(ruleset, other, host).verdict is Verdict.DROP
