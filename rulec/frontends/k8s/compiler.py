"""NetworkPolicy + inventory -> IR: a node that routes between pods, filtering in FORWARD.

    FORWARD          ct state established,related accept            (S4: replies)
                     ip saddr vmap { <pod A> : goto pod-<A>-eg }    (pods isolated for egress)
                     goto k8s-ingress
    pod-<A>-eg       jump pol-<P>-eg  (each policy selecting A)     then drop
    pol-<P>-eg       ip daddr @<P>_eg<i>_ip [proto dport] goto k8s-ingress   (on to S3)
    k8s-ingress      ip daddr vmap { <pod B> : goto pod-<B>-in }    (pods isolated for ingress)
                     accept
    pod-<B>-in       jump pol-<Q>-in  (each policy selecting B)     then drop
    pol-<Q>-in       ip saddr @<Q>_in<i>_ip [proto dport] accept

As Calico and kube-router do: a policy chain is shared by every pod the policy selects, and a
rule's peers are one address set (a named set in nft; the iptables backend splits it), so the
rule count grows with policies and their rules, not with pods x peers. Pods are found by
address, never by interface (the inventory names none).
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from rulec.diagnostics import Diagnostic, warning
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
    MapKey,
    Match,
    Rule,
    Ruleset,
    Table,
    TableKind,
    Vmap,
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
MAX_SET_BASE = 40  # of a set name's 64 characters, for `<ns>_<name>`; the rest says what
INGRESS, EGRESS = "Ingress", "Egress"
FAMILIES = (Family.IP, Family.IP6)


def effective_types(policy: Policy) -> tuple[str, ...]:
    """S6: policyTypes as written, else Ingress plus Egress if there is an egress rule."""
    if policy.policy_types:
        return policy.policy_types
    return (INGRESS, EGRESS) if policy.egress else (INGRESS,)


# --------------------------------------------------------------------------------------------
# Addresses


def subtract(block: IPBlock) -> tuple[Prefix, ...]:
    """cidr minus every except, as the fewest disjoint prefixes, sorted (S12).

    One sort and one sweep: the excepts, nested or overlapping or not, are visited by first
    address, and each stretch of the cidr that no except covers becomes its prefixes."""
    cidr = block.cidr
    family = cidr.family
    pieces: list[Prefix] = []
    low = cidr.first  # the first address not yet covered or emitted
    for first, last in sorted((c.first, c.last) for c in block.excepts if c.family is family):
        first, last = max(first, cidr.first), min(last, cidr.last)
        if first > low:
            pieces.extend(_prefixes_between(family, low, first - 1))
        low = max(low, last + 1)
    if low <= cidr.last:
        pieces.extend(_prefixes_between(family, low, cidr.last))
    return tuple(pieces)


def collapse(prefixes: Iterable[Prefix]) -> tuple[Prefix, ...]:
    """The fewest prefixes covering the same addresses, sorted: contained ones go, adjacent
    ones join. (Canonical here, so the optimiser finds nothing to rewrite and set names stay.)"""
    ranges: dict[Family, list[tuple[int, int]]] = {Family.IP: [], Family.IP6: []}
    for p in prefixes:
        host_bits = (32 if p.family is Family.IP else 128) - p.length
        ranges[p.family].append((p.network, p.network | ((1 << host_bits) - 1)))
    out: list[Prefix] = []
    for family in FAMILIES:
        merged: list[list[int]] = []
        for low, high in sorted(ranges[family]):
            if merged and low <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], high)
            else:
                merged.append([low, high])
        for low, high in merged:
            out.extend(_prefixes_between(family, low, high))
    return tuple(out)


def _prefixes_between(family: Family, low: int, high: int) -> Iterable[Prefix]:
    bits = family.bits
    while low <= high:
        aligned = (low & -low).bit_length() - 1 if low else bits  # trailing zero bits
        size = min(aligned, (high - low + 1).bit_length() - 1)
        yield Prefix(family, low, bits - size)
        low += 1 << size


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


class SetNames:
    """Set names `<ns>_<name>` (+ what), unique per table: nft names allow only [A-Za-z0-9_],
    so `x/a-b` and `x/a.b` would meet; the later policy (in sorted order) gets a digest."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}

    def base(self, key: str) -> str:
        readable = re.sub(r"[^a-z0-9]", "_", key.replace("/", "_", 1))
        if len(readable) <= MAX_SET_BASE and self.owner.setdefault(readable, key) == key:
            return readable
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        return f"{readable[:MAX_SET_BASE - 11]}_{digest}"


# --------------------------------------------------------------------------------------------
# The cluster, indexed


@dataclass
class Index:
    inventory: Inventory

    def __post_init__(self) -> None:
        self.ns_labels = {ns.name: ns.label_map for ns in self.inventory.namespaces}
        self.by_namespace: dict[str, list[Pod]] = defaultdict(list)
        for pod in self.inventory.pods:
            self.by_namespace[pod.namespace].append(pod)
        self.pod_labels = {pod.key: pod.label_map for pod in self.inventory.pods}
        self.by_address = {a: pod for pod in self.inventory.pods for a in pod.addresses}

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
        return [pod for ns in namespaces for pod in self.by_namespace.get(ns, ())
                if peer.pod_selector is None or peer.pod_selector.matches(self.pod_labels[pod.key])]

    def pods_within(self, prefixes: tuple[Prefix, ...] | None) -> list[tuple[Pod, tuple[Prefix,
                                                                                     ...]]]:
        """Every pod with an address in `prefixes` (collapsed, so sorted and disjoint; None:
        anywhere), with those addresses."""
        if prefixes is None:
            return [(pod, pod.addresses) for pod in self.inventory.pods]
        firsts = [(p.family.bits, p.first) for p in prefixes]
        found = []
        for pod in self.inventory.pods:
            inside = []
            for a in pod.addresses:
                # The last prefix starting at or before `a` is the only one that can hold it.
                i = bisect.bisect_right(firsts, (a.family.bits, a.network)) - 1
                if i >= 0 and prefixes[i].contains(a.family, a.network):
                    inside.append(a)
            if inside:
                found.append((pod, tuple(inside)))
        return found


def resolve_peers(index: Index, policy: Policy, rule: PolicyRule) -> tuple[Prefix, ...] | None:
    """Where a rule's peers are: None for anywhere (S8), else collapsed prefixes (S9, S12)."""
    if rule.peers is None:
        return None
    if len(rule.peers) == 1 and rule.peers[0].ip_block is not None:
        return subtract(rule.peers[0].ip_block)  # collapsed already
    found: list[Prefix] = []
    for peer in rule.peers:
        if peer.ip_block is not None:
            found.extend(subtract(peer.ip_block))
        else:
            found.extend(a for pod in index.peer_pods(policy, peer) for a in pod.addresses)
    return collapse(found)


# --------------------------------------------------------------------------------------------
# Ports


@dataclass(frozen=True, slots=True)
class PortMatch:
    """One way a rule's ports can match: a protocol (None: any) and ports (None: any), and for
    named ports the addresses of the receiving pods the numbers hold for (None: any)."""

    protocol: int | None
    ports: tuple[tuple[int, int], ...] | None
    receivers: tuple[Prefix, ...] | None = None


Receivers = Sequence[tuple[Pod, tuple[Prefix, ...]]]


def port_matches(entries: Sequence[PortEntry] | None, receivers: Receivers) -> list[PortMatch]:
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
        groups: dict[tuple[int, ...], list[Prefix]] = defaultdict(list)
        for pod, addresses in receivers:
            served = served_ports(pod, names, protocol)
            if served:
                groups[served].extend(addresses)
        for served in sorted(groups):
            out.append(PortMatch(number, tuple((p, p) for p in served), collapse(groups[served])))
    return out


def served_ports(pod: Pod, names: Collection[str], protocol: str) -> tuple[int, ...]:
    """S15: the container ports of `pod` a named port means, by name and protocol."""
    return tuple(sorted({cp.port for cp in pod.ports
                         if cp.name in names and cp.protocol == protocol}))


def _has_names(entries: Sequence[PortEntry] | None) -> bool:
    return entries is not None and any(isinstance(e.port, str) for e in entries)


def receivers_of(index: Index, rule: PolicyRule, peers: tuple[Prefix, ...] | None,
                 selected: list[Pod], ingress: bool) -> Receivers:
    """The pods a named port of `rule` is looked up in (S15): the selected pods for ingress,
    the peer pods for egress (with the addresses of each that count)."""
    if not _has_names(rule.ports):
        return ()  # only named ports care which pod receives
    return [(pod, pod.addresses) for pod in selected] if ingress else index.pods_within(peers)


def named_port_warnings(inventory: Inventory, policies: Sequence[Policy]) -> list[Diagnostic]:
    """W0603: a named port that no pod the rule applies to declares, with the entry's
    protocol, matches nothing (S15). It is almost always a typo, so say which names exist."""
    index = Index(inventory)
    found = []
    for policy in sorted(policies, key=lambda p: (p.namespace, p.name)):
        selected = index.selected(policy)
        if not selected:
            continue  # S5: the policy does nothing at all
        for direction in effective_types(policy):
            ingress = direction == INGRESS
            for rule in policy.ingress if ingress else policy.egress:
                if not _has_names(rule.ports):
                    continue
                peers = None if ingress else resolve_peers(index, policy, rule)
                if peers is not None and not peers:
                    continue  # the peers select nothing: no port could matter
                pods = [pod for pod, _ in receivers_of(index, rule, peers, selected, ingress)]
                for entry in rule.ports or ():
                    if isinstance(entry.port, str) and not any(
                            served_ports(pod, (entry.port,), entry.protocol) for pod in pods):
                        found.append(_unserved(policy, entry, entry.port, pods, ingress))
    return found


def _unserved(policy: Policy, entry: PortEntry, name: str, pods: Sequence[Pod],
              ingress: bool) -> Diagnostic:
    who = "selected" if ingress else "peer"
    declared = sorted({(cp.name, cp.protocol) for pod in pods for cp in pod.ports if cp.name})
    notes = []
    same = sorted({n for n, proto in declared if proto == entry.protocol})
    close = difflib.get_close_matches(name, same, n=1)
    if close:
        notes.append(f"did you mean {close[0]}?")
    other = sorted({proto for n, proto in declared if n == name})
    if other:
        notes.append(f"{name!r} is declared for {', '.join(other)}; this entry's protocol is "
                     f"{entry.protocol}")
    if not pods:
        notes.append("the rule's peers hold no pod, and a named port matches only pods")
    else:
        names = ", ".join(f"{n} ({proto})" for n, proto in declared)
        notes.append(f"the {who} pods declare {names or 'no named ports'}")
    return warning("W0603", f"{policy.key}: {entry.path}.port: no {who} pod declares a "
                   f"{entry.protocol} port named {name!r}, so this entry allows nothing",
                   entry.port_span or entry.span, *notes)


# --------------------------------------------------------------------------------------------
# Rules


def _family_sets(prefixes: tuple[Prefix, ...] | None, name: str) -> dict[Family, AddressSet | None]:
    """Per family, the named set of `prefixes` in it (None: any address); a family without
    prefixes is left out, so that no rule of it is made."""
    if prefixes is None:
        return {family: None for family in FAMILIES}
    sets: dict[Family, AddressSet | None] = {}
    for family in FAMILIES:
        mine = tuple(p for p in prefixes if p.family is family)
        if mine:
            sets[family] = AddressSet(mine, name=f"{name}_{family.value}")
    return sets


def _rules_for(saddr: dict[Family, AddressSet | None], daddr: dict[Family, AddressSet | None],
               pm: PortMatch, action: Accept | Goto, rule: PolicyRule, text: str) -> list[Rule]:
    """The rule, once per address family it has addresses in (so that no rule pairs an IPv4
    source with an IPv6 destination, and every set is of one family); once in all if it tests
    no address."""
    proto = Protocol(pm.protocol) if pm.protocol is not None else None
    dport = PortSet(pm.ports) if pm.ports is not None else None
    families = [f for f in FAMILIES if f in saddr and f in daddr]
    if not families:
        return []  # e.g. IPv6-only peers for IPv4-only receivers: no packet can match
    if all(saddr[f] is None and daddr[f] is None for f in families):
        return [Rule(match=Match(proto=proto, dport=dport), action=action,
                     comment=comment(text), span=rule.span)]  # one rule for both families
    # The family is explicit, so no pass joins the two rules back into one mixed (and
    # unnamed) set; nft prints nothing for it, as `ip saddr` implies it.
    return [Rule(match=Match(family=f, proto=proto, dport=dport, saddr=saddr[f],
                             daddr=daddr[f]),
                 action=action, comment=comment(text), span=rule.span) for f in families]


def _policy_rules(index: Index, names: SetNames, policy: Policy, direction: str,
                  selected: list[Pod]) -> list[Rule]:
    rules: list[Rule] = []
    ingress = direction == INGRESS
    source = policy.ingress if ingress else policy.egress
    label, short = ("ingress", "in") if ingress else ("egress", "eg")
    base = names.base(policy.key)
    for rule in source:
        text = f"{policy.key} {label}[{rule.index}]"
        peers = resolve_peers(index, policy, rule)
        if peers is not None and not peers:
            continue  # the peers select nothing: the rule allows nothing
        receivers = receivers_of(index, rule, peers, selected, ingress)
        set_name = f"{base}_{short}{rule.index}"
        peer_sets = _family_sets(peers, set_name)
        anywhere = _family_sets(None, set_name)
        for i, pm in enumerate(port_matches(rule.ports, receivers)):
            # Named ports: the receivers serving the name, as a set of its own ...
            to = (anywhere if pm.receivers is None
                  else _family_sets(pm.receivers, f"{set_name}_named{i}"))
            if ingress:
                rules.extend(_rules_for(peer_sets, to, pm, Accept(), rule, text))
            else:  # ... and for egress they are peers already (pods_within).
                daddr = peer_sets if pm.receivers is None else to
                rules.extend(_rules_for(anywhere, daddr, pm, Goto(INGRESS_CHAIN), rule, text))
    return rules


def _dispatch(pods: Sequence[tuple[Pod, str]], key: MapKey, text: str) -> list[Rule]:
    """`<key> vmap { <pod address> : goto <chain> }`, one rule per family."""
    rules = []
    for family in FAMILIES:
        entries = tuple((AddressSet((a,)), Goto(chain)) for pod, chain in pods
                        for a in pod.addresses if a.family is family)
        if entries:
            rules.append(Rule(action=Vmap.on(key, entries), comment=text))
    return rules


def compile_cluster(inventory: Inventory, policies: Sequence[Policy]) -> Ruleset:
    """The node's filter table (inet: both families) for `policies` over `inventory`."""
    index = Index(inventory)
    names = SetNames()
    ordered = sorted(policies, key=lambda p: (p.namespace, p.name))
    # pod key -> direction -> policies isolating it (S1), in policy order.
    isolating: dict[str, dict[str, list[Policy]]] = defaultdict(lambda: defaultdict(list))
    policy_chains: list[Chain] = []
    chain_of: dict[tuple[str, str], str] = {}
    for policy in ordered:
        selected = index.selected(policy)
        if not selected:
            continue  # S5: selects nothing, so it does nothing
        for direction in (EGRESS, INGRESS):
            if direction not in effective_types(policy):
                continue
            for pod in selected:
                isolating[pod.key][direction].append(policy)
            rules = _policy_rules(index, names, policy, direction, selected)
            if rules:  # S7: no rules, nothing allowed: the pod chains' drop does it
                name = chain_name("pol", policy.key, "in" if direction == INGRESS else "eg")
                chain_of[(policy.key, direction)] = name
                policy_chains.append(Chain(name=name, rules=tuple(rules), span=policy.span))

    dispatch: dict[str, list[tuple[Pod, str]]] = {EGRESS: [], INGRESS: []}
    pod_chains: list[Chain] = []
    for pod in inventory.pods:
        for direction in (EGRESS, INGRESS):
            owners = isolating.get(pod.key, {}).get(direction)
            if not owners:
                continue
            label = "ingress" if direction == INGRESS else "egress"
            name = chain_name("pod", pod.key, "in" if direction == INGRESS else "eg")
            # S2: the union of the policies' allows; S1: what none allows is dropped.
            body = [Rule(action=Jump(chain_of[(p.key, direction)]),
                         comment=comment(f"{pod.key} {label}: {p.key}"), span=p.span)
                    for p in owners if (p.key, direction) in chain_of]
            isolated_by = ", ".join(p.key for p in owners)
            body.append(Rule(action=Drop(), span=pod.span, comment=comment(
                f"{pod.key} isolated for {label} by {isolated_by}")))
            pod_chains.append(Chain(name=name, rules=tuple(body), span=pod.span))
            dispatch[direction].append((pod, name))

    chains: list[Chain] = []
    forward: list[Rule] = []
    if pod_chains:
        established = Match(ct_state=CtStates(frozenset({CtState.ESTABLISHED, CtState.RELATED})))
        # S3: the source's egress side first; its allows go on to the destination's ingress.
        forward = [Rule(match=established, action=Accept(),
                        comment="replies of allowed connections"),
                   *_dispatch(dispatch[EGRESS], MapKey.SADDR, "pods isolated for egress"),
                   Rule(action=Goto(INGRESS_CHAIN), comment="on to the ingress side")]
        ingress = [*_dispatch(dispatch[INGRESS], MapKey.DADDR, "pods isolated for ingress"),
                   Rule(action=Accept(), comment="allowed by both sides")]
        chains = [Chain(name=INGRESS_CHAIN, rules=tuple(ingress)), *pod_chains, *policy_chains]
    base = Chain(name=Hook.FORWARD.value, hook=Hook.FORWARD, rules=tuple(forward))
    table = Table(kind=TableKind.FILTER, family=Family.INET, chains=(base, *chains))
    return Ruleset(tables=(table,))


__all__ = ["Index", "PortMatch", "SetNames", "chain_name", "collapse", "compile_cluster",
           "effective_types", "named_port_warnings", "port_matches", "resolve_peers",
           "served_ports", "subtract"]
