"""Discovery of golden cases: tests/golden/cases/**/*.rules and examples/*.rules."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
TARGET_SUFFIX = {"iptables": ".iptables", "ip6tables": ".ip6tables", "nft": ".nft",
                 "nft-json": ".nft.json"}


@dataclass(frozen=True)
class CaseOptions:
    noflush: bool = False


def options_of(case: Path) -> CaseOptions:
    """Options from the case's leading comment lines: `# noflush`."""
    header = []
    for line in case.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line[1:].strip())
    return CaseOptions(noflush="noflush" in header)


def case_files() -> list[Path]:
    cases = sorted((ROOT / "tests" / "golden" / "cases").rglob("*.rules"))
    return cases + sorted((ROOT / "examples").glob("*.rules"))


def golden_cases() -> list[tuple[Path, str]]:
    return [(case, target) for case in case_files() for target in TARGET_SUFFIX]
