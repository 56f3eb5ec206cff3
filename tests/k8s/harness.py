"""Compile a cluster the way `rulec compile --inventory` does and ask the reference evaluator
what the node does to one pod-to-pod packet; the truth tables the tests compare.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from rulec.api import compile_ruleset
from rulec.frontends import k8s
from rulec.frontends.k8s import Cluster
from rulec.ir.evaluate import Packet, Verdict, evaluate
from rulec.ir.nodes import Ruleset
from rulec.ir.values import CtState, Family
from tests.k8s.oracle import Oracle

PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132, "ICMP": 1, "ICMPv6": 58}
SOURCE_PORT = 40000


@dataclass(frozen=True, slots=True)
class Probe:
    """One connection attempt: from `src` to `dst` (addresses), protocol, destination port."""

    src: str
    dst: str
    protocol: str
    port: int | None

    @property
    def family(self) -> Family:
        return Family.IP6 if ":" in self.src else Family.IP


def compiled(cluster: Cluster, target: str = "nft") -> Ruleset:
    """The IR after the optimiser, as the target's backend receives it."""
    return compile_ruleset(k8s.compile_to_ir(cluster), target).ruleset


def _packet(probe: Probe, *, reply: bool = False) -> Packet:
    src, dst = (probe.dst, probe.src) if reply else (probe.src, probe.dst)
    ports = probe.port is not None and probe.protocol in ("TCP", "UDP", "SCTP")
    sport, dport = (probe.port, SOURCE_PORT) if reply else (SOURCE_PORT, probe.port)
    return Packet(family=probe.family, proto=PROTOCOL_NUMBERS[probe.protocol],
                  saddr=int(ipaddress.ip_address(src)), daddr=int(ipaddress.ip_address(dst)),
                  sport=sport if ports else None, dport=dport if ports else None,
                  ct_state=CtState.ESTABLISHED if reply else CtState.NEW)


def node_allows(ruleset: Ruleset, probe: Probe) -> bool:
    """Whether the node forwards the first packet of the connection."""
    return evaluate(ruleset, _packet(probe)).verdict is Verdict.ACCEPT


def node_passes_reply(ruleset: Ruleset, probe: Probe) -> bool:
    """Whether the node forwards the answer of an established connection (S4)."""
    return evaluate(ruleset, _packet(probe, reply=True)).verdict is Verdict.ACCEPT


def oracle_allows(oracle: Oracle, probe: Probe) -> bool:
    return oracle.allows(probe.family, int(ipaddress.ip_address(probe.src)),
                         int(ipaddress.ip_address(probe.dst)), probe.protocol, probe.port)


def pair_probes(addresses: Iterable[str],
                kinds: Iterable[tuple[str, int | None]]) -> Iterator[Probe]:
    """Every ordered pair of distinct addresses of one family, with every (protocol, port)."""
    kinds = tuple(kinds)
    for src, dst in itertools.permutations(addresses, 2):
        if (":" in src) == (":" in dst):
            for protocol, port in kinds:
                yield Probe(src, dst, protocol, port)


def disagreements(cluster: Cluster, ruleset: Ruleset,
                  probes: Iterable[Probe]) -> list[tuple[Probe, bool, bool]]:
    """(probe, oracle, node) wherever the compiled node and the oracle differ, replies
    included: an allowed connection's answer must pass too."""
    oracle = Oracle(cluster.inventory, cluster.policies)
    found = []
    for probe in probes:
        want = oracle_allows(oracle, probe)
        got = node_allows(ruleset, probe)
        if want != got or (want and not node_passes_reply(ruleset, probe)):
            found.append((probe, want, got))
    return found
