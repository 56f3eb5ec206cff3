"""Fuzzing the Kubernetes frontend (inputs: tests/k8s/fuzz.py): whatever the inventory and the
policies say, `rulec compile --inventory` compiles them or answers with positioned errors and
exit 1, never rulec's internal error (exit 3) or a hang; and a sample of the inputs that
compile is loaded into a throwaway namespace for every target, so that output the kernel
would reject is caught here.

A longer run: `python -m tests.k8s.fuzz_campaign --examples 5000` (counts, not assertions).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings

from rulec import api, cli
from rulec.diagnostics import RulecError
from rulec.kernel import available, validate_artifact
from tests.k8s.fuzz import SEEDS, TARGETS, Input, inputs, run_cli, time_limit, write

FUZZ = settings(deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
# Each example loads four targets (five loaders and the nft CLI) in ~0.2 s.
KERNEL_EXAMPLES = 40
# A diagnostic's first line: `file:line:col: error[CODE]: ...` (notes and echoed source
# lines follow it; the summary line starts with `rulec:`).
HEADER = re.compile(r"^(?!rulec: |note: | )(.*)$")
POSITIONED = re.compile(r"^.+:\d+:\d+: (error|warning)\[[EW]\d{4}\]: ")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("k8s-fuzz")


def test_seeds_are_loaded() -> None:
    assert len(SEEDS) > 30


@settings(FUZZ, max_examples=max(500, settings.default.max_examples))  # ~10 ms each
@given(case=inputs())
def test_every_input_compiles_or_is_a_positioned_error(case: Input, workdir: Path) -> None:
    code, out, err = run_cli(workdir, case)
    assert "Traceback" not in err and "internal error" not in err, err[-3000:]
    assert code in (cli.EXIT_OK, cli.EXIT_POLICY), err[-3000:]
    if code == cli.EXIT_POLICY:
        assert out == "" and "nothing was emitted" in err
    else:
        assert out
    for line in err.splitlines():
        header = HEADER.match(line)
        if header and line.strip() and not line.startswith("rulec:"):
            assert POSITIONED.match(line), line


UNAVAILABLE = available()


@pytest.mark.kernel
@pytest.mark.skipif(UNAVAILABLE is not None, reason=f"kernel: {UNAVAILABLE}")
@settings(FUZZ, max_examples=KERNEL_EXAMPLES)
@given(case=inputs(plausible=True))
def test_fuzzed_inputs_that_compile_load_in_the_kernel(case: Input, workdir: Path) -> None:
    inventory, policy = write(workdir, case)
    artifacts = []
    for target in TARGETS:
        try:
            with time_limit(30):
                artifacts.append(api.compile_k8s_files(inventory, [policy], target).artifact)
        except RulecError:
            pass
    assume(len(artifacts) == len(TARGETS))  # only inputs that compile, for every target
    for artifact in artifacts:
        for variant in (None, "cli") if artifact.target.startswith("nft") else (None,):
            verdict = validate_artifact(artifact, variant=variant)
            assert verdict.ok, f"{verdict.summary()}\n--- {artifact.target}:\n{artifact.text}"
