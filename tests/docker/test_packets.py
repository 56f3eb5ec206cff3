"""Docker hosts with real packets: the issue 4 scenarios, each on a fresh namespace host
(tests/docker/host.py) with its firewall loaded, probed with TCP and UDP from several namespaces
at once.

Every scenario runs on these flavours of the same host model:
- `dockerd`: the hand-written dockerd 29.x rules (dockerd_reference.py), plus the operator's
  rules compiled by rulec `--noflush`: validates the harness and the expectations;
- `rulec-iptables-current` / `-classic`: rulec's docker frontend, iptables + ip6tables output;
- `rulec-nft`: the same model as one nft batch (Docker 29's nftables shape).
The host is 203.0.113.1 / 2001:db8:ff::1 on its uplink, the external peer .2 / ::2.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from rulec import api
from tests.docker.dockerd_reference import dockerd_artifacts
from tests.docker.host import (
    EXT4,
    EXT6,
    HOST4,
    HOST6,
    STANDARD,
    DockerHost,
    docker_host,
    kernel_unavailable,
)
from tests.kernel.probe import Attempt, Outcome

UNAVAILABLE = kernel_unavailable()
pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(UNAVAILABLE is not None, reason=f"kernel tests: {UNAVAILABLE}")]

PROXY_OFF = replace(STANDARD, userland_proxy=False)


@dataclass(frozen=True)
class Flavor:
    source: str  # "dockerd" or "rulec"
    target: str = "iptables"  # iptables means iptables + ip6tables, loaded with iptables-nft
    layout: str = "current"

    @property
    def classic(self) -> bool:
        return self.layout == "classic"

    def __str__(self) -> str:
        if self.source == "dockerd":
            return "dockerd"
        return f"rulec-{self.target}" + (f"-{self.layout}" if self.target == "iptables" else "")

    def apply(self, dh: DockerHost, operator: str = "") -> None:
        """Load the host's firewall: Docker's rules for `dh.spec` plus the `operator` DSL text
        (DOCKER-USER rules, an MSS clamp)."""
        if self.source == "dockerd":
            for artifact in dockerd_artifacts(dh.spec):
                dh.load(artifact, "nft")
            if operator:  # rulec beside dockerd, as an operator would run it
                for target in ("iptables", "ip6tables"):
                    dh.load(api.compile_text(operator, target, noflush=True), "nft")
            return
        text = dh.spec.docker_block() + operator
        if self.target == "nft":
            dh.load(api.compile_text(text, "nft"))
            return
        for target in ("iptables", "ip6tables"):
            artifact = api.compile_text(text, target,
                                        docker_layout=self.layout)
            dh.load(artifact, "nft")


FLAVORS = [Flavor("dockerd"), Flavor("rulec", "iptables", "current"),
           Flavor("rulec", "iptables", "classic"), Flavor("rulec", "nft")]


@pytest.fixture(params=FLAVORS, ids=str)
def flavor(request: pytest.FixtureRequest) -> Flavor:
    assert isinstance(request.param, Flavor)
    return request.param


@pytest.fixture
def dh() -> Iterator[DockerHost]:
    with docker_host(STANDARD) as built:
        yield built


def delivered(o: Outcome, *, port: int | None = None, peer: str | None = None) -> bool:
    """The server answered, on `port` (after any DNAT) and having seen `peer` as the source."""
    return (o.answered and (port is None or o.port == port)
            and (peer is None or o.peer == peer))


def udp(dst: str, port: int) -> Attempt:
    return Attempt(dst, port, "udp")


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_published_port_from_outside(dh: DockerHost, flavor: Flavor, family: int) -> None:
    """-p 8080:80 and -p 5353:53/udp: the external peer reaches the container through the
    host's address, and the container sees the peer's own address; an unpublished host port
    (8081) leads nowhere."""
    flavor.apply(dh)
    host, ext = dh.address("host", family), dh.address("ext", family)
    with dh.serving("web"):
        tcp_in, udp_in, unpublished = dh.probe([
            ("ext", Attempt(host, 8080)), ("ext", udp(host, 5353)), ("ext", Attempt(host, 8081))])
    assert delivered(tcp_in, port=80, peer=ext), tcp_in
    assert delivered(udp_in, port=53, peer=ext), udp_in
    assert not delivered(unpublished), unpublished


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_outbound_masquerade(dh: DockerHost, flavor: Flavor, family: int) -> None:
    """Containers of the default bridge and of a user network reach the outside, masqueraded to
    the host's uplink address (the peer could route back to them, so only NAT explains it)."""
    flavor.apply(dh)
    ext, host = dh.address("ext", family), dh.address("host", family)
    with dh.serving("ext"):
        web, web_udp, api_out = dh.probe([("web", Attempt(ext, 80)), ("web", udp(ext, 53)),
                                          ("api", Attempt(ext, 80))])
    assert delivered(web, peer=host), web
    assert delivered(web_udp, peer=host), web_udp
    assert delivered(api_out, peer=host), api_out


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_direct_routing_to_containers(dh: DockerHost, flavor: Flavor, family: int) -> None:
    """The peer routes straight to container addresses. Current layout: all dropped (raw
    PREROUTING). Classic: a published container port is reachable, even one published on
    127.0.0.1 only (81, IPv4); unpublished ports are dropped only by the FORWARD policy."""
    flavor.apply(dh)
    web, api_ = dh.address("web", family), dh.address("api", family)
    with dh.serving("web", "api"):
        published, loopback_only, unpublished, other = dh.probe([
            ("ext", Attempt(web, 80)), ("ext", Attempt(web, 81)), ("ext", Attempt(web, 82)),
            ("ext", Attempt(api_, 80))])
    ext = dh.address("ext", family)
    assert delivered(published, peer=ext) is flavor.classic, published
    assert delivered(loopback_only, peer=ext) is (flavor.classic and family == 4), loopback_only
    assert not delivered(unpublished), unpublished
    assert not delivered(other), other


def test_networks_isolated(dh: DockerHost, flavor: Flavor) -> None:
    """Containers on different bridges cannot reach each other's addresses, while two on one
    bridge (icc on) can. A port published on the host's address is reachable from another
    network in the current layout, masqueraded to the target bridge's gateway; classic drops it
    (DOCKER-ISOLATION)."""
    flavor.apply(dh)
    with dh.serving("web", "api"):
        to_api, to_web, same_bridge, via_host = dh.probe([
            ("web", Attempt("172.18.0.2", 80)), ("api", Attempt("172.17.0.2", 80)),
            ("peer", Attempt("172.17.0.2", 80)), ("api", Attempt(HOST4, 8080))])
    assert not delivered(to_api), to_api
    assert not delivered(to_web), to_web
    assert delivered(same_bridge, peer="172.17.0.3"), same_bridge
    if flavor.classic:
        assert not delivered(via_host), via_host
    else:
        assert delivered(via_host, port=80, peer="172.17.0.1"), via_host


def test_icc_off(dh: DockerHost, flavor: Flavor) -> None:
    """icc off: two containers of the same bridge cannot talk (bridged traffic seen by FORWARD
    through br_netfilter), while the way out still works."""
    flavor.apply(dh)
    with dh.serving("qb", "ext"):
        same_bridge, out = dh.probe([("qa", Attempt("172.19.0.3", 80)),
                                     ("qa", Attempt(EXT4, 80))])
    assert not delivered(same_bridge), same_bridge
    assert delivered(out, peer=HOST4), out


def test_internal_network(dh: DockerHost, flavor: Flavor) -> None:
    """An internal network: its containers talk to each other and to nothing else, neither
    out (even with a default route) nor in (routed, or from another bridge)."""
    flavor.apply(dh)
    with dh.serving("va", "vb", "web", "ext"):
        inside, out, to_bridge, routed_in, from_bridge = dh.probe([
            ("va", Attempt("172.20.0.3", 80)), ("va", Attempt(EXT4, 80)),
            ("va", Attempt("172.17.0.2", 80)), ("ext", Attempt("172.20.0.2", 80)),
            ("web", Attempt("172.20.0.2", 80))])
    assert delivered(inside, peer="172.20.0.2"), inside
    for o in (out, to_bridge, routed_in, from_bridge):
        assert not delivered(o), o


def test_hairpin_without_proxy(flavor: Flavor) -> None:
    """userland-proxy off: a container reaches its own published port through the host's
    address (masqueraded to the gateway, so its replies come back through the host), and so
    does its neighbour; the outside still gets in."""
    with docker_host(PROXY_OFF) as dh:
        flavor.apply(dh)
        with dh.serving("web"):
            own, neighbour, outside = dh.probe([
                ("web", Attempt(HOST4, 8080)), ("peer", Attempt(HOST4, 8080)),
                ("ext", Attempt(HOST4, 8080))])
    assert delivered(own, port=80, peer="172.17.0.1"), own
    assert delivered(neighbour, port=80), neighbour
    assert delivered(outside, port=80, peer=EXT4), outside


def test_no_hairpin_with_proxy(dh: DockerHost, flavor: Flavor) -> None:
    """userland-proxy on: the rules leave a container's connection to its host's published port
    to docker-proxy (here a server in the host namespace on 8080) instead of DNAT."""
    flavor.apply(dh)
    with dh.serving("web", host_tcp=[8080]):
        own, outside = dh.probe([("web", Attempt(HOST4, 8080)), ("ext", Attempt(HOST4, 8080))])
    assert delivered(own, port=8080, peer="172.17.0.2"), own
    assert delivered(outside, port=80, peer=EXT4), outside


def test_loopback_bound_port(flavor: Flavor) -> None:
    """-p 127.0.0.1:8082:81 with the proxy off: the host itself reaches the container through
    127.0.0.1; the peer gets nothing on the host's address. A peer that routes 127.0.0.1 to the
    host reaches the container in the classic layout, and is dropped by the current layout's raw
    rule (the SYN is counted arriving in the container, or not)."""
    with docker_host(PROXY_OFF) as dh:
        flavor.apply(dh)
        dh.route_loopback_from_ext()
        with dh.serving("web"):
            before = dh.tcp_segments_in("web")
            local, remote_on_host = dh.probe([("host", Attempt("127.0.0.1", 8082)),
                                              ("ext", Attempt(HOST4, 8082))])
            middle = dh.tcp_segments_in("web")
            remote_loopback, = dh.probe([("ext", Attempt("127.0.0.1", 8082))])
            after = dh.tcp_segments_in("web")
    assert delivered(local, port=81, peer="172.17.0.1"), local
    assert not delivered(remote_on_host), remote_on_host
    assert middle > before  # the local connection's segments: the counter works
    assert not delivered(remote_loopback), remote_loopback  # its replies cannot return
    assert (after > middle) is flavor.classic, (before, middle, after)


def test_docker_user_drop(dh: DockerHost, flavor: Flavor) -> None:
    """A DOCKER-USER drop on the original destination port 8080 closes the published port (both
    families) while outbound traffic and the other published port (5353/udp) still work."""
    rule = "drop tcp ct original dport 8080 in eth0"
    flavor.apply(dh, f"table ip filter {{\n  chain DOCKER-USER {{\n    {rule}\n  }}\n}}\n"
                     f"table ip6 filter {{\n  chain DOCKER-USER {{\n    {rule}\n  }}\n}}\n")
    with dh.serving("web", "ext"):
        v4, v6, other, out = dh.probe([
            ("ext", Attempt(HOST4, 8080)), ("ext", Attempt(HOST6, 8080)),
            ("ext", udp(HOST4, 5353)), ("web", Attempt(EXT4, 80))])
    assert not delivered(v4), v4
    assert not delivered(v6), v6
    assert delivered(other, port=53, peer=EXT4), other
    assert delivered(out, peer=HOST4), out


def test_mss_clamp(flavor: Flavor) -> None:
    """Uplink MTU 1400: a container's SYN to the outside carries MSS 1460, so the peer's socket
    gets 1448 (1460 less 12 bytes of timestamps); clamped to the path MTU it gets 1348."""
    with docker_host(STANDARD, uplink_mtu=1400) as dh, dh.serving("ext"):
        before, = dh.probe([("web", Attempt(EXT4, 80))])
        flavor.apply(dh, "table ip mangle {\n  chain FORWARD {\n"
                         "    mss clamp to pmtu tcp flags syn / syn,rst\n  }\n}\n")
        after, = dh.probe([("web", Attempt(EXT4, 80))])
    assert before.mss is not None and 1460 - 40 <= before.mss <= 1460, before
    assert after.mss is not None and 1360 - 40 <= after.mss <= 1360, after
    assert delivered(after, peer=HOST4), after


def test_harness_without_firewall(dh: DockerHost) -> None:
    """Control for the scenarios above: with no rules loaded everything routes, bridged traffic
    included, and nothing is translated, so every block and every rewritten address seen in
    them comes from the loaded rules."""
    with dh.serving():
        out = dh.probe([("ext", Attempt("172.17.0.2", 80)), ("ext", Attempt("fd00:17::2", 80)),
                        ("web", Attempt(EXT4, 80)), ("qa", Attempt("172.19.0.3", 80)),
                        ("va", Attempt(EXT4, 53, "udp")), ("web", Attempt("172.18.0.2", 81)),
                        ("ext", Attempt(HOST4, 8080))])
    peers = [EXT4, EXT6, "172.17.0.2", "172.19.0.2", "172.20.0.2", "172.17.0.2"]
    for o, peer in zip(out, peers, strict=False):
        assert delivered(o, peer=peer), o
    assert not delivered(out[-1]), out[-1]



def test_harness_sees_remote_loopback() -> None:
    """Control for test_loopback_bound_port: without dockerd's raw `-d 127.0.0.1/32 ! -i lo`
    drop, the routed 127.0.0.1 SYN is DNATed and arrives in the container."""
    with docker_host(PROXY_OFF) as dh:
        for artifact in dockerd_artifacts(dh.spec):
            kept = [ln for ln in artifact.text.splitlines() if "-d 127.0.0.1/32 ! -i lo" not in ln]
            assert len(kept) < len(artifact.text.splitlines()) or artifact.target == "ip6tables"
            dh.load(replace(artifact, text="\n".join(kept) + "\n"), "nft")
        dh.route_loopback_from_ext()
        with dh.serving("web"):
            before = dh.tcp_segments_in("web")
            remote_loopback, = dh.probe([("ext", Attempt("127.0.0.1", 8082))])
            after = dh.tcp_segments_in("web")
    assert not delivered(remote_loopback), remote_loopback
    assert after > before
