"""Conformance on a real kernel, in the manner of upstream's netpol e2e suite: the 3x3 model as
network namespaces around a node that routes between them, each case's policies compiled and
loaded on the node, every ordered pod pair probed on TCP and UDP 80 and 81 with real traffic,
and the result compared with the truth table of the oracle (tests/k8s/oracle.py), which shares
no code with the compiler. Cases are named after the semantics rules they cover (S1-S16).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from rulec.api import compile_k8s_files, compile_ruleset
from rulec.frontends import k8s
from rulec.ir.values import Family, Prefix
from rulec.kernel import available, load, validate_artifact
from tests.k8s.cases import CASES, Case, case_id, policy
from tests.k8s.model3x3 import MODEL_PODS, PROBES
from tests.k8s.model3x3 import load as load_cluster
from tests.k8s.oracle import Oracle
from tests.k8s.podnet import Pair, PodNet, pod_network, tools_missing
from tests.k8s.test_golden import CASES as GOLDEN_CASES
from tests.kernel.probe import tcp

UNAVAILABLE = available() or tools_missing()
pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(UNAVAILABLE is not None, reason=f"kernel: {UNAVAILABLE}")]

TARGETS = ("iptables", "nft")
CASE_BUDGET = 5.0  # seconds for compiling, loading and probing one case


@pytest.fixture(scope="module")
def podnet() -> Iterator[PodNet]:
    with pod_network() as net:
        yield net


def truth_table(case: Case) -> dict[Pair, bool]:
    cluster = load_cluster(case.policies)
    oracle = Oracle(cluster.inventory, cluster.policies)
    return {(s.key, d.key, protocol, port): oracle.allows(
                Family.IP, Prefix.parse(s.ip).network, Prefix.parse(d.ip).network, protocol,
                port)
            for s in MODEL_PODS for d in MODEL_PODS if s is not d for protocol, port in PROBES}


def apply(net: PodNet, policies: str, target: str) -> str:
    """Compile for `target` and load on the node (both iptables loaders for iptables)."""
    net.reset()
    artifact = compile_ruleset(k8s.compile_to_ir(load_cluster(policies)), target).artifact
    verdict = load(artifact, net.node)
    assert verdict.ok, f"{verdict.loader}: {verdict.message}\n{artifact.text}"
    return artifact.text


def _table(pairs: dict[Pair, bool]) -> str:
    return "\n".join(f"  {s} -> {d} {protocol}/{port}: {'allowed' if ok else 'blocked'}"
                     for (s, d, protocol, port), ok in sorted(pairs.items()))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_conformance(podnet: PodNet, case: Case, target: str) -> None:
    start = time.monotonic()
    text = apply(podnet, case.policies, target)
    seen = podnet.probe_all()
    elapsed = time.monotonic() - start
    expected = truth_table(case)
    wrong = {pair: got for pair, got in seen.items() if got != expected[pair]}
    assert not wrong, (f"{len(wrong)} of {len(seen)} probes differ from the oracle "
                       f"(the kernel saw):\n{_table(wrong)}\n--- {target}:\n{text}")
    assert {k: v for k, v in case.expect.items()} == {k: seen[k] for k in case.expect}
    assert elapsed < CASE_BUDGET, f"case took {elapsed:.1f} s"


@pytest.mark.parametrize("target", TARGETS)
def test_s17_the_node_reaches_isolated_pods(podnet: PodNet, target: str) -> None:
    """Traffic between a pod and its own node is never filtered (INPUT/OUTPUT are untouched)
    while pod-to-pod traffic to the same pod is blocked."""
    apply(podnet, policy("x", "deny-all", "podSelector: {}\npolicyTypes: [Ingress, Egress]\n"),
          target)
    x_a, y_a = MODEL_PODS[0], MODEL_PODS[3]
    assert tcp(podnet.node, x_a.ip, 80).connected
    assert tcp(podnet.pods[x_a.key], x_a.node_ip, 80).error is not None  # refused, not dropped
    assert not tcp(podnet.pods[y_a.key], x_a.ip, 80).connected


@pytest.mark.parametrize("target", ["iptables", "ip6tables", "nft", "nft-json"])
def test_goldens_load(target: str) -> None:
    """Every golden output is accepted by the kernel (each loader of its target)."""
    for case in GOLDEN_CASES:
        artifact = compile_k8s_files(case / "cluster.yaml", [case / "policy.yaml"],
                                     target).artifact
        reason = available(target)
        if reason is not None:
            pytest.skip(reason)
        verdict = validate_artifact(artifact)
        assert verdict.ok, f"{case.name}: {verdict.summary()}"
