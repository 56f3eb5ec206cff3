"""`rulec check` reads every input `compile` reads (.rules, --inventory, --docker-state) and,
with --kernel, loads exactly what `compile` prints for each target."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rulec import api, cli, kernel
from rulec.backends import Artifact
from rulec.kernel import KernelVerdict
from tests.cli.conftest import Run

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "tests" / "k8s" / "golden" / "web-tiers"
DOCKER_HOST = ROOT / "examples" / "docker-compose-host.rules"


def test_check_takes_an_inventory(run: Run) -> None:
    code, out, _ = run("check", "--inventory", "cluster.yaml", "policy.yaml", cwd=K8S)
    assert code == cli.EXIT_OK
    assert out == "ok: policy.yaml, cluster.yaml (iptables, ip6tables, nft, nft-json)\n"


def test_check_reports_inventory_errors(run: Run, tmp_path: Path) -> None:
    (tmp_path / "cluster.yaml").write_text("namespaces: []\npods: [{name: a}]\n",
                                           encoding="utf-8")
    (tmp_path / "policy.yaml").write_text("", encoding="utf-8")
    code, out, err = run("check", "--inventory", "cluster.yaml", "policy.yaml", cwd=tmp_path)
    assert (code, out) == (cli.EXIT_POLICY, "")
    assert err.startswith("cluster.yaml:2:")


@pytest.mark.parametrize("command", ["compile", "check"])
def test_inventory_and_docker_state_exclude_each_other(run: Run, command: str) -> None:
    code, _, err = run(command, "--inventory", "cluster.yaml", "--docker-state",
                       "cluster.yaml", "policy.yaml", cwd=K8S)
    assert code == cli.EXIT_USAGE
    assert "--inventory and --docker-state exclude each other" in err


def test_check_kernel_loads_what_compile_prints(run: Run,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A Docker host compiles to Docker 29's nft tables for nft: that is what gets loaded."""
    loaded: dict[str, str] = {}

    def validate(artifact: Artifact, *, variant: str | None = None) -> KernelVerdict:
        loaded[artifact.target] = artifact.text
        return KernelVerdict(ok=True, target=artifact.target, loader="recorded")

    monkeypatch.setattr(kernel, "validate_artifact", validate)
    monkeypatch.setattr(kernel, "available", lambda *a, **k: None)
    code, _, _ = run("check", "--kernel", DOCKER_HOST.name, cwd=DOCKER_HOST.parent)
    assert code == cli.EXIT_OK
    assert sorted(loaded) == sorted(api.TARGETS)
    for target, text in loaded.items():
        assert text == api.compile_files([DOCKER_HOST], target).artifact.text, target
    assert "table ip docker-bridges" in loaded["nft"]


@pytest.mark.skipif(bool(kernel.available("nft")), reason=f"{kernel.available('nft')}")
def test_check_kernel_on_a_docker_host_loads(run: Run) -> None:
    code, out, _ = run("check", "--kernel", "-t", "nft", "-t", "iptables", DOCKER_HOST.name,
                       cwd=DOCKER_HOST.parent)
    assert code == cli.EXIT_OK, out
    assert out.splitlines()[0].startswith("ok: nft (")


@pytest.mark.parametrize("command", ["compile", "check"])
def test_an_input_that_is_not_a_regular_file_is_named_so(run: Run, tmp_path: Path,
                                                         command: str) -> None:
    os.mkfifo(tmp_path / "pipe")
    code, _, err = run(command, "pipe", cwd=tmp_path)
    assert (code, err) == (cli.EXIT_USAGE, "rulec: error: pipe is not a regular file\n")


def test_a_file_name_in_a_usage_error_is_escaped(run: Run, tmp_path: Path) -> None:
    code, _, err = run("check", "evil\n\u202egnp.rules", cwd=tmp_path)
    assert (code, err) == (cli.EXIT_USAGE,
                           "rulec: error: no such file: evil\\n\\u202egnp.rules\n")


def test_check_reports_the_engines_findings(run: Run, tmp_path: Path) -> None:
    (tmp_path / "p.rules").write_text(
        "table ip filter {\n  chain INPUT policy drop {\n    drop from 10.0.0.0/8 tcp dport "
        "20-30\n    accept from 10.1.0.0/16 tcp dport 22-80\n  }\n}\n", encoding="utf-8")
    code, out, err = run("check", "p.rules", cwd=tmp_path)
    assert code == cli.EXIT_OK and out.startswith("ok: p.rules")
    assert "p.rules:4:5: warning[W0902]" in err
    assert "note: e.g. tcp 10.1.0.1:40000 -> 192.0.2.1:22 in eth0 ct new" in err
