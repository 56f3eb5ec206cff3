"""Hostile text in a policy can never add a rule: from the DSL, through every target, into the
kernel. Each hostile comment, log prefix or interface name either stops the compilation with a
positioned error, or loads and the kernel then holds exactly the rules compiled, with the text
intact where the target keeps it."""

from __future__ import annotations

import json

import pytest

from rulec import api
from rulec.backends import Artifact
from rulec.diagnostics import RulecError
from rulec.kernel import load, namespace
from rulec.kernel.readback import iptables_rules, nft_list
from tests.backends.test_iptables import restore_tokens
from tests.kernel.probe import backend_or_skip

pytestmark = pytest.mark.kernel

TARGETS = ("iptables", "nft", "nft-json")

# DSL spellings: `\"` is a quote, `\\` a backslash; the rest is taken as written.
HOSTILE = {
    "restore-flag": r'x\" -j ACCEPT',
    "restore-comment": r'a\\\" -A INPUT -j ACCEPT #',
    "restore-commit": "COMMIT -A INPUT -j DROP",
    "nft-brace": "} } table ip evil { chain c { accept",
    "nft-semicolon": "x; add rule ip rulec-filter INPUT accept",
    "single-quote": "it's ok",
    "backslash": r"back\\slash",
    "shell": "$(reboot) `id` %s",
    "hash": "# not a comment",
    "unicode": "ünïcödé €",
}


def _policy(clause: str) -> str:
    return ("table ip filter {\n"
            "  chain INPUT policy drop {\n"
            f"    accept tcp dport 22 {clause}\n"
            "    drop udp\n"
            "  }\n"
            "}\n")


def _compile(text: str, target: str) -> Artifact | RulecError:
    with backend_or_skip():
        try:
            return api.compile_text(text, target, name="hostile.rules")
        except RulecError as exc:
            return exc


def _held_rules(artifact: Artifact) -> list[str]:
    """What the kernel holds after loading, one entry per rule of the INPUT chain."""
    with namespace("inject") as ns:
        verdict = load(artifact, ns, "nft" if artifact.target == "iptables" else None)
        assert verdict.ok, f"{verdict.loader}: {verdict.message}\n{artifact.text}"
        if artifact.target == "iptables":
            return [line for line in iptables_rules(ns, "ip", "nft") if line.startswith("-A")]
        return [json.dumps(item["rule"], sort_keys=True) for item in nft_list(ns)["nftables"]
                if "rule" in item]


def _check(text: str, target: str, expected_text: str | None) -> None:
    result = _compile(text, target)
    if isinstance(result, RulecError):
        # Refused: every diagnostic points into the policy, and nothing was printed.
        assert all(d.span is not None and d.span.file == "hostile.rules"
                   for d in result.diagnostics), result
        return
    held = _held_rules(result)
    assert len(held) == 2, held  # the two rules written, no more
    if expected_text is None:
        return
    if target == "iptables":  # the kernel's own iptables-save quoting, tokenized back
        comments = [t[t.index("--comment") + 1] for t in map(restore_tokens, held)
                    if "--comment" in t]
    else:
        comments = [json.loads(line).get("comment") for line in held]
    assert expected_text in comments, (expected_text, held)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_comment(name: str, target: str) -> None:
    raw = HOSTILE[name]
    meant = raw.replace('\\"', '"').replace("\\\\", "\\")
    _check(_policy(f'comment "{raw}"'), target, meant)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", ["restore-flag", "nft-brace", "nft-semicolon", "hash"])
def test_hostile_log_prefix(name: str, target: str) -> None:
    text = ("table ip filter {\n  chain INPUT {\n"
            f'    log prefix "{HOSTILE[name]}" tcp dport 22\n    drop udp\n  }}\n}}\n')
    _check(text.replace("}}", "}"), target, None)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("iface", ['"eth0 -j ACCEPT"', '"e\\"th"', '"a}b"', '"x;y"'])
def test_hostile_interface_name(iface: str, target: str) -> None:
    _check(_policy(f"in {iface}"), target, None)


def test_hostile_chain_name_is_a_positioned_error() -> None:
    text = "table ip filter {\n  chain INPUT {\n    jump x-j\n  }\n  chain x-j { accept }\n}\n"
    for target in TARGETS:
        result = _compile(text, target)
        assert not isinstance(result, RulecError) or all(
            d.span is not None for d in result.diagnostics)
    with pytest.raises(RulecError) as info:
        api.parse_text('table ip filter {\n  chain "a b" { accept }\n}\n', "hostile.rules")
    assert all(d.span is not None for d in info.value.diagnostics)
