"""Compiled policies loaded into a real router namespace, checked with real packets.

Every case runs per target: iptables through iptables-nft and iptables-legacy (ip6tables for
IPv6), nft text and nft JSON. The client is 198.18.1.2 (.3 and .4 also), the server 198.18.2.2.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytest

from rulec.api import compile_text
from rulec.kernel import load
from tests.kernel.probe import Attempt, Topology, attempts, backend_or_skip, server, tcp


@dataclass(frozen=True)
class Target:
    name: str  # "iptables" means ip6tables for IPv6 policies
    variant: str | None = None
    ipset: bool = False  # address sets as ipsets (`--ipset`)

    def apply(self, topo: Topology, policy: str, *, ipv6: bool = False) -> None:
        """Compile `policy` and load it into the router; the load must succeed."""
        name = "ip6tables" if ipv6 and self.name == "iptables" else self.name
        with backend_or_skip():
            if self.ipset and shutil.which("ipset") is None:
                pytest.skip("`ipset` is not on PATH (apt-get install ipset)")
            artifact = compile_text(policy, name, ipset=self.ipset)
        verdict = load(artifact, topo.router, self.variant)
        assert verdict.ok, f"{verdict.loader}: {verdict.message}\n--- {name}:\n{artifact.text}"


TARGETS = [Target("iptables", "nft"), Target("iptables", "legacy"), Target("nft"),
           Target("nft-json"), Target("iptables", "nft", ipset=True)]


@pytest.fixture(params=TARGETS, ids=lambda t: "-".join(
    filter(None, (t.name, t.variant, "ipset" if t.ipset else None))))
def target(request: pytest.FixtureRequest) -> Target:
    assert isinstance(request.param, Target)
    return request.param


def forward_policy(*rules: str) -> str:
    lines = "\n".join(f"    {rule}" for rule in ("accept ct state established,related", *rules))
    return f"table inet filter {{\n  chain FORWARD policy drop {{\n{lines}\n  }}\n}}\n"


def test_destination_port(topology: Topology, target: Target) -> None:
    """With FORWARD policy drop, `accept tcp dport 8080` lets 8080 through and not 8081."""
    t = topology
    target.apply(t, forward_policy("accept tcp dport 8080"))
    with server(t.server, [8080, 8081]):
        allowed, dropped = attempts(t.client, [Attempt(t.server4, 8080),
                                               Attempt(t.server4, 8081)])
    assert allowed.connected and allowed.peer == t.client4
    assert not dropped.connected


def test_destination_port_set(topology: Topology, target: Target) -> None:
    """`dport { 80, 443, 9000-9100 }` accepts each listed port and both ends of the range,
    and nothing just outside it."""
    t = topology
    target.apply(t, forward_policy("accept tcp dport { 80, 443, 9000-9100 }"))
    inside, outside = [80, 443, 9000, 9100], [81, 8999, 9101]
    with server(t.server, inside + outside):
        out = attempts(t.client, [Attempt(t.server4, p) for p in inside + outside])
    assert [o.connected for o in out] == [True] * len(inside) + [False] * len(outside)


def test_source_address(topology: Topology, target: Target) -> None:
    """`accept from 198.18.1.3`: of the client's three addresses only .3 gets through."""
    t = topology
    target.apply(t, forward_policy("accept from 198.18.1.3"))
    sources = [t.client4, t.client4_b, t.client4_c]
    with server(t.server, [8080]):
        out = attempts(t.client, [Attempt(t.server4, 8080, src=s) for s in sources])
    assert [o.connected for o in out] == [False, True, False]
    assert out[1].peer == t.client4_b


@pytest.mark.parametrize(("rules", "expected"), [
    (["accept tcp dport 8080 from { 198.18.1.3, 198.18.1.4 }"], [False, True, True]),
    (["drop from != { 198.18.1.2, 198.18.1.4 }", "accept tcp dport 8080"], [True, False, True]),
])
def test_source_address_sets(topology: Topology, target: Target, rules: list[str],
                             expected: list[bool]) -> None:
    """An address set and a negated one, as one rule per address or as one ipset match."""
    t = topology
    target.apply(t, forward_policy(*rules))
    sources = [t.client4, t.client4_b, t.client4_c]
    with server(t.server, [8080]):
        out = attempts(t.client, [Attempt(t.server4, 8080, src=s) for s in sources])
    assert [o.connected for o in out] == expected


def test_negated_source_address(topology: Topology, target: Target) -> None:
    """`from != 198.18.1.4` accepts every other source and drops .4."""
    t = topology
    target.apply(t, forward_policy("accept tcp dport 8080 from != 198.18.1.4"))
    sources = [t.client4, t.client4_b, t.client4_c]
    with server(t.server, [8080]):
        out = attempts(t.client, [Attempt(t.server4, 8080, src=s) for s in sources])
    assert [o.connected for o in out] == [True, True, False]


def test_dnat_port_forward(topology: Topology, target: Target) -> None:
    """A connection to the router's 198.18.1.1:80 lands on 198.18.2.2:8080, and the server sees
    the client's own address."""
    t = topology
    target.apply(t, "table ip nat {\n  chain PREROUTING { dnat to 198.18.2.2:8080 tcp dport 80 "
                    "in cl0 }\n}\n")
    with server(t.server, [8080]):
        out = tcp(t.client, t.router4_cl, 80)
    assert out.connected and out.port == 8080 and out.peer == t.client4


def test_masquerade(topology: Topology, target: Target) -> None:
    """Masquerading out of sv0, the server sees the router's 198.18.2.1, not the client."""
    t = topology
    target.apply(t, "table ip nat {\n  chain POSTROUTING { masquerade out sv0 }\n}\n")
    with server(t.server, [8080]):
        out = tcp(t.client, t.server4, 8080)
    assert out.connected and out.peer == t.router4_sv


@pytest.mark.parametrize(("action", "bound"), [("mss clamp to pmtu", 1400 - 40),
                                               ("mss set 1200", 1200)],
                         ids=["clamp-pmtu", "set-1200"])
def test_mss(topology: Topology, target: Target, action: str, bound: int) -> None:
    """With sv0's MTU at 1400, the SYN's MSS is rewritten on the way to the server: the server's
    MSS drops from 1460 minus options to `bound` minus options (at most 40 bytes of them)."""
    t = topology
    t.router.link_up("sv0", mtu=1400)
    with server(t.server, [8080]):
        before = tcp(t.client, t.server4, 8080)
        target.apply(t, f"table ip mangle {{\n  chain FORWARD {{ {action} "
                        "tcp flags syn / syn,rst out sv0 }\n}\n")
        after = tcp(t.client, t.server4, 8080)
    assert before.mss is not None and after.mss is not None
    assert 1460 - 40 <= before.mss <= 1460
    assert bound - 40 <= after.mss <= bound


def test_udp_destination_port(topology: Topology, target: Target) -> None:
    """`accept udp dport 5353`: a datagram to 5353 is echoed, one to 5354 gets no answer."""
    t = topology
    target.apply(t, forward_policy("accept udp dport 5353"))
    with server(t.server, [5353, 5354], "udp"):
        allowed, dropped = attempts(t.client, [Attempt(t.server4, 5353, "udp"),
                                               Attempt(t.server4, 5354, "udp")])
    assert allowed.answered and allowed.peer == t.client4
    assert not dropped.answered


def test_ipv6_destination_port(topology: Topology, target: Target) -> None:
    """IPv6 through ip6tables or nft inet: tcp dport 8080 from the client's /64 passes, 8081
    does not."""
    t = topology
    target.apply(t, forward_policy("accept tcp dport 8080 from fd00:1::/64"), ipv6=True)
    with server(t.server, [8080, 8081]):
        allowed, dropped = attempts(t.client, [Attempt(t.server6, 8080),
                                               Attempt(t.server6, 8081)])
    assert allowed.connected and allowed.peer == t.client6
    assert not dropped.connected


@pytest.mark.parametrize(("types", "passes"), [
    ("{ timestamp-request, echo-request }", True),
    ("{ timestamp-request, destination-unreachable }", False),
])
def test_icmp_type_set(topology: Topology, target: Target, types: str, passes: bool) -> None:
    """An echo request gets through `accept icmp type <set>` only if the set holds it (its
    reply is established)."""
    t = topology
    target.apply(t, forward_policy(f"accept icmp type {types}"))
    [echo] = attempts(t.client, [Attempt(t.server4, 0, "icmp")])
    assert echo.connected is passes


@pytest.mark.parametrize(("types", "passes"), [
    ("{ echo-request, 200 }", True),
    ("{ destination-unreachable, packet-too-big }", False),
])
def test_negated_icmpv6_type_set(topology: Topology, target: Target, types: str,
                                 passes: bool) -> None:
    """`drop icmpv6 type != <set>` drops every echo request but those the set names; iptables
    needs a helper chain of RETURNs for it."""
    t = topology
    target.apply(t, forward_policy(f"drop icmpv6 type != {types}", "accept icmpv6"), ipv6=True)
    [echo] = attempts(t.client, [Attempt(t.server6, 0, "icmp")])
    assert echo.connected is passes


def test_merged_terms_keep_their_names(topology: Topology, target: Target) -> None:
    """Terms with their own comments merge into one rule, yet packets meet exactly the terms
    as written, and the loaded ruleset still names each term on its own element: nft element
    comments, ipset entry comments, and plain iptables (one rule per address) its own term on
    each rule."""
    t = topology
    target.apply(t, forward_policy('accept tcp dport 8080 from 198.18.1.3 comment "term-b"',
                                   'accept tcp dport 8080 from 198.18.1.4 comment "term-c"',
                                   'accept tcp dport 8081 from 198.18.1.2 comment "term-d"'))
    tries = [Attempt(t.server4, 8080, src=t.client4), Attempt(t.server4, 8080, src=t.client4_b),
             Attempt(t.server4, 8080, src=t.client4_c), Attempt(t.server4, 8081, src=t.client4),
             Attempt(t.server4, 8081, src=t.client4_b)]
    with server(t.server, [8080, 8081]):
        out = attempts(t.client, tries)
    assert [o.connected for o in out] == [False, True, True, True, False]
    if target.name.startswith("nft"):
        listed = t.router.run(["nft", "list", "ruleset"]).stdout
        wanted = ['comment "term-b"', 'comment "term-c"', 'comment "term-d"']
    elif target.ipset:
        listed = t.router.run(["ipset", "list"]).stdout
        wanted = ['198.18.1.3 comment "term-b"', '198.18.1.4 comment "term-c"']
    else:
        listed = t.router.run([f"iptables-{target.variant}-save"]).stdout
        wanted = ["-s 198.18.1.3/32 -p tcp -m tcp --dport 8080 -m comment --comment term-b",
                  "-s 198.18.1.4/32 -p tcp -m tcp --dport 8080 -m comment --comment term-c"]
    for text in wanted:
        assert text in listed, f"{text!r} not in\n{listed}"
