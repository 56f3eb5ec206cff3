"""Bad or inconsistent Docker input is a positioned error (file:line:col, code), in the .rules
file or in the inspect JSON, never a traceback; every problem of a run is reported at once."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from rulec import api, cli
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
    assert rendered(text) == (
        "host.rules:2:11: error[E0703]: bridge name 'a-network-with-a-long-name' is not a valid "
        "interface name: it is 26 characters long; the kernel takes 15 bytes (IFNAMSIZ)\n"
        "   2 |   network a-network-with-a-long-name {\n"
        "     |           ^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        "note: use 1 to 15 ASCII letters, digits, '-', '_' or '.'")


WEB = '  container web {\n    network apps 192.0.2.2\n    publish "8080:80"\n  }\n'


@pytest.mark.parametrize("target", ["iptables", "nft", "nft-json"])
@pytest.mark.parametrize(("bridge", "why"), [
    ("éééééééé", "it is 16 bytes long; the kernel takes 15 bytes (IFNAMSIZ)"),
    ("-abc", "it holds characters other than ASCII letters, digits, '-', '_' and '.', or "
             "starts with '-' or '.'"),
    ("٣٣", "it holds characters other than ASCII letters, digits, '-', '_' and '.', or starts "
           "with '-' or '.'"),
    ("..", "it holds characters other than ASCII letters, digits, '-', '_' and '.', or starts "
           "with '-' or '.'"),
])
def test_a_bad_bridge_name_is_one_error_at_the_bridge_line(bridge: str, why: str,
                                                           target: str) -> None:
    """One error, at the name, for every target: the name was checked in characters, so
    8 two-byte letters passed, and '-abc' or '٣٣' gave an error per rule without a position."""
    text = (f'docker {{\n  network apps {{\n    bridge "{bridge}"\n    subnet 192.0.2.0/24\n'
            f"  }}\n{WEB}}}\n")
    message = rendered(text, target)
    assert message.count("error[") == 1, message
    assert message.startswith(f"host.rules:3:12: error[E0703]: bridge name {bridge!r} is not a "
                              f"valid interface name: {why}\n"), message


def test_a_bad_bridge_name_in_the_json_points_at_the_option(tmp_path: Path) -> None:
    network = {"Name": "apps", "Driver": "bridge", "Id": "0123456789abcdef",
               "IPAM": {"Config": [{"Subnet": "192.0.2.0/24"}]},
               "Options": {"com.docker.network.bridge.name": "éééééééé"}}
    container = {"Name": "/web", "Driver": "overlay2", "HostConfig": {"NetworkMode": "apps"},
                 "NetworkSettings": {"Networks": {"apps": {"IPAddress": "192.0.2.2"}},
                                     "Ports": {"80/tcp": [{"HostIp": "", "HostPort": "80"}]}}}
    state = tmp_path / "state.json"
    state.write_text(json.dumps([network, container], indent=1, ensure_ascii=False),
                     encoding="utf-8")
    message = rendered("", docker_state=[state])
    line = next(i for i, text in enumerate(state.read_text(encoding="utf-8").splitlines(), 1)
                if "bridge.name" in text)
    assert message.count("error[") == 1, message
    assert f"{state}:{line}:38: error[E0703]: bridge name 'éééééééé'" in message, message


def test_a_port_past_65535_in_the_json_is_a_positioned_error(tmp_path: Path) -> None:
    """`65536/tcp` was an internal error (exit 3)."""
    network = {"Name": "apps", "Driver": "bridge", "Id": "0123456789abcdef",
               "IPAM": {"Config": [{"Subnet": "192.0.2.0/24"}]}}
    for key, host_port, found in (("65536/tcp", "80", "port '65536/tcp'"),
                                  ("80/tcp", "²", "host port '²'"),
                                  ("80-81/tcp", "80", "port '80-81/tcp'")):
        container = {"Name": "/web", "HostConfig": {"NetworkMode": "apps"},
                     "NetworkSettings": {"Networks": {"apps": {"IPAddress": "192.0.2.2"}},
                                         "Ports": {key: [{"HostIp": "", "HostPort": host_port}]}}}
        state = tmp_path / "state.json"
        state.write_text(json.dumps([network, container]), encoding="utf-8")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["compile", "--docker-state", str(state)])
        assert code == cli.EXIT_POLICY, err.getvalue()
        assert f"{state}:1:" in err.getvalue() and f"error[E0703]: {found}" in err.getvalue()


# ---------------------------------------------------------------------- versions (E0710-E0714)

def test_layout_contradicting_the_version() -> None:
    text = 'docker {\n  version "20.10.24"\n  layout current\n' + NET + "}\n"
    assert rendered(text) == (
        "host.rules:3:3: error[E0710]: `layout current` contradicts Docker 20.10.24, which has "
        "the classic layout\n"
        "   3 |   layout current\n"
        "     |   ^^^^^^^^^^^^^^\n"
        "note: leave the layout out: the version decides it")
    assert rendered('docker {\n  version "20.10.24"\n' + NET + "}\n",
                    docker_layout="current").startswith(
        "host.rules:2:11: error[E0710]: --docker-layout current contradicts Docker 20.10.24")


@pytest.mark.parametrize(("version", "message"), [
    ('"28.5.1"', "rulec does not reproduce Docker 28.5.1's rules"),
    ('"19.03.15"', "Docker 19.03.15 is older than anything rulec reproduces"),
    ("30", "Docker 30 is newer than anything rulec knows"),
])
def test_a_version_rulec_does_not_reproduce(version: str, message: str) -> None:
    assert rendered(f"docker {{\n  version {version}\n" + NET + "}\n").startswith(
        f"host.rules:2:11: error[E0711]: {message}\n")


def test_ip6tables_without_experimental_before_27() -> None:
    text = 'docker {\n  version "20.10.24"\n  ip6tables on\n  experimental off\n' + NET + "}\n"
    assert rendered(text) == (
        "host.rules:3:3: error[E0713]: dockerd 20.10.24 refuses to start with ip6tables but "
        "without experimental\n"
        "   3 |   ip6tables on\n"
        "     |   ^^^^^^^^^^^^\n"
        'note: "ip6tables rules are only available if experimental features are enabled": add '
        '"experimental": true, or leave ip6tables off')


def test_ipv6_docker_user_that_dockerd_never_jumps_to() -> None:
    rules = "table ip6 filter {\n  chain DOCKER-USER {\n    drop tcp dport 22\n  }\n}\n"
    text = 'docker {\n  version "20.10.24"\n  ip6tables on\n  experimental on\n' + NET + "}\n"
    assert rendered(text + rules) == (
        "host.rules:11:5: error[E0714]: dockerd 20.10.24 never jumps to an IPv6 DOCKER-USER: it "
        "creates DOCKER-USER in iptables only\n"
        "  11 |     drop tcp dport 22\n"
        "     |     ^^^^^^^^^^^^^^^^^\n"
        "note: these rules would never run; Docker 23.0 and later jump to it; before, filter "
        "IPv6 in FORWARD (a full replace appends yours after dockerd's rules)")
    off = 'docker {\n  version "20.10.24"\n' + NET + "}\n"
    assert "never jumps to an IPv6 DOCKER-USER: it writes no ip6tables rules at all" in \
        rendered(off + rules, noflush=True)
    # An inet DOCKER-USER whose rules are IPv4's only is fine.
    api.compile_text(off + "table inet filter {\n  chain DOCKER-USER {\n"
                     "    drop tcp dport 22 from 198.51.100.0/24\n  }\n}\n", "iptables")


def test_a_docker_block_and_state_files_both_with_networks(tmp_path: Path) -> None:
    network = {"Name": "apps", "Driver": "bridge", "Id": "0123456789abcdef",
               "IPAM": {"Config": [{"Subnet": "198.51.100.0/24"}]}}
    state = tmp_path / "n.json"
    state.write_text(json.dumps([network]), encoding="utf-8")
    assert rendered("docker {\n" + NET + "}\n", docker_state=[state]).startswith(
        "host.rules:1:1: error[E0709]: networks and containers come from the docker block and "
        "from --docker-state")


def test_state_without_a_version_warns(tmp_path: Path) -> None:
    network = {"Name": "apps", "Driver": "bridge", "Id": "0123456789abcdef",
               "IPAM": {"Config": [{"Subnet": "198.51.100.0/24"}]}}
    state = tmp_path / "n.json"
    state.write_text(json.dumps([network]), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert cli.main(["compile", "--docker-state", str(state)]) == cli.EXIT_OK
    assert err.getvalue().startswith(
        f"{state}:1:1: warning[W0702]: the Docker version of this host is not known: rulec "
        "assumes 29.x\n")


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


DOCS = Path(__file__).resolve().parents[2] / "docs" / "docker.md"


def test_the_codes_table_lists_exactly_the_codes_raised() -> None:
    source = Path(__file__).resolve().parents[2] / "rulec" / "frontends" / "docker"
    raised = {code for path in source.glob("*.py")
              for code in re.findall(r'"([EW]07\d\d)"', path.read_text(encoding="utf-8"))}
    documented = set(re.findall(r"^\| ([EW]07\d\d) \|", DOCS.read_text(encoding="utf-8"), re.M))
    assert raised == documented


def test_the_docs_example_compiles() -> None:
    block = re.search(r"^```\n(docker \{\n.*?^\})\n```", DOCS.read_text(encoding="utf-8"),
                      re.M | re.S)
    assert block is not None
    for target in api.TARGETS:
        api.compile_text(block.group(1), target)


def test_daemon_json_and_docker_info_that_disagree(tmp_path: Path) -> None:
    daemon, info = tmp_path / "daemon.json", tmp_path / "info.json"
    daemon.write_text('{"experimental": false}', encoding="utf-8")
    info.write_text('{"ServerVersion": "20.10.24", "ExperimentalBuild": true}', encoding="utf-8")
    assert rendered("", docker_state=[daemon, info]) == (
        f"{info}:1:52: error[E0712]: experimental is on here but off at {daemon}:1:2\n"
        '   1 | {"ServerVersion": "20.10.24", "ExperimentalBuild": true}\n'
        "     |                                                    ^^^^\n"
        "note: both describe the one daemon of this host: make them agree, or leave the setting "
        "to one of them")
