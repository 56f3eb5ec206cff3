"""The 3x3 model as real network namespaces: nine pods, each with its own veth to a node
namespace that routes between them (pod N is 198.18.N.2/24, the node 198.18.N.1 on that link),
every pod serving TCP and UDP on 80 and 81. The node's rules know pods by address only.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from rulec.kernel import Namespace, veth_pair
from tests.k8s.model3x3 import MODEL_PODS, PROBES, ModelPod
from tests.kernel.probe import AGENT, PYTHON, Attempt, _await_ready, _stop, attempts

PORTS = sorted({port for _, port in PROBES})

# (source pod key, destination pod key, protocol, port)
Pair = tuple[str, str, str, int]


@dataclass(frozen=True)
class PodNet:
    node: Namespace
    pods: dict[str, Namespace]  # pod key -> its namespace

    def reset(self) -> None:
        """Forget the last case: no rules of any loader, no connections in conntrack."""
        self.node.run(["nft", "flush", "ruleset"])
        for tool in ("iptables-legacy", "ip6tables-legacy"):
            self.node.run([tool, "-w", "10", "-F"], check=False)
            self.node.run([tool, "-w", "10", "-X"], check=False)
        self.node.run(["conntrack", "-F"], check=False)

    def probe_all(self, pods: Sequence[ModelPod] = MODEL_PODS) -> dict[Pair, bool]:
        """Every ordered pair of distinct pods on every (protocol, port), all at once: one
        client process per source pod, one thread per attempt."""
        def from_pod(src: ModelPod) -> dict[Pair, bool]:
            tries = [(dst, protocol, port) for dst in pods if dst is not src
                     for protocol, port in PROBES]
            outcomes = attempts(self.pods[src.key], [Attempt(dst.ip, port, protocol.lower())
                                                     for dst, protocol, port in tries])
            # Connected and answered by the pod it was meant for.
            return {(src.key, dst.key, protocol, port): o.connected and o.peer == src.ip
                    for (dst, protocol, port), o in zip(tries, outcomes, strict=True)}

        with ThreadPoolExecutor(max_workers=len(pods)) as pool:
            return dict(itertools.chain.from_iterable(
                r.items() for r in pool.map(from_pod, pods)))


@contextmanager
def pod_network(pods: Sequence[ModelPod] = MODEL_PODS) -> Iterator[PodNet]:
    """The node and its pods with their servers running; everything deleted on exit."""
    created: list[Namespace] = []
    servers: list[subprocess.Popen[str]] = []
    try:
        node = Namespace("k8snode")
        created.append(node)
        net = PodNet(node, {})
        for pod in pods:
            ns = Namespace(f"k8s{pod.index}")
            created.append(ns)
            net.pods[pod.key] = ns
            link = f"pod{pod.index}"
            veth_pair(node, link, ns, "eth0")
            node.add_address(link, f"{pod.node_ip}/24")
            node.link_up(link)
            ns.add_address("eth0", f"{pod.ip}/24")
            ns.link_up("eth0")
            ns.add_route("default", pod.node_ip)
        node.sysctl("net.ipv4.ip_forward", "1")
        for pod in pods:
            for protocol in ("tcp", "udp"):
                servers.append(net.pods[pod.key].popen(
                    [*PYTHON, AGENT, "serve", protocol, *map(str, PORTS)]))
        for proc in servers:
            _await_ready(proc)
        yield net
    finally:
        for proc in servers:
            _stop(proc)
        for ns in created:
            ns.delete()


def tools_missing() -> str | None:
    for tool in ("nft", "conntrack", "iptables-legacy"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not on PATH"
    return None
