"""remove_shadowed at scale: one chain of 1k-20k rules with planted shadowed rules.

    python benchmarks/shadowed.py [--sizes 1000,10000,20000] [--repeat 5]

Each chain holds accept/drop rules on distinct source /24s and small port sets (every /24
carries port 443), plus, per 100 rules, one rule covered by a single earlier rule, one
covered only by the union of two earlier rules (a /23 on port 443 = two /24 rules) and one
near miss that must stay (a /23 on a port only one half carries). Prints the median
seconds of the pass, how many rules it removed (single / union cover) against how many
were planted, and whether every near miss was kept. A second table times the pass on the
mixed policy of benchmarks/compile_scaling.py (negated sets, both families, chains of 1000).
The target (issue 3) is <= 5 s at 10k rules with union cover; a peer's pairwise shade check
takes 159 s there and finds single cover only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compile_scaling import generate as mixed_policy

from rulec import api
from rulec.ir import nodes as ir
from rulec.ir.values import AddressSet, Family, PortSet, Prefix, Protocol
from rulec.passes.context import PassContext
from rulec.passes.remove_shadowed import remove_shadowed

TCP = Protocol(6)
BASE = 10 << 24  # 10.0.0.0/8: 65536 /24s, and the rules are never loaded anywhere
PORTS = (22, 80, 8080, 8443, 25, 3306)


def _net(index: int, length: int = 24) -> AddressSet:
    return AddressSet((Prefix(Family.IP, BASE + index * 256, length),))


def generate(size: int) -> tuple[ir.Ruleset, dict[str, set[int]]]:
    """The chain, and the positions of the planted rules by kind ('single', 'union',
    'miss')."""
    rules: list[ir.Rule] = []
    planted: dict[str, set[int]] = {"single": set(), "union": set(), "miss": set()}
    block = 0  # the next unused /24 index; taken in pairs so that a /23 is two rules
    while len(rules) < size:
        for pair in range(48):  # 96 base rules, then the three planted ones
            for half in (0, 1):
                index = block + half
                port = PORTS[(index * 7 + half) % len(PORTS)]
                action: ir.Action = ir.Drop() if index % 50 == 0 else ir.Accept()
                rules.append(ir.Rule(match=ir.Match(proto=TCP, saddr=_net(index),
                                                    dport=PortSet.of(443, port)),
                                     action=action))
            block += 2
            if pair == 47:
                first = block - 2  # the last pair: 443 on both halves, `port` on one
                odd = PORTS[((first + 1) * 7 + 1) % len(PORTS)]
                even = PORTS[(first * 7) % len(PORTS)]
                planted["single"].add(len(rules))
                rules.append(ir.Rule(match=ir.Match(
                    proto=TCP, saddr=AddressSet((Prefix(Family.IP, BASE + first * 256 + 128,
                                                        25),)),
                    dport=PortSet.of(even)), action=ir.Accept()))
                planted["union"].add(len(rules))
                rules.append(ir.Rule(match=ir.Match(proto=TCP, saddr=_net(first, 23),
                                                    dport=PortSet.of(443)), action=ir.Drop()))
                planted["miss"].add(len(rules))
                miss_port = odd if odd != even else 9  # 9: on neither half
                rules.append(ir.Rule(match=ir.Match(proto=TCP, saddr=_net(first, 23),
                                                    dport=PortSet.of(miss_port)),
                                     action=ir.Drop()))
    chain = ir.Chain(name="FORWARD", hook=ir.Hook.FORWARD, policy=ir.Policy.DROP,
                     rules=tuple(rules))
    table = ir.Table(kind=ir.TableKind.FILTER, family=Family.IP, chains=(chain,))
    return ir.Ruleset(tables=(table,)), planted


def run(size: int, repeat: int) -> dict[str, object]:
    ruleset, planted = generate(size)
    rules = ruleset.tables[0].chains[0].rules
    times = []
    for _ in range(repeat):
        ctx = PassContext()
        start = time.perf_counter()
        out = remove_shadowed(ruleset, ctx)
        times.append(time.perf_counter() - start)
    kept = {id(r) for r in out.tables[0].chains[0].rules}
    removed = {i for i, r in enumerate(rules) if id(r) not in kept}
    return {
        "rules": len(rules), "median": statistics.median(times), "min": min(times),
        "max": max(times), "single": len(removed & planted["single"]),
        "union": len(removed & planted["union"]), "planted": len(planted["single"])
        + len(planted["union"]), "other": len(removed - planted["single"] - planted["union"]),
        "misses_kept": not (removed & planted["miss"]), "warnings": len(ctx.warnings),
    }


def run_mixed(size: int, repeat: int) -> tuple[int, float, int]:
    ruleset = api.parse_text(mixed_policy(size))
    times, warnings = [], 0
    for _ in range(repeat):
        ctx = PassContext()
        start = time.perf_counter()
        remove_shadowed(ruleset, ctx)
        times.append(time.perf_counter() - start)
        warnings = len(ctx.warnings)
    return ir.rule_count(ruleset), statistics.median(times), warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,20000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print("| rules | median s (min-max) | removed: single / union cover | planted | "
          "other removed | near misses kept |")
    print("|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        r = run(size, args.repeat)
        print(f"| {r['rules']} | {r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f}) | "
              f"{r['single']} / {r['union']} | {r['planted']} | {r['other']} | "
              f"{'yes' if r['misses_kept'] else 'NO'} |")
    print()
    print("| mixed policy rules | median s | removed |")
    print("|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        rules, median, removed = run_mixed(size, args.repeat)
        print(f"| {rules} | {median:.2f} | {removed} |")


if __name__ == "__main__":
    main()
