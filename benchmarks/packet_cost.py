"""Per-packet cost in the kernel: TCP connection rate through a router holding a 10k-rule policy,
unoptimised (-O0) against optimised, for the iptables and the nft output.

    sudo python benchmarks/packet_cost.py [--rules 10000] [--seconds 3] [--repeat 3]

The policy is benchmarks/optimise.py's (b): 10k terms that each allow one of 50 shared source
groups to one host on one port, then one rule that accepts the benchmark client. Every SYN
walks the whole FORWARD chain before that rule (replies take the conntrack shortcut), so the
connection rate shows what each rule costs a packet. "IR rules/SYN" is what the reference
evaluator tests on the optimised IR; iptables then writes one kernel rule per prefix of a
merged set, so its kernel walk does not shrink, unless --ipset makes each set one hash lookup
("default+ipset"; needs the ipset tool). client -- router -- server namespaces as
in tests/kernel/probe.py; the client connects and closes in a loop for a fixed time, right
after a run through the empty router ("vs empty" is the ratio of the two, so load drift
between runs cancels out). Also
prints the evaluator's rules-per-packet for the same probe. Needs root, iproute2, iptables and
nft; prints why it cannot run otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from optimise import grouped_policy  # noqa: E402

from rulec import api  # noqa: E402
from rulec.backends.stats import kernel_rule_counts  # noqa: E402
from rulec.ir.evaluate import Packet, evaluate  # noqa: E402
from rulec.ir.evaluate import Path as Walk  # noqa: E402
from rulec.ir.nodes import Ruleset  # noqa: E402
from rulec.ir.values import TCP, Family, Prefix  # noqa: E402
from rulec.kernel import load  # noqa: E402
from rulec.kernel.validate import available  # noqa: E402
from tests.kernel.probe import PYTHON, Topology, make_topology  # noqa: E402

PORT = 5001

# Accept and close at once: the probe agent's server answers each peer, too slow to measure by.
SERVER = """
import socket, sys
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("0.0.0.0", int(sys.argv[1])))
sock.listen(512)
print("ready", flush=True)
while True:
    sock.accept()[0].close()
"""

# Connect, close, repeat, for `seconds`; print how many connections were accepted.
CLIENT = """
import socket, sys, time
dst, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
count, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    try:
        socket.create_connection((dst, port), timeout=1).close()
        count += 1
    except OSError:
        pass
print(count)
"""


def policy(rules: int, topo: Topology) -> str:
    text = grouped_policy(rules)
    last = f"    accept tcp from {topo.client4} to {topo.server4} dport {PORT}\n  }}\n}}\n"
    return text.removesuffix("  }\n}\n") + last


def rate(topo: Topology, seconds: float) -> float:
    done = topo.client.run([*PYTHON, "-c", CLIENT, topo.server4, str(PORT), str(seconds)],
                           timeout=seconds + 30)
    return int(done.stdout.strip()) / seconds


def flush(topo: Topology) -> None:
    topo.router.run(["nft", "flush", "ruleset"])
    topo.router.run(["iptables-nft", "-F"], check=False)
    topo.router.run(["ipset", "destroy"], check=False)  # the router's own sets, once unused


@contextmanager
def accept_loop(topo: Topology) -> Iterator[None]:
    proc = topo.server.popen([*PYTHON, "-c", SERVER, str(PORT)])
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()  # by its PID; it is the Python process itself (ip netns exec execs)
        proc.wait(timeout=5)


def rules_per_syn(ruleset: Ruleset, topo: Topology) -> int:
    """Rules the reference evaluator tests for the benchmark's SYN (forwarded, not local)."""
    packet = Packet(family=Family.IP, proto=TCP, saddr=Prefix.parse(topo.client4).network,
                    daddr=Prefix.parse(topo.server4).network, sport=40000, dport=PORT,
                    path=Walk.INCOMING, iif="cl0", oif="sv0")
    return evaluate(ruleset, packet).rules_evaluated


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--rules", type=int, default=10_000)
    options.add_argument("--seconds", type=float, default=3.0)
    options.add_argument("--repeat", type=int, default=3)
    args = options.parse_args()
    for target in ("iptables", "nft"):
        reason = available(target)
        if reason is not None:
            sys.exit(f"cannot measure: {reason}")
    print(f"TCP connections/s through a router holding a {args.rules:,}-rule FORWARD chain; "
          f"median of {args.repeat} runs of {args.seconds:g} s")
    print(f"{'target':<10}{'passes':<15}{'kernel rules':>13}{'IR rules/SYN':>14}{'conn/s':>9}"
          f"{'vs empty':>9}")
    with make_topology() as topo, accept_loop(topo):
        # Thousands of short connections a second leave the client's ports in TIME_WAIT; in
        # the client's own namespace, let it reuse them, or runs starve after a few seconds.
        topo.client.sysctl("net.ipv4.tcp_tw_reuse", "1")
        topo.client.sysctl("net.ipv4.ip_local_port_range", "1024 65000")
        ruleset = api.parse_text(policy(args.rules, topo), "bench.rules")
        runs = [("iptables", "-O0", (), False), ("iptables", "default", None, False),
                ("iptables", "default+ipset", None, True), ("nft", "-O0", (), False),
                ("nft", "default", None, False)]
        for target, label, passes, ipset in runs:
            if ipset and shutil.which("ipset") is None:
                print(f"{target:<10}{label:<15}skipped: `ipset` is not on PATH")
                continue
            compiled = api.compile_ruleset(ruleset, target, passes=passes, ipset=ipset)
            variant = "nft" if target == "iptables" else "cli"  # iptables-nft; nft -f
            rates, ratios = [], []
            for _ in range(args.repeat):
                # An empty router right before each loaded run: the machine's load drifts.
                flush(topo)
                empty = rate(topo, args.seconds)
                verdict = load(compiled.artifact, topo.router, variant)
                if not verdict.ok:
                    sys.exit(f"{target} {label} did not load: {verdict.message}")
                rates.append(rate(topo, args.seconds))
                ratios.append(rates[-1] / empty)
            count = sum(kernel_rule_counts(compiled.artifact).values())
            print(f"{target:<10}{label:<15}{count:>13,}"
                  f"{rules_per_syn(compiled.ruleset, topo):>14,}"
                  f"{statistics.median(rates):>9.0f}{statistics.median(ratios):>9.2f}")
        flush(topo)


if __name__ == "__main__":
    main()
