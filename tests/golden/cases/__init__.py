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
    targets: tuple[str, ...] = tuple(TARGET_SUFFIX)


def options_of(case: Path) -> CaseOptions:
    """Options from the case's leading comment lines: `# noflush`, `# targets: iptables nft`."""
    header = []
    for line in case.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line[1:].strip())
    targets = next((h.split(":", 1)[1].split() for h in header if h.startswith("targets:")),
                   list(TARGET_SUFFIX))
    return CaseOptions(noflush="noflush" in header, targets=tuple(targets))


def case_files() -> list[Path]:
    cases = sorted((ROOT / "tests" / "golden" / "cases").rglob("*.rules"))
    return cases + sorted((ROOT / "examples").glob("*.rules"))


def golden_cases() -> list[tuple[Path, str]]:
    return [(case, target) for case in case_files() for target in options_of(case).targets]
