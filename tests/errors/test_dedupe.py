"""One problem met by several generated rules at one place is said once."""

from __future__ import annotations

from rulec.diagnostics import RulecError, SourceFile, error


def test_identical_diagnostics_are_said_once() -> None:
    source = SourceFile("host.rules", "docker {}\n")
    same = error("E0409", "interface name 'tcp' cannot be written in nft-json",
                 source.span(0, 6))
    other = error("E0409", "interface name 'tcp' cannot be written in nft-json",
                  source.span(7, 9))
    assert RulecError([same, same, other, same]).diagnostics == (same, other)
