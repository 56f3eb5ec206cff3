"""The refusals specific to nft (text and JSON alike), collected with spans before anything is
printed."""

from __future__ import annotations

from rulec.backends.lowering import split_families
from rulec.backends.nft.vocabulary import (
    MAX_RATE_PLUS_BURST,
    chain_name,
    interface_pattern,
    table_name,
    text_problem,
    valid_chain_name,
)
from rulec.diagnostics import Collector
from rulec.ir.nodes import (
    Log,
    Rule,
    Ruleset,
    Table,
    TableKind,
    Vmap,
    targets,
)
from rulec.ir.values import (
    PORT_PROTOCOLS,
    Family,
    Interface,
)
from rulec.ir.verify import (
    TargetLimits,
    ifname_too_long,
    unquotable_notes,
    verify_jump_depth,
)


def lower(ruleset: Ruleset, limits: TargetLimits) -> Ruleset:
    """The nft lowerings, then every nft-specific refusal at once (RulecError)."""
    ruleset = split_families(ruleset)
    check(ruleset, limits)
    return ruleset

def check(ruleset: Ruleset, limits: TargetLimits) -> None:
    """Refusals specific to nft, all collected, with spans; verify() has run before."""
    out = Collector()
    seen: set[tuple[Family, TableKind, str | None]] = set()
    # Chain names per nft table: IR tables of different kinds may share a named table.
    chain_names: dict[tuple[Family, str | None], set[str]] = {}
    for table in ruleset.tables:
        if (table.family, table.kind, table.name) in seen:
            out.error("E0404", f"table {table.family.value} {table.kind.value} is declared "
                      "twice", table.span, "nft replaces a table as a whole; merge them")
        seen.add((table.family, table.kind, table.name))
        reached = _reachable(table)
        verify_jump_depth(table, ruleset.entry_points, out)
        names = chain_names.setdefault((table.family, table.name), set()) if table.name else set()
        for chain in table.chains:
            printed = chain_name(table, chain)
            if printed in names:  # nft would silently append the second one to the first
                out.error("E0404", f"chain {printed} is declared twice in table "
                          f"{table.family.value} {table_name(table)}", chain.span)
            names.add(printed)
            if chain.rules and chain.name not in reached:
                out.error("E0404", f"chain {chain.name} is never reached in {limits.target}",
                          chain.span, "no chain outside rulec's own table can jump to it "
                          "(e.g. dockerd's FORWARD to DOCKER-USER); jump to it from a "
                          "built-in chain of this table")
            if not valid_chain_name(printed):
                out.error("E0403", f"{chain.name!r} cannot name a chain in {limits.target}",
                          chain.span, "use letters, digits and / _ . -, starting with a "
                          "letter or _, and no nft keyword")
            for rule in chain.rules:
                _check_rule(rule, limits, out)
    out.raise_if_errors()


def _reachable(table: Table) -> set[str]:
    """Chains a packet can reach: nft tables are private, so only from this table's hooks."""
    chains = {c.name: c for c in table.chains}
    todo = [c.name for c in table.chains if c.hook is not None]
    reached = set(todo)
    while todo:
        for rule in chains[todo.pop()].rules:
            for target in targets(rule.action):
                if target in chains.keys() - reached:
                    reached.add(target)
                    todo.append(target)
    return reached


# The Match fields both printers spell out; a field added to the IR later is refused, not
# silently dropped.
PRINTED_FIELDS = frozenset({
    "family", "proto", "saddr", "daddr", "sport", "dport", "iifname", "oifname", "ct_state",
    "ct_orig_dport", "src_type", "dst_type", "tcp_flags", "icmp_type", "mark", "limit",
})


def _check_rule(rule: Rule, limits: TargetLimits, out: Collector) -> None:
    m, span = rule.match, rule.span
    for name, _ in m.present():
        if name not in PRINTED_FIELDS:
            out.error("E0404", f"{limits.target} cannot express the match {name}", span)
    texts = [("comment", rule.comment)] + [
        ("log prefix", item.prefix) for item in (*rule.statements, rule.action)
        if isinstance(item, Log)
    ]
    for what, text in texts:
        if text is None:
            continue
        extra = limits.unquotable_in_log_prefix if what == "log prefix" else ""
        problem = text_problem(text, limits, extra)
        if problem:
            out.error("E0405", f"{what} contains {problem}", span,
                      *unquotable_notes(text, limits) if extra else ())
        size = len(text.encode())
        if what == "log prefix" and size > limits.max_log_prefix:
            out.error("E0402", f"log prefix is {size} bytes; {limits.target} allows "
                      f"{limits.max_log_prefix}", span)
    keys = [v for values, _ in rule.action.entries for v in values
            if isinstance(v, Interface)] if isinstance(rule.action, Vmap) else []
    for iface in (m.iifname, m.oifname, *keys):
        if iface is None:
            continue
        body = iface.name[:-1] if iface.is_wildcard else iface.name
        if text_problem(body, limits) or "*" in body or "\\" in body:
            out.error("E0405", f"interface name {iface.name!r} cannot be spelled in "
                      f"{limits.target}", span)
        elif not body:  # "All-wildcard strings are not supported"
            out.error("E0405", f"a bare `+` interface wildcard cannot be expressed by "
                      f"{limits.target}", span, "it matches every interface name; drop the test")
        elif (written := interface_pattern(iface)) in limits.reserved_strings or (
                written[0] in limits.reserved_first):
            what = "a set" if written[0] == "@" else "a protocol or ICMP type constant"
            out.error("E0409", f"interface name {iface.name!r} cannot be written in "
                      f"{limits.target}", span, f"libnftables' JSON parser reads the string "
                      f"{written!r} as {what}, whatever the field", "--target nft carries it")
        # The `*` nft writes for `+` takes the byte the `+` took.
        if too_long := ifname_too_long(iface.name):
            out.error("E0313", too_long[0], span, *too_long[1:])
    if m.limit is not None and (m.limit.rate + m.limit.burst > MAX_RATE_PLUS_BURST
                                or m.limit.rate > limits.max_integer):
        most = min(MAX_RATE_PLUS_BURST - m.limit.burst, limits.max_integer)
        out.error("E0408", f"rate {m.limit.rate}/{m.limit.unit.value} is above what "
                  f"{limits.target} can load (at most {most} with burst {m.limit.burst})", span)
    if m.ct_orig_dport is not None and (
        m.proto is None or m.proto.negated or m.proto.number not in PORT_PROTOCOLS
    ):
        out.error("E0404", "ct original dport needs a protocol with ports in "
                  f"{limits.target}", span, "add e.g. `tcp` to the rule")

