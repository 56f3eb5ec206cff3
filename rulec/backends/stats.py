"""Counting what an artifact asks the kernel to hold: rules per table, for `--stats`."""

from __future__ import annotations

import json
from collections import Counter

from rulec.backends.base import Artifact


def kernel_rule_counts(artifact: Artifact) -> dict[str, int]:
    """Rules per table ("filter", or "inet rulec-filter" for nft) in the emitted text."""
    counts: Counter[str] = Counter()
    if artifact.target in ("iptables", "ip6tables"):
        table = ""
        for line in artifact.text.splitlines():
            if line.startswith("*"):
                table = line[1:]
                counts[table] += 0
            elif line.startswith("-A "):
                counts[table] += 1
    elif artifact.target == "nft-json":
        for command in json.loads(artifact.text)["nftables"]:
            rule = command.get("add", {}).get("rule")
            if rule is not None:
                counts[f"{rule['family']} {rule['table']}"] += 1
    else:
        table, block, depth = "", "", 0
        for line in artifact.text.splitlines():
            stripped = line.strip()
            if depth == 0 and stripped.startswith("table ") and stripped.endswith("{"):
                table = stripped[len("table "):-1].strip()
                counts[table] += 0
            if depth == 1 and stripped.endswith("{"):
                block = stripped.split()[0]  # chain, set or map
            # Inside a chain every line but the base-chain declaration is a rule.
            if (depth == 2 and block == "chain" and stripped and stripped != "}"
                    and not stripped.startswith("type ")):
                counts[table] += 1
            depth += stripped.count("{") - stripped.count("}")
    return dict(counts)
