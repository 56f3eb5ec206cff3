"""One packet's way through a ruleset, for a reader: the packet spelling `rulec explain --packet`
takes, the explanation built from rulec.ir.evaluate's trace (hooks, chains, the rules that
matched with their source, the verdict, the rewrites), and its text and JSON forms."""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from rulec.analysis.diff import effect_of
from rulec.analysis.render import address_text, packet_text, witness_json
from rulec.diagnostics import RulecError, SourceFile, Span, escape
from rulec.ir import nodes as ir
from rulec.ir.evaluate import Host, Outcome, Packet, Path, Step, Verdict, evaluate
from rulec.ir.printer import rule_text
from rulec.ir.values import (
    ICMP,
    ICMP_TYPES,
    ICMPV6,
    ICMPV6_TYPES,
    MAX_MARK,
    MAX_PORT,
    PORT_PROTOCOLS,
    PROTOCOL_NAMES,
    PROTOCOLS,
    TCP,
    CtState,
    Family,
    TcpFlag,
)

if TYPE_CHECKING:
    from rulec.frontends.k8s.model import Pod

SCHEMA_VERSION = 1
PACKET_SOURCE = "--packet"  # the name errors in a packet spelling are reported under
DEFAULT_SPORT = 40000  # a client's ephemeral port, when the spelling leaves it out
_IFNAMSIZ = 15  # the kernel's longest interface name
_OPTIONS = ("in", "out", "ct", "to-host", "from-host", "mark", "flags", "type", "mss",
            "orig-dport", "over-limit")


# --- the packet spelling --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PacketSpec:
    """A spelled packet and the host it meets: `to_host` (its destination is one of this host's
    addresses) and the host's addresses from `from-host`, `to-host` and `addr`."""

    packet: Packet
    host: Host
    to_host: bool = False


class _Tokens:
    """Whitespace-separated words with their offsets; `->` is a word of its own."""

    def __init__(self, source: SourceFile) -> None:
        self.source = source
        self.words = [(m.group(), m.start(), m.end())
                      for m in re.finditer(r"->|(?:(?!->)\S)+", source.text)]
        self.at = 0

    def peek(self) -> str | None:
        return self.words[self.at][0] if self.at < len(self.words) else None

    def take(self, what: str) -> tuple[str, Span]:
        if self.at >= len(self.words):
            end = len(self.source.text)
            raise self.error(f"expected {what} at the end of the packet",
                             self.source.span(end, end))
        word, start, end = self.words[self.at]
        self.at += 1
        return word, self.source.span(start, end)

    def error(self, message: str, span: Span, *notes: str) -> RulecError:
        return RulecError.single("E0801", message, span, *(notes or (
            "a packet reads: PROTO SRC[:PORT] -> DST[:PORT] [in IFACE] [out IFACE] [ct STATE] "
            "[to-host|from-host] ... (docs/explain.md)",)))


def _address(tokens: _Tokens, word: str, span: Span, side: str,
             port_protocol: bool) -> tuple[Family, int, int | None]:
    """`a.b.c.d[:port]`, `[v6]:port` or a bare v6 address; a port only for port protocols."""
    port_text: str | None = None
    if word.startswith("["):
        address, bracket, rest = word[1:].partition("]")
        if not bracket:
            raise tokens.error(f"{side} address {word!r} opens a [ but never closes it", span)
        if rest:
            if not rest.startswith(":"):
                raise tokens.error(f"expected :PORT after ] in {word!r}", span)
            port_text = rest[1:]
    elif word.count(":") == 1:
        address, _, port_text = word.partition(":")
    else:
        address = word
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise tokens.error(f"{side} {word!r} is no IPv4 or IPv6 address", span,
                           "an IPv6 address with a port is written [2001:db8::1]:443") from None
    family = Family.IP if parsed.version == 4 else Family.IP6
    port: int | None = None
    if port_text is not None:
        if not port_protocol:
            raise tokens.error(f"{side} {word!r} has a port, but only tcp, udp, sctp, udplite "
                               "and dccp have ports", span)
        if not port_text.isdigit() or not 0 <= int(port_text) <= MAX_PORT:
            raise tokens.error(f"port {port_text!r} is no number from 0 to {MAX_PORT}", span)
        port = int(port_text)
    return family, int(parsed), port


def _number(tokens: _Tokens, word: str, span: Span, what: str, top: int) -> int:
    try:
        value = int(word, 0)
    except ValueError:
        value = -1
    if not 0 <= value <= top:
        raise tokens.error(f"{what} {word!r} is no number from 0 to {top:#x}"
                           if top == MAX_MARK else f"{what} {word!r} is no number from 0 to {top}",
                           span)
    return value


def _interface(tokens: _Tokens, what: str) -> tuple[str, Span]:
    word, span = tokens.take(f"an interface name after `{what}`")
    if len(word) > _IFNAMSIZ or "+" in word or "/" in word:
        raise tokens.error(f"{word!r} is no interface name (at most {_IFNAMSIZ} characters, "
                           "no + or /)", span)
    return word, span


def parse_packet(text: str) -> PacketSpec:
    """Read a packet spelled as docs/explain.md describes, e.g.
    `tcp 198.51.100.7:40000 -> 203.0.113.1:22 in eth0 ct new to-host`; RulecError (E0801)
    pointing at the column of the first word that does not fit."""
    tokens = _Tokens(SourceFile(PACKET_SOURCE, text))
    word, span = tokens.take("a protocol (tcp, udp, icmp, ...)")
    proto = PROTOCOLS.get(word.lower())
    if proto is None:
        if not word.isdigit() or int(word) > 255:
            raise tokens.error(f"unknown protocol {word!r}", span,
                               f"known: {', '.join(PROTOCOLS)}, or a number from 0 to 255")
        proto = int(word)
    ports = proto in PORT_PROTOCOLS
    word, src_span = tokens.take("the source address")
    family, saddr, sport = _address(tokens, word, src_span, "source", ports)
    word, span = tokens.take("`->`")
    if word != "->":
        raise tokens.error(f"expected `->` between source and destination, not {word!r}", span)
    word, dst_span = tokens.take("the destination address")
    dst_family, daddr, dport = _address(tokens, word, dst_span, "destination", ports)
    if dst_family is not family:
        raise tokens.error("source and destination are of different families (IPv4 and "
                           "IPv6)", dst_span)
    if proto in (ICMP, ICMPV6) and (proto == ICMP) != (family is Family.IP):
        raise tokens.error(f"{PROTOCOL_NAMES[proto]} is for "
                           f"{'IPv4' if proto == ICMP else 'IPv6'} packets", src_span)
    if ports and dport is None:
        raise tokens.error(f"a {PROTOCOL_NAMES[proto]} packet needs a destination port "
                           "(DST:PORT)", dst_span)
    fields: dict[str, Any] = {}
    addresses: list[tuple[str, int]] = []  # (interface, address) of this host
    to_host = from_host = False
    seen: dict[str, Span] = {}
    while tokens.peek() is not None:
        key, span = tokens.take("an option")
        key = key.lower()
        if key in seen and key != "addr":
            raise tokens.error(f"`{key}` is given twice", span)
        seen[key] = span
        match key:
            case "in" | "out":
                name, _ = _interface(tokens, key)
                fields["iif" if key == "in" else "oif"] = name
                if tokens.peek() == "addr":
                    tokens.take("addr")
                    word, aspan = tokens.take(f"this host's address on {name}")
                    afamily, value, _ = _address(tokens, word, aspan, "address", False)
                    if afamily is not family:
                        raise tokens.error(f"{word} is not of the packet's family", aspan)
                    addresses.append((name, value))
            case "ct":
                word, vspan = tokens.take("a conntrack state")
                try:
                    fields["ct_state"] = CtState(word.lower())
                except ValueError:
                    raise tokens.error(f"unknown conntrack state {word!r}", vspan, "known: "
                                       + ", ".join(s.value for s in CtState)) from None
            case "to-host" | "from-host":
                if (to_host if key == "from-host" else from_host):
                    raise tokens.error("a packet is either to-host or from-host", span,
                                       "a packet this host sends to itself is from-host, to "
                                       "one of its own addresses")
                to_host, from_host = to_host or key == "to-host", from_host or key == "from-host"
            case "mark":
                word, vspan = tokens.take("a mark value")
                fields["mark"] = _number(tokens, word, vspan, "mark", MAX_MARK)
            case "flags":
                word, vspan = tokens.take("tcp flags (syn,ack)")
                if proto != TCP:
                    raise tokens.error("only tcp packets have flags", span)
                try:
                    fields["tcp_flags"] = frozenset(TcpFlag(f) for f in word.lower().split(",")
                                                    if f != "none")
                except ValueError:
                    raise tokens.error(f"unknown tcp flag in {word!r}", vspan, "known: "
                                       + ", ".join(f.value for f in TcpFlag)) from None
            case "type":
                word, vspan = tokens.take("an icmp type")
                if proto not in (ICMP, ICMPV6):
                    raise tokens.error("only icmp and icmpv6 packets have a type", span)
                names = ICMP_TYPES if proto == ICMP else ICMPV6_TYPES
                fields["icmp_type"] = names[word.lower()] if word.lower() in names else \
                    _number(tokens, word, vspan, "icmp type", 255)
            case "mss":
                word, vspan = tokens.take("an MSS value")
                if proto != TCP:
                    raise tokens.error("only tcp packets carry an MSS option", span)
                fields["mss"] = _number(tokens, word, vspan, "mss", MAX_PORT)
            case "orig-dport":
                word, vspan = tokens.take("a port")
                if not ports:
                    raise tokens.error("only port protocols have an original port", span)
                fields["ct_orig_dport"] = _number(tokens, word, vspan, "port", MAX_PORT)
            case "over-limit":
                fields["under_limit"] = False
            case _:
                close = difflib.get_close_matches(key, _OPTIONS, n=1)
                raise tokens.error(f"unknown option {key!r}", span, *(
                    [f"did you mean {close[0]}?"] if close else []),
                    f"options: {', '.join(_OPTIONS)}")
    if proto in (ICMP, ICMPV6) and "icmp_type" not in fields:
        raise tokens.error(f"an {PROTOCOL_NAMES[proto]} packet needs `type` (e.g. type "
                           "echo-request)", tokens.source.span(len(text), len(text)))
    if from_host and "iif" in fields:
        raise tokens.error("a packet from this host has no input interface", seen["in"])
    if proto == TCP and "tcp_flags" not in fields:  # the first packet opens, the others answer
        state = fields.get("ct_state", CtState.NEW)
        fields["tcp_flags"] = frozenset({TcpFlag.SYN} if state is CtState.NEW
                                        else {TcpFlag.ACK})
    packet = Packet(family=family, proto=proto, saddr=saddr, daddr=daddr,
                    sport=(DEFAULT_SPORT if sport is None else sport) if ports else None,
                    dport=dport, path=Path.LOCAL if from_host else Path.INCOMING, **fields)
    return PacketSpec(packet, host_for(packet, to_host, addresses), to_host)


def host_for(packet: Packet, to_host: bool,
             addresses: list[tuple[str, int]] | None = None) -> Host:
    """The host a packet meets: its destination is the host's when `to_host` (and the address
    of the interface it came in on, for redirect); its source when it is sent from the host."""
    local = {(packet.family, a) for _, a in addresses or ()}
    interfaces = [(name, packet.family, a) for name, a in addresses or ()]
    if to_host:
        local.add((packet.family, packet.daddr))
        if packet.iif and not any(name == packet.iif for name, _, _ in interfaces):
            interfaces.append((packet.iif, packet.family, packet.daddr))
    if packet.path is Path.LOCAL:
        local.add((packet.family, packet.saddr))
        if packet.oif and not any(name == packet.oif for name, _, _ in interfaces):
            interfaces.append((packet.oif, packet.family, packet.saddr))
    return Host(local=frozenset(local), interface_addresses=tuple(interfaces))


# --- the explanation ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Hit:
    """A rule that matched (index and rule set), or a chain's policy (both None)."""

    table: str  # filter, nat, mangle, raw
    chain: str
    index: int | None
    action: str  # accept, drop, jump, dnat, ..., or "policy drop"
    span: Span | None = field(compare=False)
    rule: ir.Rule | None = None  # the IR rule as evaluated (its text in `compiled`)

    @property
    def where(self) -> str | None:
        """`file:line` of the rule's source; None for a policy or a rule without source."""
        return f"{self.span.file}:{self.span.line}" if self.span else None

    @property
    def source(self) -> str | None:
        """The rule's text as written."""
        if self.span is None:
            return None
        return self.span.source.text[self.span.start:self.span.end]

    @property
    def compiled(self) -> str | None:
        return rule_text(self.rule) if self.rule is not None else None


@dataclass(frozen=True, slots=True)
class HookPass:
    """One netfilter hook the packet went through: the chains that ran and what matched."""

    hook: ir.Hook
    chains: tuple[tuple[str, str], ...]  # (table, chain) in the order they were entered
    hits: tuple[Hit, ...]


@dataclass(frozen=True, slots=True)
class Rewrite:
    field: str  # the Packet field: saddr, daddr, sport, dport, mark, mss
    before: int | None
    after: int | None
    by: str  # the action: dnat, snat, masquerade, redirect, setmark, setmss


@dataclass(frozen=True, slots=True)
class Explanation:
    """What `ruleset` does to `packet` on `host`, step by step."""

    packet: Packet
    host: Host
    to_host: bool  # the packet's destination was this host's address before any NAT
    outcome: Outcome
    hooks: tuple[HookPass, ...]
    decided_by: Hit | None  # the rule or policy that gave the verdict; None: no chain did
    rewrites: tuple[Rewrite, ...]
    notes: tuple[str, ...] = ()

    @property
    def verdict(self) -> Verdict:
        return self.outcome.verdict

    @property
    def path(self) -> str:
        """In words: forwarded, to this host, or from this host."""
        if self.packet.path is Path.LOCAL:
            return "from this host"
        if ir.Hook.INPUT in self.outcome.hooks:
            return "to this host"
        if ir.Hook.FORWARD in self.outcome.hooks:
            return "forwarded"
        return "incoming, stopped before routing"


def explain(ruleset: ir.Ruleset, packet: Packet, host: Host | None = None) -> Explanation:
    """Evaluate `packet` with the reference evaluator and explain its trace (`host`: the
    host's addresses; none by default, so an incoming packet is forwarded)."""
    host = Host() if host is None else host
    outcome = evaluate(ruleset, packet, host)
    hits = [_hit(ruleset, (packet, outcome.packet), host, step) for step in outcome.trace]
    passes = []
    for hook in outcome.hooks:
        mine = tuple(h for h, s in zip(hits, outcome.trace, strict=True) if s.hook is hook)
        passes.append(HookPass(hook, _entered(mine), mine))
    effect = effect_of(packet, outcome)
    decider = effect.decided_by
    decided_by = None
    if decider is not None:
        decided_by = next(h for h in reversed(hits) if (h.table, h.chain, h.action) == (
            decider.table, decider.chain, decider.action) and h.span == decider.span)
    by = effect.rewritten_by
    rewrites = tuple(Rewrite(name, getattr(packet, name), after, _rewriter(name, by))
                     for name, after in effect.rewrites)
    to_host = (packet.family, packet.daddr) in host.local
    return Explanation(packet, host, to_host, outcome, tuple(passes), decided_by, rewrites,
                       tuple(_notes(ruleset, packet, host, outcome)))


def _entered(hits: tuple[Hit, ...]) -> tuple[tuple[str, str], ...]:
    """The chains that ran, in order: where a rule matched, and every jump's or goto's target
    (a chain may run without a rule of it matching)."""
    chains: dict[tuple[str, str], None] = {}
    for hit in hits:
        chains[(hit.table, hit.chain)] = None
        if hit.rule is not None and isinstance(hit.rule.action, ir.Jump | ir.Goto):
            chains[(hit.table, hit.rule.action.target)] = None
    return tuple(chains)


def _rewriter(name: str, by: tuple[str, ...]) -> str:
    wanted = {"saddr": ("snat", "masquerade"), "sport": ("snat", "masquerade"),
              "daddr": ("dnat", "redirect"), "dport": ("dnat", "redirect"),
              "mark": ("setmark",), "mss": ("setmss",)}[name]
    return next((b for b in reversed(by) if b in wanted), wanted[0])


def _hit(ruleset: ir.Ruleset, packets: tuple[Packet, Packet], host: Host, step: Step) -> Hit:
    rule = None
    if step.index is not None:  # the rule itself, for its compiled text
        for table in ruleset.tables:
            chain = table.chain(step.chain)
            if (table.kind.value == step.table and table.family in (packets[0].family,
                                                                    Family.INET)
                    and chain is not None and step.index < len(chain.rules)
                    and chain.rules[step.index].span == step.span):
                rule = _entry(chain.rules[step.index], packets, host)
                break
    return Hit(step.table, step.chain, step.index, step.action, step.span, rule)


def _entry(rule: ir.Rule, packets: tuple[Packet, Packet], host: Host) -> ir.Rule | None:
    """A verdict-map rule as the plain rule of the entry the packet hit (None if that cannot
    be told: the packet the map saw may be rewritten by then); any other rule as itself."""
    if not isinstance(rule.action, ir.Vmap):
        return rule
    for packet in packets:  # as it came, and as it left
        hits = [r for r in ir.vmap_rules(rule) if _matches(r.match, packet, host)]
        if len(hits) == 1:
            return hits[0]
    return None


def _matches(match: ir.Match, packet: Packet, host: Host) -> bool:
    """Whether `match` holds for `packet`, asked of the evaluator: one rule that drops, on the
    packet's way out of this host."""
    probe = ir.Ruleset(tables=(ir.Table(kind=ir.TableKind.FILTER, family=packet.family, chains=(
        ir.Chain(name=ir.Hook.OUTPUT.value, hook=ir.Hook.OUTPUT, policy=ir.Policy.ACCEPT,
                 rules=(ir.Rule(match=match, action=ir.Drop()),)),)),))
    return evaluate(probe, replace(packet, path=Path.LOCAL), host).verdict is Verdict.DROP


def _notes(ruleset: ir.Ruleset, packet: Packet, host: Host, outcome: Outcome
           ) -> Iterator[str]:
    last = outcome.trace[-1] if outcome.trace else None
    if last is not None and last.action == "masquerade" and outcome.verdict is Verdict.DROP:
        yield (f"masquerade needs this host's address on {packet.oif or 'the out interface'}; "
               "none was given, so the kernel drops: spell it `out IFACE addr ADDR`")
    if packet.path is Path.LOCAL or ir.Hook.FORWARD not in outcome.hooks:
        return
    if packet.oif is None and any(r.match.oifname is not None
                                  for _, _, r in ir.iter_rules(ruleset)):
        yield ("forwarded without an `out` interface, so no rule testing one (out IFACE) "
               "matched: rulec does not route; name the interface the packet leaves by")
    if (packet.family, packet.daddr) not in host.local and any(
            t.chain(ir.Hook.INPUT.value) is not None for t in ruleset.tables):
        yield ("forwarded: the destination is not this host's address; add `to-host` if it "
               "is, to see INPUT")


# --- text and JSON --------------------------------------------------------------------------

def _step_line(hit: Hit) -> str:
    where = escape(hit.where) if hit.where else "(policy)" if hit.index is None else "(generated)"
    source = _first_line(hit.source)
    text = hit.action if hit.index is None else escape(source or hit.compiled or hit.action)
    # A generated rule's source is a line of configuration (a Docker `publish`, a
    # NetworkPolicy's YAML): the rule it became follows in brackets.
    if hit.compiled and source and hit.compiled.split()[0] not in source:
        text += f"   [{escape(hit.compiled)}]"
    return f"    {hit.table} {hit.chain}: {where}  {text}"


def _first_line(text: str | None, width: int = 90) -> str | None:
    if text is None:
        return None
    line = " ".join(text.strip().splitlines()[0].split()) if text.strip() else ""
    return line if len(line) <= width else line[:width - 3] + "..."


def _address_of(family: Family, name: str, value: int | None) -> str:
    if name in ("saddr", "daddr"):
        return address_text(family, value)
    if name == "mark" and value is not None:
        return f"{value:#x}"
    return "none" if value is None else str(value)


def text(result: Explanation) -> str:
    """For a terminal: the packet, its path, each hook with what matched, then the verdict."""
    family = result.packet.family
    lines = [f"packet: {escape(packet_text(result.packet, result.to_host))}",
             f"path:   {result.path}: {', '.join(h.hook.value for h in result.hooks)}"]
    for hook in result.hooks:
        lines.append(f"{hook.hook.value}:" + ("" if hook.hits else " no chain of this "
                                              "policy runs here"))
        lines.extend(_step_line(hit) for hit in hook.hits)
    decided = result.decided_by
    verdict = result.verdict.value
    if decided is None:
        verdict += " (no chain decided: the default)"
    elif decided.index is None:
        verdict += f" by the {decided.action} of {decided.table} {decided.chain}"
    else:
        verdict += f" by {escape(decided.where or f'{decided.table} {decided.chain}')}"
    lines.append(f"verdict: {verdict}")
    for r in result.rewrites:
        lines.append(f"rewritten: {r.field} {_address_of(family, r.field, r.before)} -> "
                     f"{_address_of(family, r.field, r.after)} ({r.by})")
    if result.rewrites:
        lines.append(f"after:  {escape(packet_text(result.outcome.packet, False))}")
    lines.extend(f"note: {n}" for n in result.notes)
    return "\n".join(lines) + "\n"


def _hit_json(hit: Hit) -> dict[str, Any]:
    return {"table": hit.table, "chain": hit.chain, "index": hit.index, "action": hit.action,
            "rule": hit.where, "source": hit.source, "compiled": hit.compiled}


def document(result: Explanation) -> dict[str, Any]:
    """The JSON document docs/explain.md describes."""
    family = result.packet.family
    return {
        "schema": SCHEMA_VERSION,
        "packet": witness_json(result.packet, result.to_host),
        "path": result.path,
        "hooks": [{"hook": h.hook.value,
                   "chains": [{"table": t, "chain": c} for t, c in h.chains],
                   "steps": [_hit_json(hit) for hit in h.hits]} for h in result.hooks],
        "verdict": result.verdict.value,
        "delivered_locally": result.outcome.delivered_locally,
        "decided_by": None if result.decided_by is None else _hit_json(result.decided_by),
        "rewrites": [{"field": r.field, "from": _json_value(family, r.field, r.before),
                      "to": _json_value(family, r.field, r.after), "by": r.by}
                     for r in result.rewrites],
        "after": witness_json(result.outcome.packet, False),
        "notes": list(result.notes),
    }


def _json_value(family: Family, name: str, value: int | None) -> str | int | None:
    if name in ("saddr", "daddr") and value is not None:
        return address_text(family, value)
    return value


def as_json(result: Explanation) -> str:
    return json.dumps(document(result), indent=2) + "\n"


def pod_packet(pods: Sequence[Pod], from_pod: str, to_pod: str, port: str) -> PacketSpec:
    """The first packet of a connection from pod `ns/name` to pod `ns/name` on `PORT/PROTO`
    (`80/tcp`, `53/udp`; protocol tcp when left out), forwarded by the node between them: of
    the first family both pods have an address of. ValueError naming what does not fit."""
    by_name = {f"{p.namespace}/{p.name}": p for p in pods}
    ends = []
    for given in (from_pod, to_pod):
        pod = by_name.get(given)
        if pod is None:
            known = ", ".join(sorted(by_name)[:8]) or "none"
            raise ValueError(f"no pod {given!r} in the inventory (namespace/name; pods: "
                             f"{known}{', ...' if len(by_name) > 8 else ''})")
        ends.append(pod)
    number, _, protocol = port.partition("/")
    proto = PROTOCOLS.get((protocol or "tcp").lower())
    if proto not in PORT_PROTOCOLS or not number.isdigit() or not 0 < int(number) <= MAX_PORT:
        raise ValueError(f"--port {port!r}: write PORT/PROTOCOL, e.g. 80/tcp or 53/udp")
    for family in (Family.IP, Family.IP6):
        src = next((a for a in ends[0].addresses if a.family is family), None)
        dst = next((a for a in ends[1].addresses if a.family is family), None)
        if src is not None and dst is not None:
            packet = Packet(family=family, proto=proto, saddr=src.network, daddr=dst.network,
                            sport=DEFAULT_SPORT, dport=int(number))
            return PacketSpec(packet, Host())
    raise ValueError(f"{from_pod} and {to_pod} have no address family in common")


__all__ = ["Explanation", "Hit", "HookPass", "PacketSpec", "Rewrite", "as_json", "document",
           "explain", "host_for", "parse_packet", "pod_packet", "text"]
