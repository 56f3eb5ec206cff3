"""`rulec import` on real packets: a host's dump, loaded as it is, and the policy rulec prints
for it, compiled and loaded for every target, let exactly the same connections through."""

from __future__ import annotations

import pytest

from rulec import api
from rulec.diagnostics import SourceFile
from rulec.frontends.dumps import read_dump
from rulec.kernel import load
from tests.kernel.probe import Attempt, Topology, attempts, backend_or_skip, server

# A router's hand-written FORWARD rules: a user chain, multiport, negation, a reject, a
# comment per rule, LOG in front of the drop, and a NAT table.
DUMP = """\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 198.18.1.0/24 -o sv0 -m comment --comment "hide clients" -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:web - [0:0]
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -p tcp -m multiport --dports 8080,8443 -m comment --comment "web" -j web
-A FORWARD -s 198.18.1.2/32 -p tcp -m tcp --dport 22 -m comment --comment "admin ssh" -j ACCEPT
-A FORWARD -p tcp -m tcp --dport 25 -j REJECT --reject-with tcp-reset
-A FORWARD -m limit --limit 5/min -j LOG --log-prefix "fwd drop: "
-A web ! -s 198.18.1.4/32 -j ACCEPT
COMMIT
"""
PORTS = [22, 25, 8080, 8443, 9000]
SOURCES = ["198.18.1.2", "198.18.1.3", "198.18.1.4"]


def _probe(topo: Topology) -> list[tuple[str, int, bool, str | None]]:
    tries = [Attempt(topo.server4, port, "tcp", src) for src in SOURCES for port in PORTS]
    with server(topo.server, PORTS):
        got = attempts(topo.client, tries)
    return [(t.src or "", t.port, o.connected, o.peer) for t, o in zip(tries, got, strict=True)]


def _flush(topo: Topology) -> None:
    for table in ("filter", "nat"):
        topo.router.run(["iptables", "-t", table, "-F"])
        topo.router.run(["iptables", "-t", table, "-X"])
    topo.router.run(["iptables", "-P", "FORWARD", "ACCEPT"])
    topo.router.run(["nft", "flush", "ruleset"])


@pytest.mark.parametrize("target", ["iptables", "nft", "nft-json"])
def test_the_imported_policy_lets_through_what_the_dump_does(topology: Topology,
                                                             target: str) -> None:
    router = topology.router
    router.run(["iptables-restore"], input=DUMP)
    as_dumped = _probe(topology)
    assert (SOURCES[0], 22, True, SOURCES[0]) not in as_dumped  # masqueraded: the router's
    assert any(connected for _, _, connected, _ in as_dumped)
    assert not all(connected for _, _, connected, _ in as_dumped)
    policy = api.to_policy(read_dump(SourceFile("host.v4", DUMP)))
    _flush(topology)
    with backend_or_skip():
        artifact = api.compile_text(policy, target)
    verdict = load(artifact, router, "nft" if target == "iptables" else None)
    assert verdict.ok, f"{verdict.message}\n{policy}\n{artifact.text}"
    assert _probe(topology) == as_dumped, policy
