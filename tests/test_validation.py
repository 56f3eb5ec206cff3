"""Translation validation: each artefact, read back, does to every packet what the policy as
written does; an artefact that does not is caught with a witness, and nothing is written.

The goldens and examples are validated in tests/golden/test_golden.py; here, drawn rulesets
through the whole optimiser and every backend, and a backend broken on purpose the way two
peers' nft generators were (aerleon#376: port matches silently dropped)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from rulec import api, cli
from rulec.backends.base import Artifact
from rulec.diagnostics import RulecError
from rulec.validation import ValidationError, validate
from tests.passes.strategies import Case, cases

PROPERTY = settings(max_examples=max(100, settings.default.max_examples), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TARGETS = ("iptables", "ip6tables", "nft", "nft-json")

POLICY = """\
table inet filter {
  chain INPUT policy drop {
    accept ct state established,related
    accept tcp dport { 22, 443 } from { 198.51.100.0/24, 2001:db8::/32 } comment "admins"
  }
}
"""


@PROPERTY
@given(case=cases(widening=True))
def test_every_backend_after_the_optimiser_means_what_the_policy_says(case: Case) -> None:
    for target in TARGETS:
        try:
            api.compile_ruleset(case.ruleset, target, validate=True)
        except ValidationError:
            raise
        except RulecError:
            continue  # the target refuses the drawn ruleset: nothing to validate


@PROPERTY
@given(case=cases())
def test_ipsets_are_read_back_with_the_rules(case: Case) -> None:
    try:
        api.compile_ruleset(case.ruleset, "iptables", ipset=True, validate=True)
    except ValidationError:
        raise
    except RulecError:
        pass


def _drop_port_matches(artifact: Artifact) -> Artifact:
    """A copy of the backend's output with every destination-port match gone."""
    if artifact.target in ("iptables", "ip6tables"):
        text = re.sub(r" -m multiport --dports \S+| --dport \S+", "", artifact.text)
    elif artifact.target == "nft":
        text = re.sub(r"(tcp|udp|th) dport (\{[^}]*\}|\S+) ", "", artifact.text)
    else:
        document = json.loads(artifact.text)
        for command in document["nftables"]:
            rule = next(iter(command.values())).get("rule") if "metainfo" not in command else None
            if rule:
                rule["expr"] = [e for e in rule["expr"] if not _is_dport(e)]
        text = json.dumps(document, indent=2)
    assert text != artifact.text, f"the {artifact.target} output had no port match to drop"
    return replace(artifact, text=text)


def _is_dport(expr: dict[str, Any]) -> bool:
    left = expr.get("match", {}).get("left", {})
    return isinstance(left, dict) and left.get("payload", {}).get("field") == "dport"


@pytest.mark.parametrize("target", TARGETS)
def test_a_backend_that_drops_port_matches_fails_validation(target: str) -> None:
    policy = api.parse_text(POLICY, "policy.rules")
    artifact = api.compile_ruleset(policy, target).artifact
    validate(policy, artifact)  # the real backend passes
    with pytest.raises(ValidationError) as caught:
        validate(policy, _drop_port_matches(artifact))
    changes = caught.value.diff.changes  # one per family the artefact covers
    assert len(changes) == (1 if target.startswith("ip") else 2)
    change = changes[0]
    assert {c.kind for c in changes} == {"newly accepted"}  # more permissive: must not ship
    assert change.witness.dport not in (22, 443)
    assert change.old.decided_by is not None and change.new.decided_by is not None
    assert change.old.decided_by.action == "policy drop"  # as written: the chain's policy
    assert str(change.new.decided_by.span).startswith(f"<{target} output>:")  # the bad line


def test_compile_validate_on_a_broken_backend_exits_3_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rulec.backends import iptables

    policy = tmp_path / "policy.rules"
    policy.write_text(POLICY)
    out = tmp_path / "out.v4"
    real = iptables.IptablesBackend.emit

    def broken(self: iptables.IptablesBackend, *args: object, **kwargs: object) -> Artifact:
        return _drop_port_matches(real(self, *args, **kwargs))  # type: ignore[arg-type]

    monkeypatch.setattr(iptables.IptablesBackend, "emit", broken)
    code = cli.main(["compile", "--validate", "-o", str(out), str(policy)])
    err = capsys.readouterr().err
    assert code == cli.EXIT_BUG and not out.exists()
    assert "bug in rulec" in err and "newly accepted" in err and "<iptables output>:" in err
