"""rulec beside its peers, ferm and Aerleon, on one generated enterprise allow-list: compile
time and peak memory as whole processes, output size, and what rulec's nft output costs the
kernel against a set-based ideal of the same policy.

    python benchmarks/peers.py [--sizes 1000,10000] [--repeat 5] [--comments both|on|off]
    python benchmarks/peers.py --sizes 100000 --repeat 1     # 100k: minutes per compile

The policy is `enterprise_policy.generate(terms)` (issue 10's shape), written by
`enterprise_policy.to_rulec` and by `peer_policies` as ferm input, as Aerleon policies and as
the ideal nft script; each writer expresses the same first-match policy, with one comment per
term when comments are on (see peer_policies' docstring for the two differences Aerleon
imposes).

Peers. ferm comes from Debian: if it is missing and this runs as root, the script pre-seeds
debconf `ferm/enable=false` (so the package never enables its boot-time service, which would
load /etc/ferm/ferm.conf into this host) and runs `apt-get install ferm`. ferm runs as
`ferm --remote FILE`, which per ferm(1) implies --noexec and --lines: it prints an
iptables-restore file and executes nothing; as root every compile also runs inside a throwaway
network namespace, so even a ferm that did execute could not touch this host's rules. Aerleon
comes from PyPI, into its own venv under ~/.cache/rulec-peers/ (--aerleon-venv), never the
project's; it is timed as `aclgen --policy_file ...` with its speedway (iptables-restore) and
nftables generators. A peer that cannot be had is skipped, and the script says why
(--no-install: use only what is already there).

Timing. Every compile is a whole process (fork to exit, wall time) and its peak memory is the
process's ru_maxrss as GNU time (/usr/bin/time) reports it (see `run` for why not our
own wait4). Within each of --repeat rounds the tools run one after another,
in an order rotated every round, so a noisy neighbour spreads over all of them; tables show
the median and min–max. rulec is `<rulec> compile FILE -t iptables|nft -o OUT` with the rulec
installed in this worktree's .venv (--rulec to change); `rulec -O0` runs once, untimed, for its
rule count. Compiles that exceed --timeout are shown as "timeout".

Output. iptables rules are `-A` lines of each restore file (Aerleon also as "filtering": its
rules minus the comment-only rule and the jump it adds per term); every iptables file is checked
with `iptables-restore --test` in a namespace. "named" counts the terms whose name appears in a
comment of the nft output (rulec, Aerleon, ideal), of all terms.

Kernel (root and nft; --no-kernel skips). rulec's nft output, the ideal and Aerleon's nft
output (up to --aerleon-load-max terms: nft 1.0.6 loads its one-chain-per-term file in ~20 s at
10k and super-linearly more beyond) are each loaded with `nft -f` into a fresh network namespace
(--kernel-repeat times, median); `nft -j list ruleset` then gives rules, chains, named sets,
anonymous sets (the set literals inside rule expressions) and set elements (named and
anonymous). The ideal is `peer_policies.build_ideal`: a ct state rule, a deny-set rule when a
deny needs one, and one lookup in `ip saddr . ip daddr . meta l4proto . th dport` (a
four-field concatenated interval set, which nft 1.0.6 loads on this kernel), its elements
commented with their terms; it is checked against term-by-term first match on probe packets
before it is used.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import peer_policies as peers  # noqa: E402
from enterprise_policy import Policy, generate, to_rulec  # noqa: E402

AERLEON_VERSION = "1.18.0"
COLUMNS = ("rulec-ipt", "rulec-nft", "ferm-ipt", "aerleon-ipt", "aerleon-nft")
LABELS = {"rulec-ipt": "rulec ipt", "rulec-nft": "rulec nft", "ferm-ipt": "ferm ipt",
          "aerleon-ipt": "Aerleon ipt", "aerleon-nft": "Aerleon nft"}


# ------------------------------------------------------------------------------ processes


@dataclass
class Run:
    seconds: float
    maxrss_mib: float
    ok: bool
    why: str = ""  # "timeout", or the end of stderr when the process failed


GNU_TIME = "/usr/bin/time"


def run(argv: list[str], stdout: Path | None = None, timeout: float = 1800) -> Run:
    """One whole process: wall time fork to exit, and its peak RSS.

    The peak comes from GNU time (`%M`, the ru_maxrss of the process it forks), not from our
    own wait4: Python starts children with vfork, and Linux carries the parent's high-water
    RSS into the child's ru_maxrss at exec, so wait4 would report this benchmark's own peak
    for every small child. Without /usr/bin/time, wait4's figure is shown, marked ≤."""
    killed = threading.Event()
    with open(stdout or os.devnull, "wb") as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(prefix="rulec-peers-rss-") as rss:
        timed = [GNU_TIME, "-f", "%M", "-o", rss.name, *argv] if os.path.exists(GNU_TIME) \
            else argv
        start = time.perf_counter()
        child = subprocess.Popen(timed, stdout=out, stderr=err, stdin=subprocess.DEVNULL)

        def kill() -> None:
            killed.set()
            child.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        timer.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
        reported = Path(rss.name).read_text().split()
    peak = float(reported[-1]) / 1024 if timed is not argv and reported \
        and reported[-1].isdigit() else -usage.ru_maxrss / 1024  # negative: at most this
    if killed.is_set():
        return Run(seconds, peak, False, "timeout")
    return Run(seconds, peak, child.returncode == 0, " | ".join(tail))


@contextmanager
def netns(tag: str) -> Iterator[str]:
    """A fresh, uniquely named network namespace, deleted however the block ends."""
    netns.count += 1  # type: ignore[attr-defined]
    name = f"rulec-peers-{os.getpid()}-{tag}-{netns.count}"  # type: ignore[attr-defined]
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


netns.count = 0  # type: ignore[attr-defined]


def first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unavailable ({error})"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) \
        else "?"


# ------------------------------------------------------------------------------ peers


def find_ferm(install: bool) -> tuple[str | None, str]:
    found = shutil.which("ferm")
    if found:
        return found, f"ferm: using {found} ({first_line([found, '--version'])})"
    if not install:
        return None, "ferm: skipped, not installed (--no-install)"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "ferm: skipped, not installed and installing needs root and apt-get"
    # The package enables a boot-time service that loads /etc/ferm/ferm.conf into this host
    # unless debconf says no: say no first.
    subprocess.run(["debconf-set-selections"], input="ferm ferm/enable boolean false\n",
                   text=True, check=False)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in (["apt-get", "install", "-y", "-q", "ferm"],
                    ["sh", "-c", "apt-get update -q && apt-get install -y -q ferm"]):
        done = subprocess.run(attempt, capture_output=True, text=True, env=env, check=False)
        found = shutil.which("ferm")
        if done.returncode == 0 and found:
            return found, f"ferm: installed with apt-get ({first_line([found, '--version'])})"
    return None, f"ferm: skipped, apt-get install failed: {done.stderr.strip()[-200:]}"


def find_aerleon(install: bool, venv: Path) -> tuple[str | None, str]:
    aclgen = venv / "bin" / "aclgen"
    if aclgen.exists():
        return str(aclgen), f"Aerleon: using {aclgen} ({aerleon_version(venv)})"
    if not install:
        return None, f"Aerleon: skipped, no {aclgen} (--no-install)"
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(venv / "bin" / "pip"), "install", "-q", f"aerleon=={AERLEON_VERSION}"]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return None, f"Aerleon: skipped, `{' '.join(step)}` failed: {done.stderr[-200:]}"
    return str(aclgen), f"Aerleon: installed into {venv} ({aerleon_version(venv)})"


def aerleon_version(venv: Path) -> str:
    return "aerleon " + first_line([str(venv / "bin" / "python"), "-c",
                                    "import importlib.metadata as m; print(m.version('aerleon'))"])


# ------------------------------------------------------------------------------ one size


@dataclass
class Size:
    """Everything measured for one (comment mode, size)."""

    terms: int
    runs: dict[str, list[Run]] = field(default_factory=dict)
    ipt_rules: dict[str, str] = field(default_factory=dict)
    restore_ok: dict[str, str] = field(default_factory=dict)
    named: dict[str, str] = field(default_factory=dict)
    kernel: dict[str, dict[str, object]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def write_inputs(policy: Policy, comments: bool, work: Path, tools: dict[str, str]) -> None:
    (work / "policy.rules").write_text(to_rulec(policy, comments))
    if "ferm" in tools:
        (work / "policy.ferm").write_text(peers.to_ferm(policy, comments))
    if "aerleon" in tools:
        for name, text in peers.aerleon_definitions(policy).items():
            (work / "aerleon" / name).parent.mkdir(parents=True, exist_ok=True)
            (work / "aerleon" / name).write_text(text)
        (work / "aerleon" / "pol").mkdir(exist_ok=True)
        for stem, target in (("ipt", "speedway"), ("nft", "nftables")):
            (work / "aerleon" / "pol" / f"{stem}.pol").write_text(
                peers.to_aerleon(policy, target, comments))


def commands(work: Path, rulec: str, tools: dict[str, str]
             ) -> dict[str, tuple[list[str], Path | None, Path]]:
    """column -> (argv, file its stdout goes to, the output it writes)."""
    out: dict[str, tuple[list[str], Path | None, Path]] = {}
    for target, column in (("iptables", "rulec-ipt"), ("nft", "rulec-nft")):
        result = work / f"rulec.{target}"
        out[column] = ([rulec, "compile", str(work / "policy.rules"), "-t", target,
                        "-o", str(result)], None, result)
    if "ferm" in tools:
        out["ferm-ipt"] = ([tools["ferm"], "--remote", str(work / "policy.ferm")],
                           work / "ferm.ipt", work / "ferm.ipt")
    if "aerleon" in tools:
        base = work / "aerleon"
        for stem in ("ipt", "nft"):
            out[f"aerleon-{stem}"] = (
                [tools["aerleon"], f"--base_directory={base / 'pol'}",
                 f"--definitions_directory={base / 'def'}",
                 f"--output_directory={base / ('out-' + stem)}",
                 f"--policy_file={base / 'pol' / (stem + '.pol')}"],
                None, base / f"out-{stem}" / f"{stem}.{stem}")
    return out


def restore_rules(path: Path) -> tuple[int, int]:
    """(-A lines, of which filtering: not Aerleon's comment-only rules or jumps to its
    per-term chains)."""
    rules = [line for line in path.read_text().splitlines() if line.startswith("-A ")]
    filtering = [r for r in rules
                 if not re.fullmatch(r"-A \S+ -m comment --comment \S+", r)
                 and not re.fullmatch(r"-A INPUT -j I_\S+", r)]
    return len(rules), len(filtering)


def terms_named(path: Path, policy: Policy) -> str:
    text = path.read_text()
    words = {w for c in re.findall(r'comment "([^"]*)"', text) for w in re.findall(r"[\w-]+", c)}
    words |= {w.split("-")[0] for w in words}
    named = sum(t.name in words for t in policy.terms)
    return f"{named}/{len(policy.terms)}"


def nft_counts(ruleset: dict[str, object]) -> dict[str, int]:
    counts = {"rules": 0, "chains": 0, "named sets": 0, "anon sets": 0, "elements": 0}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "set" and isinstance(value, list):
                    counts["anon sets"] += 1
                    counts["elements"] += len(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for obj in ruleset["nftables"]:  # type: ignore[attr-defined]
        if "rule" in obj:
            counts["rules"] += 1
            walk(obj["rule"].get("expr", []))
        elif "chain" in obj:
            counts["chains"] += 1
        elif "set" in obj or "map" in obj:
            counts["named sets"] += 1
            counts["elements"] += len((obj.get("set") or obj["map"]).get("elem", []))
    return counts


def load(path: Path, repeat: int, timeout: float) -> dict[str, object]:
    """Median `nft -f` seconds over fresh namespaces, and the kernel's objects."""
    times: list[float] = []
    counts: dict[str, object] = {}
    for k in range(repeat):
        with netns("load") as ns:
            start = time.perf_counter()
            try:
                done = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", str(path)],
                                      capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                return {"error": f"nft -f over {timeout:.0f} s"}
            if done.returncode != 0:
                return {"error": "nft -f failed: " + done.stderr.strip()[:200]}
            times.append(time.perf_counter() - start)
            if k == repeat - 1:
                listed = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list",
                                         "ruleset"], capture_output=True, text=True, check=True)
                counts = dict(nft_counts(json.loads(listed.stdout)))
    return {"load s": statistics.median(times), **counts}


def measure(policy: Policy, comments: bool, args: argparse.Namespace, tools: dict[str, str],
            kernel: bool, work: Path) -> Size:
    size = Size(len(policy.terms))
    write_inputs(policy, comments, work, tools)
    jobs = commands(work, args.rulec, tools)
    columns = [c for c in COLUMNS if c in jobs]
    size.runs = {c: [] for c in columns}
    for r in range(args.repeat):
        order = columns[r % len(columns):] + columns[:r % len(columns)]
        for column in order:
            argv, stdout, _ = jobs[column]
            if kernel:  # a throwaway namespace, so no compile can touch this host's rules
                with netns("compile") as ns:
                    size.runs[column].append(
                        run(["ip", "netns", "exec", ns, *argv], stdout, args.timeout))
            else:
                size.runs[column].append(run(argv, stdout, args.timeout))
            if not size.runs[column][-1].ok:
                size.notes.append(f"{column}: {size.runs[column][-1].why}")
    o0 = work / "rulec-O0.iptables"
    zero = run([args.rulec, "compile", str(work / "policy.rules"), "-t", "iptables", "-O0",
                "-o", str(o0)], timeout=args.timeout)
    outputs = {c: jobs[c][2] for c in columns if size.runs[c] and size.runs[c][-1].ok}
    if zero.ok:
        outputs["rulec-O0-ipt"] = o0
    for column, path in outputs.items():
        if column.endswith("ipt"):
            total, filtering = restore_rules(path)
            size.ipt_rules[column] = str(total) if total == filtering \
                else f"{total} ({filtering} filtering)"
            if kernel:
                with netns("test") as ns, open(path, "rb") as text:
                    done = subprocess.run(["ip", "netns", "exec", ns, "iptables-restore",
                                           "--test"], stdin=text, capture_output=True)
                size.restore_ok[column] = "ok" if done.returncode == 0 else "refused"
        else:
            size.named[column] = terms_named(path, policy)
    ideal = peers.build_ideal(policy)
    probes = peers.check_ideal(policy, ideal, probes=max(20, min(500, 2_000_000 // size.terms)))
    ideal_path = work / "ideal.nft"
    ideal_path.write_text(peers.ideal_nft(ideal, comments))
    size.named["ideal"] = terms_named(ideal_path, policy)
    size.notes.append(f"ideal: agrees with first match on {probes} probes; "
                      f"{len(ideal.deny)} deny-set hosts, {len(ideal.allow)} allow elements; "
                      f"{len(ideal.silent)} deny terms only repeat the default drop and "
                      "leave no element (the ideal cannot name them)")
    if kernel:
        size.kernel["rulec nft"] = (load(outputs["rulec-nft"], args.kernel_repeat, args.timeout)
                                    if "rulec-nft" in outputs else {"error": "no output"})
        size.kernel["ideal"] = load(ideal_path, args.kernel_repeat, args.timeout)
        if "aerleon-nft" in outputs:
            size.kernel["Aerleon nft"] = (
                load(outputs["aerleon-nft"], args.kernel_repeat, args.timeout)
                if size.terms <= args.aerleon_load_max
                else {"error": f"not loaded: over --aerleon-load-max {args.aerleon_load_max}"})
    return size


# ------------------------------------------------------------------------------ tables


def cell(runs: list[Run]) -> str:
    if not runs:
        return "—"
    ok = [r.seconds for r in runs if r.ok]
    if not ok:
        return runs[-1].why if runs[-1].why == "timeout" else "fails"
    return f"{statistics.median(ok):.2f} ({min(ok):.2f}–{max(ok):.2f})"


def mib(runs: list[Run]) -> str:
    peak = max(abs(r.maxrss_mib) for r in runs)
    bound = "≤" if any(r.maxrss_mib < 0 for r in runs) else ""
    return f"{bound}{peak:.0f}"


def median(runs: list[Run]) -> float | None:
    ok = [r.seconds for r in runs if r.ok]
    return statistics.median(ok) if ok else None


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "—"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def report(mode: str, sizes: list[Size]) -> str:
    columns = [c for c in COLUMNS if any(s.runs.get(c) for s in sizes)]
    out = [f"## comments {mode}", "", "Compile, whole process, seconds: median (min–max)", ""]
    rows = []
    for s in sizes:
        m = {c: median(s.runs.get(c, [])) for c in COLUMNS}
        rows.append([f"{s.terms:,}", *(cell(s.runs[c]) for c in columns),
                     ratio(m["rulec-ipt"], m["ferm-ipt"]), ratio(m["rulec-nft"], m["ferm-ipt"]),
                     ratio(m["rulec-nft"], m["aerleon-nft"])])
    out.append(table(["terms", *(LABELS[c] for c in columns), "rulec ipt / ferm",
                      "rulec nft / ferm", "rulec nft / Aerleon nft"], rows))
    if len(sizes) > 1:
        growth = []
        for prev, s in itertools.pairwise(sizes):
            growth.append([f"{prev.terms:,} → {s.terms:,}", *(
                ratio(median(s.runs[c]), median(prev.runs[c])) for c in columns)])
        out += ["", "Growth of the median time", "",
                table(["terms", *(LABELS[c] for c in columns)], growth)]
    out += ["", "Peak memory (ru_maxrss), MiB, largest of the runs", ""]
    out.append(table(["terms", *(LABELS[c] for c in columns)], [
        [f"{s.terms:,}", *(mib(s.runs[c]) for c in columns)]
        for s in sizes]))
    ipt = [c for c in ("rulec-ipt", "rulec-O0-ipt", "ferm-ipt", "aerleon-ipt")
           if any(c in s.ipt_rules for s in sizes)]
    nft = [c for c in ("rulec-nft", "aerleon-nft", "ideal") if any(c in s.named for s in sizes)]
    out += ["", "Output: iptables `-A` rules (iptables-restore --test), terms named in nft "
            "comments", ""]
    out.append(table(["terms", *(f"{c} rules" for c in ipt), *(f"{c} named" for c in nft)], [
        [f"{s.terms:,}", *(s.ipt_rules.get(c, "—") + (f" ({s.restore_ok[c]})"
                                                       if c in s.restore_ok else "")
                           for c in ipt), *(s.named.get(c, "—") for c in nft)]
        for s in sizes]))
    if any(s.kernel for s in sizes):
        keys = ("load s", "rules", "chains", "named sets", "anon sets", "elements")
        rows = []
        for s in sizes:
            for tool, got in s.kernel.items():
                if "error" in got:
                    rows.append([f"{s.terms:,}", tool, str(got["error"]), *[""] * 5])
                else:
                    rows.append([f"{s.terms:,}", tool, f"{got['load s']:.3f}",
                                 *(f"{got[k]:,}" for k in keys[1:])])
        out += ["", "Kernel: `nft -f` into a fresh namespace (median), objects from "
                "`nft -j list ruleset`", "", table(["terms", "ruleset", *keys], rows)]
    notes = [f"- {s.terms:,}: {n}" for s in sizes for n in s.notes]
    if notes:
        out += ["", "Notes:", *notes]
    return "\n".join(out)


def machine(tools: dict[str, str], rulec: str, kernel_note: str, peer_notes: list[str]) -> str:
    head = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"],
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "rulec"],
                           capture_output=True, text=True).stdout.strip()
    lines = [f"nproc {os.cpu_count()}, load {os.getloadavg()[0]:.2f}, kernel "
             f"{platform.release()}, Python {platform.python_version()}",
             f"rulec: {rulec} at {head}{' (rulec/ modified)' if dirty else ''}",
             f"nft: {first_line(['nft', '--version'])}; "
             f"iptables: {first_line(['iptables', '--version'])}",
             *peer_notes, kernel_note]
    return "\n".join(f"- {line}" for line in lines)


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--sizes", default="1000,10000",
                         help="comma-separated term counts (100000 works; minutes per compile)")
    options.add_argument("--repeat", type=int, default=5)
    options.add_argument("--kernel-repeat", type=int, default=3)
    options.add_argument("--comments", choices=("both", "on", "off"), default="both")
    options.add_argument("--seed", type=int, default=1)
    options.add_argument("--rulec", default=str(ROOT / ".venv" / "bin" / "rulec"))
    options.add_argument("--no-install", action="store_true",
                         help="use only the peers already installed")
    options.add_argument("--aerleon-venv", type=Path, default=Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rulec-peers"
        / f"aerleon-{AERLEON_VERSION}")
    options.add_argument("--no-kernel", action="store_true")
    options.add_argument("--aerleon-load-max", type=int, default=10_000)
    options.add_argument("--timeout", type=float, default=1800,
                         help="seconds before a compile or a load counts as a timeout")
    options.add_argument("--keep", type=Path, help="write the inputs and outputs here")
    args = options.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    tools: dict[str, str] = {}
    peer_notes = []
    for key, (found, note) in (("ferm", find_ferm(not args.no_install)),
                               ("aerleon", find_aerleon(not args.no_install, args.aerleon_venv))):
        peer_notes.append(note)
        if found:
            tools[key] = found
    if args.no_kernel:
        kernel, kernel_note = False, "kernel: skipped (--no-kernel)"
    elif os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"):
        kernel, kernel_note = False, "kernel: skipped, needs root, nft and ip"
    else:
        kernel, kernel_note = True, "kernel: loads into fresh network namespaces"
    print("# rulec vs ferm vs Aerleon: enterprise allow-list (benchmarks/peers.py)\n")
    print(machine(tools, args.rulec, kernel_note, peer_notes), flush=True)

    tricky = peers.tricky_policy()
    peers.check_ideal(tricky, peers.build_ideal(tricky), probes=3000)
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.comments]
    with tempfile.TemporaryDirectory(prefix="rulec-peers-") as scratch:
        base = args.keep or Path(scratch)
        for comments in modes:
            results = []
            for terms in sizes:
                work = base / f"{'comments' if comments else 'plain'}-{terms}"
                work.mkdir(parents=True, exist_ok=True)
                results.append(measure(generate(terms, args.seed), comments, args, tools,
                                       kernel, work))
            print("\n" + report("on" if comments else "off", results), flush=True)
    print(f"\n- load at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
