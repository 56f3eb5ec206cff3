"""iptables and ip6tables each print one family's half of a policy. Compiling a dual-stack
policy for one of them is never silent (W0401 names what is left out), and one run can write
both halves (`-o rules.v4 --ip6-output rules.v6`), with the sets of both in one --ipset file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rulec import api, cli, kernel
from rulec.backends import Artifact
from tests.cli.conftest import Run

ROOT = Path(__file__).resolve().parents[2]
DUAL = """table inet filter {
  chain INPUT policy drop {
    accept ct state established,related
    drop udp dport 9
    accept tcp dport 22 from { 198.51.100.0/24, 203.0.113.0/24, 2001:db8:1::/48, 2001:db8:2::/48 }
  }
}
"""
V4_ONLY = """table ip filter {
  chain INPUT policy drop {
    accept tcp dport 22 from 198.51.100.0/24
  }
}
"""


@pytest.fixture
def dual(tmp_path: Path) -> Path:
    (tmp_path / "dual.rules").write_text(DUAL, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(("target", "left_out"), [("iptables", "IPv6"), ("ip6tables", "IPv4")])
def test_one_half_of_a_dual_stack_policy_is_never_silent(run: Run, dual: Path, target: str,
                                                         left_out: str) -> None:
    code, out, err = run("compile", "-t", target, "dual.rules", cwd=dual)
    assert code == cli.EXIT_OK and "COMMIT" in out
    assert err.startswith("dual.rules:4:5: warning[W0401]: ")  # the drop rule
    assert (f"its {left_out} half (1 rules that drop, reject, rewrite or mark, 1 drop "
            "policies) is left out") in err


def test_a_single_family_policy_gets_no_warning(run: Run, tmp_path: Path) -> None:
    (tmp_path / "v4.rules").write_text(V4_ONLY, encoding="utf-8")
    code, _, err = run("compile", "-t", "iptables", "v4.rules", cwd=tmp_path)
    assert (code, err) == (cli.EXIT_OK, "")


def test_a_half_that_only_accepts_gets_no_warning(run: Run, tmp_path: Path) -> None:
    """Its rules decide what no rules at all would: every IPv6 packet is accepted."""
    (tmp_path / "p.rules").write_text(
        "table inet filter {\n  chain FORWARD policy accept {\n    jump v4only\n"
        "    accept ct state established\n  }\n  chain v4only {\n"
        "    drop from 198.51.100.0/24\n  }\n}\n", encoding="utf-8")
    code, _, err = run("compile", "-t", "iptables", "p.rules", cwd=tmp_path)
    assert (code, err) == (cli.EXIT_OK, "")


def test_a_dual_stack_inventory_warns_too(run: Run) -> None:
    case = ROOT / "tests" / "k8s" / "golden" / "dual-stack"
    code, _, err = run("compile", "-t", "iptables", "--inventory", "cluster.yaml",
                       "policy.yaml", cwd=case)
    assert code == cli.EXIT_OK
    assert "warning[W0401]" in err


def test_both_halves_in_one_run(run: Run, dual: Path) -> None:
    code, out, err = run("compile", "-t", "iptables", "dual.rules", "-o", "rules.v4",
                         "--ip6-output", "rules.v6", cwd=dual)
    assert (code, out, err) == (cli.EXIT_OK, "", "")
    for name, target in (("rules.v4", "iptables"), ("rules.v6", "ip6tables")):
        alone = api.compile_files([dual / "dual.rules"], target).artifact.text
        assert (dual / name).read_text(encoding="utf-8") == alone


def test_ip6_output_needs_the_iptables_target(run: Run, dual: Path) -> None:
    code, _, err = run("compile", "-t", "nft", "dual.rules", "--ip6-output", "v6", cwd=dual)
    assert code == cli.EXIT_USAGE and "--ip6-output applies to --target iptables" in err


@pytest.mark.skipif(kernel.available("iptables") or shutil.which("ipset") is None,
                    reason="needs root, network namespaces, iptables and ipset")
def test_both_halves_and_their_sets_load_into_one_namespace(run: Run, dual: Path) -> None:
    code, _, _ = run("compile", "-t", "iptables", "dual.rules", "--ipset", "sets",
                     "-o", "rules.v4", "--ip6-output", "rules.v6", cwd=dual)
    assert code == cli.EXIT_OK
    sets = (dual / "sets").read_text(encoding="utf-8")
    assert "family inet " in sets and "family inet6 " in sets
    with kernel.namespace("fam") as ns:
        for name, target in (("rules.v4", "iptables"), ("rules.v6", "ip6tables")):
            artifact = Artifact(target=target, text=(dual / name).read_text(encoding="utf-8"),
                                load_command=(f"{target}-restore",), ipsets=sets)
            verdict = kernel.load(artifact, ns, "nft")
            assert verdict.ok, verdict.summary()
        listed = ns.run(["ipset", "list", "-n"]).stdout.split()
        assert len(listed) == 2
