"""The Docker host model: the DSL block and a real host's inspect JSON build the same model,
and that model compiles to the same rules."""

from __future__ import annotations

import json
from pathlib import Path

from rulec import api
from rulec.diagnostics import Collector
from rulec.frontends.docker.model import GatewayMode, PortProto
from rulec.frontends.docker.state import load_files
from rulec.ir.values import Family, Prefix

# Trimmed from real `docker network inspect bridge apps` output.
NETWORKS = [
    {"Name": "bridge", "Id": "f7ab26d71dbd6f557852c7156ae0574bbf62c42f539b50c8ebde0f728a253b6f",
     "Scope": "local", "Driver": "bridge", "EnableIPv6": False,
     "IPAM": {"Driver": "default", "Options": None,
              "Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]},
     "Internal": False, "Attachable": False, "Containers": {},
     "Options": {"com.docker.network.bridge.default_bridge": "true",
                 "com.docker.network.bridge.enable_icc": "true",
                 "com.docker.network.bridge.enable_ip_masquerade": "true",
                 "com.docker.network.bridge.name": "docker0",
                 "com.docker.network.driver.mtu": "1500"}, "Labels": {}},
    {"Name": "apps", "Id": "3a5c0f7e1d2b4c6a8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5",
     "Driver": "bridge", "EnableIPv6": True,
     "IPAM": {"Config": [{"Subnet": "192.0.2.0/24", "Gateway": "192.0.2.1"},
                         {"Subnet": "2001:db8:1::/64", "Gateway": "2001:db8:1::1"}]},
     "Internal": False,
     "Containers": {"9f1e": {"Name": "web", "IPv4Address": "192.0.2.2/24",
                             "IPv6Address": "2001:db8:1::2/64"}},
     "Options": {"com.docker.network.bridge.enable_icc": "false"}},
    {"Name": "host", "Driver": "host", "IPAM": {"Config": []}},
]
# Trimmed from `docker inspect web` (docker run --network apps -p 8080:80 -p 127.0.0.1:53:53/udp)
CONTAINERS = [
    {"Id": "9f1e", "Name": "/web",
     "HostConfig": {"NetworkMode": "apps",
                    "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}},
     "NetworkSettings": {
         "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"},
                              {"HostIp": "::", "HostPort": "8080"}],
                   "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "53"}],
                   "443/tcp": None},
         "Networks": {"apps": {"NetworkID": "3a5c", "IPAddress": "192.0.2.2",
                               "IPPrefixLen": 24, "GlobalIPv6Address": "2001:db8:1::2",
                               "GlobalIPv6PrefixLen": 64}}}},
]

DSL = """docker {
  network bridge {
    subnet 172.17.0.0/16 gateway 172.17.0.1
  }
  network apps {
    bridge br-3a5c0f7e1d2b
    subnet 192.0.2.0/24 gateway 192.0.2.1
    subnet 2001:db8:1::/64 gateway 2001:db8:1::1
    icc off
  }
  container web {
    network apps 192.0.2.2 2001:db8:1::2
    publish "0.0.0.0:8080:80" "[::]:8080:80" "127.0.0.1:53:53/udp"
  }
}
"""


def write(tmp_path: Path, name: str, value: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(value, indent=4), encoding="utf-8")
    return path


def test_inspect_json_builds_the_model(tmp_path: Path) -> None:
    out = Collector()
    host = load_files([write(tmp_path, "n.json", NETWORKS), write(tmp_path, "c.json", CONTAINERS)],
                      out)
    assert not out.items
    assert host is not None
    assert [n.name for n in host.networks] == ["bridge", "apps"]  # `host` makes no rules
    apps = host.networks[1]
    assert apps.bridge == "br-3a5c0f7e1d2b"  # br- and 12 characters of the network ID
    assert not apps.icc and apps.masquerade and apps.gateway_mode_v4 is GatewayMode.NAT
    assert apps.subnet(Family.IP6) is not None
    (web,) = host.containers
    assert web.attachments[0].addresses == (Prefix.parse("192.0.2.2"),
                                            Prefix.parse("2001:db8:1::2"))
    assert [(p.host and str(p.host), p.host_ports, p.proto) for p in web.published] == [
        ("0.0.0.0", (8080, 8080), PortProto.TCP), ("::", (8080, 8080), PortProto.TCP),
        ("127.0.0.1", (53, 53), PortProto.UDP)]


def test_one_state_object_and_two_inspect_files_are_the_same_host(tmp_path: Path) -> None:
    split = [write(tmp_path, "n.json", NETWORKS), write(tmp_path, "c.json", CONTAINERS)]
    whole = [write(tmp_path, "state.json", {"daemon": {"userland-proxy": True},
                                            "networks": NETWORKS, "containers": CONTAINERS})]
    one, two = load_files(split, Collector()), load_files(whole, Collector())
    assert one is not None and two is not None
    assert one.networks == two.networks and one.containers == two.containers


def test_state_and_dsl_compile_to_the_same_rules(tmp_path: Path) -> None:
    state = [write(tmp_path, "n.json", NETWORKS), write(tmp_path, "c.json", CONTAINERS)]
    empty = tmp_path / "empty.rules"
    empty.write_text("", encoding="utf-8")
    block = tmp_path / "host.rules"
    block.write_text(DSL, encoding="utf-8")
    for target in api.TARGETS:
        from_json = api.compile_files([empty], target, docker_state=state).artifact.text
        from_dsl = api.compile_files([block], target).artifact.text
        assert from_json == from_dsl, target


def test_network_members_give_addresses_without_docker_inspect(tmp_path: Path) -> None:
    host = load_files([write(tmp_path, "n.json", NETWORKS)], Collector())
    assert host is not None
    (web,) = host.containers
    assert web.published == ()
    assert web.attachments[0].address(Family.IP) == Prefix.parse("192.0.2.2")


def test_daemon_json_options(tmp_path: Path) -> None:
    daemon = {"userland-proxy": False, "ip6tables": False, "allow-direct-routing": True,
              "log-driver": "journald"}
    host = load_files([write(tmp_path, "s.json", {"daemon": daemon, "networks": NETWORKS})],
                      Collector())
    assert host is not None
    assert host.daemon.userland_proxy is False and host.daemon.ip6tables is False
    assert host.daemon.allow_direct_routing
    text = api.compile_text("", "iptables", docker_state=[tmp_path / "s.json"]).text
    assert "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT" in text
    assert api.compile_text("", "ip6tables", docker_state=[tmp_path / "s.json"]).text.count(
        "\n") == 1  # ip6tables off: nothing for IPv6


def test_published_range_is_one_binding_per_port() -> None:
    text = DSL.replace('"0.0.0.0:8080:80" "[::]:8080:80" "127.0.0.1:53:53/udp"',
                       '"8000-8002:9000-9002"')
    lines = [x for x in api.compile_text(text, "iptables").text.splitlines() if "DNAT" in x]
    assert [x.split("--dport ")[1] for x in lines] == [
        "8000 -j DNAT --to-destination 192.0.2.2:9000",
        "8001 -j DNAT --to-destination 192.0.2.2:9001",
        "8002 -j DNAT --to-destination 192.0.2.2:9002"]


def test_state_warnings_reach_the_compile_result(tmp_path: Path) -> None:
    overlay = {"Name": "swarm-net", "Id": "9f9f", "Driver": "overlay", "IPAM": {"Config": []}}
    state = [write(tmp_path, "n.json", [*NETWORKS, overlay]),
             write(tmp_path, "c.json", CONTAINERS)]
    empty = tmp_path / "empty.rules"
    empty.write_text("", encoding="utf-8")
    # Both families at once: this test is about W07xx, not the one-family W0401.
    result = api.compile_files([empty], "iptables", docker_state=state, both_families=True)
    # W0702: nothing says which Docker version wrote this state.
    assert [(w.code, w.span is not None and w.span.file) for w in result.warnings] == [
        ("W0701", str(state[0])), ("W0702", str(state[0]))]
    assert "swarm-net" in result.warnings[0].message


def test_two_inspect_files_read_containers_that_have_a_driver_key(tmp_path: Path) -> None:
    """Real `docker inspect` containers carry "Driver" (their storage driver): they are still
    containers, so their published ports get DNAT, the DOCKER ACCEPT and hairpin masquerade."""
    containers = [{**c, "Driver": "overlay2"} for c in CONTAINERS]
    state = [write(tmp_path, "n.json", NETWORKS), write(tmp_path, "c.json", containers)]
    text = api.compile_text("", "iptables", docker_state=state)
    assert "--dport 8080 -j DNAT --to-destination 192.0.2.2:80" in text.text
    assert "-d 192.0.2.2/32 ! -i br-3a5c0f7e1d2b -o br-3a5c0f7e1d2b -p tcp -m tcp --dport 80 " \
           "-j ACCEPT" in text.text
    out = Collector()
    host = load_files(state, out)
    assert host is not None and [c.name for c in host.containers] == ["web"]
    assert not out.items  # no "network /web: driver overlay2" warning


VERSION = {"Client": {"Version": "20.10.24+dfsg1"},
           "Server": {"Version": "20.10.24+dfsg1", "ApiVersion": "1.41"}}
INFO = {"ServerVersion": "20.10.24+dfsg1", "ExperimentalBuild": True, "Driver": "overlay2"}


def test_daemon_json_info_and_version_are_state_files_too(tmp_path: Path) -> None:
    daemon = {"userland-proxy": False, "ip6tables": True, "experimental": True,
              "data-root": "/var/lib/docker"}
    state = [write(tmp_path, "n.json", NETWORKS), write(tmp_path, "c.json", CONTAINERS),
             write(tmp_path, "daemon.json", daemon), write(tmp_path, "info.json", INFO),
             write(tmp_path, "version.json", VERSION)]
    out = Collector()
    host = load_files(state, out)
    assert not out.items and host is not None
    assert host.daemon.userland_proxy is False and host.daemon.ip6tables is True
    assert host.daemon.version is not None and host.daemon.version.key == (20, 10, 24)
    one = write(tmp_path, "state.json", {"daemon": daemon, "info": INFO, "version": VERSION,
                                         "networks": NETWORKS, "containers": CONTAINERS})
    for target in ("iptables", "ip6tables"):
        assert api.compile_text("", target, docker_state=state).text == \
            api.compile_text("", target, docker_state=[one]).text


def test_20_10_defaults_to_no_ip6tables_rules(tmp_path: Path) -> None:
    """Docker <= 26 has ip6tables off unless daemon.json turns it on: rulec writes no IPv6
    rules (no FORWARD DROP) for it, though the network has an IPv6 subnet."""
    state = [write(tmp_path, "n.json", NETWORKS), write(tmp_path, "c.json", CONTAINERS),
             write(tmp_path, "info.json", INFO)]
    assert "*" not in api.compile_text("", "ip6tables", docker_state=state).text
    assert "-A DOCKER-USER -j RETURN" in api.compile_text("", "iptables",
                                                          docker_state=state).text


def version_rules(version: str, *, ip6tables: str = "on", target: str = "ip6tables",
                  internal: bool = False, publish: str = '"8080:80" "9000:90" "8081:80"') -> str:
    network = ("  network vault {\n    subnet 192.0.2.0/24\n    subnet 2001:db8:2::/64\n"
               "    internal\n  }\n") if internal else ""
    text = (f"docker {{\n  version {version}\n  ip6tables {ip6tables}\n  experimental on\n"
            "  network apps {\n    subnet 198.51.100.0/24\n    subnet 2001:db8:1::/64\n  }\n"
            f"{network}  container web {{\n    network apps 198.51.100.2 2001:db8:1::2\n"
            f"    publish {publish}\n  }}\n}}\n")
    return api.compile_text(text, target).text


def test_docker_user_in_ip6tables_from_23_0() -> None:
    assert "DOCKER-USER" not in version_rules('"20.10.24"')
    assert "DOCKER-USER" not in version_rules('"22.06.1"')
    assert "-A FORWARD -j DOCKER-USER" in version_rules("23")


def test_ip6tables_default_on_from_27() -> None:
    daemon_default = 'docker {\n  version %s\n  network apps {\n    subnet 198.51.100.0/24\n' \
                     '    subnet 2001:db8:1::/64\n  }\n}\n'
    assert "*filter" not in api.compile_text(daemon_default % '"26.1.4"', "ip6tables").text
    assert "*filter" in api.compile_text(daemon_default % "27", "ip6tables").text


def test_internal_ipv6_drops_spare_the_bridge_from_24_0_6() -> None:
    old = version_rules('"24.0.5"', internal=True)
    new = version_rules('"24.0.6"', internal=True)
    assert "-A DOCKER-ISOLATION-STAGE-1 ! -s 2001:db8:2::/64 -o vault -j DROP" in old
    assert "-A DOCKER-ISOLATION-STAGE-1 ! -s 2001:db8:2::/64 ! -i vault -o vault -j DROP" in new


def dnat_ports(text: str) -> list[str]:
    return [line.split("--dport ")[1].split()[0] for line in text.splitlines()
            if "-j DNAT" in line]


def test_port_order_follows_the_daemon_version() -> None:
    """Up to 26.x dockerd sorts a container's ports by host port, largest first
    (nat.SortPortMap); from 27.0 by container port, then host port (cmpPortBinding)."""
    assert dnat_ports(version_rules('"20.10.24"', target="iptables")) == ["9000", "8081", "8080"]
    assert dnat_ports(version_rules("27", target="iptables")) == ["8080", "8081", "9000"]


def test_state_is_put_in_creation_order_and_stopped_containers_have_no_rules(
        tmp_path: Path) -> None:
    """`docker ps` lists the newest container first and `docker network ls` sorts by name;
    dockerd wrote the rules in creation and start order. A stopped container has none."""
    first = {**NETWORKS[1], "Name": "zeta", "Id": "aa" * 32, "Created": "2024-01-01T10:00:00Z",
             "Containers": {}}
    second = {**NETWORKS[1], "Name": "alpha", "Id": "bb" * 32, "Containers": {},
              "IPAM": {"Config": [{"Subnet": "198.51.100.0/24"}]},
              "Created": "2024-01-01T11:00:00.000000001+01:00"}  # 10:00:00.000000001Z

    def container(name: str, network: str, address: str, started: str, running: bool = True,
                  port: str = "8080") -> dict[str, object]:
        return {"Name": f"/{name}", "Driver": "overlay2", "HostConfig": {"NetworkMode": network},
                "State": {"Running": running, "StartedAt": started},
                "NetworkSettings": {"Networks": {network: {"IPAddress": address}},
                                    "Ports": {"80/tcp": [{"HostIp": "0.0.0.0",
                                                          "HostPort": port}]}}}

    containers = [container("late", "zeta", "192.0.2.3", "2024-01-02T00:00:02Z", port="8081"),
                  container("gone", "zeta", "192.0.2.4", "2024-01-02T00:00:03Z", False, "8082"),
                  container("early", "alpha", "198.51.100.2", "2024-01-02T00:00:01Z")]
    state = [write(tmp_path, "n.json", [second, first]),
             write(tmp_path, "c.json", containers), write(tmp_path, "v.json", VERSION)]
    out = Collector()
    host = load_files(state, out)
    assert not out.items and host is not None
    assert [n.name for n in host.networks] == ["zeta", "alpha"]
    assert [c.name for c in host.containers] == ["early", "late"]
    text = api.compile_text("", "iptables", docker_state=state).text
    assert dnat_ports(text) == ["8080", "8081"]
    assert "-A FORWARD -o br-bbbbbbbbbbbb" in text.split("-A FORWARD -o br-aaaaaaaaaaaa")[0]
