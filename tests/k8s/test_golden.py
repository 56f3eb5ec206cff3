"""Golden files for NetworkPolicy: each directory under golden/ holds `cluster.yaml` and
`policy.yaml`, and the reviewed output for every target (`expected.<target>`). A missing or
different file writes `expected.<target>.actual` and fails; `pytest --update-goldens -k k8s`
rewrites them deliberately."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from rulec import api

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CASES = sorted(p for p in (HERE / "golden").iterdir() if p.is_dir())
TARGETS = ("iptables", "ip6tables", "nft", "nft-json")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_k8s_golden(case: Path, target: str, request: pytest.FixtureRequest) -> None:
    # Relative paths: spans (and so any diagnostic) do not depend on the checkout's location.
    # both_families: a node is compiled for both halves, so no W0401 for the other one.
    result = api.compile_k8s_files((case / "cluster.yaml").relative_to(ROOT),
                                   [(case / "policy.yaml").relative_to(ROOT)], target,
                                   both_families=target in ("iptables", "ip6tables"))
    actual = result.artifact.text
    expected_path = case / f"expected.{target}"
    actual_path = case / f"expected.{target}.actual"
    if request.config.getoption("--update-goldens", default=False):
        expected_path.write_text(actual, encoding="utf-8")
    expected = expected_path.read_text(encoding="utf-8") if expected_path.exists() else None
    if expected != actual:
        actual_path.write_text(actual, encoding="utf-8")
        diff = "".join(difflib.unified_diff((expected or "").splitlines(True),
                                            actual.splitlines(True), str(expected_path),
                                            str(actual_path)))
        pytest.fail(f"golden mismatch (wrote {actual_path.name}):\n{diff}")
    actual_path.unlink(missing_ok=True)
    assert result.warnings == ()
