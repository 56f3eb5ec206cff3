"""The built wheel, installed into a fresh environment away from the source tree, carries the
grammar and compiles an example: a checkout-only grammar path would pass every other test."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("hatchling",
                    reason="building the wheel needs hatchling (pip install hatchling)")


def test_installed_wheel_parses_an_example(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist), str(ROOT)], check=True, timeout=300)
    wheel = next(dist.glob("rulec-*.whl"))
    env_dir = tmp_path / "env"
    # System site-packages supplies lark and PyYAML; rulec itself comes only from the wheel.
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--force-reinstall", str(wheel)], check=True, timeout=300)
    example = (ROOT / "examples" / "host-firewall.rules").read_text(encoding="utf-8")
    script = (
        "import sys, rulec, rulec.frontends.grammar as g\n"
        "assert 'site-packages' in rulec.__file__, rulec.__file__  # not the checkout\n"
        "from importlib import resources\n"
        "assert resources.files('rulec').joinpath('grammars', 'policy.lark').is_file()\n"
        "print(rulec.compile_text(sys.stdin.read(), 'nft').text.count('accept'))\n"
    )
    result = subprocess.run([python, "-I", "-c", script], input=example, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 5
