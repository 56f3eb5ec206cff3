"""`rulec apply`: load a policy into this host's kernel safely.

Steps (each recorded in the journal before it starts, docs/apply.md):
  1. compile, with translation validation, for every family (iptables and ip6tables, or nft);
  2. read what is live and diff it against the policy (a dry run stops here);
  3. save the host's state, then load: nothing if the kernel already holds exactly this,
     else only the chains that differ (iptables) or one transaction of the owned tables
     (nft); ipsets first, then IPv4, then IPv6; a failure puts everything back;
  4. verify: read back and diff against the policy (any difference: put everything back);
  5. with `confirm`: wait for a confirmation, put everything back without one;
  6. drop the ipsets nothing uses any more; the saved state becomes what `rollback` restores.
After a crash at any step, the next `apply` or `rollback` (under the same lock) puts back the
state saved before the interrupted apply: the host holds the old rules or the new, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rulec.apply.host import (
    RESTORE,
    SAVE,
    XTABLES_WAIT,
    Host,
    LoadError,
    SaveTable,
    Sent,
    chains_restore,
    changed_chains,
    empty_section,
    ipset_names,
    nft_owned,
    nft_replace,
    nft_tables,
    parse_save,
    rulec_set_lines,
    rulec_sets_used,
    section,
    set_signature,
)
from rulec.apply.state import DEFAULT_STATE_DIR, StateDir, StateError

if TYPE_CHECKING:
    from rulec.analysis.diff import Diff
    from rulec.backends.base import Artifact
    from rulec.ir.nodes import Ruleset

Target = Literal["iptables", "nft"]
Report = Callable[[str], None]
FAMILIES = ("ip", "ip6")


class ApplyError(Exception):
    """The apply did not happen; the host holds what it held before (`restored` says whether
    that took putting something back)."""

    def __init__(self, message: str, *, restored: bool = False,
                 diff: Diff | None = None) -> None:
        super().__init__(message)
        self.restored = restored
        self.diff = diff


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyResult:
    target: Target
    diff: Diff  # live (old) -> policy (new), as the dry run shows it
    change: Literal["none", "chains", "full"]  # what was (or would be) loaded
    applied: bool  # the kernel now holds the policy (False: dry run, or reverted)
    reverted: bool = False  # loaded, not confirmed in time, put back and proven
    sent: tuple[Sent, ...] = ()  # every command that changed the kernel, in order
    awaiting: str | None = None  # detach: the apply id `rulec confirm` must confirm
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """What `rulec compile` reads: policy files, or NetworkPolicy files and an inventory."""

    files: tuple[str, ...] = ()
    inventory: str | None = None
    docker_state: tuple[str, ...] = ()
    docker_layout: str | None = None


@dataclass
class _Compiled:
    written: Ruleset
    artifacts: dict[str, Artifact] = field(default_factory=dict)  # "ip"/"ip6"/"nft"
    warnings: tuple[str, ...] = ()


def _quiet(_line: str) -> None:
    return None


def apply(policy: Policy | Sequence[str | Path], *, target: str = "auto",
          noflush: bool = False, ipset: bool = False, dry_run: bool = False,
          confirm: float | None = None, ask: Callable[[float], bool] | None = None,
          detach: bool = False, state_dir: str | Path = DEFAULT_STATE_DIR,
          wait: float = 10.0, report: Report = _quiet) -> ApplyResult:
    """Load `policy` into this host's kernel (the caller's network namespace), all or nothing.
    `confirm`: seconds to wait, after loading, for `rulec confirm` (or `ask`, called with the
    seconds left, returning True on a confirmation); without one the saved state is put back.
    `detach`: return at once and leave the wait to a detached watcher process (the way to
    confirm over a connection the new rules might cut, as Ansible does).
    RulecError for a bad policy, ApplyError (the host as it was) for a failed load."""
    if not isinstance(policy, Policy):
        policy = Policy(files=tuple(str(p) for p in policy))
    chosen = _target(target)
    compiled = _compile(policy, chosen, noflush=noflush, ipset=ipset)
    report(f"compiled for {chosen}: {', '.join(compiled.artifacts)} (validated)")
    state = StateDir(state_dir)
    host = Host()
    with state.locked(wait) if not dry_run else contextlib.nullcontext():
        if not dry_run:
            _recover(state, host, report)
        live_diff = _live_diff(compiled.written, chosen, noflush)
        try:
            change, plan = _plan(host, chosen, compiled, noflush)
        except LoadError as exc:
            raise ApplyError(f"cannot read the kernel's rules: {exc}") from exc
        report(f"live vs policy: {_summary(live_diff)}; to load: {change}")
        if dry_run:
            return ApplyResult(target=chosen, diff=live_diff, change=change, applied=False,
                               warnings=compiled.warnings)
        if change == "none":
            report("the kernel already holds this policy: nothing loaded")
            return ApplyResult(target=chosen, diff=live_diff, change=change, applied=True,
                               warnings=compiled.warnings)
        journal: dict[str, Any] = {"id": uuid.uuid4().hex, "pid": os.getpid(),
                                   "target": chosen, "noflush": noflush,
                                   "started": time.time(), "step": "saving"}
        state.record(journal, "saving")
        try:
            files, meta = _snapshot(host, chosen, compiled, noflush)
        except LoadError as exc:
            state.finish(keep=False)
            raise ApplyError(f"cannot save the kernel's rules: {exc}") from exc
        state.save(files, meta)
        state.record(journal, "saved")
        try:
            for step, argv, text in plan:
                state.record(journal, step)
                report(f"{step}: {' '.join(argv)}")
                host.send(argv, text)
            state.record(journal, "verifying")
            after = _live_diff(compiled.written, chosen, noflush)
            if not after.equivalent:
                raise ApplyError("the kernel does not hold what was compiled after the load "
                                 f"({_summary(after)})", diff=after)
            report("verified: the kernel holds the policy")
        except (LoadError, ApplyError) as exc:
            report(f"failed: {exc}; putting the saved state back")
            _put_back(state, host, report, f"{exc}")
            raise ApplyError(f"{exc}; the saved state was put back", restored=True,
                             diff=getattr(exc, "diff", None)) from exc
        if confirm is not None and confirm > 0:
            journal["deadline"] = time.time() + confirm
            if detach:
                journal["watcher"] = _start_watcher(state, journal["id"])
                state.record(journal, "awaiting-confirmation")
                report(f"loaded; `rulec confirm` within {confirm:g} s keeps it, else the "
                       f"watcher (pid {journal['watcher']}) puts the saved state back")
                return ApplyResult(target=chosen, diff=live_diff, change=change,
                                   applied=True, awaiting=journal["id"],
                                   sent=tuple(host.sent), warnings=compiled.warnings)
            state.record(journal, "awaiting-confirmation")
            report(f"waiting {confirm:g} s for confirmation (`rulec confirm`)")
            if not _wait_confirmed(state, journal["id"], confirm, ask):
                report("not confirmed in time: putting the saved state back")
                _put_back(state, host, report, "no confirmation in time")
                return ApplyResult(target=chosen, diff=live_diff, change=change,
                                   applied=False, reverted=True, sent=tuple(host.sent),
                                   warnings=compiled.warnings)
            report("confirmed")
        _complete(state, journal, host, report)
        return ApplyResult(target=chosen, diff=live_diff, change=change, applied=True,
                           sent=tuple(host.sent), warnings=compiled.warnings)


def _put_back(state: StateDir, host: Host, report: Report, why: str) -> None:
    """The saved state back; if even that fails, the journal stays for `rulec rollback`."""
    try:
        _restore(state.pending, host, report)
    except (LoadError, ApplyError) as exc:
        raise ApplyError(f"{why}; putting the saved state back failed too: {exc}. The saved "
                         f"state and the journal are kept in {state.path}: `rulec rollback` "
                         "tries again") from exc
    state.finish(keep=False)


def _complete(state: StateDir, journal: dict[str, Any], host: Host, report: Report) -> None:
    state.record(journal, "cleaning")
    _drop_unused_sets(host, journal["target"], report)
    state.finish(keep=True)


def watch(state_dir: str | Path, apply_id: str, report: Report = _quiet) -> bool:
    """The detached watcher of an apply awaiting confirmation (`confirm=..., detach=True`):
    keeps its rules once `rulec confirm` names it, puts the saved state back at the deadline.
    True if confirmed. It outlives the session that started it (an SSH that dropped)."""
    state = StateDir(state_dir)
    while True:
        journal = state.journal()
        if journal is None or journal["id"] != apply_id:
            return False  # rolled back (or finished) by someone else
        if state.confirmed(apply_id) or time.time() >= float(journal["deadline"]):
            break
        time.sleep(0.1)
    with state.locked(wait=60.0):
        journal = state.journal()
        if journal is None or journal["id"] != apply_id:
            return False
        host = Host()
        if state.confirmed(apply_id):
            _complete(state, journal, host, report)
            return True
        _restore(state.pending, host, report)
        state.finish(keep=False)
        return False


def _start_watcher(state: StateDir, apply_id: str) -> int:
    import subprocess
    import sys

    watcher = subprocess.Popen(
        [sys.executable, "-m", "rulec.apply.watcher", str(state.path), apply_id],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True)
    return watcher.pid


def rollback(*, state_dir: str | Path = DEFAULT_STATE_DIR, wait: float = 10.0,
             report: Report = _quiet) -> str:
    """Put back the state saved before the interrupted apply, or else before the last
    completed one; what was done, in words. StateError when nothing is saved."""
    state = StateDir(state_dir)
    host = Host()
    with state.locked(wait):
        if _recover(state, host, report):
            return "the interrupted apply was undone"
        if not state.previous.exists():
            raise StateError(f"nothing to roll back to: no saved state in {state.path}")
        _restore(state.previous, host, report)
        state.finish(keep=False)
        shutil.rmtree(state.previous)
        return "the state before the last apply was put back"


def confirm(*, state_dir: str | Path = DEFAULT_STATE_DIR) -> str:
    """`rulec confirm`: keep the rules of the apply waiting for confirmation; its id."""
    return StateDir(state_dir).confirm()


# -- the steps ---------------------------------------------------------------------------------

def _target(target: str) -> Target:
    if target == "auto":
        from rulec.kernel.live import detect_target

        return detect_target()
    if target not in ("iptables", "nft"):
        raise ValueError(f"unknown apply target {target!r}; choose auto, iptables or nft")
    return target  # type: ignore[return-value]


def _compile(policy: Policy, target: Target, *, noflush: bool, ipset: bool) -> _Compiled:
    from rulec import api
    from rulec.diagnostics import render

    warnings: list[Any] = []
    if policy.inventory is not None:
        written = api.parse_k8s_files(policy.inventory, policy.files)
    else:
        docker = api.docker_options(target, layout=policy.docker_layout,
                                    state=policy.docker_state, noflush=noflush)
        written = api.parse_files(policy.files, docker=docker, warnings=warnings)
    passes = api.docker_passes(written, None)
    out = _Compiled(written)
    if target == "nft":
        result = api.compile_ruleset(written, "nft", passes=passes, validate=True)
        out.artifacts["nft"] = result.artifact
    else:
        result = api.compile_ruleset(written, "iptables", noflush=noflush, passes=passes,
                                     ipset=ipset, both_families=True, validate=True)
        assert result.other_family is not None
        out.artifacts["ip"], out.artifacts["ip6"] = result.artifact, result.other_family
    out.warnings = tuple(render(w) for w in (*warnings, *result.warnings))
    return out


def _live_diff(written: Ruleset, target: Target, noflush: bool) -> Diff:
    from rulec import api
    from rulec.kernel.live import LiveError, against_live

    try:
        live, scope = against_live(written, target, noflush=noflush)
    except LiveError as exc:
        raise ApplyError(f"cannot read the live rules: {exc}") from exc
    return api.diff(live, scope)


def _summary(result: Diff) -> str:
    if result.equivalent:
        return "equivalent"
    return f"{len(result.changes)} change{'s' if len(result.changes) != 1 else ''}"


Step = tuple[str, tuple[str, ...], str]


def _restore_argv(family: str, *, noflush: bool) -> tuple[str, ...]:
    return (RESTORE[family], "-w", XTABLES_WAIT, "--counters",
            *(("--noflush",) if noflush else ()))


def _plan(host: Host, target: Target, compiled: _Compiled,
          noflush: bool) -> tuple[Literal["none", "chains", "full"], list[Step]]:
    """What to send: nothing when the kernel holds exactly what was compiled; otherwise the
    least that makes it so (iptables: the chains that differ; nft: the owned tables)."""
    if target == "nft":
        return _plan_nft(host, compiled.artifacts["nft"])
    steps: list[Step] = []
    sets = compiled.artifacts["ip"].ipsets or ""
    sets6 = compiled.artifacts["ip6"].ipsets or ""
    needed = ipset_names(sets) | ipset_names(sets6)
    if needed:
        saved = host.read("ipset", "save")
        held = ipset_names(saved)
        for name in sorted(needed & held):
            if set_signature(saved, name) != set_signature(sets + sets6, name):
                raise ApplyError(f"ipset {name} exists but does not hold what rulec's name for "
                                 "it says (changed by hand?); nothing was loaded: destroy it "
                                 "(`ipset destroy`, once no rule uses it) and apply again")
        missing = needed - held
        if missing:
            steps.append(("loading-sets", ("ipset", "restore", "-exist"),
                          rulec_set_lines(sets + sets6, missing)))
    for family in FAMILIES:
        artifact = compiled.artifacts[family]
        now = parse_save(host.read(SAVE[family], "-c"))
        new = parse_save(artifact.text)
        changed = changed_chains(now, new, declared_only=noflush)
        if changed:
            steps.append((f"loading-{family}", _restore_argv(family, noflush=True),
                          chains_restore(now, new, changed, delete=not noflush)))
    return ("chains" if steps else "none"), steps


def _plan_nft(host: Host, artifact: Artifact
              ) -> tuple[Literal["none", "chains", "full"], list[Step]]:
    from rulec.diagnostics import SourceFile
    from rulec.frontends.dumps import read_dump
    from rulec.validation import read_artifact

    owned = nft_owned(artifact.text)
    held = nft_tables(host)
    wanted = read_artifact(artifact)
    listed = [host.read("nft", "list", "table", f, n) for f, n in owned if (f, n) in held]
    live = read_dump(SourceFile("<live nft>", "\n".join(listed)), "nft") if listed else None
    same = live is not None and _tables(live) == _tables(wanted)
    if same:
        return "none", []
    return "full", [("loading-nft", ("nft", "-f", "-"), artifact.text)]


def _tables(ruleset: Ruleset) -> dict[tuple[object, ...], object]:
    """Tables by where they live, their empty ones left out (rulec prints each owned table,
    the kernel lists only those that hold something)."""
    return {(t.family, t.name, t.kind): t.chains for t in ruleset.tables if t.chains}


def _snapshot(host: Host, target: Target, compiled: _Compiled,
              noflush: bool) -> tuple[dict[str, str], dict[str, Any]]:
    """The host's state that the apply may change, to put back exactly."""
    if target == "nft":
        owned = nft_owned(compiled.artifacts["nft"].text)
        held = nft_tables(host)
        listing = "\n".join(host.read("nft", "list", "table", f, n)
                            for f, n in owned if (f, n) in held)
        return {"nft.save": listing}, {"target": "nft", "owned": owned}
    files = {f"{family}.save": host.read(SAVE[family], "-c") for family in FAMILIES}
    files["ipset.save"] = host.read("ipset", "save") if _have("ipset") else ""
    touched = {family: {t: sorted(s.policies) for t, s in
                        parse_save(compiled.artifacts[family].text).items()}
               for family in FAMILIES}
    return files, {"target": "iptables", "noflush": noflush, "touched": touched}


def _have(tool: str) -> bool:
    return shutil.which(tool) is not None


def _restore(saved: Path, host: Host, report: Report) -> None:
    """Put the saved state back and prove it: read back, compare with what was saved."""
    files, meta = StateDir.load(saved)
    if meta["target"] == "nft":
        owned = [tuple(o) for o in meta["owned"]]
        host.send(("nft", "-f", "-"), nft_replace(owned, files["nft.save"]))
        now = "\n".join(host.read("nft", "list", "table", f, n)
                        for f, n in owned if (f, n) in nft_tables(host))
        if _strip_counters(now) != _strip_counters(files["nft.save"]):
            raise ApplyError("the saved nft tables were put back but read back differently")
        report("restored: the owned nft tables read back as saved")
        return
    sets = files.get("ipset.save", "")
    if sets:
        missing = (ipset_names(sets) & rulec_sets_used([sets])) - ipset_names(
            host.read("ipset", "save"))
        if missing:
            host.send(("ipset", "restore", "-exist"), rulec_set_lines(sets, missing))
    for family in FAMILIES:
        before = parse_save(files[f"{family}.save"])
        touched: dict[str, list[str]] = meta["touched"][family]
        if meta["noflush"]:
            held = parse_save(host.read(SAVE[family], "-c"))
            chains = {t: set(names) for t, names in touched.items()}
            host.send(_restore_argv(family, noflush=True),
                      chains_restore(held, before, chains, delete=False))
            _delete_new_chains(host, family, held, before, chains)
        else:
            lines: list[str] = []
            for table in touched:
                lines += section(before[table]) if table in before else empty_section(table)
            host.send(_restore_argv(family, noflush=False), "\n".join(lines) + "\n")
        after = parse_save(host.read(SAVE[family], "-c"))
        for table, names in touched.items():
            if meta["noflush"]:
                check = [c for c in names if c in before.get(table, SaveTable(table)).policies]
            else:
                check = None
            empty = parse_save("\n".join(empty_section(table)))[table]
            if (_chains(after.get(table, empty), check)
                    != _chains(before.get(table, empty), check)):
                raise ApplyError(f"the saved {family} {table} table was put back but reads back "
                                 "differently")
    _drop_unused_sets(host, "iptables", report, frozenset(ipset_names(sets)))
    report("restored: every touched table reads back as saved")


def _delete_new_chains(host: Host, family: str, now: Any, before: Any,
                       chains: dict[str, set[str]]) -> None:
    """Coexist mode: the declared user chains the apply created go again, if nothing outside
    still jumps to them (then they stay, empty)."""
    for table, names in chains.items():
        gone = [c for c in sorted(names) if c in now.get(table, SaveTable(table)).policies
                and c not in before.get(table, SaveTable(table)).policies
                and now[table].policies[c] == "-"]
        if gone:
            with contextlib.suppress(LoadError):
                host.send(_restore_argv(family, noflush=True),
                          "\n".join([f"*{table}", *(f"-X {c}" for c in gone), "COMMIT"]) + "\n")


def _chains(table: SaveTable, only: list[str] | None) -> object:
    names = [c for c in table.policies if only is None or c in only]
    return [(c, table.policies[c], [line.split("] ", 1)[-1] for line in table.rules.get(c, [])])
            for c in names]


def _strip_counters(text: str) -> str:
    import re

    return re.sub(r"counter packets \d+ bytes \d+", "counter", text).strip()


def _drop_unused_sets(host: Host, target: Target | str, report: Report,
                      keep: frozenset[str] = frozenset()) -> None:
    """rulec's ipsets that no rule tests any more (a set change makes a set of a new name),
    but never one in `keep` (there before the apply began)."""
    if target != "iptables" or not _have("ipset"):
        return
    used = rulec_sets_used([host.read(SAVE[f]) for f in FAMILIES])
    held = {n for n in ipset_names(host.read("ipset", "save")) if rulec_sets_used([n])}
    for name in sorted(held - used - keep):
        with contextlib.suppress(LoadError):  # in use by something rulec did not write
            host.send(("ipset", "destroy", name))
            report(f"dropped the unused ipset {name}")


def _recover(state: StateDir, host: Host, report: Report) -> bool:
    """An apply that stopped before its end (killed, crashed): put back what it saved, or
    keep it if it was confirmed. One still awaiting its confirmation is refused."""
    journal = state.journal()
    if journal is None:
        return False
    step = journal["step"]
    if step == "awaiting-confirmation":
        if state.confirmed(journal["id"]):
            report(f"the confirmed apply {journal['id']} is kept")
            _complete(state, journal, host, report)
            return True
        waiter = journal.get("watcher", journal.get("pid"))
        if time.time() < float(journal["deadline"]) and _alive(waiter):
            raise StateError(f"apply {journal['id']} awaits confirmation for "
                             f"{float(journal['deadline']) - time.time():.0f} s more: "
                             "`rulec confirm` or `rulec rollback` first")
    report(f"an earlier apply (pid {journal.get('pid')}) stopped at step {step!r}: putting "
           "back the state saved before it")
    if state.pending.exists() and step != "saving":
        _restore(state.pending, host, report)
    state.finish(keep=False)
    return True


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_confirmed(state: StateDir, apply_id: str, seconds: float,
                    ask: Callable[[float], bool] | None) -> bool:
    """Until the deadline: `rulec confirm` (any session) or `ask`. A hangup (the operator's
    SSH dropped) does not stop the wait: that is when the revert matters."""
    deadline = time.monotonic() + seconds
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN) if _main_thread() else None
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if state.confirmed(apply_id):
                return True
            if ask is not None:
                try:
                    if ask(min(left, 0.2)):
                        return True
                except OSError:
                    ask = None  # the terminal went away; `rulec confirm` still works
            else:
                time.sleep(min(left, 0.1))
    finally:
        if old is not None:
            signal.signal(signal.SIGHUP, old)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


__all__ = ["ApplyError", "ApplyResult", "Policy", "StateError", "apply", "confirm", "rollback"]
