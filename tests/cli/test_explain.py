"""`rulec explain`: the inputs `compile` takes (.rules, a Docker host, --inventory), one packet
through them, text or JSON, and the exit codes (0 explained whatever the verdict, 1 errors in
the policy or the packet, 2 usage)."""

from __future__ import annotations

import json
from pathlib import Path

from rulec import cli
from tests.cli.conftest import Run

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "tests" / "k8s" / "golden" / "web-tiers"
DOCKER_STATE = ROOT / "tests" / "docker" / "real" / "noproxy"

POLICY = """\
table ip filter {
  chain INPUT policy drop {
    accept ct state established
    jump ssh
  }
  chain ssh {
    accept tcp dport 22 from 198.51.100.0/24
    return
  }
}
"""


def test_a_trace_through_a_user_chain(run: Run, tmp_path: Path) -> None:
    (tmp_path / "host.rules").write_text(POLICY)
    code, out, err = run("explain", "host.rules", "--packet",
                         "tcp 198.51.100.7 -> 203.0.113.1:22 in eth0 to-host", cwd=tmp_path)
    assert (code, err) == (cli.EXIT_OK, "")
    assert out == (
        "packet: tcp 198.51.100.7:40000 -> 203.0.113.1:22 in eth0 ct new (addressed to this host)\n"
        "path:   to this host: PREROUTING, INPUT\n"
        "PREROUTING: no chain of this policy runs here\n"
        "INPUT:\n"
        "    filter INPUT: host.rules:4  jump ssh\n"
        "    filter ssh: host.rules:7  accept tcp dport 22 from 198.51.100.0/24\n"
        "verdict: accept by host.rules:7\n")


def test_a_dropped_packet_is_explained_too(run: Run, tmp_path: Path) -> None:
    (tmp_path / "host.rules").write_text(POLICY)
    code, out, _ = run("explain", "host.rules", "--packet",
                       "tcp 192.0.2.9 -> 203.0.113.1:22 to-host", cwd=tmp_path)
    assert code == cli.EXIT_OK
    assert "    filter ssh: host.rules:8  return\n" in out
    assert out.endswith("verdict: drop by the policy drop of filter INPUT\n")


def test_json(run: Run, tmp_path: Path) -> None:
    (tmp_path / "host.rules").write_text(POLICY)
    code, out, _ = run("explain", "host.rules", "--format", "json", "--packet",
                       "tcp 198.51.100.7 -> 203.0.113.1:22 to-host", cwd=tmp_path)
    assert code == cli.EXIT_OK
    doc = json.loads(out)
    assert sorted(doc) == ["after", "decided_by", "delivered_locally", "hooks", "notes",
                           "packet", "path", "rewrites", "schema", "verdict"]
    assert doc["verdict"] == "accept" and doc["delivered_locally"] is True
    assert [s["rule"] for h in doc["hooks"] for s in h["steps"]] == ["host.rules:4",
                                                                     "host.rules:7"]


def test_a_bad_packet_is_an_error_at_its_column(run: Run, tmp_path: Path) -> None:
    (tmp_path / "host.rules").write_text(POLICY)
    code, out, err = run("explain", "host.rules", "--packet",
                         "tcp 198.51.100.7 -> 203.0.113.1:22 ct neww", cwd=tmp_path)
    assert (code, out) == (cli.EXIT_POLICY, "")
    assert err.startswith(
        "--packet:1:39: error[E0801]: unknown conntrack state 'neww'\n"
        "   1 | tcp 198.51.100.7 -> 203.0.113.1:22 ct neww\n"
        "     |                                       ^^^^\n"
        "note: known: invalid, established, related, new, untracked\n")


def test_policy_errors_exit_1(run: Run, tmp_path: Path) -> None:
    (tmp_path / "bad.rules").write_text("table ip filter {\n  chain INPUT {\n    jump nowhere\n"
                                        "  }\n}\n")
    code, _, err = run("explain", "bad.rules", "--packet", "udp 192.0.2.1 -> 192.0.2.2:53",
                       cwd=tmp_path)
    assert code == cli.EXIT_POLICY and "bad.rules:3" in err


def test_usage_errors(run: Run, tmp_path: Path) -> None:
    (tmp_path / "host.rules").write_text(POLICY)
    for args, message in [
        ((), "give --packet, or --from-pod and --to-pod"),
        (("--packet", "udp 192.0.2.1 -> 192.0.2.2:53", "--from-pod", "a/b"), "give --packet"),
        (("--from-pod", "a/b", "--to-pod", "a/c", "--port", "80"), "take --inventory"),
        (("--packet", "udp 192.0.2.1 -> 192.0.2.2:53", "--port", "80"), "--port goes with"),
    ]:
        code, _, err = run("explain", "host.rules", *args, cwd=tmp_path)
        assert code == cli.EXIT_USAGE and message in err, (args, err)


def _pods(run: Run, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    return run("explain", "--inventory", str(K8S / "cluster.yaml"), str(K8S / "policy.yaml"),
               *args, cwd=tmp_path)


def test_kubernetes_pod_to_pod(run: Run, tmp_path: Path) -> None:
    code, out, err = _pods(run, tmp_path, "--from-pod", "shop/web-1", "--to-pod", "shop/api-1",
                           "--port", "9000/tcp")
    assert code == cli.EXIT_OK, err
    lines = out.splitlines()
    assert lines[0] == "packet: tcp 198.18.1.11:40000 -> 198.18.1.21:9000 ct new"
    assert lines[1] == "path:   forwarded: PREROUTING, FORWARD, POSTROUTING"
    # web's egress policy lets it out, api's ingress policy lets it in: both are named.
    assert any(line.startswith("    filter pol-shop.web-eg: ") and "policy.yaml:31" in line
               for line in lines)
    policy = str(K8S / "policy.yaml")
    assert lines[-1] == f"verdict: accept by {policy}:40"


def test_kubernetes_isolated_pod(run: Run, tmp_path: Path) -> None:
    code, out, _ = _pods(run, tmp_path, "--from-pod", "shop/api-1", "--to-pod", "shop/web-1",
                         "--port", "8080", "--format", "json")
    assert code == cli.EXIT_OK
    doc = json.loads(out)
    assert doc["verdict"] == "drop" and doc["packet"]["dport"] == 8080
    decided = doc["decided_by"]
    assert decided["action"] == "drop" and decided["rule"].endswith("cluster.yaml:17")
    assert "isolated for egress" in decided["compiled"]


def test_kubernetes_unknown_pod_is_a_usage_error(run: Run, tmp_path: Path) -> None:
    code, _, err = _pods(run, tmp_path, "--from-pod", "shop/web-9", "--to-pod", "shop/api-1",
                         "--port", "80/tcp")
    assert code == cli.EXIT_USAGE and "no pod 'shop/web-9'" in err and "shop/web-1" in err
    code, _, err = _pods(run, tmp_path, "--from-pod", "shop/web-1", "--to-pod", "shop/api-1",
                         "--port", "http")
    assert code == cli.EXIT_USAGE and "PORT/PROTOCOL" in err


def test_kubernetes_with_a_spelt_packet(run: Run, tmp_path: Path) -> None:
    code, out, _ = _pods(run, tmp_path, "--packet", "udp 198.18.1.11 -> 198.18.3.10:53")
    assert code == cli.EXIT_OK and out.endswith("verdict: accept by filter k8s-ingress\n")


def test_docker_state_published_port(run: Run, tmp_path: Path) -> None:
    """The captured dockerd publishes 8443 to 198.18.17.2:443 on docker0."""
    state = [arg for name in ("networks", "containers", "daemon", "info")
             for arg in ("--docker-state", str(DOCKER_STATE / f"{name}.json"))]
    code, out, err = run("explain", *state, "--packet",
                         "tcp 203.0.113.9 -> 192.0.2.1:8443 in eth0 out docker0 to-host",
                         cwd=tmp_path)
    assert code == cli.EXIT_OK, err
    assert "rewritten: daddr 192.0.2.1 -> 198.18.17.2 (dnat)\n" in out
    assert "rewritten: dport 8443 -> 443 (dnat)\n" in out
    assert "verdict: accept by " in out and "containers.json:" in out


def test_docker_block_example(run: Run, tmp_path: Path) -> None:
    example = str(ROOT / "examples" / "docker-compose-host.rules")
    code, out, _ = run("explain", example, "--packet",
                       "tcp 198.51.100.7 -> 203.0.113.1:443 in eth0 out br-frontend to-host",
                       cwd=tmp_path)
    assert code == cli.EXIT_OK
    assert "rewritten: daddr 203.0.113.1 -> 172.20.0.2 (dnat)\n" in out
    assert f"verdict: accept by {example}:33\n" in out
    # From the abusive range DOCKER-USER drops, by the operator's own rule.
    code, out, _ = run("explain", example, "--packet",
                       "tcp 203.0.113.5 -> 203.0.113.1:443 in eth0 out br-frontend to-host",
                       cwd=tmp_path)
    assert code == cli.EXIT_OK and f"verdict: drop by {example}:51\n" in out
