"""What synthesize_sets builds for nft (verdict maps, named sets) loads into a real kernel and
decides real packets as the plain rules would.

The client is 198.18.1.2 (.3 and .4 also), the server 198.18.2.2.
"""

from __future__ import annotations

import pytest

from rulec.api import compile_text
from rulec.kernel import load, validate_artifact
from tests.kernel.probe import Attempt, Topology, attempts, server

POLICY = """define clients = { 198.18.1.3, 198.18.1.4 }
table inet filter {
  chain FORWARD policy drop {
    accept ct state established,related
    accept tcp dport 8080
    drop tcp dport 8081
    jump web tcp dport 8082
    goto web tcp dport 8083-8085
    return tcp dport 8086
    accept tcp from $clients dport 9000
    accept udp from $clients dport 9000
    drop tcp dport 9001 in sv0
    accept tcp dport 9001 in cl0
    goto web tcp dport 9001 in eth7
    jump web tcp dport 9001 in eth8
  }
  chain web {
    accept tcp dport { 8082, 8084 }
  }
}
"""


@pytest.mark.parametrize("target", ["nft", "nft-json"])
def test_maps_and_named_sets_load(target: str) -> None:
    artifact = compile_text(POLICY, target)
    text = artifact.text
    assert text.count("vmap") == 2 and "@addr4_" in text
    verdict = validate_artifact(artifact)
    assert verdict.ok, verdict.summary() + "\n" + text


@pytest.mark.parametrize("target", ["nft", "nft-json"])
def test_packets_meet_the_map_entries_as_they_met_the_rules(topology: Topology,
                                                            target: str) -> None:
    """8080 accept, 8081 drop, 8082 jump (web accepts), 8083 goto (web does not accept, the
    packet falls to the policy), 8084 goto (web accepts), 8086 return (policy drop); 9000
    only from the named set's addresses; 9001 by the map entry of the client's interface."""
    t = topology
    artifact = compile_text(POLICY, target)
    assert artifact.text.count("vmap") == 2
    verdict = load(artifact, t.router)
    assert verdict.ok, verdict.summary()
    ports = [8080, 8081, 8082, 8083, 8084, 8086]
    tries = [Attempt(t.server4, p) for p in ports]
    tries += [Attempt(t.server4, 9000, src=s) for s in (t.client4, t.client4_b, t.client4_c)]
    tries.append(Attempt(t.server4, 9001))
    with server(t.server, [*ports, 9000, 9001]):
        out = attempts(t.client, tries)
    assert [o.connected for o in out] == [True, False, True, False, True, False,
                                          False, True, True, True]
