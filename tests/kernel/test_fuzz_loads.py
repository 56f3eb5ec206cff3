"""The DSL fuzzer's successful compiles, loaded: whatever rulec emits for a fuzzed policy, every
loader of that target accepts (iptables-nft and iptables-legacy for iptables and ip6tables,
with and without --ipset, libnftables for nft and nft-json). "Compiled, but the kernel
rejects it" is a rulec bug.

The inputs are tests/frontend/test_fuzz.py's (random edits of the examples, docs and error
cases; rules drawn from the grammar inside a valid table), which mostly fail to parse, and
valid rulesets drawn as IR (tests/strategies.py) and printed as policy text, which reach every
clause and action with hostile values. RULEC_FUZZ_EXAMPLES sets the number drawn (default
400, about 15 s here: some 150 of them parse and 300 compiles load) for a longer campaign.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rulec import api
from rulec.diagnostics import RulecError
from rulec.ir.printer import print_ruleset
from rulec.kernel import Namespace, load, namespace
from tests.frontend.test_fuzz import RULES, mutated
from tests.strategies import rulesets

pytestmark = pytest.mark.kernel

EXAMPLES = int(os.environ.get("RULEC_FUZZ_EXAMPLES", "400"))
COUNTS: Counter[str] = Counter()


@pytest.fixture(scope="module")
def shared_ns() -> Iterator[Namespace]:
    """One namespace for every load: each artifact replaces the tables it holds (iptables-
    restore without --noflush, nft's script deletes every rulec-* table first)."""
    with namespace("fuzz") as ns:
        yield ns
    print(f"\nfuzz loads: {dict(sorted(COUNTS.items()))}")


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=st.one_of(RULES, mutated(), rulesets().map(print_ruleset)))
def test_every_successful_compile_loads(text: str, shared_ns: Namespace) -> None:
    COUNTS["inputs"] += 1
    try:
        ruleset = api.parse_text(text, "fuzz.rules")
    except RulecError:
        COUNTS["parse errors"] += 1
        return
    COUNTS["parsed"] += 1
    # iptables also with --ipset: its sets' entry comments carry the merged terms' texts.
    variants = [(t, False) for t in api.TARGETS] + [("iptables", True), ("ip6tables", True)]
    for target, ipset in variants:
        try:
            artifact = api.emit(ruleset, target, ipset=ipset)
        except RulecError:
            COUNTS["compile errors"] += 1
            continue
        COUNTS["compiled"] += 1
        verdict = load(artifact, shared_ns)
        COUNTS["loads"] += 1
        assert verdict.ok, (f"{target}{' --ipset' * ipset} compiled, but {verdict.loader} "
                            f"rejects it:\n"
                            f"{verdict.message}\n--- policy:\n{text}\n--- {target}:\n"
                            f"{artifact.text}")
