"""`rulec diff`: what a policy change does to traffic, with the exit status of diff(1)
(0 equivalent, 1 different, 2 trouble), in text, Markdown and JSON, for .rules files, a git
revision, Kubernetes inputs and Docker hosts; and the rewrites that change no packet's fate
come out equivalent."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

import pytest

from rulec import cli
from tests.cli.conftest import Run

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "tests" / "k8s" / "golden" / "web-tiers"
DOCKER_HOST = ROOT / "examples" / "docker-compose-host.rules"

OLD = """table ip filter {
  chain INPUT policy drop {
    accept ct state established,related
    accept tcp dport 22 from 10.0.0.0/8 comment "ssh from the office"
  }
}
"""
NEW = OLD.replace("tcp dport 22", "tcp dport { 22, 8443 }")


def _write(tmp_path: Path, **files: str) -> None:
    for name, text in files.items():
        (tmp_path / name.replace("_", ".")).write_text(text, encoding="utf-8")


def test_a_widened_port_set_is_newly_accepted_traffic(run: Run, tmp_path: Path) -> None:
    _write(tmp_path, old_rules=OLD, new_rules=NEW)
    code, out, err = run("diff", "old.rules", "new.rules", cwd=tmp_path)
    assert (code, err) == (cli.EXIT_DIFFERENT, "")
    assert "newly accepted: tcp from 10.0.0.0/8 port 8443" in out
    assert "new: accept by new.rules:4" in out
    assert "old: drop by the policy drop of filter INPUT" in out
    assert "e.g. tcp 10.0.0.1:40000 -> 192.0.2.1:8443" in out


def test_the_same_policy_is_equivalent(run: Run, tmp_path: Path) -> None:
    _write(tmp_path, old_rules=OLD)
    code, out, _ = run("diff", "old.rules", "old.rules", cwd=tmp_path)
    assert code == cli.EXIT_OK
    assert out.startswith("equivalent")


def test_json_gives_a_witness_both_sides_and_the_space(run: Run, tmp_path: Path) -> None:
    _write(tmp_path, old_rules=OLD, new_rules=NEW)
    code, out, _ = run("diff", "old.rules", "new.rules", "--format", "json", cwd=tmp_path)
    document = json.loads(out)
    assert code == cli.EXIT_DIFFERENT and document["equivalent"] is False
    [change] = document["differences"]
    assert change["witness"]["dport"] == 8443 and change["witness"]["proto"] == "tcp"
    assert change["old"] == {"verdict": "drop", "delivered_locally": False, "rewrite": None,
                             "rule": None, "decided_by": {"table": "filter", "chain": "INPUT",
                                                          "action": "policy drop"}}
    assert change["new"]["rule"] == "new.rules:4"
    [box] = change["space"]
    assert box["saddr"] == ["10.0.0.0/8"] and box["dport"] == ["8443"]
    # A tool can test a packet against the box: the witness lies in it.
    assert ipaddress.ip_address(change["witness"]["saddr"]) in ipaddress.ip_network(
        box["saddr"][0])


def test_markdown_is_a_pull_request_comment(run: Run, tmp_path: Path) -> None:
    _write(tmp_path, old_rules=OLD, new_rules=NEW)
    code, out, _ = run("diff", "old.rules", "new.rules", "--format", "markdown", cwd=tmp_path)
    assert code == cli.EXIT_DIFFERENT
    assert out.splitlines()[0] == "**rulec diff: 1 newly accepted**"
    assert "| traffic | new | old | e.g. |" in out


EQUIVALENT_REWRITES = {
    "a CIDR split in two": (
        "accept from 10.0.0.0/8", "accept from { 10.0.0.0/9, 10.128.0.0/9 }"),
    "a shadowed rule removed": (
        "accept from 10.0.0.0/8\n    accept from 10.1.0.0/16 tcp dport 22",
        "accept from 10.0.0.0/8"),
    "a chain inlined": (
        "jump office\n  }\n  chain office {\n    accept from 10.0.0.0/8",
        "accept from 10.0.0.0/8"),
}


@pytest.mark.parametrize("name", sorted(EQUIVALENT_REWRITES))
def test_rewrites_that_change_no_packet_are_equivalent(run: Run, tmp_path: Path,
                                                       name: str) -> None:
    before, after = EQUIVALENT_REWRITES[name]
    template = "table ip filter {\n  chain INPUT policy drop {\n    %s\n  }\n}\n"
    _write(tmp_path, a_rules=template % before, b_rules=template % after)
    code, out, _ = run("diff", "a.rules", "b.rules", cwd=tmp_path)
    assert (code, out) == (cli.EXIT_OK, "equivalent: no packet's fate differs (IPv4)\n")


def test_an_inet_table_is_the_same_rules_in_ip_and_ip6(run: Run, tmp_path: Path) -> None:
    rules = "accept tcp dport 22 from { 10.0.0.0/8, 2001:db8::/32 }"
    split = ("table ip filter {{ chain INPUT policy drop {{ accept tcp dport 22 from "
             "10.0.0.0/8 }} }}\ntable ip6 filter {{ chain INPUT policy drop {{ accept tcp "
             "dport 22 from 2001:db8::/32 }} }}\n").format()
    _write(tmp_path, inet_rules=f"table inet filter {{ chain INPUT policy drop {{ {rules} }} }}\n",
           split_rules=split)
    code, out, _ = run("diff", "inet.rules", "split.rules", cwd=tmp_path)
    assert (code, out) == (cli.EXIT_OK, "equivalent: no packet's fate differs (IPv4, IPv6)\n")


@pytest.mark.parametrize("policy", ["host-firewall.rules", "docker-compose-host.rules"])
def test_the_optimiser_is_its_own_witness(run: Run, policy: str) -> None:
    code, out, _ = run("diff", "--optimised", policy, cwd=ROOT / "examples")
    assert code == cli.EXIT_OK, out
    assert out.startswith("equivalent")


def test_git_compares_a_revision_with_the_working_tree(run: Run, tmp_path: Path) -> None:
    _write(tmp_path, main_rules='include "office.rules"\n' + OLD.replace(
        'accept tcp dport 22 from 10.0.0.0/8 comment "ssh from the office"', "jump office"),
        office_rules="table ip filter {\n  chain office {\n    accept tcp dport 22 from "
        "10.0.0.0/8\n  }\n}\n")
    git = ["git", "-c", "user.email=ci@example.org", "-c", "user.name=ci"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "policy"]):
        subprocess.run([*git, *args], cwd=tmp_path, check=True)
    code, out, _ = run("diff", "--git", "HEAD", "main.rules", cwd=tmp_path)
    assert (code, out.startswith("equivalent")) == (cli.EXIT_OK, True)
    office = tmp_path / "office.rules"  # the include changes, not the named file
    office.write_text(office.read_text().replace("dport 22", "dport 23"), encoding="utf-8")
    code, out, _ = run("diff", "--git", "HEAD", "main.rules", cwd=tmp_path)
    assert code == cli.EXIT_DIFFERENT
    assert "newly accepted: tcp from 10.0.0.0/8 port 23" in out
    assert "old: drop by the policy drop of filter INPUT" in out
    assert "newly dropped: tcp from 10.0.0.0/8 port 22" in out
    assert "old: accept by HEAD:office.rules:3" in out  # the REV side is named REV:path
    code, _, err = run("diff", "--git", "no-such-rev", "main.rules", cwd=tmp_path)
    assert code == cli.EXIT_USAGE and "unknown revision 'no-such-rev'" in err


def test_a_networkpolicy_change(run: Run, tmp_path: Path) -> None:
    policy = (K8S / "policy.yaml").read_text(encoding="utf-8")
    _write(tmp_path, new_yaml=policy.replace("port: 9000", "port: 9001"))
    code, out, _ = run("diff", "--inventory", "cluster.yaml", "--old", "policy.yaml",
                       "--new", str(tmp_path / "new.yaml"), cwd=K8S)
    assert code == cli.EXIT_DIFFERENT
    assert "newly dropped: tcp from 198.18.1.11 to 198.18.1.21 port 9000" in out


def test_a_pod_relabelling(run: Run, tmp_path: Path) -> None:
    cluster = (K8S / "cluster.yaml").read_text(encoding="utf-8")
    _write(tmp_path, relabelled_yaml=cluster.replace("app: web,", "app: shop,"))
    code, out, _ = run("diff", "--old-inventory", "cluster.yaml", "--new-inventory",
                       str(tmp_path / "relabelled.yaml"), "policy.yaml", cwd=K8S)
    assert code == cli.EXIT_DIFFERENT
    assert "newly dropped" in out and "198.18.1.11" in out


def test_a_docker_user_rule_change(run: Run, tmp_path: Path) -> None:
    text = DOCKER_HOST.read_text(encoding="utf-8")
    _write(tmp_path, old_rules=text, new_rules=text.replace("203.0.113.0/24", "203.0.113.0/25"))
    code, out, _ = run("diff", "old.rules", "new.rules", cwd=tmp_path)
    assert code == cli.EXIT_DIFFERENT
    # The half no longer blocked reaches the published ports again, DNATed to the proxy.
    assert "newly accepted: tcp from 203.0.113.128/25" in out
    assert "new: accept, DNATed to 172.20.0.2" in out
    assert "old: drop, DNATed to 172.20.0.2 by old.rules:" in out


def test_a_policy_with_errors_is_trouble_not_a_difference(run: Run, tmp_path: Path) -> None:
    _write(tmp_path, old_rules=OLD, bad_rules="table ip filter { chain INPUT { accept tcp "
           "dport 99999 } }\n")
    code, _, err = run("diff", "old.rules", "bad.rules", cwd=tmp_path)
    assert code == cli.EXIT_USAGE
    assert "bad.rules:1:" in err and "nothing was compared" in err


@pytest.mark.parametrize("args", [
    ("old.rules",), ("--old", "old.rules"), ("--git", "HEAD"),
    ("--optimised", "--git", "HEAD", "old.rules"), ("old.rules", "missing.rules"),
])
def test_usage_errors(run: Run, tmp_path: Path, args: tuple[str, ...]) -> None:
    _write(tmp_path, old_rules=OLD)
    code, _, err = run("diff", *args, cwd=tmp_path)
    assert code == cli.EXIT_USAGE and err
