"""`rulec apply` on a real kernel: a router namespace between a client and a server, rulec run
inside the router as an operator would run it on a host, and real connections to see what the
kernel does. Failures the kernel cannot be made to produce on demand (ip6tables-restore
failing after iptables-restore succeeded, a SIGKILL between two loads) are produced by a
stand-in for the loader, earlier on PATH, that runs the real one and then fails or kills
rulec: the test says which."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rulec.api import compile_text
from rulec.apply import apply
from rulec.kernel import Namespace
from tests.kernel.probe import Attempt, Topology, attempts, server

POLICY = """\
table inet filter {
  chain FORWARD policy drop {
    accept ct state established,related
    accept tcp dport 8080 comment "web"
  }
}
"""
WIDER = POLICY.replace('comment "web"\n',
                       'comment "web"\n    accept tcp dport 8081 comment "metrics"\n')
SETS = """\
define clients = { {clients} }
table ip filter {
  chain FORWARD policy drop {
    accept ct state established,related
    accept tcp dport 8080 saddr $clients
  }
}
"""
TARGETS = ["iptables", "nft"]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    out = {}
    for name, text in (("policy", POLICY), ("wider", WIDER)):
        (tmp_path / f"{name}.rules").write_text(text)
        out[name] = str(tmp_path / f"{name}.rules")
    out["state"] = str(tmp_path / "state")
    return out


def _rulec(ns: Namespace, *args: str, path: str | None = None,
           check: int | None = 0) -> subprocess.CompletedProcess[str]:
    env = ["env", f"PATH={path}:{os.environ['PATH']}"] if path else []
    done = ns.run([*env, sys.executable, "-m", "rulec", *args], check=False, timeout=120)
    if check is not None:
        assert done.returncode == check, done.stdout + done.stderr
    return done


def _ports(topo: Topology) -> tuple[bool, bool]:
    """Whether the client reaches the server on 8080 and 8081, through the router."""
    with server(topo.server, [8080, 8081]):
        web, metrics = attempts(topo.client, [Attempt(topo.server4, 8080),
                                              Attempt(topo.server4, 8081)])
    return web.connected, metrics.connected


def _kernel(ns: Namespace, target: str) -> str:
    """The forwarded traffic's rules as the kernel holds them, with their counters (iptables)
    or handles (nft). Only FORWARD: the hosts' own IPv6 neighbour traffic moves the others."""
    if target == "nft":
        return ns.run(["nft", "-a", "list", "ruleset"]).stdout
    return "".join(line + "\n" for tool in ("iptables-save", "ip6tables-save")
                   for line in ns.run([tool, "-c"]).stdout.splitlines()
                   if "FORWARD" in line)


def _rules(ns: Namespace, target: str) -> list[str]:
    """The kernel's rules without counters, handles or the save tools' timestamp comments."""
    if target == "nft":
        return ns.run(["nft", "list", "ruleset"]).stdout.splitlines()
    lines = []
    for tool in ("iptables-save", "ip6tables-save"):
        for line in ns.run([tool]).stdout.splitlines():
            if not line.startswith("#"):
                lines.append(line.split(" [", 1)[0] if line.startswith(":") else line)
    return lines


def _shim(tmp_path: Path, tool: str, after: str) -> str:
    """A directory holding a stand-in for `tool` that runs the real one, then does `after`
    (shell; $PPID is the rulec process that ran it)."""
    real = shutil.which(tool)
    assert real is not None
    where = tmp_path / f"shim-{tool}"
    where.mkdir()
    script = where / tool
    script.write_text(f'#!/bin/sh\n"{real}" "$@"\nrc=$?\n{after}\nexit $rc\n')
    script.chmod(0o755)
    return str(where)


@pytest.mark.parametrize("target", TARGETS)
def test_apply_loads_the_policy_and_a_change_moves_only_the_changed_traffic(
        topology: Topology, files: dict[str, str], target: str) -> None:
    router = topology.router
    assert _ports(topology) == (True, True)  # nothing loaded: everything is forwarded
    _rulec(router, "apply", "-t", target, "--state-dir", files["state"], files["policy"])
    assert _ports(topology) == (True, False)
    done = _rulec(router, "apply", "-t", target, "--state-dir", files["state"], "--format",
                  "json", files["wider"])
    changes = json.loads(done.stdout)["differences"]
    assert {(c["kind"], c["witness"]["dport"]) for c in changes} == {("newly accepted", 8081)}
    assert _ports(topology) == (True, True)


@pytest.mark.parametrize("target", TARGETS)
def test_reapplying_an_unchanged_policy_changes_nothing_not_even_counters(
        topology: Topology, files: dict[str, str], target: str) -> None:
    router = topology.router
    _rulec(router, "apply", "-t", target, "--state-dir", files["state"], files["policy"])
    assert _ports(topology) == (True, False)  # traffic: the counters move
    before = _kernel(router, target)
    done = _rulec(router, "apply", "-t", target, "--state-dir", files["state"],
                  files["policy"])
    assert "nothing loaded" in done.stderr
    assert _kernel(router, target) == before  # counters (iptables), handles (nft)


@pytest.mark.parametrize("target", TARGETS)
def test_dry_run_shows_the_diff_and_changes_nothing(
        topology: Topology, files: dict[str, str], target: str) -> None:
    router = topology.router
    before = _kernel(router, target)
    done = _rulec(router, "apply", "--dry-run", "-t", target, "--state-dir", files["state"],
                  files["policy"], check=1)
    assert "newly dropped" in done.stdout
    assert _kernel(router, target) == before
    assert not Path(files["state"]).exists()  # a dry run takes no lock and saves nothing


def test_a_set_the_kernel_refuses_leaves_the_host_exactly_as_it_was(
        topology: Topology, files: dict[str, str], tmp_path: Path) -> None:
    """A real refusal: an ipset of rulec's name but another type is already there."""
    router = topology.router
    policy = tmp_path / "sets.rules"
    policy.write_text(SETS.replace("{clients}", "198.18.1.2, 198.18.1.4"))
    _rulec(router, "apply", "--state-dir", files["state"], files["policy"])
    sets = compile_text(policy.read_text(), "iptables", ipset=True).ipsets
    assert sets is not None
    name = next(line.split()[1] for line in sets.splitlines() if line.startswith("create"))
    router.run(["ipset", "create", name, "hash:ip", "family", "inet6"])
    before = _rules(router, "iptables")
    done = _rulec(router, "apply", "--ipset", "--state-dir", files["state"], str(policy),
                  check=4)
    assert f"ipset {name} exists but does not hold what rulec's name for it says" in done.stderr
    assert _rules(router, "iptables") == before
    assert "family inet6" in router.run(["ipset", "list", name]).stdout
    assert _ports(topology) == (True, False)


@pytest.mark.parametrize("target", TARGETS)
def test_a_failing_load_puts_back_what_loaded_before_it(
        topology: Topology, files: dict[str, str], tmp_path: Path, target: str) -> None:
    """iptables: the IPv6 restore fails after the IPv4 one succeeded (a stand-in that runs the
    real ip6tables-restore, then exits 1); IPv4 is put back. nft: the transaction is loaded,
    then reported failed, and put back."""
    router = topology.router
    _rulec(router, "apply", "-t", target, "--state-dir", files["state"], files["policy"])
    before = _rules(router, target)
    tool = "ip6tables-restore" if target == "iptables" else "nft"
    once = tmp_path / "failed-once"  # the put-back load goes through the same stand-in
    loads = "-f*" if target == "nft" else "*"  # nft -f -, not nft list table ...
    shim = _shim(tmp_path, tool,
                 f'case "$*" in {loads}) [ -e {once} ] || {{ touch {once}; rc=1; }};; esac')
    done = _rulec(router, "apply", "-t", target, "--state-dir", files["state"], files["wider"],
                  path=shim, check=4)
    assert "the saved state was put back" in done.stderr
    assert _rules(router, target) == before
    assert _ports(topology) == (True, False)


@pytest.mark.parametrize("target", TARGETS)
def test_without_confirmation_the_old_rules_are_back_within_the_timeout(
        topology: Topology, files: dict[str, str], target: str) -> None:
    router = topology.router
    _rulec(router, "apply", "-t", target, "--state-dir", files["state"], files["policy"])
    before = _rules(router, target)
    _rulec(router, "apply", "-t", target, "--state-dir", files["state"], "--confirm", "1",
           "--detach", files["wider"])
    loaded = time.monotonic()
    assert _ports(topology) == (True, True)  # the new rules hold until the deadline
    journal = Path(files["state"], "journal.json")
    while journal.exists() and time.monotonic() - loaded < 5:
        time.sleep(0.05)
    assert time.monotonic() - loaded <= 2.0  # the timeout + 1 s
    assert _rules(router, target) == before
    assert _ports(topology) == (True, False)
    # Blocking, on the command's own clock: it exits 5 once it has put the rules back.
    started = time.monotonic()
    _rulec(router, "apply", "-t", target, "--state-dir", files["state"], "--confirm", "1",
           files["wider"], check=5)
    assert _rules(router, target) == before
    assert time.monotonic() - started < 15


def test_a_confirmation_from_another_session_keeps_the_rules(
        topology: Topology, files: dict[str, str]) -> None:
    router = topology.router
    _rulec(router, "apply", "--state-dir", files["state"], "--confirm", "30", "--detach",
           files["wider"])
    done = _rulec(router, "confirm", "--state-dir", files["state"])
    assert done.stdout.startswith("rulec confirm: confirmed apply")
    journal = Path(files["state"], "journal.json")
    deadline = time.monotonic() + 5
    while journal.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not journal.exists()
    assert _ports(topology) == (True, True)
    _rulec(router, "confirm", "--state-dir", files["state"], check=2)  # nothing waits now


# Where a SIGKILL lands: (target, the tool whose stand-in kills rulec after running, policy
# needs ipsets). After it the host holds a mix (IPv4 new, IPv6 old) or the new rules unverified.
KILLS = [
    pytest.param("iptables", "ipset", id="iptables-after-the-sets"),
    pytest.param("iptables", "iptables-restore", id="iptables-between-ipv4-and-ipv6"),
    pytest.param("iptables", "ip6tables-restore", id="iptables-before-verifying"),
    pytest.param("nft", "nft", id="nft-before-verifying"),
]


@pytest.mark.parametrize(("target", "tool"), KILLS)
def test_after_a_sigkill_at_any_step_rollback_leaves_the_old_state(
        topology: Topology, files: dict[str, str], tmp_path: Path, target: str,
        tool: str) -> None:
    router = topology.router
    wider = tmp_path / "sets.rules"  # --ipset; the other kills load WIDER (both families)
    wider.write_text(SETS.replace("{clients}", "198.18.1.2, 198.18.1.4"))
    _rulec(router, "apply", "-t", target, "--state-dir", files["state"], files["policy"])
    before = _rules(router, target)
    kill = 'case "$*" in *save*|*list*) ;; *) kill -9 $PPID;; esac'
    done = _rulec(router, "apply", "-t", target, *(["--ipset"] if tool == "ipset" else []),
                  "--state-dir", files["state"], str(wider) if tool == "ipset" else files["wider"],
                  path=_shim(tmp_path, tool, kill),
                  check=None)
    assert done.returncode == -9 or done.returncode == 137, done.stderr
    assert Path(files["state"], "journal.json").exists()
    done = _rulec(router, "rollback", "--state-dir", files["state"])
    assert "the interrupted apply was undone" in done.stdout
    assert _rules(router, target) == before
    assert _ports(topology) == (True, False)


def test_after_a_sigkill_during_the_confirmation_wait_the_next_apply_recovers_first(
        topology: Topology, files: dict[str, str]) -> None:
    router = topology.router
    _rulec(router, "apply", "--state-dir", files["state"], files["policy"])
    before = _rules(router, "iptables")
    waiting = router.popen([sys.executable, "-m", "rulec", "apply", "--state-dir",
                            files["state"], "--confirm", "60", files["wider"]])
    try:
        _await_step(files["state"], "awaiting-confirmation")
        waiting.kill()
        waiting.wait(timeout=10)
    finally:
        _reap(waiting)
    done = _rulec(router, "apply", "--state-dir", files["state"], files["policy"])
    assert "putting back the state saved before it" in done.stderr
    assert _rules(router, "iptables") == before


def test_a_second_apply_waits_for_the_lock_or_fails_clearly(
        topology: Topology, files: dict[str, str]) -> None:
    router = topology.router
    first = router.popen([sys.executable, "-m", "rulec", "apply", "--state-dir",
                          files["state"], "--confirm", "60", files["policy"]])
    try:
        _await_step(files["state"], "awaiting-confirmation")
        done = _rulec(router, "apply", "--state-dir", files["state"], "--wait", "0.2",
                      files["wider"], check=2)
        assert "holds" in done.stderr and "lock" in done.stderr
        _rulec(router, "confirm", "--state-dir", files["state"])
        assert first.wait(timeout=20) == 0
    finally:
        _reap(first)
    _rulec(router, "apply", "--state-dir", files["state"], "--wait", "10", files["wider"])
    assert _ports(topology) == (True, True)


def test_a_set_change_loads_only_the_new_set_and_the_chain_that_tests_it(
        topology: Topology, files: dict[str, str], tmp_path: Path) -> None:
    """rulec's ipsets are named by their members: a changed set is a new set, the one chain
    that tests it is replaced (--noflush), and the old set is destroyed once nothing uses it."""
    router = topology.router
    old, new = tmp_path / "old.rules", tmp_path / "new.rules"
    old.write_text(SETS.replace("{clients}", "198.18.1.2, 198.18.1.3, 203.0.113.0/24"))
    new.write_text(SETS.replace("{clients}", "198.18.1.2, 198.18.1.4, 203.0.113.0/24"))
    state = files["state"]
    router.call(lambda: apply([old], target="iptables", ipset=True, state_dir=state))
    result = router.call(lambda: apply([new], target="iptables", ipset=True, state_dir=state))
    sent = [(s.argv[0], s.text) for s in result.sent]
    assert [tool for tool, _ in sent] == ["ipset", "iptables-restore", "ipset"]
    assert sum(line.startswith("create ") for line in sent[0][1].splitlines()) == 1
    assert "198.18.1.4" in sent[0][1]
    restore = [line for line in sent[1][1].splitlines() if line.startswith((":", "*", "-A"))]
    assert {line.split()[0] for line in restore if line.startswith(":")} == {":FORWARD"}
    assert result.sent[2].argv[:2] == ("ipset", "destroy")
    assert len(router.run(["ipset", "list", "-n"]).stdout.split()) == 1
    with server(topology.server, [8080]):
        b, c = attempts(topology.client, [Attempt(topology.server4, 8080, src=topology.client4_b),
                                          Attempt(topology.server4, 8080, src=topology.client4_c)])
    assert (b.connected, c.connected) == (False, True)


def _await_step(state: str, step: str, timeout: float = 60) -> None:
    journal = Path(state, "journal.json")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(journal.read_text())["step"] == step:
                return
        except (FileNotFoundError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"the apply never reached {step}")


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
