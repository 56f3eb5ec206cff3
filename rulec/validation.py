"""Translation validation: every artefact read back and proven to mean what the policy says.

After a backend prints, its output is imported (rulec.frontends.dumps) and the diff engine
compares it with the policy as written, before any pass. A difference is a bug in rulec (a pass
or a backend), never the user's: `ValidationError` carries the diff, whose witness packet and
deciding rules on both sides say where, and nothing is written.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from rulec.backends.base import Artifact
from rulec.diagnostics import SourceFile
from rulec.frontends.dumps import Format, read_dump
from rulec.ir.nodes import BUILTIN_CHAINS, Chain, Jump, Policy, Rule, Ruleset, targets
from rulec.ir.values import Family

if TYPE_CHECKING:
    from rulec.analysis.diff import Diff

_FORMAT: dict[str, Format] = {"iptables": "iptables-save", "ip6tables": "iptables-save",
                              "nft": "nft", "nft-json": "nft-json"}
_FAMILIES = {"iptables": (Family.IP,), "ip6tables": (Family.IP6,)}


class ValidationError(Exception):
    """The artefact does not mean what the policy means: a bug in rulec."""

    def __init__(self, target: str, result: Diff) -> None:
        super().__init__(f"the {target} output differs from the policy as written "
                         f"({len(result.changes)} changes)")
        self.target = target
        self.diff = result


def read_artifact(artifact: Artifact) -> Ruleset:
    """What a backend printed, read back as a host's dump would be."""
    name = f"<{artifact.target} output>"
    ipsets = None
    if artifact.ipsets:
        from rulec.frontends.iptables_save import read_ipset

        ipsets = read_ipset(SourceFile(f"<{artifact.target} ipsets>", artifact.ipsets))
    family = {"iptables": Family.IP, "ip6tables": Family.IP6}.get(artifact.target)
    return read_dump(SourceFile(name, artifact.text), _FORMAT[artifact.target],
                     family=family, ipsets=ipsets)


def validate(policy: Ruleset, artifact: Artifact) -> Diff:
    """Prove `artifact` does to every packet what `policy` (as written) does, for the
    families the artefact covers; ValidationError with the differences otherwise."""
    from rulec.analysis.diff import diff

    imported = replace(read_artifact(artifact), entry_points=policy.entry_points)
    families = _FAMILIES.get(artifact.target, (Family.IP, Family.IP6))
    chains = entrances(policy)
    result = diff(entered(policy, chains), entered(imported, chains), families)
    if not result.equivalent:
        raise ValidationError(artifact.target, result)
    return result


def entrances(ruleset: Ruleset) -> frozenset[str]:
    """The external chains (DOCKER-USER, coexist mode's declared chains) no base chain of
    their table reaches: something outside the ruleset jumps there."""
    out = set()
    for table in ruleset.tables:
        chains = {c.name: c for c in table.chains}
        reached: set[str] = set()
        todo = [c.name for c in table.chains if c.hook is not None]
        while todo:
            name = todo.pop()
            if name in reached or name not in chains:
                continue
            reached.add(name)
            todo.extend(t for r in chains[name].rules for t in targets(r.action))
        out |= {n for n in ruleset.entry_points if n in chains and n not in reached}
    return frozenset(out)


def entered(ruleset: Ruleset, chains: frozenset[str]) -> Ruleset:
    """`ruleset` with each of `chains` it has entered first from every built-in chain of
    its table (added where undeclared), so an analysis sees them as whatever jumps there
    from outside may. Both sides of a comparison get the same `chains` (entrances() of one
    of them), so the entrances add no difference of their own."""
    if not chains:
        return ruleset
    tables = []
    for table in ruleset.tables:
        external = tuple(Rule(action=Jump(c.name)) for c in table.chains
                         if c.hook is None and c.name in chains)
        if not external:
            tables.append(table)
            continue
        have = {c.hook: c for c in table.chains if c.hook is not None}
        added = tuple(Chain(name=hook.value, hook=hook, policy=Policy.ACCEPT, rules=external)
                      for hook in BUILTIN_CHAINS[table.kind] if hook not in have)
        kept = tuple(replace(c, rules=(*external, *c.rules)) if c.hook is not None else c
                     for c in table.chains)
        tables.append(replace(table, chains=(*added, *kept)))
    return replace(ruleset, tables=tuple(tables))
