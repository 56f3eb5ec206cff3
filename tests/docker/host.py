"""A Docker host built from network namespaces, for tests that send real packets through it.

`ext` (a peer on the uplink) -- eth0 -- `host` (bridges, forwarding, the firewall under test)
-- one veth per container, enslaved to its network's bridge. The host namespace gets
br_netfilter (`net.bridge.bridge-nf-call-ip{,6}tables=1`, per namespace since Linux 5.3), so
traffic between two containers of one bridge crosses FORWARD as it does on a real Docker host.
The same `HostSpec` renders the DSL `docker { ... }` block, so model and wiring cannot drift.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from rulec.backends.base import Artifact
from rulec.kernel import Namespace, available, load, veth_pair
from tests.kernel.probe import Attempt, Outcome, attempts, servers

# The uplink, in documentation ranges; `ext` routes Docker's private ranges to the host so that
# "direct routing to a container address" can be tried at all.
HOST4, EXT4 = "203.0.113.1", "203.0.113.2"
HOST6, EXT6 = "2001:db8:ff::1", "2001:db8:ff::2"
EXT_ROUTES = (("172.16.0.0/12", HOST4), ("fd00::/8", HOST6))
UPLINK = "eth0"

# What every probe server listens on, TCP and UDP alike: `web` publishes 80 and 53/udp
# (8080 -> 80, 5353 -> 53/udp) and 81 on 127.0.0.1 only; 82 is never published.
SERVED = (53, 80, 81, 82)

def kernel_unavailable() -> str | None:
    """Why Docker host tests cannot run here, or None."""
    reason = available()
    if reason is not None:
        return reason
    if not os.path.isdir("/proc/sys/net/bridge"):
        # Loading br_netfilter would change the host itself; these tests only use it if present.
        return "bridge netfilter (br_netfilter) is not available in this kernel"
    for target, variant in (("iptables", "nft"), ("ip6tables", "nft"), ("nft", None)):
        reason = available(target, variant)
        if reason is not None:
            return reason
    return None


@dataclass(frozen=True, slots=True)
class Network:
    name: str
    bridge: str
    subnet4: str
    subnet6: str | None = None
    icc: bool = True
    internal: bool = False

    @property
    def gateway4(self) -> str:
        return str(ipaddress.ip_network(self.subnet4)[1])

    @property
    def gateway6(self) -> str | None:
        return str(ipaddress.ip_network(self.subnet6)[1]) if self.subnet6 else None


@dataclass(frozen=True, slots=True)
class Publish:
    """`docker run -p [host_ip:]host_port:container_port[/proto]`."""

    host_port: int
    container_port: int
    proto: str = "tcp"
    host_ip: str | None = None

    def docker_syntax(self) -> str:
        ip = ""
        if self.host_ip:
            ip = f"[{self.host_ip}]:" if ":" in self.host_ip else f"{self.host_ip}:"
        return f"{ip}{self.host_port}:{self.container_port}/{self.proto}"

    def applies_to(self, family: int) -> bool:
        """Whether dockerd binds this port in IPv4 (4) or IPv6 (6) rules."""
        if self.host_ip is None:
            return True
        return ipaddress.ip_address(self.host_ip).version == family


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    network: str
    ip4: str
    ip6: str | None = None
    publish: tuple[Publish, ...] = ()


@dataclass(frozen=True, slots=True)
class HostSpec:
    """The Docker host: its networks and containers (one network each) and daemon options."""

    networks: tuple[Network, ...]
    containers: tuple[Container, ...]
    userland_proxy: bool = True

    def network(self, name: str) -> Network:
        return next(n for n in self.networks if n.name == name)

    def container(self, name: str) -> Container:
        return next(c for c in self.containers if c.name == name)

    def docker_block(self) -> str:
        """This host as the DSL's `docker { ... }` block (docs/docker.md)."""
        lines = ["docker {", f"  userland-proxy {'on' if self.userland_proxy else 'off'}"]
        for net in self.networks:
            lines += [f"  network {net.name} {{", f"    bridge {net.bridge}",
                      f"    subnet {net.subnet4}"]
            lines += [f"    subnet {net.subnet6}"] if net.subnet6 else []
            lines += [] if net.icc else ["    icc off"]
            lines += ["    internal"] if net.internal else []
            lines.append("  }")
        for c in self.containers:
            lines += [f"  container {c.name} {{",
                      f"    network {c.network} {c.ip4}{' ' + c.ip6 if c.ip6 else ''}"]
            lines += [f'    publish "{p.docker_syntax()}"' for p in c.publish]
            lines.append("  }")
        return "\n".join([*lines, "}", ""])


# The host most scenarios use: the default bridge with two containers (one publishing ports),
# a user-defined network, an icc=false network and an internal one.
BRIDGE = Network("bridge", "docker0", "172.17.0.0/16", "fd00:17::/64")
APPS = Network("apps", "br-0a1b2c3d4e5f", "172.18.0.0/16", "fd00:18::/64")
QUIET = Network("quiet", "br-1b2c3d4e5f60", "172.19.0.0/16", icc=False)
VAULT = Network("vault", "br-2c3d4e5f6071", "172.20.0.0/16", internal=True)
WEB_PORTS = (Publish(8080, 80), Publish(5353, 53, "udp"), Publish(8082, 81, host_ip="127.0.0.1"))
STANDARD = HostSpec(
    networks=(BRIDGE, APPS, QUIET, VAULT),
    containers=(
        Container("web", "bridge", "172.17.0.2", "fd00:17::2", WEB_PORTS),
        Container("peer", "bridge", "172.17.0.3", "fd00:17::3"),
        Container("api", "apps", "172.18.0.2", "fd00:18::2"),
        Container("qa", "quiet", "172.19.0.2"),
        Container("qb", "quiet", "172.19.0.3"),
        Container("va", "vault", "172.20.0.2"),
        Container("vb", "vault", "172.20.0.3"),
    ),
)


@dataclass
class DockerHost:
    """The namespaces of a built HostSpec: `host`, `ext` and one per container, by name."""

    spec: HostSpec
    host: Namespace
    ext: Namespace
    containers: dict[str, Namespace] = field(default_factory=dict)

    def ns(self, name: str) -> Namespace:
        """"host", "ext" or a container's name."""
        return {"host": self.host, "ext": self.ext}.get(name) or self.containers[name]

    def address(self, name: str, family: int = 4) -> str:
        """The address `name` has on its network (the uplink address for host and ext)."""
        fixed = {("host", 4): HOST4, ("host", 6): HOST6, ("ext", 4): EXT4, ("ext", 6): EXT6}
        if (name, family) in fixed:
            return fixed[name, family]
        c = self.spec.container(name)
        found = c.ip4 if family == 4 else c.ip6
        assert found is not None, f"{name} has no IPv{family} address"
        return found

    def load(self, artifact: Artifact, variant: str | None = None) -> None:
        """Load a compiled ruleset into the host namespace; the load must succeed."""
        verdict = load(artifact, self.host, variant)
        assert verdict.ok, f"{verdict.loader}: {verdict.message}\n--- {artifact.target}:\n" \
                           f"{artifact.text}"

    def route_loopback_from_ext(self) -> None:
        """Make `ext` an attacker that routes 127.0.0.1 to the host (and accepts replies from
        it): the case dockerd's raw "DROP REMOTE LOOPBACK" rule exists for."""
        for local in ("127.0.0.0/8", "127.0.0.1"):
            self.ext.ip("route", "del", "local", local, "dev", "lo", "table", "local")
        self.ext.ip("route", "add", "127.0.0.1/32", "via", HOST4, "dev", "eth0")
        for conf in ("all", "eth0"):
            self.ext.sysctl(f"net.ipv4.conf.{conf}.route_localnet", "1")

    def tcp_segments_in(self, name: str) -> int:
        """TCP segments received so far in namespace `name` (/proc/net/snmp Tcp InSegs)."""
        lines = [ln.split() for ln in self.ns(name).run(["cat", "/proc/net/snmp"]).stdout
                 .splitlines() if ln.startswith("Tcp:")]
        return int(lines[1][lines[0].index("InSegs")])

    @contextmanager
    def serving(self, *names: str, host_tcp: Sequence[int] = ()) -> Iterator[None]:
        """Probe servers (TCP and UDP on SERVED) in the named namespaces, by default `ext` and
        every container; `host_tcp` ports in the host namespace too (standing in for
        docker-proxy)."""
        chosen = names or ("ext", *self.containers)
        specs: list[tuple[Namespace, Sequence[int], str]] = [
            (self.ns(name), SERVED, "tcp+udp") for name in chosen]
        if host_tcp:
            specs.append((self.host, host_tcp, "tcp"))
        with servers(specs):
            yield

    def probe(self, tries: Sequence[tuple[str, Attempt]]) -> list[Outcome]:
        """Every (source namespace name, attempt) at once; outcomes in the order given."""
        return probe_all(self.ns, tries)


def probe_all(namespace_of: Callable[[str], Any],
              tries: Sequence[tuple[str, Attempt]]) -> list[Outcome]:
    """Every (source, attempt) at once, one client process per source (`namespace_of` gives
    what to run it in: a Namespace, or anything with its run()); outcomes in the order given."""
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, (source, _) in enumerate(tries):
        by_source[source].append(i)
    results: list[Outcome | None] = [None] * len(tries)

    def run(source: str) -> None:
        indices = by_source[source]
        for i, outcome in zip(indices, attempts(namespace_of(source),
                                                [tries[i][1] for i in indices]), strict=True):
            results[i] = outcome

    with ThreadPoolExecutor(max_workers=len(by_source)) as pool:
        list(pool.map(run, by_source))
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


@contextmanager
def docker_host(spec: HostSpec = STANDARD, *,
                uplink_mtu: int | None = None) -> Iterator[DockerHost]:
    """Build `spec` out of fresh namespaces; everything is deleted on exit, even after a failure
    half way through."""
    with ExitStack() as stack:

        def fresh(tag: str) -> Namespace:
            ns = stack.enter_context(Namespace(tag))
            # Without duplicate address detection, IPv6 addresses work at once.
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0")
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0")
            return ns

        dh = DockerHost(spec, fresh("dhost"), fresh("dext"))
        host, ext = dh.host, dh.ext
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
                    "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"):
            host.sysctl(key, "1")

        veth_pair(host, UPLINK, ext, "eth0")
        _up(host, UPLINK, (f"{HOST4}/24", f"{HOST6}/64"), mtu=uplink_mtu)
        _up(ext, "eth0", (f"{EXT4}/24", f"{EXT6}/64"))
        for dest, via in EXT_ROUTES:
            ext.add_route(dest, via)
        # Static IPv6 neighbours on the uplink: a fresh veth end sometimes drops the first
        # neighbour solicitations (Ip6InNoRoutes, for ~1 s), which made about one first IPv6
        # connection in four miss the probe's 0.5 s. Neighbour discovery is not under test.
        for ns, peer, addr in ((host, ext, EXT6), (ext, host, HOST6)):
            mac = json.loads(peer.ip("-j", "link", "show", "dev", "eth0").stdout)[0]["address"]
            ns.ip("-6", "neigh", "replace", addr, "lladdr", mac, "dev", "eth0", "nud", "permanent")

        for net in spec.networks:
            host.ip("link", "add", net.bridge, "type", "bridge")
            _up(host, net.bridge, (f"{net.gateway4}/{net.subnet4.split('/')[1]}",
                                   *([f"{net.gateway6}/{net.subnet6.split('/')[1]}"]
                                     if net.subnet6 else [])))
            if not spec.userland_proxy:
                # As dockerd does in hairpin mode: lets the host DNAT 127.0.0.1 to a container.
                host.sysctl(f"net.ipv4.conf.{net.bridge}.route_localnet", "1")

        for i, c in enumerate(spec.containers):
            net = spec.network(c.network)
            ns = dh.containers[c.name] = fresh("dc")
            port = f"veth{i}"
            veth_pair(host, port, ns, "eth0")
            host.ip("link", "set", port, "master", net.bridge)
            if not spec.userland_proxy:
                # dockerd turns hairpin on so a container can reach itself through the host.
                host.ip("link", "set", port, "type", "bridge_slave", "hairpin", "on")
            host.link_up(port)  # the host end first: see make_topology in tests/kernel/probe.py
            prefix4, prefix6 = net.subnet4.split("/")[1], (net.subnet6 or "/").split("/")[1]
            addrs = (f"{c.ip4}/{prefix4}", *([f"{c.ip6}/{prefix6}"] if c.ip6 else []))
            _up(ns, "eth0", addrs)
            # Internal networks get a default route too, so that the firewall (not a missing
            # route) is what keeps their packets in.
            ns.add_route("default", net.gateway4)
            if c.ip6 and net.gateway6:
                ns.add_route("default", net.gateway6)
        yield dh


def _up(ns: Namespace, dev: str, addrs: Sequence[str], mtu: int | None = None) -> None:
    for cidr in addrs:
        ns.add_address(dev, cidr)
    ns.link_up(dev, mtu=mtu)


__all__ = ["APPS", "BRIDGE", "EXT4", "EXT6", "HOST4", "HOST6", "QUIET", "STANDARD", "UPLINK",
           "VAULT", "Container", "DockerHost", "HostSpec", "Network", "Publish", "docker_host",
           "kernel_unavailable", "probe_all"]
