"""NetworkPolicy at cluster scale: compile time and kernel rule count, iptables and nft.

    python benchmarks/netpol_scale.py [--scales 0.25,0.5,1,4p] [--repeat 1]
    python benchmarks/netpol_scale.py --excepts 100,1000,10000,100000 [--repeat 5]

Scale 1 is 1,000 pods in 200 namespaces under 500 policies (selectors of every kind,
matchExpressions, ipBlocks with excepts, named ports, port ranges, egress and default-deny
policies); 0.5 halves all three; `4p` keeps the 500 policies and has 4x the pods. Printed
per size: seconds to read the YAML, to build the IR, and to optimise and emit per target; the
rules the kernel would hold (rulec.backends.stats.kernel_rule_counts); and "peer pairs", the
sum over policy rules of selected pods x peer prefixes (pod addresses, ipBlock pieces), which
is what a compiler writing one rule per (pod, peer) would emit. The nft rule count follows
the policies (plus one chain per isolated pod); iptables has no sets, so its count also
follows the peer prefixes of each policy rule (still not pods x peers).

`--excepts` times one ipBlock, 10.0.0.0/8, with N random /32 excepts: the subtraction alone
(compiler.subtract), the whole IR (reading the YAML, validating, resolving the peers, building
the rules) and, up to 10,000 excepts, the whole compile to nft. Medians of --repeat runs, and
how much each grows per 10x more excepts (10 would be linear; the prefixes left grow ~7x).
"""

from __future__ import annotations

import argparse
import functools
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rulec.api import compile_ruleset, paused_gc
from rulec.backends.stats import kernel_rule_counts
from rulec.frontends import k8s
from rulec.frontends.k8s.compiler import Index, effective_types, resolve_peers, subtract
from rulec.frontends.k8s.model import IPBlock
from rulec.ir.values import Prefix
from rulec.ir.verify import verify

TARGETS = ("iptables", "nft")
TEAMS, APPS, TIERS = 10, 12, ("front", "back", "db")


def inventory(pods: int, namespaces: int) -> str:
    nss = [{"name": f"ns{i}", "labels": {"kubernetes.io/metadata.name": f"ns{i}",
                                          "team": f"t{i % TEAMS}",
                                          "env": "prod" if i % 3 else "dev"}}
           for i in range(namespaces)]
    out = []
    for j in range(pods):
        address = 0xC6120000 + 2 + j  # 198.18.0.2 upwards
        out.append({"name": f"pod{j}", "namespace": f"ns{j % namespaces}",
                    "labels": {"app": f"a{j % APPS}", "tier": TIERS[j % 3]},
                    "ip": ".".join(str(address >> s & 255) for s in (24, 16, 8, 0)),
                    "ports": [{"name": "http", "port": 8080 + j % 2},
                              {"name": "metrics", "port": 9100},
                              {"name": "dns", "port": 53, "protocol": "UDP"}]})
    return yaml.safe_dump({"namespaces": nss, "pods": out}, sort_keys=False)


def policies(count: int, namespaces: int, seed: int = 7) -> str:
    rnd = random.Random(seed)
    docs = []
    for i in range(count):
        ns = f"ns{i % namespaces}"
        app = f"a{rnd.randrange(APPS)}"
        kind = i % 5
        spec: dict[str, object]
        if kind == 0:  # default deny, both directions
            spec = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        elif kind == 4:  # egress to databases of prod namespaces and to DNS
            spec = {"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Egress"],
                    "egress": [
                        {"to": [{"namespaceSelector": {"matchLabels": {"env": "prod"}},
                                 "podSelector": {"matchLabels": {"tier": "db"}}}],
                         "ports": [{"port": 5432}]},
                        {"to": [{"namespaceSelector": {}}], "ports": [{"port": "dns",
                                                                       "protocol": "UDP"}]},
                        {"to": [{"ipBlock": {"cidr": f"10.{i % 250}.0.0/16",
                                             "except": [f"10.{i % 250}.{rnd.randrange(256)}"
                                                        ".0/24"]}}]}]}
        else:
            spec = {"podSelector": {"matchExpressions": [
                        {"key": "app", "operator": "In", "values": [app, f"a{(i + 1) % APPS}"]},
                        {"key": "tier", "operator": "NotIn", "values": ["db"]}]},
                    "ingress": [
                        {"from": [{"podSelector": {"matchLabels": {"tier": "front"}}},
                                  {"namespaceSelector": {"matchLabels": {"team": f"t{i % TEAMS}"}},
                                   "podSelector": {"matchLabels": {"app": f"a{i % APPS}"}}}],
                         "ports": [{"port": 80}, {"port": "http"}]},
                        {"from": [{"ipBlock": {"cidr": "172.16.0.0/12",
                                               "except": [f"172.{16 + i % 16}.0.0/16"]}}],
                         "ports": [{"port": 9000, "endPort": 9100}]},
                        {"from": [{"namespaceSelector": {"matchExpressions": [
                            {"key": "env", "operator": "Exists"}]}}],
                         "ports": [{"port": "metrics"}]}]}
        docs.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                     "metadata": {"namespace": ns, "name": f"np{i}"}, "spec": spec})
    return yaml.safe_dump_all(docs, sort_keys=False)


def peer_pairs(cluster: k8s.Cluster) -> int:
    index = Index(cluster.inventory)
    total = 0
    for policy in cluster.policies:
        selected = len(index.selected(policy))
        for direction, rules in (("Ingress", policy.ingress), ("Egress", policy.egress)):
            if direction not in effective_types(policy):
                continue
            for rule in rules:
                peers = resolve_peers(index, policy, rule)
                total += selected * (1 if peers is None else len(peers))
    return total


def measure(pods: int, namespaces: int, count: int, repeat: int) -> dict[str, object]:
    inv, pol = inventory(pods, namespaces), policies(count, namespaces)
    row: dict[str, object] = {"pods": pods, "namespaces": namespaces, "policies": count}
    loads, builds = [], []
    emits: dict[str, list[float]] = {t: [] for t in TARGETS}
    for _ in range(repeat):
        with paused_gc():
            start = time.perf_counter()
            cluster = k8s.load_texts(("cluster.yaml", inv), [("policy.yaml", pol)])
            loads.append(time.perf_counter() - start)
            start = time.perf_counter()
            ruleset = k8s.compile_to_ir(cluster)
            verify(ruleset)
            builds.append(time.perf_counter() - start)
        for target in TARGETS:
            start = time.perf_counter()
            artifact = compile_ruleset(ruleset, target).artifact
            emits[target].append(time.perf_counter() - start)
            row[f"rules {target}"] = sum(kernel_rule_counts(artifact).values())
            if target == "nft":
                row["nft sets"] = artifact.text.count("\n\tset ")
    row["load s"], row["IR s"] = statistics.median(loads), statistics.median(builds)
    for target in TARGETS:
        row[f"{target} s"] = statistics.median(emits[target])
        row[f"total {target} s"] = row["load s"] + row["IR s"] + row[f"{target} s"]  # type: ignore[operator]
    row["peer pairs"] = peer_pairs(cluster)
    return row


EXCEPT_CIDR = "10.0.0.0/8"
EMIT_UP_TO = 10_000  # the nft column: past it the printing of the set dominates


def except_policy(count: int, seed: int = 7) -> tuple[IPBlock, str]:
    """One ipBlock with `count` distinct /32 excepts, as the model holds it and as YAML."""
    rnd = random.Random(seed)
    cidr = Prefix.parse(EXCEPT_CIDR)
    hosts = sorted(rnd.sample(range(1, 1 << 24), count))
    excepts = [Prefix.parse(f"10.{h >> 16}.{h >> 8 & 255}.{h & 255}/32") for h in hosts]
    text = yaml.safe_dump({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": "ns0", "name": "excepts"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
            "cidr": EXCEPT_CIDR, "except": [f"{p.network >> 24}.{p.network >> 16 & 255}."
                                            f"{p.network >> 8 & 255}.{p.network & 255}/32"
                                            for p in excepts]}}]}]}})
    return IPBlock(cidr, tuple(excepts)), text


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        with paused_gc():
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def except_rows(sizes: list[int], repeat: int) -> None:
    inv = inventory(4, 1)

    def ir(text: str) -> object:
        return k8s.compile_to_ir(k8s.load_texts(("cluster.yaml", inv), [("policy.yaml", text)]))

    def to_nft(text: str) -> object:
        ruleset = k8s.compile_to_ir(k8s.load_texts(("cluster.yaml", inv),
                                                   [("policy.yaml", text)]))
        return compile_ruleset(ruleset, "nft")

    rows: list[tuple[int, int, float, float, float | None]] = []
    for count in sizes:
        block, text = except_policy(count)
        rows.append((count, len(subtract(block)),
                     median_seconds(functools.partial(subtract, block), repeat),
                     median_seconds(functools.partial(ir, text), repeat),
                     median_seconds(functools.partial(to_nft, text), repeat)
                     if count <= EMIT_UP_TO else None))

    def growth(i: int, column: int) -> str:
        now, before = rows[i][column], rows[i - 1][column] if i else None
        if now is None or before is None:
            return ""
        decades = math.log10(rows[i][0] / rows[i - 1][0])
        return f" (x{(now / before) ** (1 / decades):.1f})"

    print(f"| excepts in {EXCEPT_CIDR} | prefixes left | subtract s (per 10x) | "
          "YAML to IR s (per 10x) | to nft s (per 10x) |")
    print("|---:|---:|---:|---:|---:|")
    for i, (count, pieces, sub, build, nft) in enumerate(rows):
        shown = "-" if nft is None else f"{nft:.3f}{growth(i, 4)}"
        print(f"| {count:,} | {pieces:,} | {sub:.4f}{growth(i, 2)} | {build:.3f}{growth(i, 3)} "
              f"| {shown} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="0.25,0.5,1,4p")
    parser.add_argument("--excepts", metavar="N,...",
                        help="time one ipBlock with N /32 excepts instead (e.g. 100,1000,10000)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs per size, the median is shown (default 1; 5 with --excepts)")
    args = parser.parse_args()
    if args.excepts:
        except_rows([int(n) for n in args.excepts.split(",")], args.repeat or 5)
        return
    args.repeat = args.repeat or 1
    rows = []
    for scale in args.scales.split(","):
        if scale.endswith("p"):  # more pods, the same policies
            factor = float(scale[:-1])
            size = (int(1000 * factor), 200, 500)
        else:
            factor = float(scale)
            size = (int(1000 * factor), int(200 * factor), int(500 * factor))
        rows.append(measure(*size, args.repeat))
    columns = ["pods", "namespaces", "policies", "peer pairs", "load s", "IR s",
               "total iptables s", "total nft s", "rules iptables", "rules nft", "nft sets"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---:" for _ in columns) + "|")
    for row in rows:
        cells = [f"{row[c]:.2f}" if isinstance(row[c], float) else f"{row[c]:,}"
                 for c in columns]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
