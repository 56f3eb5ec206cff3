"""What this host's kernel holds now, as IR: `iptables-save` and `ip6tables-save`, or
`nft -j list ruleset`, read in the caller's network namespace and imported like any dump.

Only reading: nothing here changes the kernel. `owned_by` narrows a live ruleset to what a
policy owns, so drift reports what rulec would replace, not every other agent's rules.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from typing import Literal

from rulec.diagnostics import RulecError, SourceFile
from rulec.frontends.dumps import read_dump
from rulec.ir.nodes import Ruleset, Table
from rulec.ir.values import AddressSet, Family

LiveTarget = Literal["auto", "iptables", "nft"]
# The tables iptables-nft makes in nftables; any other table is someone's native nft.
_XTABLES = frozenset({"filter", "nat", "mangle", "raw", "security"})


class LiveError(Exception):
    """The kernel's rules cannot be read here (no tool, no privilege): says which and why."""


def _run(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        raise LiveError(f"{command[0]} is not installed")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LiveError(f"{' '.join(command)}: {exc}") from exc
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise LiveError(f"{' '.join(command)} failed: {reason[0]} (reading the kernel's rules "
                        "needs root)")
    return done.stdout


def detect_target() -> Literal["iptables", "nft"]:
    """nft when the kernel holds nftables tables iptables-nft did not make, else iptables."""
    if shutil.which("nft") is None:
        return "iptables"
    try:
        listed = json.loads(_run(["nft", "-j", "list", "tables"]))
    except (LiveError, ValueError):
        return "iptables"
    for item in listed.get("nftables", []):
        table = item.get("table") if isinstance(item, dict) else None
        if table and (table.get("family") not in ("ip", "ip6")
                      or table.get("name") not in _XTABLES):
            return "nft"
    return "iptables"


def read_live(target: LiveTarget = "auto", *, opaque: bool = False) -> Ruleset:
    """The kernel's rules now: both families' iptables tables, or the whole nft ruleset."""
    chosen = detect_target() if target == "auto" else target
    if chosen == "nft":
        text = _run(["nft", "-j", "list", "ruleset"])
        return read_dump(SourceFile("<live nft>", text), "nft-json", opaque=opaque)
    tables: list[Table] = []
    sets = live_ipsets()
    for tool, family in (("iptables-save", Family.IP), ("ip6tables-save", Family.IP6)):
        text = _run([tool])
        dump = read_dump(SourceFile(f"<live {tool}>", text), "iptables-save", family=family,
                         opaque=opaque, ipsets=sets)
        tables.extend(dump.tables)
    return Ruleset(tables=tuple(tables))


def live_ipsets() -> dict[str, AddressSet]:
    """The kernel's ipsets that rulec can read, by name (`-m set` matches need their members).
    A set of a type rulec does not model (fail2ban's timeouts, say) is left out: a rule that
    tests it then fails to import, closed, instead of one set failing every read."""
    from rulec.frontends.iptables_save import read_ipset

    if shutil.which("ipset") is None:
        return {}
    out: dict[str, AddressSet] = {}
    blocks: list[list[str]] = []
    for line in _run(["ipset", "save"]).splitlines():
        if line.startswith("create ") or not blocks:
            blocks.append([])
        blocks[-1].append(line)
    for block in blocks:
        try:
            out.update(read_ipset(SourceFile("<live ipset save>", "\n".join(block) + "\n")))
        except RulecError:
            continue
    return out


def _keys(table: Table, nft: bool) -> list[tuple[object, ...]]:
    """Where a table lives in the kernel: nft by family and table name (rulec's own default
    to rulec-<kind>, as the nft backend names them), iptables by family and table kind (an
    inet policy table is both families' tables there)."""
    if nft:
        return [(table.family, table.name or f"rulec-{table.kind.value}", table.kind)]
    families = (Family.IP, Family.IP6) if table.family is Family.INET else (table.family,)
    return [(family, table.kind) for family in families]


def owned_by(live: Ruleset, scope: Ruleset, *, nft: bool, noflush: bool = False) -> Ruleset:
    """`live` narrowed to the tables `scope` has, and with `noflush` (coexist mode) to the
    chains `scope` declares; those chains then count as entered from outside, as the scope's
    own are."""
    wanted = {key: t for t in scope.tables for key in _keys(t, nft)}
    tables = []
    for table in live.tables:
        mine = wanted.get(_keys(table, nft)[0])
        if mine is None:
            continue
        if noflush:
            declared = {c.name for c in mine.chains}
            table = replace(table, chains=tuple(c for c in table.chains if c.name in declared))
        tables.append(table)
    declared_user = frozenset(c.name for t in scope.tables for c in t.chains if c.hook is None)
    entry = scope.entry_points | (declared_user if noflush else frozenset())
    return replace(live, tables=tuple(tables), entry_points=entry)


def against_live(scope: Ruleset, target: Literal["iptables", "nft"], *, noflush: bool = False,
                 opaque: bool = False) -> tuple[Ruleset, Ruleset]:
    """The kernel's rules now narrowed to what `scope` (a policy as written) owns, and `scope`,
    both with the same external entrances: the two sides of a drift diff."""
    from rulec.validation import entered, entrances

    live = owned_by(read_live(target, opaque=opaque), scope, nft=target == "nft",
                    noflush=noflush)
    if noflush:
        scope = replace(scope, entry_points=live.entry_points)
    chains = entrances(scope)
    return entered(live, chains), entered(scope, chains)
