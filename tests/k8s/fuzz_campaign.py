"""A long fuzz run of the Kubernetes frontend that counts instead of stopping at the first
failure: inputs, compiled, errors (exit 1), internal errors (exit 3), hangs, diagnostics
without a position, and kernel loads and rejects of what compiled.

    python -m tests.k8s.fuzz_campaign --examples 5000 [--loads 2000] [--out DIR]

Half of the inputs are tests/k8s/fuzz.py's odd mutations, half its plausible ones (which
compile more often). Every input that exits 3, hangs or prints an unpositioned diagnostic,
and every artifact a kernel loader rejects, is written to DIR. Needs root for the loads; the
address space is capped at 4 GiB so that a runaway input fails alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from rulec import api, cli
from rulec.diagnostics import RulecError
from rulec.kernel import available, validate_artifact
from tests.k8s.fuzz import TARGETS, Hang, Input, inputs, run_cli, time_limit, write
from tests.k8s.test_fuzz import HEADER, POSITIONED


def _save(out: Path, kind: str, case: Input, detail: str) -> None:
    digest = hashlib.sha256(repr(case).encode("utf-8", "surrogatepass")).hexdigest()[:12]
    path = out / f"{kind}-{digest}.json"
    path.write_text(json.dumps({"target": case.target, "inventory": case.inventory,
                                "policy": case.policy, "detail": detail[-20000:]},
                               ensure_ascii=True), encoding="utf-8")


def campaign(examples: int, loads: int, out: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    seen: set[int] = set()
    kernel = available() is None
    work = Path(tempfile.mkdtemp(prefix="rulec-k8s-fuzz-"))

    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(inputs(), inputs(plausible=True)))
    def one(case: Input) -> None:
        counts["inputs"] += 1
        seen.add(hash(case))
        try:
            code, _, err = run_cli(work, case)
        except Hang as exc:
            counts["hangs"] += 1
            _save(out, "hang", case, str(exc))
            return
        if code == cli.EXIT_OK:
            counts["compiled"] += 1
        elif code == cli.EXIT_POLICY:
            counts["errors"] += 1
        else:
            counts[f"exit {code}"] += 1
            _save(out, f"exit{code}", case, err)
        if any(HEADER.match(line) and line.strip() and not line.startswith("rulec:")
               and not POSITIONED.match(line) for line in err.splitlines()):
            counts["unpositioned diagnostics"] += 1
            _save(out, "unpositioned", case, err)
        if code != cli.EXIT_OK or not kernel or counts["compiles loaded"] >= loads:
            return
        counts["compiles loaded"] += 1
        inventory, policy = write(work, case)
        for target in TARGETS:
            try:
                with time_limit(30):
                    artifact = api.compile_k8s_files(inventory, [policy], target).artifact
            except RulecError:
                counts[f"refused by {target}"] += 1
                continue
            for variant in (None, "cli") if target.startswith("nft") else (None,):
                verdict = validate_artifact(artifact, variant=variant)
                counts["kernel loads"] += len(verdict.loader.split(", "))
                if not verdict.ok:
                    counts["kernel rejects"] += 1
                    _save(out, f"reject-{target}", case, f"{verdict.summary()}\n"
                          f"{artifact.text}")

    one()
    counts["distinct inputs"] = len(seen)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--loads", type=int, default=2000,
                        help="load at most this many successful compiles (all targets each)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where failing inputs go (default: a new temporary directory)")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    out = args.out or Path(tempfile.mkdtemp(prefix="rulec-k8s-fuzz-found-"))
    out.mkdir(parents=True, exist_ok=True)
    counts = campaign(args.examples, args.loads, out)
    order = ["inputs", "distinct inputs", "compiled", "errors", "exit 3", "hangs",
             "unpositioned diagnostics", "compiles loaded", "kernel loads", "kernel rejects"]
    for key in order + sorted(set(counts) - set(order)):
        print(f"| {key} | {counts.get(key, 0):,} |")
    print(f"failing inputs, if any: {out}")


if __name__ == "__main__":
    main()
