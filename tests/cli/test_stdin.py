"""`-` names standard input, for a policy, an inventory, NetworkPolicy files or a Docker state
file, once per run; diagnostics call it `<stdin>`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rulec import api, cli
from tests.cli.conftest import Run

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "host-firewall.rules"
K8S = ROOT / "tests" / "k8s" / "golden" / "web-tiers"


def test_a_policy_from_standard_input(run: Run, tmp_path: Path) -> None:
    policy = EXAMPLE.read_text(encoding="utf-8")
    code, out, _ = run("compile", "-t", "nft", "-", cwd=tmp_path, stdin=policy)
    assert code == cli.EXIT_OK
    assert out == api.compile_files([EXAMPLE], "nft").artifact.text


def test_a_real_pipe(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "rulec", "compile", "-t", "nft", "-"],
                          input=EXAMPLE.read_bytes(), capture_output=True, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == api.compile_files([EXAMPLE], "nft").artifact.text


def test_errors_name_it_stdin(run: Run, tmp_path: Path) -> None:
    code, _, err = run("check", "-", cwd=tmp_path, stdin="table ip filter {\n  chain X {\n"
                       "    accept tcp dport 99999\n  }\n}\n")
    assert code == cli.EXIT_POLICY
    assert err.startswith("<stdin>:3:")


def test_check_reads_it_once_for_every_target(run: Run, tmp_path: Path) -> None:
    code, out, _ = run("check", "-", cwd=tmp_path, stdin=EXAMPLE.read_text(encoding="utf-8"))
    assert (code, out) == (cli.EXIT_OK, "ok: - (iptables, ip6tables, nft, nft-json)\n")


def test_includes_resolve_from_the_working_directory(run: Run, tmp_path: Path) -> None:
    (tmp_path / "part.rules").write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    code, out, _ = run("compile", "-t", "nft", "-", cwd=tmp_path, stdin='include "part.rules"\n')
    assert code == cli.EXIT_OK and "policy drop" in out


def test_networkpolicy_from_standard_input(run: Run) -> None:
    policy = (K8S / "policy.yaml").read_text(encoding="utf-8")
    code, out, _ = run("compile", "-t", "nft", "--inventory", "cluster.yaml", "-", cwd=K8S,
                       stdin=policy)
    assert code == cli.EXIT_OK
    expected = api.compile_k8s_files(K8S / "cluster.yaml", [K8S / "policy.yaml"], "nft")
    assert out == expected.artifact.text


def test_a_docker_state_from_standard_input(run: Run, tmp_path: Path) -> None:
    state = {"networks": [{"Name": "bridge", "Id": "f" * 64, "Driver": "bridge",
                           "Options": {"com.docker.network.bridge.name": "docker0"},
                           "IPAM": {"Config": [{"Subnet": "172.17.0.0/16"}]}}],
             "containers": []}
    code, out, err = run("compile", "-t", "nft", "--docker-state", "-", cwd=tmp_path,
                         stdin=json.dumps(state))
    assert code == cli.EXIT_OK, err
    assert "docker0" in out


def test_standard_input_once_per_run(run: Run, tmp_path: Path) -> None:
    code, _, err = run("compile", "-", "--docker-state", "-", cwd=tmp_path, stdin="")
    assert code == cli.EXIT_USAGE and "standard input (-) can be only one" in err
