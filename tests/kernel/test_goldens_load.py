"""Every golden case and example that compiles for a target loads into a fresh namespace with
every loader of that target (iptables-nft and -legacy; libnftables or nft), and what the kernel
then holds reads back as what was compiled."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from rulec import api
from rulec.backends import Artifact
from rulec.diagnostics import RulecError
from rulec.kernel import load, namespace
from rulec.kernel.readback import iptables_rules, nft_list, rule_lines
from tests.golden.cases import ROOT, golden_cases, options_of
from tests.kernel.probe import backend_or_skip


def _compile(case: Path, target: str) -> Artifact:
    noflush = options_of(case).noflush and target in ("iptables", "ip6tables")
    with backend_or_skip():
        try:
            return api.compile_files([case], target, noflush=noflush).artifact
        except RulecError as exc:  # no output to load; the golden tests pin the error
            pytest.skip(f"does not compile for {target}: {exc}")


def _chains(lines: list[str]) -> dict[tuple[str, str], list[str]]:
    """(table, chain) -> its `:` declaration (policy only) and `-A` lines, in order."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    table = ""
    for line in lines:
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            name, policy = line[1:].split()[:2]
            out[(table, name)].insert(0, f"policy {policy}")
        elif line.startswith("-A "):
            out[(table, line.split()[1])].append(line)
    return out


def _check_iptables(artifact: Artifact, noflush: bool) -> None:
    family = "ip6" if artifact.target == "ip6tables" else "ip"
    compiled = _chains(rule_lines(artifact.text, keep_empty=True))
    for variant in ("nft", "legacy"):
        with namespace("golden") as ns:
            verdict = load(artifact, ns, variant)
            assert verdict.ok, f"{verdict.loader}: {verdict.message}\n{artifact.text}"
            held = _chains(iptables_rules(ns, family, variant))  # type: ignore[arg-type]
        if noflush:
            # Only declared chains are in the file; a built-in one keeps its default policy.
            for key, lines in compiled.items():
                assert [x for x in held[key] if x.startswith("-A")] == \
                    [x for x in lines if x.startswith("-A")], (variant, key)
        else:
            wanted = {k: v for k, v in compiled.items() if v != ["policy ACCEPT"]}
            got = {k: v for k, v in held.items() if v != ["policy ACCEPT"]}
            assert got == wanted, variant


def _nft_shape(commands: list[dict[str, Any]]) -> dict[tuple[str, str, str], Any]:
    """(family, table, chain) -> chain declaration, rule count and rule comments."""
    shape: dict[tuple[str, str, str], Any] = {}
    for command in commands:
        body = command.get("add", command)  # our script says "add"; a listing does not
        if "chain" in body:
            c = body["chain"]
            declared = {k: c.get(k) for k in ("type", "hook", "prio", "policy")}
            shape[(c["family"], c["table"], c["name"])] = [declared, 0, []]
        elif "rule" in body:
            r = body["rule"]
            entry = shape[(r["family"], r["table"], r["chain"])]
            entry[1] += 1
            entry[2].append(r.get("comment"))
    return shape


def _check_nft(artifact: Artifact, case: Path) -> None:
    as_json = artifact if artifact.target == "nft-json" else _compile(case, "nft-json")
    wanted = _nft_shape(json.loads(as_json.text)["nftables"])
    with namespace("golden") as ns:
        verdict = load(artifact, ns)
        assert verdict.ok, f"{verdict.loader}: {verdict.message}\n{artifact.text}"
        held = _nft_shape(nft_list(ns)["nftables"])
    assert held == wanted


@pytest.mark.parametrize(("case", "target"), golden_cases(),
                         ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else v)
def test_output_loads_and_reads_back(case: Path, target: str) -> None:
    artifact = _compile(case, target)
    if target in ("iptables", "ip6tables"):
        _check_iptables(artifact, options_of(case).noflush)
    else:
        _check_nft(artifact, case)
