"""The two nft targets of a policy put the same objects into the kernel.

`nft` text and `nft-json` are printed from one tree (rulec.backends.nft.tree); each target is
loaded into its own fresh namespace and what `nft -j list ruleset` reads back must be equal,
handles aside (they count every object the kernel ever numbered). Policies: every golden case
and example, and the kernel tests' policies with named sets, verdict maps and concatenations,
compiled with the default pipeline and with none; then element comments and a hand-built tree
with three-field concatenations.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from rulec import api
from rulec.backends import Artifact
from rulec.backends.nft import tree
from rulec.backends.nftables import print_script as print_text
from rulec.backends.nftables_json import print_script as print_json
from rulec.diagnostics import RulecError
from rulec.kernel import load, namespace
from rulec.kernel.readback import nft_list
from tests.backends.trio_tree import trio_script
from tests.golden.cases import ROOT, case_files, options_of
from tests.kernel import test_nft_maps, test_optimised_vs_plain

TARGETS = ("nft", "nft-json")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import enterprise_policy  # noqa: E402

POLICIES = {
    # Commented terms that merge: element comments in anonymous sets, named sets and maps.
    "enterprise": enterprise_policy.to_rulec(enterprise_policy.generate(300, seed=3)),
    "maps": test_nft_maps.POLICY,
    "pairs": test_nft_maps.PAIRS,
    "mesh": test_optimised_vs_plain.MESH,
    "chains": test_optimised_vs_plain.CHAINS,
    "sets": """define v4 = { 198.18.0.0/24, 198.18.5.0/24, 198.18.7.1 }
define v6 = { 2001:db8::/32, 2001:db8:1::1 }
table inet filter {
  chain INPUT policy drop {
    accept ct state established,related
    accept tcp from { $v4, $v6 } dport { 22, 80-90, 443 }
    accept udp from $v4 dport { 53, 123 }
    drop tcp from $v6 dport 25
    accept icmp type { echo-request, echo-reply }
    jump web in eth0
    jump web in eth1
    accept tcp dport 8443 in eth2
    drop tcp dport 8443 in eth3
  }
  chain web { accept tcp dport { 8080, 8081 } }
}
""",
}


def _normalised(value: Any) -> Any:
    """A listing without handles (and without metainfo, which names the nft version)."""
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items() if k != "handle"}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    return value


def _held(artifact: Artifact, ns_tag: str) -> list[Any]:
    with namespace(ns_tag) as ns:
        verdict = load(artifact, ns)
        assert verdict.ok, f"{verdict.loader}: {verdict.message}\n{artifact.text}"
        listing = nft_list(ns)["nftables"]
    return [_normalised(item) for item in listing if "metainfo" not in item]


def _compile(source: Path | str, target: str, passes: tuple[str, ...] | None) -> Artifact:
    if isinstance(source, Path):
        return api.compile_files([source], target, passes=passes).artifact
    return api.compile_text(source, target, passes=passes)


def _both_or_skip(source: Path | str, passes: tuple[str, ...] | None) -> list[Artifact]:
    try:
        return [_compile(source, target, passes) for target in TARGETS]
    except RulecError as exc:  # e.g. E0409: an interface name only the text target carries
        pytest.skip(f"a target refuses it: {exc.diagnostics[0].code}")


def _assert_same_objects(artifacts: list[Artifact]) -> list[Any]:
    as_text, as_json = (_held(a, "agree") for a in artifacts)
    assert as_text == as_json
    return as_text


SOURCES: list[Any] = [
    *(pytest.param(case, id=str(case.relative_to(ROOT))) for case in case_files()
      if "nft" in options_of(case).targets and "nft-json" in options_of(case).targets),
    *(pytest.param(text, id=name) for name, text in POLICIES.items()),
]


@pytest.mark.parametrize("passes", [None, ()], ids=["default", "O0"])
@pytest.mark.parametrize("source", SOURCES)
def test_text_and_json_load_the_same_objects(source: Path | str,
                                             passes: tuple[str, ...] | None) -> None:
    held = _assert_same_objects(_both_or_skip(source, passes))
    assert any("table" in item for item in held)


def test_the_corpus_has_sets_maps_and_concatenations() -> None:
    """So that the comparison above covers what the two printers spell most differently."""
    texts = [_compile(text, "nft", None).text for text in POLICIES.values()]
    joined = "\n".join(texts)
    assert "elements = {" in joined and " vmap {" in joined and " . " in joined
    assert "iifname vmap" in joined or 'iifname { "' in joined


def _elements(value: Any) -> list[Any]:
    """Every member of a named set, an anonymous set or a verdict map in a listing."""
    found: list[Any] = []
    if isinstance(value, dict):
        if "set" in value and isinstance(value["set"], dict):  # a named set's declaration
            found += value["set"].get("elem", [])
        for key, inner in value.items():
            if key == "set" and isinstance(inner, list):
                found += [e[0] if isinstance(e, list) else e for e in inner]  # map: [key, verdict]
            found += _elements(inner)
    elif isinstance(value, list):
        for inner in value:
            found += _elements(inner)
    return found


@pytest.mark.parametrize("name", ["maps", "pairs", "sets"])
def test_element_comments_load_from_both_targets(monkeypatch: pytest.MonkeyPatch,
                                                 name: str) -> None:
    """Every element the tree builds goes through tree.set_element(): given a note for each,
    both targets load them as element comments and read back the same. nft 1.0.6 folds a
    one-element anonymous set into a plain comparison and keeps no comment for it."""
    build = tree.set_element
    monkeypatch.setattr(tree, "set_element",
                        lambda value, note=None: build(value, f"term t{next(serial):05d}"))
    artifacts = []
    for target in TARGETS:
        serial = itertools.count()  # the same notes for both targets
        artifacts.append(_compile(POLICIES[name], target, None))
    # The same tree, hence the same notes, for both targets.
    assert artifacts[0].text.count(' comment "term t') == artifacts[1].text.count(
        '"comment": "term t')
    held = _assert_same_objects(artifacts)
    members = _elements(held)
    assert members, "the policy has sets or maps"
    assert all(isinstance(m, dict) and m.get("elem", {}).get("comment", "").startswith("term t")
               for m in members), members
    printed = _elements(json.loads(artifacts[1].text))
    lone = sum(1 for m in printed if m in _lone_elements(json.loads(artifacts[1].text)))
    assert len(members) == len(printed) - lone


def _lone_elements(value: Any) -> list[Any]:
    """The members of one-element anonymous sets, which the kernel lists as a plain value."""
    if isinstance(value, dict):
        inner = value.get("set")
        own = inner if isinstance(inner, list) and len(inner) == 1 else []
        return own + [m for v in value.values() for m in _lone_elements(v)]
    if isinstance(value, list):
        return [m for v in value for m in _lone_elements(v)]
    return []


def test_three_field_concatenations_load_the_same_from_both_targets() -> None:
    """A tree the IR cannot produce yet: n-field concatenations in a named set, an anonymous
    set and a verdict map, with element comments, printed both ways."""
    script = trio_script()
    artifacts = [Artifact(target="nft", text=print_text(script), load_command=("nft", "-f", "-")),
                 Artifact(target="nft-json", text=print_json(script),
                          load_command=("nft", "-j", "-f", "-"))]
    held = _assert_same_objects(artifacts)
    comments = sorted(m["elem"]["comment"] for m in _elements(held) if isinstance(m, dict)
                      and "elem" in m)
    assert comments == ["t1", "t2", "t3", "t4"]
    assert any(len(m["elem"]["val"]["concat"]) == 3 for m in _elements(held)
               if isinstance(m, dict) and "elem" in m)
