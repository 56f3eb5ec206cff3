"""rulec.kernel on hand-written restore and nft text: loads, rejections, read-back, topology."""

from __future__ import annotations

import os
import subprocess

import pytest

from rulec.api import parse_text
from rulec.backends.base import Artifact
from rulec.kernel import (
    Namespace,
    iptables_rules,
    load,
    namespace,
    nft_list,
    validate,
    validate_artifact,
)
from rulec.kernel.netns import PREFIX
from rulec.kernel.readback import Variant, legacy_table
from rulec.kernel.validate import nftables_module
from tests.kernel import probe
from tests.kernel.probe import Topology

RESTORE_OK = """\
*filter
:FORWARD DROP [0:0]
:WEB - [0:0]
-A FORWARD -p tcp -m tcp --dport 80 -j WEB
-A WEB -j ACCEPT
COMMIT
"""
NFT_OK = """\
table inet filter {
  chain forward {
    type filter hook forward priority filter; policy drop;
    tcp dport 80 accept
  }
}
"""


def restore(text: str, target: str = "iptables") -> Artifact:
    return Artifact(target=target, text=text, load_command=(f"{target}-restore",))


def nft(text: str, target: str = "nft") -> Artifact:
    return Artifact(target=target, text=text, load_command=("nft", "-f", "-"))


def own_namespaces() -> set[str]:
    """This process's namespaces: other runs on the machine come and go meanwhile."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    mine = f"{PREFIX}{os.getpid()}-"
    return {line.split()[0] for line in out.stdout.splitlines() if line.startswith(mine)}


def test_valid_restore_loads_with_both_variants() -> None:
    """A correct file is accepted by iptables-nft-restore and then iptables-legacy-restore."""
    verdict = validate_artifact(restore(RESTORE_OK))
    assert verdict.ok, verdict.message
    assert verdict.loader == "iptables-nft-restore, iptables-legacy-restore"


def test_validation_leaves_no_namespace_behind() -> None:
    """The scratch namespace is gone afterwards, whether the load passed or failed."""
    before = own_namespaces()
    validate_artifact(restore(RESTORE_OK))
    validate_artifact(restore("*filter\n-A INPUT -j NOPE\nCOMMIT\n"))
    assert own_namespaces() == before


@pytest.mark.parametrize("variant", ["nft", "legacy"])
def test_kernel_rejection_is_a_verdict_with_the_reason(variant: str) -> None:
    """DNAT in the filter table passes the parser but not the kernel: ok False, reason given."""
    text = "*filter\n-A INPUT -p tcp -j DNAT --to-destination 198.18.2.2\nCOMMIT\n"
    verdict = validate_artifact(restore(text), variant=variant)
    assert not verdict.ok
    assert verdict.loader == f"iptables-{variant}-restore"
    assert "failed" in verdict.message


def test_variants_disagree_on_policy_of_user_chain() -> None:
    """iptables-nft silently ignores a policy on a user chain; legacy rejects it, so the default
    (both variants) reports the legacy failure."""
    text = "*filter\n:UC DROP [0:0]\nCOMMIT\n"
    assert validate_artifact(restore(text), variant="nft").ok
    verdict = validate_artifact(restore(text))
    assert not verdict.ok and verdict.loader == "iptables-legacy-restore"
    assert "Bad built-in chain name" in verdict.message
    assert verdict.summary().startswith("rejected: iptables (iptables-legacy-restore)\n  ")


def test_ip6tables_loads_through_ip6tables_restore() -> None:
    text = "*filter\n-A FORWARD -s fd00:1::/64 -j ACCEPT\nCOMMIT\n"
    verdict = validate_artifact(restore(text, "ip6tables"))
    assert verdict.ok, verdict.message
    assert "ip6tables-legacy-restore" in verdict.loader


NFT_LOADERS = ["cli", pytest.param("libnftables", marks=pytest.mark.skipif(
    nftables_module() is None, reason="libnftables Python bindings not loadable"))]


@pytest.mark.parametrize("variant", NFT_LOADERS)
def test_nft_loads_and_rejects(variant: str) -> None:
    """nft text loads; masquerade in prerouting is refused at commit time, with its line."""
    assert validate_artifact(nft(NFT_OK), variant=variant).ok
    bad = "table ip nat {\n chain pre {\n  type nat hook prerouting priority dstnat;\n" \
          "  masquerade\n }\n}\n"
    verdict = validate_artifact(nft(bad), variant=variant)
    assert not verdict.ok
    assert "Operation not supported" in verdict.message
    assert ":4:" in verdict.message  # the masquerade line, not line 1


@pytest.mark.parametrize("variant", NFT_LOADERS)
def test_nft_json_loads(variant: str) -> None:
    text = ('{"nftables": [{"add": {"table": {"family": "inet", "name": "t"}}}, {"add": {"chain":'
            ' {"family": "inet", "table": "t", "name": "c", "type": "filter", "hook": "input",'
            ' "prio": 0, "policy": "accept"}}}]}')
    verdict = validate_artifact(nft(text, "nft-json"), variant=variant)
    assert verdict.ok, verdict.message
    broken = validate_artifact(nft(text.replace('"filter"', '"filtre"'), "nft-json"),
                               variant=variant)
    assert not broken.ok


@pytest.mark.parametrize("variant", ["nft", "legacy"])
def test_readback_of_iptables(netns: Namespace, variant: Variant) -> None:
    """What was loaded reads back as the same chains and rules, without counters or comments."""
    assert load(restore(RESTORE_OK), netns, variant).ok
    assert iptables_rules(netns, "ip", variant) == [
        "*filter", ":INPUT ACCEPT", ":FORWARD DROP", ":OUTPUT ACCEPT", ":WEB -",
        "-A FORWARD -p tcp -m tcp --dport 80 -j WEB", "-A WEB -j ACCEPT", "COMMIT"]


def test_readback_of_nft(netns: Namespace) -> None:
    assert load(nft(NFT_OK), netns).ok
    chains = [o["chain"] for o in nft_list(netns)["nftables"] if "chain" in o]
    assert [(c["table"], c["name"], c["hook"], c["policy"]) for c in chains] == [
        ("filter", "forward", "forward", "drop")]


def test_topology_routes_both_families(topology: Topology) -> None:
    """Without rules the router forwards IPv4 and IPv6; the server sees the real client address,
    whichever secondary address the client chooses."""
    t = topology
    with probe.server(t.server, [8080]), probe.server(t.server, [5353], "udp"):
        out = probe.attempts(t.client, [
            probe.Attempt(t.server4, 8080), probe.Attempt(t.server4, 8080, src=t.client4_b),
            probe.Attempt(t.server6, 8080), probe.Attempt(t.server4, 5353, "udp")])
    assert [o.peer for o in out] == [t.client4, t.client4_b, t.client6, t.client4]
    assert all(o.connected for o in out)


def test_hand_written_policy_drops_in_the_router(topology: Topology) -> None:
    """A FORWARD drop policy loaded into the router stops a connection it used to let through."""
    t = topology
    with probe.server(t.server, [8080, 8081]):
        text = ("*filter\n:FORWARD DROP [0:0]\n-A FORWARD -m conntrack --ctstate "
                "ESTABLISHED,RELATED -j ACCEPT\n-A FORWARD -p tcp --dport 8080 -j ACCEPT\nCOMMIT\n")
        assert load(restore(text), t.router, "nft").ok
        ok, dropped = probe.attempts(t.client, [probe.Attempt(t.server4, 8080),
                                                probe.Attempt(t.server4, 8081)])
    assert ok.connected and ok.peer == t.client4
    assert not dropped.connected


def test_legacy_table_in_process(netns: Namespace) -> None:
    """python-iptables reads the namespace's legacy table, and reading a second namespace
    neither shows nor writes back the first one's rules."""
    pytest.importorskip("iptc", reason="python-iptables not installed")
    assert load(restore(RESTORE_OK), netns, "legacy").ok
    first = legacy_table(netns)
    assert first["FORWARD"] == {"policy": "DROP", "rules": [
        {"protocol": "tcp", "tcp": {"dport": "80"}, "target": "WEB"}]}
    with namespace("t") as other:
        assert legacy_table(other)["FORWARD"] == {"policy": "ACCEPT", "rules": []}
    assert legacy_table(netns) == first


SAMPLE = """\
table inet filter {
  chain FORWARD policy drop {
    accept ct state established,related
    accept tcp dport 8080
    accept udp dport 5353 from 198.18.1.3
    accept tcp dport { 80, 443, 9000-9100 } from != 198.18.1.4
  }
}
table ip nat {
  chain PREROUTING { dnat to 198.18.2.2:8080 tcp dport 80 in cl0 }
  chain POSTROUTING { masquerade out sv0 }
}
table ip mangle {
  chain FORWARD { mss clamp to pmtu tcp flags syn / syn,rst out sv0 }
}
"""


@pytest.mark.parametrize("target", ["iptables", "ip6tables", "nft", "nft-json"])
def test_validate_emits_then_loads(target: str) -> None:
    """validate() takes the IR: it emits for the target and every loader accepts the result."""
    with probe.backend_or_skip():
        verdict = validate(parse_text(SAMPLE), target)
    assert verdict.ok, verdict.message
    assert verdict.target == target
