"""The nft-json backend: document shape, one exact fragment per construct, hostile text,
determinism, and (marked kernel) loading it and comparing with what the text backend loads."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rulec.backends import get_backend
from rulec.backends.base import EmitOptions
from rulec.backends.nftables import NftBackend
from rulec.backends.nftables_json import LIMITS_JSON, NftJsonBackend
from rulec.diagnostics import RulecError, SourceFile
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
    MapKey,
    Masquerade,
    Match,
    Policy,
    Redirect,
    Reject,
    RejectWith,
    Rule,
    Ruleset,
    SetMark,
    SetMss,
    Snat,
    Table,
    TableKind,
    Vmap,
)
from rulec.ir.values import (
    AddrType,
    AddrTypeKind,
    CtState,
    Family,
    IcmpType,
    Interface,
    Limit,
    Mark,
    PortSet,
    Prefix,
    Protocol,
    RateUnit,
)
from tests.backends.nft_fixtures import (
    SYN_ONLY,
    TCP,
    UDP,
    addrs,
    check_load_twice_keeps_foreign,
    compile_with,
    kernel,
    load,
    namespace,
    needs_kernel,
    nft,
    one_rule,
    representative,
    states,
)
from tests.backends.test_nftables import CASES

ROOT = Path(__file__).resolve().parents[2]
INET, IP, IP6 = Family.INET, Family.IP, Family.IP6
F, NAT, MANGLE = TableKind.FILTER, TableKind.NAT, TableKind.MANGLE


def document(ruleset: Ruleset) -> list[dict[str, Any]]:
    commands: list[dict[str, Any]] = json.loads(
        compile_with(NftJsonBackend(), ruleset).text)["nftables"]
    return commands


def rule_exprs(ruleset: Ruleset) -> list[list[Any]]:
    return [c["add"]["rule"]["expr"] for c in document(ruleset)
            if "add" in c and "rule" in c["add"]]


def m(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def meta(key: str) -> dict[str, Any]:
    return {"meta": {"key": key}}


def payload(protocol: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": field}}


ACCEPT = {"accept": None}
TCP_FLAGS = payload("tcp", "flags")
MSS = {"tcp option": {"name": "maxseg", "field": "size"}}

# (id, rule, table family, table kind, hook, expected expr)
JSON_CASES: list[tuple[str, Rule, Family, TableKind, Hook, list[Any]]] = [
    ("nfproto", Rule(match=Match(family=IP6), action=Accept()), INET, F, Hook.INPUT,
     [m(meta("nfproto"), "ipv6"), ACCEPT]),
    ("proto-negated", Rule(match=Match(proto=Protocol(6, negated=True)), action=Accept()),
     INET, F, Hook.INPUT, [m(meta("l4proto"), "tcp", "!="), ACCEPT]),
    ("proto-number", Rule(match=Match(proto=Protocol(47)), action=Accept()), IP, F,
     Hook.INPUT, [m(meta("l4proto"), 47), ACCEPT]),
    ("addresses", Rule(match=Match(saddr=addrs("192.0.2.1", "10.0.0.0/8", negated=True),
                                   daddr=addrs("198.51.100.7")), action=Accept()),
     IP, F, Hook.INPUT,
     [m(payload("ip", "saddr"), {"set": [{"prefix": {"addr": "10.0.0.0", "len": 8}},
                                         "192.0.2.1"]}, "!="),
      m(payload("ip", "daddr"), "198.51.100.7"), ACCEPT]),
    ("ports", Rule(match=Match(proto=TCP, sport=PortSet.of((1024, 65535)),
                               dport=PortSet.of(22, (80, 90), negated=True)), action=Accept()),
     INET, F, Hook.INPUT,
     [m(payload("tcp", "sport"), {"range": [1024, 65535]}),
      m(payload("tcp", "dport"), {"set": [22, {"range": [80, 90]}]}, "!="), ACCEPT]),
    ("interfaces", Rule(match=Match(iifname=Interface("br-+"),
                                    oifname=Interface("eth0", negated=True)), action=Accept()),
     INET, F, Hook.FORWARD,
     [m(meta("iifname"), "br-*"), m(meta("oifname"), "eth0", "!="), ACCEPT]),
    ("ct-state", Rule(match=Match(ct_state=states(CtState.RELATED, CtState.ESTABLISHED)),
                      action=Accept()), INET, F, Hook.INPUT,
     [m({"ct": {"key": "state"}}, ["established", "related"], "in"), ACCEPT]),
    ("ct-state-negated", Rule(match=Match(ct_state=states(CtState.NEW, negated=True)),
                              action=Accept()), INET, F, Hook.INPUT,
     [m({"ct": {"key": "state"}}, ["new"], "!"), ACCEPT]),
    ("ct-orig-dport", Rule(match=Match(proto=TCP, ct_orig_dport=PortSet.of(80, 443)),
                           action=Accept()), INET, F, Hook.FORWARD,
     [m(meta("l4proto"), "tcp"),
      m({"ct": {"key": "proto-dst", "dir": "original"}}, {"set": [80, 443]}), ACCEPT]),
    ("fib", Rule(match=Match(src_type=AddrType(AddrTypeKind.LOCAL),
                             dst_type=AddrType(AddrTypeKind.BROADCAST, True)), action=Accept()),
     INET, F, Hook.INPUT,
     [m({"fib": {"result": "type", "flags": ["saddr"]}}, "local"),
      m({"fib": {"result": "type", "flags": ["daddr"]}}, "broadcast", "!="), ACCEPT]),
    ("tcp-flags", Rule(match=Match(proto=TCP, tcp_flags=SYN_ONLY), action=Accept()),
     INET, F, Hook.INPUT, [m({"&": [TCP_FLAGS, ["syn", "rst"]]}, "syn"), ACCEPT]),
    ("icmp", Rule(match=Match(proto=Protocol(58), icmp_type=IcmpType(IP6, (135,), True)),
                  action=Accept()), INET, F, Hook.INPUT,
     [m(payload("icmpv6", "type"), "nd-neighbor-solicit", "!="), ACCEPT]),
    ("mark", Rule(match=Match(mark=Mark(1, 0xff)), action=Accept()), INET, F, Hook.INPUT,
     [m({"&": [meta("mark"), 255]}, 1), ACCEPT]),
    ("mark-full", Rule(match=Match(mark=Mark(2, negated=True)), action=Accept()), INET, F,
     Hook.INPUT, [m(meta("mark"), 2, "!="), ACCEPT]),
    ("limit-log-counter", Rule(match=Match(limit=Limit(10, RateUnit.SECOND)),
                               statements=(Log(prefix="p", level=LogLevel.INFO), Counter()),
                               action=Accept()), INET, F, Hook.INPUT,
     [{"limit": {"rate": 10, "burst": 5, "per": "second"}},
      {"log": {"prefix": "p", "level": "info"}}, {"counter": None}, ACCEPT]),
    ("log-action", Rule(action=Log(level=LogLevel.WARNING)), INET, F, Hook.INPUT,
     [{"log": None}]),
    ("jump", Rule(action=Jump("web")), INET, F, Hook.INPUT, [{"jump": {"target": "web"}}]),
    ("reject", Rule(action=Reject()), INET, F, Hook.INPUT, [{"reject": None}]),
    ("reject-icmpx", Rule(action=Reject(RejectWith.ADMIN_PROHIBITED)), INET, F, Hook.INPUT,
     [{"reject": {"type": "icmpx", "expr": "admin-prohibited"}}]),
    ("reject-icmpv6", Rule(action=Reject(RejectWith.HOST_UNREACHABLE)), IP6, F, Hook.INPUT,
     [{"reject": {"type": "icmpv6", "expr": "addr-unreachable"}}]),
    ("reject-tcp-reset", Rule(match=Match(proto=TCP), action=Reject(RejectWith.TCP_RESET)),
     IP, F, Hook.INPUT, [m(meta("l4proto"), "tcp"), {"reject": {"type": "tcp reset"}}]),
    ("dnat-inet", Rule(match=Match(proto=TCP, dport=PortSet.of(80)),
                       action=Dnat(Prefix.parse("2001:db8::1"), (8080, 8080))),
     INET, NAT, Hook.PREROUTING,
     [m(meta("nfproto"), "ipv6"), m(payload("tcp", "dport"), 80),
      {"dnat": {"family": "ip6", "addr": "2001:db8::1", "port": 8080}}]),
    ("snat-ip", Rule(match=Match(proto=UDP),
                     action=Snat(Prefix.parse("192.0.2.1"), (1000, 2000))),
     IP, NAT, Hook.POSTROUTING,
     [m(meta("l4proto"), "udp"), {"snat": {"addr": "192.0.2.1",
                                            "port": {"range": [1000, 2000]}}}]),
    ("masquerade", Rule(action=Masquerade()), INET, NAT, Hook.POSTROUTING,
     [{"masquerade": None}]),
    ("masquerade-ports", Rule(match=Match(proto=TCP), action=Masquerade((1024, 65535))),
     INET, NAT, Hook.POSTROUTING,
     [m(meta("l4proto"), "tcp"), {"masquerade": {"port": {"range": [1024, 65535]}}}]),
    ("redirect", Rule(match=Match(proto=TCP, dport=PortSet.of(80)),
                      action=Redirect((8080, 8080))), INET, NAT, Hook.PREROUTING,
     [m(payload("tcp", "dport"), 80), {"redirect": {"port": 8080}}]),
    ("set-mss", Rule(match=Match(proto=TCP, tcp_flags=SYN_ONLY), action=SetMss(1400)),
     INET, MANGLE, Hook.FORWARD,
     [m({"&": [TCP_FLAGS, ["syn", "rst"]]}, "syn"), {"mangle": {"key": MSS, "value": 1400}}]),
    ("clamp-mss", Rule(match=Match(proto=TCP, tcp_flags=SYN_ONLY), action=ClampMss()),
     INET, F, Hook.FORWARD,
     [m({"&": [TCP_FLAGS, ["syn", "rst"]]}, "syn"),
      {"mangle": {"key": MSS, "value": {"rt": {"key": "mtu"}}}}]),
    ("set-mark", Rule(action=SetMark(1)), INET, MANGLE, Hook.PREROUTING,
     [{"mangle": {"key": meta("mark"), "value": 1}}]),
    ("set-mark-masked", Rule(action=SetMark(1, 0xff)), INET, MANGLE, Hook.PREROUTING,
     [{"mangle": {"key": meta("mark"),
                  "value": {"|": [{"&": [meta("mark"), 0xFFFFFF01]}, 1]}}}]),
]


@pytest.mark.parametrize(("rule", "family", "kind", "hook", "expected"),
                         [c[1:] for c in JSON_CASES], ids=[c[0] for c in JSON_CASES])
def test_construct(rule: Rule, family: Family, kind: TableKind, hook: Hook,
                   expected: list[Any]) -> None:
    assert rule_exprs(one_rule(rule, family=family, kind=kind, hook=hook)) == [expected]


def test_every_text_construct_also_prints_as_json() -> None:
    for _, rule, family, kind, hook, lines in CASES:
        assert len(rule_exprs(one_rule(rule, family=family, kind=kind, hook=hook))) == len(lines)


def test_document_shape() -> None:
    ruleset = Ruleset(tables=(Table(kind=F, family=INET, chains=(
        Chain(name="INPUT", hook=Hook.INPUT, policy=Policy.DROP,
              rules=(Rule(action=Jump("web"), comment="to web"),)),
        Chain(name="web", rules=(Rule(action=Accept()),)),
    )),))
    table = {"family": "inet", "name": "rulec-filter"}
    where = {"family": "inet", "table": "rulec-filter"}
    # Every table rulec may own is added (a no-op if present) and deleted first, so a table the
    # policy no longer declares goes too; the whole document is one transaction.
    owned = [{verb: {"table": {"family": fam, "name": f"rulec-{kind}"}}}
             for fam in ("ip", "ip6", "inet") for kind in ("filter", "nat", "mangle", "raw")
             for verb in ("add", "delete")]
    assert document(ruleset) == [
        {"metainfo": {"json_schema_version": 1}}, *owned, {"add": {"table": table}},
        {"add": {"chain": {**where, "name": "INPUT", "type": "filter", "hook": "input",
                           "prio": 0, "policy": "drop"}}},
        {"add": {"chain": {**where, "name": "web"}}},
        {"add": {"rule": {**where, "chain": "INPUT", "comment": "to web",
                          "expr": [{"jump": {"target": "web"}}]}}},
        {"add": {"rule": {**where, "chain": "web", "expr": [ACCEPT]}}},
    ]


def test_mangle_output_is_a_route_chain_with_numeric_priority() -> None:
    ruleset = Ruleset(tables=(Table(kind=MANGLE, family=IP, chains=(
        Chain(name="OUTPUT", hook=Hook.OUTPUT),)),))
    (chain,) = [c["add"]["chain"] for c in document(ruleset) if "chain" in c.get("add", {})]
    assert (chain["type"], chain["hook"], chain["prio"], chain["policy"]) == (
        "route", "output", -150, "accept")


def test_artifact_registry_and_determinism() -> None:
    backend = get_backend("nft-json")
    assert isinstance(backend, NftJsonBackend) and backend.limits is LIMITS_JSON
    artifact = compile_with(backend, representative())
    assert artifact.target == "nft-json"
    assert artifact.load_command == ("nft", "-j", "-f", "-")
    assert artifact.text.endswith("}\n") and artifact.text.startswith('{\n  "nftables": [')
    script = ("from tests.backends.nft_fixtures import representative, compile_with\n"
              "from rulec.backends.nftables_json import NftJsonBackend\n"
              "import sys; sys.stdout.write(compile_with(NftJsonBackend(), representative()).text)")
    outputs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              cwd=ROOT, env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
                              check=True).stdout
               for seed in ("0", "7")}
    assert outputs == {artifact.text}


# --- hostile text and limits --------------------------------------------------------------

SPAN = SourceFile("policy.rules", "accept\n").span(0, 6)


@pytest.mark.parametrize("rule", [
    Rule(action=Accept(), comment='x" accept; drop', span=SPAN),
    Rule(statements=(Log(prefix='p" drop'),), action=Accept(), span=SPAN),
], ids=["comment", "log-prefix"])
def test_quote_is_refused_like_text(rule: Rule) -> None:
    # JSON could carry it, but `nft list ruleset` would print a line nft cannot parse back:
    # the same policy must not load through one target and break the other's read-back.
    with pytest.raises(RulecError) as info:
        compile_with(NftJsonBackend(), one_rule(rule))
    assert [(d.code, d.span) for d in info.value.diagnostics] == [("E0405", SPAN)]


@pytest.mark.parametrize("verified", [True, False], ids=["verified", "backend-only"])
@pytest.mark.parametrize("comment", ["two\nlines", "cr\rhere", "nul\x00"])
def test_line_breaks_are_refused(comment: str, verified: bool) -> None:
    ruleset = one_rule(Rule(action=Accept(), comment=comment, span=SPAN))
    with pytest.raises(RulecError) as info:
        if verified:
            compile_with(NftJsonBackend(), ruleset)
        else:
            NftJsonBackend().emit(ruleset, EmitOptions())
    assert [(d.code, d.span) for d in info.value.diagnostics] == [("E0405", SPAN)]


@pytest.mark.parametrize(("ruleset", "code"), [
    (one_rule(Rule(action=Log(prefix="é" * 64))), "E0402"),
    (one_rule(Rule(action=Accept(), comment="a" * 129)), "E0402"),
    (Ruleset(tables=(Table(kind=F, family=INET, chains=(Chain(name="accept"),)),)), "E0403"),
    (Ruleset(tables=(Table(kind=F, family=INET, chains=(Chain(name="a b"),)),)), "E0403"),
], ids=["prefix-bytes", "comment", "keyword-chain", "non-identifier-chain"])
def test_same_limits_as_text(ruleset: Ruleset, code: str) -> None:
    with pytest.raises(RulecError) as info:
        compile_with(NftJsonBackend(), ruleset)
    assert [d.code for d in info.value.diagnostics] == [code]


# --- kernel -------------------------------------------------------------------------------

def _with_hostile_comment(ruleset: Ruleset) -> Ruleset:
    """The representative policy, with a comment full of nft syntax in its OUTPUT chain."""
    table = ruleset.tables[0]
    quoted = Rule(action=Accept(), comment="say 'hi'; drop } { accept # \\")
    chains = tuple(replace(c, rules=(*c.rules, quoted)) if c.name == "OUTPUT" else c
                   for c in table.chains)
    return replace(ruleset, tables=(replace(table, chains=chains), *ruleset.tables[1:]))


@kernel
@needs_kernel
def test_kernel_representative_loads_twice_and_keeps_foreign_tables() -> None:
    ruleset = _with_hostile_comment(representative())
    check_load_twice_keeps_foreign(compile_with(NftJsonBackend(), ruleset), ruleset)


def _listing(ns: str) -> list[Any]:
    done = nft(ns, "-j", "list", "ruleset")
    assert done.returncode == 0, done.stderr
    out = []
    for item in json.loads(done.stdout)["nftables"]:
        for body in item.values():
            body.pop("handle", None)
            body.pop("version", None)
        out.append(item)
    return out


@kernel
@needs_kernel
def test_kernel_json_and_text_load_the_same_rules() -> None:
    """nft's own read-back of the JSON equals that of the text, construct by construct."""
    cases = [(c[0], one_rule(c[1], family=c[2], kind=c[3], hook=c[4])) for c in CASES]
    cases += [(c[0], one_rule(c[1], family=c[2], kind=c[3], hook=c[4])) for c in JSON_CASES]
    cases.append(("representative", representative()))
    differing = []
    with namespace() as text_ns, namespace() as json_ns:
        for case_id, ruleset in cases:
            load(text_ns, compile_with(NftBackend(), ruleset))
            load(json_ns, compile_with(NftJsonBackend(), ruleset))
            if _listing(text_ns) != _listing(json_ns):
                differing.append(case_id)
            for ns in (text_ns, json_ns):  # the next case starts from an empty namespace
                assert nft(ns, "flush", "ruleset").returncode == 0
    assert not differing


# The constants of libnftables 1.0.6's parser_json.c (is_constant), and set references.
JSON_CONSTANTS = ("tcp", "udp", "udplite", "esp", "ah", "icmp", "icmpv6", "comp", "dccp", "sctp",
                  "redirect")


@pytest.mark.parametrize("name", [*JSON_CONSTANTS, "@set", "@"])
def test_interface_the_json_parser_reads_as_something_else_is_refused(name: str) -> None:
    # libnftables turns "tcp" into the protocol number: a datatype mismatch alone, and in a set
    # of names the name "\x06"; "@x" names a set. nft's text quotes them as strings.
    for iface in (Interface(name), Interface(name + "+")):
        rule = Rule(match=Match(oifname=iface), action=Accept(), span=SPAN)
        ruleset = one_rule(rule, hook=Hook.FORWARD)
        expected = [] if iface.is_wildcard and name[0] != "@" else [("E0409", SPAN)]
        try:
            compile_with(NftJsonBackend(), ruleset)
            got = []
        except RulecError as error:
            got = [(d.code, d.span) for d in error.diagnostics]
        assert got == expected, iface
        assert compile_with(NftBackend(), ruleset).text


def test_interface_in_a_verdict_map_is_refused_too() -> None:
    entries = [((Interface("tcp"),), Accept()), ((Interface("eth0"),), Drop())]
    rule = Rule(action=Vmap(keys=(MapKey.IIFNAME,), entries=tuple(entries)), span=SPAN)
    with pytest.raises(RulecError) as info:
        NftJsonBackend().emit(one_rule(rule), EmitOptions())
    assert [(d.code, d.span) for d in info.value.diagnostics] == [("E0409", SPAN)]


@pytest.mark.parametrize(("rate", "ok"), [((1 << 63) - 1, True), (1 << 63, False)])
def test_rate_fits_a_json_integer(rate: int, ok: bool) -> None:
    # jansson reads integers as signed 64-bit; a larger one fails the whole document.
    rule = Rule(match=Match(limit=Limit(rate, RateUnit.SECOND)), action=Accept(), span=SPAN)
    if ok:
        assert f'"rate": {rate},' in compile_with(NftJsonBackend(), one_rule(rule)).text
        return
    with pytest.raises(RulecError) as info:
        compile_with(NftJsonBackend(), one_rule(rule))
    assert [(d.code, d.span) for d in info.value.diagnostics] == [("E0408", SPAN)]
