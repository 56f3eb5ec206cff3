"""Shared by the nft and nft-json tests: IR builders, a representative ruleset, and a
throwaway network namespace with `nft` read-back."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from rulec.backends.base import Artifact, Backend, EmitOptions
from rulec.backends.lowering import split_families
from rulec.ir.nodes import (
    Accept,
    Chain,
    ClampMss,
    Counter,
    Dnat,
    Drop,
    Hook,
    Jump,
    Log,
    LogLevel,
    Masquerade,
    Match,
    Policy,
    Redirect,
    Reject,
    RejectWith,
    Return,
    Rule,
    Ruleset,
    SetMark,
    Snat,
    Table,
    TableKind,
)
from rulec.ir.values import (
    AddressSet,
    AddrType,
    AddrTypeKind,
    CtState,
    CtStates,
    Family,
    IcmpType,
    Interface,
    Limit,
    PortSet,
    Prefix,
    Protocol,
    RateUnit,
    TcpFlag,
    TcpFlags,
)
from rulec.ir.verify import verify

TCP, UDP = Protocol(6), Protocol(17)
SYN_ONLY = TcpFlags(frozenset({TcpFlag.SYN}), frozenset({TcpFlag.SYN, TcpFlag.RST}))


def addrs(*texts: str, negated: bool = False) -> AddressSet:
    return AddressSet(tuple(Prefix.parse(t) for t in texts), negated)


def states(*names: CtState, negated: bool = False) -> CtStates:
    return CtStates(frozenset(names), negated)


def one_rule(rule: Rule, *, family: Family = Family.INET, kind: TableKind = TableKind.FILTER,
             hook: Hook = Hook.INPUT) -> Ruleset:
    """A table holding `rule` in one base chain, plus an empty user chain `web` to jump to."""
    chains = (Chain(name=hook.value, hook=hook, rules=(rule,)), Chain(name="web"))
    return Ruleset(tables=(Table(kind=kind, family=family, chains=chains),))


def compile_with(backend: Backend, ruleset: Ruleset) -> Artifact:
    """What api.emit does: verify against the target's limits, then print."""
    verify(ruleset, backend.limits)
    return backend.emit(ruleset, EmitOptions())


def representative() -> Ruleset:
    """Every construct family in a policy shaped like a small Docker host."""
    established = Rule(match=Match(ct_state=states(CtState.ESTABLISHED, CtState.RELATED)),
                       action=Accept())
    filter_inet = Table(kind=TableKind.FILTER, family=Family.INET, chains=(
        Chain(name="INPUT", hook=Hook.INPUT, policy=Policy.DROP, rules=(
            established,
            Rule(match=Match(ct_state=states(CtState.INVALID)), action=Drop(),
                 comment="invalid; drop # {x} \\"),
            Rule(match=Match(iifname=Interface("lo")), action=Accept()),
            Rule(match=Match(proto=Protocol(1), icmp_type=IcmpType(Family.IP, (8,))),
                 statements=(Counter(),), action=Accept()),
            Rule(match=Match(proto=Protocol(58), icmp_type=IcmpType(Family.IP6, (135,))),
                 action=Accept()),
            Rule(match=Match(saddr=addrs("192.0.2.0/24", "2001:db8::/32"), proto=TCP,
                             dport=PortSet.of(22)), action=Jump("ssh"), comment="admins"),
            Rule(match=Match(proto=TCP, dport=PortSet.of(80, 443, (8000, 8099))),
                 action=Accept(), comment="web"),
            Rule(match=Match(saddr=addrs("10.0.0.0/8", "fc00::/7", negated=True),
                             proto=UDP, dport=PortSet.of(53)), action=Drop()),
            Rule(match=Match(dst_type=AddrType(AddrTypeKind.BROADCAST)), action=Drop()),
            Rule(match=Match(limit=Limit(5, RateUnit.MINUTE, burst=10)),
                 action=Log(prefix="input drop: ", level=LogLevel.INFO)),
            Rule(match=Match(proto=TCP), action=Reject(RejectWith.TCP_RESET)),
            Rule(action=Reject(RejectWith.ADMIN_PROHIBITED)),
        )),
        Chain(name="FORWARD", hook=Hook.FORWARD, policy=Policy.DROP, rules=(
            established,
            Rule(match=Match(iifname=Interface("br-+"), oifname=Interface("br-+", negated=True)),
                 action=Jump("DOCKER-USER")),
            Rule(match=Match(proto=TCP, tcp_flags=SYN_ONLY), action=ClampMss()),
        )),
        Chain(name="OUTPUT", hook=Hook.OUTPUT),
        Chain(name="ssh", rules=(
            Rule(match=Match(ct_state=states(CtState.NEW, negated=True)), action=Return()),
            Rule(statements=(Log(prefix="ssh "), Counter()), action=Accept()),
        )),
        Chain(name="DOCKER-USER", rules=(Rule(action=Return()),)),
    ))
    nat_ip = Table(kind=TableKind.NAT, family=Family.IP, chains=(
        Chain(name="PREROUTING", hook=Hook.PREROUTING, rules=(
            Rule(match=Match(dst_type=AddrType(AddrTypeKind.LOCAL)), action=Jump("DOCKER")),)),
        Chain(name="OUTPUT", hook=Hook.OUTPUT, rules=(
            Rule(match=Match(daddr=addrs("127.0.0.0/8", negated=True),
                             dst_type=AddrType(AddrTypeKind.LOCAL)), action=Jump("DOCKER")),)),
        Chain(name="POSTROUTING", hook=Hook.POSTROUTING, rules=(
            Rule(match=Match(saddr=addrs("172.17.0.0/16"),
                             oifname=Interface("docker0", negated=True)), action=Masquerade()),
            Rule(match=Match(saddr=addrs("172.18.0.0/16"), proto=UDP),
                 action=Snat(Prefix.parse("198.51.100.1"), (1024, 65535))),
        )),
        Chain(name="DOCKER", rules=(
            Rule(match=Match(iifname=Interface("docker0")), action=Return()),
            Rule(match=Match(proto=TCP, dport=PortSet.of(8080)),
                 action=Dnat(Prefix.parse("172.17.0.2"), (80, 80)), comment="published"),
            Rule(match=Match(proto=TCP, dport=PortSet.of(2222)), action=Redirect((22, 22))),
        )),
    ))
    nat_inet = Table(kind=TableKind.NAT, family=Family.INET, chains=(
        Chain(name="PREROUTING", hook=Hook.PREROUTING, rules=(
            Rule(match=Match(proto=TCP, dport=PortSet.of(8443)),
                 action=Dnat(Prefix.parse("2001:db8::2"), (443, 443))),
            Rule(match=Match(proto=TCP, dport=PortSet.of(8444)),
                 action=Dnat(Prefix.parse("192.0.2.2"), None)),
        )),
        Chain(name="INPUT", hook=Hook.INPUT),
    ))
    mangle = Table(kind=TableKind.MANGLE, family=Family.INET, chains=(
        Chain(name="OUTPUT", hook=Hook.OUTPUT, rules=(
            Rule(match=Match(proto=TCP, dport=PortSet.of(25)), action=SetMark(0x1, 0xff)),)),
        Chain(name="POSTROUTING", hook=Hook.POSTROUTING),
    ))
    raw = Table(kind=TableKind.RAW, family=Family.IP6, chains=(
        Chain(name="PREROUTING", hook=Hook.PREROUTING, rules=(
            Rule(match=Match(daddr=addrs("fd00::2"), iifname=Interface("br0", negated=True)),
                 action=Drop(), comment="DROP DIRECT ACCESS"),)),
    ))
    return Ruleset(tables=(filter_inet, nat_ip, nat_inet, mangle, raw))


# --- kernel -------------------------------------------------------------------------------

def _kernel_ready() -> bool:
    return os.geteuid() == 0 and bool(shutil.which("nft")) and bool(shutil.which("ip"))


kernel = pytest.mark.kernel
needs_kernel = pytest.mark.skipif(
    not _kernel_ready(), reason="needs root with `nft` and `ip` (iproute2) to create a netns")
_serial = itertools.count()
FOREIGN = "table ip foreign {\n\tchain keep {\n\t\tcounter accept comment \"not rulec's\"\n\t}\n}\n"


@contextmanager
def namespace() -> Iterator[str]:
    """A fresh network namespace `rulec-t<pid>-<n>`; the root namespace is never touched."""
    name = f"rulec-t{os.getpid()}-{next(_serial)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=20)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=20)


def nft(ns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", *args], input=stdin, text=True,
                          capture_output=True, timeout=30)


def load(ns: str, artifact: Artifact) -> None:
    """Run the artifact's own load command inside the namespace."""
    done = subprocess.run(["ip", "netns", "exec", ns, *artifact.load_command],
                          input=artifact.text, text=True, capture_output=True, timeout=30)
    assert done.returncode == 0, f"{artifact.target} did not load:\n{done.stderr}"


def read_back(ns: str) -> dict[tuple[str, str], dict[str, Any]]:
    """`nft -j list ruleset` as {(family, table): {chain: summary}}."""
    done = nft(ns, "-j", "list", "ruleset")
    assert done.returncode == 0, done.stderr
    tables: dict[tuple[str, str], dict[str, Any]] = {}
    for item in json.loads(done.stdout)["nftables"]:
        if "chain" in item:
            c = item["chain"]
            tables.setdefault((c["family"], c["table"]), {})[c["name"]] = {
                "hook": c.get("hook"), "type": c.get("type"), "prio": c.get("prio"),
                "policy": c.get("policy"), "rules": 0, "comments": []}
        elif "rule" in item:
            r = item["rule"]
            chain = tables[(r["family"], r["table"])][r["chain"]]
            chain["rules"] += 1
            if "comment" in r:
                chain["comments"].append(r["comment"])
    return tables


def expected_read_back(ruleset: Ruleset) -> dict[tuple[str, str], dict[str, Any]]:
    """What read_back() must find after loading `ruleset` (after the family split)."""
    from rulec.backends.nft.vocabulary import chain_type, priority

    out: dict[tuple[str, str], dict[str, Any]] = {}
    for table in split_families(ruleset).tables:
        chains = out.setdefault((table.family.value, f"rulec-{table.kind.value}"), {})
        for chain in table.chains:
            base = chain.hook is not None
            chains[chain.name] = {
                "hook": chain.hook.value.lower() if chain.hook else None,
                "type": chain_type(table, chain.hook) if chain.hook else None,
                "prio": priority(table, chain.hook) if chain.hook else None,
                "policy": (chain.policy or Policy.ACCEPT).value if base else None,
                "rules": len(chain.rules),
                "comments": [r.comment for r in chain.rules if r.comment is not None]}
    return out


def check_load_twice_keeps_foreign(artifact: Artifact, ruleset: Ruleset) -> None:
    """Load into a namespace holding a foreign table, load again, compare the read-back."""
    with namespace() as ns:
        done = nft(ns, "-f", "-", stdin=FOREIGN)
        assert done.returncode == 0, done.stderr
        load(ns, artifact)
        first = read_back(ns)
        load(ns, artifact)  # the replace idiom: the tables exist now
        second = read_back(ns)
        assert first == second
        assert second.pop(("ip", "foreign")) == {"keep": {
            "hook": None, "type": None, "prio": None, "policy": None, "rules": 1,
            "comments": ["not rulec's"]}}
        assert second == expected_read_back(ruleset)
