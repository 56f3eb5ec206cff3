"""The Ansible collection (ansible_collections/rulec/firewall) on a fleet whose hosts are
network namespaces: ansible-playbook -c local, each host's Python run inside its namespace,
the router of a client -- router -- server topology, so real packets show what was loaded."""

from __future__ import annotations

import ast
import functools
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rulec.analysis import render
from rulec.apply import apply
from rulec.kernel import Namespace, namespace
from tests.ansible.playbook import REPO, Ansible
from tests.kernel.probe import Attempt, Topology, attempts, server

pytestmark = pytest.mark.kernel

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
BROKEN = POLICY.replace("dport 8080", "dport 80800")
MODULES = REPO / "ansible_collections/rulec/firewall/plugins/modules"
# What Ansible adds to every module's result.
ANSIBLE_KEYS = {"changed", "failed", "invocation", "warnings", "deprecations", "diff", "msg",
                "rc", "exception", "skipped", "skip_reason", "false_condition", "action"}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    out = {}
    for name, text in (("policy", POLICY), ("wider", WIDER), ("broken", BROKEN)):
        (tmp_path / f"{name}.rules").write_text(text)
        out[name] = str(tmp_path / f"{name}.rules")
    return out


def _apply(policy: str, state: str, **options: Any) -> dict[str, Any]:
    return {"rulec.firewall.rulec_apply": {"policy": [policy], "state_dir": state, **options}}


def _ports(topo: Topology) -> tuple[bool, bool]:
    """Whether the client reaches the server on 8080 and 8081, through the router."""
    with server(topo.server, [8080, 8081]):
        web, metrics = attempts(topo.client, [Attempt(topo.server4, 8080),
                                              Attempt(topo.server4, 8081)])
    return web.connected, metrics.connected


def _rules(ns: Namespace) -> list[str]:
    """Both families' iptables rules, without counters or timestamps, and the nft tables (the
    nft listing of iptables-nft's chains is not in a stable order)."""
    lines = ns.run(["nft", "list", "tables"]).stdout.splitlines()
    for tool in ("iptables-save", "ip6tables-save"):
        lines += [line.split(" [", 1)[0] for line in ns.run([tool]).stdout.splitlines()
                  if not line.startswith("#")]
    return lines


def _documented(module: str) -> set[str]:
    """The keys a module's RETURN documents."""
    tree = ast.parse((MODULES / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "RETURN":
            return set(yaml.safe_load(ast.literal_eval(node.value)))
    raise AssertionError(f"{module} has no RETURN")


def _recap(stdout: str) -> dict[str, int]:
    """changed=N per host from the default callback's PLAY RECAP."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", stdout,
                                                  re.M)}


def test_check_mode_shows_the_semantic_diff_per_host_and_loads_nothing(
        ansible: Ansible, topology: Topology, files: dict[str, str], tmp_path: Path) -> None:
    """--check --diff on two hosts: one without rules (changed, its diff printed verbatim),
    one already holding the policy (unchanged). Neither is locked, saved or loaded."""
    fresh_state, current_state = str(tmp_path / "fresh"), str(tmp_path / "current")
    router = topology.router
    with namespace("cur") as current:
        current.call(lambda: apply([files["policy"]], state_dir=current_state))
        before = {"fresh": _rules(router), "current": _rules(current)}
        saved = sorted(p.name for p in Path(current_state).iterdir())
        expected = router.call(lambda: render.text(
            apply([files["policy"]], dry_run=True, state_dir=fresh_state).diff))
        assert expected.startswith("2 changes (IPv4, IPv6):")
        run = ansible.play({"fresh": router, "current": current},
                           [_apply(files["policy"], str(tmp_path / "{{ inventory_hostname }}"))],
                           "--check", "--diff")
        assert run.returncode == 0, run.stdout + run.stderr
        assert expected in run.stdout  # Ansible prints `prepared` verbatim
        assert _recap(run.stdout) == {"fresh": 1, "current": 0}
        assert {"fresh": _rules(router), "current": _rules(current)} == before
        assert sorted(p.name for p in Path(current_state).iterdir()) == saved
    assert not Path(fresh_state).exists()
    assert _ports(topology) == (True, True)


def test_apply_loads_on_every_host_and_reapplying_changes_nothing(
        ansible: Ansible, topology: Topology, second_topology: Topology,
        files: dict[str, str], tmp_path: Path) -> None:
    """A fleet of an iptables host and an nft host; then the failures an operator meets."""
    hosts = {"iptables": topology.router, "nft": second_topology.router}
    state = str(tmp_path / "state-{{ inventory_hostname }}")
    # One task, a failure on each host: a Python without rulec (no site-packages), and a
    # policy with an error.
    failing = {"iptables": {"failing_python": ansible.interpreter(topology.router, "-S"),
                            "failing_policy": files["policy"]},
               "nft": {"failing_python": ansible.interpreter(second_topology.router),
                       "failing_policy": files["broken"]}}
    run = ansible.play(hosts, [
        {**_apply(files["policy"], state, target="{{ inventory_hostname }}"),
         "register": "first"},
        _apply(files["policy"], state, target="{{ inventory_hostname }}"),
        {**_apply("{{ failing_policy }}", state), "ignore_errors": True,
         "vars": {"ansible_python_interpreter": "{{ failing_python }}"}},
    ], hostvars=failing)
    assert run.returncode == 0, run.stdout + run.stderr
    first, again, failed = run.results
    assert first["iptables"]["changed"] and first["nft"]["changed"]
    assert (first["iptables"]["target"], first["nft"]["target"]) == ("iptables", "nft")
    assert [argv[0] for argv in first["iptables"]["sent"]] == ["iptables-restore",
                                                               "ip6tables-restore"]
    assert first["nft"]["sent"] == [["nft", "-f", "-"]]
    assert {d["kind"] for d in first["iptables"]["semantic_diff"]["differences"]} == {
        "newly dropped"}
    assert _ports(topology) == (True, False)
    assert _ports(second_topology) == (True, False)
    for host in hosts:
        assert not again[host]["changed"], again[host]
        assert (again[host]["change"], again[host]["sent"]) == ("none", [])
        assert set(first[host]) - ANSIBLE_KEYS <= _documented("rulec_apply")
    missing, broken = failed["iptables"], failed["nft"]
    assert missing["failed"] and missing["rc"] == 2
    assert "Failed to import the required Python library (rulec)" in missing["msg"]
    assert "pip install rulec" in missing["msg"]
    assert broken["failed"] and broken["rc"] == 1
    assert f"{files['broken']}:4:22: error[E0302]: port 80800" in broken["msg"]
    assert _ports(second_topology) == (True, False)  # the failure changed nothing


CONFIRM = 10  # seconds: longer than the rest of the play takes after the apply returns


def test_a_confirmed_host_keeps_the_rules_and_an_unconfirmed_one_reverts(
        ansible: Ansible, topology: Topology, second_topology: Topology,
        files: dict[str, str], tmp_path: Path) -> None:
    """The playbook pattern: apply with confirm, reconnect, confirm. Host `lost` never gets
    its confirmation (as if the new rules had cut Ansible off): its watcher reverts it."""
    hosts = {"kept": topology.router, "lost": second_topology.router}
    states = {name: str(tmp_path / name) for name in hosts}
    for name, ns in hosts.items():
        ns.call(functools.partial(apply, [files["policy"]], state_dir=states[name]))
    before = _rules(second_topology.router)
    state = str(tmp_path / "{{ inventory_hostname }}")
    run = ansible.play(hosts, [
        {**_apply(files["wider"], state, confirm=CONFIRM), "register": "rules"},
        {"ansible.builtin.meta": "reset_connection"},
        {"rulec.firewall.rulec_confirm": {"apply_id": "{{ rules.apply_id }}",
                                          "state_dir": state},
         "when": "rules.apply_id is not none and inventory_hostname == 'kept'"},
    ])
    finished = time.monotonic()
    assert run.returncode == 0, run.stdout + run.stderr
    applied, _, confirmed = run.results
    lost_journal = Path(states["lost"], "journal.json")
    assert json.loads(lost_journal.read_text())["step"] == "awaiting-confirmation"
    assert applied["lost"]["apply_id"] and applied["lost"]["sent"]
    assert confirmed["kept"]["apply_id"] == applied["kept"]["apply_id"]
    assert confirmed["kept"]["kept"] and confirmed["kept"]["changed"]
    assert set(confirmed["kept"]) - ANSIBLE_KEYS <= _documented("rulec_confirm")
    assert not Path(states["kept"], "journal.json").exists()
    assert _ports(topology) == (True, True)
    while lost_journal.exists() and time.monotonic() - finished < CONFIRM + 5:
        time.sleep(0.1)
    assert not lost_journal.exists()
    assert _rules(second_topology.router) == before
    assert _ports(second_topology) == (True, False)
