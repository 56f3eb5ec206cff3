"""A real dockerd as the oracle: Debian's docker.io (20.10, the classic layout) runs in a fresh
network namespace (tests/docker/real_dockerd.py), builds the same networks and containers under
three daemon configurations, and rulec, fed the JSON that daemon prints, must write dockerd's
rules chain by chain and make real connections fare as dockerd's rules do.

Everything here comes from the running daemon: its iptables-save/ip6tables-save, its inspect,
info and version JSON. One daemon runs per configuration and is torn down by PID afterwards.
`RULEC_UPDATE_DOCKERD_FIXTURES=1` also writes each capture to tests/docker/real/, the fixtures
test_real_fixtures.py checks on machines where dockerd cannot run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rulec import api
from rulec.backends.base import Artifact
from rulec.kernel import iptables_save, load, namespace
from tests.docker.host import probe_all
from tests.docker.real_dockerd import (
    CONFIGS,
    EXT4,
    EXT6,
    FIXTURES,
    HOST4,
    HOST6,
    Capture,
    Config,
    RealDockerd,
    chain_differences,
    chains,
    state_files,
    unavailable,
    write_capture,
)
from tests.kernel.probe import Attempt, Outcome, servers

UNAVAILABLE = unavailable()
pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(UNAVAILABLE is not None, reason=f"real dockerd: {UNAVAILABLE}")]

SERVED = (53, 80, 81, 82, 443, 9000)  # every container's probe server, TCP and UDP
FORMS = ("two-files", "state.json")


@dataclass
class Live:
    daemon: RealDockerd
    capture: Capture
    files: dict[str, Path]

    def inputs(self, form: str) -> list[Path]:
        """The documented inputs: inspect output with daemon.json and `docker info` beside it,
        or the one state.json holding them all."""
        if form == "state.json":
            return [self.files["state"]]
        return [self.files[k] for k in ("networks", "containers", "daemon", "info")]

    def compiled(self, target: str, form: str = "two-files") -> str:
        return api.compile_files([], target, docker_state=self.inputs(form)).artifact.text


@pytest.fixture(scope="module", params=CONFIGS, ids=lambda c: c.name)
def live(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    config: Config = request.param
    daemon = RealDockerd(config)
    try:
        daemon.start()
        daemon.build()
        capture = daemon.capture()
        if os.environ.get("RULEC_UPDATE_DOCKERD_FIXTURES"):
            write_capture(capture, FIXTURES / config.name, daemon.tmp)
        yield Live(daemon, capture, state_files(capture, tmp_path_factory.mktemp(config.name)))
    finally:
        daemon.stop()
    assert daemon.leftovers() == []


@pytest.mark.parametrize("form", FORMS)
def test_rules_equal_dockerds_chain_by_chain(live: Live, form: str) -> None:
    """rulec's iptables and ip6tables output, read back through the kernel as iptables-save
    prints it, equals dockerd's: the same chains, policies and rules in the same order."""
    for target, dumped in (("iptables", live.capture.iptables),
                           ("ip6tables", live.capture.ip6tables)):
        text = live.compiled(target, form)
        assert chain_differences(dumped, text) == [], target
        with namespace("dkcmp") as ns:
            verdict = load(Artifact(target=target, load_command=(f"{target}-restore",),
                                    text=text), ns, "nft")
            assert verdict.ok, verdict.message
            family = "ip6" if target == "ip6tables" else "ip"
            assert chain_differences(dumped, iptables_save(ns, family)) == [], target


def test_no_ip6tables_rules_unless_dockerd_writes_them(live: Live) -> None:
    """20.10 writes ip6tables rules only with `ip6tables: true`; without it the IPv6 networks get
    none, and rulec must not write a FORWARD DROP of its own."""
    expected = live.daemon.config.ip6tables is True
    assert bool(chains(live.capture.ip6tables)) is expected
    assert bool(chains(live.compiled("ip6tables"))) is expected


def _probes(d: RealDockerd) -> list[tuple[str, Attempt]]:
    """Connections that cross every rule dockerd writes, by source namespace."""
    def a4(name: str, network: str) -> str:
        return d.address(name, network)

    def a6(name: str, network: str) -> str:
        return d.address(name, network, 6)

    web, web6 = a4("web", "bridge"), a6("web", "bridge")
    tries = [
        # Published ports from outside (DNAT), UDP, a loopback-only binding, a port of an
        # internal network's container, a stopped container's, routed access to containers.
        ("ext", Attempt(HOST4, 8080)), ("ext", Attempt(HOST4, 9000)),
        ("ext", Attempt(HOST4, 5353, "udp")), ("ext", Attempt(HOST4, 8082)),
        ("ext", Attempt(HOST4, 8090)), ("ext", Attempt(HOST4, 8091)),
        ("ext", Attempt(HOST4, 8092)), ("ext", Attempt(HOST4, 8093)),
        ("ext", Attempt(HOST4, 8094)), ("ext", Attempt(web, 80)), ("ext", Attempt(web, 82)),
        ("ext", Attempt(a4("va", "vault"), 80)), ("ext", Attempt(HOST6, 8080)),
        ("ext", Attempt(HOST6, 8090)), ("ext", Attempt(web6, 80)), ("ext", Attempt(web6, 82)),
        ("ext", Attempt(a6("api", "apps"), 80)),
        # Between containers: one bridge (icc on, icc off), across bridges, internal networks.
        ("peer", Attempt(web, 80)), ("peer", Attempt(web6, 80)),
        ("qa", Attempt(a4("qb", "quiet"), 80)), ("multi", Attempt(a4("qb", "quiet"), 80)),
        ("api", Attempt(a4("multi", "apps"), 80)), ("web", Attempt(a4("api", "apps"), 80)),
        ("api", Attempt(web6, 80)), ("va", Attempt(a4("vb", "vault"), 80)),
        ("vb", Attempt(web, 80)), ("va", Attempt(EXT4, 80)),
        # Out to the world (masquerade) and back in through the host's own address (hairpin
        # NAT, or docker-proxy).
        ("web", Attempt(EXT4, 80)), ("web", Attempt(EXT6, 80)), ("api", Attempt(EXT6, 80)),
        ("web", Attempt(HOST4, 8080)), ("peer", Attempt(HOST4, 8080)),
        ("api", Attempt(HOST4, 8080)), ("web", Attempt(HOST6, 8080)),
        # From the host itself.
        ("host", Attempt("127.0.0.1", 8080)), ("host", Attempt("127.0.0.1", 8082)),
        ("host", Attempt(HOST4, 8090)), ("host", Attempt(web, 80)),
    ]
    return tries


def _run(d: RealDockerd, tries: Sequence[tuple[str, Attempt]]) -> list[tuple[Any, ...]]:
    """Every attempt at once, grouped by source; what each found, comparable across runs."""
    assert d.host is not None and d.ext is not None
    sources: dict[str, Any] = {"host": d.host, "ext": d.ext}
    for source, _ in tries:
        if source not in sources:
            sources[source] = d.container(source)
    return [_summary(o) for o in probe_all(sources.__getitem__, tries)]


def _summary(o: Outcome) -> tuple[Any, ...]:
    error = o.error or ""
    kind = ("refused" if "refused" in error else "timeout" if "timed out" in error
            else "unreachable" if "unreachable" in error else error)
    return (o.answered, o.peer, o.port, kind if not o.answered else "")


def test_probes_fare_the_same_under_rulecs_rules(live: Live) -> None:
    """The same connections, under dockerd's rules and then under rulec's loaded in their
    place (full replace), get the same answers: through or not, the same peer address seen
    (masquerading), the same port reached (DNAT), refused or dropped alike."""
    d = live.daemon
    assert d.host is not None and d.ext is not None
    tries = _probes(d)
    containers = [d.container(name) for name in ("web", "peer", "api", "qa", "qb", "va", "vb",
                                                 "multi")]
    ours = {t: live.compiled(t) for t in ("iptables", "ip6tables")}
    with servers([(d.ext, (80,), "tcp+udp"), *((c, SERVED, "tcp+udp") for c in containers)]):
        under_dockerd = _run(d, tries)
        try:
            for target, text in ours.items():
                if chains(text):
                    d.host.run([f"{target}-restore"], input=text)
            under_rulec = _run(d, tries)
        finally:  # the module's other tests read dockerd's rules
            d.host.run(["iptables-restore"], input=live.capture.iptables)
            if chains(live.capture.ip6tables):
                d.host.run(["ip6tables-restore"], input=live.capture.ip6tables)
    table = [(src, f"{t.dst}:{t.port}/{t.proto}", got)
             for (src, t), got in zip(tries, under_dockerd, strict=True)]
    differing = [(row, mine) for row, mine in zip(table, under_rulec, strict=True)
                 if row[2] != mine]
    assert differing == [], "\n".join(f"{r}  rulec: {m}" for r, m in differing)
    # The probes must tell something apart: published ports answer, isolation holds.
    outcome = {(src, dst): got for src, dst, got in table}
    assert outcome["ext", f"{HOST4}:8080/tcp"][:3] == (True, EXT4, 80)
    assert outcome["ext", f"{HOST4}:8094/tcp"][0] is False  # the stopped container's port
    assert outcome["qa", f"{d.address('qb', 'quiet')}:80/tcp"][0] is False  # icc off
    assert outcome["va", f"{EXT4}:80/tcp"][0] is False  # internal network
    assert outcome["web", f"{EXT4}:80/tcp"][:2] == (True, HOST4)  # masqueraded
