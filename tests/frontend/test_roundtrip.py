"""The printer writes the policy language: parsing what it prints gives back the same IR."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given

from rulec.api import parse_text
from rulec.ir.nodes import Ruleset
from rulec.ir.printer import print_ruleset
from rulec.ir.verify import verify
from tests.strategies import rulesets

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.rules"))


@given(rulesets())
def test_parse_print_round_trip(ruleset: Ruleset) -> None:
    verify(ruleset)  # the strategy draws valid rulesets only
    text = print_ruleset(ruleset)
    assert parse_text(text) == ruleset, text


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_round_trip(path: Path) -> None:
    ruleset = parse_text(path.read_text(encoding="utf-8"), str(path))
    text = print_ruleset(ruleset)
    assert parse_text(text) == ruleset
    assert print_ruleset(parse_text(text)) == text


@pytest.mark.parametrize("address", ["::1:9252", "2001:db8::1:8080", "2001:db8::1"])
@pytest.mark.parametrize("ports", [None, (80, 80)])
def test_ipv6_nat_target_round_trips(address: str, ports: tuple[int, int] | None) -> None:
    # Unbracketed, `::1:9252` also reads as ::1 port 9252 (E0319): the printer brackets IPv6.
    text = ("table ip6 nat {\n  chain PREROUTING {\n"
            f"    dnat to [{address}]{f':{ports[0]}' if ports else ''} tcp\n  }}\n}}\n")
    ruleset = parse_text(text)
    assert parse_text(print_ruleset(ruleset)) == ruleset
