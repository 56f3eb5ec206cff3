"""`rulec apply`, `confirm` and `rollback` refuse what they cannot do with exit 2 and one line
that says why, before touching the kernel or the state directory's saved states."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import Run

ROOT = Path(__file__).resolve().parents[2]
POLICY = str(ROOT / "examples" / "host-firewall.rules")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="these cases run as root")


@needs_root
@pytest.mark.parametrize("args", [
    ["apply", "--confirm", "-1", POLICY],
    ["apply", "--detach", POLICY],
])
def test_bad_confirmation_options_are_usage_errors(run: Run, tmp_path: Path,
                                                  args: list[str]) -> None:
    code, _, err = run(*args, "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert code == 2
    assert "--confirm" in err
    assert not (tmp_path / "state").exists()


@needs_root
def test_nothing_to_roll_back_or_confirm_is_said_plainly(run: Run, tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    code, _, err = run("rollback", "--state-dir", state, cwd=tmp_path)
    assert (code, err.strip()) == (2, f"rulec rollback: error: nothing to roll back to: no "
                                      f"saved state in {state}")
    code, _, err = run("confirm", "--state-dir", state, cwd=tmp_path)
    assert code == 2 and "no rulec apply is waiting for confirmation" in err


@needs_root
def test_a_damaged_journal_is_named_not_trusted(run: Run, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "journal.json").write_text('{"id": 1')
    code, _, err = run("rollback", "--state-dir", str(state), cwd=tmp_path)
    assert code == 2 and "journal.json is not a rulec journal" in err


@needs_root
def test_without_root_apply_says_it_needs_root(tmp_path: Path) -> None:
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-m", "rulec", "apply", "--state-dir",
                           str(tmp_path / "state"), POLICY], capture_output=True, text=True,
                          cwd=ROOT, check=False, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "needs root" in done.stderr and "Traceback" not in done.stderr
