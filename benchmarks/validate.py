"""What translation validation (`rulec compile --validate`) costs, against the compile itself.

    python benchmarks/validate.py [--sizes 10000,100000] [--repeat 3] [--targets iptables,nft]

On the enterprise allow-list of benchmarks/enterprise_policy.py (a comment per term, terms that
overlap), per size and target: the median seconds (of --repeat rounds, garbage collection
paused as the CLI does) of the compile without validation (parse + passes + print), and of the
validation alone (read the output back, diff it against the policy as written), split into
its import and its diff; and validation as a share of the compile. Issue 12 makes validation
the default if it costs at most 30 % of the compile at 10k rules.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import enterprise_policy  # benchmarks/

from rulec import api
from rulec.analysis.diff import diff
from rulec.ir.values import Family
from rulec.validation import entered, entrances, read_artifact

T = TypeVar("T")
FAMILIES = {"iptables": (Family.IP,), "ip6tables": (Family.IP6,)}


def median(fn: Callable[[], T], repeat: int) -> tuple[float, T]:
    times = []
    result = fn()  # a warm-up round, and the result
    for _ in range(repeat):
        with api.paused_gc():
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times), result


def measure(rules: int, target: str, repeat: int) -> dict[str, object]:
    text = enterprise_policy.to_rulec(enterprise_policy.generate(rules), True)
    written = api.parse_text(text, "policy.rules")
    compile_s, result = median(lambda: api.compile_ruleset(
        api.parse_text(text, "policy.rules"), target), repeat)
    artifact = result.artifact
    import_s, imported = median(lambda: read_artifact(artifact), repeat)
    imported = replace(imported, entry_points=written.entry_points)
    families = FAMILIES.get(target, (Family.IP, Family.IP6))
    chains = entrances(written)
    diff_s, proof = median(lambda: diff(entered(written, chains), entered(imported, chains),
                                        families), repeat)
    assert proof.equivalent, f"{target} output differs from the policy at {rules} rules"
    validate_s = import_s + diff_s
    return {"rules": rules, "target": target, "compile": compile_s, "import": import_s,
            "diff": diff_s, "validate": validate_s, "share": validate_s / compile_s,
            "kernel_rules": artifact.text.count("\n")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--targets", default="iptables,nft")
    args = parser.parse_args()
    print("| terms | target | compile s | import s | diff s | validate s | validate / compile |")
    print("|---|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        for target in args.targets.split(","):
            row = measure(size, target, args.repeat)
            print(f"| {size} | {target} | {row['compile']:.2f} | {row['import']:.2f} | "
                  f"{row['diff']:.2f} | {row['validate']:.2f} | {row['share']:.0%} |",
                  flush=True)


if __name__ == "__main__":
    main()
