"""Read back what a namespace's kernel holds: iptables-save text (raw or reduced to its rules),
`nft -j list ruleset` parsed, and optionally legacy tables in-process through python-iptables.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, Literal

from rulec.kernel.netns import Namespace

IpFamily = Literal["ip", "ip6"]
Variant = Literal["nft", "legacy"]

_COUNTERS = re.compile(r"\s*\[\d+:\d+\]")


def iptables_save(ns: Namespace, family: IpFamily = "ip", variant: Variant = "nft",
                  table: str | None = None) -> str:
    """The raw output of `iptables-<variant>-save` (ip6tables for "ip6") inside `ns`."""
    tool = f"{'ip6' if family == 'ip6' else 'ip'}tables-{variant}-save"
    return ns.run([tool, *(["-t", table] if table else [])]).stdout


def rule_lines(save_text: str, *, keep_empty: bool = False) -> list[str]:
    """`*table`, `:CHAIN POLICY`, `-A ...` and `COMMIT` lines without comments or counters.

    Legacy iptables lists every table the namespace ever touched; unless `keep_empty`, tables
    with no rules, no user chains and only ACCEPT policies are left out, so both variants read
    back the same lines for the same ruleset.
    """
    out: list[str] = []
    section: list[str] = []
    for raw in save_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(":"):
            line = _COUNTERS.sub("", line)
        elif line.startswith("["):
            line = _COUNTERS.sub("", line, count=1).lstrip()
        section.append(line)
        if line == "COMMIT":
            if keep_empty or not _is_default(section):
                out.extend(section)
            section = []
    return out + section


def iptables_rules(ns: Namespace, family: IpFamily = "ip", variant: Variant = "nft",
                   table: str | None = None) -> list[str]:
    """iptables_save() reduced by rule_lines()."""
    return rule_lines(iptables_save(ns, family, variant, table))


def _is_default(section: list[str]) -> bool:
    chains = [line for line in section if line.startswith(":")]
    rules = [line for line in section if line.startswith("-")]
    return not rules and all(line.split()[1] == "ACCEPT" for line in chains)


def nft_list(ns: Namespace) -> dict[str, Any]:
    """`nft -j list ruleset` inside `ns`, parsed: {"nftables": [{"metainfo": ...}, ...]}."""
    parsed: dict[str, Any] = json.loads(ns.run(["nft", "-j", "list", "ruleset"]).stdout)
    return parsed


def nft_objects(ns: Namespace, kind: str) -> list[dict[str, Any]]:
    """The objects of one kind ("table", "chain", "rule", "set") from nft_list()."""
    return [item[kind] for item in nft_list(ns)["nftables"] if kind in item]


# python-iptables keeps one handle per table name for the whole process: one reader at a time.
_IPTC_LOCK = threading.Lock()


def legacy_table(ns: Namespace, table: str = "filter",
                 family: IpFamily = "ip") -> dict[str, dict[str, Any]]:
    """A legacy x_tables table read in-process with python-iptables (extra `rulec[kernel]`):
    {chain: {"policy": "DROP" or None, "rules": [python-iptables' rule dicts]}}.

    ImportError if python-iptables is missing; iptables_save() is the path that always works.
    """
    import iptc  # type: ignore[import-untyped, import-not-found, unused-ignore]

    def read() -> dict[str, dict[str, Any]]:
        cls = iptc.Table6 if family == "ip6" else iptc.Table
        # Autocommit off before anything else: on refresh a cached handle would otherwise
        # commit its stale copy into whichever namespace it was opened in.
        handle = cls(table, autocommit=False)
        handle.refresh()  # opens the handle from this thread, so inside `ns`
        try:
            return {chain.name: {
                "policy": chain.get_policy().name if handle.builtin_chain(chain.name) else None,
                "rules": [{k: v for k, v in iptc.easy.decode_iptc_rule(r, family == "ip6").items()
                           if k != "counters"} for r in chain.rules],
            } for chain in handle.chains}
        finally:
            handle.close()

    with _IPTC_LOCK:
        return ns.call(read)


__all__ = ["iptables_rules", "iptables_save", "legacy_table", "nft_list", "nft_objects",
           "rule_lines"]
