"""Docker host model -> the IR tables dockerd itself would install (docs/docker.md).

`expand` is a pure function of the host and its daemon's `Profile` (version and settings).
Rule order follows dockerd's insert/append order with networks and containers created in model
order: rules dockerd inserts at the top of a chain (POSTROUTING per network, DOCKER's per-port
ACCEPTs, the isolation and internal drops) come newest first, and a container's ports come in
the order its dockerd sorts them. Docker never writes multiport or sets, so neither does this;
the caller runs no optimiser passes over the result unless asked to.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from rulec.diagnostics import Collector, Span
from rulec.frontends.docker.model import (
    Container,
    DockerHost,
    GatewayMode,
    Layout,
    Network,
    PortProto,
    Profile,
)
from rulec.ir.nodes import (
    Accept,
    Action,
    Chain,
    Counter,
    Dnat,
    Drop,
    Hook,
    Jump,
    MapKey,
    Masquerade,
    Match,
    Policy,
    Return,
    Rule,
    Snat,
    Table,
    TableKind,
    Vmap,
)
from rulec.ir.values import (
    ICMP,
    ICMPV6,
    AddressSet,
    AddrType,
    AddrTypeKind,
    CtState,
    CtStates,
    Family,
    Interface,
    PortSet,
    Prefix,
    Protocol,
)

DOCKER_USER = "DOCKER-USER"
# The nft table Docker 29's nftables backend owns, one per family.
NFT_TABLE = "docker-bridges"

# User chains dockerd creates (and flushes on start), per layout and table; DOCKER-USER is the
# operator's.
DOCKER_CHAINS: dict[Layout, dict[TableKind, tuple[str, ...]]] = {
    Layout.CURRENT: {
        TableKind.FILTER: ("DOCKER", "DOCKER-BRIDGE", "DOCKER-CT", "DOCKER-FORWARD",
                           "DOCKER-INTERNAL"),
        TableKind.NAT: ("DOCKER",),
    },
    Layout.CLASSIC: {
        TableKind.FILTER: ("DOCKER", "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2"),
        TableKind.NAT: ("DOCKER",),
    },
}
# Built-in chains dockerd writes rules into: an operator may add to them in a full replace,
# but `--noflush` would flush them (`-F`), deleting dockerd's rules.
DOCKER_HOOKS: dict[Layout, dict[TableKind, tuple[Hook, ...]]] = {
    Layout.CURRENT: {TableKind.FILTER: (Hook.FORWARD,),
                     TableKind.NAT: (Hook.PREROUTING, Hook.OUTPUT, Hook.POSTROUTING),
                     TableKind.RAW: (Hook.PREROUTING,)},
    Layout.CLASSIC: {TableKind.FILTER: (Hook.FORWARD,),
                     TableKind.NAT: (Hook.PREROUTING, Hook.OUTPUT, Hook.POSTROUTING)},
}


class Shape(enum.Enum):
    """How the rules are laid out: dockerd's iptables chains, or its nftables tables."""

    IPTABLES = "iptables"
    NFT = "nft"  # Docker 29 --firewall-backend=nftables: `docker-bridges`, current layout only


_LOOPBACK = {Family.IP: Prefix.parse("127.0.0.0/8"), Family.IP6: Prefix.parse("::1/128")}
_LINK_LOCAL = Prefix.parse("fe80::/10")
_ICMP = {Family.IP: ICMP, Family.IP6: ICMPV6}
_PROTO = {PortProto.TCP: 6, PortProto.UDP: 17, PortProto.SCTP: 132}
_CT_REPLY = CtStates(frozenset({CtState.RELATED, CtState.ESTABLISHED}))
_LOCAL = AddrType(AddrTypeKind.LOCAL)
_IPV4_LOOPBACK = Prefix.parse("127.0.0.0/8")


@dataclass(frozen=True, slots=True)
class Binding:
    """One port of one `-p` for one family: what dockerd calls a PortBinding."""

    network: Network
    container: Container
    family: Family
    address: Prefix  # the container's
    host: Prefix | None  # None: unspecified (0.0.0.0 or ::)
    host_port: int
    port: int
    proto: PortProto
    span: Span | None

    @property
    def nat(self) -> bool:
        """Whether the host port is mapped: routed networks only open the container port."""
        return self.network.gateway_mode(self.family) is not GatewayMode.ROUTED


def layout_problems(host: DockerHost, layout: Layout, out: Collector) -> None:
    """What the chosen layout cannot reproduce (E0703)."""
    if layout is Layout.CLASSIC:
        for network in host.networks:
            if GatewayMode.NAT_UNPROTECTED in (network.gateway_mode_v4, network.gateway_mode_v6):
                out.error("E0703", f"network {network.name}: gateway mode nat-unprotected "
                          "needs the current layout", network.span,
                          "dockerd added it in 28.0; use --docker-layout current")


_PROTO_ORDER = {PortProto.TCP: 0, PortProto.UDP: 1, PortProto.SCTP: 2}


def _sort_key(profile: Profile) -> Callable[[Binding], tuple[int, ...]]:
    """A container's ports in the order its dockerd writes their rules."""
    if profile.host_port_order:
        # Up to 26.x, nat.SortPortMap: host port, largest first, then container port, tcp
        # first. Its comparison is no order when host and container ports sort differently
        # (9000:80 beside 8000:90): dockerd's order then depends on Go's map iteration.
        return lambda b: (-b.host_port, -b.port, b.proto is not PortProto.TCP)
    # 27.0+, the bridge driver's cmpPortBinding: container port, protocol, host port, address.
    return lambda b: (b.port, _PROTO_ORDER[b.proto], b.host_port,
                      b.host.network if b.host is not None else 0)


def bindings(host: DockerHost, family: Family, profile: Profile) -> list[Binding]:
    """The port bindings that get rules in `family`, in container order. A binding between
    families (an IPv6 host address to an IPv4-only container) is docker-proxy's alone."""
    out: list[Binding] = []
    key = _sort_key(profile)
    for container in host.containers:
        if not container.published or not container.attachments:
            continue
        attachment = container.attachments[0]
        network = host.network(attachment.network)
        address = attachment.address(family)
        if network is None or network.internal or address is None:
            continue
        if network.subnet(family) is None:
            continue
        mine: list[Binding] = []
        for published in container.published:
            host_address = published.host
            if host_address is not None and host_address.family is not family:
                continue
            if host_address is not None and host_address.network == 0:
                host_address = None  # 0.0.0.0 or ::, as `docker inspect` shows "any"
            for host_port, port in published.pairs():
                mine.append(Binding(network, container, family, address, host_address,
                                    host_port, port, published.proto, published.span))
        out += sorted(mine, key=key)
    return out


def expand(host: DockerHost, profile: Profile,
           shape: Shape = Shape.IPTABLES) -> tuple[Table, ...]:
    """dockerd's tables for every family it writes rules for: ip first, then ip6."""
    tables: list[Table] = []
    for family in profile.families():
        if shape is Shape.NFT and profile.layout is Layout.CURRENT:
            tables.extend(_NftExpansion(host, profile, family).tables())
        elif profile.layout is Layout.CURRENT:
            tables.extend(_CurrentExpansion(host, profile, family).tables())
        else:
            tables.extend(_ClassicExpansion(host, profile, family).tables())
    return tuple(tables)


# ------------------------------------------------------------------------------ rule helpers

def _iface(name: str, negated: bool = False) -> Interface:
    return Interface(name, negated)


def _addr(prefix: Prefix, negated: bool = False) -> AddressSet:
    return AddressSet((prefix,), negated)


def _rule(action: Action, span: Span | None = None, *, comment: str | None = None,
          counter: bool = False, **fields: Any) -> Rule:
    return Rule(match=Match(**fields), action=action, comment=comment, span=span,
                statements=(Counter(),) if counter else ())


def _chain(name: str, rules: list[Rule], hook: Hook | None = None,
           policy: Policy | None = None) -> Chain:
    return Chain(name=name, hook=hook, policy=policy, rules=tuple(rules))


def _dedup(rules: Iterator[Rule]) -> list[Rule]:
    """dockerd checks (`-C`) before it adds a rule, so one rule per distinct rule."""
    out: list[Rule] = []
    for rule in rules:
        if rule not in out:
            out.append(rule)
    return out


class _Expansion:
    """Shared by the layouts: the host, one family, and that family's networks and ports."""

    def __init__(self, host: DockerHost, profile: Profile, family: Family) -> None:
        self.host = host
        self.profile = profile
        self.family = family
        self.networks = [n for n in host.networks if n.subnet(family) is not None]
        self.external = [n for n in self.networks if not n.internal]
        self.bindings = bindings(host, family, profile)
        self.proxy = profile.userland_proxy

    def forward_policy(self) -> Policy | None:
        # dockerd sets DROP when it had to turn forwarding on itself, as on a fresh host.
        return None if self.profile.ip_forward_no_drop else Policy.DROP

    def subnet(self, network: Network) -> Prefix:
        subnet = network.subnet(self.family)
        assert subnet is not None  # self.networks only holds networks with one
        return subnet.prefix

    def mode(self, network: Network) -> GatewayMode:
        return network.gateway_mode(self.family)

    def table(self, kind: TableKind, chains: list[Chain], name: str | None = None) -> Table:
        return Table(kind=kind, family=self.family, chains=tuple(chains), name=name,
                     span=self.host.span)

    def nat_action(self, network: Network) -> Action:
        snat = network.snat_address(self.family)
        return Masquerade() if snat is None else Snat(snat)

    # Rules both iptables layouts share ---------------------------------------------------
    def nat_jumps(self) -> list[Chain]:
        prerouting = [_rule(Jump("DOCKER"), dst_type=_LOCAL)]
        # With the proxy on, docker-proxy serves loopback clients; nat leaves them alone.
        skip_loopback = _addr(_LOOPBACK[self.family], True) if self.proxy else None
        output = [_rule(Jump("DOCKER"), daddr=skip_loopback, dst_type=_LOCAL)]
        return [_chain("PREROUTING", prerouting, Hook.PREROUTING),
                _chain("OUTPUT", output, Hook.OUTPUT)]

    def postrouting_network(self, network: Network) -> list[Rule]:
        """Per network, inserted at the top: hairpin masquerade, then outbound masquerade."""
        rules = []
        if not self.proxy:
            rules.append(_rule(self.nat_action(network), network.span,
                               oifname=_iface(network.bridge), src_type=_LOCAL))
        if network.masquerade and self.mode(network) is not GatewayMode.ROUTED:
            rules.append(_rule(self.nat_action(network), network.span,
                               saddr=_addr(self.subnet(network)),
                               oifname=_iface(network.bridge, True)))
        return rules

    def own_port_masquerade(self, b: Binding) -> Rule:
        return _rule(Masquerade(), b.span, saddr=_addr(b.address), daddr=_addr(b.address),
                     proto=Protocol(_PROTO[b.proto]), dport=PortSet.of(b.port))

    def dnat(self, b: Binding, *, link_local: bool) -> Rule:
        return _rule(
            Dnat(b.address, (b.port, b.port)), b.span,
            saddr=_addr(_LINK_LOCAL, True) if link_local and self.family is Family.IP6 else None,
            daddr=_addr(b.host) if b.host is not None else None,
            iifname=_iface(b.network.bridge, True) if self.proxy else None,
            proto=Protocol(_PROTO[b.proto]), dport=PortSet.of(b.host_port))

    def open_port(self, b: Binding) -> Rule:
        bridge = b.network.bridge
        return _rule(Accept(), b.span, daddr=_addr(b.address), iifname=_iface(bridge, True),
                     oifname=_iface(bridge), proto=Protocol(_PROTO[b.proto]),
                     dport=PortSet.of(b.port))

    def internal_drops(self, network: Network) -> list[Rule]:
        subnet, bridge = self.subnet(network), network.bridge
        # Before 24.0.6 the IPv6 drops were IPv4's, which also drop neighbour discovery
        # between the network's own containers (moby#45649).
        if self.family is Family.IP or not self.profile.ip6_internal_by_interface:
            return [_rule(Drop(), network.span, saddr=_addr(subnet, True),
                          oifname=_iface(bridge)),
                    _rule(Drop(), network.span, daddr=_addr(subnet, True),
                          iifname=_iface(bridge))]
        return [_rule(Drop(), network.span, saddr=_addr(subnet, True),
                      iifname=_iface(bridge, True), oifname=_iface(bridge)),
                _rule(Drop(), network.span, daddr=_addr(subnet, True),
                      iifname=_iface(bridge), oifname=_iface(bridge, True))]

    def icc(self, network: Network, verdict: Action) -> Rule:
        return _rule(verdict, network.span, iifname=_iface(network.bridge),
                     oifname=_iface(network.bridge))


class _CurrentExpansion(_Expansion):
    """Docker 29 with the iptables backend (docs/docker.md, "Layouts")."""

    def tables(self) -> list[Table]:
        return [self.table(TableKind.RAW, [self.raw()]),
                self.table(TableKind.NAT, [*self.nat_jumps(), self.postrouting(),
                                           self.nat_docker()]),
                self.table(TableKind.FILTER, self.filter())]

    def filter(self) -> list[Chain]:
        forward = [_rule(Jump(DOCKER_USER)), _rule(Jump("DOCKER-FORWARD"))]
        docker_forward = [_rule(Jump("DOCKER-CT")), _rule(Jump("DOCKER-INTERNAL")),
                          _rule(Jump("DOCKER-BRIDGE"))]
        for network in self.networks:
            bridge = network.bridge
            if network.internal:
                docker_forward.append(self.icc(network, Accept() if network.icc else Drop()))
            elif network.icc:
                docker_forward.append(_rule(Accept(), network.span, iifname=_iface(bridge)))
            else:
                docker_forward += [self.icc(network, Drop()),
                                   _rule(Accept(), network.span, iifname=_iface(bridge),
                                         oifname=_iface(bridge, True))]
        ct = [_rule(Accept(), n.span, oifname=_iface(n.bridge), ct_state=_CT_REPLY)
              for n in self.external]
        bridge_jumps = [_rule(Jump("DOCKER"), n.span, oifname=_iface(n.bridge))
                        for n in self.external]
        ports = _dedup(self.open_port(b) for b in reversed(self.bindings)
                       if self.mode(b.network) is not GatewayMode.NAT_UNPROTECTED)
        docker = list(ports)
        for network in self.external:
            bridge, mode = network.bridge, self.mode(network)
            if mode is GatewayMode.ROUTED:
                docker.append(_rule(Accept(), network.span, oifname=_iface(bridge),
                                    proto=Protocol(_ICMP[self.family])))
            docker.append(_rule(Accept() if mode is GatewayMode.NAT_UNPROTECTED else Drop(),
                                network.span, iifname=_iface(bridge, True),
                                oifname=_iface(bridge)))
        internal = [r for n in reversed(self.networks) if n.internal
                    for r in self.internal_drops(n)]
        return [_chain("FORWARD", forward, Hook.FORWARD, self.forward_policy()),
                _chain("DOCKER", docker), _chain("DOCKER-BRIDGE", bridge_jumps),
                _chain("DOCKER-CT", ct), _chain("DOCKER-FORWARD", docker_forward),
                _chain("DOCKER-INTERNAL", internal), _chain(DOCKER_USER, [])]

    def postrouting(self) -> Chain:
        rules = [r for n in reversed(self.external) for r in self.postrouting_network(n)]
        if not self.proxy:
            rules += _dedup(self.own_port_masquerade(b) for b in self.bindings if b.nat)
        return _chain("POSTROUTING", rules, Hook.POSTROUTING)

    def nat_docker(self) -> Chain:
        return _chain("DOCKER", [self.dnat(b, link_local=True) for b in self.bindings if b.nat])

    def raw(self) -> Chain:
        rules: list[Rule] = []
        direct = not self.profile.allow_direct_routing
        for container in self.host.containers:
            for attachment in container.attachments if direct else ():
                network = self.host.network(attachment.network)
                address = attachment.address(self.family)
                if (network is None or address is None or network.internal
                        or network.subnet(self.family) is None
                        or self.mode(network) is not GatewayMode.NAT):
                    continue
                rules.append(_rule(Drop(), attachment.span, daddr=_addr(address),
                                   iifname=_iface(network.bridge, True)))
            rules += [self.loopback_drop(b) for b in self.bindings
                      if b.container is container and self.is_loopback(b)]
        return _chain("PREROUTING", _dedup(iter(rules)), Hook.PREROUTING)

    def is_loopback(self, b: Binding) -> bool:
        # Only IPv4: an IPv6 loopback address is never routed to the host from outside.
        return (b.nat and b.host is not None and b.family is Family.IP
                and _IPV4_LOOPBACK.contains(Family.IP, b.host.network))

    def loopback_drop(self, b: Binding) -> Rule:
        assert b.host is not None
        return _rule(Drop(), b.span, daddr=_addr(b.host), iifname=_iface("lo", True),
                     proto=Protocol(_PROTO[b.proto]), dport=PortSet.of(b.host_port))


class _ClassicExpansion(_Expansion):
    """Docker 20.10-27.x (docs/docker.md, "Layouts"): per-bridge rules in FORWARD itself."""

    def tables(self) -> list[Table]:
        return [self.table(TableKind.NAT, [*self.nat_jumps(), self.postrouting(),
                                           self.nat_docker()]),
                self.table(TableKind.FILTER, self.filter())]

    def filter(self) -> list[Chain]:
        # 20.10-22.x create DOCKER-USER in iptables only (moby#44825 added it for IPv6).
        user = self.family is Family.IP or self.profile.ip6_docker_user
        forward = [*([_rule(Jump(DOCKER_USER))] if user else []),
                   _rule(Jump("DOCKER-ISOLATION-STAGE-1"))]
        stage1: list[Rule] = []
        stage2: list[Rule] = []
        for network in reversed(self.host.networks):  # each new network's rules go on top
            bridge = network.bridge
            if network.subnet(self.family) is None:
                # The isolation pair is per daemon family, not per network: an IPv4-only
                # network gets it in ip6tables too (seen on 20.10).
                if not network.internal and network.subnets:
                    stage1.append(self.isolation_jump(network))
                    stage2.append(_rule(Drop(), network.span, oifname=_iface(bridge)))
                continue
            if network.internal:
                stage1 += self.internal_drops(network)
                if network.icc:
                    forward.append(self.icc(network, Accept()))
                continue
            forward += [_rule(Accept(), network.span, oifname=_iface(bridge),
                              ct_state=_CT_REPLY),
                        _rule(Jump("DOCKER"), network.span, oifname=_iface(bridge)),
                        _rule(Accept(), network.span, iifname=_iface(bridge),
                              oifname=_iface(bridge, True))]
            if network.icc:
                forward.append(self.icc(network, Accept()))
            stage1.append(self.isolation_jump(network))
            stage2.append(_rule(Drop(), network.span, oifname=_iface(bridge)))
        forward += [self.icc(n, Drop()) for n in self.networks if not n.icc]
        docker = _dedup(self.open_port(b) for b in self.bindings)
        return [_chain("FORWARD", forward, Hook.FORWARD, self.forward_policy()),
                _chain("DOCKER", docker),
                _chain("DOCKER-ISOLATION-STAGE-1", [*stage1, _rule(Return())]),
                # Unreferenced without a bridge of this family: left empty, since nft refuses
                # a chain with rules that nothing reaches (dockerd writes the lone RETURN).
                _chain("DOCKER-ISOLATION-STAGE-2", [*stage2, _rule(Return())] if stage2 else []),
                *([_chain(DOCKER_USER, [_rule(Return())])] if user else [])]

    @staticmethod
    def isolation_jump(network: Network) -> Rule:
        return _rule(Jump("DOCKER-ISOLATION-STAGE-2"), network.span,
                     iifname=_iface(network.bridge), oifname=_iface(network.bridge, True))

    def postrouting(self) -> Chain:
        rules = [r for n in reversed(self.external) for r in self.postrouting_network(n)]
        # Classic adds the own-port masquerade whether or not the proxy is on.
        rules += _dedup(self.own_port_masquerade(b) for b in self.bindings if b.nat)
        return _chain("POSTROUTING", rules, Hook.POSTROUTING)

    def nat_docker(self) -> Chain:
        rules = []
        if self.proxy:
            rules = [_rule(Return(), n.span, iifname=_iface(n.bridge))
                     for n in reversed(self.external) if self.mode(n) is GatewayMode.NAT]
        rules += [self.dnat(b, link_local=False) for b in self.bindings if b.nat]
        return _chain("DOCKER", rules)


class _NftExpansion(_CurrentExpansion):
    """Docker 29 --firewall-backend=nftables (moby's nftablesdoc): table docker-bridges with
    four chains per bridge, entered through interface verdict maps. rulec adds a DOCKER-USER
    chain, jumped to first from filter-FORWARD, so an operator's DOCKER-USER rules act as they
    do with iptables (dockerd's nftables backend has none). Base chains are named
    `<table>-<HOOK>` by the nft printer because the table has a name."""

    def tables(self) -> list[Table]:
        return [self.table(TableKind.FILTER, self.filter_nft(), NFT_TABLE),
                self.table(TableKind.NAT, self.nat_nft(), NFT_TABLE),
                self.table(TableKind.RAW, [self.raw_nft()], NFT_TABLE)]

    @staticmethod
    def _name(purpose: str, network: Network) -> str:
        return f"{purpose}__{network.bridge}"

    def _vmap(self, key: MapKey, purpose: str) -> list[Rule]:
        entries = tuple((_iface(n.bridge), Jump(self._name(purpose, n))) for n in self.networks)
        return [_rule(Vmap.on(key, entries), self.host.span)] if entries else []

    def filter_nft(self) -> list[Chain]:
        forward = [_rule(Jump(DOCKER_USER)),
                   *self._vmap(MapKey.OIFNAME, "filter-forward-in"),
                   *self._vmap(MapKey.IIFNAME, "filter-forward-out")]
        chains = [_chain("FORWARD", forward, Hook.FORWARD), _chain(DOCKER_USER, [])]
        for network in self.networks:
            chains += [_chain(self._name("filter-forward-in", network), self.forward_in(network)),
                       _chain(self._name("filter-forward-out", network),
                              self.forward_out(network))]
        return chains

    def forward_in(self, network: Network) -> list[Rule]:
        span, bridge = network.span, network.bridge
        icc: Action = Accept() if network.icc else Drop()
        rules = [_rule(Accept(), span, counter=True, ct_state=_CT_REPLY)]
        if network.internal:
            return [*rules, _rule(Drop(), span, counter=True, comment="INTERNAL NETWORK INGRESS",
                                  iifname=_iface(bridge, True)),
                    _rule(icc, span, counter=True, comment="ICC")]
        mode = self.mode(network)
        if mode is GatewayMode.ROUTED:
            rules.append(_rule(Accept(), span, counter=True, comment="ICMP",
                               proto=Protocol(_ICMP[self.family])))
        rules.append(_rule(icc, span, counter=True, comment="ICC", iifname=_iface(bridge)))
        if mode is not GatewayMode.NAT_UNPROTECTED:
            rules += _dedup(
                _rule(Accept(), b.span, counter=True, daddr=_addr(b.address),
                      proto=Protocol(_PROTO[b.proto]), dport=PortSet.of(b.port))
                for b in self.bindings if b.network is network)
            rules.append(_rule(Drop(), span, counter=True, comment="UNPUBLISHED PORT DROP"))
        else:
            rules.append(_rule(Accept(), span, counter=True, comment="UNPROTECTED"))
        return rules

    def forward_out(self, network: Network) -> list[Rule]:
        span = network.span
        rules = [_rule(Accept(), span, counter=True, ct_state=_CT_REPLY)]
        if network.internal:
            return [*rules, _rule(Drop(), span, counter=True, comment="INTERNAL NETWORK EGRESS",
                                  oifname=_iface(network.bridge, True))]
        return [*rules, _rule(Accept(), span, counter=True, comment="OUTGOING")]

    def nat_nft(self) -> list[Chain]:
        jump = Jump("nat-prerouting-and-output")
        skip_loopback = _addr(_LOOPBACK[self.family], True) if self.proxy else None
        chains = [
            _chain("PREROUTING", [_rule(jump, counter=True, dst_type=_LOCAL)], Hook.PREROUTING),
            _chain("OUTPUT", [_rule(jump, counter=True, daddr=skip_loopback, dst_type=_LOCAL)],
                   Hook.OUTPUT),
            _chain("POSTROUTING", [*self._vmap(MapKey.IIFNAME, "nat-postrouting-out"),
                                   *self._vmap(MapKey.OIFNAME, "nat-postrouting-in")],
                   Hook.POSTROUTING),
            _chain("nat-prerouting-and-output",
                   [self.with_nft_extras(self.dnat(b, link_local=True), "DNAT")
                    for b in self.bindings if b.nat]),
        ]
        for network in self.networks:
            chains += [_chain(self._name("nat-postrouting-in", network),
                              self.postrouting_in(network)),
                       _chain(self._name("nat-postrouting-out", network),
                              self.postrouting_out(network))]
        return chains

    @staticmethod
    def with_nft_extras(rule: Rule, comment: str) -> Rule:
        return Rule(match=rule.match, action=rule.action, statements=(Counter(),),
                    comment=comment, span=rule.span)

    def snat_word(self, network: Network) -> str:
        return "MASQUERADE" if network.snat_address(self.family) is None else "SNAT"

    def postrouting_in(self, network: Network) -> list[Rule]:
        if network.internal or self.proxy:
            return []
        rules = [_rule(self.nat_action(network), network.span, counter=True,
                       comment=f"{self.snat_word(network)} FROM HOST", src_type=_LOCAL)]
        rules += _dedup(self.with_nft_extras(self.own_port_masquerade(b), "MASQ TO OWN PORT")
                        for b in self.bindings if b.network is network and b.nat)
        return rules

    def postrouting_out(self, network: Network) -> list[Rule]:
        if (network.internal or not network.masquerade
                or self.mode(network) is GatewayMode.ROUTED):
            return []
        return [_rule(self.nat_action(network), network.span, counter=True,
                      comment=self.snat_word(network), saddr=_addr(self.subnet(network)),
                      oifname=_iface(network.bridge, True))]

    def raw_nft(self) -> Chain:
        # Two rule groups: every direct-access drop, then the remote-loopback drops.
        current = self.raw().rules
        direct = [self.with_nft_extras(r, "DROP DIRECT ACCESS") for r in current
                  if r.match.dport is None]
        loopback = [self.with_nft_extras(r, "DROP REMOTE LOOPBACK") for r in current
                    if r.match.dport is not None]
        return _chain("PREROUTING", [*direct, *loopback], Hook.PREROUTING)
