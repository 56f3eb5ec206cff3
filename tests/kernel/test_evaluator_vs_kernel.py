"""The reference evaluator agrees with the kernel. Hypothesis draws small filter + nat rulesets
(user chains, jump/goto/return, negations, sets, DNAT, masquerade); each is compiled, loaded
into the router of a client-router-server topology, and a battery of real TCP and UDP attempts
goes through it. What the server sees (the peer address and port, or nothing) must be what
rulec.ir.evaluate predicts for the first packet of each attempt."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rulec.api import compile_text, parse_text
from rulec.diagnostics import RulecError
from rulec.ir.evaluate import Host, Packet, Verdict, evaluate
from rulec.ir.values import Family, Prefix
from rulec.kernel import load
from tests.kernel.probe import Attempt, Topology, attempts, make_topology, server

CLIENTS = ("198.18.1.2", "198.18.1.3", "198.18.1.4")
SERVER, ROUTER_CL, ROUTER_SV = "198.18.2.2", "198.18.1.1", "198.18.2.1"
PORTS = (5001, 5002, 5003, 5004)
ADDRESSES = ("198.18.1.2", "198.18.1.3", "198.18.1.4", "198.18.1.2/31", "198.18.1.0/30",
             "198.18.2.2", "198.18.1.1", "198.18.0.0/15", "203.0.113.9")
PORT_VALUES = ("5001", "5002", "5003", "5004", "5001-5002", "5002-5004", "5000-5001")

ROUTER = Host(
    local=frozenset({(Family.IP, Prefix.parse(a).network) for a in (ROUTER_CL, ROUTER_SV)}),
    interface_addresses=(("cl0", Family.IP, Prefix.parse(ROUTER_CL).network),
                         ("sv0", Family.IP, Prefix.parse(ROUTER_SV).network)))


def _set(draw: st.DrawFn, values: tuple[str, ...]) -> str:
    chosen = draw(st.lists(st.sampled_from(values), min_size=1, max_size=3, unique=True))
    body = chosen[0] if len(chosen) == 1 else "{ " + ", ".join(chosen) + " }"
    return ("!= " if draw(st.booleans()) and draw(st.booleans()) else "") + body


@st.composite
def matches(draw: st.DrawFn) -> str:
    parts = []
    proto = draw(st.sampled_from(("", "tcp", "udp")))
    if proto:
        parts.append(proto)
        if draw(st.booleans()):
            parts.append("dport " + _set(draw, PORT_VALUES))
    if draw(st.booleans()):
        parts.append("from " + _set(draw, ADDRESSES))
    if draw(st.integers(0, 3)) == 0:
        parts.append("to " + _set(draw, ADDRESSES))
    if draw(st.integers(0, 4)) == 0:
        parts.append("in " + draw(st.sampled_from(("cl0", "!= cl0", "c+"))))
    return " ".join(parts)


@st.composite
def rules(draw: st.DrawFn, targets: tuple[str, ...], can_return: bool) -> list[str]:
    actions = ["accept", "drop", "reject"] + (["return"] if can_return else [])
    actions += [f"jump {t}" for t in targets] + [f"goto {t}" for t in targets]
    out = []
    for _ in range(draw(st.integers(0, 4))):
        out.append(f"{draw(st.sampled_from(actions))} {draw(matches())}".strip())
    return out


@st.composite
def policies(draw: st.DrawFn) -> str:
    policy = draw(st.sampled_from(("accept", "drop")))
    # c2 may be reached from c1 and FORWARD, c1 only from FORWARD: no loops.
    forward = draw(rules(("c1", "c2"), can_return=False))
    c1, c2 = draw(rules(("c2",), can_return=True)), draw(rules((), can_return=True))
    dnat = []
    for port in draw(st.lists(st.sampled_from(PORTS), max_size=2, unique=True)):
        proto = draw(st.sampled_from(("tcp", "udp")))
        to_port = draw(st.sampled_from(PORTS))
        extra = draw(st.sampled_from(("", "from 198.18.1.2", "from != 198.18.1.3")))
        dnat.append(f"dnat to {SERVER}:{to_port} {proto} dport {port} to {ROUTER_CL} {extra}")
    post = draw(st.sampled_from(
        ("", "masquerade out sv0", f"snat to {ROUTER_SV} from 198.18.1.3", "masquerade udp")))

    def chain(name: str, body: list[str], head: str = "") -> str:
        return f"  chain {name}{head} {{\n" + "".join(f"    {r}\n" for r in body) + "  }\n"

    # Replies must pass whatever the drawn rules say: the test judges the first packet.
    return ("table ip filter {\n"
            + chain("FORWARD", ["accept ct state established,related", *forward],
                    f" policy {policy}")
            + chain("c1", c1) + chain("c2", c2) + "}\n"
            + "table ip nat {\n" + chain("PREROUTING", dnat)
            + chain("POSTROUTING", [post] if post else []) + "}\n")


def expected(ruleset: object, attempt: Attempt) -> tuple[str, int] | None:
    """What the server should see of this attempt's first packet, per the evaluator."""
    assert attempt.src is not None
    packet = Packet(family=Family.IP, proto=6 if attempt.proto == "tcp" else 17,
                    saddr=Prefix.parse(attempt.src).network,
                    daddr=Prefix.parse(attempt.dst).network, sport=40000, dport=attempt.port,
                    iif="cl0", oif="sv0")
    outcome = evaluate(ruleset, packet, ROUTER)  # type: ignore[arg-type]
    p = outcome.packet
    if outcome.verdict is not Verdict.ACCEPT or outcome.delivered_locally:
        return None
    if p.daddr != Prefix.parse(SERVER).network or p.dport not in PORTS:
        return None
    return Prefix(Family.IP, p.saddr, 32).address_text(), p.dport  # type: ignore[return-value]


BATTERY = [Attempt(dst, port, proto, src) for src in CLIENTS for proto in ("tcp", "udp")
           for dst in (SERVER, ROUTER_CL) for port in PORTS]


@dataclass(frozen=True)
class Loader:
    target: str
    variant: str | None


LOADERS = [Loader("iptables", "nft"), Loader("iptables", "legacy"), Loader("nft", None)]


pytestmark = pytest.mark.skipif(shutil.which("conntrack") is None,
                                reason="needs the conntrack tool (Debian package conntrack) to "
                                "forget connections between examples")


@pytest.fixture(scope="module", params=LOADERS, ids=lambda x: f"{x.target}-{x.variant or 'nft'}")
def router(request: pytest.FixtureRequest) -> Iterator[tuple[Topology, Loader]]:
    # One topology per loader: iptables-nft and -legacy rules would both stay active otherwise.
    with make_topology() as topo, server(topo.server, PORTS, "tcp"), \
            server(topo.server, PORTS, "udp"):
        yield topo, request.param


# 100 rulesets per loader (300 in all) by default; RULEC_KERNEL_EXAMPLES=1000 for a long run.
@settings(deadline=None, max_examples=int(os.environ.get("RULEC_KERNEL_EXAMPLES", "100")),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(policy=policies())
def test_evaluator_agrees_with_the_kernel(router: tuple[Topology, Loader], policy: str) -> None:
    topo, loader = router
    ruleset = parse_text(policy)
    try:
        artifact = compile_text(policy, loader.target, passes=())
    except RulecError as exc:
        # Only what a target refuses outright (E04xx, e.g. iptables and `return` with a
        # negated set) is not compared; everything else must load and agree.
        assert all(d.code.startswith("E04") for d in exc.diagnostics), exc.render()
        assume(False)
        return
    verdict = load(artifact, topo.router, loader.variant)
    assert verdict.ok, verdict.message
    # A connection the previous example's rules NATed must not be reused by this one's packets.
    topo.router.run(["conntrack", "-F"], check=False)
    seen = attempts(topo.client, BATTERY, timeout=0.4)
    mismatches = []
    for attempt, outcome in zip(BATTERY, seen, strict=True):
        got = (outcome.peer, outcome.port) if outcome.answered else None
        want = expected(ruleset, attempt)
        if got != want:
            mismatches.append(f"{attempt}: kernel {got}, evaluator {want}")
    assert not mismatches, "\n".join(mismatches) + "\n" + policy
