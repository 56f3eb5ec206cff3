"""The optimiser changes nothing the kernel can see: a policy compiled with the default pipeline
and with -O0 is loaded into two routers (client -- router -- server each), and a battery of
real TCP and UDP attempts goes through both at once; every attempt must end the same way
(answered or not, and the source address the server saw). Per target: iptables (loaded with
iptables-nft-restore, so multiport chunks and per-address expansion are what the kernel runs)
and nft. The policies are built to make the passes fire: rules that differ in one port or one
address, first-match traps between them, equal user chains, dead rules (no unused chains:
the nft backend refuses them at -O0).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rulec.api import compile_text
from rulec.backends.stats import kernel_rule_counts
from rulec.kernel import available, load
from tests.kernel.probe import Attempt, Outcome, Topology, attempts, make_topology, servers

CLIENTS = ("198.18.1.2", "198.18.1.3", "198.18.1.4")
SOURCES = ("198.18.1.2", "198.18.1.3", "198.18.1.4", "198.18.1.2/31", "198.18.1.0/30")
SERVER = "198.18.2.2"
# 20 ports, none adjacent: a merged set of all of them stays 20 ports, which iptables must
# split into two multiport rules (15 slots each).
PORTS = tuple(range(5001, 5041, 2))
BATTERY = [Attempt(SERVER, port, proto, src) for src in CLIENTS for proto in ("tcp", "udp")
           for port in PORTS]


@dataclass(frozen=True)
class Routers:
    plain: Topology
    optimised: Topology


@pytest.fixture(scope="module")
def routers() -> Iterator[Routers]:
    with make_topology() as plain, make_topology() as optimised, servers(
            [(t.server, PORTS, proto) for t in (plain, optimised) for proto in ("tcp", "udp")]):
        yield Routers(plain, optimised)


@pytest.fixture(params=["iptables", "nft"])
def target(request: pytest.FixtureRequest) -> str:
    reason = available(request.param, "nft" if request.param == "iptables" else None)
    if reason is not None:
        pytest.skip(reason)
    assert isinstance(request.param, str)
    return request.param


def _load(topo: Topology, policy: str, target: str, optimise: bool) -> int:
    """Compile, replace whatever the router held, load; returns the kernel rule count."""
    artifact = compile_text(policy, target, passes=None if optimise else ())
    # iptables-nft tables are nft tables too: one flush empties the router for either target.
    topo.router.run(["nft", "flush", "ruleset"])
    topo.router.run(["conntrack", "-F"], check=False)  # no state from the previous policy
    verdict = load(artifact, topo.router, "nft" if target == "iptables" else None)
    assert verdict.ok, f"{verdict.loader}: {verdict.message}\n{artifact.text}"
    return sum(kernel_rule_counts(artifact).values())


def _outcome(outcome: Outcome) -> str | None:
    return outcome.peer if outcome.answered else None


@dataclass(frozen=True)
class Result:
    plain_rules: int  # kernel rules loaded
    optimised_rules: int
    answered: int  # attempts the server answered (the same for both)


def check_same(routers: Routers, policy: str, target: str) -> Result:
    """Load both versions, probe both routers at once, and compare every attempt."""
    plain_rules = _load(routers.plain, policy, target, optimise=False)
    optimised_rules = _load(routers.optimised, policy, target, optimise=True)
    with ThreadPoolExecutor(2) as pool:
        plain, optimised = pool.map(lambda t: attempts(t.client, BATTERY, timeout=0.4),
                                    (routers.plain, routers.optimised))
    differ = [f"{a}: -O0 {_outcome(p)}, optimised {_outcome(o)}"
              for a, p, o in zip(BATTERY, plain, optimised, strict=True)
              if _outcome(p) != _outcome(o)]
    assert not differ, "\n".join(differ) + "\n" + policy
    return Result(plain_rules, optimised_rules, sum(1 for o in plain if o.answered))


def forward(*rules: str, policy: str = "drop", chains: str = "") -> str:
    body = "".join(f"    {r}\n" for r in ("accept ct state established,related", *rules))
    return (f"table ip filter {{\n  chain FORWARD policy {policy} {{\n{body}  }}\n"
            f"{chains}}}\n")


# A sidecar-style policy: one rule per port and peer, a deny for one client in the middle (a
# first-match trap: the later rules still accept that client on other ports), a catch-all
# reject and a dead rule after it.
MESH = forward(
    *(f"accept tcp from 198.18.1.2/31 to {SERVER} dport {p}" for p in PORTS[:8]),
    "drop tcp from 198.18.1.3 dport 5015-5019",
    *(f"accept tcp from 198.18.1.2/31 to {SERVER} dport {p}" for p in PORTS[8:]),
    *(f"accept tcp from 198.18.1.4 to {SERVER} dport {p}" for p in PORTS),
    *(f"accept udp from {c} to {SERVER} dport {p}" for c in CLIENTS[:2] for p in PORTS[::3]),
    "reject",
    "accept udp",  # dead
)

CHAINS = forward(
    "jump a from 198.18.1.2", "jump b from 198.18.1.3", "goto b from 198.18.1.4",
    f"accept udp to {SERVER} dport 5001", f"accept udp to {SERVER} dport 5003",
    "drop from 198.18.1.4 udp", f"accept udp to {SERVER} dport 5005",
    chains=("  chain a {\n    accept tcp dport 5001-5004\n    accept tcp dport 5007\n"
            "    return\n  }\n"
            "  chain b {\n    accept tcp dport 5001-5004\n    accept tcp dport 5007\n"
            "    return\n    drop\n  }\n"),
)


@pytest.mark.parametrize("policy", [MESH, CHAINS], ids=["mesh", "chains"])
def test_hand_built_policies(routers: Routers, target: str, policy: str) -> None:
    result = check_same(routers, policy, target)
    assert 0 < result.optimised_rules < result.plain_rules, f"nothing was merged: {result}"
    # A battery where everything or nothing gets through would prove little.
    assert 0 < result.answered < len(BATTERY), result


@st.composite
def policies(draw: st.DrawFn) -> str:
    """FORWARD rules drawn as copies of earlier ones with one field changed (port, source,
    action), so the merges have work and traps, plus jumps to two maybe-equal chains."""
    rules: list[dict[str, str]] = []
    for _ in range(draw(st.integers(3, 12))):
        if rules and draw(st.integers(0, 2)) > 0:
            rule = dict(draw(st.sampled_from(rules)))
            what = draw(st.sampled_from(("dport", "dport", "from", "action")))
        else:
            rule = {"proto": draw(st.sampled_from(("tcp", "udp")))}
            what = "all"
        if what in ("dport", "all"):
            low = draw(st.sampled_from(PORTS))
            rule["dport"] = str(low) if draw(st.integers(0, 3)) else f"{low}-{low + 2}"
        if what in ("from", "all"):
            rule["from"] = draw(st.sampled_from(SOURCES))
        if what in ("action", "all"):
            rule["action"] = draw(st.sampled_from(("accept", "accept", "drop", "reject",
                                                   "jump a", "jump b")))
        rules.append(rule)
    lines = [f"{r['action']} {r['proto']} from {r['from']} dport {r['dport']}" for r in rules]
    a = [f"accept tcp dport {draw(st.sampled_from(PORTS))}", "drop udp"]
    b = a if draw(st.booleans()) else [f"accept tcp dport {draw(st.sampled_from(PORTS))}"]
    # Only chains something jumps to: nft refuses unreachable chains at -O0 (E0404).
    chains = "".join(f"  chain {name} {{\n" + "".join(f"    {r}\n" for r in body) + "  }\n"
                     for name, body in (("a", a), ("b", b))
                     if any(r["action"] == f"jump {name}" for r in rules))
    return forward(*lines, policy=draw(st.sampled_from(("accept", "drop"))), chains=chains)


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(policy=policies())
def test_drawn_policies(routers: Routers, target: str, policy: str) -> None:
    check_same(routers, policy, target)
