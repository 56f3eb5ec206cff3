"""iptables/ip6tables backends: exact lines per construct, lowerings, quoting, and a kernel
read-back check (root only) against iptables-nft-restore and iptables-legacy-restore."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from rulec.backends.base import EmitOptions
from rulec.backends.iptables import (
    HelperChains,
    Ip6tablesBackend,
    IptablesBackend,
    chunk_ports,
    expand_rule,
    lower_rule,
    quote,
    split_log,
)
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
    ICMP,
    ICMPV6,
    TCP,
    UDP,
    AddressSet,
    AddrType,
    AddrTypeKind,
    CtState,
    CtStates,
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
from rulec.ir.verify import verify

IP, IP6, INET = Family.IP, Family.IP6, Family.INET
FILTER, NAT, MANGLE, RAW = TableKind.FILTER, TableKind.NAT, TableKind.MANGLE, TableKind.RAW
SOURCE = SourceFile("t.rules", "accept\n")
SPAN = SOURCE.span(0, 6)
ROOT = Path(__file__).resolve().parents[2]


def addrs(*texts: str, negated: bool = False) -> AddressSet:
    return AddressSet(tuple(Prefix.parse(t) for t in texts), negated)


def ports(*items: int | tuple[int, int], negated: bool = False) -> PortSet:
    return PortSet.of(*items, negated=negated)


def proto(number: int, negated: bool = False) -> Protocol:
    return Protocol(number, negated)


def syn_only(negated: bool = False) -> TcpFlags:
    return TcpFlags(frozenset({TcpFlag.SYN}), frozenset({TcpFlag.SYN, TcpFlag.RST}), negated)


def rule(action: object = None, **match: object) -> Rule:
    return Rule(match=Match(**match), action=action or Accept(), span=SPAN)  # type: ignore[arg-type]


def backend(family: Family) -> IptablesBackend | Ip6tablesBackend:
    return IptablesBackend() if family is IP else Ip6tablesBackend()


def emit(*tables: Table, family: Family = IP, noflush: bool = False) -> str:
    return backend(family).emit(Ruleset(tables=tables), EmitOptions(noflush=noflush)).text


def table(*rules: Rule, kind: TableKind = FILTER, chain: str = "INPUT", family: Family = IP,
          extra: tuple[Chain, ...] = ()) -> Table:
    return Table(kind=kind, family=family,
                 chains=(Chain(name=chain, hook=Hook(chain), rules=rules), *extra))


def rule_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("-A ")]


def lines(*rules: Rule, family: Family = IP, **kw: object) -> list[str]:
    return rule_lines(emit(table(*rules, family=family, **kw), family=family))  # type: ignore[arg-type]


def codes(excinfo: pytest.ExceptionInfo[RulecError]) -> list[str]:
    return [d.code for d in excinfo.value.diagnostics]


# ---------------------------------------------------------------------------------------------
# One construct per case: (rule, family, table kind, chain) -> the exact iptables-save line.

CASES: list[tuple[str, Rule, Family, TableKind, str, str]] = [
    ("addresses", rule(saddr=addrs("10.0.0.1"), daddr=addrs("10.1.0.0/16"), proto=proto(TCP),
                       dport=ports(22)),
     IP, FILTER, "INPUT", "-s 10.0.0.1/32 -d 10.1.0.0/16 -p tcp -m tcp --dport 22 -j ACCEPT"),
    ("negated address", rule(saddr=addrs("10.0.0.0/8", negated=True)),
     IP, FILTER, "INPUT", "! -s 10.0.0.0/8 -j ACCEPT"),
    ("v6 address", rule(saddr=addrs("fd00::1"), daddr=addrs("fd00::/64")),
     IP6, FILTER, "INPUT", "-s fd00::1/128 -d fd00::/64 -j ACCEPT"),
    ("v4-mapped", rule(saddr=addrs("::ffff:1.2.3.4")),
     IP6, FILTER, "INPUT", "-s ::ffff:1.2.3.4/128 -j ACCEPT"),
    ("v4-compatible", rule(saddr=addrs("::1.2.3.4"), daddr=addrs("::2")),
     IP6, FILTER, "INPUT", "-s ::1.2.3.4/128 -d ::2/128 -j ACCEPT"),
    ("interfaces", rule(iifname=Interface("eth+"), oifname=Interface("veth1", negated=True)),
     IP, FILTER, "FORWARD", "-i eth+ ! -o veth1 -j ACCEPT"),
    ("negated proto", rule(proto=proto(UDP, negated=True)),
     IP, FILTER, "INPUT", "! -p udp -j ACCEPT"),
    ("proto name", rule(proto=proto(47)), IP, FILTER, "INPUT", "-p gre -j ACCEPT"),
    ("proto number", rule(proto=proto(250)), IP, FILTER, "INPUT", "-p 250 -j ACCEPT"),
    ("icmpv6 proto", rule(proto=proto(ICMPV6)), IP6, FILTER, "INPUT", "-p ipv6-icmp -j ACCEPT"),
    ("sport and dport", rule(proto=proto(TCP), sport=ports((1024, 65535)), dport=ports(22)),
     IP, FILTER, "INPUT", "-p tcp -m tcp --sport 1024:65535 --dport 22 -j ACCEPT"),
    ("negated dport", rule(proto=proto(TCP), dport=ports(22, negated=True)),
     IP, FILTER, "INPUT", "-p tcp -m tcp ! --dport 22 -j ACCEPT"),
    ("multiport", rule(proto=proto(TCP), dport=ports(80, 443, (1000, 2000))),
     IP, FILTER, "INPUT", "-p tcp -m multiport --dports 80,443,1000:2000 -j ACCEPT"),
    ("negated multiport", rule(proto=proto(TCP), dport=ports(80, 443, negated=True)),
     IP, FILTER, "INPUT", "-p tcp -m multiport ! --dports 80,443 -j ACCEPT"),
    ("single dport, multiport sports", rule(proto=proto(TCP), sport=ports(1, 2), dport=ports(22)),
     IP, FILTER, "INPUT", "-p tcp -m tcp --dport 22 -m multiport --sports 1,2 -j ACCEPT"),
    ("udp", rule(proto=proto(UDP), dport=ports(53)),
     IP, FILTER, "INPUT", "-p udp -m udp --dport 53 -j ACCEPT"),
    ("sctp", rule(proto=proto(132), dport=ports(5)),
     IP, FILTER, "INPUT", "-p sctp -m sctp --dport 5 -j ACCEPT"),
    ("udplite has no port match", rule(proto=proto(136), dport=ports(5)),
     IP, FILTER, "INPUT", "-p udplite -m multiport --dports 5 -j ACCEPT"),
    ("ct state", rule(ct_state=CtStates(frozenset({CtState.ESTABLISHED, CtState.RELATED}))),
     IP, FILTER, "INPUT", "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
    ("all ct states", rule(ct_state=CtStates(frozenset(CtState))),
     IP, FILTER, "INPUT",
     "-m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED -j ACCEPT"),
    ("negated ct state", rule(ct_state=CtStates(frozenset({CtState.NEW}), negated=True)),
     IP, FILTER, "INPUT", "-m conntrack ! --ctstate NEW -j ACCEPT"),
    ("ct original dport", rule(proto=proto(TCP), ct_orig_dport=ports(8080)),
     IP, FILTER, "INPUT", "-p tcp -m conntrack --ctorigdstport 8080 -j ACCEPT"),
    ("ct state and original dport range",
     rule(ct_state=CtStates(frozenset({CtState.NEW})), ct_orig_dport=ports((1000, 2000))),
     IP, FILTER, "INPUT", "-m conntrack --ctstate NEW --ctorigdstport 1000:2000 -j ACCEPT"),
    ("negated ct original dport", rule(ct_orig_dport=ports(80, negated=True)),
     IP, FILTER, "INPUT", "-m conntrack ! --ctorigdstport 80 -j ACCEPT"),
    ("addrtype", rule(src_type=AddrType(AddrTypeKind.LOCAL)),
     IP, FILTER, "INPUT", "-m addrtype --src-type LOCAL -j ACCEPT"),
    ("negated addrtypes", rule(src_type=AddrType(AddrTypeKind.UNICAST, negated=True),
                               dst_type=AddrType(AddrTypeKind.MULTICAST, negated=True)),
     IP, FILTER, "INPUT", "-m addrtype ! --src-type UNICAST ! --dst-type MULTICAST -j ACCEPT"),
    ("tcp flags", rule(proto=proto(TCP), tcp_flags=syn_only()),
     IP, FILTER, "INPUT", "-p tcp -m tcp --tcp-flags SYN,RST SYN -j ACCEPT"),
    ("negated tcp flags and dport", rule(proto=proto(TCP), dport=ports(22),
                                         tcp_flags=syn_only(negated=True)),
     IP, FILTER, "INPUT", "-p tcp -m tcp --dport 22 ! --tcp-flags SYN,RST SYN -j ACCEPT"),
    ("tcp flags none", rule(proto=proto(TCP), tcp_flags=TcpFlags(
        frozenset(), frozenset({TcpFlag.FIN, TcpFlag.SYN, TcpFlag.RST, TcpFlag.PSH,
                                TcpFlag.ACK, TcpFlag.URG}))),
     IP, FILTER, "INPUT", "-p tcp -m tcp --tcp-flags FIN,SYN,RST,PSH,ACK,URG NONE -j ACCEPT"),
    ("icmp type", rule(proto=proto(ICMP), icmp_type=IcmpType(IP, (8,))),
     IP, FILTER, "INPUT", "-p icmp -m icmp --icmp-type 8 -j ACCEPT"),
    ("negated icmp type", rule(proto=proto(ICMP), icmp_type=IcmpType(IP, (3,), negated=True)),
     IP, FILTER, "INPUT", "-p icmp -m icmp ! --icmp-type 3 -j ACCEPT"),
    ("icmpv6 type", rule(proto=proto(ICMPV6), icmp_type=IcmpType(IP6, (128,))),
     IP6, FILTER, "INPUT", "-p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT"),
    ("mark with mask", rule(mark=Mark(0x1, 0xFF)),
     IP, FILTER, "INPUT", "-m mark --mark 0x1/0xff -j ACCEPT"),
    ("mark", rule(mark=Mark(0x1)), IP, FILTER, "INPUT", "-m mark --mark 0x1 -j ACCEPT"),
    ("negated mark", rule(mark=Mark(0, 0xF0, negated=True)),
     IP, FILTER, "INPUT", "-m mark ! --mark 0x0/0xf0 -j ACCEPT"),
    ("limit", rule(limit=Limit(10, RateUnit.SECOND)),
     IP, FILTER, "INPUT", "-m limit --limit 10/sec -j ACCEPT"),
    ("limit burst", rule(limit=Limit(10, RateUnit.MINUTE, burst=7)),
     IP, FILTER, "INPUT", "-m limit --limit 10/min --limit-burst 7 -j ACCEPT"),
    ("comment", replace(rule(), comment="hello"),
     IP, FILTER, "INPUT", "-m comment --comment hello -j ACCEPT"),
    ("comment with space", replace(rule(), comment="hello world"),
     IP, FILTER, "INPUT", '-m comment --comment "hello world" -j ACCEPT'),
    ("match order", replace(rule(
        proto=proto(TCP), dport=ports(1), ct_state=CtStates(frozenset({CtState.NEW})),
        dst_type=AddrType(AddrTypeKind.LOCAL), mark=Mark(1), limit=Limit(3, RateUnit.MINUTE),
        iifname=Interface("eth0"), saddr=addrs("1.2.3.4")), comment="c c"),
     IP, FILTER, "INPUT",
     '-s 1.2.3.4/32 -i eth0 -p tcp -m tcp --dport 1 -m conntrack --ctstate NEW -m addrtype '
     '--dst-type LOCAL -m mark --mark 0x1 -m comment --comment "c c" -m limit --limit 3/min '
     '-j ACCEPT'),
    # Targets.
    ("drop", rule(Drop()), IP, FILTER, "INPUT", "-j DROP"),
    ("return", rule(Return()), IP, FILTER, "INPUT", "-j RETURN"),
    ("log", rule(Log("pfx: ", LogLevel.INFO)),
     IP, FILTER, "INPUT", '-j LOG --log-prefix "pfx: " --log-level 6'),
    ("log defaults", rule(Log(None, LogLevel.WARNING)), IP, FILTER, "INPUT", "-j LOG"),
    ("log empty prefix", rule(Log("", LogLevel.EMERG)),
     IP, FILTER, "INPUT", "-j LOG --log-level 0"),
    ("log bare prefix", rule(Log("abc")), IP, FILTER, "INPUT", "-j LOG --log-prefix abc"),
    ("reject default", rule(Reject()),
     IP, FILTER, "INPUT", "-j REJECT --reject-with icmp-port-unreachable"),
    ("reject admin", rule(Reject(RejectWith.ADMIN_PROHIBITED)),
     IP, FILTER, "INPUT", "-j REJECT --reject-with icmp-admin-prohibited"),
    ("reject tcp-reset", rule(Reject(RejectWith.TCP_RESET), proto=proto(TCP)),
     IP, FILTER, "INPUT", "-p tcp -j REJECT --reject-with tcp-reset"),
    ("reject v6 default", rule(Reject()),
     IP6, FILTER, "INPUT", "-j REJECT --reject-with icmp6-port-unreachable"),
    ("reject v6 host", rule(Reject(RejectWith.HOST_UNREACHABLE)),
     IP6, FILTER, "INPUT", "-j REJECT --reject-with icmp6-addr-unreachable"),
    ("reject v6 net", rule(Reject(RejectWith.NET_UNREACHABLE)),
     IP6, FILTER, "INPUT", "-j REJECT --reject-with icmp6-no-route"),
    ("reject v6 admin", rule(Reject(RejectWith.ADMIN_PROHIBITED)),
     IP6, FILTER, "INPUT", "-j REJECT --reject-with icmp6-adm-prohibited"),
    ("dnat", rule(Dnat(Prefix.parse("10.0.0.1"), (80, 80)), proto=proto(TCP), dport=ports(80)),
     IP, NAT, "PREROUTING", "-p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.1:80"),
    ("dnat range", rule(Dnat(Prefix.parse("10.0.0.1"), (80, 90)), proto=proto(TCP)),
     IP, NAT, "PREROUTING", "-p tcp -j DNAT --to-destination 10.0.0.1:80-90"),
    ("dnat address", rule(Dnat(Prefix.parse("10.0.0.1"))),
     IP, NAT, "PREROUTING", "-j DNAT --to-destination 10.0.0.1"),
    ("dnat v6", rule(Dnat(Prefix.parse("fd00::2"), (80, 80)), proto=proto(TCP)),
     IP6, NAT, "PREROUTING", "-p tcp -j DNAT --to-destination [fd00::2]:80"),
    ("dnat v6 address", rule(Dnat(Prefix.parse("fd00::2"))),
     IP6, NAT, "OUTPUT", "-j DNAT --to-destination fd00::2"),
    ("snat", rule(Snat(Prefix.parse("1.2.3.4"))),
     IP, NAT, "POSTROUTING", "-j SNAT --to-source 1.2.3.4"),
    ("snat ports", rule(Snat(Prefix.parse("1.2.3.4"), (1000, 2000)), proto=proto(UDP)),
     IP, NAT, "POSTROUTING", "-p udp -j SNAT --to-source 1.2.3.4:1000-2000"),
    ("masquerade", rule(Masquerade()), IP, NAT, "POSTROUTING", "-j MASQUERADE"),
    ("masquerade ports", rule(Masquerade((1000, 2000)), proto=proto(TCP)),
     IP, NAT, "POSTROUTING", "-p tcp -j MASQUERADE --to-ports 1000-2000"),
    ("masquerade port", rule(Masquerade((1000, 1000)), proto=proto(TCP)),
     IP, NAT, "POSTROUTING", "-p tcp -j MASQUERADE --to-ports 1000"),
    ("redirect", rule(Redirect((8080, 8080)), proto=proto(TCP)),
     IP, NAT, "PREROUTING", "-p tcp -j REDIRECT --to-ports 8080"),
    ("set mss", rule(SetMss(1400), proto=proto(TCP), tcp_flags=syn_only()),
     IP, MANGLE, "FORWARD", "-p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss 1400"),
    ("clamp mss", rule(ClampMss(), proto=proto(TCP), tcp_flags=syn_only()),
     IP, FILTER, "FORWARD",
     "-p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu"),
    ("set mark", rule(SetMark(0x1)),
     IP, MANGLE, "PREROUTING", "-j MARK --set-xmark 0x1/0xffffffff"),
    ("set mark masked", rule(SetMark(0x10, 0xF0)),
     IP, MANGLE, "PREROUTING", "-j MARK --set-xmark 0x10/0xf0"),
]


@pytest.mark.parametrize(("rule_", "family", "kind", "chain", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_construct(rule_: Rule, family: Family, kind: TableKind, chain: str,
                   expected: str) -> None:
    t = table(rule_, kind=kind, chain=chain, family=family)
    verify(Ruleset(tables=(t,)), backend(family).limits)
    assert rule_lines(emit(t, family=family)) == [f"-A {chain} {expected}"]


def test_jump_and_goto() -> None:
    uc = (Chain(name="uc"), Chain(name="uc2"))
    assert lines(rule(Jump("uc")), rule(Goto("uc2")), extra=uc) == [
        "-A INPUT -j uc", "-A INPUT -g uc2"]


@pytest.mark.parametrize(("limit", "expected"), [
    (Limit(60, RateUnit.MINUTE), "1/sec"),  # iptables prints the largest exact unit
    (Limit(120, RateUnit.MINUTE), "2/sec"),
    (Limit(61, RateUnit.MINUTE), "61/min"),
    (Limit(7, RateUnit.SECOND), "7/sec"),
    (Limit(24, RateUnit.DAY), "1/hour"),
    (Limit(1, RateUnit.DAY, burst=1), "1/day --limit-burst 1"),
    (Limit(10000, RateUnit.SECOND), "10000/sec"),
])
def test_limit_canonical(limit: Limit, expected: str) -> None:
    assert lines(rule(limit=limit)) == [f"-A INPUT -m limit --limit {expected} -j ACCEPT"]


# ---------------------------------------------------------------------------------------------
# Refusals: E04xx with the rule's span.

@pytest.mark.parametrize(("rule_", "chain", "code"), [
    (rule(proto=proto(TCP), tcp_flags=TcpFlags(frozenset(), frozenset({TcpFlag.ECE}))),
     "INPUT", "E0406"),
    (rule(proto=proto(ICMP), icmp_type=IcmpType(IP, (255,))), "INPUT", "E0406"),
    (rule(proto=proto(0)), "INPUT", "E0406"),
    (rule(limit=Limit(10001, RateUnit.SECOND)), "INPUT", "E0406"),
    (rule(limit=Limit(1, RateUnit.DAY, burst=2)), "INPUT", "E0406"),  # kernel overflow
    (rule(oifname=Interface("eth0")), "INPUT", "E0406"),  # iptables: "Can't use -o with INPUT"
    (rule(iifname=Interface("eth0")), "OUTPUT", "E0406"),
    (rule(iifname=Interface("+")), "INPUT", "E0406"),  # legacy saves `! -i +` as no test
    (replace(rule(), comment="two\nlines"), "INPUT", "E0405"),
    (replace(rule(), comment="cr\r"), "INPUT", "E0405"),
    (replace(rule(), comment="tab\t"), "INPUT", "E0405"),
    (replace(rule(), comment="x" * 256), "INPUT", "E0402"),
    (replace(rule(), comment="é" * 128), "INPUT", "E0402"),  # 256 bytes
    (rule(Log("é" * 15)), "INPUT", "E0402"),  # 15 characters, 30 bytes
    (rule(Log("bell\a")), "INPUT", "E0405"),
    (rule(proto=proto(TCP), dport=PortSet(())), "INPUT", "E0310"),
])
def test_refused(rule_: Rule, chain: str, code: str) -> None:
    with pytest.raises(RulecError) as excinfo:
        lines(rule_, chain=chain)
    assert codes(excinfo) == [code]
    assert excinfo.value.diagnostics[0].span is SPAN


def test_set_mss_range_per_family() -> None:
    mss = rule(SetMss(65495), proto=proto(TCP), tcp_flags=syn_only())
    assert lines(mss, chain="FORWARD", family=IP6)
    with pytest.raises(RulecError):
        lines(replace(mss, action=SetMss(65496)), chain="FORWARD", family=IP6)
    assert lines(replace(mss, action=SetMss(65515)), chain="FORWARD")
    with pytest.raises(RulecError):
        lines(replace(mss, action=SetMss(65516)), chain="FORWARD")


def test_all_errors_reported_together() -> None:
    bad = (replace(rule(), comment="a\nb"), rule(proto=proto(0)))
    with pytest.raises(RulecError) as excinfo:
        lines(*bad)
    assert codes(excinfo) == ["E0405", "E0406"]


def test_two_tables_of_one_kind() -> None:
    with pytest.raises(RulecError) as excinfo:
        emit(table(rule()), table(rule(), family=INET))
    assert codes(excinfo) == ["E0407"]
    assert emit(table(rule()), table(rule(), family=IP6), family=IP6)  # different families: fine


def test_limits_attribute() -> None:
    limits = IptablesBackend.limits
    assert (limits.max_chain_name, limits.max_comment, limits.max_log_prefix) == (28, 255, 29)
    assert limits.comment_in_bytes and "\n" in limits.unquotable and "\r" in limits.unquotable
    assert {"accept", "drop", "return", "queue"} <= limits.reserved_chain_names
    assert Ip6tablesBackend.limits.target == "ip6tables"
    with pytest.raises(RulecError) as excinfo:
        verify(Ruleset(tables=(table(extra=(Chain(name="LOG"),)),)), limits)
    assert codes(excinfo) == ["E0403"]


# ---------------------------------------------------------------------------------------------
# Multiport chunking.

@pytest.mark.parametrize(("items", "sizes"), [
    (list(range(1, 16)), [15]),
    (list(range(1, 17)), [15, 1]),
    ([*range(1, 14), (100, 200)], [15]),
    ([*range(1, 15), (100, 200)], [14, 2]),
    ([*((100 * i, 100 * i + 50) for i in range(1, 8)), 1], [15]),
    ([(100 * i, 100 * i + 50) for i in range(1, 9)], [14, 2]),
])
def test_chunk_ports(items: list[int | tuple[int, int]], sizes: list[int]) -> None:
    chunks = chunk_ports(PortSet.of(*items))
    assert [c.slots for c in chunks] == sizes
    assert tuple(r for c in chunks for r in c.ranges) == PortSet.of(*items).ranges


def test_chunk_keeps_negation() -> None:
    assert all(c.negated for c in chunk_ports(ports(*range(1, 20), negated=True)))


def test_multiport_split_into_rules() -> None:
    out = lines(rule(proto=proto(TCP), dport=ports(*range(1, 17))))
    assert out == ["-A INPUT -p tcp -m multiport --dports " + ",".join(map(str, range(1, 16)))
                   + " -j ACCEPT", "-A INPUT -p tcp -m tcp --dport 16 -j ACCEPT"]


def test_sport_and_dport_product() -> None:
    r = rule(proto=proto(TCP), sport=ports(*range(1, 17)), dport=ports(*range(101, 117)))
    out = lines(r)
    assert len(out) == 4
    assert out[1] == ("-A INPUT -p tcp -m tcp --dport 116 -m multiport --sports "
                      + ",".join(map(str, range(1, 16))) + " -j ACCEPT")


# ---------------------------------------------------------------------------------------------
# Address expansion and family split.

def test_addresses_expand_in_order() -> None:
    r = rule(saddr=addrs("10.0.0.2", "10.0.0.1"), daddr=addrs("192.168.0.0/16", "1.1.1.1"))
    assert lines(r) == [
        "-A INPUT -s 10.0.0.1/32 -d 1.1.1.1/32 -j ACCEPT",
        "-A INPUT -s 10.0.0.1/32 -d 192.168.0.0/16 -j ACCEPT",
        "-A INPUT -s 10.0.0.2/32 -d 1.1.1.1/32 -j ACCEPT",
        "-A INPUT -s 10.0.0.2/32 -d 192.168.0.0/16 -j ACCEPT",
    ]


def test_covered_prefixes_are_dropped() -> None:
    # A packet from 10.1.2.3 must not be logged twice.
    assert lines(rule(Log("x"), saddr=addrs("10.0.0.0/8", "10.1.0.0/16", "11.0.0.1"))) == [
        "-A INPUT -s 10.0.0.0/8 -j LOG --log-prefix x",
        "-A INPUT -s 11.0.0.1/32 -j LOG --log-prefix x",
    ]


def test_overlapping_port_ranges_merge_before_chunking() -> None:
    items = [(1, 10), (5, 20), *range(100, 130)]
    out = lines(rule(SetMark(1), proto=proto(TCP), dport=ports(*items)), chain="PREROUTING",
                kind=MANGLE)
    assert out[0].startswith("-A PREROUTING -p tcp -m multiport --dports 1:20,100,101,")


def test_zero_prefix() -> None:
    assert lines(rule(saddr=addrs("0.0.0.0/0", "10.0.0.1"))) == ["-A INPUT -j ACCEPT"]
    assert lines(rule(saddr=addrs("0.0.0.0/0", negated=True))) == []  # never matches


MIXED = rule(saddr=addrs("10.0.0.1", "fd00::1", "fd00::2"), proto=proto(TCP), dport=ports(22))


@pytest.mark.parametrize(("family", "expected"), [
    (IP, ["-A INPUT -s 10.0.0.1/32 -p tcp -m tcp --dport 22 -j ACCEPT"]),
    (IP6, ["-A INPUT -s fd00::1/128 -p tcp -m tcp --dport 22 -j ACCEPT",
           "-A INPUT -s fd00::2/128 -p tcp -m tcp --dport 22 -j ACCEPT"]),
])
def test_family_split_mixed_set(family: Family, expected: list[str]) -> None:
    assert rule_lines(emit(table(MIXED, family=INET), family=family)) == expected


def test_family_split() -> None:
    inet = table(
        rule(saddr=addrs("10.0.0.0/8", "fd00::/8", negated=True)),
        rule(Drop(), saddr=addrs("fd00::/8", negated=True)),
        rule(Drop(), saddr=addrs("10.0.0.1")),
        rule(Drop(), proto=proto(ICMP)),
        rule(Drop(), proto=proto(ICMPV6), icmp_type=IcmpType(IP6, (128,))),
        rule(Reject(), family=IP6),
        family=INET)
    assert rule_lines(emit(inet, family=IP)) == [
        "-A INPUT ! -s 10.0.0.0/8 -j ACCEPT",
        "-A INPUT -j DROP",  # a negated set with nothing of this family: no constraint
        "-A INPUT -s 10.0.0.1/32 -j DROP",
        "-A INPUT -p icmp -j DROP",
    ]
    assert rule_lines(emit(inet, family=IP6)) == [
        "-A INPUT ! -s fd00::/8 -j ACCEPT",
        "-A INPUT ! -s fd00::/8 -j DROP",
        "-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j DROP",
        "-A INPUT -j REJECT --reject-with icmp6-port-unreachable",
    ]


def test_other_family_tables_are_skipped() -> None:
    text = emit(table(rule(), family=IP6), table(rule(), kind=NAT, chain="OUTPUT"))
    assert "*filter" not in text and "*nat" in text


# ---------------------------------------------------------------------------------------------
# Statements.

def test_log_statement_splits() -> None:
    r = replace(rule(Drop(), proto=proto(TCP), dport=ports(23)), comment="telnet",
                statements=(Counter(), Log("telnet: ", LogLevel.NOTICE)))
    assert lines(r) == [
        '-A INPUT -p tcp -m tcp --dport 23 -m comment --comment telnet -j LOG --log-prefix '
        '"telnet: " --log-level 5',
        "-A INPUT -p tcp -m tcp --dport 23 -m comment --comment telnet -j DROP",
    ]


def test_log_split_pairs_per_expansion() -> None:
    r = replace(rule(Drop(), saddr=addrs("1.1.1.1", "2.2.2.2")), statements=(Log(),))
    assert split_log(expand_rule(r)[0]) == (replace(expand_rule(r)[0], statements=(),
                                                    action=Log()),
                                            replace(expand_rule(r)[0], statements=()))
    assert lines(r) == ["-A INPUT -s 1.1.1.1/32 -j LOG", "-A INPUT -s 1.1.1.1/32 -j DROP",
                        "-A INPUT -s 2.2.2.2/32 -j LOG", "-A INPUT -s 2.2.2.2/32 -j DROP"]


def test_counter_only() -> None:
    assert lines(replace(rule(), statements=(Counter(),))) == ["-A INPUT -j ACCEPT"]


# ---------------------------------------------------------------------------------------------
# Helper chains for what one line cannot hold.

def test_negated_address_set_uses_helper_chain() -> None:
    r = replace(rule(Drop(), saddr=addrs("10.0.0.0/8", "192.168.0.0/16", negated=True),
                     proto=proto(TCP), dport=ports(22)), comment="bogons")
    text = emit(table(r))
    assert ":rulec-INPUT-1 - [0:0]" in text.splitlines()
    assert rule_lines(text) == [
        "-A INPUT -p tcp -m tcp --dport 22 -m comment --comment bogons -j rulec-INPUT-1",
        "-A rulec-INPUT-1 -s 10.0.0.0/8 -m comment --comment bogons -j RETURN",
        "-A rulec-INPUT-1 -s 192.168.0.0/16 -m comment --comment bogons -j RETURN",
        "-A rulec-INPUT-1 -p tcp -m tcp --dport 22 -m comment --comment bogons -j DROP",
    ]


def test_negated_ports_over_15_slots() -> None:
    r = rule(Reject(), proto=proto(UDP), dport=ports(*range(1, 17), negated=True))
    assert lines(r) == [
        "-A INPUT -p udp -j rulec-INPUT-1",
        "-A rulec-INPUT-1 -p udp -m multiport --dports " + ",".join(map(str, range(1, 16)))
        + " -j RETURN",
        "-A rulec-INPUT-1 -p udp -m udp --dport 16 -j RETURN",
        "-A rulec-INPUT-1 -p udp -j REJECT --reject-with icmp-port-unreachable",
    ]


def test_ct_original_dport_sets() -> None:
    assert lines(rule(ct_orig_dport=ports(80, 8080))) == [
        "-A INPUT -m conntrack --ctorigdstport 80 -j ACCEPT",
        "-A INPUT -m conntrack --ctorigdstport 8080 -j ACCEPT",
    ]
    assert lines(rule(Drop(), ct_orig_dport=ports(80, 8080, negated=True))) == [
        "-A INPUT -j rulec-INPUT-1",
        "-A rulec-INPUT-1 -m conntrack --ctorigdstport 80 -j RETURN",
        "-A rulec-INPUT-1 -m conntrack --ctorigdstport 8080 -j RETURN",
        "-A rulec-INPUT-1 -j DROP",
    ]


def test_limit_stays_one_bucket() -> None:
    # Several lines each with `-m limit` would multiply the rate; one helper keeps one bucket.
    r = rule(saddr=addrs("1.1.1.1", "2.2.2.2"), limit=Limit(10, RateUnit.SECOND))
    assert lines(r) == [
        "-A INPUT -s 1.1.1.1/32 -j rulec-INPUT-1",
        "-A INPUT -s 2.2.2.2/32 -j rulec-INPUT-1",
        "-A rulec-INPUT-1 -m limit --limit 10/sec -j ACCEPT",
    ]
    logged = replace(rule(limit=Limit(10, RateUnit.SECOND)), statements=(Log("x"),))
    assert lines(logged) == [
        "-A INPUT -m limit --limit 10/sec -j rulec-INPUT-1",
        "-A rulec-INPUT-1 -j LOG --log-prefix x",
        "-A rulec-INPUT-1 -j ACCEPT",
    ]


def test_nested_helpers() -> None:
    r = replace(rule(saddr=addrs("1.1.1.1", "2.2.2.2", negated=True),
                     limit=Limit(1, RateUnit.SECOND)), statements=(Log(),))
    assert lines(r) == [
        "-A INPUT -j rulec-INPUT-1",
        "-A rulec-INPUT-1 -s 1.1.1.1/32 -j RETURN",
        "-A rulec-INPUT-1 -s 2.2.2.2/32 -j RETURN",
        "-A rulec-INPUT-1 -m limit --limit 1/sec -j rulec-INPUT-2",
        "-A rulec-INPUT-2 -j LOG",
        "-A rulec-INPUT-2 -j ACCEPT",
    ]


def test_helper_keeps_what_the_target_needs() -> None:
    r = rule(SetMss(1400), proto=proto(TCP), tcp_flags=syn_only(),
             daddr=addrs("10.0.0.0/8", "10.2.0.0/16", "172.16.0.0/12", negated=True))
    out = lines(r, chain="FORWARD", kind=MANGLE)
    assert out[-1] == ("-A rulec-FORWARD-1 -p tcp -m tcp --tcp-flags SYN,RST SYN "
                       "-j TCPMSS --set-mss 1400")
    assert len(out) == 4  # 10.2.0.0/16 is inside 10.0.0.0/8


@pytest.mark.parametrize("action", [Return(), Goto("uc")])
@pytest.mark.parametrize("match", [
    {"saddr": addrs("1.1.1.1", "2.2.2.2", negated=True)},
    {"proto": proto(TCP), "sport": ports(*range(1, 20), negated=True)},
    {"ct_orig_dport": ports(1, 2, negated=True)},
    {"saddr": addrs("1.1.1.1", "2.2.2.2"), "limit": Limit(1, RateUnit.SECOND)},
])
def test_helper_impossible(action: Return | Goto, match: dict[str, object]) -> None:
    with pytest.raises(RulecError) as excinfo:
        lines(rule(action, **match), extra=(Chain(name="uc"),))
    assert codes(excinfo) == ["E0404"]
    assert excinfo.value.diagnostics[0].span is SPAN


def test_helper_names_avoid_user_chains_and_fit() -> None:
    long = "A" * 28
    taken = (Chain(name="rulec-INPUT-1"), Chain(name=long))
    neg = addrs("1.1.1.1", "2.2.2.2", negated=True)
    t = Table(kind=FILTER, family=IP, chains=(
        Chain(name="INPUT", hook=Hook.INPUT, rules=(rule(saddr=neg),)), *taken[:1],
        Chain(name=long, rules=(rule(saddr=neg), rule(saddr=neg)))))
    declared = [line for line in emit(t).splitlines() if line.startswith(":")]
    assert declared[-3:] == [":rulec-INPUT-2 - [0:0]", f":rulec-{'A' * 20}-1 - [0:0]",
                             f":rulec-{'A' * 20}-2 - [0:0]"]
    assert all(len(line.split()[0]) - 1 <= 28 for line in declared)


def test_lower_rule_is_pure() -> None:
    r = rule(Drop(), saddr=addrs("1.1.1.1", "2.2.2.2", negated=True))
    first, second = HelperChains(frozenset()), HelperChains(frozenset())
    assert lower_rule(r, first) == lower_rule(r, second)
    assert first.chains == second.chains and r.match.saddr == addrs("1.1.1.1", "2.2.2.2",
                                                                    negated=True)


# ---------------------------------------------------------------------------------------------
# Whole files: structure, noflush, determinism.

RULESET = Ruleset(tables=(
    Table(kind=FILTER, family=INET, chains=(
        Chain(name="INPUT", hook=Hook.INPUT, policy=Policy.DROP, rules=(
            rule(Jump("uc"), iifname=Interface("lo")),)),
        Chain(name="uc", rules=(rule(proto=proto(TCP), dport=ports(22)),)),
    )),
    Table(kind=NAT, family=IP, chains=(
        Chain(name="POSTROUTING", hook=Hook.POSTROUTING, rules=(rule(Masquerade()),)),)),
    Table(kind=RAW, family=INET, chains=(Chain(name="PREROUTING", hook=Hook.PREROUTING),)),
))


def test_full_file() -> None:
    assert emit(*RULESET.tables) == """\
# generated by rulec; do not edit
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -j MASQUERADE
COMMIT
*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:uc - [0:0]
-A INPUT -i lo -j uc
-A uc -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
"""


def test_noflush_file() -> None:
    artifact = IptablesBackend().emit(RULESET, EmitOptions(noflush=True))
    assert artifact.load_command == ("iptables-restore", "--noflush")
    assert artifact.text == """\
# generated by rulec; do not edit
*raw
-F PREROUTING
COMMIT
*nat
-F POSTROUTING
-A POSTROUTING -j MASQUERADE
COMMIT
*filter
:INPUT DROP [0:0]
:uc - [0:0]
-F INPUT
-A INPUT -i lo -j uc
-A uc -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
"""
    v6 = Ip6tablesBackend().emit(RULESET, EmitOptions(noflush=True))
    assert "*nat" not in v6.text and v6.load_command == ("ip6tables-restore", "--noflush")


def test_load_command_and_target() -> None:
    artifact = Ip6tablesBackend().emit(RULESET, EmitOptions())
    assert (artifact.target, artifact.load_command) == ("ip6tables", ("ip6tables-restore",))


def test_deterministic_across_hash_seeds() -> None:
    script = (
        "from tests.backends.test_iptables import RULESET, REPRESENTATIVE, emit\n"
        "from rulec.ir.values import Family\n"
        "print(emit(*RULESET.tables) + emit(*REPRESENTATIVE.tables)"
        " + emit(*REPRESENTATIVE.tables, family=Family.IP6), end='')\n"
    )
    outputs = {
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       check=True, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2", "random")
    }
    assert len(outputs) == 1
    assert outputs == {emit(*RULESET.tables) + emit(*REPRESENTATIVE.tables)
                       + emit(*REPRESENTATIVE.tables, family=IP6)}


def test_empty_ruleset() -> None:
    assert emit() == "# generated by rulec; do not edit\n"


# ---------------------------------------------------------------------------------------------
# Quoting: one helper, iptables-save's form, and the restore tokenizer gives the text back.

def restore_tokens(line: str) -> list[str]:
    """add_param_to_argv() of iptables 1.8: `"` groups, `\\x` inside quotes is x."""
    args: list[str] = []
    current, quoted, escaped, started = "", False, False, False
    for ch in line:
        if quoted:
            if escaped:
                current, escaped = current + ch, False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
            else:
                current += ch
        elif ch == '"':
            quoted = started = True
        elif ch in " \t\n":
            if started:
                args.append(current)
            current, started = "", False
        else:
            current, started = current + ch, True
    if started:
        args.append(current)
    return args


HOSTILE = ['x" -j ACCEPT', 'a\\" -j DROP #', "it's", "back\\slash", '"', "\\", '""', "!",
           "-j", "--comment", "", "ünïcödé €", "$HOME `id` %s", "a  b", "# not a comment"]


@pytest.mark.parametrize("text", HOSTILE)
def test_quote_round_trips(text: str) -> None:
    line = f"-A INPUT -m comment --comment {quote(text, 'comment', None, 255)} -j ACCEPT"
    assert restore_tokens(line) == ["-A", "INPUT", "-m", "comment", "--comment", text, "-j",
                                    "ACCEPT"]


@pytest.mark.parametrize(("text", "expected"), [
    ("hello", "hello"), ("a-b_C9", "a-b_C9"), ("hello world", '"hello world"'),
    ("it's", '"it\\\'s"'), ('x" -j ACCEPT', '"x\\" -j ACCEPT"'),
    ('a\\" -j DROP #', '"a\\\\\\" -j DROP #"'), ("", '""'),
])
def test_quote_matches_iptables_save(text: str, expected: str) -> None:
    assert quote(text, "comment", None, 255) == expected


def test_hostile_comment_is_one_rule() -> None:
    out = lines(*(replace(rule(), comment=text) for text in HOSTILE))
    assert len(out) == len(HOSTILE)
    for text, line in zip(HOSTILE, out, strict=True):
        tokens = restore_tokens(line)
        assert tokens[tokens.index("--comment") + 1] == text
        assert tokens[-2:] == ["-j", "ACCEPT"]


# ---------------------------------------------------------------------------------------------
# Kernel: load into throwaway namespaces with both variants and read back.

REPRESENTATIVE = Ruleset(tables=(
    Table(kind=FILTER, family=INET, chains=(
        Chain(name="INPUT", hook=Hook.INPUT, policy=Policy.DROP, rules=(
            rule(ct_state=CtStates(frozenset({CtState.ESTABLISHED, CtState.RELATED}))),
            rule(iifname=Interface("lo")),
            replace(rule(proto=proto(TCP), dport=ports(22, 80, 443, (8000, 8100)),
                         saddr=addrs("10.0.0.0/8", "fd00::/8", "::ffff:1.2.3.4")),
                    comment="web"),
            rule(proto=proto(TCP), dport=ports(*range(1, 21))),
            rule(proto=proto(ICMP), icmp_type=IcmpType(IP, (8,)), limit=Limit(10, RateUnit.SECOND,
                                                                              burst=20)),
            rule(proto=proto(ICMPV6), icmp_type=IcmpType(IP6, (128,))),
            replace(rule(Drop(), saddr=addrs("192.168.0.0/16", "172.16.0.0/12", "fe80::/10",
                                             "fd00::/8", negated=True), iifname=Interface("eth0")),
                    statements=(Log("bogon: ", LogLevel.INFO),)),
            rule(proto=proto(UDP), sport=ports(53), dport=ports((1024, 65535))),
            rule(Jump("uc"), mark=Mark(1, 0xFF), src_type=AddrType(AddrTypeKind.LOCAL),
                 dst_type=AddrType(AddrTypeKind.LOCAL, negated=True)),
            replace(rule(proto=proto(TCP), tcp_flags=syn_only(),
                         ct_state=CtStates(frozenset({CtState.NEW})),
                         limit=Limit(60, RateUnit.MINUTE)), statements=(Log(None, LogLevel.INFO),)),
            *(replace(rule(Drop()), comment=text) for text in HOSTILE),
            rule(Reject(RejectWith.TCP_RESET), proto=proto(TCP)),
            rule(Reject(RejectWith.ADMIN_PROHIBITED)),
            rule(ct_orig_dport=ports(80, 8080), proto=proto(TCP)),
            rule(Drop(), ct_orig_dport=ports(1, 2, negated=True)),
            rule(Reject(), proto=proto(UDP), dport=ports(*range(1, 17), negated=True)),
            rule(proto=proto(47)),
        )),
        Chain(name="FORWARD", hook=Hook.FORWARD, rules=(
            rule(ClampMss(), proto=proto(TCP), tcp_flags=syn_only(),
                 oifname=Interface("ppp+")),
            rule(Goto("uc2"), iifname=Interface("br-0123456789ab")),
        )),
        Chain(name="uc", rules=(rule(Return(), mark=Mark(2)), rule(Log("uc")))),
        Chain(name="uc2", rules=(rule(),)),
    )),
    Table(kind=NAT, family=IP, chains=(
        Chain(name="PREROUTING", hook=Hook.PREROUTING, rules=(
            rule(Dnat(Prefix.parse("10.0.0.2"), (8080, 8080)), proto=proto(TCP),
                 dport=ports(80), dst_type=AddrType(AddrTypeKind.LOCAL)),
            # DNAT from a helper chain: the kernel checks the hooks that reach the target.
            rule(Dnat(Prefix.parse("10.0.0.3"), (22, 22)), proto=proto(TCP), dport=ports(2222),
                 saddr=addrs("10.9.0.0/16", "10.8.0.0/16", negated=True)),)),
        Chain(name="OUTPUT", hook=Hook.OUTPUT, rules=(
            rule(Redirect((3128, 3128)), proto=proto(TCP), dport=ports(80)),)),
        Chain(name="POSTROUTING", hook=Hook.POSTROUTING, rules=(
            rule(Masquerade((1024, 65535)), proto=proto(TCP), saddr=addrs("172.17.0.0/16")),
            rule(Snat(Prefix.parse("1.2.3.4")), saddr=addrs("172.18.0.0/16")),)),
    )),
    Table(kind=NAT, family=IP6, chains=(
        Chain(name="PREROUTING", hook=Hook.PREROUTING, rules=(
            rule(Dnat(Prefix.parse("fd00::2"), (80, 80)), proto=proto(TCP), dport=ports(8080)),)),
        Chain(name="POSTROUTING", hook=Hook.POSTROUTING, rules=(
            rule(Snat(Prefix.parse("fd00::3"), (1000, 2000)), proto=proto(UDP)),)),
    )),
    Table(kind=MANGLE, family=INET, chains=(
        Chain(name="PREROUTING", hook=Hook.PREROUTING, policy=Policy.ACCEPT, rules=(
            rule(SetMark(0x10, 0xF0), proto=proto(UDP), dport=ports(53)),)),
        Chain(name="FORWARD", hook=Hook.FORWARD, rules=(
            rule(SetMss(1360), proto=proto(TCP), tcp_flags=syn_only()),
            rule(SetMss(1200), proto=proto(TCP), tcp_flags=syn_only(),
                 dport=ports(*range(1000, 1020), negated=True)),)),
    )),
    Table(kind=RAW, family=INET, chains=(
        Chain(name="PREROUTING", hook=Hook.PREROUTING, rules=(
            rule(Drop(), saddr=addrs("127.0.0.0/8", "::1"), iifname=Interface("lo",
                                                                              negated=True)),)),
    )),
))

TOOLS = [f"{fam}-{variant}-{verb}" for fam in ("iptables", "ip6tables")
         for variant in ("nft", "legacy") for verb in ("restore", "save")]
_MISSING = [t for t in ("ip", *TOOLS) if shutil.which(t) is None]
needs_kernel = pytest.mark.skipif(
    os.geteuid() != 0 or bool(_MISSING),
    reason="needs root, `ip netns` and iptables-{nft,legacy}-{restore,save} "
           f"(missing: {', '.join(_MISSING) or 'root'})")
_serial = itertools.count()


@contextmanager
def scratch_namespace() -> Iterator[str]:
    name = f"rulec-t{os.getpid()}-{next(_serial)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def run_in(ns: str, argv: list[str], stdin: str = "") -> str:
    done = subprocess.run(["ip", "netns", "exec", ns, *argv], input=stdin, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(argv)} failed: {done.stderr}"
    return done.stdout


def by_chain(text: str) -> dict[str, dict[str, list[str]]]:
    """table -> chain -> `:` declaration (without counters) and `-A` lines in order."""
    tables: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            name, policy = line[1:].split()[:2]
            current.setdefault(name, []).insert(0, policy)
        elif line.startswith("-A "):
            current.setdefault(line.split()[1], []).append(line)
    return tables


@pytest.mark.kernel
@needs_kernel
@pytest.mark.parametrize("variant", ["nft", "legacy"])
@pytest.mark.parametrize("family", [IP, IP6], ids=["iptables", "ip6tables"])
def test_kernel_read_back(family: Family, variant: str) -> None:
    chosen = backend(family)
    verify(REPRESENTATIVE, chosen.limits)
    text = chosen.emit(REPRESENTATIVE, EmitOptions()).text
    assert text.count("rulec-") >= 3  # the helper chains are exercised
    with scratch_namespace() as ns:
        run_in(ns, [f"{chosen.name}-{variant}-restore"], text)
        saved = run_in(ns, [f"{chosen.name}-{variant}-save"])
    assert by_chain(saved) == by_chain(text)


@pytest.mark.kernel
@needs_kernel
@pytest.mark.parametrize("variant", ["nft", "legacy"])
def test_kernel_noflush(variant: str) -> None:
    """--noflush replaces the declared chains and leaves everything else alone."""
    existing = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:uc - [0:0]\n"
                ":theirs - [0:0]\n-A INPUT -s 9.9.9.9/32 -j DROP\n-A FORWARD -j theirs\n"
                "-A uc -j DROP\n-A theirs -j ACCEPT\nCOMMIT\n"
                "*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j ACCEPT\nCOMMIT\n")
    artifact = IptablesBackend().emit(RULESET, EmitOptions(noflush=True))
    with scratch_namespace() as ns:
        run_in(ns, [f"iptables-{variant}-restore"], existing)
        run_in(ns, [f"iptables-{variant}-restore", *artifact.load_command[1:]], artifact.text)
        saved = by_chain(run_in(ns, [f"iptables-{variant}-save"]))
    assert saved["filter"]["INPUT"] == ["DROP", "-A INPUT -i lo -j uc"]
    assert saved["filter"]["uc"] == ["-", "-A uc -p tcp -m tcp --dport 22 -j ACCEPT"]
    assert saved["filter"]["FORWARD"] == ["ACCEPT", "-A FORWARD -j theirs"]
    assert saved["filter"]["theirs"] == ["-", "-A theirs -j ACCEPT"]
    assert saved["mangle"]["PREROUTING"] == ["ACCEPT", "-A PREROUTING -j ACCEPT"]
    assert saved["nat"]["POSTROUTING"] == ["ACCEPT", "-A POSTROUTING -j MASQUERADE"]


# ------------------------------------------------------------------ ipsets (EmitOptions.ipset)


def _ipset_emit(text: str, backend: IptablesBackend | Ip6tablesBackend) -> tuple[str, str]:
    from rulec.api import parse_text

    artifact = backend.emit(parse_text(text), EmitOptions(ipset=True))
    assert artifact.ipsets is not None
    return artifact.text, artifact.ipsets


def test_ipset_mode_tests_an_address_set_with_one_set_match() -> None:
    text, sets = _ipset_emit("table ip filter { chain INPUT {\n"
                             "accept tcp dport 22 from { 10.0.0.0/8, 192.0.2.1 }\n"
                             "drop to != { 10.0.0.0/8, 198.51.100.0/24 }\n"
                             "accept from 203.0.113.9 } }", IptablesBackend())
    rules = [line for line in text.splitlines() if line.startswith("-A")]
    src = rules[0].split("--match-set ")[1].split()[0]
    dst = rules[1].split("--match-set ")[1].split()[0]
    assert rules == [
        f"-A INPUT -p tcp -m set --match-set {src} src -m tcp --dport 22 -j ACCEPT",
        f"-A INPUT -m set ! --match-set {dst} dst -j DROP",  # no helper chain needed
        "-A INPUT -s 203.0.113.9/32 -j ACCEPT",  # one prefix: a plain -s
    ]
    assert src.startswith("rulec4_") and len(src) <= 31 and src != dst
    assert sets.splitlines()[1:] == sorted([
        f"create {src} hash:net family inet maxelem 65536",
        f"add {src} 10.0.0.0/8", f"add {src} 192.0.2.1/32",
        f"create {dst} hash:net family inet maxelem 65536",
        f"add {dst} 10.0.0.0/8", f"add {dst} 198.51.100.0/24",
    ], key=lambda line: (line.split()[1], not line.startswith("create")))


def test_ipset_names_follow_the_members_only() -> None:
    """The same members give the same name (so loading never changes a set in use); other
    members, another name; a set used twice is declared once."""
    a = _ipset_emit("table ip filter { chain INPUT { accept from { 10.0.0.1, 10.0.0.3 }\n"
                    "drop to { 10.0.0.1, 10.0.0.3 } } }", IptablesBackend())[1]
    b = _ipset_emit("table ip filter { chain FORWARD { drop from { 10.0.0.3, 10.0.0.1 } } }",
                    IptablesBackend())[1]
    c = _ipset_emit("table ip filter { chain FORWARD { drop from { 10.0.0.3, 10.0.0.5 } } }",
                    IptablesBackend())[1]
    assert a == b and a.count("create ") == 1
    assert c != a


def test_ipset_mode_for_ipv6_and_without_any_set() -> None:
    _, sets = _ipset_emit("table ip6 filter { chain INPUT { accept from { 2001:db8::/48, "
                          "2001:db8:1::1 } } }", Ip6tablesBackend())
    assert "hash:net family inet6" in sets and "rulec6_" in sets
    _, sets = _ipset_emit("table ip filter { chain INPUT { accept tcp dport 22 } }",
                             IptablesBackend())
    assert sets.startswith("#") and len(sets.splitlines()) == 1  # a valid, empty restore
