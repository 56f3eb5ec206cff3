"""Coexist mode on a live Docker host: dockerd owns its DOCKER* chains, rulec replaces only
DOCKER-USER (`rulec compile --noflush`, loaded with `iptables-restore --noflush`).

The host runs the hand-written dockerd rules (dockerd_reference.py) with a stale operator rule
in DOCKER-USER; afterwards iptables-save must show every other chain exactly as before, and
DOCKER-USER holding exactly rulec's rules, and packets must agree.
"""

from __future__ import annotations

import pytest

from rulec import api
from rulec.backends.base import Artifact
from rulec.kernel import iptables_rules, load, namespace
from rulec.kernel.readback import IpFamily
from tests.docker.dockerd_reference import dockerd_artifacts
from tests.docker.host import EXT4, HOST4, HOST6, STANDARD, docker_host, kernel_unavailable
from tests.docker.test_packets import delivered, udp
from tests.kernel.probe import Attempt

UNAVAILABLE = kernel_unavailable()
pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(UNAVAILABLE is not None, reason=f"kernel tests: {UNAVAILABLE}")]

STALE = ("-p tcp -m tcp --dport 9 -j DROP",)  # once put into DOCKER-USER by hand
RULE = "drop tcp ct original dport 8080 in eth0"
POLICY = (f"table ip filter {{\n  chain DOCKER-USER {{\n    {RULE}\n  }}\n}}\n"
          f"table ip6 filter {{\n  chain DOCKER-USER {{\n    {RULE}\n  }}\n}}\n")

Chains = dict[tuple[str, str], list[str]]


def by_chain(lines: list[str]) -> Chains:
    """rule_lines() output grouped per (table, chain): its declaration, then its rules."""
    chains: Chains = {}
    table = ""
    for line in lines:
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chains[table, line[1:].split()[0]] = [line]
        elif line.startswith("-A "):
            chains[table, line.split()[1]].append(line)
    return chains


def compiled(with_docker_model: bool, target: str) -> Artifact:
    if not with_docker_model:
        return api.compile_text(POLICY, target, noflush=True)
    # With the model present, coexist mode must still emit only the operator's chains.
    return api.compile_text(STANDARD.docker_block() + POLICY, target, noflush=True)


@pytest.mark.parametrize("with_docker_model", [False, True], ids=["docker-user-only",
                                                                   "with-docker-model"])
def test_noflush_replaces_only_docker_user(with_docker_model: bool) -> None:
    families: tuple[tuple[IpFamily, str], ...] = (("ip", "iptables"), ("ip6", "ip6tables"))
    artifacts = {family: compiled(with_docker_model, target) for family, target in families}
    for artifact in artifacts.values():
        assert "--noflush" in artifact.load_command or "-n" in artifact.load_command
        declared = [ln.split()[0][1:] for ln in artifact.text.splitlines() if ln.startswith(":")]
        assert declared == ["DOCKER-USER"], artifact.text  # declaring a chain flushes it

    # What DOCKER-USER must hold afterwards: the artifact as the kernel reads it back.
    wanted: dict[IpFamily, list[str]] = {}
    with namespace("dref") as scratch:
        for family, artifact in artifacts.items():
            verdict = load(artifact, scratch, "nft")
            assert verdict.ok, verdict.summary()
            wanted[family] = by_chain(iptables_rules(scratch, family))["filter", "DOCKER-USER"]

    with docker_host(STANDARD) as dh:
        for artifact in dockerd_artifacts(STANDARD, docker_user=STALE):
            dh.load(artifact, "nft")
        before = {f: by_chain(iptables_rules(dh.host, f)) for f in ("ip", "ip6")}
        assert all(any(STALE[0] in r for r in before[f]["filter", "DOCKER-USER"])
                   for f in before)
        with dh.serving("web", "ext"):
            open4, open6 = dh.probe([("ext", Attempt(HOST4, 8080)), ("ext", Attempt(HOST6, 8080))])
            for artifact in artifacts.values():
                dh.load(artifact, "nft")
            closed4, closed6, other, out, direct = dh.probe([
                ("ext", Attempt(HOST4, 8080)), ("ext", Attempt(HOST6, 8080)),
                ("ext", udp(HOST4, 5353)), ("web", Attempt(EXT4, 80)),
                ("ext", Attempt("172.17.0.2", 80))])
        after = {f: by_chain(iptables_rules(dh.host, f)) for f in ("ip", "ip6")}

    for family in ("ip", "ip6"):
        untouched = {k: v for k, v in before[family].items() if k != ("filter", "DOCKER-USER")}
        assert {k: v for k, v in after[family].items() if k != ("filter", "DOCKER-USER")} \
            == untouched, family
        assert after[family]["filter", "DOCKER-USER"] == wanted[family]
        assert len(wanted[family]) == 2 and "8080" in wanted[family][1]  # declaration + rule
        assert any(k[1].startswith("DOCKER-") for k in untouched)
    # Before: dockerd's rules publish 8080; after: DOCKER-USER closes it, and dockerd's other
    # rules (DNAT of 5353/udp, masquerade, raw direct-access drop) still work.
    assert delivered(open4, port=80) and delivered(open6, port=80), (open4, open6)
    assert not delivered(closed4) and not delivered(closed6), (closed4, closed6)
    assert delivered(other, port=53, peer=EXT4), other
    assert delivered(out, peer=HOST4), out
    assert not delivered(direct), direct
