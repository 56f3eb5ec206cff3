"""Every golden case and example that compiles for a target loads into a fresh namespace with
every loader of that target (iptables-nft and -legacy; libnftables or nft)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rulec import api
from rulec.diagnostics import RulecError
from rulec.kernel import validate_artifact
from tests.golden.cases import ROOT, golden_cases, options_of
from tests.kernel.probe import backend_or_skip


@pytest.mark.parametrize(("case", "target"), golden_cases(),
                         ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else v)
def test_output_loads(case: Path, target: str) -> None:
    noflush = options_of(case).noflush and target in ("iptables", "ip6tables")
    with backend_or_skip():
        try:
            artifact = api.compile_files([case], target, noflush=noflush).artifact
        except RulecError as exc:  # no output to load; the golden tests pin the error
            pytest.skip(f"does not compile for {target}: {exc}")
    verdict = validate_artifact(artifact)
    assert verdict.ok, f"{verdict.loader}: {verdict.message}\n--- {target}:\n{artifact.text}"
