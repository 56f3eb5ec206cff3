"""Invariants of a ruleset: everything the kernel would reject, found at compile time with a span.

`verify(ruleset)` checks what holds for every target; `verify(ruleset, limits)` adds one
target's name and length limits (iptables chain names, nft keywords, comment sizes).
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from rulec.diagnostics import Collector, Diagnostic, RulecError, Span
from rulec.ir.nodes import (
    BUILTIN_CHAINS,
    Action,
    Chain,
    ClampMss,
    Dnat,
    Drop,
    Hook,
    Log,
    MapKey,
    Masquerade,
    Match,
    Policy,
    Redirect,
    Reject,
    RejectWith,
    Rule,
    Ruleset,
    SetMss,
    Snat,
    Table,
    TableKind,
    Vmap,
    targets,
)
from rulec.ir.values import (
    ICMP,
    ICMPV6,
    MAX_PORT,
    PORT_PROTOCOLS,
    TCP,
    AddressSet,
    CtState,
    CtStates,
    Family,
    IcmpType,
    Interface,
    Mark,
    PortSet,
    TcpFlag,
    TcpFlags,
)

IFNAMSIZ = 15  # longest interface name the kernel takes, in bytes (16 with the NUL)
# Jumps and gotos nested from a base chain: nf_tables refuses a 16th (EMLINK, "Too many links"),
# for nft and iptables-nft alike (legacy iptables has no limit).
MAX_JUMP_DEPTH = 15
# Named sets (synthesize_sets): a DSL variable name is also a valid nft set name.
SET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_SET_FIELDS = ("saddr", "daddr", "sport", "dport", "ct_orig_dport")


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetLimits:
    """Name and size limits of one target, checked before anything is printed."""

    target: str
    max_chain_name: int
    max_comment: int
    comment_in_bytes: bool  # iptables counts UTF-8 bytes, nft characters
    max_log_prefix: int
    reserved_chain_names: frozenset[str] = frozenset()
    # Characters the target's text format cannot carry inside a quoted string.
    unquotable: str = ""
    # Characters a log prefix cannot carry on top of those (nft reads `$` as a variable there).
    unquotable_in_log_prefix: str = ""
    # Strings the target reads as something other than a name where an interface name goes
    # (libnftables' JSON parser turns "tcp" into the protocol number), and first characters
    # that do the same ("@x" names a set).
    reserved_strings: frozenset[str] = frozenset()
    reserved_first: str = ""
    # The largest integer the target's input format carries (JSON, through jansson: 2^63-1).
    max_integer: int = (1 << 64) - 1


# Where each NAT-like action may run: (table, hooks that may reach the rule).
_ALLOWED_HOOKS: dict[type, tuple[TableKind | None, frozenset[Hook]]] = {
    Dnat: (TableKind.NAT, frozenset({Hook.PREROUTING, Hook.OUTPUT})),
    Redirect: (TableKind.NAT, frozenset({Hook.PREROUTING, Hook.OUTPUT})),
    Snat: (TableKind.NAT, frozenset({Hook.POSTROUTING, Hook.INPUT})),
    Masquerade: (TableKind.NAT, frozenset({Hook.POSTROUTING})),
    Reject: (TableKind.FILTER, frozenset({Hook.INPUT, Hook.FORWARD, Hook.OUTPUT})),
    ClampMss: (None, frozenset({Hook.FORWARD, Hook.OUTPUT, Hook.POSTROUTING})),
}


def verify(ruleset: Ruleset, limits: TargetLimits | None = None) -> tuple[Diagnostic, ...]:
    """Raise RulecError listing every violated invariant; return the warnings otherwise."""
    out = Collector()
    for table in ruleset.tables:
        _verify_table(table, out)
        if limits is not None:
            _verify_limits(table, limits, out)
            _verify_modelled(table, out)
    out.raise_if_errors()
    return out.warnings


def verify_modelled(ruleset: Ruleset) -> None:
    """RulecError (E0411) for every rule an opaque import kept unmodelled tests in."""
    out = Collector()
    for table in ruleset.tables:
        _verify_modelled(table, out)
    out.raise_if_errors()


def _verify_modelled(table: Table, out: Collector) -> None:
    """An opaque import's unmodelled tests are for analysis only: no target prints them."""
    for chain in table.chains:
        for rule in chain.rules:
            if rule.match.unknown is not None:
                out.error("E0411", f"this rule tests what rulec does not model "
                          f"({rule.match.unknown}); it can be analysed, not compiled",
                          rule.span, "it was imported with --opaque; write the test in a "
                          "form rulec models, or leave the rule out")


def verify_texts(ruleset: Ruleset, limits: TargetLimits) -> None:
    """Raise RulecError for every comment or log prefix the target cannot carry, on the rules
    as written: the optimiser joins the comments of merged rules, and an error must point at
    the rule whose text it is."""
    out = Collector()
    for table in ruleset.tables:
        for chain in table.chains:
            for rule in chain.rules:
                _verify_rule_limits(rule, limits, out)
    out.raise_if_errors()


def check(ruleset: Ruleset, limits: TargetLimits | None = None) -> None:
    """verify() for callers that only want the exception."""
    verify(ruleset, limits)


def _targets(rule: Rule) -> tuple[str, ...]:
    return targets(rule.action)


def _verify_table(table: Table, out: Collector) -> None:
    names = {c.name: c for c in table.chains}
    builtin = {h.value for h in BUILTIN_CHAINS[table.kind]}
    for chain in table.chains:
        if chain.hook is not None and chain.name not in builtin:
            out.error("E0209", f"table {table.kind.value} has no built-in chain {chain.name}",
                      chain.span)
        if chain.policy is not None and chain.hook is None:
            out.error("E0208", f"user chain {chain.name} cannot have a policy", chain.span,
                      "only built-in chains (" + ", ".join(sorted(builtin)) + ") have one")
        if (table.kind is TableKind.NAT and chain.policy is Policy.DROP):
            out.error("E0315", f"nat chain {chain.name} cannot have policy drop", chain.span,
                      "the nat table is not for filtering; drop in the filter table")
        for rule, target in ((r, t) for r in chain.rules for t in _targets(r)):
            if target in builtin or (target in names and names[target].hook is not None):
                out.error("E0205", f"cannot jump to built-in chain {target}", rule.span,
                          "the kernel enters built-in chains itself; jump to a user chain")
            elif target not in names:
                close = difflib.get_close_matches(target, list(names), n=1)
                notes = [f"did you mean {close[0]}?"] if close else [
                    f"declare it in this table: `chain {target} {{ ... }}`"]
                out.error("E0205", f"chain {target} does not exist in table "
                          f"{table.family.value} {table.kind.value}", rule.span, *notes)
    _verify_no_loops(table, names, out)
    _verify_named_sets(table, out)
    hooks = _reaching_hooks(table, names)
    for chain in table.chains:
        for rule in chain.rules:
            _verify_rule(table, chain, rule, hooks.get(chain.name, frozenset()), out)


def _verify_no_loops(table: Table, names: dict[str, Chain], out: Collector) -> None:
    # Iterative DFS over jump edges; a back edge is a loop the kernel rejects (ELOOP).
    # Jumps to built-in chains are already errors (E0205), so they are not edges here.
    edges = {c.name: [(r, t) for r in c.rules for t in _targets(r)
                      if t in names and names[t].hook is None]
             for c in table.chains}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    reported: set[str] = set()
    for root in edges:
        if root in state:
            continue
        stack = [(root, iter(edges[root]))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            step = next(it, None)
            if step is None:
                state[node] = 2
                stack.pop()
                continue
            rule, target = step
            if state.get(target) == 1:
                path = [n for n, _ in stack]
                cycle = [*path[path.index(target):], target]
                if target not in reported:
                    reported.add(target)
                    out.error("E0308", "jump loop: " + " -> ".join(cycle), rule.span,
                              "the kernel refuses rulesets whose jumps form a cycle")
            elif target not in state:
                state[target] = 1
                stack.append((target, iter(edges[target])))


def verify_jump_depth(table: Table, entry_points: Iterable[str], out: Collector) -> None:
    """Refuse a jump or goto that nests deeper than MAX_JUMP_DEPTH below a base chain (an
    external chain counts as entered from one). Backends call this on the tables they print,
    with their own helper chains in them. Depths only grow and are capped, so a loop (E0308)
    cannot keep it running."""
    chains = {c.name: c for c in table.chains}
    depth = {c.name: 0 for c in table.chains if c.hook is not None}
    depth |= {name: 1 for name in entry_points if name in chains and name not in depth}
    todo = list(depth)
    reported: set[int] = set()
    while todo:
        name = todo.pop()
        below = depth[name] + 1
        for rule in chains[name].rules:
            for target in (t for t in targets(rule.action) if t in chains):
                if below > MAX_JUMP_DEPTH:
                    if id(rule) not in reported:
                        reported.add(id(rule))
                        out.error("E0410", f"{target} is entered {below} jumps below a base "
                                  f"chain; the kernel allows {MAX_JUMP_DEPTH}", rule.span,
                                  "nf_tables refuses deeper jumps and gotos (\"Too many "
                                  "links\"); flatten the chains that lead here")
                elif depth.get(target, -1) < below:
                    depth[target] = below
                    todo.append(target)


def _verify_named_sets(table: Table, out: Collector) -> None:
    """One name, one content per table: nft declares each named set once."""
    seen: dict[str, tuple[object, ...]] = {}
    for chain in table.chains:
        for rule in chain.rules:
            for name in _SET_FIELDS:
                value: AddressSet | PortSet | None = getattr(rule.match, name)
                if value is None or value.name is None:
                    continue
                if not SET_NAME.match(value.name):
                    out.error("E0317", f"{value.name!r} cannot name a set", rule.span)
                    continue
                if isinstance(value, AddressSet):
                    content: tuple[object, ...] = ("address", value.prefixes)
                    if len(value.families) != 1:
                        out.error("E0317", f"named set {value.name} mixes address families",
                                  rule.span)
                else:
                    content = ("port", value.ranges)
                if seen.setdefault(value.name, content) != content:
                    out.error("E0317", f"named set {value.name} has two different contents in "
                              f"table {table.family.value} {table.kind.value}", rule.span)


def _reaching_hooks(table: Table, names: dict[str, Chain]) -> dict[str, frozenset[Hook]]:
    """For every chain, the hooks from which a packet can reach it."""
    reach: dict[str, set[Hook]] = {c.name: ({c.hook} if c.hook else set()) for c in table.chains}
    changed = True
    while changed:
        changed = False
        for chain in table.chains:
            for target in (t for rule in chain.rules for t in _targets(rule)):
                if target in names and not reach[chain.name] <= reach[target]:
                    reach[target] |= reach[chain.name]
                    changed = True
    return {name: frozenset(hooks) for name, hooks in reach.items()}


def _verify_rule(
    table: Table, chain: Chain, rule: Rule, hooks: frozenset[Hook], out: Collector
) -> None:
    m, action, span = rule.match, rule.action, rule.span
    proto = m.proto.number if m.proto is not None and not m.proto.negated else None

    # Address families: the table's, the rule's, and those of its addresses must agree.
    family = _rule_family(table, rule, out)
    for name in ("saddr", "daddr"):
        value = getattr(m, name)
        if value is not None and not value.prefixes:
            out.error("E0310", f"{name} is an empty set, so the rule can never match", span)

    for name in ("sport", "dport"):
        value = getattr(m, name)
        if value is not None and proto not in PORT_PROTOCOLS:
            out.error("E0305", f"{name} needs a protocol with ports (tcp, udp, sctp, udplite, "
                      "dccp)", span, "add e.g. `tcp` to the rule")
        if value is not None and not value.ranges:
            out.error("E0310", f"{name} is an empty set, so the rule can never match", span)
    if m.ct_orig_dport is not None and not m.ct_orig_dport.ranges:
        out.error("E0310", "ct original dport is an empty set", span)
    if m.tcp_flags is not None and proto != TCP:
        out.error("E0305", "tcp flags need `tcp`", span)
    if m.icmp_type is not None:
        wanted = ICMP if m.icmp_type.family is Family.IP else ICMPV6
        if proto != wanted:
            out.error("E0305", f"icmp type needs `{'icmp' if wanted == ICMP else 'icmpv6'}`",
                      span)
    if m.ct_state is not None and not m.ct_state.states:
        out.error("E0310", "ct state is an empty set", span)
    if isinstance(action, Vmap):
        _verify_vmap(table, chain, rule, action, proto, out)

    rule_allowed = _ALLOWED_HOOKS.get(type(action))
    if rule_allowed is not None:
        kind, allowed = rule_allowed
        label = _action_label(action)
        if kind is not None and table.kind is not kind:
            out.error("E0307", f"{label} is only valid in the {kind.value} table", span,
                      f"this rule is in table {table.family.value} {table.kind.value}")
        elif hooks and not hooks <= allowed:
            where = ", ".join(h.value for h in Hook if h in hooks - allowed)
            reached = "" if chain.hook is not None else f", which is reached from {where}"
            out.error("E0307", f"{label} cannot run in chain {chain.name}{reached}", span,
                      f"{label} is allowed in chains reached from "
                      + ", ".join(h.value for h in Hook if h in allowed))

    if isinstance(action, SetMss | ClampMss):
        syn_only = (
            m.tcp_flags is not None and not m.tcp_flags.negated
            and TcpFlag.SYN in m.tcp_flags.value and TcpFlag.SYN in m.tcp_flags.mask
        )
        if proto != TCP or not syn_only:
            out.error("E0309", "mss needs `tcp` and a SYN match", span,
                      "add `tcp flags syn / syn,rst` (the kernel only rewrites SYN packets)")
        if isinstance(action, SetMss) and not 1 <= action.mss <= 65535:
            out.error("E0302", f"mss {action.mss} out of range", span)
    if (isinstance(action, Dnat | Snat | Masquerade | Redirect) and action.ports is not None
            and proto not in PORT_PROTOCOLS):
        out.error("E0305", f"{_action_label(action)} to a port needs a protocol with ports "
                  "(tcp, udp, sctp, udplite, dccp)", span, "add e.g. `tcp` to the rule")
    if (isinstance(action, Dnat | Snat) and family is not None
            and action.address.family is not family):
        out.error("E0306", f"{_action_label(action)} to an {action.address.family.value} "
                  f"address in an {family.value} rule", span)
    if isinstance(action, Reject) and action.with_ is RejectWith.TCP_RESET and proto != TCP:
        out.error("E0305", "reject with tcp-reset needs `tcp`", span,
                  "a TCP reset answers TCP packets only; add `tcp`, or reject with another type")
    # Built-in chains only: iptables refuses these, while in a user chain reached from such a
    # hook the interface is simply absent (and the test false) - which is what nft does too.
    if chain.hook in _no_iif_hooks(table) and m.iifname is not None:
        out.error("E0316", f"`in` cannot be used in {chain.hook.value}: locally generated and "
                  "outgoing packets have no input interface", span)
    if chain.hook in (Hook.PREROUTING, Hook.INPUT) and m.oifname is not None:
        out.error("E0316", f"`out` cannot be used in {chain.hook.value}: the output interface "
                  "is not known before routing", span)
    for interface in (m.iifname, m.oifname):
        if interface is not None and (problem := ifname_too_long(interface.name)):
            out.error("E0313", problem[0], span, *problem[1:])
    if table.kind is TableKind.NAT and Drop() in _verdicts(action):
        out.error("E0315", "drop is not allowed in the nat table", span,
                  "the nat table is not for filtering (iptables refuses DROP there); drop in the "
                  "filter table")
    if (isinstance(action, Dnat | Snat | Masquerade | Redirect) and action.ports is not None
            and action.ports[0] == 0):
        out.error("E0302", f"cannot {_action_label(action)} to port 0", span, *NAT_PORT_0_NOTES)
    dead = never_matches(table, rule)
    if dead:
        out.error("E0318", "no packet can match this rule", span, *dead,
                  "a `!=` of every possible value matches no packet; remove the rule, or the "
                  "`!=`")


def ifname_too_long(name: str) -> tuple[str, ...]:
    """A message and notes if `name` (as written, a trailing `+` included) is more bytes than
    the kernel's interface names hold, else (). The kernel counts UTF-8 bytes, not characters."""
    size = len(name.encode())
    if size <= IFNAMSIZ:
        return ()
    notes = [f"its {len(name)} characters take {size} bytes in UTF-8"] if size != len(name) else []
    return (f"interface name {name!r} is {size} bytes; the kernel allows {IFNAMSIZ}", *notes)


NAT_PORT_0_NOTES = ("no connection can be made to port 0; give a port from 1 to 65535, or none "
                    "to keep the packet's own",)


def _verdicts(action: Action) -> tuple[object, ...]:
    if isinstance(action, Vmap):
        return tuple(verdict for _, verdict in action.entries)
    return (action,)


def _covers(intervals: Iterable[tuple[int, int]], last: int) -> bool:
    """Whether the inclusive intervals cover every value from 0 to `last`."""
    reached = -1
    for low, high in sorted(intervals):
        if low > reached + 1:
            return False
        reached = max(reached, high)
    return reached >= last


_LABELS = {"saddr": "from", "daddr": "to", "sport": "sport", "dport": "dport",
           "ct_orig_dport": "ct original dport", "ct_state": "ct state", "icmp_type": "type",
           "mark": "mark", "tcp_flags": "flags"}


def _excludes_everything(value: object) -> str | None:
    """What a negated clause excludes, if that is every value it could test."""
    if isinstance(value, PortSet) and value.negated and _covers(value.ranges, MAX_PORT):
        return "every port"
    if isinstance(value, CtStates) and value.negated and value.states >= set(CtState):
        return "every conntrack state"
    if isinstance(value, IcmpType) and value.negated and _covers(
            ((t, t) for t in value.types), 255):
        return "every type"
    if isinstance(value, Mark) and value.negated and value.mask == 0:
        return "every mark (the mask tests no bit)"
    if isinstance(value, TcpFlags) and value.negated and not value.mask:
        return "every packet (the mask tests no flag)"
    return None


def never_matches(table: Table, rule: Rule) -> list[str]:
    """Notes on why no packet can match the rule (empty if some can): a negated clause that
    excludes every value, or negated address sets that exclude every address of each family
    the rule applies to. In an inet table `from != 0.0.0.0/0` only leaves IPv6 packets, which is
    a rule that matches (`from != { 0.0.0.0/0, 2001:db8::/32 }` is "IPv6 outside
    2001:db8::/32"); in an ip table it leaves nothing."""
    m = rule.match
    for name, value in m.present():
        what = _excludes_everything(value)
        if what is not None:
            return [f"`{_LABELS[name]} {value}` excludes {what}"]
    families = rule_families(table, rule)
    notes = []
    for family in (f for f in (Family.IP, Family.IP6) if f in families):
        last = (1 << family.bits) - 1
        excluding = [(name, only) for name, only in _negated_addresses(m, family)
                     if _covers(((p.first, p.last) for p in only.prefixes), last)]
        if not excluding:
            return []
        name, only = excluding[0]
        version = "IPv4" if family is Family.IP else "IPv6"
        notes.append(f"`{_LABELS[name]} {only}` excludes every {version} address")
    return notes


def _negated_addresses(m: Match, family: Family) -> Iterator[tuple[str, AddressSet]]:
    for name in ("saddr", "daddr"):
        value: AddressSet | None = getattr(m, name)
        if value is not None and value.negated:
            yield name, value.restrict(family)


def _no_iif_hooks(table: Table) -> tuple[Hook, ...]:
    # A forwarded packet keeps its input interface in POSTROUTING; only iptables refuses to
    # test it there, and a named table (Docker's docker-bridges) is printed for nft alone.
    return (Hook.OUTPUT,) if table.name is not None else (Hook.OUTPUT, Hook.POSTROUTING)


_KEY_TYPES: dict[MapKey, type] = {
    MapKey.SADDR: AddressSet, MapKey.DADDR: AddressSet, MapKey.SPORT: PortSet,
    MapKey.DPORT: PortSet, MapKey.IIFNAME: Interface, MapKey.OIFNAME: Interface,
    MapKey.CT_STATE: CtStates,
}


def _verify_vmap(table: Table, chain: Chain, rule: Rule, vmap: Vmap, proto: int | None,
                 out: Collector) -> None:
    """Distinct keys (MAX_CONCAT_BYTES in all), free in the rule's match; entries of the
    keys' types, non-negated, non-empty and pairwise disjoint; the same interface and
    protocol rules as a plain match."""
    span = rule.span
    if not vmap.entries:
        out.error("E0310", "verdict map has no entries, so the rule can never match", span)
        return
    if not vmap.keys or len(set(vmap.keys)) != len(vmap.keys) or any(
            len(values) != len(vmap.keys) for values, _ in vmap.entries):
        out.error("E0317", "a verdict map needs distinct keys, and each entry a value per key",
                  span)
        return
    if concat_bytes(vmap) > MAX_CONCAT_BYTES:
        out.error("E0317", f"a verdict map's key is {concat_bytes(vmap)} bytes; nft allows "
                  f"{MAX_CONCAT_BYTES}", span)
        return
    for index in range(len(vmap.keys)):
        _verify_map_key(table, chain, rule, vmap, index, proto, out)
    if not _entries_disjoint(vmap):
        out.error("E0317", "verdict map entries overlap, so their order would matter", span)


# nft holds a concatenated key in 16 32-bit registers; each field takes whole registers.
MAX_CONCAT_BYTES = 64


def key_bytes(key: MapKey, family: Family | None) -> int:
    """What one field of a concatenation takes: 16 bytes for an interface name or an IPv6
    address, one 4-byte register for the rest (an IPv4 address, a port, the ct state)."""
    if key in (MapKey.IIFNAME, MapKey.OIFNAME):
        return 16
    return 16 if key in (MapKey.SADDR, MapKey.DADDR) and family is Family.IP6 else 4


def concat_bytes(vmap: Vmap) -> int:
    """The bytes of a map's key (key_bytes of each field)."""
    size = 0
    for index, key in enumerate(vmap.keys):
        ip6 = any(isinstance(v := values[index], AddressSet) and Family.IP6 in v.families
                  for values, _ in vmap.entries)
        size += key_bytes(key, Family.IP6 if ip6 else None)
    return size


def _verify_map_key(table: Table, chain: Chain, rule: Rule, vmap: Vmap, index: int,
                    proto: int | None, out: Collector) -> None:
    span, map_key = rule.span, vmap.keys[index]
    key = map_key.value
    if getattr(rule.match, key) is not None:
        out.error("E0317", f"verdict map on {key} in a rule that also tests {key}", span)
    wanted = _KEY_TYPES[map_key]
    families: set[Family] = set()
    names: set[str] = set()
    for values, _ in vmap.entries:
        value = values[index]
        if not isinstance(value, wanted) or value.negated:
            out.error("E0317", f"verdict map entry {value} is not a plain {key} value", span)
            continue
        if isinstance(value, AddressSet):
            if not value.prefixes:
                out.error("E0310", "verdict map entry is an empty set", span)
            families |= value.families
        elif isinstance(value, PortSet):
            if not value.ranges:
                out.error("E0310", "verdict map entry is an empty set", span)
        elif isinstance(value, CtStates):
            if not value.states:
                out.error("E0310", "verdict map entry is an empty set", span)
        elif isinstance(value, Interface):
            if value.is_wildcard:
                out.error("E0317", f"verdict map key {value.name} is not an exact interface "
                          "name", span)
            if problem := ifname_too_long(value.name):
                out.error("E0313", problem[0], span, *problem[1:])
            if len(vmap.keys) == 1 and value.name in names:
                out.error("E0317", f"verdict map has interface {value.name} twice", span)
            names.add(value.name)
    if len(families) > 1:
        out.error("E0317", "verdict map mixes address families", span)
    if map_key in (MapKey.SPORT, MapKey.DPORT) and proto not in PORT_PROTOCOLS:
        out.error("E0305", f"{key} needs a protocol with ports (tcp, udp, sctp, udplite, "
                  "dccp)", span)
    if map_key is MapKey.IIFNAME and chain.hook in _no_iif_hooks(table):
        out.error("E0316", f"`in` cannot be used in {chain.hook.value}", span)
    if map_key is MapKey.OIFNAME and chain.hook in (Hook.PREROUTING, Hook.INPUT):
        out.error("E0316", f"`out` cannot be used in {chain.hook.value}", span)


Span3 = tuple[int, int, int]  # (space, low, high): spaces keep kinds and families apart


def _spans(value: object, names: dict[str, int]) -> list[Span3]:
    """A key value as merged intervals; interface names as points, numbered by `names`."""
    own: list[Span3] = []
    if isinstance(value, AddressSet):
        own = sorted((p.family.bits, p.first, p.last) for p in value.prefixes)
    elif isinstance(value, PortSet):
        own = sorted((0, low, high) for low, high in value.ranges)
    elif isinstance(value, CtStates):
        own = sorted((1, i, i) for i, s in enumerate(CtState) if s in value.states)
    elif isinstance(value, Interface):
        number = names.setdefault(value.name, len(names))
        own = [(2, number, number)]
    merged: list[Span3] = []  # one value's own elements may overlap: join them first
    for space, low, high in own:
        if merged and merged[-1][0] == space and low <= merged[-1][2]:
            merged[-1] = (space, merged[-1][1], max(high, merged[-1][2]))
        else:
            merged.append((space, low, high))
    return merged


def _meet(a: list[Span3], b: list[Span3]) -> bool:
    return any(x[0] == y[0] and x[1] <= y[2] and y[1] <= x[2] for x in a for y in b)


def _entries_disjoint(vmap: Vmap) -> bool:
    """No packet matches two entries: with one key, no two share a value; with more, no two
    share values in every key. A sweep over one key's intervals, so near-linear when its
    values rarely overlap (it sweeps the key with the most distinct values)."""
    names: dict[str, int] = {}
    table = [[_spans(v, names) for v in values] for values, _ in vmap.entries]
    if len(vmap.keys) == 1:
        intervals = sorted(s for row in table for s in row[0])
        return all(a[0] != b[0] or a[2] < b[1] for a, b in itertools.pairwise(intervals))
    columns = range(len(vmap.keys))
    first = max(columns, key=lambda i: len({tuple(row[i]) for row in table}))
    others = [i for i in columns if i != first]
    points = sorted((s, n) for n, row in enumerate(table) for s in row[first])
    active: list[tuple[Span3, int]] = []
    for span, n in points:
        active = [(a, m) for a, m in active if a[0] == span[0] and a[2] >= span[1]]
        if any(m != n and all(_meet(table[m][i], table[n][i]) for i in others)
               for _, m in active):
            return False
        active.append((span, n))
    return True


def _action_label(action: object) -> str:
    return type(action).__name__.lower().replace("clampmss", "mss clamp to pmtu")


def rule_families(table: Table, rule: Rule) -> frozenset[Family]:
    """The address families a rule can match packets of (empty: it can never match)."""
    families = {Family.IP, Family.IP6} if table.family is Family.INET else {table.family}
    m = rule.match
    if m.family is not None:
        families &= {m.family}
    if m.icmp_type is not None:
        families &= {m.icmp_type.family}
    if m.proto is not None and not m.proto.negated:
        if m.proto.number == ICMP:
            families &= {Family.IP}
        elif m.proto.number == ICMPV6:
            families &= {Family.IP6}
    for value in (m.saddr, m.daddr):
        if value is not None and not value.negated:
            families &= value.families
    action = rule.action
    if isinstance(action, Dnat | Snat):
        families &= {action.address.family}
    if isinstance(action, Vmap):
        for index, key in enumerate(action.keys):
            if key in (MapKey.SADDR, MapKey.DADDR):
                families &= {f for values, _ in action.entries
                             if isinstance(member := values[index], AddressSet)
                             for f in member.families}
    return frozenset(families)


def _family_constraints(table: Table, rule: Rule) -> Iterable[tuple[str, frozenset[Family]]]:
    """What limits a rule's families, described for an error; the same tests as rule_families."""
    if table.family is not Family.INET:
        yield f"table {table.family.value} {table.kind.value}", frozenset({table.family})
    m = rule.match
    implied = None  # the family `icmp` or `icmpv6` implies (the frontend also sets it)
    if m.proto is not None and not m.proto.negated and m.proto.number in (ICMP, ICMPV6):
        implied = Family.IP if m.proto.number == ICMP else Family.IP6
        yield f"`{m.proto.name}`", frozenset({implied})
    if m.family is not None and m.family is not implied:
        yield f"`family {m.family.value}`", frozenset({m.family})
    if m.icmp_type is not None:
        yield "the icmp type", frozenset({m.icmp_type.family})
    for label, value in (("source", m.saddr), ("destination", m.daddr)):
        if value is not None and not value.negated:
            yield f"the {label} address", value.families
    if isinstance(rule.action, Dnat | Snat):
        yield f"the {_action_label(rule.action)} address", frozenset({rule.action.address.family})


def _family_names(families: frozenset[Family]) -> str:
    return " and ".join(n for f, n in ((Family.IP, "IPv4"), (Family.IP6, "IPv6")) if f in families)


def _rule_family(table: Table, rule: Rule, out: Collector) -> Family | None:
    families = rule_families(table, rule)
    if not families:
        # Name the first constraint that leaves no family, and the one before it that it
        # contradicts.
        notes = []
        possible, previous = frozenset({Family.IP, Family.IP6}), None
        for label, allowed in _family_constraints(table, rule):
            if not possible & allowed and previous is not None:
                notes.append(f"{previous} is {_family_names(possible)}, but {label} is "
                             f"{_family_names(allowed)}")
                break
            if possible & allowed != possible:
                previous = label
            possible &= allowed
        out.error("E0306", "the rule mixes address families, so no packet can match it", rule.span,
                  *notes)
        return None
    return next(iter(families)) if len(families) == 1 else None


def _verify_limits(table: Table, limits: TargetLimits, out: Collector) -> None:
    for chain in table.chains:
        if len(chain.name) > limits.max_chain_name:
            out.error("E0401", f"chain name {chain.name} is {len(chain.name)} characters; "
                      f"{limits.target} allows {limits.max_chain_name}", chain.span)
        if chain.name.lower() in limits.reserved_chain_names:
            out.error("E0403", f"{chain.name} is a keyword in {limits.target} and cannot name a "
                      "chain", chain.span)
        for rule in chain.rules:
            _verify_rule_limits(rule, limits, out)


def _texts(rule: Rule) -> Iterable[tuple[str, str, int]]:
    if rule.comment is not None:
        yield "comment", rule.comment, 0
    for item in (*rule.statements, rule.action):
        if isinstance(item, Log) and item.prefix is not None:
            yield "log prefix", item.prefix, 1


def _verify_rule_limits(rule: Rule, limits: TargetLimits, out: Collector) -> None:
    for what, text, kind in _texts(rule):
        size = len(text.encode()) if (kind == 0 and limits.comment_in_bytes) else len(text)
        limit = limits.max_comment if kind == 0 else limits.max_log_prefix
        unit = "bytes" if (kind == 0 and limits.comment_in_bytes) else "characters"
        if size > limit:
            notes = [f"its {len(text)} characters take {size} bytes in UTF-8"] if (
                unit == "bytes" and size != len(text)) else []
            out.error("E0402", f"{what} is {size} {unit}; {limits.target} allows {limit}",
                      rule.span, *notes)
        unquotable = limits.unquotable + (limits.unquotable_in_log_prefix if kind else "")
        bad = sorted({ch for ch in text if not ch.isprintable() or ch in unquotable})
        if bad:
            shown = ", ".join(repr(ch) for ch in bad)
            out.error("E0405", f"{what} contains {shown}, which {limits.target} cannot quote",
                      rule.span, *unquotable_notes(bad, limits))


def unquotable_notes(bad: Iterable[str], limits: TargetLimits) -> list[str]:
    notes = ["remove the character from the text"]
    if "$" in bad and "$" in limits.unquotable_in_log_prefix:
        notes.append("nft reads `$` in a log prefix as the start of a variable, and has no "
                     "escape for it")
    return notes


def span_of(rule: Rule) -> Span | None:
    return rule.span


__all__ = ["IFNAMSIZ", "MAX_JUMP_DEPTH", "RulecError", "TargetLimits", "check", "ifname_too_long",
           "never_matches", "rule_families", "verify", "verify_jump_depth"]
