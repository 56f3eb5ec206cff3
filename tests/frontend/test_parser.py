"""The DSL frontend: what each construct of the language lowers to, includes, table merging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rulec.api import parse_files, parse_text
from rulec.diagnostics import RulecError
from rulec.ir import nodes as ir
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
    Mark,
    PortSet,
    Prefix,
    Protocol,
    RateUnit,
    TcpFlag,
    TcpFlags,
)

TCP, UDP = Protocol(6), Protocol(17)
IP, IP6 = Family.IP, Family.IP6
SYN_MASK = frozenset({TcpFlag.FIN, TcpFlag.SYN, TcpFlag.RST, TcpFlag.ACK})


def addrs(*texts: str, negated: bool = False) -> AddressSet:
    return AddressSet(tuple(Prefix.parse(t) for t in texts), negated)


def flags(value: str, mask: str, negated: bool = False) -> TcpFlags:
    def names(text: str) -> frozenset[TcpFlag]:
        return frozenset(TcpFlag(n) for n in text.split(",") if n != "none")
    return TcpFlags(names(value), names(mask), negated)


def rule(action: ir.Action, *statements: ir.Statement, comment: str | None = None,
         **match: Any) -> ir.Rule:
    return ir.Rule(match=ir.Match(**match), statements=statements, action=action,
                   comment=comment)


def only_rule(text: str, table: str = "inet filter", chain: str = "INPUT") -> ir.Rule:
    """Parse one rule inside a table and chain (plus a user chain `other` to jump to)."""
    source = f"table {table} {{\n  chain {chain} {{\n    {text}\n  }}\n  chain other {{\n  }}\n}}\n"
    ruleset = parse_text(source)
    (found,) = [r for t in ruleset.tables for c in t.chains for r in c.rules]
    return found


# (rule text, expected rule, table, chain): every action and every clause at least once.
CASES: list[tuple[str, ir.Rule, str, str]] = [
    # ---------------------------------------------------------------- actions
    ("accept", rule(ir.Accept()), "inet filter", "INPUT"),
    ("drop", rule(ir.Drop()), "inet filter", "INPUT"),
    ("return", rule(ir.Return()), "inet filter", "INPUT"),
    ("reject", rule(ir.Reject()), "inet filter", "INPUT"),
    ("reject with admin-prohibited", rule(ir.Reject(ir.RejectWith.ADMIN_PROHIBITED)),
     "inet filter", "INPUT"),
    ("reject with tcp-reset tcp", rule(ir.Reject(ir.RejectWith.TCP_RESET), proto=TCP),
     "inet filter", "INPUT"),
    ("jump other", rule(ir.Jump("other")), "inet filter", "INPUT"),
    ("goto other", rule(ir.Goto("other")), "inet filter", "INPUT"),
    ("log", rule(ir.Log()), "inet filter", "INPUT"),
    ('log prefix "in: " level info', rule(ir.Log("in: ", ir.LogLevel.INFO)),
     "inet filter", "INPUT"),
    ('log level warning prefix "a \\"b\\" \\\\"', rule(ir.Log('a "b" \\', ir.LogLevel.WARNING)),
     "inet filter", "INPUT"),
    ("dnat to 10.0.0.2", rule(ir.Dnat(Prefix.parse("10.0.0.2"))), "ip nat", "PREROUTING"),
    ("dnat to 10.0.0.2:8080 tcp", rule(ir.Dnat(Prefix.parse("10.0.0.2"), (8080, 8080)),
                                       proto=TCP), "ip nat", "PREROUTING"),
    ("dnat to [2001:db8::2]:80-90 tcp",
     rule(ir.Dnat(Prefix.parse("2001:db8::2"), (80, 90)), proto=TCP), "ip6 nat", "OUTPUT"),
    ("dnat to 2001:db8::2", rule(ir.Dnat(Prefix.parse("2001:db8::2"))), "inet nat", "PREROUTING"),
    ("snat to 192.0.2.1 out eth0",
     rule(ir.Snat(Prefix.parse("192.0.2.1")), oifname=Interface("eth0")),
     "ip nat", "POSTROUTING"),
    ("masquerade from 172.18.0.0/16", rule(ir.Masquerade(), saddr=addrs("172.18.0.0/16")),
     "ip nat", "POSTROUTING"),
    ("redirect to 3128 tcp dport 80", rule(ir.Redirect((3128, 3128)), proto=TCP,
                                           dport=PortSet.of(80)), "ip nat", "PREROUTING"),
    ("mss set 1400 tcp syn",
     rule(ir.SetMss(1400), proto=TCP, tcp_flags=TcpFlags(frozenset({TcpFlag.SYN}), SYN_MASK)),
     "inet mangle", "FORWARD"),
    ("mss clamp to pmtu tcp flags syn / syn,rst",
     rule(ir.ClampMss(), proto=TCP, tcp_flags=flags("syn", "syn,rst")),
     "inet mangle", "POSTROUTING"),
    ("mark set 0x10", rule(ir.SetMark(0x10)), "inet mangle", "PREROUTING"),
    ("mark set 16/0xff", rule(ir.SetMark(16, 0xFF)), "inet mangle", "PREROUTING"),
    # ---------------------------------------------------------------- protocols and family
    ("accept udp", rule(ir.Accept(), proto=UDP), "inet filter", "INPUT"),
    ("accept icmp", rule(ir.Accept(), proto=Protocol(1), family=IP), "inet filter", "INPUT"),
    ("accept icmpv6", rule(ir.Accept(), proto=Protocol(58), family=IP6), "inet filter", "INPUT"),
    ("accept sctp", rule(ir.Accept(), proto=Protocol(132)), "inet filter", "INPUT"),
    ("accept gre", rule(ir.Accept(), proto=Protocol(47)), "inet filter", "INPUT"),
    ("accept proto 41", rule(ir.Accept(), proto=Protocol(41)), "inet filter", "INPUT"),
    ("accept proto esp", rule(ir.Accept(), proto=Protocol(50)), "inet filter", "INPUT"),
    ("drop proto != tcp", rule(ir.Drop(), proto=Protocol(6, negated=True)),
     "inet filter", "INPUT"),
    ("accept proto != icmp", rule(ir.Accept(), proto=Protocol(1, negated=True)),
     "inet filter", "INPUT"),
    ("accept family ip6", rule(ir.Accept(), family=IP6), "inet filter", "INPUT"),
    # ---------------------------------------------------------------- addresses
    ("accept from 10.0.0.0/8", rule(ir.Accept(), saddr=addrs("10.0.0.0/8")),
     "inet filter", "INPUT"),
    ("accept saddr 10.0.0.1 daddr 10.0.0.2",
     rule(ir.Accept(), saddr=addrs("10.0.0.1"), daddr=addrs("10.0.0.2")), "ip filter", "INPUT"),
    ("accept to != { 10.0.0.0/8, 192.168.0.0/16, }",
     rule(ir.Accept(), daddr=addrs("10.0.0.0/8", "192.168.0.0/16", negated=True)),
     "inet filter", "INPUT"),
    ("accept from { 192.0.2.0/24, 2001:db8::/32 }",
     rule(ir.Accept(), saddr=addrs("2001:db8::/32", "192.0.2.0/24")), "inet filter", "INPUT"),
    ("accept to ::ffff:192.0.2.1", rule(ir.Accept(), daddr=addrs("::ffff:c000:201")),
     "ip6 filter", "INPUT"),
    ("accept from type local", rule(ir.Accept(), src_type=AddrType(AddrTypeKind.LOCAL)),
     "inet filter", "INPUT"),
    ("accept to type != broadcast",
     rule(ir.Accept(), dst_type=AddrType(AddrTypeKind.BROADCAST, negated=True)),
     "inet filter", "INPUT"),
    # ---------------------------------------------------------------- ports
    ("accept tcp dport 22", rule(ir.Accept(), proto=TCP, dport=PortSet.of(22)),
     "inet filter", "INPUT"),
    ("accept udp sport 1024-65535",
     rule(ir.Accept(), proto=UDP, sport=PortSet.of((1024, 65535))), "inet filter", "INPUT"),
    ("accept tcp dport { 443, 80, 8000-8100, 80 }",
     rule(ir.Accept(), proto=TCP, dport=PortSet.of(80, 443, (8000, 8100))),
     "inet filter", "INPUT"),
    ("drop udp dport != 53", rule(ir.Drop(), proto=UDP, dport=PortSet.of(53, negated=True)),
     "inet filter", "INPUT"),
    ("accept tcp ct original dport { 8080, 8443 }",
     rule(ir.Accept(), proto=TCP, ct_orig_dport=PortSet.of(8080, 8443)),
     "ip filter", "FORWARD"),
    ("drop ct original dport != 80",
     rule(ir.Drop(), ct_orig_dport=PortSet.of(80, negated=True)), "ip filter", "FORWARD"),
    # ---------------------------------------------------------------- interfaces
    ("accept in lo", rule(ir.Accept(), iifname=Interface("lo")), "inet filter", "INPUT"),
    ("accept out != eth1", rule(ir.Accept(), oifname=Interface("eth1", negated=True)),
     "inet filter", "FORWARD"),
    ("accept in br-+", rule(ir.Accept(), iifname=Interface("br-+")), "inet filter", "FORWARD"),
    ('accept in "0weird@if"', rule(ir.Accept(), iifname=Interface("0weird@if")),
     "inet filter", "INPUT"),
    ("accept in tcp", rule(ir.Accept(), iifname=Interface("tcp")), "inet filter", "INPUT"),
    # ---------------------------------------------------------------- conntrack, flags, icmp
    ("accept ct state established,related",
     rule(ir.Accept(), ct_state=CtStates(frozenset({CtState.ESTABLISHED, CtState.RELATED}))),
     "inet filter", "INPUT"),
    ("drop ct state != new",
     rule(ir.Drop(), ct_state=CtStates(frozenset({CtState.NEW}), negated=True)),
     "inet filter", "INPUT"),
    ("drop tcp flags syn,fin / syn,fin",
     rule(ir.Drop(), proto=TCP, tcp_flags=flags("fin,syn", "fin,syn")), "inet filter", "INPUT"),
    ("drop tcp flags != syn / syn,ack,rst",
     rule(ir.Drop(), proto=TCP, tcp_flags=flags("syn", "syn,ack,rst", negated=True)),
     "inet filter", "INPUT"),
    ("drop tcp flags none / fin,syn,rst,psh,ack,urg",
     rule(ir.Drop(), proto=TCP, tcp_flags=flags("none", "fin,syn,rst,psh,ack,urg")),
     "inet filter", "INPUT"),
    ("accept tcp syn", rule(ir.Accept(), proto=TCP,
                            tcp_flags=TcpFlags(frozenset({TcpFlag.SYN}), SYN_MASK)),
     "inet filter", "INPUT"),
    ("accept icmp type echo-request",
     rule(ir.Accept(), proto=Protocol(1), family=IP, icmp_type=IcmpType(IP, (8,))),
     "inet filter", "INPUT"),
    ("accept icmpv6 type != 128",
     rule(ir.Accept(), proto=Protocol(58), family=IP6, icmp_type=IcmpType(IP6, (128,), True)),
     "inet filter", "INPUT"),
    ("accept icmpv6 type neighbour-solicitation",
     rule(ir.Accept(), proto=Protocol(58), family=IP6, icmp_type=IcmpType(IP6, (135,))),
     "ip6 filter", "INPUT"),
    # ---------------------------------------------------------------- mark, limit, statements
    ("accept mark 0x1", rule(ir.Accept(), mark=Mark(1)), "inet filter", "INPUT"),
    ("accept mark != 0x100/0xff00", rule(ir.Accept(), mark=Mark(0x100, 0xFF00, True)),
     "inet filter", "INPUT"),
    ("accept limit 10/second", rule(ir.Accept(), limit=Limit(10, RateUnit.SECOND)),
     "inet filter", "INPUT"),
    ("accept limit 5/minutes burst 20", rule(ir.Accept(), limit=Limit(5, RateUnit.MINUTE, 20)),
     "inet filter", "INPUT"),
    ('accept comment "ssh: \\"admins\\""', rule(ir.Accept(), comment='ssh: "admins"'),
     "inet filter", "INPUT"),
    ("drop counter", rule(ir.Drop(), ir.Counter()), "inet filter", "INPUT"),
    ('drop log prefix "x" counter tcp',
     rule(ir.Drop(), ir.Log("x"), ir.Counter(), proto=TCP), "inet filter", "INPUT"),
    ('log prefix "a" log level debug',
     rule(ir.Log("a"), ir.Log(None, ir.LogLevel.DEBUG)), "inet filter", "INPUT"),
]


@pytest.mark.parametrize(("text", "expected", "table", "chain"), CASES,
                         ids=[case[0] for case in CASES])
def test_rule(text: str, expected: ir.Rule, table: str, chain: str) -> None:
    assert only_rule(text, table, chain) == expected


def test_clause_order_does_not_matter() -> None:
    a = only_rule("accept tcp dport 22 from 10.0.0.0/8 in eth0 ct state new")
    b = only_rule("accept ct state new in eth0 from 10.0.0.0/8 dport 22 tcp")
    assert a == b


def parse_error_codes(text: str) -> list[str]:
    with pytest.raises(RulecError) as info:
        parse_text(text)
    return [d.code for d in info.value.diagnostics]


# ------------------------------------------------------------------ file structure


def test_structure_separators_comments_and_policies() -> None:
    ruleset = parse_text("""
# a comment before anything
define web = { 80, 443 }   # trailing comment

table ip filter {
  chain INPUT policy drop {
    accept ct state established,related; accept in lo
    # a comment between rules

    accept tcp dport $web
  }
  chain FORWARD policy accept { drop }
  chain logdrop { log; drop }
}
""")
    (table,) = ruleset.tables
    assert (table.family, table.kind) == (Family.IP, ir.TableKind.FILTER)
    assert [c.name for c in table.chains] == ["INPUT", "FORWARD", "logdrop"]
    inp, fwd, user = table.chains
    assert (inp.hook, inp.policy, len(inp.rules)) == (ir.Hook.INPUT, ir.Policy.DROP, 3)
    assert (fwd.hook, fwd.policy, fwd.rules) == (ir.Hook.FORWARD, ir.Policy.ACCEPT,
                                                 (rule(ir.Drop()),))
    assert (user.hook, user.policy, user.rules) == (None, None, (rule(ir.Log()), rule(ir.Drop())))
    assert inp.rules[2].match.dport == PortSet.of(80, 443)


def test_table_family_defaults_to_inet() -> None:
    (table,) = parse_text("table nat { chain POSTROUTING { masquerade } }").tables
    assert (table.family, table.kind) == (Family.INET, ir.TableKind.NAT)


def test_empty_inputs() -> None:
    assert parse_text("") == ir.Ruleset()
    assert parse_text("# nothing\n\n") == ir.Ruleset()
    assert parse_text("table raw {}").tables == (ir.Table(kind=ir.TableKind.RAW,
                                                          family=Family.INET),)


def test_table_declared_twice_is_merged() -> None:
    ruleset = parse_text("""
table ip filter { chain INPUT { accept in lo } }
table ip6 filter { chain INPUT { drop } }
table ip filter { chain logdrop { drop } }
""")
    assert [(t.family, t.kind) for t in ruleset.tables] == [
        (Family.IP, ir.TableKind.FILTER), (Family.IP6, ir.TableKind.FILTER)]
    assert [c.name for c in ruleset.tables[0].chains] == ["INPUT", "logdrop"]


def test_chain_declared_twice_across_merged_tables_is_an_error() -> None:
    text = "table filter { chain INPUT { drop } }\ntable inet filter { chain INPUT { drop } }\n"
    assert parse_error_codes(text) == ["E0206"]


def test_variables() -> None:
    ruleset = parse_text("""
define lan = 10.0.0.0/8
define nets = { $lan, 192.168.0.0/16 }
define ssh = 22
table ip filter {
  chain INPUT {
    accept tcp dport { $ssh, 80 } from $nets
    accept to != $lan
  }
}
""")
    first, second = ruleset.tables[0].chains[0].rules
    assert first.match.saddr == addrs("10.0.0.0/8", "192.168.0.0/16")
    assert first.match.dport == PortSet.of(22, 80)
    assert second.match.daddr == addrs("10.0.0.0/8", negated=True)


def test_spans_point_at_the_source() -> None:
    ruleset = parse_text("table filter {\n  chain INPUT {\n    accept tcp dport 22\n  }\n}\n",
                         "web.rules")
    chain = ruleset.tables[0].chains[0]
    assert chain.span is not None and (chain.span.line, chain.span.column) == (2, 9)
    span = chain.rules[0].span
    assert span is not None and str(span) == "web.rules:3:5"


# ------------------------------------------------------------------ includes


def test_include_is_relative_to_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "nets.rules").write_text('define mgmt = 198.51.100.0/24\n'
                                                 'include "ports.rules"\n')
    (tmp_path / "lib" / "ports.rules").write_text("define ssh = 22\n")
    (tmp_path / "main.rules").write_text(
        'include "lib/nets.rules"\n'
        "table ip filter {\n  chain INPUT {\n    accept tcp dport $ssh from $mgmt\n  }\n}\n")
    ruleset = parse_files([tmp_path / "main.rules"])
    (only,) = ruleset.tables[0].chains[0].rules
    assert only.match.saddr == addrs("198.51.100.0/24")
    assert only.match.dport == PortSet.of(22)


def test_include_from_text_is_relative_to_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "defs.rules").write_text("define ssh = 22\n")
    monkeypatch.chdir(tmp_path)
    ruleset = parse_text('include "defs.rules"\n'
                         "table filter { chain INPUT { accept tcp dport $ssh } }\n")
    assert ruleset.tables[0].chains[0].rules[0].match.dport == PortSet.of(22)


def test_included_file_can_add_chains_to_a_table(tmp_path: Path) -> None:
    (tmp_path / "extra.rules").write_text("table ip filter { chain logdrop { drop } }\n")
    (tmp_path / "main.rules").write_text(
        "table ip filter { chain INPUT { jump logdrop } }\ninclude \"extra.rules\"\n")
    ruleset = parse_files([tmp_path / "main.rules"])
    assert [c.name for c in ruleset.tables[0].chains] == ["INPUT", "logdrop"]


def test_include_cycle(tmp_path: Path) -> None:
    (tmp_path / "a.rules").write_text('include "b.rules"\n')
    (tmp_path / "b.rules").write_text('include "a.rules"\n')
    with pytest.raises(RulecError) as info:
        parse_files([tmp_path / "a.rules"])
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "E0204"
    assert "a.rules -> b.rules -> a.rules" in diagnostic.message
    assert diagnostic.span is not None and diagnostic.span.file.endswith("b.rules")


def test_include_self(tmp_path: Path) -> None:
    (tmp_path / "a.rules").write_text('include "./a.rules"\n')
    with pytest.raises(RulecError) as info:
        parse_files([tmp_path / "a.rules"])
    assert [d.code for d in info.value.diagnostics] == ["E0204"]


def test_include_missing_file(tmp_path: Path) -> None:
    (tmp_path / "a.rules").write_text('include "missing.rules"\n')
    with pytest.raises(RulecError) as info:
        parse_files([tmp_path / "a.rules"])
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "E0203"
    assert "missing.rules" in diagnostic.message
    assert diagnostic.span is not None and diagnostic.span.line == 1


def test_define_used_before_its_include_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "defs.rules").write_text("define ssh = 22\n")
    (tmp_path / "main.rules").write_text(
        "table filter { chain INPUT { accept tcp dport $ssh } }\ninclude \"defs.rules\"\n")
    with pytest.raises(RulecError) as info:
        parse_files([tmp_path / "main.rules"])
    assert [d.code for d in info.value.diagnostics] == ["E0201"]


def test_error_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "defs.rules").write_text("define ports = { 22, 10.0.0.1 }\n")
    (tmp_path / "main.rules").write_text(
        'include "defs.rules"\ntable filter { chain INPUT { accept tcp dport $ports } }\n')
    with pytest.raises(RulecError) as info:
        parse_files([tmp_path / "main.rules"])
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "E0303"
    assert diagnostic.span is not None
    # The error points at the use of $ports, and a note says where it is defined.
    assert (Path(diagnostic.span.file).name, diagnostic.span.line) == ("main.rules", 2)
    assert diagnostic.notes == (f"$ports is defined at {tmp_path / 'defs.rules'}:1:8",)


def test_several_files_are_one_policy(tmp_path: Path) -> None:
    (tmp_path / "a.rules").write_text("define ssh = 22\ntable filter { chain INPUT { drop } }\n")
    (tmp_path / "b.rules").write_text("table filter { chain OUTPUT { accept tcp dport $ssh } }\n")
    ruleset = parse_files([tmp_path / "a.rules", tmp_path / "b.rules"])
    assert [c.name for c in ruleset.tables[0].chains] == ["INPUT", "OUTPUT"]


# ------------------------------------------------------------------ errors are collected


def test_every_error_of_a_run_is_reported() -> None:
    text = """
table filter {
  chain INPUT {
    accept tcp dport 70000
    accept from 10.0.0.1/8
    accept in "bad name"
  }
  chain INPUT {}
}
"""
    assert parse_error_codes(text) == ["E0302", "E0301", "E0313", "E0206"]


def test_frontend_errors_stop_before_verify() -> None:
    # A frontend error (E0302) and a verify error (jump to a missing chain): the frontend's
    # is reported; verify never sees a half-lowered ruleset.
    text = "table filter { chain INPUT { jump nowhere; accept tcp dport 70000 } }"
    assert parse_error_codes(text) == ["E0302"]


def test_huge_numbers_are_errors_not_crashes() -> None:
    digits = "9" * 5000
    assert parse_error_codes(f"table filter {{ chain INPUT {{ accept tcp dport {digits} }} }}"
                             ) == ["E0302"]
    assert parse_error_codes(f"table filter {{ chain INPUT {{ accept mark {digits} }} }}"
                             ) == ["E0312"]
