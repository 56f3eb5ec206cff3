"""The loaders `rulec apply` drives, in the caller's network namespace: what it saves, what it
sends, and how it puts the saved state back. Every command sent is recorded (`Host.sent`), so
a caller (and the tests) can see exactly what changed the kernel.

iptables: ipsets load first (`ipset restore -exist`), then IPv4, then IPv6, each restore one
kernel transaction per table; rulec's ipsets are named by their members, so loading one never
changes a set the running rules use, and the sets no rule uses any more are destroyed last.
nft: one `nft -f` transaction replaces every table the policy owns.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field

XTABLES_WAIT = "10"  # seconds to wait for the xtables lock another iptables user holds
TIMEOUT = 300
_BUILTIN = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
_RULEC_SET = re.compile(r"rulec[46]_[0-9a-f]{16}")
RESTORE = {"ip": "iptables-restore", "ip6": "ip6tables-restore"}
SAVE = {"ip": "iptables-save", "ip6": "ip6tables-save"}


class LoadError(Exception):
    """A loader refused what it was sent; `stderr` is its own message."""

    def __init__(self, argv: tuple[str, ...], stderr: str) -> None:
        super().__init__(f"{' '.join(argv)} failed: {stderr.strip() or 'no message'}")
        self.argv = argv
        self.stderr = stderr


@dataclass(frozen=True, slots=True)
class Sent:
    """One command that changed the kernel, and what it read on standard input."""

    argv: tuple[str, ...]
    text: str = ""


@dataclass
class Host:
    sent: list[Sent] = field(default_factory=list)

    def read(self, *argv: str) -> str:
        return self._run(argv, "")

    def send(self, argv: tuple[str, ...], text: str = "") -> None:
        self.sent.append(Sent(argv, text))
        self._run(argv, text)

    @staticmethod
    def _run(argv: tuple[str, ...], text: str) -> str:
        if shutil.which(argv[0]) is None:
            raise LoadError(argv, f"{argv[0]} is not installed")
        try:
            done = subprocess.run(argv, input=text, capture_output=True, text=True,
                                  timeout=TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LoadError(argv, str(exc)) from exc
        if done.returncode != 0:
            raise LoadError(argv, done.stderr or f"exit status {done.returncode}")
        return done.stdout


# -- iptables-save text ----------------------------------------------------------------------

@dataclass
class SaveTable:
    """One `*table` section: chain -> policy ('-' for a user chain), and its lines in order."""

    name: str
    # None: a builtin chain a --noflush file only flushes (`-F NAME`), keeping its policy.
    policies: dict[str, str | None] = field(default_factory=dict)
    counters: dict[str, str] = field(default_factory=dict)
    rules: dict[str, list[str]] = field(default_factory=dict)


def parse_save(text: str) -> dict[str, SaveTable]:
    tables: dict[str, SaveTable] = {}
    current: SaveTable | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = tables[line[1:]] = SaveTable(line[1:])
        elif line == "COMMIT":
            current = None
        elif current is None:
            continue
        elif line.startswith(":"):
            name, policy, *rest = line[1:].split()
            current.policies[name] = policy
            current.counters[name] = rest[0] if rest else "[0:0]"
            current.rules.setdefault(name, [])
        elif line.startswith("-F ") and len(line.split()) == 2:
            chain = line.split()[1]
            current.policies.setdefault(chain, None)
            current.counters.setdefault(chain, "[0:0]")
            current.rules.setdefault(chain, [])
        else:
            body = line
            if body.startswith("["):  # `[packets:bytes] -A ...` with -c
                body = body.split("] ", 1)[1]
            chain = body.split()[1] if body.startswith("-A ") else ""
            current.rules.setdefault(chain, []).append(line)
    return tables


def empty_section(table: str) -> list[str]:
    return [f"*{table}", *(f":{c} ACCEPT [0:0]" for c in _BUILTIN.get(table, ())), "COMMIT"]


def section(table: SaveTable) -> list[str]:
    lines = [f"*{table.name}"]
    lines += [f":{c} {p} {table.counters[c]}" for c, p in table.policies.items()]
    lines += [line for c in table.policies for line in table.rules.get(c, [])]
    return [*lines, "COMMIT"]


def chains_restore(old: dict[str, SaveTable], new: dict[str, SaveTable],
                   chains: dict[str, set[str]], *, delete: bool) -> str:
    """`iptables-restore --noflush` input that makes `chains` (table -> names) of the kernel,
    which holds `old`, what `new` says: each one flushed and refilled, created if new, and
    (`delete`) deleted when `new` lacks it. Everything else in the kernel is left alone."""
    lines = []
    for name in sorted(chains):
        wanted, held = new.get(name, SaveTable(name)), old.get(name, SaveTable(name))
        names = chains[name]
        lines.append(f"*{name}")
        for chain in sorted(names):
            if chain in wanted.policies:
                policy = wanted.policies[chain]
                if policy is not None:
                    lines.append(f":{chain} {policy} {wanted.counters[chain]}")
                lines.append(f"-F {chain}")
            elif chain in held.policies:
                lines.append(f"-F {chain}")
        for chain in sorted(names):
            lines += wanted.rules.get(chain, []) if chain in wanted.policies else []
        if delete:
            lines += [f"-X {c}" for c in sorted(names)
                      if c in held.policies and c not in wanted.policies
                      and held.policies[c] == "-"]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def changed_chains(old: dict[str, SaveTable], new: dict[str, SaveTable], *,
                   declared_only: bool) -> dict[str, set[str]]:
    """Per table of `new`, the chains whose policy or rules differ (counters aside); with
    `declared_only` (coexist mode) only the chains `new` declares count."""
    out: dict[str, set[str]] = {}
    for name, wanted in new.items():
        held = old.get(name, SaveTable(name))
        differ = set()
        names = set(wanted.policies) if declared_only else set(held.policies) | set(
            wanted.policies)
        for chain in names:
            policy = wanted.policies.get(chain)
            if (chain not in held.policies or chain not in wanted.policies
                    or (policy is not None and policy != held.policies[chain])
                    or _bare(chain, held.rules.get(chain, []))
                    != _bare(chain, wanted.rules.get(chain, []))):
                differ.add(chain)
        if differ:
            out[name] = differ
    return out


def _bare(chain: str, lines: list[str]) -> list[str]:
    """The rule lines without counters, and without a last unconditional RETURN: leaving the
    chain at its end does the same. dockerd appends `-j RETURN` to a DOCKER-USER that lacks
    one at every `docker network create`; counting it would reload DOCKER-USER (its counters
    reset) at each apply after that, though the dry run finds nothing to change."""
    bare = [line.split("] ", 1)[1] if line.startswith("[") else line for line in lines]
    if bare and bare[-1] == f"-A {chain} -j RETURN":
        bare.pop()
    return bare


def rulec_sets_used(save_texts: list[str]) -> set[str]:
    return {m.group(0) for text in save_texts for m in _RULEC_SET.finditer(text)}


def ipset_names(save_text: str) -> set[str]:
    return {line.split()[1] for line in save_text.splitlines()
            if line.startswith("create ") and len(line.split()) > 1}


def set_signature(ipsets: str, name: str) -> tuple[str, frozenset[str]]:
    """A set's type and members as `ipset save` or rulec print them (/32 and /128 aside)."""
    kind, members = "", set()
    for line in ipsets.splitlines():
        words = line.split()
        if len(words) < 3 or words[1] != name:
            continue
        if words[0] == "create":
            family = words[words.index("family") + 1] if "family" in words else "inet"
            kind = f"{words[2]} {family}"
        elif words[0] == "add":
            member = words[2]
            members.add(member.removesuffix("/32") if "." in member
                        else member.removesuffix("/128"))
    return kind, frozenset(members)


def rulec_set_lines(ipsets: str, names: set[str]) -> str:
    """The `ipset restore` lines of `ipsets` (rulec's own) for the sets in `names` only."""
    keep = [line for line in ipsets.splitlines()
            if line.startswith("#") or (len(line.split()) > 1 and line.split()[1] in names)]
    return "\n".join(keep) + "\n"


# -- nft ---------------------------------------------------------------------------------------

_DELETE_TABLE = re.compile(r"^delete table (\S+) (\S+)$", re.MULTILINE)


def nft_owned(artifact_text: str) -> list[tuple[str, str]]:
    """The tables an nft artifact replaces: rulec prints `table F N` + `delete table F N`."""
    return _DELETE_TABLE.findall(artifact_text)


def nft_tables(host: Host) -> set[tuple[str, str]]:
    listed = json.loads(host.read("nft", "-j", "list", "tables"))
    out = set()
    for item in listed.get("nftables", []):
        table = item.get("table") if isinstance(item, dict) else None
        if isinstance(table, dict):
            out.add((str(table.get("family")), str(table.get("name"))))
    return out


def nft_replace(owned: list[tuple[str, str]], listing: str) -> str:
    """One nft transaction: every table in `owned` deleted (created first, so the delete
    cannot fail), then `listing` (`nft list table` output of the tables to put back)."""
    head = [f"table {f} {n}\ndelete table {f} {n}" for f, n in owned]
    return "\n".join(["# rulec apply: put back the saved tables", *head, listing]) + "\n"
