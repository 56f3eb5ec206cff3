"""An independent, deliberately naive model of NetworkPolicy semantics (S1-S16), written from
the reference table and sharing nothing with rulec's compiler but the parsed objects: it answers
"may this connection open?" for one packet, by reading every policy afresh.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rulec.frontends.k8s.model import Inventory, Peer, Pod, Policy, PolicyRule, PortEntry, Selector
from rulec.ir.values import Family


def _selects(selector: Selector, labels: Mapping[str, str]) -> bool:
    # S10, straight from the LabelSelector reference.
    for key, value in selector.match_labels:
        if key not in labels or labels[key] != value:
            return False
    for req in selector.expressions:
        has = req.key in labels
        if req.operator == "In" and not (has and labels[req.key] in req.values):
            return False
        if req.operator == "NotIn" and has and labels[req.key] in req.values:
            return False
        if req.operator == "Exists" and not has:
            return False
        if req.operator == "DoesNotExist" and has:
            return False
    return True


def _types(policy: Policy) -> set[str]:
    # S6: defaults.go.
    if policy.policy_types is not None:
        return set(policy.policy_types)
    return {"Ingress", "Egress"} if len(policy.egress) != 0 else {"Ingress"}


class Oracle:
    def __init__(self, inventory: Inventory, policies: Sequence[Policy]) -> None:
        self.inventory = inventory
        self.policies = list(policies)
        self.ns_labels = {ns.name: dict(ns.labels) for ns in inventory.namespaces}

    def owner(self, family: Family, address: int) -> Pod | None:
        for pod in self.inventory.pods:
            for a in pod.addresses:
                if a.family is family and a.network == address:
                    return pod
        return None

    def _peer(self, policy: Policy, peer: Peer, family: Family, address: int,
              pod: Pod | None) -> bool:
        if peer.ip_block is not None:  # S12
            block = peer.ip_block
            if not block.cidr.contains(family, address):
                return False
            return not any(e.contains(family, address) for e in block.excepts)
        if pod is None:
            return False
        if peer.namespace_selector is None:  # S9
            if pod.namespace != policy.namespace:
                return False
        elif not _selects(peer.namespace_selector, self.ns_labels[pod.namespace]):
            return False
        return peer.pod_selector is None or _selects(peer.pod_selector, dict(pod.labels))

    @staticmethod
    def _port(entry: PortEntry, receiver: Pod | None, protocol: str, port: int | None) -> bool:
        if entry.protocol != protocol:  # S13 (default TCP is applied by the reader), S16
            return False
        if entry.port is None:
            return True
        if port is None:
            return False
        if isinstance(entry.port, int):  # S14
            return entry.port <= port <= (entry.end_port or entry.port)
        if receiver is None:  # S15: a name only means something on a pod
            return False
        return any(cp.name == entry.port and cp.protocol == protocol and cp.port == port
                   for cp in receiver.ports)

    def _rule(self, policy: Policy, rule: PolicyRule, family: Family, peer_address: int,
              peer_pod: Pod | None, receiver: Pod | None, protocol: str,
              port: int | None) -> bool:
        # S8: peers AND ports; missing or empty lists match everything.
        if rule.peers is not None and not any(
                self._peer(policy, p, family, peer_address, peer_pod) for p in rule.peers):
            return False
        return rule.ports is None or any(
            self._port(e, receiver, protocol, port) for e in rule.ports)

    def _side(self, pod: Pod | None, direction: str, family: Family, peer_address: int,
              peer_pod: Pod | None, receiver: Pod | None, protocol: str,
              port: int | None) -> bool:
        if pod is None:
            return True
        # S1, S5: policies of the pod's own namespace whose podSelector matches it.
        mine = [p for p in self.policies if p.namespace == pod.namespace
                and _selects(p.pod_selector, dict(pod.labels)) and direction in _types(p)]
        if not mine:
            return True
        # S2: the union of every rule of every such policy.
        for policy in mine:
            rules = policy.ingress if direction == "Ingress" else policy.egress
            for rule in rules:
                if self._rule(policy, rule, family, peer_address, peer_pod, receiver, protocol,
                              port):
                    return True
        return False

    def allows(self, family: Family, src: int, dst: int, protocol: str,
               port: int | None) -> bool:
        """S3: the source's egress AND the destination's ingress. `protocol`: TCP, UDP, SCTP or
        another name (ICMP) that only rules without ports allow."""
        src_pod, dst_pod = self.owner(family, src), self.owner(family, dst)
        egress = self._side(src_pod, "Egress", family, dst, dst_pod, dst_pod, protocol, port)
        ingress = self._side(dst_pod, "Ingress", family, src, src_pod, dst_pod, protocol, port)
        return egress and ingress
