"""Bad or inconsistent Docker input is a positioned error (file:line:col, code), in the .rules
file or in the inspect JSON, never a traceback; every problem of a run is reported at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rulec import api
from rulec.diagnostics import RulecError


def rendered(text: str, target: str = "iptables", **options: object) -> str:
    with pytest.raises(RulecError) as caught:
        api.compile_text(text, target, name="host.rules", **options)  # type: ignore[arg-type]
    return caught.value.render()


NET = "  network apps {\n    subnet 192.0.2.0/24\n  }\n"


def test_container_address_outside_its_subnet() -> None:
    text = "docker {\n" + NET + "  container web {\n    network apps 198.51.100.2\n  }\n}\n"
    assert rendered(text) == (
        "host.rules:6:5: error[E0704]: address 198.51.100.2 of container web is outside subnet "
        "192.0.2.0/24 of network apps\n"
        "   6 |     network apps 198.51.100.2\n"
        "     |     ^^^^^^^^^^^^^^^^^^^^^^^^^")


def test_port_published_twice_points_at_both() -> None:
    text = ("docker {\n" + NET + '  container a {\n    network apps 192.0.2.2\n'
            '    publish "8080:80"\n  }\n  container b {\n    network apps 192.0.2.3\n'
            '    publish "127.0.0.1:8080:81"\n  }\n}\n')
    message = rendered(text)
    assert message.startswith("host.rules:11:13: error[E0705]: tcp port 8080 is already "
                              "published by a")
    assert message.endswith("note: published at host.rules:7:13")


def test_same_port_on_other_protocol_or_family_is_fine() -> None:
    text = ("docker {\n" + NET + '  container a {\n    network apps 192.0.2.2\n'
            '    publish "0.0.0.0:53:53/udp" "[::]:53:53/udp" "53:53/tcp"\n  }\n}\n')
    api.compile_text(text, "iptables")


def test_unknown_network_and_every_other_error_at_once() -> None:
    text = ("docker {\n  userland-proxy maybe\n" + NET +
            '  container a {\n    network app 192.0.2.2\n    publish "80"\n  }\n}\n')
    message = rendered(text)
    assert "host.rules:2:18: error[E0703]: `userland-proxy` is on or off, not 'maybe'" in message
    assert "host.rules:7:5: error[E0706]: container a is attached to unknown network app" in message
    assert "host.rules:8:13: error[E0703]: published port '80' needs a host port" in message


def test_operator_cannot_declare_a_docker_chain() -> None:
    text = ("docker {\n" + NET + "}\ntable ip filter {\n  chain DOCKER-FORWARD {\n"
            "    accept\n  }\n}\n")
    assert rendered(text).startswith(
        "host.rules:7:9: error[E0708]: chain DOCKER-FORWARD belongs to dockerd")


def test_coexist_refuses_builtin_chains_dockerd_writes_to() -> None:
    text = "docker {\n" + NET + "}\ntable ip filter {\n  chain FORWARD {\n    accept\n  }\n}\n"
    assert rendered(text, noflush=True).startswith(
        "host.rules:7:9: error[E0708]: with --noflush, declaring FORWARD in filter would flush "
        "dockerd's rules in it")
    api.compile_text(text, "iptables")  # a full replace emits both


def test_two_docker_models() -> None:
    text = "docker {\n" + NET + "}\ndocker {\n" + NET + "}\n"
    assert "host.rules:6:1: error[E0709]: a second Docker host model" in rendered(text)


def test_classic_layout_has_no_nat_unprotected() -> None:
    text = "docker {\n  layout classic\n  network apps {\n    subnet 192.0.2.0/24\n" \
           "    gateway-mode nat-unprotected\n  }\n}\n"
    assert rendered(text).startswith(
        "host.rules:3:11: error[E0703]: network apps: gateway mode nat-unprotected needs the "
        "current layout")


def test_bad_bridge_name() -> None:
    text = "docker {\n  network a-network-with-a-long-name {\n    subnet 192.0.2.0/24\n  }\n}\n"
    assert "error[E0703]: bridge name 'a-network-with-a-long-name' is not a valid interface " \
           "name" in rendered(text)


def test_json_syntax_error_is_positioned(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text('[\n  {"Name": "apps",\n   "Driver": "bridge",}\n]\n', encoding="utf-8")
    assert rendered("", docker_state=[state]).startswith(
        f"{state}:3:23: error[E0701]: expected a string key")


def test_json_inconsistency_points_into_the_json(tmp_path: Path) -> None:
    network = {"Name": "apps", "Driver": "bridge", "Id": "0123456789abcdef",
               "IPAM": {"Config": [{"Subnet": "192.0.2.0/24"}]}}
    container = {"Name": "/web", "NetworkSettings": {
        "Networks": {"apps": {"IPAddress": "198.51.100.2"}},
        "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "80x"}]}}}
    state = tmp_path / "state.json"
    state.write_text(json.dumps([network, container], indent=2), encoding="utf-8")
    message = rendered("", docker_state=[state])
    lines = state.read_text(encoding="utf-8").splitlines()
    apps = next(i for i, line in enumerate(lines, 1) if '"apps": {' in line)
    port = next(i for i, line in enumerate(lines, 1) if '"80x"' in line)
    assert f"{state}:{apps}:9: error[E0704]: address 198.51.100.2 of container web is outside " \
           "subnet 192.0.2.0/24 of network apps" in message
    assert f"{state}:{port}:" in message and "host port '80x' is not a port" in message


def test_json_wrong_types(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"daemon": {"userland-proxy": "no"}, "networks": {}, "extra": 1}',
                     encoding="utf-8")
    message = rendered("", docker_state=[state])
    assert f"{state}:1:31: error[E0702]: userland-proxy must be true or false, not a string" \
        in message
    assert "error[E0702]: networks must be an array, not an object" in message
    assert "error[E0702]: unknown key 'extra'" in message


def test_hostile_names_never_reach_the_output() -> None:
    text = ('docker {\n  network apps {\n    bridge "x\\" -j ACCEPT"\n    subnet 192.0.2.0/24\n'
            "  }\n}\n")
    assert "error[E0703]: bridge name" in rendered(text)
