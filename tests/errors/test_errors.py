"""Error goldens: `rulec check cases/<name>.rules` prints exactly `cases/<name>.err` on stderr and
exits 1. A missing or different .err writes `<name>.err.actual` and fails; `pytest
--update-goldens` rewrites the .err files (review the diff before committing)."""

from __future__ import annotations

import contextlib
import difflib
import io
import re
from pathlib import Path

import pytest

from rulec import cli

CASES = Path(__file__).resolve().parent / "cases"
RULES = sorted(CASES.glob("*.rules"))
# The codes the frontend and ir.verify can raise without a target; each needs a golden.
FRONTEND_CODES = {
    "E0101", "E0102", "E0103", "E0104", "E0105", "E0201", "E0202", "E0203", "E0204", "E0205",
    "E0206", "E0208", "E0209", "E0210", "E0211", "E0212", "E0301", "E0302", "E0303", "E0304",
    "E0305", "E0306", "E0307", "E0308", "E0309", "E0310", "E0311", "E0312", "E0313", "E0314",
    "E0315", "E0316", "E0318", "E0319",
}


def run_check(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(args)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("case", RULES, ids=lambda p: p.stem)
def test_error_golden(case: Path, monkeypatch: pytest.MonkeyPatch,
                      request: pytest.FixtureRequest) -> None:
    code, out, err = run_check(["check", case.name], CASES, monkeypatch)
    assert "Traceback" not in err
    expected_path = case.with_suffix(".err")
    actual_path = case.with_suffix(".err.actual")
    if request.config.getoption("--update-goldens"):
        expected_path.write_text(err, encoding="utf-8")
        actual_path.unlink(missing_ok=True)
    expected = expected_path.read_text(encoding="utf-8") if expected_path.exists() else None
    if expected != err:
        actual_path.write_text(err, encoding="utf-8")
        diff = "".join(difflib.unified_diff((expected or "").splitlines(True),
                                            err.splitlines(True), expected_path.name,
                                            actual_path.name))
        pytest.fail(f"error golden mismatch (wrote {actual_path.name}):\n{diff}")
    actual_path.unlink(missing_ok=True)
    assert (code, out) == (cli.EXIT_POLICY, "")


def test_every_frontend_code_has_a_golden() -> None:
    prefixes = {p.stem.split("_")[0].upper() for p in RULES}
    assert sorted(FRONTEND_CODES - prefixes) == []
    # A golden named after a code shows that code first.
    for path in RULES:
        code = path.stem.split("_")[0].upper()
        err = path.with_suffix(".err")
        if re.fullmatch(r"E\d{4}", code) and err.exists():
            assert f"error[{code}]" in err.read_text(encoding="utf-8").splitlines()[0], path.name


# ------------------------------------------------------------------ usage errors exit 2


def test_check_a_directory_is_a_usage_error(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "policies").mkdir()
    code, out, err = run_check(["check", "policies"], tmp_path, monkeypatch)
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert err.startswith("rulec: error: ") and "policies" in err
    assert "Traceback" not in err


def test_check_a_directory_says_it_is_a_directory(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "policies").mkdir()
    _, _, err = run_check(["check", "policies"], tmp_path, monkeypatch)
    assert err == "rulec: error: policies is a directory, not a policy file\n"


def test_check_a_missing_file_is_a_usage_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run_check(["check", "missing.rules"], tmp_path, monkeypatch)
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert err == "rulec: error: no such file: missing.rules\n"


def test_check_says_each_warning_once_for_all_targets(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "p.rules").write_text(
        "table ip filter {\n  chain INPUT {\n    accept tcp dport 1-100\n"
        "    accept tcp dport 22\n  }\n}\n", encoding="utf-8")
    code, out, err = run_check(["check", "p.rules"], tmp_path, monkeypatch)
    assert code == cli.EXIT_OK and out.startswith("ok: p.rules")
    assert err.count("warning[W0102]") == 1 and "p.rules:4:5" in err


def test_compile_ipset_writes_the_sets_beside_the_rules(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "p.rules").write_text(
        "table ip filter {\n  chain INPUT {\n    accept from { 192.0.2.1, 192.0.2.7 }\n  }\n}\n",
        encoding="utf-8")
    code, out, err = run_check(["compile", "p.rules", "--ipset", "sets"], tmp_path, monkeypatch)
    assert (code, err) == (cli.EXIT_OK, "")
    name = out.split("--match-set ")[1].split()[0]
    assert f"add {name} 192.0.2.7/32" in (tmp_path / "sets").read_text(encoding="utf-8")


def test_compile_ipset_is_for_iptables_only(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "p.rules").write_text("table ip filter { chain INPUT { accept } }\n",
                                      encoding="utf-8")
    code, out, err = run_check(["compile", "p.rules", "-t", "nft", "--ipset", "sets"], tmp_path,
                               monkeypatch)
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert "--ipset applies to --target iptables/ip6tables only" in err
    assert not (tmp_path / "sets").exists()


def test_compile_stats_lists_each_pass_and_marks_a_second_round(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The merge of the two icmp rules changes the ruleset, so the pipeline runs a second
    round, listed under its own heading, and then stops: nothing changed in it."""
    (tmp_path / "p.rules").write_text(
        "table ip filter {\n  chain INPUT {\n    accept icmp type echo-request\n"
        "    accept icmp type echo-reply\n  }\n}\n", encoding="utf-8")
    code, _, err = run_check(["compile", "p.rules", "-t", "nft", "--stats"], tmp_path,
                             monkeypatch)
    assert code == cli.EXIT_OK
    lines = err.splitlines()
    assert "pass merge_icmp_types     rules       2 -> 1      " in "\n".join(lines)
    assert lines.count("round 2: the passes whose input changed") == 1
    assert not any(line.startswith("round 3") for line in lines)
    assert lines[-1] == "kernel rules in ip rulec-filter: 1"
