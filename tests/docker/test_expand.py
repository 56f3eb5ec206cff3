"""The expansion reproduces dockerd's rules chain by chain. Expected lines are moby's own
daemon-generated rule documentation (integration/network/bridge/iptablesdoc/generated/*.md at
docker-v29.7.2 for the current layout, at the first revisions - daemon 27 - for classic), and
moby's nftables documentation for the docker-bridges shape."""

from __future__ import annotations

from collections import defaultdict

import pytest

from rulec import api
from rulec.diagnostics import Collector
from rulec.frontends.docker import Layout, Profile, Shape, expand, profile
from rulec.frontends.docker.model import (
    Attachment,
    Container,
    Daemon,
    DockerHost,
    Network,
    Published,
    Subnet,
)
from rulec.ir.nodes import Jump, Vmap
from rulec.ir.values import Prefix

BRIDGE = "  network bridge {\n    subnet 172.17.0.0/16 gateway 172.17.0.1\n  }\n"


def host_text(layout: str, *, proxy: bool = True, bridge1: str = "", publish: str = "8080:80",
              container: bool = True) -> str:
    c1 = (f'  container c1 {{\n    network bridge1 192.0.2.2\n    publish "{publish}"\n  }}\n'
          if container else "")
    return (f"docker {{\n  layout {layout}\n  userland-proxy {'on' if proxy else 'off'}\n"
            f"{BRIDGE}  network bridge1 {{\n    subnet 192.0.2.0/24\n{bridge1}  }}\n{c1}}}\n")


def chains(text: str, target: str = "iptables", **options: object) -> dict[str, list[str]]:
    """`table/CHAIN` -> its -A lines, in order, as iptables-save would print them."""
    artifact = api.compile_text(text, target, **options)  # type: ignore[arg-type]
    out: dict[str, list[str]] = defaultdict(list)
    table = ""
    for line in artifact.text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A "):
            out[f"{table}/{line.split()[1]}"].append(line)
    return dict(out)


def docs(text: str) -> dict[str, list[str]]:
    """Moby's documented lines, grouped like chains(); `*table` lines switch tables."""
    out: dict[str, list[str]] = defaultdict(list)
    table = ""
    for line in (x.strip() for x in text.strip().splitlines()):
        if line.startswith("*"):
            table = line[1:]
        else:
            out[f"{table}/{line.split()[1]}"].append(line)
    return dict(out)


# moby docker-v29.7.2 iptablesdoc/generated/usernet-portmap.md (minus -P/-N lines)
USERNET_PORTMAP = """
*raw
-A PREROUTING -d 192.0.2.2/32 ! -i bridge1 -j DROP
*nat
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 192.0.2.0/24 ! -o bridge1 -j MASQUERADE
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER ! -i bridge1 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.0.2.2:80
*filter
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-FORWARD
-A DOCKER -d 192.0.2.2/32 ! -i bridge1 -o bridge1 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER ! -i docker0 -o docker0 -j DROP
-A DOCKER ! -i bridge1 -o bridge1 -j DROP
-A DOCKER-BRIDGE -o docker0 -j DOCKER
-A DOCKER-BRIDGE -o bridge1 -j DOCKER
-A DOCKER-CT -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-CT -o bridge1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-FORWARD -j DOCKER-CT
-A DOCKER-FORWARD -j DOCKER-INTERNAL
-A DOCKER-FORWARD -j DOCKER-BRIDGE
-A DOCKER-FORWARD -i docker0 -j ACCEPT
-A DOCKER-FORWARD -i bridge1 -j ACCEPT
"""


def test_current_one_published_port_matches_moby_chain_by_chain() -> None:
    assert chains(host_text("current")) == docs(USERNET_PORTMAP)


def test_current_proxy_off_adds_hairpin_nat() -> None:
    got = chains(host_text("current", proxy=False))
    # usernet-portmap-noproxy.md
    assert got["nat/OUTPUT"] == ["-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER"]
    assert got["nat/POSTROUTING"] == [
        "-A POSTROUTING -o bridge1 -m addrtype --src-type LOCAL -j MASQUERADE",
        "-A POSTROUTING -s 192.0.2.0/24 ! -o bridge1 -j MASQUERADE",
        "-A POSTROUTING -o docker0 -m addrtype --src-type LOCAL -j MASQUERADE",
        "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
        "-A POSTROUTING -s 192.0.2.2/32 -d 192.0.2.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE",
    ]
    assert got["nat/DOCKER"] == [
        "-A DOCKER -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.0.2.2:80"]


def test_current_icc_off_drops_then_accepts_outgoing() -> None:
    got = chains(host_text("current", bridge1="    icc off\n"))
    assert got["filter/DOCKER-FORWARD"][-2:] == [  # usernet-portmap-noicc.md
        "-A DOCKER-FORWARD -i bridge1 -o bridge1 -j DROP",
        "-A DOCKER-FORWARD -i bridge1 ! -o bridge1 -j ACCEPT",
    ]


def test_current_routed_opens_the_container_port_without_nat() -> None:
    got = chains(host_text("current", bridge1="    gateway-mode routed\n"))
    assert got["filter/DOCKER"] == [  # usernet-portmap-routed.md
        "-A DOCKER -d 192.0.2.2/32 ! -i bridge1 -o bridge1 -p tcp -m tcp --dport 80 -j ACCEPT",
        "-A DOCKER ! -i docker0 -o docker0 -j DROP",
        "-A DOCKER -o bridge1 -p icmp -j ACCEPT",
        "-A DOCKER ! -i bridge1 -o bridge1 -j DROP",
    ]
    assert "nat/DOCKER" not in got and "raw/PREROUTING" not in got
    assert got["nat/POSTROUTING"] == ["-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"]


def test_current_loopback_binding_is_protected_in_raw() -> None:
    got = chains(host_text("current", publish="127.0.0.1:8080:80"))
    assert got["raw/PREROUTING"] == [  # usernet-portmap-lo.md
        "-A PREROUTING -d 192.0.2.2/32 ! -i bridge1 -j DROP",
        "-A PREROUTING -d 127.0.0.1/32 ! -i lo -p tcp -m tcp --dport 8080 -j DROP",
    ]
    assert got["nat/DOCKER"] == ["-A DOCKER -d 127.0.0.1/32 ! -i bridge1 -p tcp -m tcp --dport "
                                 "8080 -j DNAT --to-destination 192.0.2.2:80"]


def test_current_internal_networks_use_docker_internal() -> None:
    text = ("docker {\n" + BRIDGE + "  network bridgeICC { subnet 192.0.2.0/24; internal }\n"
            "  network bridgeNoICC { subnet 198.51.100.0/24; internal; icc off }\n}\n")
    got = chains(text)
    assert got["filter/DOCKER-INTERNAL"] == [  # usernet-internal.md
        "-A DOCKER-INTERNAL ! -s 198.51.100.0/24 -o bridgeNoICC -j DROP",
        "-A DOCKER-INTERNAL ! -d 198.51.100.0/24 -i bridgeNoICC -j DROP",
        "-A DOCKER-INTERNAL ! -s 192.0.2.0/24 -o bridgeICC -j DROP",
        "-A DOCKER-INTERNAL ! -d 192.0.2.0/24 -i bridgeICC -j DROP",
    ]
    assert got["filter/DOCKER-FORWARD"][-2:] == [
        "-A DOCKER-FORWARD -i bridgeICC -o bridgeICC -j ACCEPT",
        "-A DOCKER-FORWARD -i bridgeNoICC -o bridgeNoICC -j DROP",
    ]
    assert got["filter/DOCKER-BRIDGE"] == ["-A DOCKER-BRIDGE -o docker0 -j DOCKER"]


def test_current_ipv6_excludes_link_local_sources_from_dnat() -> None:
    text = ("docker {\n" + BRIDGE + "  network bridge1 { subnet 192.0.2.0/24; "
            "subnet 2001:db8:1::/64 }\n  container c1 {\n    network bridge1 192.0.2.2 "
            '2001:db8:1::2\n    publish "8080:80"\n  }\n}\n')
    got = chains(text, "ip6tables")
    assert got["nat/DOCKER"] == ["-A DOCKER ! -s fe80::/10 ! -i bridge1 -p tcp -m tcp --dport "
                                 "8080 -j DNAT --to-destination [2001:db8:1::2]:80"]
    assert got["nat/OUTPUT"] == ["-A OUTPUT ! -d ::1/128 -m addrtype --dst-type LOCAL -j DOCKER"]
    assert got["raw/PREROUTING"] == ["-A PREROUTING -d 2001:db8:1::2/128 ! -i bridge1 -j DROP"]
    # docker0 has no IPv6 subnet, so no ip6tables rules of its own.
    assert not any("docker0" in line for lines in got.values() for line in lines)


# moby iptablesdoc/generated/usernet-portmap.md at ac4a95d1d0 (daemon 27, classic layout)
CLASSIC_USERNET_PORTMAP = """
*nat
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 192.0.2.0/24 ! -o bridge1 -j MASQUERADE
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s 192.0.2.2/32 -d 192.0.2.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE
-A DOCKER -i bridge1 -j RETURN
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i bridge1 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.0.2.2:80
*filter
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o bridge1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o bridge1 -j DOCKER
-A FORWARD -i bridge1 ! -o bridge1 -j ACCEPT
-A FORWARD -i bridge1 -o bridge1 -j ACCEPT
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER -d 192.0.2.2/32 ! -i bridge1 -o bridge1 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i bridge1 ! -o bridge1 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o bridge1 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
"""


def test_classic_one_published_port_matches_moby_chain_by_chain() -> None:
    assert chains(host_text("classic")) == docs(CLASSIC_USERNET_PORTMAP)


def test_layout_option_overrides_the_block() -> None:
    assert chains(host_text("current"), docker_layout="classic") == docs(CLASSIC_USERNET_PORTMAP)


def test_classic_icc_off_appends_the_drop_to_forward() -> None:
    got = chains(host_text("classic", bridge1="    icc off\n"))
    assert got["filter/FORWARD"][-1] == "-A FORWARD -i bridge1 -o bridge1 -j DROP"
    assert "-A FORWARD -i bridge1 -o bridge1 -j ACCEPT" not in got["filter/FORWARD"]


def test_classic_has_no_raw_table_and_no_link_local_exclusion() -> None:
    text = host_text("classic", publish="127.0.0.1:8080:80")
    got = chains(text)
    assert "raw/PREROUTING" not in got
    assert "*raw" not in api.compile_text(text, "iptables").text


def _host() -> DockerHost:
    return DockerHost(
        networks=(Network(name="bridge", bridge="docker0",
                          subnets=(Subnet(prefix=Prefix.parse("172.17.0.0/16")),)),
                  Network(name="bridge1", bridge="bridge1",
                          subnets=(Subnet(prefix=Prefix.parse("192.0.2.0/24")),))),
        containers=(Container(name="c1", attachments=(
            Attachment(network="bridge1", addresses=(Prefix.parse("192.0.2.2"),)),),
            published=(Published(host=None, host_ports=(8080, 8080),
                                 container_ports=(80, 80)),)),))


def _profile(layout: Layout) -> Profile:
    found = profile(Daemon(layout=layout), None, Collector())
    assert found is not None
    return found


def test_expansion_is_pure_and_deterministic() -> None:
    host = _host()
    assert expand(host, _profile(Layout.CURRENT)) == expand(host, _profile(Layout.CURRENT))
    assert expand(host, _profile(Layout.CURRENT)) != expand(host, _profile(Layout.CLASSIC))


def test_nft_shape_reaches_per_bridge_chains_through_interface_maps() -> None:
    tables = expand(_host(), _profile(Layout.CURRENT), Shape.NFT)
    assert {(t.family.value, t.kind.value, t.name) for t in tables} == {
        (f, k, "docker-bridges") for f in ("ip", "ip6") for k in ("filter", "nat", "raw")}
    ip_filter = next(t for t in tables if t.family.value == "ip" and t.kind.value == "filter")
    forward = ip_filter.chain("FORWARD")
    assert forward is not None
    assert forward.rules[0].action == Jump("DOCKER-USER")  # rulec's addition
    maps = [r.action for r in forward.rules[1:]]
    assert all(isinstance(m, Vmap) for m in maps)
    assert {v.target for m in maps if isinstance(m, Vmap) for _, v in m.entries
            if isinstance(v, Jump)} == {
        "filter-forward-in__docker0", "filter-forward-in__bridge1",
        "filter-forward-out__docker0", "filter-forward-out__bridge1"}


def test_nft_per_bridge_chains_match_moby_nftablesdoc() -> None:
    text = api.compile_text(host_text("current"), "nft").text
    # nftablesdoc/generated/usernet-portmap.md, filter-forward-in__bridge1 and the DNAT
    # (rulec prints the same tests in its own field order).
    assert ("\tchain filter-forward-in__bridge1 {\n"
            "\t\tct state established,related counter accept\n"
            '\t\tiifname "bridge1" counter accept comment "ICC"\n'
            "\t\tip daddr 192.0.2.2 tcp dport 80 counter accept\n"
            '\t\tcounter drop comment "UNPUBLISHED PORT DROP"\n\t}') in text
    assert ('tcp dport 8080 iifname != "bridge1" counter dnat to 192.0.2.2:80 comment "DNAT"'
            in text)
    assert ('ip daddr 192.0.2.2 iifname != "bridge1" counter drop comment "DROP DIRECT ACCESS"'
            in text)
    assert "table ip docker-bridges\ndelete table ip docker-bridges" in text


@pytest.mark.parametrize("target", ["iptables", "ip6tables"])
def test_coexist_mode_declares_no_docker_chain(target: str) -> None:
    text = host_text("current") + (
        "table inet filter {\n  chain DOCKER-USER {\n    drop tcp ct original dport 8080\n"
        "  }\n}\n")
    output = api.compile_text(text, target, noflush=True).text
    declared = [line for line in output.splitlines() if line.startswith((":", "-F"))]
    assert declared == [":DOCKER-USER - [0:0]"]


def test_operator_rules_join_dockers_tables() -> None:
    text = host_text("current") + (
        "table ip filter {\n  chain DOCKER-USER {\n    drop in eth0 to 192.0.2.2\n  }\n"
        "  chain INPUT policy drop {\n    accept in lo\n  }\n}\n")
    got = chains(text)
    assert got["filter/DOCKER-USER"] == ["-A DOCKER-USER -d 192.0.2.2/32 -i eth0 -j DROP"]
    assert got["filter/INPUT"] == ["-A INPUT -i lo -j ACCEPT"]
    assert got["filter/FORWARD"] == docs(USERNET_PORTMAP)["filter/FORWARD"]
