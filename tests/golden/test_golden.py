"""Golden files: every case (and every example) compiled for every target matches its reviewed
expected output byte for byte. Where a target must refuse a case, the expected file is
`<case>.<target>.err` and holds the rendered diagnostics. A missing or different file writes
`<name>.actual` and fails; `pytest --update-goldens` rewrites the expected files deliberately.
Every output is also translation-validated (rulec.validation): read back and diffed against
the case as written."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from rulec import api
from rulec.diagnostics import RulecError
from tests.golden.cases import TARGET_SUFFIX, golden_cases, options_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("case", "target"), golden_cases(), ids=lambda v: str(v))
def test_golden(case: Path, target: str, request: pytest.FixtureRequest) -> None:
    options = options_of(case)
    expected_path = case.with_suffix(TARGET_SUFFIX[target])
    try:
        # Validated: the output, read back, is proven to mean what the case says.
        result = api.compile_files([case.relative_to(ROOT)], target,
                                   noflush=options.noflush and target in ("iptables", "ip6tables"),
                                   validate=True)
        actual = result.artifact.text
    except RulecError as exc:
        expected_path = expected_path.with_name(expected_path.name + ".err")
        actual = exc.render() + "\n"
    if request.config.getoption("--update-goldens", default=False):
        expected_path.write_text(actual, encoding="utf-8")
        return
    actual_path = expected_path.with_name(expected_path.name + ".actual")
    expected = expected_path.read_text(encoding="utf-8") if expected_path.exists() else None
    if expected != actual:
        actual_path.write_text(actual, encoding="utf-8")
        diff = "".join(difflib.unified_diff(
            (expected or "").splitlines(True), actual.splitlines(True),
            str(expected_path), str(actual_path)))
        pytest.fail(f"golden mismatch (wrote {actual_path.name}):\n{diff}")
    actual_path.unlink(missing_ok=True)
