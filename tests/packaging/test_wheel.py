"""The built wheel, installed with its declared dependencies into an empty environment away from
the source tree, carries the grammar and compiles an example: a checkout-only grammar path, or a
dependency missing from pyproject.toml, would pass every other test."""

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
    wheelhouse = tmp_path / "wheelhouse"
    # rulec's wheel and a wheel of every dependency it declares (from the index or pip's cache):
    # the environment below installs from this directory alone.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "-q",
                    "-w", str(wheelhouse), str(ROOT)], check=True, timeout=600)
    env_dir = tmp_path / "env"
    # No system site-packages: whatever the base interpreter has installed must not count.
    venv.create(env_dir, system_site_packages=False, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-I", "-m", "pip", "install", "-q", "--no-index",
                    "--find-links", str(wheelhouse), "rulec"], check=True, timeout=300)
    example = (ROOT / "examples" / "host-firewall.rules").read_text(encoding="utf-8")
    script = (
        "import sys, rulec\n"
        "assert 'site-packages' in rulec.__file__, rulec.__file__  # not the checkout\n"
        "from importlib import resources\n"
        "assert resources.files('rulec').joinpath('grammars', 'policy.lark').is_file()\n"
        "print(rulec.compile_text(sys.stdin.read(), 'nft').text.count('accept'))\n"
    )
    result = subprocess.run([python, "-I", "-c", script], input=example, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 5
    console = subprocess.run([env_dir / "bin" / "rulec", "compile", "-t", "iptables",
                              str(ROOT / "examples" / "host-firewall.rules")],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert console.returncode == 0, console.stderr
    assert "COMMIT" in console.stdout
