"""What `rulec check` finds that is almost always a mistake, beyond what verify refuses and
what the optimiser's shadowing warning (W0102) says:

- W0901: a rule no packet that reaches it can match: it tests the input interface in a chain
  only OUTPUT reaches (packets this host sends have none), the output interface in a chain
  only PREROUTING or INPUT reaches (no output interface is chosen yet, or ever), or an
  address type its own address test rules out (multicast outside 224.0.0.0/4 or ff00::/8,
  IPv6 broadcast);
- W0902: an allow/deny conflict: a later rule of a chain overlaps an earlier one of the
  opposite verdict, and neither holds the other, so the packets they share get the earlier
  rule's verdict though the later rule says otherwise. An earlier rule inside a later one is
  the usual exception-before-the-rule idiom and is not reported; a later rule inside an
  earlier one is shadowed (W0102). Each conflict comes with a witness packet, confirmed on
  both rules by the reference evaluator;
- W0903: a chain too long to search for conflicts (pairs grow as the square), said rather
  than skipped silently.
"""

from __future__ import annotations

from dataclasses import replace

from rulec.analysis.engine import Engine
from rulec.analysis.render import packet_text
from rulec.analysis.space import AnalysisError, F
from rulec.diagnostics import Diagnostic, warning
from rulec.ir import nodes as ir
from rulec.ir.evaluate import Packet, matches
from rulec.ir.intervals import Intervals, intersect
from rulec.ir.values import AddrTypeKind, Family, Prefix

# Chains with more verdict rules than this are not searched for conflicts (pairs grow as the
# square); `check` says so rather than take minutes.
MAX_CONFLICT_RULES = 2000
_ACCEPT, _DENY = "accept", "deny"
_MULTICAST = {Family.IP: Prefix(Family.IP, 0xE0000000, 4),
              Family.IP6: Prefix(Family.IP6, 0xFF << 120, 8)}


def findings(ruleset: ir.Ruleset) -> list[Diagnostic]:
    out: dict[tuple[object, ...], Diagnostic] = {}
    for family in (Family.IP, Family.IP6):
        try:
            engine = Engine.build([ruleset], family)
        except AnalysisError:
            continue  # marks beyond the engine: nothing to say about this family
        for t, table in enumerate(ruleset.tables):
            if table.family not in (family, Family.INET):
                continue
            reach = engine.reach(t)
            for chain in table.chains:
                hooks = reach.get(chain.name, frozenset())
                rules = [flat for rule in chain.rules for flat in ir.vmap_rules(rule)]
                for rule in rules:
                    reason = _never(rule, hooks, family)
                    if reason and rule.span is not None:
                        out.setdefault(("never", rule.span), warning(
                            "W0901", f"this rule can never match: {reason}", rule.span,
                            "remove it, or move it where packets it means can reach it"))
                for found in _conflicts(engine, table, chain, rules, hooks, family):
                    out.setdefault(found[0], found[1])
    return list(out.values())


def _never(rule: ir.Rule, hooks: frozenset[ir.Hook], family: Family) -> str | None:
    m = rule.match
    if not hooks or (m.family is not None and m.family is not family):
        return None
    if m.iifname is not None and not m.iifname.matches(None) and hooks <= {ir.Hook.OUTPUT}:
        return (f"it tests the input interface ({m.iifname}) but only OUTPUT reaches its "
                "chain, and packets this host sends have no input interface")
    if m.oifname is not None and not m.oifname.matches(None) and hooks <= {
            ir.Hook.PREROUTING, ir.Hook.INPUT}:
        return (f"it tests the output interface ({m.oifname}) but only PREROUTING or INPUT "
                "reaches its chain, where packets have no output interface")
    for kind, value, word in ((m.dst_type, m.daddr, "destination"),
                              (m.src_type, m.saddr, "source")):
        if kind is None or kind.negated:
            continue
        if kind.kind is AddrTypeKind.BROADCAST and family is Family.IP6:
            return f"IPv6 has no broadcast {word} addresses"
        if kind.kind is AddrTypeKind.MULTICAST and value is not None and not value.negated:
            block = _MULTICAST[family]
            own = [p for p in value.prefixes if p.family is family]
            if own and not any(p.first <= block.last and block.first <= p.last for p in own):
                return f"its {word} addresses lie outside {block}, so none is multicast"
    return None


def _verdict(rule: ir.Rule) -> str | None:
    if rule.match.limit is not None:  # over the limit, the rule does not decide
        return None
    if isinstance(rule.action, ir.Accept):
        return _ACCEPT
    if isinstance(rule.action, ir.Drop | ir.Reject):
        return _DENY
    return None


def _conflicts(engine: Engine, table: ir.Table, chain: ir.Chain, rules: list[ir.Rule],
               hooks: frozenset[ir.Hook], family: Family
               ) -> list[tuple[tuple[object, ...], Diagnostic]]:
    judged = [(r, v) for r in rules if (v := _verdict(r)) is not None and r.span is not None]
    if not hooks:
        return []
    if len(judged) > MAX_CONFLICT_RULES:
        return [(("unsearched", table.kind, table.family, chain.name), warning(
            "W0903", f"chain {chain.name} was not searched for allow/deny conflicts: it has "
            f"{len(judged)} accept and deny rules, more than {MAX_CONFLICT_RULES}",
            chain.span, "jump to smaller chains (by source, by service) to have each searched"))]
    tested = [(r, v, t) for r, v in judged if (t := engine.tests_of(r)) is not None]
    out: list[tuple[tuple[object, ...], Diagnostic]] = []
    for j, (later, verdict, later_tests) in enumerate(tested):
        for earlier, other, earlier_tests in tested[:j]:
            if other == verdict or not _meet(earlier_tests, later_tests):
                continue
            # `accept ct state established,related` before the policy's denies is layering,
            # not a conflict: a rule that tests nothing but the state is left out.
            if set(earlier_tests) <= {F.CT_STATE} or set(later_tests) <= {F.CT_STATE}:
                continue
            if _within(later, later_tests, earlier, earlier_tests) or _within(
                    earlier, earlier_tests, later, later_tests):
                continue
            packet = _witness(engine, earlier, later, earlier_tests, later_tests, hooks)
            if packet is None:
                continue
            assert earlier.span is not None and later.span is not None
            word = "accepted" if other == _ACCEPT else "dropped"
            out.append(((("conflict", earlier.span, later.span)), warning(
                "W0902", f"this rule overlaps an earlier rule of the opposite verdict "
                f"({earlier.span.file}:{earlier.span.line}): the packets both match are "
                f"{word} by that one", later.span,
                f"e.g. {packet_text(packet, False)}",
                "neither rule holds the other; if the overlap is meant, split one of them "
                "so that each packet's verdict is written once")))
    return out


def _meet(a: dict[F, Intervals], b: dict[F, Intervals]) -> bool:
    return all(intersect(a[f], b[f]) for f in a.keys() & b.keys())


def _subset(inner: Intervals, outer: Intervals) -> bool:
    return intersect(inner, outer) == inner


def _within(inner: ir.Rule, inner_tests: dict[F, Intervals], outer: ir.Rule,
            outer_tests: dict[F, Intervals]) -> bool:
    """Whether every packet `inner` matches, `outer` matches too (tests field by field;
    address types only when both test the same)."""
    for kind in ("dst_type", "src_type"):
        if getattr(outer.match, kind) is not None and getattr(
                outer.match, kind) != getattr(inner.match, kind):
            return False
    return all(f in inner_tests and _subset(inner_tests[f], outer_tests[f])
               for f in outer_tests)


def _witness(engine: Engine, earlier: ir.Rule, later: ir.Rule, a: dict[F, Intervals],
             b: dict[F, Intervals], hooks: frozenset[ir.Hook]) -> Packet | None:
    """A packet both rules match on a path that reaches the chain, confirmed by the
    reference evaluator; None if the lines' overlap holds none."""
    incoming = bool(hooks - {ir.Hook.OUTPUT})
    to_host = not hooks & {ir.Hook.FORWARD} and ir.Hook.INPUT in hooks
    cell: list[Intervals | None] = [None] * len(F)
    for fld in engine.order:
        if fld is F.PATH:
            cell[fld] = ((0, 0),) if incoming else ((1, 1),)
            continue
        if fld is F.DADDR_LOCAL:
            cell[fld] = ((1, 1),) if to_host else ((0, 0),)
            continue
        if fld is F.PROTO:
            proto = intersect(a.get(fld, ((0, 255),)), b.get(fld, ((0, 255),)))
            if not proto:
                return None
            pick = next((p for p in (6, 17, 1, 58) if any(lo <= p <= hi for lo, hi in proto)),
                        proto[0][0])
            cell[fld] = ((pick, pick),)
            continue
        domain = engine.domain(fld, cell)
        if domain is None:
            continue
        values = intersect(intersect(domain, a.get(fld, domain)), b.get(fld, domain))
        if not values:
            return None
        cell[fld] = values
    found = engine.representative(cell)
    if found is None:
        return None
    packet, host = found
    if not (matches(earlier.match, packet, host) and matches(later.match, packet, host)):
        return None  # an address type the lines do not hold: no witness, no warning
    return replace(packet, ct_orig_dport=None) if packet.ct_orig_dport == packet.dport \
        else packet


__all__ = ["MAX_CONFLICT_RULES", "findings"]
