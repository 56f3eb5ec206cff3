"""How diff results read: text for a terminal, Markdown for a pull-request comment, JSON for
tools (its schema is documented in docs/diff.md). Printing only: every fact comes from
rulec.analysis.diff."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any

from rulec.analysis.diff import Box, Change, Decider, Diff, Effect
from rulec.analysis.space import (
    ABSENT,
    CT_STATES,
    PATH_INCOMING,
    PATH_LOCAL,
    TCP_FLAGS,
    F,
    Names,
    flags_of,
)
from rulec.diagnostics import Span, escape
from rulec.ir.evaluate import Packet
from rulec.ir.intervals import Intervals, complement
from rulec.ir.values import MAX_PORT, PROTOCOL_NAMES, Family, Prefix, TcpFlags, prefixes_of

SCHEMA_VERSION = 1
_MAX_BOXES = 4  # per change in text and Markdown; JSON lists every box


def address_text(family: Family, value: int | None) -> str:
    if value is None:
        return "?"
    if family is Family.IP:
        return str(ipaddress.IPv4Address(value))
    return str(ipaddress.IPv6Address(value))


def _prefixes(family: Family, values: Intervals) -> list[str]:
    return [str(p) if p.length < family.bits else p.address_text()
            for low, high in values for p in prefixes_of(family, low, high)]


def _ranges(values: Intervals, name: Callable[[int], str] = str) -> list[str]:
    return [name(low) if low == high else f"{name(low)}-{name(high)}" for low, high in values]


def _proto_name(number: int) -> str:
    return PROTOCOL_NAMES.get(number, str(number))


class _Describer:
    """Field values in words, leaving out what is the field's whole line."""

    def __init__(self, names: Names | None = None) -> None:
        self.names = names

    def words(self, box: Box) -> str:
        family = box.family
        parts: list[str] = []
        proto = box.get(F.PROTO)
        if proto is not None and proto != ((0, 255),):
            shown = _set_text(proto, 255, lambda v: _ranges(v, _proto_name))
            parts.append(shown)
        for fld, word in ((F.SADDR, "from"), (F.DADDR, "to")):
            values = box.get(fld)
            top = (1 << family.bits) - 1
            if values is not None and values != ((0, top),):
                parts.append(f"{word} " + _set_text(values, top,
                                                    lambda v: _prefixes(family, v)))
        for fld, word in ((F.SPORT, "sport"), (F.DPORT, "port"), (F.CT_ORIG_DPORT,
                                                                   "original port")):
            values = box.get(fld)
            if values is not None and values not in (((0, MAX_PORT),), ((ABSENT, ABSENT),)):
                parts.append(f"{word} " + _set_text(values, MAX_PORT, _ranges))
        for fld, word in ((F.IIF, "in on"), (F.OIF, "out on")):
            text = self._interfaces(box.get(fld), fld)
            if text:
                parts.append(f"{word} {text}")
        states = box.get(F.CT_STATE)
        if states is not None and states != ((0, len(CT_STATES) - 1),):
            parts.append("ct state " + _set_text(
                states, len(CT_STATES) - 1,
                lambda v: [",".join(CT_STATES[i].value for i in _each(v))] if v else []))
        flags = box.get(F.TCP_FLAGS)
        if flags is not None and flags not in (((0, (1 << len(TCP_FLAGS)) - 1),),
                                               ((ABSENT, ABSENT),)):
            parts.append("tcp flags " + " or ".join(
                TcpFlags.text(flags_of(b)) for b in list(_each(flags))[:6])
                + (" or ..." if sum(h - lo + 1 for lo, h in flags) > 6 else ""))
        icmp = box.get(F.ICMP_TYPE)
        if icmp is not None and icmp not in (((0, 255),), ((ABSENT, ABSENT),)):
            parts.append("icmp type " + ",".join(_ranges(icmp)))
        mark = box.get(F.MARK)
        if mark is not None and len(_each_list(mark)) < 8:
            parts.append("mark bits " + ",".join(str(v) for v in _each(mark)))
        limit = box.get(F.LIMIT)
        if limit == ((1, 1),):
            parts.append("within its rate limit")
        elif limit == ((0, 0),):
            parts.append("over its rate limit")
        mss = box.get(F.MSS)
        if mss is not None and mss != ((ABSENT, MAX_PORT),):
            parts.append("mss " + ",".join(_ranges(mss, lambda v: "none" if v < 0 else str(v))))
        parts.append(_path_words(box))
        return " ".join(p for p in parts if p) or "every packet"

    def _interfaces(self, values: Intervals | None, fld: F) -> str:
        if values is None or self.names is None:
            return ""
        top = self.names.top
        if values in (((0, top),), ((1, top),)) or (fld is F.IIF and values == ((0, 0),)):
            return ""
        labels = [self.names.label(i) or "(none)" for i in _each(values)]
        return ",".join(labels)


def _path_words(box: Box) -> str:
    """Where the packets go. Routing decides INPUT or FORWARD after DNAT, so the words say
    whom the packet is addressed to, not which chain it ends in."""
    path, local, source = box.get(F.PATH), box.get(F.DADDR_LOCAL), box.get(F.SADDR_LOCAL)
    words = []
    if path == ((PATH_LOCAL, PATH_LOCAL),):
        words.append("sent by this host")
    elif path == ((PATH_INCOMING, PATH_INCOMING),):
        words.append("arriving")
    if local == ((1, 1),):
        words.append("addressed to this host")
    elif local == ((0, 0),) and path == ((PATH_INCOMING, PATH_INCOMING),):
        words.append("addressed elsewhere (routed through)")
    if source == ((1, 1),):
        words.append("from an address of this host")
    return ", ".join(words)


def _each(values: Intervals):  # type: ignore[no-untyped-def]
    for low, high in values:
        yield from range(low, high + 1)


def _each_list(values: Intervals) -> list[int]:
    return list(_each(values)) if sum(h - lo + 1 for lo, h in values) < 64 else list(range(64))


def _set_text(values: Intervals, top: int, show: Callable[[Intervals], list[str]]) -> str:
    """The values, or 'not' the others when that is shorter."""
    inside, outside = show(values), show(complement(values, 0, top))
    if (len(outside), len(", ".join(outside))) < (len(inside), len(", ".join(inside))):
        return "not " + _braced(outside)
    return _braced(inside)


def _braced(items: list[str]) -> str:
    if len(items) > 6:
        items = [*items[:6], f"... ({len(items) - 6} more)"]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def packet_text(packet: Packet, to_host: bool) -> str:
    """One line a reviewer can read: `tcp 10.0.0.1:40000 -> 192.0.2.1:22 in on eth0`."""
    fam = packet.family
    src, dst = address_text(fam, packet.saddr), address_text(fam, packet.daddr)
    if fam is Family.IP6:
        src, dst = f"[{src}]", f"[{dst}]"
    if packet.sport is not None:
        src += f":{packet.sport}"
    if packet.dport is not None:
        dst += f":{packet.dport}"
    words = [_proto_name(packet.proto), src, "->", dst]
    if packet.icmp_type is not None:
        words.append(f"type {packet.icmp_type}")
    if packet.iif:
        words.append(f"in {packet.iif}")
    if packet.oif:
        words.append(f"out {packet.oif}")
    words.append(f"ct {packet.ct_state.value}")
    if packet.path.value == "local":
        words.append("(sent by this host)")
    elif to_host:
        words.append("(addressed to this host)")
    if packet.mark:
        words.append(f"mark {packet.mark:#x}")
    if not packet.under_limit:
        words.append("(over its rate limit)")
    return " ".join(words)


def effect_text(effect: Effect, family: Family) -> str:
    words = [effect.verdict.value]
    rewrites = dict(effect.rewrites)
    if "dnat" in effect.rewritten_by or "redirect" in effect.rewritten_by:
        target = address_text(family, rewrites["daddr"]) if "daddr" in rewrites else "?"
        if "dport" in rewrites:
            target += f":{rewrites['dport']}"
        words.append(f"DNATed to {target}" if "dnat" in effect.rewritten_by
                     else f"redirected to port {rewrites.get('dport')}")
    if "snat" in effect.rewritten_by and "saddr" in rewrites:
        words.append(f"SNATed to {address_text(family, rewrites['saddr'])}")
    if "masquerade" in effect.rewritten_by:
        words.append("masqueraded")
    if "mark" in rewrites:
        words.append(f"mark set to {rewrites['mark']:#x}")
    if "mss" in rewrites:
        words.append(f"mss clamped to {rewrites['mss']}")
    return ", ".join(words) + " " + decider_text(effect.decided_by)


def decider_text(decider: Decider | None) -> str:
    if decider is None:
        return "(no chain: the default)"
    if decider.span is None:
        return f"by the {decider.action} of {decider.table} {decider.chain}"
    return f"by {decider.where}"


def _rule_text(span: Span | None) -> str:
    if span is None:
        return ""
    text = " ".join(span.source.text[span.start:span.end].split())
    return escape(text if len(text) <= 90 else text[:87] + "...")


def text(result: Diff, label: Callable[[str], str] = str) -> str:
    """For a terminal: one paragraph per change."""
    if result.equivalent:
        note = f"{unmodelled_text(result)}\n" if result.unmodelled else ""
        return f"equivalent: no packet's fate differs ({_families(result)})\n" + note
    lines = [f"{len(result.changes)} change{'s' if len(result.changes) != 1 else ''} "
             f"({_families(result)}):"]
    for change in result.changes:
        describer = _Describer(_names(result, change.witness.family))
        boxes = [describer.words(b) for b in change.boxes]
        lines.append("")
        lines.append(f"{change.kind}: {boxes[0]}")
        for more in boxes[1:_MAX_BOXES]:
            lines.append(f"    and {more}")
        if len(boxes) > _MAX_BOXES:
            lines.append(f"    and {len(boxes) - _MAX_BOXES} more ranges (--format json "
                         "lists them all)")
        for side, effect in (("new", change.new), ("old", change.old)):
            where = _relabel(effect_text(effect, change.witness.family), label)
            rule = _rule_text(effect.decided_by.span if effect.decided_by else None)
            lines.append(f"  {side}: {where}" + (f"   {rule}" if rule else ""))
        lines.append(f"  e.g. {packet_text(change.witness, change.to_host)}")
        if change.limited:
            lines.append("  (depends on a rate limit: only packets "
                         + ("within" if change.boxes[0].get(F.LIMIT) == ((1, 1),) else "over")
                         + " it)")
        if assumed := assumption_text(change):
            lines.append(f"  (only {assumed})")
    if result.unmodelled:
        lines.append(unmodelled_text(result))
    return "\n".join(lines) + "\n"


def assumption_text(change: Change) -> str | None:
    """Which unmodelled conditions a change needs, in words; None if it needs none."""
    holds, fails = change.assumes
    if not holds and not fails:
        return None
    words = [f"where `{c}` holds" for c in sorted(holds)]
    words += [f"where `{c}` does not hold" for c in sorted(fails)]
    return " and ".join(words) + ", which rulec does not model"


def unmodelled_text(result: Diff) -> str:
    names = result.unmodelled
    return (f"note: {len(names)} condition{'s' if len(names) != 1 else ''} rulec does not "
            "model (--opaque) tried both ways, so no answer relies on them: "
            + "; ".join(f"`{n}`" for n in names))


def _names(result: Diff, family: Family) -> Names | None:
    context = result.contexts.get(family)
    return context.names if context else None


def _relabel(words: str, label: Callable[[str], str]) -> str:
    return label(words)


def _families(result: Diff) -> str:
    return ", ".join({Family.IP: "IPv4", Family.IP6: "IPv6"}[f] for f in result.families) \
        or "no rules"


def markdown(result: Diff, label: Callable[[str], str] = str) -> str:
    """For a pull-request comment: a summary line, then one table per kind of change."""
    if result.equivalent:
        note = f"\n{_md(unmodelled_text(result))}\n" if result.unmodelled else ""
        return "**rulec diff: equivalent** — no packet's fate changes.\n" + note
    by_kind: dict[str, list[Change]] = {}
    for change in result.changes:
        by_kind.setdefault(change.kind, []).append(change)
    summary = ", ".join(f"{len(v)} {k}" for k, v in by_kind.items())
    out = [f"**rulec diff: {summary}**", ""]
    for kind, changes in by_kind.items():
        out += [f"### {kind.capitalize()}", "", "| traffic | new | old | e.g. |",
                "|---|---|---|---|"]
        for change in changes:
            describer = _Describer(_names(result, change.witness.family))
            traffic = "<br>".join(_md(describer.words(b)) for b in change.boxes[:_MAX_BOXES])
            if len(change.boxes) > _MAX_BOXES:
                traffic += f"<br>(+{len(change.boxes) - _MAX_BOXES} more)"
            if assumed := assumption_text(change):
                traffic += f"<br>(only {_md(assumed)})"
            family = change.witness.family
            out.append(f"| {traffic} | {_md(label(effect_text(change.new, family)))} | "
                       f"{_md(label(effect_text(change.old, family)))} | "
                       f"`{_md(packet_text(change.witness, change.to_host))}` |")
        out.append("")
    if result.unmodelled:
        out += [_md(unmodelled_text(result)), ""]
    return "\n".join(out)


def _md(text: str) -> str:
    return escape(text).replace("|", "\\|")


def as_json(result: Diff, label: Callable[[str], str] = str) -> str:
    return json.dumps(document(result, label), indent=2) + "\n"


def document(result: Diff, label: Callable[[str], str] = str) -> dict[str, Any]:
    """The JSON document (docs/diff.md): `equivalent`, then every difference."""
    return {
        "schema": SCHEMA_VERSION,
        "equivalent": result.equivalent,
        "families": [f.value for f in result.families],
        "unmodelled": list(result.unmodelled),
        "differences": [_change_json(c, _names(result, c.witness.family), label)
                        for c in result.changes],
        "interfaces": {f.value: _interface_legend(c.names) for f, c in result.contexts.items()
                       if f in result.families},
        "stats": {"nodes": result.nodes, "classes": result.classes,
                  "seconds": round(result.seconds, 3)},
    }


def _change_json(change: Change, names: Names | None, label: Callable[[str], str]
                 ) -> dict[str, Any]:
    family = change.witness.family
    return {
        "kind": change.kind,
        "witness": witness_json(change.witness, change.to_host),
        "old": _effect_json(change.old, family, label),
        "new": _effect_json(change.new, family, label),
        "space": [_box_json(b, names) for b in change.boxes],
        "depends_on_rate_limit": change.limited,
        "assumes": {"holds": sorted(change.assumes[0]), "fails": sorted(change.assumes[1])},
    }


def witness_json(packet: Packet, to_host: bool) -> dict[str, Any]:
    fam = packet.family
    return {
        "family": fam.value, "proto": _proto_name(packet.proto),
        "saddr": address_text(fam, packet.saddr), "daddr": address_text(fam, packet.daddr),
        "sport": packet.sport, "dport": packet.dport, "path": packet.path.value,
        "iif": packet.iif, "oif": packet.oif, "ct_state": packet.ct_state.value,
        "to_host": to_host, "icmp_type": packet.icmp_type, "mark": packet.mark,
        "tcp_flags": sorted(f.value for f in packet.tcp_flags), "mss": packet.mss,
        "under_limit": packet.under_limit, "holds": sorted(packet.holds),
    }


def _effect_json(effect: Effect, family: Family, label: Callable[[str], str]
                 ) -> dict[str, Any]:
    rewrites = {name: (address_text(family, value) if name in ("saddr", "daddr")
                       and value is not None else value)
                for name, value in effect.rewrites}
    decider = effect.decided_by
    return {
        "verdict": effect.verdict.value,
        "delivered_locally": effect.delivered_locally,
        "rewrite": ({"by": list(effect.rewritten_by), **rewrites}
                    if effect.rewritten_by or rewrites else None),
        "rule": label(decider.where) if decider and decider.where else None,
        "decided_by": None if decider is None else {
            "table": decider.table, "chain": decider.chain, "action": decider.action},
    }


def _box_json(box: Box, names: Names | None) -> dict[str, Any]:
    family = box.family
    out: dict[str, Any] = {"family": family.value}
    for fld in F:
        values = box.get(fld)
        if values is None:
            continue
        key = fld.name.lower()
        match fld:
            case F.SADDR | F.DADDR:
                out[key] = [str(p) for low, high in values
                            for p in _as_prefixes(family, low, high)]
            case F.PROTO:
                out[key] = _ranges(values, _proto_name)
            case F.SPORT | F.DPORT | F.CT_ORIG_DPORT | F.ICMP_TYPE | F.MSS:
                out[key] = [None] if values == ((ABSENT, ABSENT),) else _ranges(
                    values, lambda v: "none" if v < 0 else str(v))
            case F.IIF | F.OIF:
                out[key] = [names.label(i) if names else i for i in _each(values)]
            case F.CT_STATE:
                out[key] = [CT_STATES[i].value for i in _each(values)]
            case F.TCP_FLAGS:
                out[key] = [None] if values == ((ABSENT, ABSENT),) else [
                    TcpFlags.text(flags_of(b)) for b in _each(values)]
            case F.MARK | F.LIMIT | F.UNKNOWN:
                out[key] = _ranges(values)
            case F.PATH:
                out[key] = [("incoming", "local")[i] for i in _each(values)]
            case F.DADDR_LOCAL:
                out["to_host"] = [bool(i) for i in _each(values)]
            case F.SADDR_LOCAL:
                out["from_host"] = [bool(i) for i in _each(values)]
    return out


def _as_prefixes(family: Family, low: int, high: int) -> list[Prefix]:
    return list(prefixes_of(family, low, high))


def _interface_legend(names: Names) -> list[str | None]:
    """Each name or pattern the engine told apart ("eth+": a name starting with eth that is
    none of the names and longer patterns listed; "*": any other name; null: none)."""
    return [names.label(i) for i in range(names.top + 1)]


__all__ = ["as_json", "document", "markdown", "packet_text", "text", "witness_json"]
