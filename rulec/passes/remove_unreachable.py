"""Remove what no packet can reach: rules after an unconditional verdict, user chains nothing
jumps to, and jumps to empty chains (a goto to an empty chain becomes `return`).

    before:  chain INPUT {                      after:  chain INPUT {
               jump nothing                               accept tcp dport 22
               accept tcp dport 22                        drop
               drop                                     }
               accept udp      # never reached
             }
             chain nothing { }
             chain unused { accept }
"""

from __future__ import annotations

from dataclasses import replace

from rulec.diagnostics import Diagnostic, Span, warning
from rulec.ir.nodes import ANY, NON_TERMINAL, Chain, Goto, Jump, Return, Rule, Ruleset, Table
from rulec.ir.nodes import targets as action_targets
from rulec.passes.context import PassContext

CODE = "W0101"


def remove_unreachable(ruleset: Ruleset, ctx: PassContext) -> Ruleset:
    """Drop rules and chains no packet can reach; every packet meets the same actions.

    - Rules after an unconditional terminal rule of the same chain: empty match, action other
      than jump, log, mark or mss (a rate limit is a condition; a jump comes back).
    - User chains no rule of their table jumps or goes to, unless named in
      `ruleset.entry_points` (something outside the policy jumps to them).
    - Jumps to empty user chains, which return at once. Not when the rule has statements
      (its log or counter is observable) or the chain is an entry point (others fill it).
      A goto to an empty chain is not a no-op - the packet returns to the caller's caller -
      so it becomes `return` with the same match, which is exactly that.
    Repeats until nothing changes. Every removed rule with a span gets a W0101 warning in
    `ctx.warnings`.

    >>> from rulec.api import parse_text
    >>> from rulec.ir.printer import print_ruleset
    >>> r = parse_text("table ip filter { chain INPUT { drop\\n accept } }")
    >>> print(print_ruleset(remove_unreachable(r, PassContext())), end="")
    table ip filter {
      chain INPUT {
        drop
      }
    }
    """
    tables = tuple(_table(t, ruleset.entry_points, ctx.warnings) for t in ruleset.tables)
    if all(a is b for a, b in zip(tables, ruleset.tables, strict=True)):
        return ruleset
    return replace(ruleset, tables=tables)


def _table(table: Table, entry_points: frozenset[str], warnings: list[Diagnostic]) -> Table:
    chains = table.chains
    touched = False
    while True:
        changed = False
        empty = {c.name for c in chains
                 if c.hook is None and not c.rules and c.name not in entry_points}
        new_chains: list[Chain] = []
        for chain in chains:
            rules = _chain_rules(chain, empty, warnings)
            if rules is not chain.rules:
                chain = replace(chain, rules=rules)
                changed = True
            new_chains.append(chain)
        # targets(): a verdict map's entries reach chains too.
        targets = {t for c in new_chains for r in c.rules for t in action_targets(r.action)}
        kept = []
        for chain in new_chains:
            if chain.hook is None and chain.name not in targets | entry_points:
                for rule in chain.rules:
                    _warn(warnings, rule, f"rule is never reached: nothing jumps to chain "
                          f"{chain.name}", f"if something outside the policy jumps to "
                          f"{chain.name}, declare it as an entry point")
                changed = True
            else:
                kept.append(chain)
        chains = tuple(kept)
        if not changed:
            return replace(table, chains=chains) if touched else table
        touched = True


def _chain_rules(chain: Chain, empty: set[str], warnings: list[Diagnostic]) -> tuple[Rule, ...]:
    """The chain's rules without dead ones; the same tuple if nothing changed."""
    out: list[Rule] = []
    changed = False
    for index, rule in enumerate(chain.rules):
        action = rule.action
        target = action.target if isinstance(action, Jump | Goto) else None
        if target in empty and isinstance(action, Jump) and not rule.statements:
            _warn(warnings, rule, f"jump to empty chain {target} does nothing; removed")
            changed = True
            continue
        if target in empty and isinstance(action, Goto):
            rule = replace(rule, action=Return())
            changed = True
        out.append(rule)
        if rule.match == ANY and not isinstance(rule.action, NON_TERMINAL):
            dead = chain.rules[index + 1:]
            for other in dead:
                _warn(warnings, other, f"rule is never reached: an earlier rule of chain "
                      f"{chain.name} ends every packet's walk", *_at(rule.span))
            changed = changed or bool(dead)
            break
    return tuple(out) if changed else chain.rules


def _at(span: Span | None) -> tuple[str, ...]:
    return (f"the unconditional rule is at {span}",) if span is not None else ()


def _warn(warnings: list[Diagnostic], rule: Rule, message: str, *notes: str) -> None:
    if rule.span is not None:
        warnings.append(warning(CODE, message, rule.span, *notes))
