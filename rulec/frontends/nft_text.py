"""nft text rulesets (`nft list ruleset`, rulec's nft output) -> the libnftables JSON objects
`nft -j list ruleset` prints for them, plus a map from JSON paths back to spans of the text.

A small hand-written tokenizer and recursive-descent parser: nft's syntax is regular enough here,
and the words of a value only get their meaning from the selector before them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from rulec.diagnostics import RulecError, SourceFile, Span

JsonPath = tuple[str | int, ...]
Json = object

E_CHAR = "E0560"  # a character nft syntax has no use for, or an unterminated string
E_SYNTAX = "E0561"  # a token where the grammar wants another
E_WORD = "E0562"  # a word that starts no expression or statement this reader knows
E_VALUE = "E0563"  # a value that does not read (number, prefix length, rate)

_TOKEN = re.compile(
    r"""(?P<ws>[ \t\r]+|\\\n)
      | (?P<comment>\#[^\n]*)
      | (?P<nl>\n)
      | (?P<string>"(?:[^"\\\n]|\\.)*")
      | (?P<op>!=|==|<=|>=|<<|>>|[{}();,|&^!<>=@$\[\]])
      | (?P<word>[A-Za-z0-9_.:/*+\-%]+)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Tok:
    kind: str  # "string", "op", "word", "nl", "eof"
    text: str
    start: int
    end: int


def _tokenize(source: SourceFile) -> list[Tok]:
    text, pos, out = source.text, 0, []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            what = ("unterminated string" if text[pos] == '"'
                    else f"unexpected character {text[pos]!r}")
            raise RulecError.single(E_CHAR, what, source.span(pos, pos + 1))
        kind = m.lastgroup or ""
        if kind not in ("ws", "comment"):
            out.append(Tok(kind, m.group(), m.start(), m.end()))
        pos = m.end()
    out.append(Tok("eof", "", len(text), len(text)))
    return out


# nft's named chain priorities (ip, ip6, inet, arp, netdev families)
_PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50,
               "srcnat": 100}
_FAMILIES = {"ip", "ip6", "inet", "arp", "bridge", "netdev"}
_PAYLOAD = {"ip", "ip6", "tcp", "udp", "udplite", "sctp", "dccp", "th", "icmp", "icmpv6",
            "ah", "esp", "comp", "ether", "vlan", "arp", "igmp"}
# meta keys nft writes without the `meta` word
_BARE_META = {"iifname", "oifname", "iif", "oif", "iiftype", "oiftype", "mark", "skuid", "skgid",
              "nfproto", "l4proto", "priority", "rtclassid", "pkttype", "cpu", "iifgroup",
              "oifgroup", "cgroup", "ibrname", "obrname"}
# selectors whose values are bit masks: nft writes an implicit comparison as "in"
_BITMASK = {("ct", "state"), ("ct", "status"), ("tcp", "flags"), ("ct", "event")}
_VERDICTS = {"accept", "drop", "continue", "return", "queue"}
# words that end a value: a selector followed by one of them lacks its value (not dnat, snat or
# redirect: those are ct status and ICMP type values too)
_NOT_VALUES = {".", ":", "/", "-", "accept", "drop", "jump", "goto", "return", "continue", "queue",
               "counter", "log", "limit", "reject", "notrack", "comment", "vmap", "set"}
_OPS = {"==", "!=", "<", ">", "<=", ">="}
_INT = re.compile(r"0x[0-9a-fA-F]+|[0-9]+")
_ADDRISH = re.compile(r"[0-9a-fA-F:.]*[0-9:][0-9a-fA-F:.]*")


def _int(word: str) -> int | None:
    return int(word, 0) if _INT.fullmatch(word) else None


class _Parser:
    def __init__(self, source: SourceFile) -> None:
        self.source = source
        self.toks = _tokenize(source)
        self.i = 0
        self.objects: list[dict[str, Json]] = []
        self.spans: dict[JsonPath, Span] = {}
        # per table, in the order tables first appear: a table block may be opened again
        self.tables: dict[tuple[str, str], list[_Pending]] = {}
        self.chains: dict[tuple[str, str, str], dict[str, Json]] = {}
        self.pending: list[_Pending] = []
        self.family = "ip"

    # -- tokens ------------------------------------------------------------------------------
    @property
    def tok(self) -> Tok:
        return self.toks[self.i]

    def peek(self, n: int = 1) -> Tok:
        return self.toks[min(self.i + n, len(self.toks) - 1)]

    def next(self) -> Tok:
        tok = self.tok
        if tok.kind != "eof":
            self.i += 1
        return tok

    def at(self, *texts: str) -> bool:
        return self.tok.kind in ("word", "op") and self.tok.text in texts

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.i += 1
            return True
        return False

    def span(self, tok: Tok) -> Span:
        return self.source.span(tok.start, tok.end)

    def fail(self, code: str, message: str, tok: Tok | None = None) -> RulecError:
        tok = tok or self.tok
        return RulecError.single(code, message, self.span(tok))

    def shown(self, tok: Tok) -> str:
        return {"nl": "end of line", "eof": "end of input"}.get(tok.kind, repr(tok.text))

    def expect(self, text: str) -> Tok:
        if not self.at(text):
            raise self.fail(E_SYNTAX, f"expected {text!r}, found {self.shown(self.tok)}")
        return self.next()

    def word(self, what: str) -> Tok:
        if self.tok.kind not in ("word", "string"):
            raise self.fail(E_SYNTAX, f"expected {what}, found {self.shown(self.tok)}")
        return self.next()

    def name(self, what: str) -> str:
        tok = self.word(what)
        return _unquote(tok.text) if tok.kind == "string" else tok.text

    def skip_nl(self) -> None:
        while self.tok.kind == "nl" or self.at(";"):
            self.i += 1

    def end_of_statement(self) -> bool:
        return self.tok.kind in ("nl", "eof") or self.at(";", "}")

    def add(self, kind: str, body: dict[str, Json], start: Tok,
            parts: tuple[Span, ...] = ()) -> None:
        end = self.toks[self.i - 1] if self.i > 0 else start
        self.pending.append((kind, body, self.source.span(start.start, end.end), parts))

    def flush(self) -> None:
        """nft lists a table's sets and maps, then its chains, then every chain's rules."""
        rank = {"table": 0, "set": 1, "map": 1, "chain": 2, "rule": 3}
        pending = [p for table in self.tables.values()
                   for p in sorted(table, key=lambda p: rank[p[0]])]
        for kind, body, span, parts in pending:
            index = len(self.objects)
            self.objects.append({kind: body})
            self.spans[("nftables", index)] = span
            self.spans[("nftables", index, kind)] = span
            for j, part in enumerate(parts):
                self.spans[("nftables", index, kind, "expr", j)] = part

    # -- top level ---------------------------------------------------------------------------
    def ruleset(self) -> None:
        while True:
            self.skip_nl()
            if self.tok.kind == "eof":
                self.flush()
                return
            start = self.tok
            if self.accept("flush") or self.accept("delete"):
                self.word("ruleset or table")  # a command before the ruleset: nothing to list
                while not self.end_of_statement():
                    self.next()
                continue
            self.accept("add")
            if not self.accept("table"):
                raise self.fail(E_WORD, f"expected 'table', found {self.shown(self.tok)}")
            family, name = self.family_and_name()
            if self.at("{"):
                self.table(family, name, start)
            elif not self.end_of_statement():
                found = self.shown(self.tok)
                raise self.fail(E_SYNTAX, f"expected '{{' or end of line, found {found}")

    def family_and_name(self) -> tuple[str, str]:
        first = self.name("table family or name")
        if first in _FAMILIES and self.tok.kind in ("word", "string"):
            return first, self.name("table name")
        return "ip", first

    def table(self, family: str, name: str, start: Tok) -> None:
        self.expect("{")
        self.family = family
        self.pending = self.tables.setdefault((family, name), [])
        if not self.pending:
            self.add("table", {"family": family, "name": name}, start)
        while True:
            self.skip_nl()
            if self.accept("}"):
                return
            head = self.tok
            if head.kind == "eof":
                raise self.fail(E_SYNTAX, "expected '}' closing the table, found end of input")
            if self.accept("chain"):
                self.chain(family, name, head)
            elif self.accept("set"):
                self.set_or_map("set", family, name, head)
            elif self.accept("map"):
                self.set_or_map("map", family, name, head)
            elif self.accept("flags") or self.accept("comment"):
                while not self.end_of_statement():
                    self.next()
            else:
                found = self.shown(head)
                raise self.fail(E_WORD, f"expected 'chain', 'set' or 'map', found {found}")

    def chain(self, family: str, table: str, start: Tok) -> None:
        body: dict[str, Json] = {"family": family, "table": table, "name": self.name("chain name")}
        self.expect("{")
        known = self.chains.get((family, table, str(body["name"])))
        if known is None:
            self.chains[(family, table, str(body["name"]))] = body
            self.add("chain", body, start)
            chain_at: int | None = len(self.pending) - 1
        else:
            body, chain_at = known, None  # a chain opened again: its rules follow the first's
        rules: list[tuple[Tok, list[tuple[Json, Tok, Tok]], str | None]] = []
        while True:
            self.skip_nl()
            if self.accept("}"):
                break
            head = self.tok
            if head.kind == "eof":
                raise self.fail(E_SYNTAX, "expected '}' closing the chain, found end of input")
            if self.accept("type"):
                body["type"] = self.name("chain type")
                self.expect("hook")
                body["hook"] = self.name("hook")
                if self.accept("device"):
                    body["dev"] = self.name("device")
                self.expect("priority")
                body["prio"] = self.priority()
            elif self.accept("policy"):
                body["policy"] = self.name("policy")
            elif self.at("comment") and self.peek().kind == "string":
                self.next()
                body["comment"] = _unquote(self.next().text)
            else:
                exprs, comment = self.rule()
                rules.append((head, exprs, comment))
        if chain_at is not None:
            whole = self.source.span(start.start, self.toks[self.i - 1].end)
            self.pending[chain_at] = ("chain", body, whole, ())
        for head, exprs, comment in rules:
            rule: dict[str, Json] = {
                "family": family, "table": table, "chain": body["name"],
                "expr": [e for e, _, _ in exprs],
            }
            if comment is not None:
                rule["comment"] = comment
            end = exprs[-1][2] if exprs else head
            parts = tuple(self.source.span(a.start, b.end) for _, a, b in exprs)
            self.pending.append(("rule", rule, self.source.span(head.start, end.end), parts))

    def priority(self) -> int:
        tok = self.word("priority")
        value = _int(tok.text.lstrip("-"))
        if value is not None:
            base = -value if tok.text.startswith("-") else value
        elif tok.text in _PRIORITIES:
            base = _PRIORITIES[tok.text]
        else:
            raise self.fail(E_VALUE, f"unknown chain priority {tok.text!r}", tok)
        while self.tok.kind == "word" and re.fullmatch(r"[+-][0-9]*", self.tok.text):
            sign = self.next()
            digits = sign.text[1:] or self.word("number").text
            offset = _int(digits)
            if offset is None:
                raise self.fail(E_VALUE, f"priority offset {digits!r} is not a number", sign)
            base += offset if sign.text[0] == "+" else -offset
        return base

    def set_or_map(self, kind: str, family: str, table: str, start: Tok) -> None:
        body: dict[str, Json] = {"family": family, "name": self.name(f"{kind} name"),
                                 "table": table}
        self.expect("{")
        while True:
            self.skip_nl()
            if self.accept("}"):
                break
            tok = self.word(f"{kind} property")
            if tok.text in ("type", "typeof"):
                key = self.type_list() if tok.text == "type" else self.typeof_list()
                body["type"] = key
                if self.accept(":"):
                    body["map"] = self.type_list() if tok.text == "type" else self.typeof_list()
            elif tok.text == "flags":
                flags = [self.name("flag")]
                while self.accept(","):
                    flags.append(self.name("flag"))
                body["flags"] = flags
            elif tok.text == "policy":
                body["policy"] = self.name("policy")
            elif tok.text in ("size", "timeout", "gc-interval"):
                value = self.word(tok.text).text
                number = _int(value)
                body[tok.text] = value if number is None else number
            elif tok.text == "comment":
                body["comment"] = self.name("comment")
            elif tok.text == "counter":
                body["stmt"] = [{"counter": None}]
            elif tok.text == "elements":
                self.expect("=")
                self.expect("{")
                body["elem"] = self.elements(kind == "map")
            else:
                raise self.fail(E_WORD, f"unknown {kind} property {tok.text!r}", tok)
        self.add(kind, body, start)

    def type_list(self) -> Json:
        names = [self.name("type")]
        while self.accept("."):
            names.append(self.name("type"))
        return names[0] if len(names) == 1 else names

    def typeof_list(self) -> Json:
        parts = [self.selector()]
        while self.accept("."):
            parts.append(self.selector())
        return parts[0] if len(parts) == 1 else {"typeof": parts}

    def elements(self, is_map: bool) -> list[Json]:
        out: list[Json] = []
        while True:
            self.skip_nl_in_set()
            if self.accept("}"):
                return out
            key = self.concat_value()
            if self.at("comment"):  # rulec prints a map element's comment before its `:`
                self.next()
                key = {"elem": {"val": key, "comment": self.name("comment")}}
            item: Json = key
            if is_map or self.at(":"):
                self.expect(":")
                item = [key, self.map_data()]
            if self.at("comment") and not is_map:
                self.next()
                item = {"elem": {"val": item, "comment": self.name("comment")}}
            elif self.at("comment"):
                self.next()
                pair = item
                assert isinstance(pair, list)
                pair[0] = {"elem": {"val": pair[0], "comment": self.name("comment")}}
            out.append(item)
            self.skip_nl_in_set()
            if not self.accept(","):
                self.skip_nl_in_set()
                self.expect("}")
                return out

    def skip_nl_in_set(self) -> None:
        while self.tok.kind == "nl":
            self.i += 1

    def map_data(self) -> Json:
        if self.at(*_VERDICTS, "jump", "goto"):
            return self.verdict()
        return self.concat_value()

    def verdict(self) -> Json:
        word = self.next().text
        if word in ("jump", "goto"):
            return {word: {"target": self.name("chain name")}}
        return {word: None}

    # -- rules -------------------------------------------------------------------------------
    def rule(self) -> tuple[list[tuple[Json, Tok, Tok]], str | None]:
        exprs: list[tuple[Json, Tok, Tok]] = []
        comment: str | None = None
        while not (self.tok.kind in ("nl", "eof") or self.at("}", ";")):
            first = self.tok
            if self.at("comment") and self.peek().kind == "string":
                self.next()
                comment = _unquote(self.next().text)
                continue
            expr = self.statement()
            exprs.append((expr, first, self.toks[self.i - 1]))
        return exprs, comment

    def statement(self) -> Json:
        tok = self.tok
        word = tok.text if tok.kind == "word" else ""
        if word == "queue" and self.peek().text in ("num", "flags", "bypass", "fanout"):
            return self.queue()
        if word == "quota":
            return self.quota()
        if word in _VERDICTS or word in ("jump", "goto"):
            return self.verdict()
        if word == "counter":
            self.next()
            body: dict[str, Json] = {"packets": 0, "bytes": 0}
            while self.at("packets", "bytes"):
                key = self.next().text
                body[key] = self.number(key)
            return {"counter": body}
        if word == "limit":
            return self.limit()
        if word == "log":
            return self.log()
        if word == "reject":
            return self.reject()
        if word in ("dnat", "snat"):
            return self.nat(word)
        if word in ("masquerade", "redirect"):
            self.next()
            nat: dict[str, Json] = {}
            if self.accept("to"):
                self.nat_target(nat, allow_addr=False)
            self.nat_flags(nat)
            return {word: nat or None}
        if word == "notrack":
            self.next()
            return {"notrack": None}
        if word in ("meta", "ct") and self.peek().text == "mark" and self.peek(2).text == "set":
            left = self.selector()
            self.expect("set")
            return {"mangle": {"key": left, "value": self.arith()}}
        if word in ("mark",) and self.peek().text == "set":
            left = self.selector()
            self.expect("set")
            return {"mangle": {"key": left, "value": self.arith()}}
        if tok.kind != "word" or not self.starts_selector():
            raise self.fail(E_WORD, f"unknown expression or statement {self.shown(tok)}", tok)
        left = self.selector()
        if self.at("."):
            parts = [left]
            while self.accept("."):
                parts.append(self.selector())
            left = {"concat": parts}
        if self.accept("set"):
            return {"mangle": {"key": left, "value": self.arith()}}
        if self.accept("vmap"):
            return {"vmap": {"key": left, "data": self.vmap_data()}}
        return self.match(left)

    def starts_selector(self) -> bool:
        word = self.tok.text
        return word in _PAYLOAD or word in _BARE_META or word in (
            "meta", "ct", "fib", "rt", "socket", "osf", "numgen", "jhash", "symhash", "exthdr",
            "ipsec", "hbh", "rt0", "frag", "dst", "mh", "srh", "tunnel")

    def selector(self) -> Json:
        tok = self.word("expression")
        word = tok.text
        if word in _BARE_META:
            return {"meta": {"key": word}}
        if word == "meta":
            return {"meta": {"key": self.name("meta key")}}
        if word == "ct":
            key = self.name("ct key")
            if key in ("original", "reply"):
                return {"ct": {"key": self.name("ct key"), "dir": key}}
            return {"ct": {"key": key}}
        if word == "rt":
            return {"rt": {"key": self.name("rt key")}}
        if word == "fib":
            flags = [self.name("fib flag")]
            while self.accept("."):
                flags.append(self.name("fib flag"))
            return {"fib": {"result": self.name("fib result"), "flags": flags}}
        if word == "tcp" and self.at("option"):
            self.next()
            name = self.name("tcp option")
            if self.tok.kind == "word" and not self.at("set") and not self.end_of_statement():
                return {"tcp option": {"name": name, "field": self.name("option field")}}
            return {"tcp option": {"name": name}}
        if word in _PAYLOAD:
            return {"payload": {"protocol": word, "field": self.name(f"{word} field")}}
        if self.tok.kind == "word" and not self.end_of_statement():
            return {word: {"key": self.name(f"{word} key")}}
        raise self.fail(E_WORD, f"unknown expression {word!r}", tok)

    def match(self, left: Json) -> Json:
        if self.at("&", "|", "^", "<<", ">>"):
            op = self.next().text
            left = {op: [left, self.primary_value()]}
        op = "implicit"
        if self.at(*_OPS, "!"):
            op = self.next().text
        if self.at("@"):
            self.next()
            right: Json = "@" + self.name("set name")
        else:
            right = self.rhs()
        if self.at("/") or (self.tok.kind == "word" and self.tok.text == "/"):
            self.next()
            mask = self.rhs()
            value = right
            if value == 0 and op in ("implicit", "=="):
                return {"match": {"op": "!", "left": left, "right": mask}}
            left = {"&": [left, mask]}
            right = value
            op = "==" if op == "implicit" else op
        if right in ("missing", "exists"):
            right = right == "exists"  # nft's boolean type (fib oif, header and option presence)
        if op == "implicit":
            pair = _selector_pair(left)
            if pair in _BITMASK and not (isinstance(right, dict) and "set" in right):
                op = "in"
            else:
                op = "=="
        return {"match": {"op": op, "left": left, "right": right}}

    def rhs(self) -> Json:
        """One value, a `{ set }`, or a comma list of flags."""
        if self.at("{"):
            self.next()
            return {"set": self.elements(False)}
        first = self.concat_value()
        if not self.at(","):
            return first
        items = [first]
        while self.accept(","):
            items.append(self.concat_value())
        return items

    def concat_value(self) -> Json:
        parts = [self.value()]
        while self.at("."):
            self.next()
            parts.append(self.value())
        return parts[0] if len(parts) == 1 else {"concat": parts}

    def primary_value(self) -> Json:
        if self.accept("("):
            names = [self.value()]
            while self.accept("|"):
                names.append(self.value())
            self.expect(")")
            return names[0] if len(names) == 1 else names
        return self.value()

    def arith(self) -> Json:
        value = self.selector() if self.starts_selector() else self.primary_value()
        while self.at("&", "|", "^", "<<", ">>"):
            op = self.next().text
            value = {op: [value, self.primary_value()]}
        return value

    def value(self) -> Json:
        tok = self.tok
        if tok.kind == "string":
            self.next()
            return _unquote(tok.text)
        if tok.kind != "word" or tok.text in _NOT_VALUES:
            raise self.fail(E_SYNTAX, f"expected a value, found {self.shown(tok)}")
        self.next()
        text = tok.text
        if self.at("[") and self.peek().text == "invalid":
            # nft lists a value it cannot type this way; its JSON carries the same string
            self.next()
            words = []
            while not self.at("]") and self.tok.kind != "eof":
                words.append(self.next().text)
            self.expect("]")
            return f"{text} [{' '.join(words)}]"
        return _atom(text, self, tok)

    def vmap_data(self) -> Json:
        if self.accept("@"):
            return "@" + self.name("map name")
        self.expect("{")
        return {"set": self.elements(True)}

    def number(self, what: str) -> int:
        tok = self.word(what)
        value = _int(tok.text)
        if value is None:
            raise self.fail(E_VALUE, f"{what} {tok.text!r} is not a number", tok)
        return value

    def limit(self) -> Json:
        self.next()
        self.expect("rate")
        body: dict[str, Json] = {}
        if self.accept("over"):
            body["inv"] = True
        tok = self.word("rate")
        m = re.fullmatch(r"([0-9]+)/(second|minute|hour|day|week)", tok.text)
        unit = None
        if m is None and _int(tok.text) is not None and self.tok.kind == "word":
            unit_tok = self.next()  # `10 mbytes/second`
            m2 = re.fullmatch(r"([kmg]?bytes)/(second|minute|hour|day|week)", unit_tok.text)
            if m2 is None:
                raise self.fail(E_VALUE, f"rate {tok.text} {unit_tok.text!r} does not read", tok)
            body.update(rate=int(tok.text), rate_unit=m2.group(1), per=m2.group(2))
            unit = "bytes"
        elif m is None:
            raise self.fail(E_VALUE, f"rate {tok.text!r} does not read (N/second)", tok)
        else:
            body.update(rate=int(m.group(1)), per=m.group(2))
        body["burst"] = 5 if unit is None else 0
        if self.accept("burst"):
            body["burst"] = self.number("burst")
            burst_unit = self.word("packets or bytes").text
            if burst_unit != "packets":
                body["burst_unit"] = burst_unit
        inv = body.pop("inv", None)
        keys = ("rate", "rate_unit", "burst", "burst_unit", "per")
        ordered: dict[str, Json] = {k: body[k] for k in keys if k in body}
        if inv:
            ordered["inv"] = True
        return {"limit": ordered}

    def queue(self) -> Json:
        self.next()
        body: dict[str, Json] = {}
        while self.at("num", "flags", "bypass", "fanout"):
            key = self.next().text
            if key == "num":
                tok = self.word("queue number")
                body["num"] = _atom(tok.text, self, tok)
            elif key == "flags":
                body["flags"] = self.name("queue flag")
            else:
                body["flags"] = key
        return {"queue": body}

    def quota(self) -> Json:
        self.next()
        body: dict[str, Json] = {}
        if self.accept("over"):
            body["inv"] = True
        body["val"] = self.number("quota")
        body["val_unit"] = self.name("quota unit")
        if self.accept("used"):
            body["used"] = self.number("used")
            body["used_unit"] = self.name("quota unit")
        return {"quota": body}

    def log(self) -> Json:
        self.next()
        body: dict[str, Json] = {}
        while self.at("prefix", "level", "group", "snaplen", "queue-threshold", "flags"):
            key = self.next().text
            if key == "prefix":
                body["prefix"] = self.name("log prefix")
            elif key == "flags":
                flags = [self.name("log flag")]
                while self.accept(","):
                    flags.append(self.name("log flag"))
                body["flags"] = flags
            elif key == "level":
                body["level"] = self.name("log level")
            else:
                body[key] = self.number(key)
        return {"log": body or None}

    def reject(self) -> Json:
        self.next()
        if not self.accept("with"):
            # what the kernel lists back for a bare reject
            icmp = {"ip": "icmp", "ip6": "icmpv6"}.get(self.family, "icmpx")
            return {"reject": {"type": icmp, "expr": "port-unreachable"}}
        kind = self.name("reject type")
        if kind == "tcp":
            self.expect("reset")
            return {"reject": {"type": "tcp reset"}}
        self.accept("type")
        return {"reject": {"type": kind, "expr": self.name("icmp code")}}

    def nat(self, word: str) -> Json:
        self.next()
        body: dict[str, Json] = {}
        if self.at("ip", "ip6") and self.peek().text in ("to", "addr", "prefix"):
            body["family"] = self.next().text
        self.expect("to")
        self.nat_target(body, allow_addr=True)
        self.nat_flags(body)
        ordered = {k: body[k] for k in ("family", "addr", "port", "flags") if k in body}
        return {word: ordered}

    def nat_target(self, body: dict[str, Json], *, allow_addr: bool) -> None:
        port: str | None = None
        if self.accept("["):
            tok = self.word("address")
            body["addr"] = tok.text
            self.expect("]")
            if self.tok.kind == "word" and self.tok.text.startswith(":"):
                port = self.next().text[1:]
        else:
            tok = self.word("address")
            text = tok.text
            if text.startswith(":"):
                port = text[1:]
            elif allow_addr:
                if text.count(":") == 1:
                    text, port = text.split(":")
                body["addr"] = _atom(text, self, tok)
            else:
                raise self.fail(E_SYNTAX, f"expected ':port', found {text!r}", tok)
        if port == "" and self.tok.kind == "word":
            port = self.next().text
        if port:
            body["port"] = _atom(port, self, tok)

    def nat_flags(self, body: dict[str, Json]) -> None:
        flags: list[Json] = []
        while self.at("random", "fully-random", "persistent"):
            flags.append(self.next().text)
            self.accept(",")
        if flags:
            body["flags"] = flags[0] if len(flags) == 1 else flags


_Pending = tuple[str, dict[str, Json], Span, tuple[Span, ...]]


def _selector_pair(left: Json) -> tuple[str, str] | None:
    if isinstance(left, dict) and len(left) == 1:
        (kind, body), = left.items()
        if isinstance(body, dict):
            if kind == "payload":
                return (str(body.get("protocol")), str(body.get("field")))
            return (kind, str(body.get("key")))
    return None


def _atom(text: str, parser: _Parser, tok: Tok) -> Json:
    """A bare word as JSON: numbers become ints, `a/n` a prefix, `a-b` a range."""
    number = _int(text)
    if number is not None:
        return number
    if "/" in text and _ADDRISH.fullmatch(text.split("/")[0] or "x"):
        addr, _, length = text.partition("/")
        if not length.isdigit():
            raise parser.fail(E_VALUE, f"prefix length in {text!r} is not a number", tok)
        return {"prefix": {"addr": addr, "len": int(length)}}
    if "-" in text:
        low, _, high = text.partition("-")
        if _ADDRISH.fullmatch(low) and _ADDRISH.fullmatch(high):
            return {"range": [_atom(low, parser, tok), _atom(high, parser, tok)]}
    return text


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def nft_text_to_json(
    source: SourceFile,
) -> tuple[dict[str, object], Callable[[tuple[str | int, ...]], Span | None]]:
    """The `nft -j list ruleset` objects for an nft text ruleset, and where each came from."""
    parser = _Parser(source)
    try:
        parser.ruleset()
    except RecursionError:
        raise parser.fail(E_SYNTAX, "nesting too deep") from None
    spans = parser.spans

    def locate(path: tuple[str | int, ...]) -> Span | None:
        for n in range(len(path), 0, -1):
            span = spans.get(tuple(path[:n]))
            if span is not None:
                return span
        return None

    return {"nftables": list(parser.objects)}, locate
