"""The DSL frontend on large policies: the enterprise allow-list (enterprise_policy.py) of 1k,
10k and 100k terms, with and without per-term comments.

    python benchmarks/frontend.py [--sizes 1000,10000,100000] [--repeat 3] [--no-cli]

Prints one table of CPU seconds (the machine is shared). `parse` is Lark alone building a
parse tree (its lexer and LALR loop, as the frontend runs them); `total` is `parse_text`,
which lowers to IR while Lark parses (no tree), so `lower` = total - parse is what lowering
adds. `KB/rule` is tracemalloc's peak during `parse_text` over the rules it built (traced
apart from the timed runs); `cli` is the whole process of
`rulec compile FILE -t nft -O0 -o OUT`, wall and CPU, after a warm-up run. `x10` columns are
the growth per 10x more terms (linear is 10). All sizes run in one process, so the ratios
compare; medians of `--repeat` runs (100k: one run), garbage collection paused as in the
CLI.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from enterprise_policy import generate, to_rulec  # noqa: E402

from rulec import api  # noqa: E402
from rulec.frontends import dsl  # noqa: E402
from rulec.frontends.grammar import parser  # noqa: E402


def median_time(fn: Callable[[], object], repeat: int) -> float:
    """Median CPU seconds of the process (the machine is shared: wall time there measures the
    neighbours too)."""
    times = []
    for _ in range(repeat):
        with api.paused_gc():
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
    return statistics.median(times)


def rule_count(text: str) -> int:
    ruleset = dsl.parse_text(text, "bench.rules")
    return sum(len(c.rules) for t in ruleset.tables for c in t.chains)


def peak_kib(text: str) -> float:
    tracemalloc.start()
    try:
        dsl.parse_text(text, "bench.rules")
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()


def cli_time(text: str, repeat: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        policy, out = Path(tmp) / "policy.rules", Path(tmp) / "out.nft"
        policy.write_text(text, encoding="utf-8")
        command = [sys.executable, "-m", "rulec", "compile", str(policy), "-t", "nft", "-O0",
                   "-o", str(out)]
        # As an installed rulec runs: bytecode written once and reused, the grammar's tables
        # in a cache directory (here a temporary one), both warmed by a first run.
        env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": tmp}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        walls, cpus = [], []
        for _ in range(repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        return statistics.median(walls), statistics.median(cpus)


def measure(terms: int, comments: bool, repeat: int, cli: bool) -> dict[str, float]:
    text = to_rulec(generate(terms), comments)
    runs = 1 if terms >= 100_000 else repeat
    row = {"parse": median_time(lambda: parser().parse(text + "\n"), runs)}
    row["total"] = median_time(lambda: dsl.parse_text(text, "bench.rules"), runs)
    row["lower"] = row["total"] - row["parse"]
    rules = rule_count(text)
    row["us/rule"] = row["total"] / rules * 1e6
    row["KB/rule"] = peak_kib(text) / rules
    if cli:
        row["cli wall"], row["cli cpu"] = cli_time(text, runs)
    return row


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--sizes", default="1000,10000,100000")
    options.add_argument("--repeat", type=int, default=3)
    options.add_argument("--no-cli", action="store_true", help="skip the whole-process runs")
    args = options.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    parser()  # the grammar's construction is a one-off, not part of the per-rule cost
    dsl.parse_text("table ip filter { chain INPUT { accept } }\n")
    clis = [] if args.no_cli else ["cli wall", "cli cpu"]
    columns = ["parse", "lower", "total", "us/rule", "KB/rule", *clis]
    print(f"CPU seconds (cli wall: wall), median of {args.repeat} (100k: 1 run); "
          "KB/rule: tracemalloc peak")
    header = f"{'terms':>8} {'comments':>8}" + "".join(f"{c:>9}" for c in columns)
    grown = ["total", *clis[1:]]
    header += "".join(f"{'x10 ' + c:>12}" for c in grown)
    print(header)
    for comments in (True, False):
        rows = {n: measure(n, comments, args.repeat, not args.no_cli) for n in sizes}
        for i, n in enumerate(sizes):
            line = f"{n:>8,} {'yes' if comments else 'no':>8}"
            line += "".join(f"{rows[n][c]:>9.3f}" if c != "us/rule" else f"{rows[n][c]:>9.1f}"
                            for c in columns)
            if i:
                prev = sizes[i - 1]
                for c in grown:
                    line += f"{rows[n][c] / rows[prev][c]:>12.1f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
