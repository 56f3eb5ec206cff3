"""Compile-time scaling: generated policies of 1k, 10k and 100k rules, each stage timed apart.

    python benchmarks/compile_scaling.py [--sizes 1000,10000,100000] [--repeat 3]
                                         [--shape mixed|enterprise] [--no-comments]

Prints one table: the median seconds per stage (Lark parse, lowering to IR, verify, each
backend's emit without passes, the default optimiser pipeline as run for iptables and for
nft), totals with and without the optimiser, rules per second end to end, and the growth
ratio per 10x more rules (linear growth is 10x; the target is at most 12x). All sizes are
measured in one run, so the ratios are comparable even on a shared, noisy machine.
Below the totals, one row per optimiser pass (nft pipeline; a pass run twice is summed),
so a pass that grows faster than the rest stands out.

`--shape enterprise` measures benchmarks/enterprise_policy.py's allow-list instead of the
mixed policy (one comment per term, or none with `--no-comments`: rules that merge).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import itertools

import enterprise_policy  # benchmarks/

from rulec import api
from rulec.frontends import dsl
from rulec.frontends.grammar import parser
from rulec.ir.verify import verify
from rulec.passes import PassContext, run_pipeline

TARGETS = ("iptables", "ip6tables", "nft", "nft-json")


def generate(rules: int, seed: int = 1) -> str:
    """A policy of `rules` rules in chains of 1000, dispatched from INPUT, mixing shapes:
    single ports, port sets, a shared address group, negations, comments, both families."""
    rnd = random.Random(seed)
    chains = max(1, rules // 1000)
    per_chain = rules // chains
    out = ["define office = { 198.51.100.0/24, 203.0.113.0/25, 2001:db8:100::/48 }",
           "table inet filter {", "  chain INPUT policy drop {",
           "    accept ct state established,related"]
    out += [f"    jump svc{c} in eth{c % 4}" for c in range(chains)]
    out.append("  }")
    for c in range(chains):
        out.append(f"  chain svc{c} {{")
        for i in range(per_chain):
            n = 0xC6120000 + c * per_chain + i  # inside 198.18.0.0/15
            host = f"{n >> 24 & 255}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
            port = rnd.randrange(1, 65535)
            match i % 5:
                case 0:
                    out.append(f"    accept tcp dport {port} from {host}")
                case 1:
                    out.append(f"    drop udp dport {{ 53, 123, {port} }} from {host} "
                               f'comment "rule {c}.{i}"')
                case 2:
                    out.append(f"    accept tcp dport 443 from $office to {host}")
                case 3:
                    out.append(f"    reject with tcp-reset tcp dport {port} from != {host}")
                case _:
                    out.append(f"    accept family ip6 tcp dport {port} from 2001:db8::{i:x}")
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def policy_text(shape: str, rules: int, comments: bool) -> str:
    if shape == "enterprise":
        return enterprise_policy.to_rulec(enterprise_policy.generate(rules), comments)
    return generate(rules)


def median_time(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of `repeat` runs of `fn`, garbage collection paused as in the CLI."""
    times = []
    for _ in range(repeat):
        with api.paused_gc():
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _pass_seconds(ruleset: object, repeat: int) -> dict[str, float]:
    """Median seconds of each pass in the nft pipeline, summed over the pass's runs."""
    runs: list[dict[str, float]] = []
    for _ in range(repeat):
        with api.paused_gc():
            _, stats = run_pipeline(ruleset, PassContext(named_sets=True))  # type: ignore[arg-type]
        per: dict[str, float] = {}
        for s in stats:
            per[s.name] = per.get(s.name, 0.0) + s.seconds
        runs.append(per)
    return {f"  {name}": statistics.median(r.get(name, 0.0) for r in runs) for name in runs[0]}


def measure(rules: int, repeat: int, shape: str = "mixed",
            comments: bool = True) -> dict[str, float]:
    text = policy_text(shape, rules, comments)
    parser()  # grammar construction is a one-off, not part of the per-rule cost
    row = {"parse": median_time(lambda: parser().parse(text + "\n"), repeat)}
    lowered = median_time(lambda: dsl.parse_text(text, "bench.rules"), repeat)
    row["lower"] = max(0.0, lowered - row["parse"])
    ruleset = dsl.parse_text(text, "bench.rules")
    row["verify"] = median_time(lambda: verify(ruleset), repeat)
    for target in TARGETS:  # emit alone: the optimiser is timed on its own below
        row[target] = median_time(
            lambda t=target: api.compile_ruleset(ruleset, t, passes=()), repeat)
    for label, named_sets in (("passes (iptables)", False), ("passes (nft)", True)):
        row[label] = median_time(
            lambda n=named_sets: run_pipeline(ruleset, PassContext(named_sets=n)), repeat)
    front = row["parse"] + row["lower"] + row["verify"]
    row["total -O0 (nft)"] = front + row["nft"]
    row["total -O0 (iptables)"] = front + row["iptables"]
    row["total (nft)"] = front + row["passes (nft)"] + row["nft"]
    row["total (iptables)"] = front + row["passes (iptables)"] + row["iptables"]
    row.update(_pass_seconds(ruleset, repeat))
    return row


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--sizes", default="1000,10000,100000")
    options.add_argument("--repeat", type=int, default=3)
    options.add_argument("--shape", choices=("mixed", "enterprise"), default="mixed")
    options.add_argument("--no-comments", action="store_true",
                         help="enterprise shape: terms without comments (their rules merge)")
    args = options.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = {n: measure(n, args.repeat, args.shape, not args.no_comments) for n in sizes}
    stages = list(dict.fromkeys(stage for n in sizes for stage in rows[n]))
    for n in sizes:
        for stage in stages:
            rows[n].setdefault(stage, 0.0)
    comments = "" if args.shape == "mixed" else (
        ", no comments" if args.no_comments else ", comments")
    print(f"shape {args.shape}{comments}; median of {args.repeat} runs, seconds "
          "(emit columns include the target's verify; indented rows: nft pipeline per pass)")
    header = f"{'stage':<22}" + "".join(f"{n:>12,}" for n in sizes)
    header += "".join(f"{f'x{b // a}:{a // 1000}k->{b // 1000}k':>16}"
                      for a, b in itertools.pairwise(sizes))
    print(header)
    for stage in stages:
        line = f"{stage:<22}" + "".join(f"{rows[n][stage]:>12.3f}" for n in sizes)
        for a, b in itertools.pairwise(sizes):
            ratio = rows[b][stage] / rows[a][stage] if rows[a][stage] > 0 else float("nan")
            line += f"{ratio:>16.1f}"
        print(line)
    line = f"{'rules/s (nft)':<22}" + "".join(
        f"{n / rows[n]['total (nft)']:>12,.0f}" for n in sizes)
    print(line)


if __name__ == "__main__":
    main()
