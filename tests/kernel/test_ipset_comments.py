"""ipset entry comments carry a merged rule's terms, whatever the terms' text: every comment
the iptables target accepts must load with `ipset restore` and list back."""

from __future__ import annotations

import shutil

import pytest

from rulec.api import compile_text
from rulec.kernel import load, namespace

pytestmark = pytest.mark.kernel

# Texts that mean something to ipset's own parser, or are not ASCII.
HOSTILE = ["-exist", "--comment x", "a#b", "ü€", "a'b", "  spaces  ", "$x;y", "{x}", "comment",
           'say "hi"', "back\\slash"]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_terms_text_loads_as_an_ipset_comment(text: str) -> None:
    if shutil.which("ipset") is None:
        pytest.skip("`ipset` is not on PATH (apt-get install ipset)")
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    policy = ("table ip filter {\n  chain INPUT {\n"
              f'    accept from 198.18.0.1 comment "{quoted}"\n'
              '    accept from 198.18.0.5 comment "t2"\n  }\n}\n')
    artifact = compile_text(policy, "iptables", ipset=True)
    assert artifact.ipsets is not None and " comment" in artifact.ipsets
    with namespace("ipsc") as ns:
        verdict = load(artifact, ns, "nft")
        assert verdict.ok, f"{verdict.loader}: {verdict.message}\n{artifact.ipsets}"
        listed = ns.run(["ipset", "list"]).stdout
    kept = text.replace('"', "").replace("\\", "")
    assert f'198.18.0.1 comment "{" " + kept if kept.startswith("-") else kept}"' in listed, listed
    assert '198.18.0.5 comment "t2"' in listed, listed
