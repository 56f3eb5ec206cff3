"""iptables-save / ip6tables-save text (what iptables-restore reads, `--noflush` files too) and
`ipset save` text -> IR. Fail closed: a match, option or target rulec does not model is a
positioned error (E0510-E0529), or with `opaque` an unmodelled match is an Unknown condition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from rulec.diagnostics import Collector, SourceFile, Span
from rulec.ir.nodes import (
    BUILTIN_CHAINS,
    Accept,
    Action,
    Chain,
    ClampMss,
    Dnat,
    Drop,
    Goto,
    Hook,
    Jump,
    Log,
    LogLevel,
    Masquerade,
    Match,
    Policy,
    Redirect,
    Reject,
    RejectWith,
    Return,
    Rule,
    Ruleset,
    SetMark,
    SetMss,
    Snat,
    Table,
    TableKind,
    Unknown,
)
from rulec.ir.values import (
    ICMP_TYPES,
    ICMPV6_TYPES,
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
    prefixes_of,
)

# Codes (docs/language.md): E0510 syntax of a line, E0511 unknown table, E0512 chain declared
# twice / unknown chain, E0513 unmodelled match module, E0514 unmodelled option of a modelled
# match, E0515 bad value, E0516 unmodelled target, E0517 unmodelled target option, E0518
# family conflict, E0519 field given twice, E0520 ipset unknown or unusable, E0521 ipset text,
# E0522 missing COMMIT / line outside a table, E0523 unsupported restore command.


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    start: int
    end: int
    bare: bool = True  # written without quotes: a leading `-` makes it an option


class _Fail(Exception):
    """One diagnostic for the line being read; the line is skipped, reading goes on."""

    def __init__(self, code: str, message: str, token: Token | None, *notes: str) -> None:
        super().__init__(message)
        self.code, self.message, self.token, self.notes = code, message, token, notes


def tokenize(text: str, base: int) -> list[Token]:
    """Split a restore line as iptables-restore does: blanks separate words; inside double
    quotes blanks are kept and a backslash takes the next character literally."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t":
            i += 1
            continue
        start, out, quoted = i, [], False
        while i < n and (quoted or text[i] not in " \t"):
            ch = text[i]
            if ch == '"':
                quoted = not quoted
            elif ch == "\\" and i + 1 < n:
                i += 1
                out.append(text[i])
            else:
                out.append(ch)
            i += 1
        if quoted:
            raise _Fail("E0510", "quote not closed on its line",
                        Token(text[start:], base + start, base + n))
        tokens.append(Token("".join(out), base + start, base + i, '"' not in text[start:i]))
    return tokens


@dataclass
class _Options:
    opaque: bool
    ipsets: Mapping[str, AddressSet]
    families: dict[Family, Token] = field(default_factory=dict)  # evidence of the family


class _Rule:
    """Reads the words of one `-A CHAIN ...` line into Match fields and an action."""

    def __init__(self, tokens: list[Token], chain: str, opts: _Options,
                 family: Family | None, chains: Mapping[str, Chain]) -> None:
        self.tokens, self.pos, self.chain, self.opts = tokens, 0, chain, opts
        self.chains = chains
        self.family = family
        self.fields: dict[str, Any] = {}
        self.holds: set[str] = set()
        self.fails: set[str] = set()
        self.comment: str | None = None
        self.action: Action | None = None
        self.statements: list[Log] = []

    # -- word access
    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, what: str, after: Token) -> Token:
        token = self.peek()
        if token is None:
            raise _Fail("E0510", f"{after.text} needs {what}", after)
        self.pos += 1
        return token

    def set(self, name: str, value: object, token: Token) -> None:
        if name in self.fields:
            raise _Fail("E0519", f"{name} is tested twice in one rule; rulec reads one test "
                        "per field", token, "split the rule, or merge the tests")
        self.fields[name] = value

    def evidence(self, family: Family, token: Token) -> None:
        self.opts.families.setdefault(family, token)
        if self.family is not None and family is not self.family:
            raise _Fail("E0518", f"{token.text} is {family.value}, but the dump is "
                        f"{self.family.value}", token)

    def condition(self, text: str, negated: bool) -> None:
        (self.fails if negated else self.holds).add(text)

    # -- the line
    def read(self) -> None:
        negated: Token | None = None
        while (token := self.peek()) is not None:
            self.pos += 1
            word = token.text
            if word == "!":
                negated = token
                continue
            neg = negated is not None
            negated = None
            if word in ("-s", "--source", "-d", "--destination"):
                name = "saddr" if word in ("-s", "--source") else "daddr"
                value = self.take("an address", token)
                self.set(name, AddressSet((self.prefix(value),), neg), value)
            elif word in ("-i", "--in-interface", "-o", "--out-interface"):
                value = self.take("an interface", token)
                name = "iifname" if word.startswith(("-i", "--in")) else "oifname"
                if not value.text or value.text.startswith("-"):
                    raise _Fail("E0515", f"bad interface name {value.text!r}", value)
                self.set(name, Interface(value.text, neg), value)
            elif word in ("-p", "--protocol"):
                self.protocol(self.take("a protocol", token), neg)
            elif word in ("-m", "--match"):
                if neg:
                    raise _Fail("E0510", "`!` cannot negate -m", token)
                self.module(self.take("a module name", token))
            elif word in ("-j", "--jump", "-g", "--goto"):
                if neg:
                    raise _Fail("E0510", f"`!` cannot negate {word}", token)
                self.target(self.take("a target", token), goto=word in ("-g", "--goto"))
            elif word.startswith("--") and self.implicit_module() is not None:
                # iptables-restore input may leave out `-m tcp` after `-p tcp`.
                self.pos -= 1 + neg
                self.module(Token(self.implicit_module() or "", token.start, token.start))
            elif word in ("-f", "--fragment"):
                self.unmodelled_match("fragment", [(neg, token, [])], token)
            else:
                raise _Fail("E0510", f"unexpected word {word!r} in a rule", token)
        if negated is not None:
            raise _Fail("E0510", "`!` at the end of the rule negates nothing", negated)

    def implicit_module(self) -> str | None:
        proto = self.fields.get("proto")
        if isinstance(proto, Protocol) and not proto.negated:
            return {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6"}.get(proto.number)
        return None

    def prefix(self, token: Token) -> Prefix:
        text = token.text
        if "/" in text:
            address, _, mask = text.partition("/")
            if "." in mask or ":" in mask:  # a netmask, as iptables also accepts
                try:
                    bits = bin(int(Prefix.parse(mask).network)).count("1")
                except ValueError:
                    raise _Fail("E0515", f"bad netmask {mask!r}", token) from None
                text = f"{address}/{bits}"
        try:
            prefix = Prefix.parse(text)
        except ValueError as exc:
            raise _Fail("E0515", f"bad address {token.text!r}: {exc}", token) from None
        self.evidence(prefix.family, token)
        return prefix

    def protocol(self, token: Token, neg: bool) -> None:
        text = token.text.lower()
        if text in ("all", "0"):
            if neg:
                raise _Fail("E0515", "`! -p all` matches no packet", token)
            return
        number: int | None
        if text in ("ipv6-icmp", "icmpv6", "icmp6"):
            number = 58
        elif text.isdigit():
            number = int(text)
        else:
            number = PROTOCOLS.get(text)
        if number is None or not 0 < number <= 255:
            raise _Fail("E0515", f"unknown protocol {token.text!r}", token)
        if number == 58:
            self.evidence(Family.IP6, token)
        self.set("proto", Protocol(number, neg), token)

    # -- matches
    def options(self) -> list[tuple[bool, Token, list[Token]]]:
        """A module's `[!] --option args...` up to the next word that is not its own."""
        out: list[tuple[bool, Token, list[Token]]] = []
        while (token := self.peek()) is not None:
            neg = token.text == "!"
            name = self.tokens[self.pos + 1] if neg and self.pos + 1 < len(self.tokens) else token
            if not name.text.startswith("--") or name.text in ("--jump", "--goto", "--match",
                                                               "--source", "--destination",
                                                               "--protocol", "--in-interface",
                                                               "--out-interface"):
                break
            self.pos += 2 if neg else 1
            args: list[Token] = []
            while (arg := self.peek()) is not None and not (arg.bare and (arg.text == "!" or (
                    arg.text.startswith("-") and len(arg.text) > 1
                    and not arg.text[1].isdigit()))):
                args.append(arg)
                self.pos += 1
            out.append((neg, name, args))
        return out

    def module(self, token: Token) -> None:
        name = token.text
        options = self.options()
        handler = _MODULES.get(name)
        if handler is None:
            self.unmodelled_match(name, options, token)
            return
        handler(self, token, options)

    def unmodelled_match(self, name: str, options: list[tuple[bool, Token, list[Token]]],
                         token: Token, why: str = "") -> None:
        if not self.opts.opaque:
            detail = f": {why}" if why else ""
            raise _Fail("E0513", f"match module {name!r} is not modelled by rulec{detail}",
                        token, "dropping it would make the rule match more packets; import with "
                        "--opaque to analyse the rule with the match as an unknown condition")
        negated = len(options) == 1 and options[0][0]
        words = [f"{'! ' if neg and not negated else ''}{o.text} {' '.join(a.text for a in args)}"
                 .strip() for neg, o, args in options]
        self.condition(" ".join([name, *words]), negated)

    def unmodelled_option(self, module: str, option: Token, mod: Token,
                          options: list[tuple[bool, Token, list[Token]]]) -> None:
        if self.opts.opaque:
            self.unmodelled_match(module, options, mod)
            return
        raise _Fail("E0514", f"option {option.text} of match {module!r} is not modelled by "
                    "rulec", option, "dropping it would make the rule match more packets; "
                    "--opaque keeps the whole match as an unknown condition")

    def target(self, token: Token, goto: bool) -> None:
        if self.action is not None:
            raise _Fail("E0510", "a rule has one target", token)
        name = token.text
        options = self.options()
        if goto:
            if options:
                raise _Fail("E0517", f"-g takes no options, got {options[0][1].text}",
                            options[0][1])
            self.jump_target(token)
            self.action = Goto(name)
            return
        handler = _TARGETS.get(name)
        if handler is not None:
            self.action = handler(self, token, options)
            return
        self.jump_target(token)
        if options:
            raise _Fail("E0517", f"a jump to chain {name} takes no options", options[0][1])
        self.action = Jump(name)

    def jump_target(self, token: Token) -> None:
        """A user chain of this table (iptables-save declares every chain before its rules);
        any other name is a target rulec does not model."""
        chain = self.chains.get(token.text)
        if chain is None:
            raise _Fail("E0516", f"target {token.text} is not modelled by rulec (and no chain "
                        "of this table has that name)", token, "it decides the packet's fate "
                        "in a way rulec cannot follow, so it fails even with --opaque")
        if chain.hook is not None:
            raise _Fail("E0512", f"cannot jump to the built-in chain {token.text}", token)

Options = list[tuple[bool, Token, list[Token]]]


def _one(option: Token, args: list[Token]) -> Token:
    if len(args) != 1:
        raise _Fail("E0515", f"{option.text} takes one value", option)
    return args[0]


def _port(token: Token, text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise _Fail("E0515", f"bad port {text!r}", token, "ports are numbers 0-65535")
    return int(text)


def _port_range(token: Token, text: str) -> tuple[int, int]:
    low, sep, high = text.partition(":")
    first = _port(token, low) if low else 0
    last = (_port(token, high) if high else 65535) if sep else first
    if first > last:
        raise _Fail("E0515", f"port range {text} is reversed", token)
    return first, last


def _ports_module(proto: int) -> Callable[[_Rule, Token, Options], None]:
    def read(rule: _Rule, mod: Token, options: Options) -> None:
        current = rule.fields.get("proto")
        if not (isinstance(current, Protocol) and current.number == proto
                and not current.negated):
            raise _Fail("E0515", f"-m {mod.text} needs -p {mod.text} before it", mod)
        for neg, option, args in options:
            if option.text in ("--sport", "--source-port", "--dport", "--destination-port"):
                value = _one(option, args)
                name = "sport" if option.text in ("--sport", "--source-port") else "dport"
                rule.set(name, PortSet((_port_range(value, value.text),), neg), value)
            elif option.text in ("--tcp-flags", "--syn") and proto == 6:
                if option.text == "--syn":
                    flags = TcpFlags(frozenset({TcpFlag.SYN}), frozenset(
                        {TcpFlag.SYN, TcpFlag.RST, TcpFlag.ACK, TcpFlag.FIN}), neg)
                else:
                    if len(args) != 2:
                        raise _Fail("E0515", "--tcp-flags takes a mask and the flags set",
                                    option)
                    examined, wanted = (_tcp_flags(a) for a in args)
                    if not wanted <= examined:
                        raise _Fail("E0515", "the set flags must be part of the mask", args[1])
                    flags = TcpFlags(wanted, examined, neg)
                rule.set("tcp_flags", flags, option)
            else:
                rule.unmodelled_option(mod.text, option, mod, options)
    return read


_FLAG_NAMES = {f.name: frozenset({f}) for f in TcpFlag if f not in (TcpFlag.ECE, TcpFlag.CWR)}
_FLAG_NAMES["ALL"] = frozenset().union(*_FLAG_NAMES.values())
_FLAG_NAMES["NONE"] = frozenset()


def _tcp_flags(token: Token) -> frozenset[TcpFlag]:
    out: frozenset[TcpFlag] = frozenset()
    for name in token.text.upper().split(","):
        if name not in _FLAG_NAMES:
            raise _Fail("E0515", f"unknown tcp flag {name!r}", token)
        out |= _FLAG_NAMES[name]
    return out


def _multiport(rule: _Rule, mod: Token, options: Options) -> None:
    proto = rule.fields.get("proto")
    if not isinstance(proto, Protocol) or proto.negated or proto.number not in (6, 17, 33, 132,
                                                                                136):
        raise _Fail("E0515", "-m multiport needs -p tcp, udp, sctp, dccp or udplite", mod)
    for neg, option, args in options:
        names = {"--sports": "sport", "--source-ports": "sport", "--dports": "dport",
                 "--destination-ports": "dport"}
        if option.text not in names:  # --ports: source OR destination, not one field
            rule.unmodelled_option("multiport", option, mod, options)
            return
        value = _one(option, args)
        ranges = tuple(_port_range(value, item) for item in value.text.split(","))
        rule.set(names[option.text], PortSet(ranges, neg), value)


_ICMP_EXTRA = {"any": -1, "ping": 8, "pong": 0, "echoreply": 0, "echo-reply": 0,
               "echo-request": 8, "source-quench": 4, "neighbor-solicitation": 135,
               "neighbor-advertisement": 136}


def _icmp_module(family: Family) -> Callable[[_Rule, Token, Options], None]:
    names = ICMP_TYPES if family is Family.IP else ICMPV6_TYPES
    option_name = "--icmp-type" if family is Family.IP else "--icmpv6-type"

    def read(rule: _Rule, mod: Token, options: Options) -> None:
        rule.evidence(family, mod)
        for neg, option, args in options:
            if option.text != option_name:
                rule.unmodelled_option(mod.text, option, mod, options)
                return
            value = _one(option, args)
            text = value.text.lower()
            if text.isdigit():
                number = int(text)
            elif text in names:
                number = names[text]
            elif text in _ICMP_EXTRA and (family is Family.IP or _ICMP_EXTRA[text] > 100
                                          or text == "any"):
                number = _ICMP_EXTRA[text]
            else:  # codes (3/4) and code names (port-unreachable) test more than the type
                if rule.opts.opaque:
                    rule.unmodelled_match(mod.text, options, mod)
                    return
                raise _Fail("E0514", f"icmp type {value.text!r} is not modelled by rulec "
                            "(rulec tests types, not codes)", value)
            if number == -1:
                if neg:
                    raise _Fail("E0515", "`! --icmp-type any` matches no packet", value)
                continue
            if number > 255:
                raise _Fail("E0515", f"icmp type {number} is out of range", value)
            rule.set("icmp_type", IcmpType(family, (number,), neg), value)
    return read


_CT_NAMES = {s.name: s for s in CtState}


def _conntrack(rule: _Rule, mod: Token, options: Options) -> None:
    for neg, option, args in options:
        if option.text in ("--ctstate", "--state"):
            value = _one(option, args)
            names = value.text.upper().split(",")
            states = {_CT_NAMES[n] for n in names if n in _CT_NAMES}
            virtual = [n for n in names if n not in _CT_NAMES]
            if any(n not in ("SNAT", "DNAT") for n in virtual):
                raise _Fail("E0515", f"unknown conntrack state in {value.text!r}", value)
            # SNAT/DNAT ("the flow was translated") is history rulec does not model: as a
            # condition. `! A,DNAT` is a conjunction (not A and not DNAT), which a rule holds;
            # a positive mix is a disjunction, which it cannot.
            if virtual and not neg and (states or len(virtual) > 1):
                if rule.opts.opaque:
                    rule.unmodelled_match(mod.text, options, mod)
                    return
                raise _Fail("E0514", f"--ctstate {value.text}: a state together with SNAT or "
                            "DNAT is not modelled by rulec", value)
            for name in virtual:
                rule.condition(f"conntrack {name}", neg)
            if states:
                rule.set("ct_state", CtStates(frozenset(states), neg), value)
        elif option.text == "--ctorigdstport" and mod.text == "conntrack":
            value = _one(option, args)
            rule.set("ct_orig_dport", PortSet((_port_range(value, value.text),), neg), value)
        else:
            rule.unmodelled_option(mod.text, option, mod, options)
            return


_ADDR_TYPES = {k.name: k for k in AddrTypeKind}


def _addrtype(rule: _Rule, mod: Token, options: Options) -> None:
    for neg, option, args in options:
        if option.text not in ("--src-type", "--dst-type"):
            rule.unmodelled_option("addrtype", option, mod, options)
            return
        value = _one(option, args)
        kind = _ADDR_TYPES.get(value.text.upper())
        if kind is None:  # several types, or UNSPEC, NAT, THROW, XRESOLVE
            if rule.opts.opaque:
                rule.unmodelled_match("addrtype", options, mod)
                return
            raise _Fail("E0514", f"address type {value.text!r} is not modelled by rulec", value)
        rule.set("src_type" if option.text == "--src-type" else "dst_type",
                 AddrType(kind, neg), value)


def _mark_value(token: Token) -> tuple[int, int]:
    value, _, mask = token.text.partition("/")
    try:
        number = int(value, 0)
        bits = int(mask, 0) if mask else MAX_MARK
    except ValueError:
        raise _Fail("E0515", f"bad mark {token.text!r}", token) from None
    if not (0 <= number <= MAX_MARK and 0 <= bits <= MAX_MARK):
        raise _Fail("E0515", f"mark {token.text} out of range", token)
    return number, bits


def _mark(rule: _Rule, mod: Token, options: Options) -> None:
    for neg, option, args in options:
        if option.text != "--mark":
            rule.unmodelled_option("mark", option, mod, options)
            return
        value = _one(option, args)
        number, mask = _mark_value(value)
        # The kernel tests (mark & mask) == value: bits of value outside the mask never match.
        if number & ~mask:
            raise _Fail("E0515", f"mark {value.text} has bits outside its mask, so it never "
                        "matches", value)
        rule.set("mark", Mark(number, mask, neg), value)


_UNITS = {"s": RateUnit.SECOND, "sec": RateUnit.SECOND, "second": RateUnit.SECOND,
          "m": RateUnit.MINUTE, "min": RateUnit.MINUTE, "minute": RateUnit.MINUTE,
          "h": RateUnit.HOUR, "hour": RateUnit.HOUR, "d": RateUnit.DAY, "day": RateUnit.DAY}


def _limit(rule: _Rule, mod: Token, options: Options) -> None:
    rate, unit, burst, at = 3, RateUnit.HOUR, 5, mod  # libxt_limit's defaults
    for neg, option, args in options:
        value = _one(option, args) if option.text in ("--limit", "--limit-burst") else option
        if neg:
            raise _Fail("E0514", "a negated rate limit is not modelled by rulec", option)
        if option.text == "--limit":
            count, _, name = value.text.partition("/")
            if not count.isdigit() or (name and name.lower() not in _UNITS):
                raise _Fail("E0515", f"bad rate {value.text!r}", value)
            rate, unit, at = int(count), _UNITS[name.lower() or "s"], value
        elif option.text == "--limit-burst":
            if not value.text.isdigit():
                raise _Fail("E0515", f"bad burst {value.text!r}", value)
            burst = int(value.text)
        else:
            rule.unmodelled_option("limit", option, mod, options)
            return
    try:
        rule.set("limit", Limit(rate, unit, burst), at)
    except ValueError as exc:
        raise _Fail("E0515", f"bad rate limit: {exc}", at) from None


def _comment(rule: _Rule, mod: Token, options: Options) -> None:
    for _, option, args in options:
        if option.text != "--comment":
            raise _Fail("E0514", f"option {option.text} of match 'comment' is unknown", option)
        text = _one(option, args).text
        rule.comment = text if rule.comment is None else f"{rule.comment}; {text}"


def _set(rule: _Rule, mod: Token, options: Options) -> None:
    for neg, option, args in options:
        if option.text != "--match-set":  # --return-nomatch, counters, ! --update-counters...
            rule.unmodelled_option("set", option, mod, options)
            return
        if len(args) != 2:
            raise _Fail("E0515", "--match-set takes a set name and src or dst", option)
        name, direction = args
        if direction.text not in ("src", "dst"):  # src,dst: a set of several dimensions
            rule.unmodelled_option("set", direction, mod, options)
            return
        members = rule.opts.ipsets.get(name.text)
        if members is None:
            if rule.opts.opaque:
                rule.condition(f"set {name.text} {direction.text}", neg)
                continue
            raise _Fail("E0520", f"ipset {name.text!r} is not known", name,
                        "give its `ipset save` text too, so rulec knows its members")
        if not members.prefixes:
            raise _Fail("E0520", f"ipset {name.text!r} is empty; rulec has no empty sets", name)
        for prefix in members.prefixes:
            rule.evidence(prefix.family, name)
        rule.set("saddr" if direction.text == "src" else "daddr",
                 AddressSet(members.prefixes, neg), name)


def _statistic(rule: _Rule, mod: Token, options: Options) -> None:
    # The dice are the chain's own: two chains' statistic matches are independent conditions.
    words = []
    negated = False
    for neg, option, args in options:
        if option.text not in ("--mode", "--probability", "--every", "--packet"):
            rule.unmodelled_option("statistic", option, mod, options)
            return
        negated = negated or neg
        words.append(" ".join(a.text for a in args))
    rule.condition(f"{rule.chain}: statistic {' '.join(words)}", negated)


_RECENT_TESTS = ("--rcheck", "--update", "--remove")


def _recent(rule: _Rule, mod: Token, options: Options) -> None:
    known = {"--set", *_RECENT_TESTS, "--seconds", "--reap", "--hitcount", "--rttl", "--name",
             "--mask", "--rsource", "--rdest"}
    for _, option, _ in options:
        if option.text not in known:
            rule.unmodelled_option("recent", option, mod, options)
            return
    tests = [(neg, option) for neg, option, _ in options if option.text in _RECENT_TESTS]
    if not tests:  # --set only records the address and always matches
        if any(neg for neg, option, _ in options if option.text == "--set"):
            raise _Fail("E0515", "`! --set` matches no packet", mod)
        return
    text = " ".join(o.text + "".join(f" {a.text}" for a in args) for _, o, args in options)
    rule.condition(f"recent {text}", tests[0][0])


_MODULES: dict[str, Callable[[_Rule, Token, Options], None]] = {
    "tcp": _ports_module(6), "udp": _ports_module(17), "sctp": _ports_module(132),
    "dccp": _ports_module(33), "multiport": _multiport,
    "icmp": _icmp_module(Family.IP), "icmp6": _icmp_module(Family.IP6),
    "conntrack": _conntrack, "state": _conntrack, "addrtype": _addrtype, "mark": _mark,
    "limit": _limit, "comment": _comment, "set": _set, "statistic": _statistic,
    "recent": _recent,
}


# -- targets

def _no_options(name: str) -> Callable[[_Rule, Token, Options], Action]:
    actions: dict[str, Action] = {"ACCEPT": Accept(), "DROP": Drop(), "RETURN": Return()}

    def read(rule: _Rule, token: Token, options: Options) -> Action:
        if options:
            raise _Fail("E0517", f"{name} takes no options", options[0][1])
        return actions[name]
    return read


_REJECT_NAMES = {
    "icmp-port-unreachable": RejectWith.PORT_UNREACHABLE, "port-unreach":
        RejectWith.PORT_UNREACHABLE, "icmp-host-unreachable": RejectWith.HOST_UNREACHABLE,
    "host-unreach": RejectWith.HOST_UNREACHABLE, "icmp-net-unreachable":
        RejectWith.NET_UNREACHABLE, "net-unreach": RejectWith.NET_UNREACHABLE,
    "icmp-admin-prohibited": RejectWith.ADMIN_PROHIBITED, "admin-prohib":
        RejectWith.ADMIN_PROHIBITED, "tcp-reset": RejectWith.TCP_RESET,
    "icmp6-port-unreachable": RejectWith.PORT_UNREACHABLE, "icmp6-addr-unreachable":
        RejectWith.HOST_UNREACHABLE, "addr-unreach": RejectWith.HOST_UNREACHABLE,
    "icmp6-no-route": RejectWith.NET_UNREACHABLE, "no-route": RejectWith.NET_UNREACHABLE,
    "icmp6-adm-prohibited": RejectWith.ADMIN_PROHIBITED, "adm-prohibited":
        RejectWith.ADMIN_PROHIBITED, "tcp-rst": RejectWith.TCP_RESET,
}
_REJECT_FAMILY = {"icmp-port-unreachable": Family.IP, "icmp-host-unreachable": Family.IP,
                  "icmp-net-unreachable": Family.IP, "icmp-admin-prohibited": Family.IP,
                  "icmp6-port-unreachable": Family.IP6, "icmp6-addr-unreachable": Family.IP6,
                  "icmp6-no-route": Family.IP6, "icmp6-adm-prohibited": Family.IP6}


def _reject(rule: _Rule, token: Token, options: Options) -> Action:
    with_: RejectWith | None = None
    for _, option, args in options:
        if option.text != "--reject-with":
            raise _Fail("E0517", f"option {option.text} of REJECT is unknown", option)
        value = _one(option, args)
        if value.text not in _REJECT_NAMES:  # icmp-host-prohibited, icmp-proto-unreachable...
            raise _Fail("E0517", f"REJECT --reject-with {value.text} is not modelled by rulec",
                        value)
        if value.text in _REJECT_FAMILY:
            rule.evidence(_REJECT_FAMILY[value.text], value)
        with_ = _REJECT_NAMES[value.text]
    return Reject(with_)


_LOG_LEVELS = {level.value: level for level in LogLevel} | {
    str(level.number): level for level in LogLevel} | {"warn": LogLevel.WARNING,
                                                       "error": LogLevel.ERR,
                                                       "panic": LogLevel.EMERG}
# Options that change only what a log line shows, never the packet's fate.
_LOG_DETAIL = frozenset({"--log-tcp-sequence", "--log-tcp-options", "--log-ip-options",
                         "--log-uid", "--log-macdecode"})
_NFLOG_DETAIL = frozenset({"--nflog-group", "--nflog-range", "--nflog-size",
                           "--nflog-threshold"})


def _log(rule: _Rule, token: Token, options: Options) -> Action:
    prefix: str | None = None
    level: LogLevel | None = None
    for _, option, args in options:
        if option.text in ("--log-prefix", "--nflog-prefix"):
            prefix = _one(option, args).text
        elif option.text == "--log-level" and token.text == "LOG":
            value = _one(option, args)
            if value.text.lower() not in _LOG_LEVELS:
                raise _Fail("E0517", f"unknown log level {value.text!r}", value)
            level = _LOG_LEVELS[value.text.lower()]
            if level is LogLevel.WARNING:
                level = None  # iptables' default: the DSL's `log` without a level
        elif option.text in (_LOG_DETAIL if token.text == "LOG" else _NFLOG_DETAIL):
            continue
        else:
            raise _Fail("E0517", f"option {option.text} of {token.text} is unknown", option)
    return Log(prefix=prefix or None, level=level)


def _nat_to(rule: _Rule, token: Token) -> tuple[Prefix, tuple[int, int] | None]:
    text = token.text
    port: str | None = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise _Fail("E0515", f"bad NAT address {text!r}", token)
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text
    if "-" in host:
        raise _Fail("E0517", "a NAT address range is not modelled by rulec", token)
    prefix = rule.prefix(Token(host, token.start, token.end))
    return prefix, _nat_ports(token, port) if port is not None else None


def _nat_ports(token: Token, text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    first = _port(token, low)
    last = _port(token, high) if sep else first
    if first > last or first == 0:
        raise _Fail("E0515", f"bad NAT port range {text!r}", token)
    return first, last


# Options that choose how a port is allocated, which rulec leaves to the kernel as well.
_NAT_ALLOCATION = frozenset({"--random", "--random-fully", "--persistent"})


def _nat(rule: _Rule, token: Token, options: Options) -> Action:
    name = token.text
    address: tuple[Prefix, tuple[int, int] | None] | None = None
    ports: tuple[int, int] | None = None
    for _, option, args in options:
        wanted = {"DNAT": "--to-destination", "SNAT": "--to-source"}.get(name, "--to-ports")
        if option.text == wanted:
            value = _one(option, args)
            if address is not None or ports is not None:
                raise _Fail("E0517", f"{name} with several {wanted} is not modelled", value)
            if name in ("DNAT", "SNAT"):
                address = _nat_to(rule, value)
            else:
                ports = _nat_ports(value, value.text)
        elif option.text in _NAT_ALLOCATION and name != "REDIRECT":
            continue
        else:
            raise _Fail("E0517", f"option {option.text} of {name} is not modelled by rulec",
                        option)
    if name in ("DNAT", "SNAT"):
        if address is None:
            needed = "--to-destination" if name == "DNAT" else "--to-source"
            raise _Fail("E0517", f"{name} without a {needed} is not modelled", token)
        return (Dnat if name == "DNAT" else Snat)(address=address[0], ports=address[1])
    if name == "MASQUERADE":
        return Masquerade(ports=ports)
    if ports is None:
        raise _Fail("E0517", "REDIRECT without --to-ports is not modelled by rulec", token)
    return Redirect(ports=ports)


def _tcpmss(rule: _Rule, token: Token, options: Options) -> Action:
    if len(options) != 1:
        raise _Fail("E0517", "TCPMSS takes --set-mss or --clamp-mss-to-pmtu", token)
    _, option, args = options[0]
    if option.text == "--clamp-mss-to-pmtu" and not args:
        return ClampMss()
    if option.text == "--set-mss":
        value = _one(option, args)
        if not value.text.isdigit() or int(value.text) > 65535:
            raise _Fail("E0515", f"bad mss {value.text!r}", value)
        return SetMss(int(value.text))
    raise _Fail("E0517", f"option {option.text} of TCPMSS is unknown", option)


def _mark_target(rule: _Rule, token: Token, options: Options) -> Action:
    if len(options) != 1:
        raise _Fail("E0517", "MARK takes one of --set-xmark, --set-mark, --and-mark, "
                    "--or-mark, --xor-mark", token)
    _, option, args = options[0]
    value = _one(option, args)
    number, mask = _mark_value(value)
    # As libxt_MARK turns each into (value, mask) of mark = (mark & ~mask) ^ value.
    if option.text == "--set-xmark":
        return SetMark(number, mask)
    if option.text == "--set-mark":
        return SetMark(number, (number | mask) & MAX_MARK)
    if "/" in value.text:
        raise _Fail("E0515", f"{option.text} takes no mask", value)
    if option.text == "--and-mark":
        return SetMark(0, ~number & MAX_MARK)
    if option.text == "--or-mark":
        return SetMark(number, number)
    if option.text == "--xor-mark":
        return SetMark(number, 0)
    raise _Fail("E0517", f"option {option.text} of MARK is unknown", option)


_TARGETS: dict[str, Callable[[_Rule, Token, Options], Action]] = {
    "ACCEPT": _no_options("ACCEPT"), "DROP": _no_options("DROP"),
    "RETURN": _no_options("RETURN"), "REJECT": _reject, "LOG": _log, "NFLOG": _log,
    "DNAT": _nat, "SNAT": _nat, "MASQUERADE": _nat, "REDIRECT": _nat, "TCPMSS": _tcpmss,
    "MARK": _mark_target,
}


# -- the file

@dataclass
class _TableDraft:
    kind: TableKind
    span: Span
    chains: dict[str, Chain] = field(default_factory=dict)
    rules: dict[str, list[Rule]] = field(default_factory=dict)


def _lines(source: SourceFile) -> Iterator[tuple[int, int, str]]:
    offset = 0
    for line in source.text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        yield offset, offset + len(body), body
        offset += len(line)


def read_iptables_save(source: SourceFile, *, family: Family | None = None, opaque: bool = False,
                       ipsets: Mapping[str, AddressSet] | None = None) -> Ruleset:
    """The tables of an iptables-save (or restore) dump; RulecError lists every problem."""
    out = Collector()
    opts = _Options(opaque, ipsets or {})
    if family is None and source.text.lstrip().startswith("# Generated by ip6tables-save"):
        family = Family.IP6
    drafts: list[_TableDraft] = []
    current: _TableDraft | None = None
    seen_kinds: set[TableKind] = set()
    for start, end, line in _lines(source):
        try:
            tokens = tokenize(line, start)
            if not tokens or tokens[0].text.startswith("#"):
                continue
            first = tokens[0]
            if first.text.startswith("*"):
                if current is not None:
                    raise _Fail("E0522", f"table {current.kind.value} is not committed before "
                                "the next table", first)
                current = _start_table(source, first, tokens, start, end, seen_kinds)
                continue
            if current is None:
                raise _Fail("E0522", "a line outside a table (`*filter` ... `COMMIT`)", first)
            if first.text == "COMMIT":
                drafts.append(current)
                current = None
            elif first.text.startswith(":"):
                _declare(source, current, tokens, start, end)
            elif first.text.startswith("[") and len(tokens) > 1:
                _command(source, current, tokens[1:], start, end, opts, family)
            else:
                _command(source, current, tokens, start, end, opts, family)
        except _Fail as fail:
            token = fail.token
            span = source.span(token.start, max(token.end, token.start)) if token else None
            out.error(fail.code, fail.message, span, *fail.notes)
    if current is not None:
        out.error("E0522", f"table {current.kind.value} has no COMMIT", current.span)
    chosen = _family(source, family, opts, out)
    tables = [_finish(d, chosen) for d in drafts]
    out.raise_if_errors()
    return Ruleset(tables=tuple(tables))


def _start_table(source: SourceFile, first: Token, tokens: list[Token], start: int, end: int,
                 seen: set[TableKind]) -> _TableDraft:
    name = first.text[1:]
    if len(tokens) > 1:
        raise _Fail("E0510", "a table line holds only `*NAME`", tokens[1])
    kind = next((k for k in TableKind if k.value == name), None)
    if kind is None:
        raise _Fail("E0511", f"table {name!r} is not modelled by rulec (filter, nat, mangle "
                    "and raw are)", first)
    if kind in seen:
        raise _Fail("E0512", f"table {name} appears twice", first)
    seen.add(kind)
    return _TableDraft(kind, source.span(start, end))


def _builtin(kind: TableKind, name: str) -> Hook | None:
    return next((h for h in BUILTIN_CHAINS[kind] if h.value == name), None)


def _declare(source: SourceFile, table: _TableDraft, tokens: list[Token], start: int,
             end: int) -> None:
    first = tokens[0]
    name = first.text[1:]
    if not name or len(tokens) < 2:
        raise _Fail("E0510", "a chain line is `:NAME POLICY [packets:bytes]`", first)
    if name in table.chains:
        raise _Fail("E0512", f"chain {name} declared twice", first)
    hook = _builtin(table.kind, name)
    policy_word = tokens[1]
    policy: Policy | None = None
    if hook is None:
        if policy_word.text != "-":
            raise _Fail("E0515", f"user chain {name} cannot have policy {policy_word.text}",
                        policy_word)
    elif policy_word.text in ("ACCEPT", "DROP"):
        policy = Policy[policy_word.text]
    else:
        raise _Fail("E0515", f"bad policy {policy_word.text!r} for {name}", policy_word)
    if len(tokens) > 3 or (len(tokens) == 3 and not tokens[2].text.startswith("[")):
        raise _Fail("E0510", "unexpected word after the chain's policy", tokens[-1])
    table.chains[name] = Chain(name=name, hook=hook, policy=policy, span=source.span(start, end))
    table.rules.setdefault(name, [])


def _chain(source: SourceFile, table: _TableDraft, token: Token, start: int, end: int) -> str:
    """The chain a command names; a built-in chain need not be declared (noflush files)."""
    name = token.text
    if name not in table.chains:
        hook = _builtin(table.kind, name)
        if hook is None:
            raise _Fail("E0512", f"chain {name} is not declared in table {table.kind.value}",
                        token)
        table.chains[name] = Chain(name=name, hook=hook, span=source.span(start, end))
        table.rules[name] = []
    return name


def _command(source: SourceFile, table: _TableDraft, tokens: list[Token], start: int, end: int,
             opts: _Options, family: Family | None) -> None:
    first = tokens[0]
    if first.text in ("-F", "--flush", "-N", "--new-chain"):
        if len(tokens) != 2:
            raise _Fail("E0510", f"{first.text} takes one chain name", first)
        if first.text in ("-N", "--new-chain") and tokens[1].text not in table.chains:
            table.chains[tokens[1].text] = Chain(name=tokens[1].text,
                                                 span=source.span(start, end))
            table.rules[tokens[1].text] = []
        _chain(source, table, tokens[1], start, end)
        if first.text in ("-F", "--flush"):
            table.rules[tokens[1].text] = []
        return
    if first.text not in ("-A", "--append"):
        raise _Fail("E0523", f"restore command {first.text!r} is not supported (only -A, -F, "
                    "-N and chain lines)", first)
    if len(tokens) < 2:
        raise _Fail("E0510", "-A needs a chain name", first)
    name = _chain(source, table, tokens[1], start, end)
    rule = _Rule(tokens[2:], name, opts, family, table.chains)
    rule.read()
    if rule.action is None:  # a rule with no target only counts packets: no fate changes
        if rule.comment is None and not rule.fields:
            return
        return
    action = rule.action
    unknown = Unknown(frozenset(rule.holds), frozenset(rule.fails)) if (
        rule.holds or rule.fails) else None
    if unknown is not None and unknown.holds & unknown.fails:
        raise _Fail("E0515", "the rule both requires and excludes one condition", first)
    match = Match(**rule.fields, unknown=unknown)
    table.rules[name].append(Rule(match=match, action=action, comment=rule.comment,
                                  span=source.span(start, end)))


def _family(source: SourceFile, given: Family | None, opts: _Options,
            out: Collector) -> Family:
    if given is not None:
        return given
    if len(opts.families) > 1:
        token = max(opts.families.values(), key=lambda t: t.start)
        out.error("E0518", "the dump mixes IPv4 and IPv6 (read one family's file at a time)",
                  source.span(token.start, token.end))
        return Family.IP
    return next(iter(opts.families), Family.IP)


def _finish(draft: _TableDraft, family: Family) -> Table:
    chains = tuple(replace(c, rules=tuple(draft.rules[c.name])) for c in draft.chains.values())
    return Table(kind=draft.kind, family=family, chains=chains, span=draft.span)


# -- ipset

def read_ipset(source: SourceFile) -> dict[str, AddressSet]:
    """`ipset save` / `ipset restore` text: hash:net and hash:ip sets by name."""
    out = Collector()
    members: dict[str, list[Prefix]] = {}
    families: dict[str, Family] = {}
    for start, _end, line in _lines(source):
        try:
            tokens = tokenize(line, start)
            if not tokens or tokens[0].text.startswith("#"):
                continue
            _ipset_line(tokens, members, families)
        except _Fail as fail:
            token = fail.token
            out.error(fail.code, fail.message,
                      source.span(token.start, token.end) if token else None, *fail.notes)
    out.raise_if_errors()
    return {name: AddressSet(tuple(prefixes)) for name, prefixes in members.items()}


_SET_CREATE_OPTIONS = {"family": 1, "hashsize": 1, "maxelem": 1, "timeout": 1, "comment": 0,
                       "counters": 0, "skbinfo": 0, "forceadd": 0, "bucketsize": 1,
                       "initval": 1}


def _ipset_line(tokens: list[Token], members: dict[str, list[Prefix]],
                families: dict[str, Family]) -> None:
    command = tokens[0]
    if command.text in ("-exist", "-!"):
        tokens = tokens[1:]
        command = tokens[0] if tokens else command
    if command.text in ("create", "-N", "add", "-A") and len(tokens) < 3:
        raise _Fail("E0521", f"{command.text} needs a set name and a value", command)
    if command.text in ("create", "-N"):
        name, kind = tokens[1], tokens[2]
        if kind.text not in ("hash:net", "hash:ip"):
            raise _Fail("E0520", f"ipset type {kind.text} is not modelled by rulec (hash:net "
                        "and hash:ip are)", kind)
        family = Family.IP
        i = 3
        while i < len(tokens):
            option = tokens[i]
            if option.text not in _SET_CREATE_OPTIONS:  # netmask widens what a member covers
                raise _Fail("E0520", f"ipset option {option.text} is not modelled by rulec",
                            option)
            if option.text == "family":
                if i + 1 >= len(tokens) or tokens[i + 1].text not in ("inet", "inet6"):
                    raise _Fail("E0521", "family is inet or inet6", option)
                family = Family.IP if tokens[i + 1].text == "inet" else Family.IP6
            i += 1 + _SET_CREATE_OPTIONS[option.text]
        if name.text in members:
            raise _Fail("E0521", f"ipset {name.text} is created twice", name)
        members[name.text] = []
        families[name.text] = family
    elif command.text in ("add", "-A"):
        name, value = tokens[1], tokens[2]
        if name.text not in members:
            raise _Fail("E0521", f"ipset {name.text} is not created before its members", name)
        rest = [t.text for t in tokens[3:]]
        if "nomatch" in rest:
            raise _Fail("E0520", "nomatch entries are not modelled by rulec", tokens[3])
        members[name.text].extend(_set_member(value, families[name.text]))
    else:
        raise _Fail("E0521", f"ipset command {command.text!r} is not supported (create, add)",
                    command)


def _set_member(token: Token, family: Family) -> list[Prefix]:
    text = token.text
    try:
        if "-" in text:
            low, high = (Prefix.parse(part) for part in text.split("-", 1))
            if low.family is not high.family or low.first > high.last:
                raise ValueError("bad range")
            found = list(prefixes_of(low.family, low.first, high.last))
        else:
            found = [Prefix.parse(text)]
    except ValueError as exc:
        raise _Fail("E0521", f"bad ipset member {text!r}: {exc}", token) from None
    if any(p.family is not family for p in found):
        raise _Fail("E0521", f"{text} is not of the set's family {family.value}", token)
    return found


__all__ = ["read_ipset", "read_iptables_save", "tokenize"]
