"""`rulec diff --live`: what a host's kernel holds now against the policy, or against a saved
dump. Each test loads a policy into a real router namespace, changes it by hand the way an
operator or another agent would, and runs rulec inside that namespace; where drift is
reported, real packets show the kernel doing what the report says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rulec.api import compile_text
from rulec.kernel import Namespace, load
from tests.kernel.probe import Attempt, Topology, attempts, backend_or_skip, server

POLICY = """\
table inet filter {
  chain FORWARD policy drop {
    accept ct state established,related
    accept tcp dport 8080 comment "web"
  }
}
"""


def _rulec(ns: Namespace, *args: str) -> subprocess.CompletedProcess[str]:
    return ns.run([sys.executable, "-m", "rulec", *args], check=False)


def _apply(topo: Topology, target: str) -> None:
    with backend_or_skip():
        for name in ("iptables", "ip6tables") if target == "iptables" else (target,):
            verdict = load(compile_text(POLICY, name), topo.router,
                           "nft" if target == "iptables" else None)
            assert verdict.ok, verdict.message


def _probe(topo: Topology) -> tuple[bool, bool]:
    with server(topo.server, [8080, 8081]):
        web, other = attempts(topo.client, [Attempt(topo.server4, 8080),
                                            Attempt(topo.server4, 8081)])
    return web.connected, other.connected


@pytest.mark.parametrize("target", ["iptables", "nft"])
def test_an_applied_policy_shows_no_drift(topology: Topology, tmp_path: Path,
                                          target: str) -> None:
    policy = tmp_path / "policy.rules"
    policy.write_text(POLICY)
    _apply(topology, target)
    done = _rulec(topology.router, "diff", "--live", "--target", target, str(policy))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("equivalent")


@pytest.mark.parametrize("target", ["iptables", "nft"])
def test_a_rule_added_by_hand_is_drift_and_the_kernel_does_what_the_report_says(
        topology: Topology, tmp_path: Path, target: str) -> None:
    policy = tmp_path / "policy.rules"
    policy.write_text(POLICY)
    _apply(topology, target)
    if target == "iptables":
        topology.router.run(["iptables", "-I", "FORWARD", "2", "-p", "tcp", "--dport", "8081",
                             "-j", "ACCEPT"])
    else:
        topology.router.run(["nft", "insert", "rule", "inet", "rulec-filter", "FORWARD",
                             "tcp", "dport", "8081", "accept"])
    assert _probe(topology) == (True, True)  # the hand-added rule is live
    done = _rulec(topology.router, "diff", "--live", "--target", target, "--format", "json",
                  str(policy))
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    kinds = {(d["kind"], d["witness"]["dport"]) for d in report["differences"]}
    # Live is the old side: applying the policy again would drop what the hand rule lets in.
    assert ("newly dropped", 8081) in kinds and all(port == 8081 for _, port in kinds)


def test_a_policy_never_applied_is_drift(topology: Topology, tmp_path: Path) -> None:
    policy = tmp_path / "policy.rules"
    policy.write_text(POLICY)
    done = _rulec(topology.router, "diff", "--live", "--target", "iptables", str(policy))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "newly dropped" in done.stdout  # the empty kernel forwards everything
    assert _probe(topology) == (True, True)


def test_a_flushed_coexist_chain_is_drift_and_other_chains_are_not_looked_at(
        topology: Topology, tmp_path: Path) -> None:
    """Coexist mode: only the declared chain is compared. dockerd-like rules elsewhere in
    FORWARD are none of rulec's business; DOCKER-USER flushed by hand is."""
    policy = tmp_path / "user.rules"
    policy.write_text('table ip filter {\n  chain DOCKER-USER external {\n'
                      '    drop tcp dport 8081 comment "no 8081"\n  }\n}\n')
    router = topology.router
    with backend_or_skip():
        router.run(["iptables-restore"], input=(
            "*filter\n:FORWARD ACCEPT [0:0]\n:DOCKER-USER - [0:0]\n"
            "-A FORWARD -j DOCKER-USER\n-A FORWARD -p tcp --dport 9 -j DROP\n"
            "-A DOCKER-USER -j RETURN\nCOMMIT\n"))
        verdict = load(compile_text(policy.read_text(), "iptables", noflush=True), router,
                       "nft")
    assert verdict.ok, verdict.message
    args = ("diff", "--live", "--target", "iptables", "--noflush", str(policy))
    assert _rulec(router, *args).returncode == 0
    assert _probe(topology) == (True, False)
    router.run(["iptables", "-F", "DOCKER-USER"])  # "dockerd flushed DOCKER-USER"
    assert _probe(topology) == (True, True)
    done = _rulec(router, *args)
    assert done.returncode == 1 and "newly dropped" in done.stdout, done.stdout + done.stderr


def test_a_saved_dump_against_live_shows_what_changed_since(topology: Topology,
                                                            tmp_path: Path) -> None:
    _apply(topology, "iptables")
    dump = tmp_path / "yesterday.v4"
    dump.write_text(topology.router.run(["iptables-save"]).stdout)
    assert _rulec(topology.router, "diff", str(dump), "--live", "--target",
                  "iptables").returncode == 0
    topology.router.run(["iptables", "-D", "FORWARD", "2"])  # someone removed the web rule
    assert _probe(topology) == (False, False)
    done = _rulec(topology.router, "diff", str(dump), "--live", "--target", "iptables")
    assert done.returncode == 1 and "newly dropped" in done.stdout, done.stdout + done.stderr
    assert "dport 8080" in done.stdout or ":8080" in done.stdout
