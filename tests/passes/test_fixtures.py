"""Pass fixtures: for every registered pass, `fixtures/<pass name>.rules` holds hand-written
cases that must fire (with the expected result) and cases that must not (a first-match trap,
another family, a negation...). Every registered pass must have such a file, with at least one
case of each kind.

Format (a .rules file, so editors highlight it; `#` lines outside a case are free text):

    # title: merges rules that differ only in dport
    # context: named_sets            (optional: PassContext fields set to True)
    table ip filter {
      chain INPUT {
        accept tcp dport 22
        accept udp                   # (any rule may carry `# warn: W0101`, see below)
        accept tcp dport 80
      }
    }
    # expect:
    table ip filter {
      chain INPUT {
        accept tcp dport { 22, 80 }
        accept udp
      }
    }

A case runs from its `# title:` line to the next one. The input is the policy text before
`# expect:`; what follows is the output exactly as `rulec.ir.printer.print_ruleset` prints
it, or, on the same line, `# expect: unchanged` for a case that must not fire. Every case
checks that:
- the pass's result passes ir.verify and prints as expected; an "unchanged" case gets its
  input object back (`pass(r) is r`), a firing case a different ruleset;
- the pass is idempotent: run on its own result it returns that very object;
- the warnings it reports are exactly those marked with `# warn: CODE` on the input lines of
  the rules they are about (none marked: none reported);
- the reference evaluator gives the same outcome before and after for packets aimed at each
  rule in turn (its own addresses, ports, interfaces and marks and their +-1 neighbours),
  each sent to this host (INPUT), through it (FORWARD) and from it (OUTPUT).
"""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TypeVar

import pytest

from rulec.api import parse_text
from rulec.diagnostics import RulecError
from rulec.ir import nodes as ir
from rulec.ir.evaluate import Host, Packet, evaluate
from rulec.ir.evaluate import Path as PacketPath
from rulec.ir.printer import print_ruleset
from rulec.ir.values import ICMP, ICMPV6, MAX_PORT, TCP, UDP, CtState, Family, TcpFlag
from rulec.ir.verify import verify
from rulec.passes import PASSES, PassContext

FIXTURES = Path(__file__).parent / "fixtures"
T = TypeVar("T")
_TITLE = re.compile(r"#\s*title:\s*(.+?)\s*$")
_EXPECT = re.compile(r"#\s*expect:\s*(.*?)\s*$")
_CONTEXT = re.compile(r"#\s*context:\s*(.+?)\s*$")
_WARN = re.compile(r"#\s*warn:\s*([A-Z]\d{4}(?:\s*,\s*[A-Z]\d{4})*)")


@dataclass(frozen=True)
class Case:
    path: Path
    line: int  # of the title
    title: str
    context: tuple[str, ...]
    input_text: str  # padded with blank lines, so spans carry the file's line numbers
    expected: str | None  # None: must not fire
    warnings: Counter[tuple[str, int]]  # (code, file line)

    @property
    def pass_name(self) -> str:
        return self.path.stem

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}: {self.title}"


def load_cases(path: Path) -> list[Case]:
    """The cases of one fixture file; ValueError (with file:line) if it is malformed."""
    lines = path.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if _TITLE.match(line)]
    cases = []
    for start, end in itertools.pairwise([*starts, len(lines)]):
        title = _TITLE.match(lines[start])
        assert title is not None
        where = f"{path}:{start + 1}"
        body = lines[start + 1:end]
        context: list[str] = []
        while body and (found := _CONTEXT.match(body[0])):
            context += [c.strip() for c in found.group(1).split(",")]
            body = body[1:]
        split = next((i for i, line in enumerate(body) if _EXPECT.match(line)), None)
        if split is None:
            raise ValueError(f"{where}: case has no `# expect:` line")
        first = start + 1 + (len(lines[start + 1:end]) - len(body))  # 0-based line of input
        expect = _EXPECT.match(body[split])
        assert expect is not None
        rest = body[split + 1:]
        if expect.group(1) == "unchanged":
            if any(line.strip() and not line.lstrip().startswith("#") for line in rest):
                raise ValueError(f"{where}: text after `# expect: unchanged`")
            expected = None
        elif expect.group(1):
            raise ValueError(f"{where}: `# expect:` takes nothing or `unchanged`")
        else:
            # Trailing blank lines and comment lines separate cases; they are not output.
            while rest and (not rest[-1].strip() or rest[-1].lstrip().startswith("#")):
                rest.pop()
            expected = "\n".join(rest) + "\n"
        warnings: Counter[tuple[str, int]] = Counter()
        for offset, line in enumerate(body[:split]):
            if (marked := _WARN.search(line)) is not None:
                for code in marked.group(1).split(","):
                    warnings[(code.strip(), first + offset + 1)] += 1
        unknown = set(context) - {f.name for f in fields(PassContext)}
        if unknown:
            raise ValueError(f"{where}: unknown context {', '.join(sorted(unknown))}")
        text = "\n" * first + "\n".join(body[:split]) + "\n"
        cases.append(Case(path, start + 1, title.group(1), tuple(context), text, expected,
                          warnings))
    return cases


def _all_cases() -> list[Case]:
    return [case for path in sorted(FIXTURES.glob("*.rules")) for case in load_cases(path)]


CASES = _all_cases()


def test_every_pass_has_fixtures_that_fire_and_that_do_not() -> None:
    files = {p.stem for p in FIXTURES.glob("*.rules")}
    assert files <= set(PASSES), f"fixtures for unknown passes: {sorted(files - set(PASSES))}"
    for name in PASSES:
        mine = [c for c in CASES if c.pass_name == name]
        assert any(c.expected is not None for c in mine), \
            f"fixtures/{name}.rules: no case that fires"
        assert any(c.expected is None for c in mine), \
            f"fixtures/{name}.rules: no case that must not fire"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_fixture(case: Case) -> None:
    run = PASSES[case.pass_name]
    try:
        before = parse_text(case.input_text, str(case.path))
    except RulecError as error:
        pytest.fail(f"{case}: the input does not parse\n{error.render()}")
    ctx = PassContext(**dict.fromkeys(case.context, True))
    after = run(before, ctx)
    verify(after)
    printed = print_ruleset(after)
    if case.expected is None:
        assert after is before, f"{case}: fired, but must not\n{printed}"
    else:
        assert after is not before, f"{case}: did not fire"
        assert printed == case.expected, f"{case}: expected\n{case.expected}got\n{printed}"
    assert run(after, PassContext(**dict.fromkeys(case.context, True))) is after, \
        f"{case}: not idempotent"
    got = Counter((w.code, w.span.line) for w in ctx.warnings if w.span is not None)
    assert got == case.warnings, (
        f"{case}: warnings differ\n  marked:   {sorted(case.warnings.elements())}\n"
        f"  reported: {[f'{w.code} at {w.span}: {w.message}' for w in ctx.warnings]}")
    _same_outcomes(case, before, after)


# -------------------------------------------------------------------------- packets

_FLAGS = (frozenset({TcpFlag.SYN}), frozenset({TcpFlag.ACK}), frozenset({TcpFlag.SYN, TcpFlag.ACK}))


@dataclass
class _Pool:
    """Values a packet field may take: the edges of what some rules test."""

    families: set[Family] = field(default_factory=set)
    protos: set[int] = field(default_factory=set)
    addresses: dict[Family, set[int]] = field(
        default_factory=lambda: {Family.IP: set(), Family.IP6: set()})
    ports: set[int] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    marks: set[int] = field(default_factory=set)
    icmp_types: set[int] = field(default_factory=set)


def _pool(rules: list[ir.Rule]) -> _Pool:
    pool = _Pool()
    for rule in rules:
        m = rule.match
        if m.family is not None:
            pool.families.add(m.family)
        if m.proto is not None and not m.proto.negated:
            pool.protos.add(m.proto.number)
        for value in (m.saddr, m.daddr):
            for p in value.prefixes if value is not None else ():
                top = (1 << p.family.bits) - 1
                pool.families.add(p.family)
                pool.addresses[p.family] |= {p.first, p.last, max(p.first - 1, 0),
                                             min(p.last + 1, top), (p.first + p.last) // 2}
        for ports in (m.sport, m.dport, m.ct_orig_dport):
            for low, high in ports.ranges if ports is not None else ():
                pool.ports |= {v for v in (low - 1, low, high, high + 1) if 0 <= v <= MAX_PORT}
        for number in m.icmp_type.types if m.icmp_type is not None else ():
            pool.icmp_types |= {v for v in (number - 1, number, number + 1) if 0 <= v <= 255}
        for iface in (m.iifname, m.oifname):
            if iface is not None:
                stem = iface.name.rstrip("+")
                pool.names |= {stem, stem + "7", stem[:-1] or "x"}
        if m.mark is not None:
            pool.marks |= {m.mark.value, m.mark.value ^ m.mark.mask, m.mark.value + 1}
        if isinstance(rule.action, ir.SetMark):
            pool.marks.add(rule.action.value)
    return pool


def _pick(rnd: random.Random, own: set[int] | set[str] | set[Family], every: list[T]) -> T:
    """Mostly one of the rule's own values (when it has any), else any value of the case."""
    if own and rnd.random() < 0.75:
        return rnd.choice(sorted(own, key=str))  # type: ignore[arg-type]
    return rnd.choice(every)


def _packets(ruleset: ir.Ruleset, per_rule: int = 50) -> list[Packet]:
    """Packets aimed at each rule in turn (its own addresses, ports, marks...), so that a
    packet matching one rule but maybe not its neighbour is likely, plus the +-1 edges."""
    rules = [plain for _, _, r in ir.iter_rules(ruleset) for plain in ir.vmap_rules(r)]
    every = _pool(rules)
    addresses = {f: sorted(every.addresses[f] | {0x0A000001 if f is Family.IP else 1})
                 for f in (Family.IP, Family.IP6)}
    ports = sorted(every.ports | {0, 22, 80, MAX_PORT})
    names = sorted(every.names | {"eth0", "lo"})
    marks = sorted(every.marks | {0})
    icmp_types = sorted(every.icmp_types | {0, 3, 8})
    rnd = random.Random(1)  # fixed: a fixture failure must be reproducible
    out = []
    for rule in rules or [ir.Rule(action=ir.Accept())]:
        own = _pool([rule])
        for _ in range(per_rule):
            family = _pick(rnd, own.families, [Family.IP, Family.IP6])
            proto = _pick(rnd, own.protos - {ICMPV6 if family is Family.IP else ICMP},
                          [TCP, TCP, UDP, ICMP if family is Family.IP else ICMPV6, 47])
            has_ports = proto in (TCP, UDP)
            out.append(Packet(
                family=family, proto=proto,
                saddr=_pick(rnd, own.addresses[family], addresses[family]),
                daddr=_pick(rnd, own.addresses[family], addresses[family]),
                sport=_pick(rnd, own.ports, ports) if has_ports else None,
                dport=_pick(rnd, own.ports, ports) if has_ports else None,
                iif=_pick(rnd, own.names, names), oif=_pick(rnd, own.names, names),
                ct_state=rnd.choice(list(CtState)), tcp_flags=rnd.choice(_FLAGS),
                icmp_type=_pick(rnd, own.icmp_types, icmp_types) if proto in (ICMP, ICMPV6)
                else None,
                mark=_pick(rnd, own.marks, marks), under_limit=rnd.random() < 0.8))
    return out


def _same_outcomes(case: Case, before: ir.Ruleset, after: ir.Ruleset) -> None:
    for sample in _packets(before):
        # Each packet to this host (INPUT), through it (FORWARD) and from it (OUTPUT).
        to_me = Host(local=frozenset({(sample.family, sample.daddr)}))
        for packet, host in ((sample, to_me), (sample, Host()),
                             (replace(sample, path=PacketPath.LOCAL), Host())):
            want, got = evaluate(before, packet, host), evaluate(after, packet, host)
            assert got == want, (
                f"{case}: the pass changed the outcome of {packet}\n"
                f"  before: {want.verdict} via {[str(s) for s in want.trace]}\n"
                f"  after:  {got.verdict} via {[str(s) for s in got.trace]}")
