"""The nft text backend: one exact line per construct, family split, hostile text, determinism,
and (marked kernel) loading into a throwaway network namespace."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rulec.backends import get_backend
from rulec.backends.base import EmitOptions
from rulec.backends.lowering import split_families
from rulec.backends.nft import check as nft_check
from rulec.backends.nftables import LIMITS, NftBackend
from rulec.diagnostics import RulecError, SourceFile
from rulec.ir.nodes import (
    Accept,
    Chain,
    ClampMss,
    Counter,
    Dnat,
    Drop,
    Goto,
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
    SetMss,
    Snat,
    Table,
    TableKind,
)
from rulec.ir.values import (
    AddressSet,
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
    TcpFlag,
    TcpFlags,
)
from rulec.ir.verify import rule_families
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
    one_rule,
    representative,
    states,
)

ROOT = Path(__file__).resolve().parents[2]
INET, IP, IP6 = Family.INET, Family.IP, Family.IP6
F, NAT, MANGLE = TableKind.FILTER, TableKind.NAT, TableKind.MANGLE
PRE, POST, FWD = Hook.PREROUTING, Hook.POSTROUTING, Hook.FORWARD


def text_of(ruleset: Ruleset) -> str:
    return compile_with(NftBackend(), ruleset).text


def rule_lines(ruleset: Ruleset) -> list[str]:
    return [line[2:] for line in text_of(ruleset).splitlines()
            if line.startswith("\t\t") and not line.startswith("\t\ttype ")]


def flags(value: str, mask: str, negated: bool = False) -> TcpFlags:
    def parse(text: str) -> frozenset[TcpFlag]:
        return frozenset(TcpFlag(f) for f in text.split(",") if f)
    return TcpFlags(parse(value), parse(mask), negated)


# (id, rule, table family, table kind, hook, expected lines)
CASES: list[tuple[str, Rule, Family, TableKind, Hook, list[str]]] = [
    ("accept", Rule(action=Accept()), INET, F, Hook.INPUT, ["accept"]),
    ("drop", Rule(action=Drop()), INET, F, Hook.INPUT, ["drop"]),
    ("return", Rule(action=Return()), INET, F, Hook.INPUT, ["return"]),
    ("jump", Rule(action=Jump("web")), INET, F, Hook.INPUT, ["jump web"]),
    ("goto", Rule(action=Goto("web")), INET, F, Hook.INPUT, ["goto web"]),
    ("family-inet", Rule(match=Match(family=IP6), action=Accept()), INET, F, Hook.INPUT,
     ["meta nfproto ipv6 accept"]),
    ("family-ip-table", Rule(match=Match(family=IP), action=Accept()), IP, F, Hook.INPUT,
     ["accept"]),
    ("proto", Rule(match=Match(proto=TCP), action=Accept()), INET, F, Hook.INPUT,
     ["meta l4proto tcp accept"]),
    ("proto-negated", Rule(match=Match(proto=Protocol(6, negated=True)), action=Accept()),
     INET, F, Hook.INPUT, ["meta l4proto != tcp accept"]),
    ("proto-number", Rule(match=Match(proto=Protocol(47)), action=Accept()), IP, F,
     Hook.INPUT, ["meta l4proto 47 accept"]),
    ("proto-icmp-inet", Rule(match=Match(proto=Protocol(1)), action=Accept()), INET, F,
     Hook.INPUT, ["meta nfproto ipv4 meta l4proto icmp accept"]),
    ("proto-icmp-ip", Rule(match=Match(proto=Protocol(1)), action=Accept()), IP, F,
     Hook.INPUT, ["meta l4proto icmp accept"]),
    ("proto-icmpv6-inet", Rule(match=Match(proto=Protocol(58)), action=Accept()), INET, F,
     Hook.INPUT, ["meta nfproto ipv6 meta l4proto icmpv6 accept"]),
    ("saddr-host", Rule(match=Match(saddr=addrs("192.0.2.1")), action=Accept()), INET, F,
     Hook.INPUT, ["ip saddr 192.0.2.1 accept"]),
    ("saddr-set", Rule(match=Match(saddr=addrs("192.0.2.1", "10.0.0.0/8")), action=Accept()),
     IP, F, Hook.INPUT, ["ip saddr { 10.0.0.0/8, 192.0.2.1 } accept"]),
    ("daddr-negated-ip6", Rule(match=Match(daddr=addrs("fe80::/10", negated=True)),
                               action=Accept()), IP6, F, Hook.INPUT,
     ["ip6 daddr != fe80::/10 accept"]),
    ("ports", Rule(match=Match(proto=TCP, sport=PortSet.of((1024, 65535)),
                               dport=PortSet.of(22, (80, 90))), action=Accept()),
     INET, F, Hook.INPUT, ["tcp sport 1024-65535 tcp dport { 22, 80-90 } accept"]),
    ("dport-negated", Rule(match=Match(proto=UDP, dport=PortSet.of(53, negated=True)),
                           action=Accept()), INET, F, Hook.INPUT, ["udp dport != 53 accept"]),
    ("dport-sctp", Rule(match=Match(proto=Protocol(132), dport=PortSet.of(9)),
                        action=Accept()), INET, F, Hook.INPUT, ["sctp dport 9 accept"]),
    ("iifname-wildcard", Rule(match=Match(iifname=Interface("br-+")), action=Accept()),
     INET, F, Hook.INPUT, ['iifname "br-*" accept']),
    ("oifname-negated", Rule(match=Match(oifname=Interface("eth0", negated=True)),
                             action=Accept()), INET, F, Hook.OUTPUT,
     ['oifname != "eth0" accept']),
    ("ct-state", Rule(match=Match(ct_state=states(CtState.RELATED, CtState.ESTABLISHED)),
                      action=Accept()), INET, F, Hook.INPUT,
     ["ct state established,related accept"]),
    ("ct-state-negated", Rule(match=Match(ct_state=states(CtState.NEW, CtState.INVALID,
                                                          negated=True)), action=Drop()),
     INET, F, Hook.INPUT, ["ct state ! invalid,new drop"]),
    ("ct-orig-dport", Rule(match=Match(proto=TCP, ct_orig_dport=PortSet.of(80)),
                           action=Accept()), INET, F, Hook.FORWARD,
     ["meta l4proto tcp ct original proto-dst 80 accept"]),
    ("ct-orig-dport-with-dport", Rule(match=Match(proto=TCP, dport=PortSet.of(8080),
                                                  ct_orig_dport=PortSet.of(80, 443)),
                                      action=Accept()), INET, F, Hook.FORWARD,
     ["tcp dport 8080 ct original proto-dst { 80, 443 } accept"]),
    ("src-type", Rule(match=Match(src_type=AddrType(AddrTypeKind.LOCAL)), action=Accept()),
     INET, F, Hook.INPUT, ["fib saddr type local accept"]),
    ("dst-type-negated", Rule(match=Match(dst_type=AddrType(AddrTypeKind.LOCAL, True)),
                              action=Accept()), INET, F, Hook.INPUT,
     ["fib daddr type != local accept"]),
    ("tcp-flags", Rule(match=Match(proto=TCP, tcp_flags=SYN_ONLY), action=Accept()),
     INET, F, Hook.INPUT, ["tcp flags syn / syn,rst accept"]),
    ("tcp-flags-negated", Rule(match=Match(proto=TCP, tcp_flags=flags("syn", "syn,rst", True)),
                               action=Accept()), INET, F, Hook.INPUT,
     ["tcp flags != syn / syn,rst accept"]),
    ("tcp-flags-single-mask", Rule(match=Match(proto=TCP, tcp_flags=flags("syn", "syn")),
                                   action=Accept()), INET, F, Hook.INPUT,
     ["tcp flags & syn == syn accept"]),
    ("tcp-flags-none", Rule(match=Match(proto=TCP, tcp_flags=flags("", "fin,syn,rst,ack")),
                            action=Drop()), INET, F, Hook.INPUT,
     ["tcp flags 0x0 / fin,syn,rst,ack drop"]),
    ("tcp-flags-ecn", Rule(match=Match(proto=TCP, tcp_flags=flags("ece,cwr", "ece,cwr")),
                           action=Accept()), INET, F, Hook.INPUT,
     ["tcp flags ecn,cwr / ecn,cwr accept"]),
    ("icmp-type", Rule(match=Match(proto=Protocol(1), icmp_type=IcmpType(IP, (8,))),
                       action=Accept()), INET, F, Hook.INPUT,
     ["icmp type echo-request accept"]),
    ("icmp-type-number", Rule(match=Match(proto=Protocol(1), icmp_type=IcmpType(IP, (42,))),
                              action=Accept()), IP, F, Hook.INPUT, ["icmp type 42 accept"]),
    ("icmp-type-negated", Rule(match=Match(proto=Protocol(1),
                                           icmp_type=IcmpType(IP, (8,), negated=True)),
                               action=Accept()), INET, F, Hook.INPUT,
     ["icmp type != echo-request accept"]),
    ("icmpv6-type", Rule(match=Match(proto=Protocol(58), icmp_type=IcmpType(IP6, (135,))),
                         action=Accept()), INET, F, Hook.INPUT,
     ["icmpv6 type nd-neighbor-solicit accept"]),
    ("mark", Rule(match=Match(mark=Mark(1)), action=Accept()), INET, F, Hook.INPUT,
     ["meta mark 0x00000001 accept"]),
    ("mark-negated", Rule(match=Match(mark=Mark(1, negated=True)), action=Accept()),
     INET, F, Hook.INPUT, ["meta mark != 0x00000001 accept"]),
    ("mark-masked", Rule(match=Match(mark=Mark(1, 0xff)), action=Accept()), INET, F,
     Hook.INPUT, ["meta mark & 0x000000ff == 0x00000001 accept"]),
    ("mark-masked-negated", Rule(match=Match(mark=Mark(0, 0xff00, negated=True)),
                                 action=Accept()), INET, F, Hook.INPUT,
     ["meta mark & 0x0000ff00 != 0x00000000 accept"]),
    ("limit", Rule(match=Match(limit=Limit(10, RateUnit.SECOND)), action=Accept()), INET, F,
     Hook.INPUT, ["limit rate 10/second accept"]),
    ("limit-burst", Rule(match=Match(limit=Limit(3, RateUnit.MINUTE, burst=10)),
                         action=Accept()), INET, F, Hook.INPUT,
     ["limit rate 3/minute burst 10 packets accept"]),
    ("counter", Rule(statements=(Counter(),), action=Accept()), INET, F, Hook.INPUT,
     ["counter accept"]),
    ("log-statement", Rule(statements=(Log(prefix="ssh: ", level=LogLevel.INFO), Counter()),
                           action=Drop()), INET, F, Hook.INPUT,
     ['log prefix "ssh: " level info counter drop']),
    ("log-action", Rule(action=Log()), INET, F, Hook.INPUT, ["log"]),
    ("log-default-level", Rule(action=Log(level=LogLevel.WARNING)), INET, F, Hook.INPUT,
     ["log"]),
    ("log-level-emerg", Rule(action=Log(level=LogLevel.EMERG)), INET, F, Hook.INPUT,
     ["log level emerg"]),
    ("reject", Rule(action=Reject()), INET, F, Hook.INPUT, ["reject"]),
    ("reject-port-unreachable", Rule(action=Reject(RejectWith.PORT_UNREACHABLE)), IP6, F,
     Hook.INPUT, ["reject"]),
    ("reject-admin-inet", Rule(action=Reject(RejectWith.ADMIN_PROHIBITED)), INET, F,
     Hook.INPUT, ["reject with icmpx admin-prohibited"]),
    ("reject-admin-ip", Rule(action=Reject(RejectWith.ADMIN_PROHIBITED)), IP, F,
     Hook.INPUT, ["reject with icmp admin-prohibited"]),
    ("reject-host-inet", Rule(action=Reject(RejectWith.HOST_UNREACHABLE)), INET, F,
     Hook.INPUT, ["reject with icmpx host-unreachable"]),
    ("reject-host-ip", Rule(action=Reject(RejectWith.HOST_UNREACHABLE)), IP, F,
     Hook.INPUT, ["reject with icmp host-unreachable"]),
    ("reject-host-ip6", Rule(action=Reject(RejectWith.HOST_UNREACHABLE)), IP6, F,
     Hook.INPUT, ["reject with icmpv6 addr-unreachable"]),
    ("reject-net-inet", Rule(action=Reject(RejectWith.NET_UNREACHABLE)), INET, F,
     Hook.INPUT, ["reject with icmpx no-route"]),
    ("reject-net-ip", Rule(action=Reject(RejectWith.NET_UNREACHABLE)), IP, F,
     Hook.INPUT, ["reject with icmp net-unreachable"]),
    ("reject-net-ip6", Rule(action=Reject(RejectWith.NET_UNREACHABLE)), IP6, F,
     Hook.INPUT, ["reject with icmpv6 no-route"]),
    ("reject-tcp-reset", Rule(match=Match(proto=TCP), action=Reject(RejectWith.TCP_RESET)),
     INET, F, Hook.INPUT, ["meta l4proto tcp reject with tcp reset"]),
    ("dnat-inet", Rule(match=Match(proto=TCP, dport=PortSet.of(80)),
                       action=Dnat(Prefix.parse("10.0.0.1"), (8080, 8080))), INET, NAT, PRE,
     ["meta nfproto ipv4 tcp dport 80 dnat ip to 10.0.0.1:8080"]),
    ("dnat-inet-ip6", Rule(match=Match(proto=TCP, dport=PortSet.of(80)),
                           action=Dnat(Prefix.parse("2001:db8::1"), (8080, 8090))),
     INET, NAT, PRE, ["meta nfproto ipv6 tcp dport 80 dnat ip6 to [2001:db8::1]:8080-8090"]),
    ("dnat-inet-address-only", Rule(match=Match(daddr=addrs("192.0.2.1")),
                                    action=Dnat(Prefix.parse("10.0.0.1"))), INET, NAT, PRE,
     ["ip daddr 192.0.2.1 dnat ip to 10.0.0.1"]),
    ("dnat-ip", Rule(match=Match(proto=TCP, dport=PortSet.of(80)),
                     action=Dnat(Prefix.parse("10.0.0.1"), (8080, 8080))), IP, NAT, PRE,
     ["tcp dport 80 dnat to 10.0.0.1:8080"]),
    ("dnat-ip6", Rule(match=Match(proto=TCP, dport=PortSet.of(80)),
                      action=Dnat(Prefix.parse("2001:db8::1"))), IP6, NAT, PRE,
     ["tcp dport 80 dnat to 2001:db8::1"]),
    ("snat-inet", Rule(action=Snat(Prefix.parse("192.0.2.1"))), INET, NAT, POST,
     ["meta nfproto ipv4 snat ip to 192.0.2.1"]),
    ("snat-ports", Rule(match=Match(proto=UDP),
                        action=Snat(Prefix.parse("192.0.2.1"), (1000, 2000))), IP, NAT, POST,
     ["meta l4proto udp snat to 192.0.2.1:1000-2000"]),
    ("masquerade", Rule(action=Masquerade()), INET, NAT, POST, ["masquerade"]),
    ("masquerade-ports", Rule(match=Match(proto=TCP), action=Masquerade((1024, 65535))),
     INET, NAT, POST, ["meta l4proto tcp masquerade to :1024-65535"]),
    ("redirect", Rule(match=Match(proto=TCP, dport=PortSet.of(80)), action=Redirect((8080,
                                                                                   8080))),
     INET, NAT, PRE, ["tcp dport 80 redirect to :8080"]),
    ("set-mss", Rule(match=Match(proto=TCP, tcp_flags=SYN_ONLY), action=SetMss(1400)),
     INET, MANGLE, FWD, ["tcp flags syn / syn,rst tcp option maxseg size set 1400"]),
    ("clamp-mss", Rule(match=Match(proto=TCP, tcp_flags=SYN_ONLY), action=ClampMss()),
     INET, F, FWD, ["tcp flags syn / syn,rst tcp option maxseg size set rt mtu"]),
    ("set-mark", Rule(action=SetMark(1)), INET, MANGLE, PRE,
     ["meta mark set 0x00000001"]),
    ("set-mark-masked", Rule(action=SetMark(1, 0xff)), INET, MANGLE, PRE,
     ["meta mark set meta mark & 0xffffff01 | 0x00000001"]),
    ("set-mark-clear", Rule(action=SetMark(0, 0xff)), INET, MANGLE, PRE,
     ["meta mark set meta mark & 0xffffff00"]),
    ("set-mark-xor", Rule(action=SetMark(0x100, 0xff)), INET, MANGLE, PRE,
     ["meta mark set meta mark & 0xffffff00 ^ 0x00000100"]),
    ("comment", Rule(action=Accept(), comment="web traffic"), INET, F, Hook.INPUT,
     ['accept comment "web traffic"']),
    ("field-order", Rule(
        match=Match(limit=Limit(1, RateUnit.SECOND), mark=Mark(2), proto=TCP,
                    tcp_flags=SYN_ONLY, dst_type=AddrType(AddrTypeKind.LOCAL),
                    ct_state=states(CtState.NEW), oifname=Interface("eth1"),
                    iifname=Interface("eth0"), dport=PortSet.of(443), sport=PortSet.of(1000),
                    daddr=addrs("198.51.100.1"), saddr=addrs("192.0.2.1")),
        statements=(Log(prefix="p"), Counter()), action=Accept(), comment="c"),
     INET, F, Hook.FORWARD,
     ['ip saddr 192.0.2.1 ip daddr 198.51.100.1 tcp sport 1000 tcp dport 443 iifname "eth0" '
      'oifname "eth1" ct state new fib daddr type local tcp flags syn / syn,rst '
      'meta mark 0x00000002 limit rate 1/second log prefix "p" counter accept comment "c"']),
]


@pytest.mark.parametrize(("rule", "family", "kind", "hook", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_construct(rule: Rule, family: Family, kind: TableKind, hook: Hook,
                   expected: list[str]) -> None:
    assert rule_lines(one_rule(rule, family=family, kind=kind, hook=hook)) == expected


def test_script_shape() -> None:
    ruleset = Ruleset(tables=(Table(kind=F, family=INET, chains=(
        Chain(name="INPUT", hook=Hook.INPUT, policy=Policy.DROP, rules=(
            Rule(match=Match(ct_state=states(CtState.ESTABLISHED, CtState.RELATED)),
                 action=Accept()),
            Rule(action=Jump("web")))),
        Chain(name="web", rules=(Rule(match=Match(proto=TCP, dport=PortSet.of(80)),
                                      action=Accept()),)),
    )),))
    # Every table rulec may own is created (a no-op if present) and deleted first, so a
    # table the policy no longer declares goes too; all in one transaction.
    prelude = "".join(f"table {fam} rulec-{kind}\ndelete table {fam} rulec-{kind}\n"
                      for fam in ("ip", "ip6", "inet")
                      for kind in ("filter", "nat", "mangle", "raw"))
    assert text_of(ruleset) == (
        "# generated by rulec; do not edit\n"
        "# replace every rulec-* table, in one transaction\n"
        + prelude + "\n"
        "table inet rulec-filter {\n"
        "\tchain INPUT {\n"
        "\t\ttype filter hook input priority 0; policy drop;\n"
        "\t\tct state established,related accept\n"
        "\t\tjump web\n"
        "\t}\n"
        "\tchain web {\n"
        "\t\ttcp dport 80 accept\n"
        "\t}\n"
        "}\n")


@pytest.mark.parametrize(("kind", "hook", "family", "header"), [
    (F, Hook.INPUT, INET, "type filter hook input priority 0; policy accept;"),
    (NAT, PRE, IP, "type nat hook prerouting priority -100; policy accept;"),
    (NAT, Hook.OUTPUT, IP6, "type nat hook output priority -100; policy accept;"),
    (NAT, Hook.INPUT, INET, "type nat hook input priority 100; policy accept;"),
    (NAT, POST, INET, "type nat hook postrouting priority 100; policy accept;"),
    (MANGLE, Hook.OUTPUT, INET, "type route hook output priority -150; policy accept;"),
    (MANGLE, FWD, IP, "type filter hook forward priority -150; policy accept;"),
    (TableKind.RAW, PRE, IP6, "type filter hook prerouting priority -300; policy accept;"),
])
def test_base_chain_header(kind: TableKind, hook: Hook, family: Family, header: str) -> None:
    ruleset = Ruleset(tables=(Table(kind=kind, family=family,
                                    chains=(Chain(name=hook.value, hook=hook),)),))
    assert f"\t\t{header}\n" in text_of(ruleset)
    assert f"table {family.value} rulec-{kind.value} {{" in text_of(ruleset)


def test_policy_drop_and_several_tables() -> None:
    ruleset = Ruleset(tables=(
        Table(kind=F, family=IP, chains=(Chain(name="FORWARD", hook=FWD, policy=Policy.DROP),)),
        Table(kind=F, family=IP6, chains=(Chain(name="FORWARD", hook=FWD),)),
    ))
    text = text_of(ruleset)
    assert "type filter hook forward priority 0; policy drop;" in text
    assert text.count("delete table") == 12  # every rulec-* table, declared or not
    assert "\n}\n\ntable ip6 rulec-filter {\n" in text


# --- family split -------------------------------------------------------------------------

@pytest.mark.parametrize(("match", "family", "expected"), [
    (Match(saddr=addrs("10.0.0.0/8", "2001:db8::/32")), INET,
     ["ip saddr 10.0.0.0/8 accept", "ip6 saddr 2001:db8::/32 accept"]),
    (Match(saddr=addrs("10.0.0.0/8", "2001:db8::/32", negated=True)), INET,
     ["ip saddr != 10.0.0.0/8 accept", "ip6 saddr != 2001:db8::/32 accept"]),
    (Match(saddr=addrs("10.0.0.0/8", negated=True)), INET,
     ["ip saddr != 10.0.0.0/8 accept", "meta nfproto ipv6 accept"]),
    (Match(saddr=addrs("10.0.0.0/8", "2001:db8::/32"), daddr=addrs("192.0.2.1")), INET,
     ["ip saddr 10.0.0.0/8 ip daddr 192.0.2.1 accept"]),
    (Match(saddr=addrs("10.0.0.0/8", "2001:db8::/32"),
           daddr=addrs("192.0.2.1", "2001:db8::1", negated=True)), INET,
     ["ip saddr 10.0.0.0/8 ip daddr != 192.0.2.1 accept",
      "ip6 saddr 2001:db8::/32 ip6 daddr != 2001:db8::1 accept"]),
    (Match(saddr=addrs("10.0.0.0/8", "fc00::/7"), proto=Protocol(1)), INET,
     ["meta l4proto icmp ip saddr 10.0.0.0/8 accept"]),
    (Match(saddr=addrs("10.0.0.0/8", negated=True), proto=Protocol(58)), INET,
     ["meta nfproto ipv6 meta l4proto icmpv6 accept"]),
    (Match(saddr=addrs("10.0.0.0/8", "fc00::/7", negated=True)), IP,
     ["ip saddr != 10.0.0.0/8 accept"]),
    (Match(saddr=addrs("fc00::/7", negated=True)), IP, ["accept"]),
], ids=["mixed", "mixed-negated", "negated-v4-only", "drop-empty-copy", "both-sets",
        "icmp-v4-only", "negated-becomes-none", "ip-table-restrict", "ip-table-foreign-only"])
def test_family_split(match: Match, family: Family, expected: list[str]) -> None:
    assert rule_lines(one_rule(Rule(match=match, action=Accept()), family=family)) == expected


def test_split_keeps_statements_comment_and_span() -> None:
    source = SourceFile("p.rules", "accept\n")
    rule = Rule(match=Match(saddr=addrs("10.0.0.0/8", "fc00::/7")),
                statements=(Counter(),), action=Accept(), comment="both",
                span=source.span(0, 6))
    lowered = split_families(one_rule(rule))
    copies = lowered.tables[0].chains[0].rules
    assert [r.match.family for r in copies] == [IP, IP6]
    assert all(r.comment == "both" and r.statements == (Counter(),) and r.span == rule.span
               for r in copies)


def test_split_returns_same_object_when_nothing_changes() -> None:
    ruleset = representative()
    unchanged = Ruleset(tables=ruleset.tables[1:])  # no mixed address sets there
    assert split_families(unchanged) is unchanged
    assert split_families(ruleset) is not ruleset


_prefixes = st.sampled_from(["10.0.0.0/8", "10.1.0.0/16", "192.0.2.1", "2001:db8::/32",
                             "fc00::/7", "::1"])
_sets = st.none() | st.builds(
    lambda ps, neg: addrs(*ps, negated=neg), st.sets(_prefixes, min_size=1), st.booleans())
_packets = st.sampled_from([(IP, 0x0A000001), (IP, 0x0A010001), (IP, 0xC0000201),
                            (IP, 0x08080808), (IP6, 0x20010DB8 << 96), (IP6, 1),
                            (IP6, 0xFD00 << 112), (IP6, 0x2A00 << 112)])


def _address_verdict(table: Table, rule: Rule, family: Family, saddr: int, daddr: int) -> bool:
    m = rule.match
    return (family in rule_families(table, rule)
            and (m.saddr is None or m.saddr.contains(family, saddr))
            and (m.daddr is None or m.daddr.contains(family, daddr)))


@given(_sets, _sets, st.sampled_from([None, IP, IP6]), st.sampled_from([INET, IP, IP6]),
       _packets, _packets)
def test_split_preserves_address_verdicts(
    saddr: AddressSet | None, daddr: AddressSet | None, family: Family | None,
    table_family: Family, src: tuple[Family, int], dst: tuple[Family, int],
) -> None:
    rule = Rule(match=Match(saddr=saddr, daddr=daddr, family=family), action=Accept())
    ruleset = one_rule(rule, family=table_family)
    table = ruleset.tables[0]
    lowered = split_families(ruleset).tables[0]
    copies = lowered.chains[0].rules
    for packet_family in (IP, IP6):
        s = src[1] if src[0] is packet_family else 0
        d = dst[1] if dst[0] is packet_family else 0
        before = _address_verdict(table, rule, packet_family, s, d)
        after = [_address_verdict(lowered, c, packet_family, s, d) for c in copies]
        assert before == any(after)
        assert sum(after) <= 1  # the copies are disjoint
    for copy in copies:  # every set that remains is of one family, and not empty
        for value in (copy.match.saddr, copy.match.daddr):
            assert value is None or len(value.families) == 1


# --- hostile text and limits --------------------------------------------------------------

def _error(ruleset: Ruleset, *, verified: bool = True) -> RulecError:
    with pytest.raises(RulecError) as info:
        if verified:
            text_of(ruleset)
        else:  # the backend must refuse on its own, without verify() in front
            NftBackend().emit(ruleset, EmitOptions())
    return info.value


SPAN = SourceFile("policy.rules", "accept comment 'x'\n").span(0, 6)


@pytest.mark.parametrize("verified", [True, False], ids=["verified", "backend-only"])
@pytest.mark.parametrize("comment", ['x" accept; drop', "two\nlines", "cr\rhere", 'a"b'])
def test_injection_in_comment_is_refused(comment: str, verified: bool) -> None:
    error = _error(one_rule(Rule(action=Accept(), comment=comment, span=SPAN)),
                   verified=verified)
    assert [d.code for d in error.diagnostics] == ["E0405"]
    assert error.diagnostics[0].span is SPAN


@pytest.mark.parametrize("verified", [True, False], ids=["verified", "backend-only"])
def test_injection_in_log_prefix_is_refused(verified: bool) -> None:
    rule = Rule(statements=(Log(prefix='x" drop #'),), action=Accept(), span=SPAN)
    assert [d.code for d in _error(one_rule(rule), verified=verified).diagnostics] == ["E0405"]


def test_awkward_but_quotable_text_is_carried_verbatim() -> None:
    comment = "a; drop # {x} 'q' $v @s é \\"
    rule = Rule(statements=(Log(prefix="p; drop"),), action=Accept(), comment=comment)
    assert rule_lines(one_rule(rule)) == [f'log prefix "p; drop" accept comment "{comment}"']


def test_interface_with_glob_or_quote_is_refused() -> None:
    for name in ("br*", 'e"th', "a\\b"):
        rule = Rule(match=Match(iifname=Interface(name)), action=Accept(), span=SPAN)
        assert [d.code for d in _error(one_rule(rule)).diagnostics] == ["E0405"]


def test_comment_limit_is_128_bytes() -> None:
    assert rule_lines(one_rule(Rule(action=Accept(), comment="é" * 64)))
    assert [d.code for d in _error(one_rule(Rule(action=Accept(), comment="é" * 65)))
            .diagnostics] == ["E0402"]


def test_log_prefix_limit_is_127_bytes() -> None:
    assert rule_lines(one_rule(Rule(action=Log(prefix="a" * 127))))
    # 64 characters pass verify's character count, but are 128 bytes: nft would crash on it.
    error = _error(one_rule(Rule(action=Log(prefix="é" * 64), span=SPAN)))
    assert [(d.code, d.span) for d in error.diagnostics] == [("E0402", SPAN)]


@pytest.mark.parametrize("name", ["log", "LOG", "jump", "counter", "reject", "table", "policy",
                                  "vmap"])
def test_keyword_chain_name_is_refused(name: str) -> None:
    ruleset = Ruleset(tables=(Table(kind=F, family=INET, chains=(Chain(name=name),)),))
    assert [d.code for d in _error(ruleset).diagnostics] == ["E0403"]
    assert [d.code for d in _error(ruleset, verified=False).diagnostics] == ["E0403"]


@pytest.mark.parametrize("name", ["a b", "1abc", "x$y", "-x", "é", ".", 'q"'])
def test_non_identifier_chain_name_is_refused(name: str) -> None:
    ruleset = Ruleset(tables=(Table(kind=F, family=INET, chains=(Chain(name=name),)),))
    assert "E0403" in [d.code for d in _error(ruleset).diagnostics]


@pytest.mark.parametrize("name", ["DOCKER-USER", "k8s/ns.pod_1", "_x", ".x", "filter",
                                  "input", "nat"])
def test_identifier_chain_names_are_accepted(name: str) -> None:
    ruleset = Ruleset(tables=(Table(kind=F, family=INET, chains=(Chain(name=name),)),))
    assert f"\tchain {name} {{\n" in text_of(ruleset)


def test_ct_orig_dport_without_protocol_is_refused() -> None:
    rule = Rule(match=Match(ct_orig_dport=PortSet.of(80)), action=Accept(), span=SPAN)
    assert [(d.code, d.span) for d in _error(one_rule(rule)).diagnostics] == [("E0404", SPAN)]


def test_chain_only_someone_else_could_jump_to_is_refused() -> None:
    """In iptables dockerd jumps to DOCKER-USER; an nft table is private, so it would be dead."""
    chain_span = SourceFile("docker.rules", "chain DOCKER-USER {}\n").span(6, 17)
    ruleset = Ruleset(tables=(Table(kind=F, family=IP, chains=(
        Chain(name="FORWARD", hook=FWD, rules=(Rule(action=Jump("reached")),)),
        Chain(name="reached", rules=(Rule(action=Goto("via-goto")),)),
        Chain(name="via-goto", rules=(Rule(action=Accept()),)),
        Chain(name="empty"),
        Chain(name="DOCKER-USER", rules=(Rule(action=Return()),), span=chain_span),
    )),))
    assert [(d.code, d.span) for d in _error(ruleset).diagnostics] == [("E0404", chain_span)]


def test_match_field_unknown_to_the_printers_is_refused(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setattr(nft_check, "PRINTED_FIELDS", nft_check.PRINTED_FIELDS - {"mark"})
    rule = Rule(match=Match(mark=Mark(1)), action=Accept(), span=SPAN)
    assert [(d.code, d.span) for d in _error(one_rule(rule)).diagnostics] == [("E0404", SPAN)]


def test_duplicate_chain_is_refused() -> None:
    chains = (Chain(name="INPUT", hook=Hook.INPUT), Chain(name="INPUT", hook=Hook.INPUT))
    ruleset = Ruleset(tables=(Table(kind=F, family=INET, chains=chains),))
    assert [d.code for d in _error(ruleset).diagnostics] == ["E0404"]


def test_duplicate_table_is_refused() -> None:
    table = Table(kind=F, family=INET, chains=(Chain(name="INPUT", hook=Hook.INPUT),))
    assert [d.code for d in _error(Ruleset(tables=(table, table))).diagnostics] == ["E0404"]


def test_all_errors_are_reported_at_once() -> None:
    rules = (Rule(action=Log(prefix="é" * 64)), Rule(match=Match(ct_orig_dport=PortSet.of(1)),
                                                    action=Accept()))
    ruleset = Ruleset(tables=(Table(kind=F, family=INET, chains=(
        Chain(name="INPUT", hook=Hook.INPUT, rules=rules), Chain(name="a b"))),))
    assert sorted(d.code for d in _error(ruleset).diagnostics) == ["E0402", "E0403", "E0404"]


# --- artifact and determinism -------------------------------------------------------------

def test_artifact_and_registry() -> None:
    backend = get_backend("nft")
    assert isinstance(backend, NftBackend) and backend.limits is LIMITS
    artifact = compile_with(backend, representative())
    assert artifact.target == "nft" and artifact.load_command == ("nft", "-f", "-")
    assert artifact.text.startswith("# generated by rulec; do not edit\n")


def test_deterministic_across_runs_and_hash_seeds() -> None:
    text = text_of(representative())
    assert text == text_of(representative())
    script = ("from tests.backends.nft_fixtures import representative, compile_with\n"
              "from rulec.backends.nftables import NftBackend\n"
              "import sys; sys.stdout.write(compile_with(NftBackend(), representative()).text)")
    outputs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              cwd=ROOT, env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
                              check=True).stdout
               for seed in ("0", "1", "4242")}
    assert outputs == {text}


# --- kernel -------------------------------------------------------------------------------

@kernel
@needs_kernel
def test_kernel_representative_loads_twice_and_keeps_foreign_tables() -> None:
    ruleset = representative()
    check_load_twice_keeps_foreign(compile_with(NftBackend(), ruleset), ruleset)


@kernel
@needs_kernel
def test_kernel_every_construct_loads() -> None:
    failures = []
    with namespace() as ns:
        for case_id, rule, family, kind, hook, _ in CASES:
            artifact = compile_with(NftBackend(), one_rule(rule, family=family, kind=kind,
                                                           hook=hook))
            try:
                load(ns, artifact)
            except AssertionError as error:
                failures.append(f"{case_id}: {error}")
    assert not failures, "\n".join(failures)


# --- what the kernel or nft would refuse, refused first -----------------------------------

@pytest.mark.parametrize("verified", [True, False], ids=["verified", "backend-only"])
@pytest.mark.parametrize("prefix", ["cost $5", "$", "a$b c", "trailing$"])
def test_dollar_in_log_prefix_is_refused(prefix: str, verified: bool) -> None:
    # nft reads `$` there as a variable ("unknown identifier"), and has no escape for it.
    for rule in (Rule(action=Log(prefix=prefix), span=SPAN),
                 Rule(statements=(Log(prefix=prefix),), action=Accept(), span=SPAN)):
        error = _error(one_rule(rule), verified=verified)
        assert [(d.code, d.span) for d in error.diagnostics] == [("E0405", SPAN)]


def test_dollar_elsewhere_is_carried() -> None:
    rule = Rule(match=Match(iifname=Interface("a$b")), action=Accept(), comment="cost $5")
    assert rule_lines(one_rule(rule)) == ['iifname "a$b" accept comment "cost $5"']


@pytest.mark.parametrize("verified", [True, False], ids=["verified", "backend-only"])
@pytest.mark.parametrize(("rate", "burst", "ok"), [
    ((1 << 64) - 6, 5, True), ((1 << 64) - 5, 5, False), ((1 << 64) - 10001, 10000, True),
    ((1 << 64) - 10000, 10000, False), (10**30, 5, False),
])
def test_rate_is_bounded_as_the_kernel_bounds_it(rate: int, burst: int, ok: bool,
                                                 verified: bool) -> None:
    # nft_limit_init: EOVERFLOW when rate + burst overflows 64 bits.
    rule = Rule(match=Match(limit=Limit(rate, RateUnit.SECOND, burst)), action=Accept(),
                span=SPAN)
    if ok:
        assert rule_lines(one_rule(rule))[0].startswith(f"limit rate {rate}/second")
    else:
        error = _error(one_rule(rule), verified=verified)
        assert [(d.code, d.span) for d in error.diagnostics] == [("E0408", SPAN)]


@pytest.mark.parametrize(("name", "code"), [
    ("+", "E0405"), ("ééééééé+", None), ("éééééééé+", "E0313"), ("a" * 14 + "+", None),
    ("a" * 15 + "+", "E0313"), ("a" * 15, None), ("éééééééé", "E0313"),
])
def test_interface_names_are_measured_as_nft_writes_them(name: str, code: str | None) -> None:
    # `+` becomes `*`, which takes a byte of the 15: "String exceeds maximum length of 16".
    rule = Rule(match=Match(iifname=Interface(name)), action=Accept(), span=SPAN)
    if code is None:
        assert rule_lines(one_rule(rule))
    else:
        error = _error(one_rule(rule), verified=False)
        assert [(d.code, d.span) for d in error.diagnostics] == [(code, SPAN)]


def test_jumps_nested_deeper_than_the_kernel_allows_are_refused() -> None:
    def ruleset(depth: int) -> Ruleset:
        chains = [Chain(name="INPUT", hook=Hook.INPUT, rules=(Rule(action=Jump("c1")),))]
        chains += [Chain(name=f"c{i}", rules=(Rule(action=Jump(f"c{i + 1}"), span=SPAN),))
                   for i in range(1, depth)]
        chains.append(Chain(name=f"c{depth}", rules=(Rule(action=Accept()),)))
        return Ruleset(tables=(Table(kind=TableKind.FILTER, family=Family.IP,
                                     chains=tuple(chains)),))

    assert text_of(ruleset(15))
    error = _error(ruleset(16), verified=False)
    assert [(d.code, d.span) for d in error.diagnostics] == [("E0410", SPAN)]
