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


PAIRS = """table ip filter {
  chain FORWARD policy drop {
    accept ct state established,related
    accept tcp from 198.18.1.2 dport 9002
    drop tcp from 198.18.1.3 dport 9002
    jump web tcp from 198.18.1.4 dport 9002
    accept udp dport 53
    jump web tcp from 198.18.1.2 dport 9003
    accept tcp from 198.18.1.3 dport 9003
    drop tcp from 198.18.1.4 dport 9003
    accept tcp from 198.18.1.0/24 dport 9003
  }
  chain web {
    accept tcp dport 9002
  }
}
"""


@pytest.mark.parametrize("target", ["nft", "nft-json"])
def test_a_concatenated_map_decides_as_the_rules_did(topology: Topology, target: str) -> None:
    """Rules that differ in source address and port become one `ip saddr . tcp dport` map
    (across the udp rule, which no tcp packet meets): .2 reaches 9002 directly and 9003 not
    through `web` (which only accepts 9002) but through the /24 rule after the map; .3 is
    dropped on 9002 and accepted on 9003; .4 gets 9002 through `web` and is dropped on 9003.
    The /24 rule overlaps the map's entries, so it stays a rule after it."""
    t = topology
    artifact = compile_text(PAIRS, target)
    text = artifact.text
    assert ("ip saddr . tcp dport vmap" in text) or ('"concat"' in text), text
    verdict = load(artifact, t.router)
    assert verdict.ok, verdict.summary() + "\n" + text
    sources = (t.client4, t.client4_b, t.client4_c)
    tries = [Attempt(t.server4, port, src=s) for s in sources for port in (9002, 9003)]
    with server(t.server, [9002, 9003]):
        out = attempts(t.client, tries)
    assert [o.connected for o in out] == [True, True, False, True, True, False]
