"""What the optimiser buys: rules before and after the passes, kernel rules, compile time, nft
load time, what `nft -o` achieves on rulec's unoptimised output, and rules per packet.

    python benchmarks/optimise.py [--repeat 3] [--no-kernel] [--probes 400]

Policies: (a) a 200-rule sidecar-style mesh policy where most rules differ only in port, (b) a
generated 10k-rule policy whose rules share 50 source address groups, (c) every
examples/*.rules, (d) 1k allow-list terms on distinct (source, port) pairs, (e) a mesh of
200 flows that differ in source, destination and port at once, a comment each. The passes are
DEFAULT_PIPELINE as registered when this runs. Everything is measured in one run (so ratios are
comparable on a shared machine); times are medians of --repeat runs. Kernel columns load into
fresh throwaway namespaces (needs root and nft).

Columns:
  IR in/out        rules in the IR before / after the pipeline (nft target's pipeline)
  ipt O0/opt       iptables (IPv4) rules a restore file loads, -O0 / optimised
  nft O0/opt       nft rules loaded, -O0 / optimised
  nft -o           rules left after `nft -o -f` of the -O0 nft output (read back with
                   `nft list ruleset`), or "fails" when nft refuses to load its own merge
  compile O0/opt   parse + pipeline + nft emit, seconds; and the ratio opt / O0
  nft-o s          seconds `nft -o -f` takes to optimise and load the -O0 output
  load O0/opt s    seconds `nft -f` takes to load rulec's -O0 / optimised output
  per pkt O0/opt   rules the reference evaluator tests per packet, mean over probes aimed
                   at the policy's own addresses and ports (and misses)
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rulec import api  # noqa: E402
from rulec.backends.base import Artifact  # noqa: E402
from rulec.backends.stats import kernel_rule_counts  # noqa: E402
from rulec.diagnostics import RulecError  # noqa: E402
from rulec.ir import nodes as ir  # noqa: E402
from rulec.ir.evaluate import Host, Packet, evaluate  # noqa: E402
from rulec.ir.evaluate import Path as PacketPath  # noqa: E402
from rulec.ir.values import MAX_PORT, TCP, UDP, Family  # noqa: E402
from rulec.passes import DEFAULT_PIPELINE  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from compile_scaling import median_time  # noqa: E402

# ------------------------------------------------------------------------------ policies


def mesh_policy(rules: int = 200) -> str:
    """A sidecar-style inbound policy: for each of 10 services, its peers' ranges on each of
    its ports, one rule per (peer, port) as a mesh generator writes them; each service starts
    with a deny for a quarantined peer, which overlaps its later rules (first-match traps)."""
    rnd = random.Random(7)
    services = [f"10.20.{s}.10" for s in range(10)]
    peers = [f"10.{30 + p}.0.0/16" for p in range(4)]
    out = ["table ip filter {", "  chain FORWARD policy drop {",
           "    accept ct state established,related"]
    count = 0
    while count < rules:
        for service in services:
            out.append(f"    drop tcp from 10.31.7.0/24 to {service}")
            ports = sorted(rnd.sample(range(8000, 8100), 5))
            for peer in peers:
                for port in ports:
                    out.append(f"    accept tcp from {peer} to {service} dport {port}")
            count += 1 + len(peers) * len(ports)
            if count >= rules:
                break
    out += ["    reject", "  }", "}"]
    return "\n".join(out) + "\n"


def mesh3_policy(rules: int = 200) -> str:
    """A mesh policy whose rules differ in source, destination and port at once: each of 40
    (client, server) pairs of distinct hosts on its own port, as a service-mesh generator
    writes them one flow per rule with a comment; a quarantine deny in the middle overlaps
    some flows. `nft -o` merges these into three-field concatenations."""
    out = ["table ip filter {", "  chain FORWARD policy drop {",
           "    accept ct state established,related"]
    for i in range(rules):
        if i == rules // 2:
            out.append('    drop from 10.40.3.0/24 comment "quarantine"')
        client, server = f"10.40.{i % 7}.{10 + i}", f"10.50.{i % 5}.{20 + i % 50}"
        out.append(f"    accept tcp from {client} to {server} dport {2000 + i} "
                   f'comment "flow {i}"')
    out += ["  }", "}"]
    return "\n".join(out) + "\n"


def grouped_policy(rules: int = 10_000) -> str:
    """Terms that each allow one of 50 shared source groups (4 prefixes each) to one host on
    one of 8 ports; every tenth term drops instead. Hosts are unique, so terms never shadow
    each other, but many differ in one field."""
    groups = [f"define g{g} = {{ " + ", ".join(
        f"203.0.{(4 * g + k) % 256}.{(g // 64) * 64}/26" for k in range(4)) + " }"
        for g in range(50)]
    ports = (22, 80, 443, 3306, 5432, 6379, 8080, 9090)
    out = [*groups, "table ip filter {", "  chain FORWARD policy drop {",
           "    accept ct state established,related"]
    for i in range(rules):
        n = 0xC6120000 + i  # 198.18.0.0/15
        host = f"{n >> 24 & 255}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        action = "drop" if i % 10 == 0 else "accept"
        out.append(f"    {action} tcp from $g{i % 50} to {host} dport {ports[i % 8]}")
    out += ["  }", "}"]
    return "\n".join(out) + "\n"


def pairs_policy(rules: int = 1000) -> str:
    """Terms that each allow (every seventh: drop) one source host to one port, no two on
    the same pair, as an allow-list generator writes them: nothing differs in one field
    only, so only a map on both fields (`nft -o`'s concatenation) shrinks it; a /24 deny in
    the middle overlaps some terms."""
    out = ["table ip filter {", "  chain FORWARD policy drop {",
           "    accept ct state established,related"]
    for i in range(rules):
        if i == rules // 2:
            out.append("    drop tcp from 198.19.3.0/24")
        n = 0xC6130000 + i * 3  # 198.19.0.0/16
        host = f"{n >> 24 & 255}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        action = "drop" if i % 7 == 0 else "accept"
        out.append(f"    {action} tcp from {host} dport {1024 + i % 97}")
    out += ["  }", "}"]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ measuring


def total_rules(artifact: Artifact | None) -> int | None:
    return None if artifact is None else sum(kernel_rule_counts(artifact).values())


def compile_or_none(ruleset: ir.Ruleset, target: str, passes: tuple[str, ...] | None
                    ) -> api.CompileResult | None:
    try:
        return api.compile_ruleset(ruleset, target, passes=passes)
    except RulecError:
        return None  # the target refuses this policy (e.g. DOCKER-USER in nft)


def probes(ruleset: ir.Ruleset, count: int) -> list[tuple[Packet, Host]]:
    """Packets aimed at random rules (an edge of their addresses, their first port), a third
    of them one past it."""
    rnd = random.Random(3)
    rules = [r for _, _, r in ir.iter_rules(ruleset)]
    out = []
    for _ in range(count):
        m = rnd.choice(rules).match if rules else ir.ANY
        family = Family.IP6 if m.family is Family.IP6 else Family.IP

        def pick(value: object, default: int, family: Family = family) -> int:
            prefixes = getattr(value, "prefixes", ())
            mine = [p for p in prefixes if p.family is family]
            if not mine:
                return default
            p = rnd.choice(mine)
            return rnd.choice((p.first, p.last, min(p.last + 1, (1 << family.bits) - 1)))

        proto = m.proto.number if m.proto is not None and not m.proto.negated else TCP
        ports = proto in (TCP, UDP)
        low = m.dport.ranges[0][0] if m.dport is not None and m.dport.ranges else 80
        dport = min(MAX_PORT, low + rnd.choice((0, 0, 1)))
        packet = Packet(family=family, proto=proto,
                        saddr=pick(m.saddr, rnd.getrandbits(family.bits)),
                        daddr=pick(m.daddr, rnd.getrandbits(family.bits)),
                        sport=40000 if ports else None, dport=dport if ports else None,
                        path=PacketPath.INCOMING, iif="eth0", oif="eth1")
        # Half to this host (INPUT), half through it (FORWARD).
        local = frozenset({(family, packet.daddr)}) if rnd.random() < 0.5 else frozenset()
        out.append((packet, Host(local=local)))
    return out


def rules_per_packet(ruleset: ir.Ruleset, sample: list[tuple[Packet, Host]]) -> float:
    return statistics.mean(evaluate(ruleset, p, h).rules_evaluated for p, h in sample)


@dataclass
class Row:
    name: str
    ir_in: int
    ir_out: int
    ipt: tuple[int | None, int | None]
    nft: tuple[int | None, int | None]
    nft_o_rules: str = "-"
    compile_s: tuple[float, float] = (0.0, 0.0)
    nft_o_s: str = "-"
    load_s: tuple[str, str] = ("-", "-")
    per_packet: tuple[float, float] = (0.0, 0.0)


class Kernel:
    """Loads nft scripts into fresh namespaces, timing the `nft` process."""

    def __init__(self) -> None:
        from rulec.kernel import available

        self.reason = available("nft", "cli")

    def load(self, text: str, *, optimise: bool, repeat: int) -> tuple[float, int | None]:
        """Median seconds of `nft [-o] -f` into a fresh namespace, and the rules it then holds
        (None if the load failed)."""
        from rulec.kernel import namespace

        times, rules = [], None
        with tempfile.NamedTemporaryFile("w", suffix=".nft", prefix="rulec-bench-") as f:
            f.write(text)
            f.flush()
            for _ in range(repeat):
                with namespace("bench") as ns:
                    argv = ["nft", *(["-o"] if optimise else []), "-f", f.name]
                    start = time.perf_counter()
                    done = ns.run(argv, check=False, timeout=300)
                    times.append(time.perf_counter() - start)
                    if done.returncode != 0:
                        return statistics.median(times), None
                    listing = ns.run(["nft", "list", "ruleset"], timeout=300).stdout
                    rules = total_rules(Artifact(target="nft", text=listing, load_command=()))
        return statistics.median(times), rules


def measure(name: str, text: str, args: argparse.Namespace, kernel: Kernel | None) -> Row:
    ruleset = api.parse_text(text, f"{name}.rules")
    plain = {t: compile_or_none(ruleset, t, ()) for t in ("iptables", "nft")}
    opt = {t: compile_or_none(ruleset, t, None) for t in ("iptables", "nft")}
    nft_opt = opt["nft"] or opt["iptables"]
    optimised_ir = nft_opt.ruleset if nft_opt is not None else ruleset
    row = Row(name, ir.rule_count(ruleset), ir.rule_count(optimised_ir),
              tuple(total_rules(c.artifact if c else None)  # type: ignore[arg-type]
                    for c in (plain["iptables"], opt["iptables"])),
              tuple(total_rules(c.artifact if c else None)  # type: ignore[arg-type]
                    for c in (plain["nft"], opt["nft"])))
    target = "nft" if plain["nft"] is not None else "iptables"
    row.compile_s = tuple(  # type: ignore[assignment]
        median_time(lambda p=passes: api.compile_ruleset(
            api.parse_text(text, f"{name}.rules"), target, passes=p), args.repeat)
        for passes in ((), None))
    sample = probes(ruleset, args.probes)
    row.per_packet = (rules_per_packet(ruleset, sample), rules_per_packet(optimised_ir, sample))
    if kernel is not None and kernel.reason is None and plain["nft"] and opt["nft"]:
        seconds, rules = kernel.load(plain["nft"].artifact.text, optimise=True,
                                     repeat=args.repeat)
        row.nft_o_s = f"{seconds:.3f}"
        row.nft_o_rules = "fails" if rules is None else str(rules)
        loads = []
        for result in (plain["nft"], opt["nft"]):
            seconds, rules = kernel.load(result.artifact.text, optimise=False,
                                         repeat=args.repeat)
            loads.append("fails" if rules is None else f"{seconds:.3f}")
        row.load_s = (loads[0], loads[1])
    return row


def _cell(value: object) -> str:
    return "n/a" if value is None else str(value)


def print_table(rows: list[Row]) -> None:
    header = (f"{'policy':<22}{'IR in':>7}{'IR out':>7}{'ipt O0':>8}{'ipt opt':>8}"
              f"{'nft O0':>8}{'nft opt':>8}{'nft -o':>8}{'comp O0':>9}{'comp opt':>9}"
              f"{'ratio':>6}{'nft-o s':>9}{'load O0':>9}{'load opt':>9}{'pkt O0':>8}"
              f"{'pkt opt':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        ratio = r.compile_s[1] / r.compile_s[0] if r.compile_s[0] else float("nan")
        print(f"{r.name:<22}{r.ir_in:>7}{r.ir_out:>7}{_cell(r.ipt[0]):>8}{_cell(r.ipt[1]):>8}"
              f"{_cell(r.nft[0]):>8}{_cell(r.nft[1]):>8}{r.nft_o_rules:>8}"
              f"{r.compile_s[0]:>9.3f}{r.compile_s[1]:>9.3f}{ratio:>6.2f}{r.nft_o_s:>9}"
              f"{r.load_s[0]:>9}{r.load_s[1]:>9}{r.per_packet[0]:>8.1f}{r.per_packet[1]:>8.1f}")


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--repeat", type=int, default=3, help="runs per timing (median)")
    options.add_argument("--probes", type=int, default=400, help="packets for rules/packet")
    options.add_argument("--no-kernel", action="store_true", help="skip the nft loads")
    options.add_argument("--size", type=int, default=10_000, help="rules in policy (b)")
    args = options.parse_args()
    kernel = None if args.no_kernel else Kernel()
    if kernel is not None and kernel.reason is not None:
        print(f"kernel columns skipped: {kernel.reason}", file=sys.stderr)
    policies = [("a: mesh-200", mesh_policy()), (f"b: groups-{args.size // 1000}k",
                                                 grouped_policy(args.size)),
                ("d: pairs-1k", pairs_policy()), ("e: mesh3-200", mesh3_policy())]
    policies += [(f"c: {p.stem}", p.read_text(encoding="utf-8"))
                 for p in sorted((ROOT / "examples").glob("*.rules"))]
    print(f"pipeline: {', '.join(DEFAULT_PIPELINE)}")
    print(f"times: median of {args.repeat} runs, seconds; n/a: the target refuses the policy")
    rows = [measure(name, text, args, kernel) for name, text in policies]
    print_table(rows)


if __name__ == "__main__":
    main()
