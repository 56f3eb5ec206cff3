"""The importers fuzzed, and what they accept loaded: random edits of real and golden dumps
either import or fail with positioned diagnostics (never another exception), and every dump
that imports becomes a policy (`rulec import`) whose compile every loader accepts, so
"imported, printed, but the kernel rejects it" cannot hide. RULEC_FUZZ_EXAMPLES sets how many
are drawn (default 100)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rulec import api
from rulec.diagnostics import RulecError, SourceFile
from rulec.frontends.dumps import read_dump
from rulec.kernel import Namespace, load, namespace
from tests.frontend.test_fuzz import mutated

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("RULEC_FUZZ_EXAMPLES", "50"))
COUNTS: Counter[str] = Counter()
SEEDS = sorted({p.read_text(encoding="utf-8") for pattern in ("*.iptables", "*.ip6tables")
                for p in [*(ROOT / "tests" / "golden" / "cases").rglob(pattern),
                          *(ROOT / "examples").glob(pattern),
                          *(ROOT / "tests" / "fixtures" / "dumps").rglob(pattern)]})
INSERTS = st.sampled_from((" ", "\n", "!", "-A", "-j", "-m", "-p", "-s", "-d", "--dport",
                           "ACCEPT", "DROP", "RETURN", "tcp", "COMMIT", "*filter", ":X - [0:0]",
                           "0/0", "::/0", '"', "\\", "65536", "--comment", "multiport", "-g"))


@pytest.fixture(scope="module")
def shared_ns() -> Iterator[Namespace]:
    with namespace("fuzzimp") as ns:
        yield ns
    print(f"\nfuzz imports: {dict(sorted(COUNTS.items()))}")


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=mutated(SEEDS, INSERTS))
def test_every_dump_that_imports_compiles_and_loads(text: str, shared_ns: Namespace) -> None:
    COUNTS["inputs"] += 1
    try:
        ruleset = read_dump(SourceFile("fuzz.v4", text), "iptables-save")
        policy = api.to_policy(ruleset)
    except RulecError as exc:
        assert exc.diagnostics and exc.render()
        COUNTS["clean errors"] += 1
        return
    COUNTS["imported"] += 1
    for target in ("iptables", "ip6tables", "nft"):
        try:
            artifact = api.compile_text(policy, target)
        except RulecError:
            COUNTS["compile errors"] += 1
            continue
        verdict = load(artifact, shared_ns)
        COUNTS["loads"] += 1
        assert verdict.ok, (f"imported and compiled for {target}, but {verdict.loader} "
                            f"rejects it:\n{verdict.message}\n--- dump:\n{text}\n"
                            f"--- policy:\n{policy}")
