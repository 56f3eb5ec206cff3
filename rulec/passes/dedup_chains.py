"""Make structurally identical user chains one: the first (in table order) stays, jumps and
gotos to the others are retargeted to it, and the others are removed.

    before:  chain INPUT { jump a from 10.0.0.1      after:  chain INPUT { jump a from 10.0.0.1
                           jump b from 10.0.0.2 }                          jump a from 10.0.0.2 }
             chain a { accept tcp dport 22 }                 chain a { accept tcp dport 22 }
             chain b { accept tcp dport 22 }
"""

from __future__ import annotations

from dataclasses import replace

from rulec.diagnostics import Span
from rulec.ir.nodes import Chain, Goto, Jump, Rule, Ruleset, Table, Vmap
from rulec.passes.context import PassContext


def dedup_chains(ruleset: Ruleset, ctx: PassContext) -> Ruleset:
    """Merge user chains with equal rules (spans and origins aside) into the first of them.

    Preserves every packet's walk: equal chains do the same to every packet, wherever they are
    entered from. Repeats until no two chains are equal, since retargeting can make chains
    equal. Refuses entry points (something outside the policy jumps to them or fills them)
    and chains with a rate limit (each rule is its own token bucket; sharing one chain would
    share the buckets). The kept chain's rules list the removed chains' rule spans in
    `origins`.

    >>> from rulec.api import parse_text
    >>> from rulec.ir.printer import print_ruleset
    >>> r = parse_text("table ip filter { chain INPUT { jump a\\n jump b }\\n"
    ...                "chain a { drop udp }\\n chain b { drop udp } }")
    >>> print(print_ruleset(dedup_chains(r, PassContext())), end="")
    table ip filter {
      chain INPUT {
        jump a
        jump a
      }
      chain a {
        drop udp
      }
    }
    """
    tables = tuple(_table(t, ruleset.entry_points) for t in ruleset.tables)
    if all(a is b for a, b in zip(tables, ruleset.tables, strict=True)):
        return ruleset
    return replace(ruleset, tables=tables)


def _table(table: Table, entry_points: frozenset[str]) -> Table:
    chains = table.chains
    while True:
        first: dict[tuple[Rule, ...], int] = {}
        rename: dict[str, str] = {}
        merged: dict[int, list[Chain]] = {}  # kept chain's index -> the chains merged into it
        for index, chain in enumerate(chains):
            if (chain.hook is not None or chain.name in entry_points
                    or any(r.match.limit is not None for r in chain.rules)):
                continue
            keep = first.setdefault(chain.rules, index)
            if keep != index:
                rename[chain.name] = chains[keep].name
                merged.setdefault(keep, []).append(chain)
        if not rename:
            return table if chains is table.chains else replace(table, chains=chains)
        out = []
        for index, chain in enumerate(chains):
            if chain.name in rename:
                continue
            rules = tuple(_retarget(r, rename) for r in chain.rules)
            for other in merged.get(index, ()):
                rules = tuple(_with_origins(r, o) for r, o in zip(rules, other.rules,
                                                                  strict=True))
            out.append(replace(chain, rules=rules))
        chains = tuple(out)


def _retarget(rule: Rule, rename: dict[str, str]) -> Rule:
    action = rule.action
    if isinstance(action, Jump | Goto) and action.target in rename:
        return replace(rule, action=type(action)(rename[action.target]))
    if isinstance(action, Vmap) and any(isinstance(v, Jump | Goto) and v.target in rename
                                        for _, v in action.entries):
        entries = tuple((value, type(v)(rename[v.target]) if isinstance(v, Jump | Goto)
                         and v.target in rename else v) for value, v in action.entries)
        return replace(rule, action=replace(action, entries=entries))
    return rule


def _with_origins(rule: Rule, other: Rule) -> Rule:
    spans: tuple[Span, ...] = (other.span,) if other.span is not None else ()
    return replace(rule, origins=(*rule.origins, *spans, *other.origins))
