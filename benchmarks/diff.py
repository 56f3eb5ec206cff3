"""`rulec diff` speed: the symbolic engine on policy pairs of issue 11's shapes.

    python benchmarks/diff.py [--sizes 1000,10000] [--repeat 3] [--cases widen,top,...]

Cases (the enterprise allow-list of benchmarks/enterprise_policy.py at each size):
  same      a policy against itself (must come out equivalent)
  widen     one term's tcp port list gets one more port (one rule changed)
  top       one rule added at the top of INPUT (tcp port 8443 from 10.0.0.0/8)
  unrelated two policies of different seeds
and, on benchmarks/netpol_scale.py's 1,000-pod cluster (200 namespaces, 500 policies):
  k8s-policy  one NetworkPolicy's first ingress port 80 becomes 81
  k8s-label   the same policies, one pod relabelled in the inventory (it becomes a peer)

Per case: the median seconds (of --repeat rounds, garbage collection paused as the CLI
does) to parse both sides (api.parse_text, or api.parse_k8s_files on files in a temporary
directory), of the engine (diff()), and of rendering its text; the engine nodes walked, the
classes compared, the changes reported; the issue's target for the engine; and whether the
result is sane: equivalent for `same`, at least one change otherwise, and for `widen` and
`top` a packet the edit lets in lies in a reported change.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import enterprise_policy  # benchmarks/
import netpol_scale  # benchmarks/

from rulec import api
from rulec.analysis.diff import Diff, diff
from rulec.analysis.engine import Engine
from rulec.analysis.render import text
from rulec.frontends import k8s
from rulec.frontends.k8s.compiler import Index
from rulec.ir import nodes as ir
from rulec.ir.evaluate import Packet, evaluate
from rulec.ir.evaluate import Path as PacketPath
from rulec.ir.values import TCP, CtState, Family, TcpFlag

CASES = ("same", "widen", "top", "unrelated", "k8s-policy", "k8s-label")
# Issue 11's targets for the engine, seconds (at 10k rules; 1k rules get the same bound).
TARGETS = {"same": 1.0, "widen": 1.0, "top": 1.0, "unrelated": 10.0, "k8s-policy": 2.0,
           "k8s-label": 2.0}
WIDENED_PORT, TOP_PORT = 7777, 8443
K8S_PODS, K8S_NAMESPACES, K8S_POLICIES = 1000, 200, 500


@dataclass(frozen=True, slots=True)
class Pair:
    """Both sides of a case, as a parse function each, and a packet the edit lets in."""

    parse: Callable[[], tuple[ir.Ruleset, ir.Ruleset]]
    probe: Packet | None = None
    expect_equivalent: bool = False


def _tcp_probe(saddr: str, daddr: str, dport: int) -> Packet:
    def number(dotted: str) -> int:
        a, b, c, d = (int(x) for x in dotted.split("."))
        return a << 24 | b << 16 | c << 8 | d

    return Packet(family=Family.IP, proto=TCP, saddr=number(saddr), daddr=number(daddr),
                  sport=40000, dport=dport, path=PacketPath.INCOMING, iif="eth0", oif=None,
                  ct_state=CtState.NEW, tcp_flags=frozenset({TcpFlag.SYN}))


def _text_pair(old: str, new: str) -> Callable[[], tuple[ir.Ruleset, ir.Ruleset]]:
    return lambda: (api.parse_text(old, "old.rules"), api.parse_text(new, "new.rules"))


def enterprise_pair(case: str, size: int) -> Pair:
    policy = enterprise_policy.generate(size)
    old = enterprise_policy.to_rulec(policy)
    lines = old.splitlines(keepends=True)
    if case == "same":
        return Pair(_text_pair(old, old), expect_equivalent=True)
    if case == "unrelated":
        return Pair(_text_pair(old, enterprise_policy.to_rulec(enterprise_policy.generate(
            size, seed=2))))
    if case == "top":
        first = next(i for i, line in enumerate(lines) if "chain INPUT" in line) + 1
        lines.insert(first, f"    accept tcp dport {TOP_PORT} from 10.0.0.0/8\n")
        return Pair(_text_pair(old, "".join(lines)),
                    _tcp_probe("10.1.2.3", "192.0.2.1", TOP_PORT))
    assert case == "widen"
    # The middle term whose tcp rule has an open destination and no extra port.
    middle = next(t for t in policy.terms[len(policy.terms) // 2:]
                  if not t.deny and t.destination is None and t.extra_tcp_port is None
                  and t.group is None and "tcp" in dict(enterprise_policy.term_rules(t)))
    where = next(i for i, line in enumerate(lines)
                 if "accept tcp dport" in line and f'"{middle.name}"' in line)
    head, tail = lines[where].split(" dport ", 1)
    ports, rest = tail.split(" from ", 1)
    ports = ports.strip("{} ")
    lines[where] = f"{head} dport {{ {ports}, {WIDENED_PORT} }} from {rest}"
    source = middle.sources[0].removesuffix("/24")[:-1] + "9"
    return Pair(_text_pair(old, "".join(lines)),
                _tcp_probe(source, "192.0.2.1", WIDENED_PORT))


def k8s_pair(case: str, folder: Path) -> Pair:
    """The cluster and one edit that matters: the first policy with ingress rules that
    selects pods has its port 80 changed to 81, or a pod of that policy's namespace outside
    the front tier is relabelled `tier: front`, which makes it a peer of that policy."""
    inventory = netpol_scale.inventory(K8S_PODS, K8S_NAMESPACES)
    policies = netpol_scale.policies(K8S_POLICIES, K8S_NAMESPACES)
    cluster = k8s.load_texts(("cluster.yaml", inventory), [("policy.yaml", policies)])
    index = Index(cluster.inventory)
    chosen = next(p for p in cluster.policies if p.ingress and index.selected(p))
    paths = {name: folder / name for name in ("old.yaml", "new.yaml", "pol.yaml",
                                              "pol-new.yaml")}
    paths["old.yaml"].write_text(inventory)
    paths["pol.yaml"].write_text(policies)
    if case == "k8s-policy":
        docs = list(yaml.safe_load_all(policies))
        changed = next(d for d in docs if d["metadata"]["name"] == chosen.name)
        changed["spec"]["ingress"][0]["ports"][0]["port"] = 81
        paths["pol-new.yaml"].write_text(yaml.safe_dump_all(docs, sort_keys=False))
        sides = (("old.yaml", "pol.yaml"), ("old.yaml", "pol-new.yaml"))
    else:
        pods = yaml.safe_load(inventory)
        pod = next(p for p in pods["pods"]
                   if p["namespace"] == chosen.namespace and p["labels"]["tier"] != "front")
        pod["labels"]["tier"] = "front"
        paths["new.yaml"].write_text(yaml.safe_dump(pods, sort_keys=False))
        sides = (("old.yaml", "pol.yaml"), ("new.yaml", "pol.yaml"))

    def parse() -> tuple[ir.Ruleset, ir.Ruleset]:
        old, new = (api.parse_k8s_files(paths[i], [paths[p]]) for i, p in sides)
        return old, new

    return Pair(parse)


def _covered(result: Diff, old: ir.Ruleset, new: ir.Ruleset, probe: Packet) -> bool:
    """Whether the probe, sent to this host (the policies filter INPUT), fares differently
    on the sides and lies in a reported change."""
    engine = Engine.build([old, new], probe.family)
    host = engine.host_for(probe, to_host=True)
    if evaluate(old, probe, host) == evaluate(new, probe, host):
        return False
    values = engine.values_of(probe, to_host=True)
    return any(box.holds(values) for change in result.changes for box in change.boxes
               if box.family is probe.family)


def measure(pair: Pair, repeat: int) -> dict[str, object]:
    parses, engines, renders = [], [], []
    for _ in range(repeat):
        with api.paused_gc():
            start = time.perf_counter()
            old, new = pair.parse()
            parsed = time.perf_counter()
            result = diff(old, new)
            engined = time.perf_counter()
            text(result)
            renders.append(time.perf_counter() - engined)
        parses.append(parsed - start)
        engines.append(engined - parsed)
    if pair.expect_equivalent:
        sane = "yes (equivalent)" if result.equivalent else "NO: changes reported"
    elif not result.changes:
        sane = "NO: equivalent"
    elif pair.probe is not None and not _covered(result, old, new, pair.probe):
        sane = "NO: probe missed"
    else:
        sane = "yes (probe in a change)" if pair.probe is not None else "yes (>= 1 change)"
    rules = sum(len(ir.vmap_rules(r)) for t in old.tables for c in t.chains for r in c.rules)
    return {"rules": rules, "parse s": statistics.median(parses),
            "diff s": statistics.median(engines), "render s": statistics.median(renders),
            "nodes": result.nodes, "classes": result.classes, "changes": len(result.changes),
            "sane": sane}


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--sizes", default="1000,10000", help="enterprise terms per policy")
    options.add_argument("--repeat", type=int, default=3)
    options.add_argument("--cases", default=",".join(CASES))
    args = options.parse_args()
    cases = args.cases.split(",")
    unknown = set(cases) - set(CASES)
    if unknown:
        options.error(f"unknown cases: {', '.join(sorted(unknown))}")
    rows: list[tuple[str, str, dict[str, object]]] = []
    with tempfile.TemporaryDirectory(prefix="rulec-bench-diff-") as folder:
        for case in cases:
            if case.startswith("k8s"):
                rows.append((case, f"{K8S_PODS:,} pods", measure(k8s_pair(case, Path(folder)),
                                                                args.repeat)))
                continue
            for size in (int(s) for s in args.sizes.split(",")):
                rows.append((case, f"{size:,} terms", measure(enterprise_pair(case, size),
                                                             args.repeat)))
    print(f"median of {args.repeat} runs, seconds; rules: IR rules of the old side; target: "
          "issue 11's bound on diff s")
    columns = ["case", "size", "rules", "parse s", "diff s", "target", "render s", "nodes",
               "classes", "changes", "sane"]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|" + "---:|" * (len(columns) - 3) + "---|")
    for case, label, row in rows:
        cells: list[str] = [case, label, f"{row['rules']:,}", f"{row['parse s']:.2f}",
                 f"{row['diff s']:.3f}", f"<= {TARGETS[case]:g}", f"{row['render s']:.3f}",
                 f"{row['nodes']:,}", f"{row['classes']:,}", f"{row['changes']:,}",
                 str(row["sane"])]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
