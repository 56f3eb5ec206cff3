"""The Docker host model: daemon options and version, bridge networks, containers and
published ports.

Both ways in (the DSL's `docker { ... }` block and `docker inspect` JSON) build these frozen
records with spans; `check` then reports every inconsistency at once and `profile` turns the
daemon's version and options into the facts the expansion follows. Codes: E0701 JSON syntax,
E0702 missing or mistyped field, E0703 bad value, E0704 address outside its subnet, E0705 port
published twice, E0706 unknown network, E0707 duplicate, E0708 a chain dockerd owns, E0709 two
sources of networks and containers, E0710 a layout the version contradicts, E0711 a version
rulec does not reproduce, E0712 two sources disagree on a daemon setting, E0713 options dockerd
refuses to start with, E0714 a DOCKER-USER chain dockerd never jumps to; W0701 a setting Docker
accepts but that has no rules, W0702 a real host's state without its Docker version.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any

from rulec.diagnostics import Collector, Span
from rulec.ir.values import Family, Prefix

# The kernel's IFNAMSIZ is 16 bytes with the terminating NUL.
IFNAMSIZ = 15
# Interface names every target can write: iptables reads a leading '-' as an option, nft-json
# and the docker-bridges chain names take ASCII only; the kernel refuses "." and "..".
_BRIDGE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_VERSION = re.compile(r"v?([0-9]{1,4})(?:\.([0-9]{1,4}))?(?:\.([0-9]{1,6}))?"
                      r"(?:[-+~][0-9A-Za-z.+~-]*)?")


class Layout(enum.Enum):
    """Which dockerd's rules to reproduce (docs/docker.md, "Versions")."""

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


@dataclass(frozen=True, slots=True)
class Version:
    """A dockerd release: `docker version`'s Server.Version, `docker info`'s ServerVersion or the
    block's `version`; packaging suffixes (`20.10.24+dfsg1`) are ignored."""

    major: int
    minor: int = 0
    patch: int = 0
    text: str = field(default="", compare=False)  # as written, for messages
    span: Span | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str, span: Span | None = None) -> Version | None:
        match = _VERSION.fullmatch(text.strip())
        if match is None:
            return None
        major, minor, patch = (int(g) if g else 0 for g in match.groups())
        return cls(major, minor, patch, text.strip(), span)

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def __str__(self) -> str:
        return self.text or f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Daemon:
    """dockerd's settings as given (daemon.json names in the comments). None: not given, so the
    version's default applies (`profile`). `origins` says where each given setting is written."""

    userland_proxy: bool | None = None  # userland-proxy: off means hairpin NAT rules
    ip6tables: bool | None = None  # ip6tables: IPv6 rules at all
    experimental: bool | None = None  # experimental: Docker <= 26 needs it for ip6tables
    allow_direct_routing: bool | None = None  # allow-direct-routing: no raw direct-access drops
    ip_forward_no_drop: bool | None = None  # ip-forward-no-drop: FORWARD policy left alone
    version: Version | None = None
    layout: Layout | None = None  # the block's `layout`: a shorthand for the version
    span: Span | None = field(default=None, compare=False, repr=False)
    origins: tuple[tuple[str, Span | None], ...] = field(default=(), compare=False, repr=False)

    def origin(self, name: str) -> Span | None:
        return next((span for key, span in self.origins if key == name), self.span)

    def given(self) -> Iterator[tuple[str, Any]]:
        """(setting, value) for every setting that is not None."""
        for f in fields(self):
            if f.name not in ("span", "origins") and getattr(self, f.name) is not None:
                yield f.name, getattr(self, f.name)


def merge_daemons(first: Daemon, second: Daemon, out: Collector) -> Daemon:
    """Settings from two sources (a docker block and the state files, or daemon.json and
    `docker info`): each may give what the other leaves out; a setting both give alike is
    fine, one they give differently is E0712 at the second."""
    merged: dict[str, Any] = {}
    for name, value in second.given():
        mine = getattr(first, name)
        if mine is not None and mine != value:
            out.error("E0712", f"{_SETTING_NAMES[name]} is {_shown(value)} here but "
                      f"{_shown(mine)} at {first.origin(name)}", second.origin(name),
                      "both describe the one daemon of this host: make them agree, or leave "
                      "the setting to one of them")
        elif mine is None:
            merged[name] = value
    origins = first.origins + tuple((k, s) for k, s in second.origins if k in merged)
    return replace(first, origins=origins, span=first.span or second.span, **merged)


_SETTING_NAMES = {"userland_proxy": "userland-proxy", "ip6tables": "ip6tables",
                  "experimental": "experimental", "allow_direct_routing": "allow-direct-routing",
                  "ip_forward_no_drop": "ip-forward-no-drop", "version": "the Docker version",
                  "layout": "the layout"}


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, Layout):
        return value.value
    return str(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """What a dockerd of this version with these settings writes: the facts `expand` follows
    (the table in docs/docker.md, "Versions")."""

    layout: Layout
    version: Version | None  # None: unknown, the layout's newest release is assumed
    userland_proxy: bool
    ip6tables: bool
    ip6_docker_user: bool  # 23.0+: DOCKER-USER in ip6tables as well
    ip6_internal_by_interface: bool  # 24.0.6+: internal-network IPv6 drops spare same-bridge
    host_port_order: bool  # < 27: ports by host port, largest first (nat.SortPortMap)
    allow_direct_routing: bool
    ip_forward_no_drop: bool

    def families(self) -> tuple[Family, ...]:
        return (Family.IP, Family.IP6) if self.ip6tables else (Family.IP,)


OLDEST = Version(20, 10)


def profile(daemon: Daemon, layout: Layout | None, out: Collector,
            layout_option: str | None = None) -> Profile | None:
    """The daemon's rules profile; None (errors reported) if rulec cannot reproduce it.
    `layout` is the one asked for (the command line's, else the block's); `layout_option`
    names where a command-line layout comes from, for the error."""
    version = daemon.version
    implied: Layout | None = None
    if version is not None:
        span = version.span
        if version.key < OLDEST.key:
            out.error("E0711", f"Docker {version} is older than anything rulec reproduces",
                      span, f"rulec knows dockerd {OLDEST.major}.{OLDEST.minor} and later")
            return None
        if version.major == 28:
            out.error("E0711", f"rulec does not reproduce Docker {version}'s rules", span,
                      "28.x mixes the two layouts (ISOLATION chains beside DOCKER-FORWARD); "
                      "rulec reproduces 20.10-27.x (classic) and 29.x (current)")
            return None
        if version.major > 29:
            out.error("E0711", f"Docker {version} is newer than anything rulec knows", span,
                      "rulec reproduces up to 29.x; leave the version out to get 29.x's rules")
            return None
        implied = Layout.CLASSIC if version.major <= 27 else Layout.CURRENT
    chosen = layout or daemon.layout
    if chosen is not None and implied is not None and chosen is not implied:
        where = layout_option or f"`layout {chosen.value}`"
        at = daemon.origin("layout") if layout_option is None else version.span if version \
            else None
        out.error("E0710", f"{where} contradicts Docker {version}, which has the "
                  f"{implied.value} layout", at, "leave the layout out: the version decides it")
        return None
    final = chosen or implied or Layout.CURRENT
    # Unknown version: the newest of the layout (27.x for classic, 29.x for current).
    key = version.key if version is not None else (27, 0, 0) if final is Layout.CLASSIC \
        else (29, 0, 0)
    ip6tables = daemon.ip6tables if daemon.ip6tables is not None else key >= (27, 0, 0)
    if ip6tables and key < (27, 0, 0) and daemon.experimental is False:
        out.error("E0713", f"dockerd {version} refuses to start with ip6tables but without "
                  "experimental", daemon.origin("ip6tables"),
                  "\"ip6tables rules are only available if experimental features are enabled\": "
                  "add \"experimental\": true, or leave ip6tables off")
        return None
    return Profile(layout=final, version=version,
                   userland_proxy=daemon.userland_proxy is not False, ip6tables=ip6tables,
                   ip6_docker_user=key >= (23, 0, 0), ip6_internal_by_interface=key >= (24, 0, 6),
                   host_port_order=key < (27, 0, 0),
                   allow_direct_routing=bool(daemon.allow_direct_routing),
                   ip_forward_no_drop=bool(daemon.ip_forward_no_drop))


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
    # Where the bridge name is written (the `bridge` line, the JSON option or Id).
    bridge_span: Span | None = field(default=None, compare=False, repr=False)

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


def bridge_problem(name: str) -> str | None:
    """Why `name` cannot be a bridge in every target's output, or None."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if not name:
        return "it is empty"
    if size > IFNAMSIZ:
        unit = f"{size} bytes" if size != len(name) else f"{size} characters"
        return f"it is {unit} long; the kernel takes {IFNAMSIZ} bytes (IFNAMSIZ)"
    if not _BRIDGE_NAME.fullmatch(name):
        return "it holds characters other than ASCII letters, digits, '-', '_' and '.', " \
               "or starts with '-' or '.'"
    return None


def _check_network(network: Network, out: Collector) -> None:
    problem = bridge_problem(network.bridge)
    if problem is not None:
        out.error("E0703", f"bridge name {network.bridge!r} is not a valid interface name: "
                  f"{problem}", network.bridge_span or network.span,
                  f"use 1 to {IFNAMSIZ} ASCII letters, digits, '-', '_' or '.'")
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
