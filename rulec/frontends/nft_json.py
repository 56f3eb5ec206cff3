"""libnftables JSON (`nft -j list ruleset`, or the command list rulec's nft-json backend emits)
read into the IR, with every diagnostic at the JSON path (and, from a file, its line:column).

Fail closed: an expression or statement rulec does not model is an error naming it; only in
opaque mode (analysis) does an unmodelled *match* become an `ir.Unknown` condition.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from rulec.backends.nft.vocabulary import (
    ICMP_NAMES,
    ICMPV6_NAMES,
    PROTOCOL_WORDS,
    REJECT_CODES,
    TCP_FLAG_NAMES,
)
from rulec.diagnostics import Collector, RulecError, SourceFile, Span
from rulec.frontends.docker import json_source
from rulec.ir import nodes as ir
from rulec.ir.nodes import BUILTIN_CHAINS, Hook, TableKind
from rulec.ir.values import (
    MAX_MARK,
    PROTOCOLS,
    AddressSet,
    AddrType,
    AddrTypeKind,
    CtState,
    CtStates,
    Family,
    IcmpType,
    Interface,
    Limit,
    Mark,
    PortSet,
    Prefix,
    Protocol,
    RateUnit,
    TcpFlag,
    TcpFlags,
)

Path = tuple[str | int, ...]
Locate = Callable[[Path], Span | None]

_FAMILIES = {"ip": Family.IP, "ip6": Family.IP6, "inet": Family.INET}
_STANDARD = {TableKind.RAW: -300, TableKind.MANGLE: -150, TableKind.FILTER: 0}
_NAT_PRIORITY = {Hook.PREROUTING: -100, Hook.OUTPUT: -100, Hook.INPUT: 100,
                 Hook.POSTROUTING: 100}
# The order ir/evaluate.py runs the kinds of one hook in (its _HOOK_TABLES).
_HOOK_ORDER: dict[Hook, tuple[TableKind, ...]] = {
    Hook.PREROUTING: (TableKind.RAW, TableKind.MANGLE, TableKind.NAT),
    Hook.INPUT: (TableKind.MANGLE, TableKind.FILTER, TableKind.NAT),
    Hook.FORWARD: (TableKind.MANGLE, TableKind.FILTER),
    Hook.OUTPUT: (TableKind.RAW, TableKind.MANGLE, TableKind.NAT, TableKind.FILTER),
    Hook.POSTROUTING: (TableKind.MANGLE, TableKind.NAT),
}
_PROTO_NUMBERS = PROTOCOLS | {word: n for n, word in PROTOCOL_WORDS.items()}
_ICMP = {name: n for n, name in ICMP_NAMES.items()}
_ICMPV6 = {name: n for n, name in ICMPV6_NAMES.items()}
_FLAGS = {name: flag for flag, name in TCP_FLAG_NAMES.items()} | {"ece": TcpFlag.ECE}
_LEVELS = {lvl.value: lvl for lvl in ir.LogLevel} | {"warn": ir.LogLevel.WARNING}
_PORT_PROTOCOLS = {"tcp": 6, "udp": 17, "dccp": 33, "sctp": 132, "udplite": 136}
_MAP_KEYS = {"saddr": ir.MapKey.SADDR, "daddr": ir.MapKey.DADDR, "sport": ir.MapKey.SPORT,
             "dport": ir.MapKey.DPORT, "iifname": ir.MapKey.IIFNAME,
             "oifname": ir.MapKey.OIFNAME, "ct_state": ir.MapKey.CT_STATE}


# What a value of an unforeseen JSON shape can raise deep in a reader (an unhashable list
# looked up in a dict, a constructor's bound check): turned into a positioned E0540/E0548.
_MALFORMED = (ValueError, TypeError, KeyError, IndexError, AttributeError)


class _Bad(Exception):
    """One problem at a JSON path; caught per object so the others are still read."""

    def __init__(self, code: str, message: str, path: Path) -> None:
        super().__init__(message)
        self.code, self.message, self.path = code, message, path


def _path_text(path: Path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def read_nft_json(source: SourceFile, *, opaque: bool = False) -> ir.Ruleset:
    """Parse `source.text` (libnftables JSON) into a Ruleset; RulecError with every problem."""
    try:
        root = json_source.parse(source)
    except RulecError as exc:
        raise RulecError([replace(d, code="E0540") for d in exc.diagnostics]) from None

    def locate(path: Path) -> Span | None:
        node = root
        for step in path:
            value = node.value
            found = (value[step] if isinstance(step, int) and 0 <= step < len(value) else None) \
                if isinstance(value, list) else (value.get(step) if isinstance(value, dict) and
                                                 isinstance(step, str) else None)
            if not isinstance(found, json_source.JValue):
                break
            node = found
        return node.span

    return nft_json_to_ir(_plain(root), locate, opaque=opaque)


def _plain(value: json_source.JValue) -> object:
    match value.value:
        case dict() as items:
            return {k: _plain(v) for k, v in items.items()}
        case list() as items:
            return [_plain(v) for v in items]
        case other:
            return other


def nft_json_to_ir(data: object, locate: Locate, *, opaque: bool = False) -> ir.Ruleset:
    """Already-parsed libnftables JSON (as json.loads gives) into a Ruleset; `locate` maps a
    JSON path to a span for the diagnostics."""
    out = Collector()

    def report(bad: _Bad) -> None:
        out.error(bad.code, f"{bad.message} (at {_path_text(bad.path)})", locate(bad.path))

    reader = _Reader(opaque=opaque, report=report, locate=locate)
    try:
        reader.document(data)
        ruleset = reader.ruleset()
    except _Bad as bad:
        report(bad)
        ruleset = ir.Ruleset()
    except RecursionError:
        out.error("E0540", "JSON nested too deeply", locate(()))
        ruleset = ir.Ruleset()
    out.raise_if_errors()
    return ruleset


# --- the document: commands and objects -> tables of chains -------------------------------

@dataclass
class _NftChain:
    name: str
    path: Path
    base: tuple[str, Hook, int, ir.Policy | None] | None = None  # type, hook, prio, policy
    rules: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)


@dataclass
class _NftTable:
    family: Family
    name: str
    path: Path
    chains: dict[str, _NftChain] = field(default_factory=dict)
    sets: dict[str, tuple[Path, dict[str, Any]]] = field(default_factory=dict)


def _obj(value: object, path: Path, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad("E0540", f"{what} must be an object", path)
    return value


def _str(body: dict[str, Any], key: str, path: Path) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise _Bad("E0540", f"{key!r} must be a string", (*path, key))
    return value


def _int(value: object, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad("E0548", f"expected an integer, found {_render(value)}", path)
    return value


def _single(value: object, path: Path) -> tuple[str, Any]:
    if not isinstance(value, dict) or len(value) != 1:
        raise _Bad("E0540", "expected an object with exactly one key", path)
    ((key, body),) = value.items()
    return key, body


class _Reader:
    def __init__(self, *, opaque: bool, report: Callable[[_Bad], None],
                 locate: Locate) -> None:
        self.opaque = opaque
        self.locate = locate  # rules point into the dump, so diff and explain can name them
        self.report = report
        self.tables: dict[tuple[Family, str], _NftTable] = {}

    def document(self, data: object) -> None:
        items = _obj(data, (), "the document").get("nftables")
        if not isinstance(items, list):
            raise _Bad("E0540", "the document needs an \"nftables\" array", ())
        for index, item in enumerate(items):
            path: Path = ("nftables", index)
            try:
                self.command(item, path)
            except _Bad as bad:
                self.report(bad)
            except _MALFORMED as exc:  # a shape no check above foresaw: still positioned
                self.report(_Bad("E0540", f"malformed object ({exc})", path))

    def command(self, item: object, path: Path) -> None:
        key, body = _single(item, path)
        if key == "metainfo":
            return
        if key in ("add", "create"):
            kind, inner = _single(body, (*path, key))
            self.object(kind, inner, (*path, key, kind))
        elif key in ("delete", "flush"):
            kind, inner = _single(body, (*path, key))
            where = (*path, key, kind)
            if kind == "ruleset":
                self.tables.clear()
            elif kind == "table":
                found = self.table_of(_obj(inner, where, "a table"), where, "name")
                if key == "delete":
                    del self.tables[(found.family, found.name)]
                else:
                    for chain in found.chains.values():
                        chain.rules.clear()
            elif kind == "chain" and key == "flush":
                chain = self.chain_of(_obj(inner, where, "a chain"), where, "name")
                chain.rules.clear()
            else:
                raise _Bad("E0542", f"command {key} {kind} is not supported", where)
        elif key in ("table", "chain", "set", "map", "rule"):
            self.object(key, body, (*path, key))
        else:
            raise _Bad("E0542", f"{key!r} is not supported (only the objects of a listing, "
                       "and add/create/delete/flush)", path)

    def table_of(self, body: dict[str, Any], path: Path, key: str) -> _NftTable:
        family = self.family(body, path)
        name = _str(body, key, path)
        found = self.tables.get((family, name))
        if found is None:
            raise _Bad("E0543", f"table {family.value} {name} is not declared", path)
        return found

    def chain_of(self, body: dict[str, Any], path: Path, key: str) -> _NftChain:
        table = self.table_of(body, path, "table")
        name = _str(body, key, path)
        if name not in table.chains:
            raise _Bad("E0543", f"chain {name} is not declared in table "
                       f"{table.family.value} {table.name}", path)
        return table.chains[name]

    def family(self, body: dict[str, Any], path: Path) -> Family:
        text = _str(body, "family", path)
        if text not in _FAMILIES:
            raise _Bad("E0541", f"family {text} is not supported (rulec models ip, ip6 and "
                       "inet)", (*path, "family"))
        return _FAMILIES[text]

    def object(self, kind: str, body: object, path: Path) -> None:
        body = _obj(body, path, f"a {kind}")
        if kind == "table":
            family = self.family(body, path)
            name = _str(body, "name", path)
            self.tables.setdefault((family, name), _NftTable(family, name, path))
        elif kind == "chain":
            table = self.table_of(body, path, "table")
            name = _str(body, "name", path)
            chain = table.chains.setdefault(name, _NftChain(name, path))
            if "hook" in body:
                chain.base = self.base(body, path)
        elif kind in ("set", "map"):
            table = self.table_of(body, path, "table")
            table.sets[_str(body, "name", path)] = (path, body)
        elif kind == "rule":
            chain = self.chain_of(body, path, "chain")
            chain.rules.append((path, body))
        else:
            raise _Bad("E0542", f"{kind!r} objects are not supported", path)

    def base(self, body: dict[str, Any], path: Path) -> tuple[str, Hook, int, ir.Policy | None]:
        kind = _str(body, "type", path)
        hook_text = _str(body, "hook", path)
        hook = next((h for h in Hook if h.value.lower() == hook_text), None)
        if hook is None or kind not in ("filter", "nat", "route"):
            raise _Bad("E0544", f"base chain type {kind} hook {hook_text} is not modelled "
                       "(rulec models filter, nat and route chains on the five ip hooks)",
                       (*path, "hook"))
        prio = _int(body.get("prio"), (*path, "prio"))
        policy_text = body.get("policy", "accept")
        policies = {"accept": ir.Policy.ACCEPT, "drop": ir.Policy.DROP}
        if not isinstance(policy_text, str) or policy_text not in policies:
            raise _Bad("E0544", f"chain policy {_render(policy_text)} is not modelled",
                       (*path, "policy"))
        return kind, hook, prio, policies[policy_text]

    # --- tables to IR -------------------------------------------------------------------

    def ruleset(self) -> ir.Ruleset:
        placed: list[tuple[ir.Table, int]] = []  # IR table, the priority it sorts by
        bases: list[tuple[Hook, TableKind, int, ir.Table, Path]] = []
        for nft in self.tables.values():
            try:
                for table, prio, chain_prios in self.split(nft):
                    placed.append((table, prio))
                    bases.extend((hook, table.kind, p, table, where)
                                 for hook, p, where in chain_prios)
            except _Bad as bad:
                self.report(bad)
            except _MALFORMED as exc:
                self.report(_Bad("E0540", f"malformed table ({exc})", nft.path))
        # Tables of one kind run in ruleset order on a hook: order them by priority.
        placed.sort(key=lambda item: item[1])
        tables = [t for t, _ in placed]
        order = {id(t): i for i, t in enumerate(tables)}
        self.check_order(bases, order)
        return ir.Ruleset(tables=tuple(tables))

    def check_order(self, bases: list[tuple[Hook, TableKind, int, ir.Table, Path]],
                    order: dict[int, int]) -> None:
        """Every hook's base chains must run in priority order as ir/evaluate.py runs them
        (kinds in a fixed order, tables of a kind in ruleset order); else the import would
        change what the ruleset does."""
        for hook in Hook:
            on_hook = sorted((b for b in bases if b[0] is hook),
                             key=lambda b: (_HOOK_ORDER[hook].index(b[1]), order[id(b[3])]))
            for before, after in itertools.pairwise(on_hook):
                if after[2] < before[2]:
                    self.report(_Bad("E0545", f"cannot order base chains on hook "
                                     f"{hook.value.lower()}: priority {after[2]} ({after[1].value})"
                                     f" runs before {before[2]} ({before[1].value}) in nft, but "
                                     "rulec runs the kinds raw, mangle, nat (dstnat), filter, "
                                     "nat (srcnat) in a fixed order", after[4]))

    def split(self, nft: _NftTable) -> list[tuple[ir.Table, int, list[tuple[Hook, int, Path]]]]:
        """One nft table as IR tables, one per kind of its base chains; user chains go with
        every kind that reaches them."""
        kinds: dict[TableKind, list[tuple[_NftChain, Hook, int, ir.Policy | None]]] = {}
        for chain in nft.chains.values():
            if chain.base is not None:
                kind = self.kind_of(chain, nft)
                kinds.setdefault(kind, []).append((chain, *chain.base[1:]))
        user = {c.name: c for c in nft.chains.values() if c.base is None}
        read: dict[str, tuple[ir.Rule, ...]] = {}

        def rules_of(chain: _NftChain) -> tuple[ir.Rule, ...]:
            if chain.name not in read:
                read[chain.name] = self.rules(nft, chain)
            return read[chain.name]

        owned = {f"rulec-{k.value}" for k in TableKind}
        out = []
        claimed: set[str] = set()
        for kind, chains in kinds.items():
            hooks = {hook for _, hook, _, _ in chains}
            ir_chains = []
            seen_hooks: set[Hook] = set()
            for chain, hook, _, policy in chains:
                if hook in seen_hooks:
                    raise _Bad("E0545", f"table {nft.family.value} {nft.name} has two "
                               f"{kind.value} base chains on hook {hook.value.lower()}; rulec "
                               "models one per table and kind", chain.path)
                seen_hooks.add(hook)
                if hook.value in user:
                    raise _Bad("E0550", f"user chain {hook.value} would clash with the base "
                               f"chain {chain.name}", user[hook.value].path)
                ir_chains.append(ir.Chain(name=hook.value, hook=hook, policy=policy,
                                          rules=rules_of(chain), span=None))
            reached = self.reached([r for c in ir_chains for r in c.rules], user, rules_of)
            for name in reached:
                claimed.add(name)
                ir_chains.append(ir.Chain(name=name, rules=rules_of(user[name])))
            del hooks
            table_name = None if nft.name in owned else nft.name
            table = ir.Table(kind=kind, family=nft.family, chains=tuple(ir_chains),
                             name=table_name)
            prios = [(hook, prio, chain.path) for chain, hook, prio, _ in chains]
            out.append((table, min(p for _, p, _ in prios), prios))
        # User chains no base chain reaches still load (and are checked); they go with the
        # first kind, or make a filter table of their own.
        rest = [name for name in user if name not in claimed]
        if rest:
            if out:
                table, prio, prios = out[0]
                extra = tuple(ir.Chain(name=n, rules=rules_of(user[n])) for n in rest)
                out[0] = (replace(table, chains=table.chains + extra), prio, prios)
            else:
                own = None if nft.name in owned else nft.name
                out.append((ir.Table(kind=TableKind.FILTER, family=nft.family, name=own,
                                     chains=tuple(ir.Chain(name=n, rules=rules_of(user[n]))
                                                  for n in rest)), 0, []))
        return out

    def reached(self, rules: list[ir.Rule], user: dict[str, _NftChain],
                rules_of: Callable[[_NftChain], tuple[ir.Rule, ...]]) -> list[str]:
        found: list[str] = []
        todo = [t for r in rules for t in ir.targets(r.action)]
        while todo:
            name = todo.pop(0)
            if name in found or name not in user:
                continue
            found.append(name)
            todo.extend(t for r in rules_of(user[name]) for t in ir.targets(r.action))
        return sorted(found, key=list(user).index)

    def kind_of(self, chain: _NftChain, nft: _NftTable) -> TableKind:
        assert chain.base is not None
        kind, hook, prio, _ = chain.base
        if kind == "nat":
            if TableKind.NAT not in _HOOK_ORDER[hook]:
                raise _Bad("E0544", f"nat chain on hook {hook.value.lower()} is not modelled",
                           chain.path)
            return TableKind.NAT
        if kind == "route":
            return TableKind.MANGLE
        candidates = [k for k in _STANDARD if hook in BUILTIN_CHAINS[k]]
        return min(candidates, key=lambda k: abs(_STANDARD[k] - prio))

    # --- rules ------------------------------------------------------------------------------

    def rules(self, nft: _NftTable, chain: _NftChain) -> tuple[ir.Rule, ...]:
        out = []
        for path, body in chain.rules:
            try:
                out.append(_RuleReader(self, nft, chain, path).rule(body))
            except _Bad as bad:
                self.report(bad)
            except _MALFORMED as exc:
                self.report(_Bad("E0548", f"bad value in rule: {exc}", path))
        return tuple(out)


_UNTYPED = re.compile(r"0x([0-9a-f]+) \[invalid type\]")


def _untyped(value: object) -> object:
    """nft 1.0.6 lists `ct original proto-dst 8080` as "0x1f90 [invalid type]" (the key has
    no type without the protocol): the number itself."""
    if isinstance(value, str) and (found := _UNTYPED.fullmatch(value)):
        return int(found.group(1), 16)
    return value


def _render(value: object) -> str:
    """A readable rendering of a JSON expression, for messages and Unknown texts."""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


_Cond = dict[str, Any]


class _RuleReader:
    def __init__(self, reader: _Reader, nft: _NftTable, chain: _NftChain, path: Path) -> None:
        self.reader, self.nft, self.chain, self.path = reader, nft, chain, path
        self.fields: dict[str, Any] = {}
        self.holds: set[str] = set()
        self.fails: set[str] = set()

    def set_field(self, name: str, value: object, path: Path) -> None:
        if name in self.fields and self.fields[name] != value:
            raise _Bad("E0546", f"a second test of {name} in one rule is not modelled", path)
        self.fields[name] = value

    def rule(self, body: dict[str, Any]) -> ir.Rule:
        exprs = body.get("expr")
        if not isinstance(exprs, list):
            raise _Bad("E0540", "a rule needs an \"expr\" array", (*self.path, "expr"))
        comment = body.get("comment")
        if comment is not None and not isinstance(comment, str):
            raise _Bad("E0540", "a rule's comment must be a string", (*self.path, "comment"))
        statements: list[ir.Statement] = []
        action: ir.Action | None = None
        for index, expr in enumerate(exprs):
            path = (*self.path, "expr", index)
            key, value = _single(expr, path)
            if action is not None and not isinstance(action, ir.Log):
                raise _Bad("E0547", f"{key} after the rule's verdict is not modelled", path)
            if isinstance(action, ir.Log):
                statements.append(action)
                action = None
            if key == "match":
                self.match(_obj(value, path, "a match"), path)
            elif key == "limit":
                self.limit(value, path)
            elif key == "counter":
                continue
            else:
                action = self.statement(key, value, path)
        if action is None:
            raise _Bad("E0547", "a rule without a verdict or statement rulec models "
                       "(only counters or matches) is not modelled", (*self.path, "expr"))
        match = ir.Match(**self.fields)
        if self.holds or self.fails:
            match = replace(match, unknown=ir.Unknown(frozenset(self.holds),
                                                      frozenset(self.fails)))
        if isinstance(action, ir.Vmap):
            self.check_vmap(match, action, path)
        return ir.Rule(match=match, statements=tuple(statements), action=action,
                       comment=comment, span=self.reader.locate(self.path))

    def check_vmap(self, match: ir.Match, vmap: ir.Vmap, path: Path) -> None:
        for key in vmap.keys:
            if getattr(match, key.value) is not None:
                raise _Bad("E0546", f"a verdict map on {key.value} after a test of it is not "
                           "modelled", path)

    # --- matches ----------------------------------------------------------------------------

    def unknown(self, what: str, text: str, negated: bool, path: Path) -> None:
        """An unmodelled test: an error, or in opaque mode a condition of its own."""
        if not self.reader.opaque:
            raise _Bad("E0546", f"{what} is not modelled by rulec", path)
        (self.fails if negated else self.holds).add(text)

    def match(self, body: dict[str, Any], path: Path) -> None:
        op, left, right = body.get("op"), body.get("left"), body.get("right")
        if op not in ("==", "!=", "in", "!"):
            return self.unknown(f"operator {_render(op)}", _render(body), False, path)
        negated = op in ("!=", "!")
        if isinstance(left, dict) and "numgen" in left:
            # Independent dice per chain (kube-proxy): never modelled, always a condition.
            text = f"{self.chain.name}: numgen {_render(left['numgen'])} {op} {_render(right)}"
            (self.fails if negated else self.holds).add(text)
            return None
        try:
            modelled = self.modelled(left, right, op, negated, path)
        except _Bad as bad:
            if bad.code != "E0546" or not self.reader.opaque:
                raise
            modelled = False
        if not modelled:
            # `!=` is the same test failing, so both spell their text with `==`.
            self.unknown(f"match on {_render(left)}",
                         f"{_render(left)} == {_render(right)}", negated, path)
        return None

    def modelled(self, left: Any, right: Any, op: str, negated: bool, path: Path) -> bool:
        key, body = _single(left, (*path, "left")) if isinstance(left, dict) else ("", left)
        rpath = (*path, "right")
        if op == "!" and body == {"protocol": "tcp", "field": "flags"}:
            # `tcp flags 0x0 / MASK`, as nft lists it: none of MASK is set.
            self.set_field("proto", Protocol(6), path)
            self.set_field("tcp_flags", TcpFlags(frozenset(), self.flags(right, rpath)), path)
            return True
        if op == "!" and key != "ct":
            return False
        match key, body:
            case "meta", {"key": "l4proto"}:
                self.set_field("proto", Protocol(self.proto_number(right, rpath), negated),
                               path)
            case "payload", {"protocol": "ip", "field": "protocol"} | {
                    "protocol": "ip6", "field": "nexthdr"}:
                self.implied_family(body["protocol"], path)
                self.set_field("proto", Protocol(self.proto_number(right, rpath), negated),
                               path)
            case "meta", {"key": "nfproto"}:
                families = {"ipv4": Family.IP, "ipv6": Family.IP6}
                if right not in families or negated:
                    return False
                self.set_field("family", families[right], path)
            case "payload", {"protocol": "ip" | "ip6" as proto, "field": "saddr" | "daddr" as f}:
                self.implied_family(proto, path)
                family = Family.IP if proto == "ip" else Family.IP6
                self.set_field(f, self.addresses(right, family, negated, rpath), path)
            case "payload", {"protocol": proto, "field": "sport" | "dport" as f} if (
                    proto in _PORT_PROTOCOLS or proto == "th"):
                if proto != "th":
                    self.set_field("proto", Protocol(_PORT_PROTOCOLS[proto]), path)
                self.set_field(f, self.ports(right, negated, rpath), path)
            case "meta", {"key": "iifname" | "oifname" as f}:
                self.set_field(f, self.interface(right, negated, rpath), path)
            case "ct", {"key": "state"} if "dir" not in body:
                self.set_field("ct_state", self.ct_states(right, op, rpath), path)
            case "ct", {"key": "proto-dst", "dir": "original"}:
                self.set_field("ct_orig_dport", self.ports(right, negated, rpath), path)
            case "fib", {"result": "type", "flags": [("saddr" | "daddr") as f]}:
                if not isinstance(right, str) or right not in {k.value for k in AddrTypeKind}:
                    raise _Bad("E0548", f"unknown address type {_render(right)}", rpath)
                name = "src_type" if f == "saddr" else "dst_type"
                self.set_field(name, AddrType(AddrTypeKind(right), negated), path)
            case "&", [{"payload": {"protocol": "tcp", "field": "flags"}}, mask]:
                self.set_field("proto", Protocol(6), path)
                self.set_field("tcp_flags", TcpFlags(self.flags(right, rpath),
                                                     self.flags(mask, (*path, "left", "&", 1)),
                                                     negated), path)
            case "payload", {"protocol": "tcp", "field": "flags"} if op != "in":
                self.set_field("proto", Protocol(6), path)
                self.set_field("tcp_flags", TcpFlags(self.flags(right, rpath),
                                                     frozenset(TcpFlag), negated), path)
            case "payload", {"protocol": "icmp" | "icmpv6" as proto, "field": "type"}:
                family = Family.IP if proto == "icmp" else Family.IP6
                self.implied_family("ip" if proto == "icmp" else "ip6", path)
                self.set_field("proto", Protocol(1 if proto == "icmp" else 58), path)
                names = _ICMP if proto == "icmp" else _ICMPV6
                types = [self.named_int(v, names, rpath) for v in self.items(right, rpath)]
                self.set_field("icmp_type", IcmpType(family, tuple(types), negated), path)
            case "meta", {"key": "mark"}:
                self.set_field("mark", Mark(_int(right, rpath), MAX_MARK, negated), path)
            case "&", [{"meta": {"key": "mark"}}, mask]:
                mask = _int(mask, (*path, "left"))
                self.set_field("mark", Mark(_int(right, rpath), mask, negated), path)
            case _:
                return False
        return True

    def implied_family(self, proto: str, path: Path) -> None:
        """`ip saddr` and friends hold only for their family's packets in an inet table."""
        if self.nft.family is Family.INET:
            self.set_field("family", Family.IP if proto == "ip" else Family.IP6, path)

    def proto_number(self, value: object, path: Path) -> int:
        if isinstance(value, str) and value in _PROTO_NUMBERS:
            return _PROTO_NUMBERS[value]
        number = _int(value, path)
        if not 0 <= number <= 255:
            raise _Bad("E0548", f"protocol {number} is out of range", path)
        return number

    def named_int(self, value: object, names: dict[str, int], path: Path) -> int:
        if isinstance(value, str) and value in names:
            return names[value]
        return _int(value, path)

    def items(self, right: Any, path: Path) -> list[Any]:
        """The members a right side stands for: a value, an anonymous set or `@name`."""
        if isinstance(right, str) and right.startswith("@"):
            return self.named_set(right[1:], path)
        if isinstance(right, dict) and set(right) == {"set"}:
            items = right["set"]
            if not isinstance(items, list):
                raise _Bad("E0540", "a set must be an array", path)
            return [self.element(item) for item in items]
        return [right]

    def element(self, item: Any) -> Any:
        """An element without its comment (element comments change no packet's fate)."""
        if isinstance(item, dict) and set(item) == {"elem"} and isinstance(item["elem"], dict):
            return item["elem"].get("val")
        return item

    def named_set(self, name: str, path: Path) -> list[Any]:
        found = self.nft.sets.get(name)
        if found is None:
            raise _Bad("E0549", f"set @{name} is not declared in table "
                       f"{self.nft.family.value} {self.nft.name}", path)
        set_path, body = found
        elements = body.get("elem", [])
        if not isinstance(elements, list):
            raise _Bad("E0540", "a set's elem must be an array", (*set_path, "elem"))
        return [self.element(e) for e in elements]

    def addresses(self, right: Any, family: Family, negated: bool, path: Path) -> AddressSet:
        prefixes = []
        for item in self.items(right, path):
            prefixes.extend(self.prefixes(item, family, path))
        if not prefixes:
            raise _Bad("E0548", "an empty address set is not modelled", path)
        return AddressSet(tuple(prefixes), negated)

    def prefixes(self, item: Any, family: Family, path: Path) -> list[Prefix]:
        from rulec.ir.values import prefixes_of

        if isinstance(item, str):
            found = self.prefix(item, path)
            result = [found]
        elif isinstance(item, dict) and "prefix" in item and isinstance(item["prefix"], dict):
            addr, length = item["prefix"].get("addr"), item["prefix"].get("len")
            if not isinstance(addr, str):
                raise _Bad("E0548", f"bad prefix {_render(item)}", path)
            result = [self.prefix(f"{addr}/{_int(length, path)}", path)]
        elif isinstance(item, dict) and "range" in item and isinstance(item["range"], list) \
                and len(item["range"]) == 2:
            low, high = (self.prefix(a, path) if isinstance(a, str) else None
                         for a in item["range"])
            if low is None or high is None or not low.is_host or not high.is_host or \
                    low.family is not high.family or low.network > high.network:
                raise _Bad("E0548", f"bad address range {_render(item)}", path)
            result = list(prefixes_of(low.family, low.network, high.network))
        else:
            raise _Bad("E0546", f"address {_render(item)} is not modelled", path)
        if any(p.family is not family for p in result):
            raise _Bad("E0548", f"{_render(item)} is not an {family.value} address", path)
        return result

    def prefix(self, text: str, path: Path) -> Prefix:
        try:
            return Prefix.parse(text)
        except ValueError as exc:
            raise _Bad("E0548", f"bad address {text!r}: {exc}", path) from None

    def ports(self, right: Any, negated: bool, path: Path) -> PortSet:
        ranges = [self.port_range(item, path) for item in self.items(right, path)]
        if not ranges:
            raise _Bad("E0548", "an empty port set is not modelled", path)
        return PortSet(tuple(ranges), negated)

    def port_range(self, item: Any, path: Path) -> tuple[int, int]:
        item = _untyped(item)
        if isinstance(item, dict) and isinstance(item.get("range"), list) and \
                len(item["range"]) == 2:
            low, high = (_int(_untyped(v), path) for v in item["range"])
        else:
            low = high = _int(item, path)
        if not 0 <= low <= high <= 65535:
            raise _Bad("E0548", f"bad port range {_render(item)}", path)
        return low, high

    def interface(self, right: Any, negated: bool, path: Path) -> Interface:
        if not isinstance(right, str) or right.startswith("@") or not right:
            raise _Bad("E0546", f"interface match on {_render(right)} is not modelled (one "
                       "name only)", path)
        if right.endswith("*") and not right.endswith("\\*"):
            return Interface(right[:-1] + "+", negated)
        return Interface(right.replace("\\*", "*"), negated)

    def ct_states(self, right: Any, op: str, path: Path) -> CtStates:
        values = right if isinstance(right, list) else self.items(right, path)
        states = set()
        for value in values:
            if not isinstance(value, str) or value not in {s.value for s in CtState}:
                raise _Bad("E0548", f"unknown ct state {_render(value)}", path)
            states.add(CtState(value))
        if not states:
            raise _Bad("E0548", "an empty ct state set is not modelled", path)
        if op == "==" and len(states) > 1 and isinstance(right, list):
            raise _Bad("E0546", "ct state == with several states is not modelled (use in)",
                       path)
        return CtStates(frozenset(states), op in ("!=", "!"))

    def flags(self, value: Any, path: Path) -> frozenset[TcpFlag]:
        if value == 0:
            return frozenset()
        names = value if isinstance(value, list) else [value]
        out = set()
        for name in names:
            if not isinstance(name, str) or name not in _FLAGS:
                raise _Bad("E0548", f"unknown tcp flag {_render(name)}", path)
            out.add(_FLAGS[name])
        return frozenset(out)

    def limit(self, body: Any, path: Path) -> None:
        body = _obj(body, path, "a limit")
        units = {u.value: u for u in RateUnit}
        per = body.get("per", "second")
        if body.get("inv") or body.get("rate_unit", "packets") != "packets" or per not in units:
            raise _Bad("E0546", f"limit {_render(body)} is not modelled (packet rates only)",
                       path)
        rate, burst = _int(body.get("rate"), path), _int(body.get("burst", 5), path)
        try:
            self.set_field("limit", Limit(rate, units[per], burst), path)
        except ValueError as exc:
            raise _Bad("E0548", f"bad limit: {exc}", path) from None

    # --- statements and verdicts ------------------------------------------------------------

    def statement(self, key: str, body: Any, path: Path) -> ir.Action:
        match key:
            case "accept":
                return ir.Accept()
            case "drop":
                return ir.Drop()
            case "return":
                return ir.Return()
            case "jump" | "goto":
                target = _str(_obj(body, path, key), "target", path)
                return ir.Jump(target) if key == "jump" else ir.Goto(target)
            case "reject":
                return ir.Reject(self.reject_with(body, path))
            case "log":
                return self.log(body, path)
            case "dnat" | "snat":
                return self.nat(key, _obj(body, path, key), path)
            case "masquerade" | "redirect":
                ports = None if body is None else self.nat_ports(
                    _obj(body, path, key).get("port"), path)
                if key == "masquerade":
                    if body is not None and set(body) - {"port"}:
                        raise _Bad("E0547", f"masquerade {_render(body)} is not modelled", path)
                    return ir.Masquerade(ports)
                if ports is None or set(body) - {"port"}:
                    raise _Bad("E0547", f"redirect {_render(body)} is not modelled", path)
                return ir.Redirect(ports)
            case "mangle":
                return self.mangle(_obj(body, path, key), path)
            case "vmap":
                return self.vmap(_obj(body, path, key), path)
            case _:
                raise _Bad("E0547", f"statement {key} is not modelled by rulec", path)

    def reject_with(self, body: Any, path: Path) -> ir.RejectWith | None:
        if body is None:
            return None
        body = _obj(body, path, "a reject")
        kind, code = body.get("type"), body.get("expr")
        if kind == "tcp reset":
            return ir.RejectWith.TCP_RESET
        if code in (None, "port-unreachable") and kind in ("icmpx", "icmp", "icmpv6"):
            return None
        column = {"icmpx": 0, "icmp": 1, "icmpv6": 2}.get(str(kind))
        for with_, names in REJECT_CODES.items():
            if column is not None and names[column] == code:
                return with_
        raise _Bad("E0547", f"reject {_render(body)} is not modelled", path)

    def log(self, body: Any, path: Path) -> ir.Log:
        if body is None:
            return ir.Log()
        body = _obj(body, path, "a log")
        if set(body) - {"prefix", "level"}:
            raise _Bad("E0547", f"log {_render(body)} is not modelled (prefix and level only)",
                       path)
        prefix = body.get("prefix")
        if prefix is not None and not isinstance(prefix, str):
            raise _Bad("E0548", "a log prefix must be a string", path)
        level = body.get("level")
        if level is not None and level not in _LEVELS:
            raise _Bad("E0547", f"log level {_render(level)} is not modelled", path)
        return ir.Log(prefix, _LEVELS[level] if level is not None else None)

    def nat_ports(self, port: Any, path: Path) -> tuple[int, int] | None:
        if port is None:
            return None
        return self.port_range(port, path)

    def nat(self, key: str, body: dict[str, Any], path: Path) -> ir.Action:
        if set(body) - {"addr", "port", "family"} or not isinstance(body.get("addr"), str):
            raise _Bad("E0547", f"{key} {_render(body)} is not modelled (one address, "
                       "optional port)", path)
        address = self.prefix(body["addr"], path)
        ports = self.nat_ports(body.get("port"), path)
        return ir.Dnat(address, ports) if key == "dnat" else ir.Snat(address, ports)

    def mangle(self, body: dict[str, Any], path: Path) -> ir.Action:
        key, value = body.get("key"), body.get("value")
        if key == {"tcp option": {"name": "maxseg", "field": "size"}}:
            if value == {"rt": {"key": "mtu"}}:
                return ir.ClampMss()
            return ir.SetMss(_int(value, path))
        if key == {"meta": {"key": "mark"}}:
            return self.set_mark(value, path)
        raise _Bad("E0547", f"setting {_render(key)} is not modelled by rulec", path)

    def set_mark(self, value: Any, path: Path) -> ir.SetMark:
        """mark = (mark & keep) op operand, back to SetMark's (mark & ~mask) ^ value."""
        mark = {"meta": {"key": "mark"}}
        if isinstance(value, int) and not isinstance(value, bool):
            return ir.SetMark(value & MAX_MARK)
        if isinstance(value, dict) and isinstance(value.get("&"), list) and \
                len(value) == 1 and len(value["&"]) == 2 and value["&"][0] == mark:
            keep = _int(value["&"][1], path) & MAX_MARK
            return ir.SetMark(0, ~keep & MAX_MARK)
        if not (isinstance(value, dict) and len(value) == 1 and set(value) <= {"|", "^"}
                and isinstance(next(iter(value.values())), list)
                and len(next(iter(value.values()))) == 2):
            raise _Bad("E0547", f"mark set {_render(value)} is not modelled", path)
        op, (inner, operand) = next(iter(value.items()))
        operand = _int(operand, path) & MAX_MARK
        if inner == mark:
            keep = MAX_MARK
        elif isinstance(inner, dict) and isinstance(inner.get("&"), list) and \
                len(inner["&"]) == 2 and inner["&"][0] == mark:
            keep = _int(inner["&"][1], path) & MAX_MARK
        else:
            raise _Bad("E0547", f"mark set {_render(value)} is not modelled", path)
        if op == "^":
            return ir.SetMark(operand, ~keep & MAX_MARK)
        return ir.SetMark(operand, ~(keep & ~operand) & MAX_MARK)

    def vmap(self, body: dict[str, Any], path: Path) -> ir.Action:
        key, data = body.get("key"), body.get("data")
        keys_json = key["concat"] if isinstance(key, dict) and "concat" in key else [key]
        if not isinstance(keys_json, list) or not keys_json:
            raise _Bad("E0547", f"verdict map key {_render(key)} is not modelled", path)
        keys = [self.map_key(k, (*path, "key")) for k in keys_json]
        if isinstance(data, str) and data.startswith("@"):
            entries = self.named_set(data[1:], path)
        elif isinstance(data, dict) and isinstance(data.get("set"), list):
            entries = data["set"]
        else:
            raise _Bad("E0547", f"verdict map data {_render(data)} is not modelled", path)
        out = []
        for entry in entries:
            if not isinstance(entry, list) or len(entry) != 2:
                raise _Bad("E0540", "a map element must be [key, verdict]", path)
            element, verdict_json = self.element(entry[0]), entry[1]
            parts = element["concat"] if isinstance(element, dict) and "concat" in element \
                else [element]
            if not isinstance(parts, list) or len(parts) != len(keys):
                raise _Bad("E0548", f"map element {_render(element)} does not fit its key",
                           path)
            values = tuple(self.map_value(k, p, path) for k, p in
                           zip(keys, parts, strict=True))
            vkey, vbody = _single(verdict_json, path)
            verdict = self.statement(vkey, vbody, path)
            if not isinstance(verdict, ir.Accept | ir.Drop | ir.Return | ir.Jump | ir.Goto):
                raise _Bad("E0547", f"map verdict {vkey} is not modelled", path)
            out.append((values, verdict))
        if not out:
            raise _Bad("E0548", "an empty verdict map is not modelled", path)
        return ir.Vmap(tuple(k for k, _ in keys), tuple(out))

    def map_key(self, key: Any, path: Path) -> tuple[ir.MapKey, Any]:
        match key:
            case {"payload": {"protocol": "ip" | "ip6" as p, "field": "saddr" | "daddr" as f}}:
                self.implied_family(p, path)
                return _MAP_KEYS[f], Family.IP if p == "ip" else Family.IP6
            case {"payload": {"protocol": proto, "field": "sport" | "dport" as f}} if (
                    proto in _PORT_PROTOCOLS or proto == "th"):
                if proto != "th":
                    self.set_field("proto", Protocol(_PORT_PROTOCOLS[proto]), path)
                return _MAP_KEYS[f], None
            case {"meta": {"key": "iifname" | "oifname" as f}}:
                return _MAP_KEYS[f], None
            case {"ct": {"key": "state"}}:
                return ir.MapKey.CT_STATE, None
            case _:
                raise _Bad("E0547", f"verdict map key {_render(key)} is not modelled", path)

    def map_value(self, key: tuple[ir.MapKey, Any], part: Any, path: Path) -> ir.MapValue:
        kind, family = key
        if kind in (ir.MapKey.SADDR, ir.MapKey.DADDR):
            return AddressSet(tuple(self.prefixes(part, family, path)))
        if kind in (ir.MapKey.SPORT, ir.MapKey.DPORT):
            return PortSet((self.port_range(part, path),))
        if kind is ir.MapKey.CT_STATE:
            return self.ct_states([part], "in", path)
        return self.interface(part, False, path)
