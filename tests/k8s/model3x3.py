"""The 3-namespace x 3-pod model of upstream's netpol conformance tests: namespaces x, y, z,
pods a, b, c in each, every pod serving TCP and UDP on 80 and 81 under the upstream port names.

Pod N (1..9, x/a first) is 198.18.N.2 (and fd00:N::2 when dual stack); the node is 198.18.N.1
on the pod's own link. Extra labels give the selector cases something to test: a pods have
role=front, b pods role=back, c pods no role; namespace z is also env=prod.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from rulec.frontends import k8s
from rulec.frontends.k8s import Cluster

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
PORTS = ((80, "TCP"), (81, "TCP"), (80, "UDP"), (81, "UDP"))
PROBES = tuple((protocol, port) for port, protocol in PORTS)


@dataclass(frozen=True, slots=True)
class ModelPod:
    namespace: str
    name: str
    index: int  # 1..9

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ip(self) -> str:
        return f"198.18.{self.index}.2"

    @property
    def ip6(self) -> str:
        return f"fd00:{self.index}::2"

    @property
    def node_ip(self) -> str:
        return f"198.18.{self.index}.1"

    @property
    def node_ip6(self) -> str:
        return f"fd00:{self.index}::1"


MODEL_PODS = tuple(ModelPod(ns, pod, 1 + 3 * i + j)
                   for i, ns in enumerate(NAMESPACES) for j, pod in enumerate(PODS))


def inventory_yaml(*, dual_stack: bool = False) -> str:
    namespaces = []
    for ns in NAMESPACES:
        labels = {"ns": ns, "kubernetes.io/metadata.name": ns}
        if ns == "z":
            labels["env"] = "prod"
        namespaces.append({"name": ns, "labels": labels})
    pods = []
    for pod in MODEL_PODS:
        labels = {"pod": pod.name}
        role = {"a": "front", "b": "back"}.get(pod.name)
        if role:
            labels["role"] = role
        entry: dict[str, object] = {"name": pod.name, "namespace": pod.namespace,
                                    "labels": labels}
        if dual_stack:
            entry["ips"] = [pod.ip, pod.ip6]
        else:
            entry["ip"] = pod.ip
        entry["ports"] = [{"name": f"serve-{port}-{protocol.lower()}", "port": port,
                           "protocol": protocol} for port, protocol in PORTS]
        pods.append(entry)
    return yaml.safe_dump({"namespaces": namespaces, "pods": pods}, sort_keys=False)


def load(policies: str, *, dual_stack: bool = False) -> Cluster:
    return k8s.load_texts(("cluster.yaml", inventory_yaml(dual_stack=dual_stack)),
                          [("policy.yaml", policies)] if policies.strip() else [])
