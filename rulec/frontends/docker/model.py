"""The Docker host model: daemon options, bridge networks, containers and published ports.

Both ways in (the DSL's `docker { ... }` block and `docker inspect` JSON) build these frozen
records with spans; `check` then reports every inconsistency at once. Codes: E0701 JSON
syntax, E0702 missing or mistyped field, E0703 bad value, E0704 address outside its subnet,
E0705 port published twice, E0706 unknown network, E0707 duplicate, E0708 a chain dockerd owns,
E0709 a second Docker model; W0701 a setting Docker accepts but that has no rules.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from rulec.diagnostics import Collector, Span
from rulec.ir.values import Family, Prefix

IFNAMSIZ = 15  # longest interface name the kernel accepts


class Layout(enum.Enum):
    """Which dockerd's rules to reproduce (docker-firewall.md sections 2 and 3)."""

    CURRENT = "current"  # 29.x: DOCKER-FORWARD/-BRIDGE/-CT/-INTERNAL, raw direct-access drops
    CLASSIC = "classic"  # 20.10-27.x: DOCKER-ISOLATION-STAGE-1/2, per-bridge FORWARD rules


class GatewayMode(enum.Enum):
    NAT = "nat"
    ROUTED = "routed"
    NAT_UNPROTECTED = "nat-unprotected"


class PortProto(enum.Enum):
    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"


@dataclass(frozen=True, slots=True, kw_only=True)
class Daemon:
    """dockerd options that change its rules (daemon.json names in the comments)."""

    userland_proxy: bool = True  # userland-proxy: off means hairpin NAT rules
    ipv6: bool = True  # ip6tables: IPv6 rules at all
    allow_direct_routing: bool = False  # allow-direct-routing: no raw direct-access drops
    ip_forward_no_drop: bool = False  # ip-forward-no-drop: FORWARD policy left alone
    span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Subnet:
    prefix: Prefix
    gateway: Prefix | None = None  # a host address inside `prefix`
    span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Network:
    """A bridge network; `subnets` holds at most one prefix per family."""

    name: str
    bridge: str
    subnets: tuple[Subnet, ...] = ()
    icc: bool = True
    internal: bool = False
    masquerade: bool = True
    snat: tuple[Prefix, ...] = ()  # host_ipv4/host_ipv6: SNAT to these instead of MASQUERADE
    gateway_mode_v4: GatewayMode = GatewayMode.NAT
    gateway_mode_v6: GatewayMode = GatewayMode.NAT
    span: Span | None = field(default=None, compare=False, repr=False)

    def subnet(self, family: Family) -> Subnet | None:
        return next((s for s in self.subnets if s.prefix.family is family), None)

    def gateway_mode(self, family: Family) -> GatewayMode:
        return self.gateway_mode_v4 if family is Family.IP else self.gateway_mode_v6

    def snat_address(self, family: Family) -> Prefix | None:
        return next((p for p in self.snat if p.family is family), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    """A container's endpoint on one network: at most one address per family."""

    network: str
    addresses: tuple[Prefix, ...] = ()
    span: Span | None = field(default=None, compare=False, repr=False)

    def address(self, family: Family) -> Prefix | None:
        return next((a for a in self.addresses if a.family is family), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Published:
    """`-p [host:]host_ports:container_ports/proto`; the two ranges have the same length."""

    host: Prefix | None  # None: every host address (0.0.0.0 and ::)
    host_ports: tuple[int, int]
    container_ports: tuple[int, int]
    proto: PortProto = PortProto.TCP
    span: Span | None = field(default=None, compare=False, repr=False)

    def pairs(self) -> tuple[tuple[int, int], ...]:
        """(host port, container port) for every port of the range: Docker's one binding each."""
        offset = self.container_ports[0] - self.host_ports[0]
        return tuple((p, p + offset) for p in range(self.host_ports[0], self.host_ports[1] + 1))


@dataclass(frozen=True, slots=True, kw_only=True)
class Container:
    """Ports are published on the first attachment's network, as dockerd does for the
    network that gives the container its default gateway."""

    name: str
    attachments: tuple[Attachment, ...] = ()
    published: tuple[Published, ...] = ()
    span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class DockerHost:
    """Networks and containers in creation order (it decides dockerd's rule order)."""

    daemon: Daemon = Daemon()
    networks: tuple[Network, ...] = ()
    containers: tuple[Container, ...] = ()
    layout: Layout | None = None  # None: what the caller asks for, else current
    span: Span | None = field(default=None, compare=False, repr=False)

    def network(self, name: str) -> Network | None:
        return next((n for n in self.networks if n.name == name), None)


# ------------------------------------------------------------------------------ consistency

def check(host: DockerHost, out: Collector) -> None:
    """Report every inconsistency of the model (errors with spans) into `out`."""
    bridges: dict[str, Network] = {}
    names: dict[str, Network] = {}
    for network in host.networks:
        _check_network(network, out)
        for seen, key, what in ((names, network.name, "network"),
                                (bridges, network.bridge, "bridge")):
            if key in seen:
                out.error("E0707", f"{what} {key} is declared twice", network.span,
                          f"first declared at {seen[key].span}")
            seen.setdefault(key, network)
        for other in host.networks:
            if other is network:
                break
            for mine in network.subnets:
                theirs = other.subnet(mine.prefix.family)
                if theirs is not None and _overlap(mine.prefix, theirs.prefix):
                    out.error("E0707", f"subnet {mine.prefix} of network {network.name} "
                              f"overlaps {theirs.prefix} of network {other.name}", mine.span)
    containers: dict[str, Container] = {}
    addresses: dict[tuple[Family, int], tuple[str, Span | None]] = {}
    for container in host.containers:
        if container.name in containers:
            out.error("E0707", f"container {container.name} is declared twice", container.span,
                      f"first declared at {containers[container.name].span}")
        containers.setdefault(container.name, container)
        _check_container(host, container, addresses, out)
    _check_bindings(host, out)


def _check_network(network: Network, out: Collector) -> None:
    if not network.bridge or len(network.bridge) > IFNAMSIZ or any(
            not (ch.isalnum() or ch in "-_.") for ch in network.bridge):
        out.error("E0703", f"bridge name {network.bridge!r} is not a valid interface name",
                  network.span, f"use at most {IFNAMSIZ} letters, digits, '-', '_' or '.'")
    families: set[Family] = set()
    for subnet in network.subnets:
        family = subnet.prefix.family
        if family in families:
            out.error("E0707", f"network {network.name} has two {family.value} subnets",
                      subnet.span, "dockerd's bridge driver uses one subnet per family")
        families.add(family)
        gateway = subnet.gateway
        if gateway is not None and not _inside(gateway, subnet.prefix):
            out.error("E0704", f"gateway {gateway} is outside subnet {subnet.prefix}",
                      subnet.span)
    for address in network.snat:
        if address.family not in families:
            out.error("E0703", f"network {network.name} has no {address.family.value} subnet "
                      f"to SNAT to {address}", network.span)
    if not network.subnets:
        out.error("E0702", f"network {network.name} has no subnet", network.span,
                  "add e.g. `subnet 172.18.0.0/16`")


def _check_container(host: DockerHost, container: Container,
                     addresses: dict[tuple[Family, int], tuple[str, Span | None]],
                     out: Collector) -> None:
    attached: set[str] = set()
    for attachment in container.attachments:
        network = host.network(attachment.network)
        if network is None:
            known = ", ".join(n.name for n in host.networks) or "none"
            out.error("E0706", f"container {container.name} is attached to unknown network "
                      f"{attachment.network}", attachment.span, f"networks: {known}")
            continue
        if attachment.network in attached:
            out.error("E0707", f"container {container.name} is attached to network "
                      f"{attachment.network} twice", attachment.span)
        attached.add(attachment.network)
        families: set[Family] = set()
        for address in attachment.addresses:
            family = address.family
            subnet = network.subnet(family)
            if family in families:
                out.error("E0707", f"container {container.name} has two {family.value} "
                          f"addresses on network {network.name}", attachment.span)
            families.add(family)
            if subnet is None:
                out.error("E0704", f"network {network.name} has no {family.value} subnet for "
                          f"{address}", attachment.span)
                continue
            if not _inside(address, subnet.prefix):
                out.error("E0704", f"address {address} of container {container.name} is "
                          f"outside subnet {subnet.prefix} of network {network.name}",
                          attachment.span)
            elif address.network in (subnet.prefix.first, subnet.prefix.last) and (
                    family is Family.IP and subnet.prefix.length < 31):
                out.error("E0704", f"address {address} is the network or broadcast address of "
                          f"{subnet.prefix}", attachment.span)
            if subnet.gateway is not None and subnet.gateway == address:
                out.error("E0707", f"address {address} of container {container.name} is the "
                          f"gateway of network {network.name}", attachment.span)
            key = (family, address.network)
            if key in addresses:
                owner, where = addresses[key]
                out.error("E0707", f"address {address} is already used by {owner}",
                          attachment.span, f"assigned at {where}")
            addresses.setdefault(key, (container.name, attachment.span))
    if container.published and not container.attachments:
        out.error("E0702", f"container {container.name} publishes ports but is attached to "
                  "no network", container.span)
    for published in container.published:
        low, high = published.host_ports
        c_low, c_high = published.container_ports
        if high - low != c_high - c_low:
            out.error("E0703", f"host ports {low}-{high} and container ports {c_low}-{c_high} "
                      "differ in length", published.span,
                      "rulec needs one host port per container port (no ephemeral ports)")
        if low == 0 or c_low == 0:
            out.error("E0703", "port 0 cannot be published", published.span)


def _check_bindings(host: DockerHost, out: Collector) -> None:
    """Two bindings of one host address, port and protocol: dockerd refuses the second."""
    taken: list[tuple[Published, str]] = []
    for container in host.containers:
        for published in container.published:
            for other, owner in taken:
                if other.proto is published.proto and _ranges_meet(
                        other.host_ports, published.host_ports) and _hosts_meet(
                        other.host, published.host):
                    out.error("E0705", f"{published.proto.value} port "
                              f"{_ports(published.host_ports)} is already published by "
                              f"{owner}", published.span, f"published at {other.span}")
                    break
            taken.append((published, container.name))


def _ports(ports: tuple[int, int]) -> str:
    return str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}-{ports[1]}"


def _ranges_meet(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _hosts_meet(a: Prefix | None, b: Prefix | None) -> bool:
    # No host address binds every address of both families; 0.0.0.0 or :: those of one.
    if a is None or b is None:
        return True
    return a.family is b.family and (a == b or a.network == 0 or b.network == 0)


def _inside(address: Prefix, subnet: Prefix) -> bool:
    return subnet.contains(address.family, address.network) and address.is_host


def _overlap(a: Prefix, b: Prefix) -> bool:
    return a.family is b.family and a.first <= b.last and b.first <= a.last
