"""Goldens from a real dockerd, checked without one: tests/docker/real/ holds what Debian's
docker.io 20.10 printed (rules and JSON, see its README), captured by test_real_dockerd.py.
rulec, fed that JSON in each documented form, must write the captured rules chain by chain.
Nothing in these fixtures is modelled; the 27/29 layouts are checked against moby's
documentation in test_expand.py instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rulec import api
from rulec.diagnostics import RulecError
from tests.docker.real_dockerd import FIXTURES, chain_differences, read_capture, state_files

CAPTURES = sorted(p for p in FIXTURES.iterdir() if (p / "iptables.save").exists())


def inputs(directory: Path, tmp_path: Path) -> dict[str, list[Path]]:
    files = state_files(read_capture(directory), tmp_path)
    return {
        # `docker network inspect` and `docker inspect`, with daemon.json and `docker info`
        "two files": [files[k] for k in ("networks", "containers", "daemon", "info")],
        # the same with `docker version` instead of `docker info`
        "two files, docker version": [files[k] for k in ("networks", "containers", "daemon",
                                                         "version")],
        "state.json": [files["state"]],
    }


def test_every_configuration_is_captured() -> None:
    assert [p.name for p in CAPTURES] == ["ip6tables-default", "noproxy", "proxy"]


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_rulec_writes_dockerds_rules(capture: Path, tmp_path: Path) -> None:
    saved = read_capture(capture)
    for form, paths in inputs(capture, tmp_path).items():
        # Both halves, as a host loads them (one half alone gets W0401 for the other).
        result = api.compile_files([], "iptables", docker_state=paths, both_families=True)
        assert result.warnings == (), form
        assert result.other_family is not None
        for target, dumped, text in (("iptables", saved.iptables, result.artifact.text),
                                     ("ip6tables", saved.ip6tables, result.other_family.text)):
            assert chain_differences(dumped, text) == [], (form, target)


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_docker_block_gives_what_the_state_files_leave_out(capture: Path,
                                                           tmp_path: Path) -> None:
    """The inspect files alone do not carry the daemon's options: a docker block beside them
    does (the version and userland-proxy here), with the same rules as daemon.json + info."""
    saved = read_capture(capture)
    files = state_files(saved, tmp_path)
    daemon = saved.daemon
    settings = [f'version "{saved.info["ServerVersion"]}"',
                f"userland-proxy {'on' if daemon['userland-proxy'] else 'off'}"]
    if "ip6tables" in daemon:
        settings += [f"ip6tables {'on' if daemon['ip6tables'] else 'off'}", "experimental on"]
    block = tmp_path / "host.rules"
    block.write_text("docker {\n" + "".join(f"  {s}\n" for s in settings) + "}\n",
                     encoding="utf-8")
    for target, dumped in (("iptables", saved.iptables), ("ip6tables", saved.ip6tables)):
        text = api.compile_files([block], target,
                                 docker_state=[files["networks"], files["containers"]]
                                 ).artifact.text
        assert chain_differences(dumped, text) == [], target


def test_containers_carry_a_driver_key(tmp_path: Path) -> None:
    """Real `docker inspect` output has "Driver" (the storage driver) in every container: the
    key that made the two-file form read containers as networks."""
    containers = json.loads((FIXTURES / "proxy" / "containers.json").read_text())
    assert containers and all(c["Driver"] == "vfs" for c in containers)
    files = state_files(read_capture(FIXTURES / "proxy"), tmp_path)
    text = api.compile_files([], "iptables",
                             docker_state=[files["networks"], files["containers"]]).artifact.text
    assert "-j DNAT --to-destination 198.18.17.2:80" in text


def test_without_the_version_a_warning_says_what_is_assumed(tmp_path: Path) -> None:
    files = state_files(read_capture(FIXTURES / "proxy"), tmp_path)
    result = api.compile_files([], "iptables", docker_state=[files["networks"],
                                                             files["containers"]],
                               both_families=True)
    assert [w.code for w in result.warnings] == ["W0702"]
    assert "assumes 29.x" in result.warnings[0].message


def test_a_docker_block_and_daemon_json_that_disagree(tmp_path: Path) -> None:
    files = state_files(read_capture(FIXTURES / "noproxy"), tmp_path)
    block = tmp_path / "host.rules"
    block.write_text("docker {\n  userland-proxy on\n}\n", encoding="utf-8")
    with pytest.raises(RulecError) as caught:
        api.compile_files([block], "iptables", docker_state=[files["state"]])
    message = caught.value.render()
    assert f"{files['state']}:" in message
    assert "error[E0712]: userland-proxy is off here but on at" in message
    assert f"{block}:2:3" in message


def test_running_containers_alone_give_the_same_rules(tmp_path: Path) -> None:
    """`docker inspect $(docker ps -q)` leaves out the stopped container `docker ps -aq`
    lists; it has no rules, so the output is the same."""
    saved = read_capture(FIXTURES / "proxy")
    files = state_files(saved, tmp_path)
    running = [c for c in saved.containers if c["State"]["Running"]]
    assert len(running) == len(saved.containers) - 1
    only = tmp_path / "running.json"
    only.write_text(json.dumps(running), encoding="utf-8")
    rest = [files["networks"], files["daemon"], files["info"]]
    for target in ("iptables", "ip6tables"):
        assert api.compile_files([], target, docker_state=[*rest, only]).artifact.text == \
            api.compile_files([], target, docker_state=[*rest, files["containers"]]
                              ).artifact.text
