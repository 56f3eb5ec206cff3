"""NetworkPolicy + inventory -> IR: a node that routes between pods, filtering in FORWARD.

    FORWARD          ct state established,related accept            (S4: replies)
                     saddr <pod A> goto pod-<A>-eg                  (A isolated for egress)
                     goto k8s-ingress
    pod-<A>-eg       jump pol-<P>-eg  (each policy selecting A)     then drop
    pol-<P>-eg       daddr <peers> [proto dport] goto k8s-ingress   (egress allows: on to S3)
    k8s-ingress      daddr <pod B> goto pod-<B>-in                  (B isolated for ingress)
                     accept
    pod-<B>-in       jump pol-<Q>-in  (each policy selecting B)     then drop
    pol-<Q>-in       saddr <peers> [proto dport] accept

Policy chains are shared by every pod a policy selects and match peers as address sets, so the
rule count grows with policies and their rules, not with pods x peers.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rulec.diagnostics import Span
from rulec.frontends.k8s.model import (
    Inventory,
    IPBlock,
    Peer,
    Pod,
    Policy,
    PolicyRule,
    PortEntry,
)
from rulec.ir.nodes import (
    Accept,
    Chain,
    Drop,
    Goto,
    Hook,
    Jump,
    Match,
    Rule,
    Ruleset,
    Table,
    TableKind,
)
from rulec.ir.values import (
    AddressSet,
    CtState,
    CtStates,
    Family,
    PortSet,
    Prefix,
    Protocol,
)

PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}
INGRESS_CHAIN = "k8s-ingress"
MAX_CHAIN_NAME = 28  # iptables' limit, the tightest of the targets
MAX_COMMENT = 128  # nft's limit in bytes; names are ASCII
INGRESS, EGRESS = "Ingress", "Egress"


def effective_types(policy: Policy) -> tuple[str, ...]:
    """S6: policyTypes as written, else Ingress plus Egress if there is an egress rule."""
    if policy.policy_types is not None:
        return policy.policy_types
    return (INGRESS, EGRESS) if policy.egress else (INGRESS,)


# --------------------------------------------------------------------------------------------
# Addresses


def subtract(block: IPBlock) -> tuple[Prefix, ...]:
    """cidr minus every except, as disjoint prefixes (S12)."""
    pieces = [block.cidr]
    for cut in block.excepts:
        kept: list[Prefix] = []
        for piece in pieces:
            kept.extend(_minus(piece, cut))
        pieces = kept
    return tuple(pieces)


def _minus(piece: Prefix, cut: Prefix) -> list[Prefix]:
    if cut.family is not piece.family or cut.last < piece.first or piece.last < cut.first:
        return [piece]
    if cut.first <= piece.first and piece.last <= cut.last:
        return []
    # cut lies strictly inside piece: keep the half without it, split the other.
    length = piece.length + 1
    half = 1 << (piece.family.bits - length)
    low, high = Prefix(piece.family, piece.network, length), Prefix(
        piece.family, piece.network + half, length)
    inside, outside = (low, high) if cut.first <= low.last else (high, low)
    return sorted([outside, *_minus(inside, cut)], key=lambda p: p.sort_key)


def disjoint(prefixes: Iterable[Prefix]) -> tuple[Prefix, ...]:
    """Sorted, with every prefix covered by another removed (nft refuses overlapping
    intervals in one set)."""
    kept: list[Prefix] = []
    for prefix in sorted(set(prefixes), key=lambda p: p.sort_key):
        last = kept[-1] if kept else None
        if last is None or not (last.family is prefix.family and last.first <= prefix.first
                                and prefix.last <= last.last):
            kept.append(prefix)
    return tuple(kept)


def _inside(address: Prefix, prefixes: Iterable[Prefix]) -> bool:
    return any(p.contains(address.family, address.network) for p in prefixes)


# --------------------------------------------------------------------------------------------
# Names and comments


def _short(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    keep = limit - len(digest) - 2
    return f"{text[:keep]}~{digest}"


def chain_name(kind: str, key: str, suffix: str) -> str:
    """`pol-<ns>.<name>-in`, or with a digest of the name when that is too long. Namespaces have
    no dots, so the first dot separates namespace and name and no two keys share a name."""
    readable = f"{kind}-{key.replace('/', '.', 1)}-{suffix}"
    if len(readable) <= MAX_CHAIN_NAME:
        return readable
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{kind}-{digest}-{suffix}"


def comment(text: str) -> str:
    return _short(text, MAX_COMMENT)


# --------------------------------------------------------------------------------------------
# The cluster, indexed


@dataclass
class Cluster:
    inventory: Inventory

    def __post_init__(self) -> None:
        self.ns_labels = {ns.name: ns.label_map for ns in self.inventory.namespaces}
        self.by_namespace: dict[str, list[Pod]] = defaultdict(list)
        for pod in self.inventory.pods:
            self.by_namespace[pod.namespace].append(pod)
        self.pod_labels = {pod.key: pod.label_map for pod in self.inventory.pods}

    def selected(self, policy: Policy) -> list[Pod]:
        """S5: pods of the policy's namespace that its podSelector matches."""
        return [p for p in self.by_namespace.get(policy.namespace, ())
                if policy.pod_selector.matches(self.pod_labels[p.key])]

    def peer_pods(self, policy: Policy, peer: Peer) -> list[Pod]:
        """S9, S11: pods a selector peer names (AND of its two selectors)."""
        if peer.namespace_selector is None:
            namespaces = [policy.namespace]
        else:
            selector = peer.namespace_selector
            namespaces = [n for n, labels in self.ns_labels.items() if selector.matches(labels)]
        pods: list[Pod] = []
        for ns in namespaces:
            for pod in self.by_namespace.get(ns, ()):
                if peer.pod_selector is None or peer.pod_selector.matches(self.pod_labels[pod.key]):
                    pods.append(pod)
        return pods


@dataclass(frozen=True, slots=True)
class Peers:
    """Where a rule's peers are: None for any address; else disjoint prefixes."""

    prefixes: tuple[Prefix, ...] | None


def resolve_peers(cluster: Cluster, policy: Policy, rule: PolicyRule) -> Peers:
    if rule.peers is None:
        return Peers(None)
    found: list[Prefix] = []
    for peer in rule.peers:
        if peer.ip_block is not None:
            found.extend(subtract(peer.ip_block))
        else:
            found.extend(a for pod in cluster.peer_pods(policy, peer) for a in pod.addresses)
    return Peers(disjoint(found))


# --------------------------------------------------------------------------------------------
# Ports


@dataclass(frozen=True, slots=True)
class PortMatch:
    """One way a rule's ports can match: a protocol (None: any) and ports (None: any), and for
    named ports the addresses of the receiving pods the numbers hold for (None: any)."""

    protocol: int | None
    ports: tuple[tuple[int, int], ...] | None
    receivers: tuple[Prefix, ...] | None = None


def port_matches(entries: Sequence[PortEntry] | None,
                 receivers: Sequence[tuple[Pod, tuple[Prefix, ...]]]) -> list[PortMatch]:
    """S8, S13-S16. `receivers`: the pods that may receive the traffic, with the addresses of
    each that count (the selected pods for ingress, the peer pods for egress)."""
    if entries is None:
        return [PortMatch(None, None)]
    out: list[PortMatch] = []
    for protocol, number in PROTOCOL_NUMBERS.items():
        mine = [e for e in entries if e.protocol == protocol]
        if not mine:
            continue
        if any(e.port is None for e in mine):
            out.append(PortMatch(number, None))  # S13: every port of this protocol
            continue
        numeric = [(e.port, e.end_port or e.port) for e in mine if isinstance(e.port, int)]
        if numeric:
            out.append(PortMatch(number, tuple(sorted(set(numeric)))))
        names = {e.port for e in mine if isinstance(e.port, str)}
        if not names:
            continue
        # S15: a name means the receiving pod's container port of that name and protocol.
        groups: dict[tuple[int, ...], list[Prefix]] = defaultdict(list)
        for pod, addresses in receivers:
            served = tuple(sorted({cp.port for cp in pod.ports
                                   if cp.name in names and cp.protocol == protocol}))
            if served and addresses:
                groups[served].extend(addresses)
        for served in sorted(groups):
            out.append(PortMatch(number, tuple((p, p) for p in served),
                                 disjoint(groups[served])))
    return out


# --------------------------------------------------------------------------------------------
# Rules


def _address_set(prefixes: tuple[Prefix, ...] | None) -> AddressSet | None:
    return None if prefixes is None else AddressSet(prefixes)


def _rules_for(match_fields: dict[str, tuple[Prefix, ...] | None], protocol: int | None,
               ports: tuple[tuple[int, int], ...] | None, action: Accept | Goto, text: str,
               span: Span | None) -> list[Rule]:
    """The rule, once per address family when it tests both addresses, so that no rule pairs
    an IPv4 source with an IPv6 destination; nothing if an address set is empty."""
    saddr, daddr = match_fields["saddr"], match_fields["daddr"]
    if (saddr is not None and not saddr) or (daddr is not None and not daddr):
        return []
    proto = Protocol(protocol) if protocol is not None else None
    dport = PortSet(ports) if ports is not None else None
    if saddr is None or daddr is None:
        match = Match(proto=proto, dport=dport, saddr=_address_set(saddr),
                      daddr=_address_set(daddr))
        return [Rule(match=match, action=action, comment=comment(text), span=span)]
    rules = []
    for family in (Family.IP, Family.IP6):
        s = tuple(p for p in saddr if p.family is family)
        d = tuple(p for p in daddr if p.family is family)
        if s and d:
            match = Match(proto=proto, dport=dport, saddr=AddressSet(s), daddr=AddressSet(d))
            rules.append(Rule(match=match, action=action, comment=comment(text), span=span))
    return rules


def _policy_rules(cluster: Cluster, policy: Policy, direction: str,
                  selected: list[Pod]) -> list[Rule]:
    rules: list[Rule] = []
    source = policy.ingress if direction == INGRESS else policy.egress
    label = "ingress" if direction == INGRESS else "egress"
    for rule in source:
        text = f"{policy.key} {label}[{rule.index}]"
        peers = resolve_peers(cluster, policy, rule)
        if peers.prefixes is not None and not peers.prefixes:
            continue  # the peers select nothing: the rule allows nothing
        if direction == INGRESS:
            receivers = [(pod, pod.addresses) for pod in selected]
        else:  # the receiver is the peer: pods whose addresses the peers cover
            receivers = []
            for pod in cluster.inventory.pods:
                inside = pod.addresses if peers.prefixes is None else tuple(
                    a for a in pod.addresses if _inside(a, peers.prefixes))
                if inside:
                    receivers.append((pod, inside))
        for pm in port_matches(rule.ports, receivers):
            if direction == INGRESS:
                fields = {"saddr": peers.prefixes, "daddr": pm.receivers}
                action: Accept | Goto = Accept()
            else:
                daddr = peers.prefixes if pm.receivers is None else pm.receivers
                fields = {"saddr": None, "daddr": daddr}
                action = Goto(INGRESS_CHAIN)
            rules.extend(_rules_for(fields, pm.protocol, pm.ports, action, text, rule.span))
    return rules


def compile_cluster(inventory: Inventory, policies: Sequence[Policy]) -> Ruleset:
    """The node's filter table (inet: both families) for `policies` over `inventory`."""
    cluster = Cluster(inventory)
    ordered = sorted(policies, key=lambda p: (p.namespace, p.name))
    # pod key -> direction -> policies isolating it (S1), in policy order.
    isolating: dict[str, dict[str, list[Policy]]] = defaultdict(lambda: defaultdict(list))
    policy_chains: list[Chain] = []
    chain_of: dict[tuple[str, str], str] = {}
    for policy in ordered:
        selected = cluster.selected(policy)
        if not selected:
            continue  # S5: selects nothing, so it does nothing
        for direction in (EGRESS, INGRESS):
            if direction not in effective_types(policy):
                continue
            for pod in selected:
                isolating[pod.key][direction].append(policy)
            rules = _policy_rules(cluster, policy, direction, selected)
            if rules:  # S7: no rules, nothing allowed: the pod chains' drop does it
                name = chain_name("pol", policy.key, "in" if direction == INGRESS else "eg")
                chain_of[(policy.key, direction)] = name
                policy_chains.append(Chain(name=name, rules=tuple(rules), span=policy.span))

    forward: list[Rule] = []
    ingress: list[Rule] = []
    pod_chains: list[Chain] = []
    for pod in inventory.pods:
        for direction in (EGRESS, INGRESS):
            owners = isolating.get(pod.key, {}).get(direction)
            if not owners:
                continue
            suffix = "in" if direction == INGRESS else "eg"
            label = "ingress" if direction == INGRESS else "egress"
            name = chain_name("pod", pod.key, suffix)
            body = [Rule(action=Jump(chain_of[(p.key, direction)]),
                         comment=comment(f"{pod.key} {label}: {p.key}"), span=p.span)
                    for p in owners if (p.key, direction) in chain_of]
            isolated_by = ", ".join(p.key for p in owners)
            body.append(Rule(action=Drop(), span=pod.span, comment=comment(
                f"{pod.key} isolated for {label} by {isolated_by}")))
            pod_chains.append(Chain(name=name, rules=tuple(body), span=pod.span))
            addresses = AddressSet(pod.addresses)
            match = Match(daddr=addresses) if direction == INGRESS else Match(saddr=addresses)
            dispatch = Rule(match=match, action=Goto(name), span=pod.span,
                            comment=comment(f"{pod.key} {label}"))
            (ingress if direction == INGRESS else forward).append(dispatch)

    chains: list[Chain] = []
    if forward or ingress:
        established = Match(ct_state=CtStates(frozenset({CtState.ESTABLISHED, CtState.RELATED})))
        forward = [Rule(match=established, action=Accept(),
                        comment="replies of allowed connections"),
                   *forward,
                   Rule(action=Goto(INGRESS_CHAIN), comment="on to the ingress side")]
        ingress.append(Rule(action=Accept(), comment="allowed by both sides"))
        chains = [Chain(name=INGRESS_CHAIN, rules=tuple(ingress)), *pod_chains, *policy_chains]
    base = Chain(name=Hook.FORWARD.value, hook=Hook.FORWARD, rules=tuple(forward))
    table = Table(kind=TableKind.FILTER, family=Family.INET, chains=(base, *chains))
    return Ruleset(tables=(table,))
