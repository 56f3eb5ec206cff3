"""The `rulec` command: a thin argparse shell over rulec.api that renders diagnostics.

Exit codes: 0 success (warnings allowed), 1 policy errors, 2 usage errors, 3 internal error.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rulec import api, output
from rulec.backends.stats import kernel_rule_counts
from rulec.diagnostics import Diagnostic, RulecError, escape, render
from rulec.ir.nodes import Ruleset
from rulec.ir.values import Family
from rulec.passes import DEFAULT_PIPELINE, PASSES
from rulec.validation import ValidationError

EXIT_OK, EXIT_POLICY, EXIT_USAGE, EXIT_BUG = 0, 1, 2, 3
EXIT_DIFFERENT = 1  # rulec diff: the policies differ
EXIT_NOT_APPLIED = 4  # rulec apply: the load failed; the host holds what it held before
EXIT_REVERTED = 5  # rulec apply --confirm: not confirmed in time; the old rules are back
TTY_CONFIRM = 30.0  # seconds: `rulec apply` on a terminal asks for confirmation by default

_EPILOG = """exit codes:
  0  success (warnings may have been printed)
  1  the policy has errors (printed as file:line:col: error[CODE]: message)
  2  usage error (bad option, missing file)
  3  internal error in rulec (a bug: please report it, with --debug output)
"""

_APPLY_EPILOG = """exit codes:
  0  applied (or the kernel already held the policy); --dry-run: live equals the policy
  1  the policy has errors; --dry-run: live differs from the policy
  2  usage error (bad option, missing file, another apply holds the lock, not root)
  3  internal error in rulec (a bug: please report it, with --debug output)
  4  the load failed: the saved state was put back, the host holds what it held before
  5  --confirm: no confirmation in time; the saved state was put back
"""


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise _UsageError(f"{self.prog}: error: {message}")


def _add_inputs(command: argparse.ArgumentParser) -> None:
    """The policy inputs `compile` and `check` share, so both read exactly the same policy."""
    command.add_argument("files", nargs="*", metavar="FILE", help=".rules files, in order "
                         "(with --inventory: Kubernetes NetworkPolicy YAML/JSON files); - is "
                         "standard input, as for any input file")
    command.add_argument("--inventory", metavar="CLUSTER",
                         help="compile Kubernetes NetworkPolicy files against this cluster "
                         "inventory (YAML/JSON: namespaces and pods) for a node that routes "
                         "between the pods")
    command.add_argument("--docker-state", metavar="STATE.json", action="append", default=[],
                         help="a Docker host's `docker network inspect` / `docker inspect` "
                         "JSON, daemon.json or `docker info` JSON (repeatable; see "
                         "docs/docker.md): emit dockerd's chains too")
    command.add_argument("--docker-layout", choices=("current", "classic"),
                         help="dockerd's rule layout when its version is not known: current "
                         "(29, default) or classic (20.10-27); overrides a docker block's "
                         "`layout`")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rulec", description="Compile firewall policy into netfilter rules.",
                     epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    compile_cmd = commands.add_parser(
        "compile", help="compile policy files for a target", epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_inputs(compile_cmd)
    compile_cmd.add_argument("--target", "-t", choices=api.TARGETS, default="iptables",
                             help="output format (default: iptables)")
    compile_cmd.add_argument("-o", "--output", metavar="OUT",
                             help="write here instead of standard output (-): atomically, "
                             "through symlinks, keeping the file's mode and owner")
    compile_cmd.add_argument("--ip6-output", metavar="OUT6",
                             help="with --target iptables: also write the policy's IPv6 half "
                             "(ip6tables-restore input) here, in the same all-or-nothing write")
    compile_cmd.add_argument("--noflush", action="store_true",
                             help="iptables: emit only the declared chains, for "
                             "`iptables-restore --noflush` beside rules rulec does not own")
    compile_cmd.add_argument("--ipset", metavar="SETS",
                             help="iptables: test address sets with ipsets (one lookup instead "
                             "of a rule per prefix) and write their `ipset restore -exist` "
                             "input to SETS, to load before the rules")
    compile_cmd.add_argument("--provenance", action="store_true",
                             help="comment every rule with the file:line it comes from")
    compile_cmd.add_argument("-O0", dest="no_passes", action="store_true",
                             help="turn the optimiser off")
    compile_cmd.add_argument("--passes", metavar="NAME,...",
                             help="run only these passes, in this order (see --list-passes)")
    compile_cmd.add_argument("--list-passes", action="store_true",
                             help="print the passes of the default pipeline and exit")
    compile_cmd.add_argument("--validate", action="store_true",
                             help="read the output back and prove it does to every packet "
                             "what the policy as written does (exit 3 with the witness packet "
                             "if not: a bug in rulec; nothing is written)")
    compile_cmd.add_argument("--stats", action="store_true",
                             help="print, per pass, rules in -> out, and the kernel rules per "
                             "table (on standard error)")

    check_cmd = commands.add_parser(
        "check", help="parse and verify policy files (what compile reads, for every target)",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_inputs(check_cmd)
    check_cmd.add_argument("--kernel", action="store_true",
                           help="also load the output of every target, exactly as compile "
                           "prints it, into a throwaway network namespace (needs root and the "
                           "netfilter tools)")
    check_cmd.add_argument("--target", "-t", choices=api.TARGETS, action="append",
                           help="targets to check (default: all)")
    explain_cmd = commands.add_parser(
        "explain", help="trace one packet through the policy as written: hooks, chains, the "
        "rules that match, the verdict and NAT rewrites", epilog=_EXPLAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_inputs(explain_cmd)
    explain_cmd.add_argument("--packet", metavar="PACKET",
                             help='the packet, e.g. "tcp 198.51.100.7:40000 -> 203.0.113.1:22 '
                             'in eth0 to-host" (docs/explain.md)')
    explain_cmd.add_argument("--from-pod", metavar="NS/NAME",
                             help="with --inventory: the packet's source pod")
    explain_cmd.add_argument("--to-pod", metavar="NS/NAME",
                             help="with --inventory: the packet's destination pod")
    explain_cmd.add_argument("--port", metavar="PORT/PROTO",
                             help="with --from-pod/--to-pod: the destination port, e.g. 80/tcp")
    explain_cmd.add_argument("--format", choices=("text", "json"), default="text",
                             help="text (default) or json (schema in docs/explain.md)")
    _add_dump_options(explain_cmd)
    _add_diff(commands)
    _add_import(commands)
    _add_apply(commands)
    return parser


def _add_apply(commands: argparse._SubParsersAction[_Parser]) -> None:
    apply_cmd = commands.add_parser(
        "apply", help="load a policy into this host's kernel: all or nothing, the least "
        "change, confirm or revert (as root; docs/apply.md)", epilog=_APPLY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_inputs(apply_cmd)
    apply_cmd.add_argument("--target", "-t", choices=("auto", "iptables", "nft"),
                           default="auto", help="auto (default): nft when the kernel holds "
                           "native nftables tables, else iptables (with ip6tables)")
    apply_cmd.add_argument("--noflush", action="store_true",
                           help="coexist mode: change only the chains the policy declares "
                           "(iptables), beside dockerd and other agents")
    apply_cmd.add_argument("--ipset", action="store_true",
                           help="iptables: test address sets with ipsets")
    apply_cmd.add_argument("--dry-run", action="store_true",
                           help="show the semantic diff against the live kernel and stop "
                           "(exit 0 when equal, 1 when different)")
    apply_cmd.add_argument("--confirm", type=float, metavar="SECONDS",
                           help="after loading, wait this long for a confirmation (Enter on "
                           "the terminal, or `rulec confirm` from another session) and put "
                           f"the old rules back without one (default {TTY_CONFIRM:g} on a "
                           "terminal, off otherwise; 0: off)")
    apply_cmd.add_argument("--detach", action="store_true",
                           help="with --confirm: return once loaded and leave the wait to a "
                           "detached watcher, which puts the old rules back unless `rulec "
                           "confirm` comes in time (for confirming over a new connection)")
    apply_cmd.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                           help="how the diff against the live kernel is printed")
    _add_state_options(apply_cmd)
    for name, text in (("confirm", "keep the rules of the apply waiting for confirmation"),
                       ("rollback", "put back the state saved before the last apply (or "
                        "finish undoing an interrupted one)")):
        _add_state_options(commands.add_parser(name, help=text))


def _add_state_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--state-dir", metavar="DIR", default="/var/lib/rulec",
                         help="the lock, journal and saved states (default /var/lib/rulec)")
    command.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                         help="how long to wait for another apply's lock (default 10)")


def _tty_ask(left: float) -> bool:
    """A line on the terminal (Enter) confirms."""
    import select

    ready, _, _ = select.select([sys.stdin], [], [], left)
    if not ready:
        return False
    line = sys.stdin.readline()
    if not line:
        raise OSError("the terminal closed")
    return True


def _progress(line: str) -> None:
    with contextlib.suppress(OSError):  # the operator's terminal may be gone
        print(f"rulec apply: {escape(line)}", file=sys.stderr, flush=True)


def _apply(args: argparse.Namespace) -> int:
    from rulec import apply as applying
    from rulec.analysis import render

    _inputs(args)
    _need_root("apply")
    tty = sys.stdin.isatty() and sys.stderr.isatty()
    seconds = args.confirm if args.confirm is not None else (TTY_CONFIRM if tty else None)
    if seconds is not None and seconds < 0:
        raise _UsageError("rulec apply: error: --confirm takes a number of seconds >= 0")
    if args.detach and not seconds:
        raise _UsageError("rulec apply: error: --detach needs --confirm SECONDS")
    policy = applying.Policy(files=tuple(args.files), inventory=args.inventory,
                             docker_state=tuple(args.docker_state),
                             docker_layout=args.docker_layout)
    try:
        result = applying.apply(policy, target=args.target, noflush=args.noflush,
                                ipset=args.ipset, dry_run=args.dry_run, confirm=seconds,
                                ask=_tty_ask if tty and not args.detach else None,
                                detach=args.detach, state_dir=args.state_dir,
                                wait=args.wait, report=_progress)
    except applying.StateError as exc:
        raise _UsageError(f"rulec apply: error: {exc}") from exc
    except applying.ApplyError as exc:
        print(f"rulec apply: error: {escape(str(exc))}", file=sys.stderr)
        if exc.diff is not None:
            print(render.text(exc.diff), end="", file=sys.stderr)
        return EXIT_NOT_APPLIED if exc.restored or not args.dry_run else EXIT_USAGE
    for line in result.warnings:
        print(line, file=sys.stderr)
    printer = {"text": render.text, "markdown": render.markdown,
               "json": render.as_json}[args.format]
    sys.stdout.write(printer(result.diff, str))
    if args.dry_run:
        return EXIT_OK if result.diff.equivalent else EXIT_DIFFERENT
    return EXIT_REVERTED if result.reverted else EXIT_OK


def _need_root(command: str) -> None:
    import os

    if os.geteuid() != 0:
        raise _UsageError(f"rulec {command}: error: needs root: it reads and loads this "
                          "host's netfilter rules (sudo rulec ...)")


def _state_command(args: argparse.Namespace) -> int:
    from rulec import apply as applying

    _need_root(args.command)
    try:
        if args.command == "confirm":
            print(f"rulec confirm: confirmed apply {applying.confirm(state_dir=args.state_dir)}")
        else:
            said = applying.rollback(state_dir=args.state_dir, wait=args.wait,
                                     report=_progress)
            print(f"rulec rollback: {said}")
    except applying.StateError as exc:
        raise _UsageError(f"rulec {args.command}: error: {exc}") from exc
    except applying.ApplyError as exc:
        print(f"rulec {args.command}: error: {escape(str(exc))}", file=sys.stderr)
        return EXIT_NOT_APPLIED
    return EXIT_OK


def _add_diff(commands: argparse._SubParsersAction[_Parser]) -> None:
    diff_cmd = commands.add_parser(
        "diff", help="what a policy change does to traffic: every packet whose fate differs",
        epilog=_DIFF_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    diff_cmd.add_argument("files", nargs="*", metavar="FILE",
                          help="OLD NEW (two .rules files); with --git, --optimised or "
                          "--old/--new: the policy files (NetworkPolicy files with an "
                          "inventory)")
    diff_cmd.add_argument("--old", nargs="+", metavar="FILE", help="the old side's files")
    diff_cmd.add_argument("--new", nargs="+", metavar="FILE", help="the new side's files")
    diff_cmd.add_argument("--git", metavar="REV",
                          help="compare FILE... as they are at git revision REV (includes "
                          "resolved at REV) with the working tree")
    diff_cmd.add_argument("--optimised", action="store_true",
                          help="compare FILE... with what the optimiser makes of them "
                          "(a self-check: always equivalent)")
    diff_cmd.add_argument("--inventory", metavar="CLUSTER",
                          help="Kubernetes: NetworkPolicy files (both sides) against this "
                          "inventory")
    diff_cmd.add_argument("--old-inventory", metavar="CLUSTER",
                          help="Kubernetes: the old side's inventory (a relabelling: the same "
                          "policies against two inventories)")
    diff_cmd.add_argument("--new-inventory", metavar="CLUSTER",
                          help="Kubernetes: the new side's inventory")
    diff_cmd.add_argument("--docker-state", metavar="STATE.json", action="append", default=[],
                          help="a Docker host's inspect JSON for both sides (see compile)")
    diff_cmd.add_argument("--old-docker-state", metavar="STATE.json", action="append",
                          default=[], help="Docker state for the old side only")
    diff_cmd.add_argument("--new-docker-state", metavar="STATE.json", action="append",
                          default=[], help="Docker state for the new side only")
    diff_cmd.add_argument("--docker-layout", choices=("current", "classic"),
                          help="dockerd's rule layout when its version is not known")
    diff_cmd.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                          help="text (default), markdown (a pull-request comment) or json "
                          "(docs/diff.md has the schema)")
    _add_dump_options(diff_cmd)
    diff_cmd.add_argument("--opaque", action="store_true",
                          help="keep a dump's matches rulec does not model as unknown "
                          "conditions, tried both ways (every answer they touch says so), "
                          "instead of refusing the dump")
    diff_cmd.add_argument("--live", action="store_true",
                          help="compare with what this host's kernel holds now (as root): "
                          "`--live POLICY...` (live old, policy new) or `DUMP --live` (the "
                          "dump old, live new)")
    diff_cmd.add_argument("--target", choices=("auto", "iptables", "nft"), default="auto",
                          help="with --live: read iptables-save or nft (default auto: nft when "
                          "the kernel holds nft tables iptables-nft did not make)")
    diff_cmd.add_argument("--noflush", action="store_true",
                          help="with --live POLICY: the policy is loaded in coexist mode, so "
                          "only the chains it declares are compared")


def _add_dump_options(command: argparse.ArgumentParser) -> None:
    from rulec.frontends.dumps import FORMATS

    command.add_argument("--from", dest="from_", choices=FORMATS,
                         help="the dump's format (default: told by its content)")
    command.add_argument("--family", choices=("ip", "ip6"),
                         help="an iptables-save dump's family (default: its header, else its "
                         "addresses, else ip)")
    command.add_argument("--ipset", metavar="SETS",
                         help="`ipset save` output for an iptables dump's -m set matches")


def _add_import(commands: argparse._SubParsersAction[_Parser]) -> None:
    import_cmd = commands.add_parser(
        "import", help="read a host's ruleset (iptables-save, nft JSON or text) and print it "
        "as a rulec policy that compiles back to the same behaviour", epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    import_cmd.add_argument("dump", metavar="DUMP",
                            help="the dump file (- for standard input)")
    _add_dump_options(import_cmd)
    import_cmd.add_argument("--to", choices=("rules",), default="rules",
                            help="what to print: a rulec policy (the DSL; the default)")
    import_cmd.add_argument("-o", "--output", metavar="OUT",
                            help="write here instead of standard output")


_DIFF_EPILOG = """exit codes (as diff(1)):
  0  equivalent: no packet's fate differs
  1  different: the changes are printed
  2  trouble: a usage error, or a policy with errors (nothing was compared)
  3  internal error in rulec (a bug: please report it, with --debug output)
"""

_APPLY_EPILOG = """exit codes:
  0  applied (or the kernel already held the policy); --dry-run: live equals the policy
  1  the policy has errors; --dry-run: live differs from the policy
  2  usage error (bad option, missing file, another apply holds the lock, not root)
  3  internal error in rulec (a bug: please report it, with --debug output)
  4  the load failed: the saved state was put back, the host holds what it held before
  5  --confirm: no confirmation in time; the saved state was put back
"""


_EXPLAIN_EPILOG = """exit codes:
  0  the packet was explained, whatever its verdict
  1  the policy or the --packet spelling has errors (file:line:col: error[CODE]: message)
  2  usage error (bad option, missing file, unknown pod)
  3  internal error in rulec (a bug: please report it, with --debug output)
"""

_APPLY_EPILOG = """exit codes:
  0  applied (or the kernel already held the policy); --dry-run: live equals the policy
  1  the policy has errors; --dry-run: live differs from the policy
  2  usage error (bad option, missing file, another apply holds the lock, not root)
  3  internal error in rulec (a bug: please report it, with --debug output)
  4  the load failed: the saved state was put back, the host holds what it held before
  5  --confirm: no confirmation in time; the saved state was put back
"""


def _explain(args: argparse.Namespace) -> int:
    """One packet through the policy as parsed, before the optimiser: the rules a reader
    wrote are the ones named."""
    from rulec.analysis import explain as explaining

    pods = args.from_pod is not None or args.to_pod is not None
    if pods == (args.packet is not None):
        raise _UsageError("rulec explain: error: give --packet, or --from-pod and --to-pod")
    if pods and (args.inventory is None or None in (args.from_pod, args.to_pod, args.port)):
        raise _UsageError("rulec explain: error: --from-pod and --to-pod take --inventory and "
                          "--port PORT/PROTO too")
    if args.port is not None and not pods:
        raise _UsageError("rulec explain: error: --port goes with --from-pod and --to-pod")
    _inputs(args)
    if pods:
        try:
            result = api.explain_pods(args.inventory, args.files, args.from_pod, args.to_pod,
                                      args.port)
        except ValueError as exc:
            raise _UsageError(f"rulec explain: error: {exc}") from exc
    else:
        spec = explaining.parse_packet(args.packet)  # before the policy: it is the cheaper read
        warnings: list[Diagnostic] = []
        if args.inventory is not None:
            ruleset = api.parse_k8s_files(args.inventory, args.files)
        elif not args.docker_state and _dump_side(args.files, args):
            # A host's dump: its own rules, positioned in it (docs/import.md).
            ruleset = api.read_dump(args.files[0], args.from_, family=args.family,
                                    ipsets=args.ipset)
        else:
            docker = api.docker_options("iptables", layout=args.docker_layout,
                                        state=args.docker_state)
            ruleset = api.parse_files(args.files, docker=docker, warnings=warnings)
        _print_warnings(warnings)
        result = api.explain(ruleset, spec.packet, spec.host)
    sys.stdout.write(explaining.as_json(result) if args.format == "json"
                     else explaining.text(result))
    return EXIT_OK


def _print_warnings(warnings: Sequence[Diagnostic]) -> None:
    for warning in warnings:
        print(render(warning), file=sys.stderr)


def _missing_files(files: Sequence[str]) -> None:
    if files.count("-") > 1:
        raise _UsageError("rulec: error: standard input (-) can be only one of the inputs")
    for name in files:
        if name == "-":
            continue
        path = Path(name)
        if path.is_dir():
            raise _UsageError(f"rulec: error: {name} is a directory, not a policy file")
        if path.exists() and not path.is_file():  # a device or FIFO may block or never end
            raise _UsageError(f"rulec: error: {name} is not a regular file")
        if not path.is_file():
            raise _UsageError(f"rulec: error: no such file: {name}")


def _selected_passes(args: argparse.Namespace) -> tuple[str, ...] | None:
    if args.no_passes and args.passes:
        raise _UsageError("rulec: error: -O0 and --passes exclude each other")
    if args.no_passes:
        return ()
    if args.passes is None:
        return None
    names = tuple(n.strip() for n in args.passes.split(",") if n.strip())
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise _UsageError(f"rulec: error: unknown pass {', '.join(unknown)} "
                          f"(known: {', '.join(PASSES) or 'none'})")
    return names


def _print_stats(result: api.CompileResult) -> None:
    shown = 1
    for stat in result.pass_stats:
        if stat.round != shown:  # the pipeline runs again until a round changes nothing
            shown = stat.round
            print(f"round {shown}: the passes whose input changed", file=sys.stderr)
        print(f"pass {stat.name:<20} rules {stat.rules_in:>7} -> {stat.rules_out:<7} "
              f"{stat.seconds * 1000:8.1f} ms", file=sys.stderr)
    for table, count in kernel_rule_counts(result.artifact).items():
        print(f"kernel rules in {table}: {count}", file=sys.stderr)


def _inputs(args: argparse.Namespace) -> list[str]:
    """Every input file named on the command line, checked to exist."""
    if not args.files and not args.docker_state:
        raise _UsageError(f"rulec {args.command}: error: give at least one FILE")
    if args.inventory is not None and args.docker_state:
        raise _UsageError("rulec: error: --inventory and --docker-state exclude each other "
                          "(a Kubernetes node and a Docker host are compiled separately)")
    if args.inventory is not None and args.docker_layout is not None:
        raise _UsageError("rulec: error: --docker-layout applies to a Docker host model, "
                          "not to --inventory")
    named = [*args.files, *([args.inventory] if args.inventory else []), *args.docker_state]
    _missing_files(named)
    return named


def _compile_for(args: argparse.Namespace, target: str, *, passes: tuple[str, ...] | None = None,
                 noflush: bool = False, provenance: bool = False, ipset: bool = False,
                 both_families: bool = False, validate: bool = False) -> api.CompileResult:
    if args.inventory is not None:
        return api.compile_k8s_files(args.inventory, args.files, target, noflush=noflush,
                                     provenance=provenance, passes=passes, ipset=ipset,
                                     both_families=both_families, validate=validate)
    return api.compile_files(args.files, target, noflush=noflush, provenance=provenance,
                             passes=passes, docker_layout=args.docker_layout,
                             docker_state=args.docker_state, ipset=ipset,
                             both_families=both_families, validate=validate)


def _compile(args: argparse.Namespace) -> int:
    if args.list_passes:
        print("\n".join(DEFAULT_PIPELINE))
        return EXIT_OK
    named = _inputs(args)
    if args.noflush and args.target not in ("iptables", "ip6tables"):
        raise _UsageError("rulec: error: --noflush applies to --target iptables/ip6tables only")
    if args.ipset is not None and args.target not in ("iptables", "ip6tables"):
        raise _UsageError("rulec: error: --ipset applies to --target iptables/ip6tables only")
    if args.ip6_output is not None and args.target != "iptables":
        raise _UsageError("rulec: error: --ip6-output applies to --target iptables only")
    if args.output == "-":
        args.output = None  # the usual spelling of standard output
    both = args.ip6_output is not None
    # Every output is checked before the compile, so a bad path costs no compile time.
    outputs = [name for name in (args.ipset, args.output, args.ip6_output) if name is not None]
    try:
        output.plan([(name, "") for name in outputs], _files(named))
    except output.OutputError as exc:
        raise _UsageError(f"rulec: error: {exc}") from exc
    result = _compile_for(args, args.target, passes=_selected_passes(args),
                          noflush=args.noflush, provenance=args.provenance,
                          ipset=args.ipset is not None, both_families=both,
                          validate=args.validate)
    _print_warnings(result.warnings)
    if args.stats:
        _print_stats(result)
    artifacts = [result.artifact, *([result.other_family] if result.other_family else [])]
    files: list[tuple[str, str]] = []
    if args.ipset is not None:  # first: the rules need the sets, not the reverse
        files.append((args.ipset, "".join(a.ipsets or "" for a in artifacts)))
    if args.output is not None:
        files.append((args.output, result.artifact.text))
    if result.other_family is not None:
        files.append((args.ip6_output, result.other_family.text))
    _write_files(files, [*_files(named), *_sources(result)])
    if args.output is None:
        sys.stdout.write(result.artifact.text)
    return EXIT_OK


def _files(named: list[str]) -> list[str]:
    return [name for name in named if name != "-"]  # standard input is no file to protect


def _sources(result: api.CompileResult) -> list[str]:
    """The files rules came from (includes too), so no output overwrites one of them."""
    names = {rule.span.file for table in result.ruleset.tables for chain in table.chains
             for rule in chain.rules if rule.span is not None}
    return sorted(names)


def _write_files(files: list[tuple[str, str]], inputs: list[str]) -> None:
    try:
        output.write_all(output.plan(files, inputs))
    except output.OutputError as exc:
        raise _UsageError(f"rulec: error: {exc}; nothing was written") from exc


def _check(args: argparse.Namespace) -> int:
    named = _inputs(args)
    targets = tuple(args.target or api.TARGETS)
    results = {target: _compile_for(args, target, both_families=target in ("iptables",
                                                                           "ip6tables"))
               for target in targets}
    # Each target's compile finds mostly the same things: say each once. Then what the
    # engine finds in the policy as written (never-matching rules, allow/deny conflicts).
    from rulec.analysis.findings import findings

    written = _read_side(_Side(args.files, args.inventory, args.docker_state),
                         args.docker_layout)
    found = [*(w for r in results.values() for w in r.warnings), *findings(written)]
    _print_warnings(list({render(w): w for w in found}.values()))
    if not args.kernel:
        print(f"ok: {', '.join(named)} ({', '.join(targets)})")
        return EXIT_OK
    from rulec import kernel

    for target in targets:
        reason = kernel.available(target)
        if reason is not None:
            raise _UsageError(f"rulec: error: --kernel cannot check {target} here: {reason}")
    failed = False
    for result in results.values():
        verdict = kernel.validate_artifact(result.artifact)  # what compile would print
        print(verdict.summary())
        failed = failed or not verdict.ok
    return EXIT_POLICY if failed else EXIT_OK


@dataclass(frozen=True)
class _Side:
    files: list[str]
    inventory: str | None
    docker_state: list[str]
    dump: bool = False  # files[0] is a ruleset dump (iptables-save, nft), not a policy
    live: bool = False  # what this host's kernel holds now


def _dump_side(files: list[str], args: argparse.Namespace) -> bool:
    from rulec.frontends.dumps import is_dump

    if len(files) != 1 or files[0].endswith(".rules"):
        return False
    return getattr(args, "from_", None) is not None or is_dump(files[0])


def _live_sides(args: argparse.Namespace) -> tuple[_Side, _Side]:
    if args.git or args.optimised or args.old is not None or args.new is not None:
        raise _UsageError("rulec diff: error: --live excludes --git, --optimised and "
                          "--old/--new")
    if not args.files and args.inventory is None and not args.docker_state:
        raise _UsageError("rulec diff: error: give the POLICY... (or a DUMP) to compare with "
                          "the live kernel")
    live = _Side([], None, [], live=True)
    if _dump_side(args.files, args):
        if args.noflush:
            raise _UsageError("rulec diff: error: --noflush applies to --live POLICY...")
        return _Side(list(args.files), None, [], dump=True), live
    return live, _Side(list(args.files), args.inventory, list(args.docker_state))


def _diff_sides(args: argparse.Namespace) -> tuple[_Side, _Side]:
    """Which files each side reads; every spelling's own rules are checked here."""
    if args.live:
        return _live_sides(args)
    if args.noflush or args.target != "auto":
        raise _UsageError("rulec diff: error: --noflush and --target apply to --live")
    both = args.docker_state
    old_state, new_state = [*both, *args.old_docker_state], [*both, *args.new_docker_state]
    kube = args.inventory is not None or args.old_inventory or args.new_inventory
    if args.inventory and (args.old_inventory or args.new_inventory):
        raise _UsageError("rulec diff: error: --inventory excludes --old-inventory and "
                          "--new-inventory")
    if bool(args.old_inventory) != bool(args.new_inventory):
        raise _UsageError("rulec diff: error: give both --old-inventory and --new-inventory")
    if kube and (old_state != [] or new_state != []):
        raise _UsageError("rulec diff: error: a Kubernetes node and a Docker host are "
                          "compared separately")
    modes = [m for m in ("git", "optimised") if getattr(args, m)]
    sided = args.old is not None or args.new is not None
    if len(modes) > 1 or (modes and sided):
        raise _UsageError("rulec diff: error: --git, --optimised and --old/--new exclude "
                          "each other")
    if sided:
        if args.old is None or args.new is None:
            raise _UsageError("rulec diff: error: give both --old FILE... and --new FILE...")
        if args.files:
            raise _UsageError("rulec diff: error: with --old and --new, give no other FILE")
        old_files, new_files = list(args.old), list(args.new)
    elif modes or (kube and args.old_inventory):
        if not args.files:
            raise _UsageError("rulec diff: error: give the policy FILE... to compare")
        old_files = new_files = list(args.files)
    else:
        if len(args.files) != 2:
            raise _UsageError("rulec diff: error: give OLD and NEW (or --old/--new, --git "
                              "REV FILE..., --optimised FILE...)")
        old_files, new_files = [args.files[0]], [args.files[1]]
    old_inventory = args.old_inventory or args.inventory
    new_inventory = args.new_inventory or args.inventory
    old_dump, new_dump = (_dump_side(f, args) and not modes for f in (old_files, new_files))
    return (_Side(old_files, old_inventory, old_state, dump=old_dump),
            _Side(new_files, new_inventory, new_state, dump=new_dump))


def _read_side(side: _Side, layout: str | None, args: argparse.Namespace | None = None
               ) -> Ruleset:
    if side.dump and args is not None:
        return api.read_dump(side.files[0], args.from_, family=args.family, ipsets=args.ipset,
                             opaque=args.opaque)
    if side.inventory is not None:
        return api.parse_k8s_files(side.inventory, side.files)
    docker = api.docker_options("iptables", layout=layout, state=side.docker_state)
    return api.parse_files(side.files, docker=docker)


def _read_sides(old_side: _Side, new_side: _Side, args: argparse.Namespace
                ) -> tuple[Ruleset, Ruleset]:
    """Both sides as IR; a live side narrowed to what the other side owns."""
    if not (old_side.live or new_side.live):
        old = _read_side(old_side, args.docker_layout, args)
        return old, old if args.optimised else _read_side(new_side, args.docker_layout, args)
    from rulec.kernel.live import LiveError, against_live, detect_target

    other = new_side if old_side.live else old_side
    scope = _read_side(other, args.docker_layout, args)
    try:
        target = detect_target() if args.target == "auto" else args.target
        live, scope = against_live(scope, target, noflush=args.noflush, opaque=args.opaque)
    except LiveError as exc:
        raise _UsageError(f"rulec diff: error: --live: {exc}") from exc
    return (live, scope) if old_side.live else (scope, live)


def _families(old_side: _Side, old: Ruleset, new_side: _Side, new: Ruleset
              ) -> tuple[Family, ...]:
    """The families to compare: a one-family dump (iptables-save or ip6tables-save) holds no
    say on the other family's packets, so only its own is compared."""
    for side, ruleset in ((old_side, old), (new_side, new)):
        held = {t.family for t in ruleset.tables}
        if side.dump and len(held) == 1 and Family.INET not in held:
            return tuple(held)
    return (Family.IP, Family.IP6)


def _diff(args: argparse.Namespace) -> int:
    from rulec.analysis import render
    from rulec.analysis.space import AnalysisError
    from rulec.frontends.revision import RevisionError, at_revision

    old_side, new_side = _diff_sides(args)
    dumped = old_side.dump or new_side.dump or old_side.live or new_side.live
    if (args.from_ or args.family or args.ipset or args.opaque) and not dumped:
        raise _UsageError("rulec diff: error: --from, --family, --ipset and --opaque "
                              "apply to a ruleset dump (or --live)")
    for side in (old_side, new_side):
        if args.ipset and side is old_side:
            _missing_files([args.ipset])
        if args.git is None or side is new_side:
            _missing_files([*side.files, *([side.inventory] if side.inventory else []),
                            *side.docker_state])
    label: Callable[[str], str] = str
    with contextlib.ExitStack() as stack:
        if args.git is not None:
            try:
                revision = stack.enter_context(at_revision(args.git, old_side.files))
            except RevisionError as exc:
                raise _UsageError(f"rulec diff: error: --git {args.git}: {exc}") from exc
            old_side = _Side([str(f) for f in revision.files], old_side.inventory,
                             old_side.docker_state)
            label = revision.label
        old, new = _read_sides(old_side, new_side, args)
        if args.optimised:
            new = api.optimised(old)
        try:
            result = api.diff(old, new, _families(old_side, old, new_side, new))
        except AnalysisError as exc:
            raise _UsageError(f"rulec diff: error: {exc}") from exc
        printer = {"text": render.text, "markdown": render.markdown,
                   "json": render.as_json}[args.format]
        sys.stdout.write(printer(result, label))
    return EXIT_OK if result.equivalent else EXIT_DIFFERENT


def _import(args: argparse.Namespace) -> int:
    _missing_files([args.dump, *([args.ipset] if args.ipset else [])])
    if args.output == "-":
        args.output = None
    if args.output is not None:
        try:
            output.plan([(args.output, "")], _files([args.dump]))
        except output.OutputError as exc:
            raise _UsageError(f"rulec: error: {exc}") from exc
    ruleset = api.read_dump(args.dump, args.from_, family=args.family, ipsets=args.ipset)
    text = api.to_policy(ruleset)
    if args.output is None:
        sys.stdout.write(text)
    else:
        _write_files([(args.output, text)], _files([args.dump]))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    command = None
    dry_run = False
    try:
        args = parser.parse_args(argv)
        command = args.command
        dry_run = bool(getattr(args, "dry_run", False))
        handlers = {"compile": _compile, "explain": _explain, "diff": _diff,
                    "import": _import, "apply": _apply, "confirm": _state_command,
                    "rollback": _state_command}
        return handlers.get(args.command, _check)(args)
    except ValidationError as exc:
        from rulec.analysis import render

        print(f"rulec: internal error: {exc}; this is a bug in rulec, nothing was written. "
              "What the policy does (old) and what the output does (new):", file=sys.stderr)
        print(render.text(exc.diff), end="", file=sys.stderr)
        return EXIT_BUG
    except _UsageError as exc:
        print(escape(str(exc)), file=sys.stderr)  # file names may hold control characters
        return EXIT_USAGE
    except RulecError as exc:
        print(exc.render(), file=sys.stderr)
        count = sum(1 for d in exc.diagnostics if d.severity.value == "error")
        if command == "diff" or (command == "apply" and dry_run):
            # 1 means "different" there, as diff(1)'s
            print(f"rulec: {count} error{'s' if count != 1 else ''}; nothing was compared",
                  file=sys.stderr)
            return EXIT_USAGE
        print(f"rulec: {count} error{'s' if count != 1 else ''}; nothing was emitted",
              file=sys.stderr)
        return EXIT_POLICY
    except BrokenPipeError:
        return EXIT_OK
    except Exception:  # a bug in rulec, never the user's input
        print("rulec: internal error; please report it with the input that caused it",
              file=sys.stderr)
        if debug:
            traceback.print_exc()
        else:
            print("(run with --debug for the traceback)", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    raise SystemExit(main())
