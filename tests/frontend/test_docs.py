"""docs/language.md stays true: every ```rules example parses, and its table of error codes
lists exactly the codes the code base can raise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rulec.api import parse_text

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```rules\n(.*?)^```", DOC, re.M | re.S)
# A block starting `# file: NAME` is a file other examples include.
FILES = {m.group(1): block for block in BLOCKS if (m := re.match(r"# file: (\S+)\n", block))}


def test_the_doc_has_examples() -> None:
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_example_parses(block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    parse_text(block, "language.md")


def test_error_table_matches_the_code() -> None:
    # Every code but those of the other input languages (Kubernetes YAML, Docker, ...).
    dsl = {"dsl.py", "grammar.py", "syntax_errors.py"}
    raised = set()
    for path in (ROOT / "rulec").rglob("*.py"):
        if "frontends" in path.parts and path.name not in dsl:
            continue
        raised |= set(re.findall(r'"([EW]\d{4})"', path.read_text(encoding="utf-8")))
    documented = set(re.findall(r"^\| \*\*([EW]\d{4})\*\* \|", DOC, re.M))
    assert sorted(raised - documented) == [], "add these codes to the table in docs/language.md"
    assert sorted(documented - raised) == [], "documented codes nothing raises"
