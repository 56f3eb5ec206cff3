""".rules files -> IR. Parsing is Lark's; this module resolves includes and defines, checks every
value against where it is used, and builds the IR with a span on every node. It does so while
Lark parses, called back as each statement, header and rule is reduced (the file's parse tree
is never built), and lowers each distinct value once.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lark import Token, Tree
from lark.exceptions import UnexpectedInput

from rulec.diagnostics import Collector, Diagnostic, RulecError, SourceFile, Span
from rulec.frontends import is_stdin, read_input, source_name
from rulec.frontends.grammar import lowering_parser
from rulec.frontends.syntax_errors import syntax_diagnostic
from rulec.ir import nodes as ir
from rulec.ir.values import (
    ICMP,
    ICMP_TYPES,
    ICMPV6,
    ICMPV6_TYPES,
    MAX_MARK,
    MAX_PORT,
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
from rulec.ir.verify import NAT_PORT_0_NOTES, ifname_too_long

if TYPE_CHECKING:
    from rulec.frontends.docker import DockerHost, DockerOptions

_FAMILIES = {"ip": Family.IP, "ip6": Family.IP6, "inet": Family.INET}
_TABLES = {k.value: k for k in ir.TableKind}
# dockerd jumps to DOCKER-USER from FORWARD (and DOCKER-FORWARD); a policy declares its rules.
_ALWAYS_EXTERNAL = frozenset({"DOCKER-USER"})
_CHAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")  # what `$name` can refer to
# The kernel refuses these in interface names; `"` and `\` would need quoting downstream.
_BAD_IFNAME_CHARS = set(" /:\"'\\\t")
_ESCAPE = re.compile(r"\\(.)")
_REJECT = {w.value: w for w in ir.RejectWith}
_LEVELS = {lv.value: lv for lv in ir.LogLevel}
_UNITS = {u.value: u for u in RateUnit} | {u.value + "s": u for u in RateUnit}
_PROTOCOL_NAMED = {name: Protocol(number) for name, number in PROTOCOLS.items()}
_SYN_MASK = frozenset({TcpFlag.FIN, TcpFlag.SYN, TcpFlag.RST, TcpFlag.ACK})
BOM = "\ufeff"  # editors on some systems start UTF-8 files with it; it is not policy text
# nft bounds its includes at 16; a policy needs a handful, and each level costs a few frames
# of Python's stack, which a chain of hundreds of files would exhaust.
MAX_INCLUDE_DEPTH = 32
# A policy file's start: comments, blank lines and `;`, then a statement or the end.
_POLICY_START = re.compile(r"(?:[\s;]|#[^\n]*)*(?:(?:define|include|table|docker)"
                           r"(?![A-Za-z0-9_.+-])|\Z)")
_NOT_SHOWN = ("an included file is read, and its lines are shown, only if it is a policy "
              "file; this one's content is not shown")


@dataclass(frozen=True, slots=True)
class _Atom:
    """One value of a set: its token (type and text), where to point at it, and for a value
    that came from a $variable, a note saying where the variable is defined."""

    token: Token
    span: Span
    notes: tuple[str, ...] = ()


@dataclass
class _Context:
    """State while lowering one compilation: defines, tables, the include stack."""

    out: Collector
    # name -> (its atoms, or None if the define had errors; the span of its name)
    defines: dict[str, tuple[list[_Atom] | None, Span]] = field(default_factory=dict)
    tables: dict[tuple[Family, ir.TableKind], _TableBuilder] = field(default_factory=dict)
    stack: list[Path] = field(default_factory=list)
    includes: int = 0  # `include`s open right now, nested
    # User chains entered from outside the policy (`external`, or always-external names).
    entry_points: set[str] = field(default_factory=set)
    # `docker { ... }` blocks, lowered by rulec.frontends.docker and expanded in _finish.
    docker: list[DockerHost] = field(default_factory=list)
    # Values already lowered without an error, by what was written: a `$web` used by 10,000
    # rules is expanded and checked once, and they share one immutable PortSet.
    values: dict[object, AddressSet | PortSet] = field(default_factory=dict)
    # `$name is defined at ...`, the note on every atom a variable brings, formatted once.
    define_notes: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def save(self) -> _Saved:
        return _Saved(len(self.out.items), dict(self.defines),
                      [(key, b, dict(b.chains), b.span) for key, b in self.tables.items()],
                      set(self.entry_points), len(self.docker))

    def restore(self, saved: _Saved) -> None:
        """Undo what lowering did since `saved`: a file with a syntax error contributes
        nothing but that error, though the parser lowered its first part (and includes)."""
        del self.out.items[saved.diagnostics:]
        self.defines.clear()
        self.defines.update(saved.defines)
        self.tables.clear()
        for key, builder, chains, span in saved.tables:
            builder.chains, builder.span = chains, span
            self.tables[key] = builder
        self.entry_points.clear()
        self.entry_points.update(saved.entry_points)
        del self.docker[saved.docker:]
        self.values.clear()  # a value may name a define that is gone now
        self.define_notes.clear()


@dataclass(frozen=True, slots=True)
class _Saved:
    diagnostics: int
    defines: dict[str, tuple[list[_Atom] | None, Span]]
    tables: list[tuple[tuple[Family, ir.TableKind], _TableBuilder, dict[str, ir.Chain], Span]]
    entry_points: set[str]
    docker: int


@dataclass
class _TableBuilder:
    kind: ir.TableKind
    family: Family
    span: Span
    chains: dict[str, ir.Chain] = field(default_factory=dict)

    def build(self) -> ir.Table:
        return ir.Table(kind=self.kind, family=self.family, chains=tuple(self.chains.values()),
                        span=self.span)


def parse_text(text: str, name: str = "<string>", docker: DockerOptions | None = None,
               warnings: list[Diagnostic] | None = None) -> ir.Ruleset:
    """Parse one policy text; includes resolve relative to the current directory. A Docker
    host model (a `docker` block, or `docker.state_files`) is expanded with `docker`'s
    options (default: current layout, iptables shape). Warnings go to `warnings`, if given."""
    ctx = _Context(Collector())
    _lower_source(SourceFile(name, text.removeprefix(BOM)), Path.cwd(), ctx)
    return _finish(ctx, docker, warnings)


def parse_files(paths: Sequence[Path], docker: DockerOptions | None = None,
                warnings: list[Diagnostic] | None = None) -> ir.Ruleset:
    """Parse policy files in order, as if they were one file."""
    ctx = _Context(Collector())
    for path in paths:
        _load_file(path, None, ctx)
    return _finish(ctx, docker, warnings)


def _finish(ctx: _Context, docker: DockerOptions | None,
            warnings: list[Diagnostic] | None) -> ir.Ruleset:
    ruleset = ir.Ruleset(tables=tuple(t.build() for t in ctx.tables.values()),
                         entry_points=frozenset(ctx.entry_points))
    if ctx.docker or (docker is not None and docker.state_files):
        from rulec.frontends.docker import DockerOptions, apply

        ruleset = apply(ruleset, ctx.docker, docker or DockerOptions(), ctx.out)
    ctx.out.raise_if_errors()
    if warnings is not None:
        warnings.extend(ctx.out.warnings)
    return ruleset


def _load_file(path: Path, span: Span | None, ctx: _Context) -> None:
    """Read and lower one policy file: one named on the command line (`span` None), or the
    target of the `include` at `span`.

    An included file is only read as policy, and so only quoted in diagnostics, once it has
    shown itself to be a policy file: it is UTF-8 text and starts with `define`, `include`,
    `table` or `docker` (after comments and blank lines). Otherwise the error points at the
    `include` and names the file, so that `include "/etc/shadow"` cannot print any of it
    (E0212)."""
    included = span is not None
    if included and ctx.includes >= MAX_INCLUDE_DEPTH:
        ctx.out.error("E0211", f"includes nest more than {MAX_INCLUDE_DEPTH} files deep", span,
                      f"including {path} here would nest {ctx.includes + 1}; a policy rarely "
                      "needs more than a few")
        return
    try:
        resolved = path.resolve()
        if resolved in ctx.stack:
            cycle = " -> ".join(p.name for p in [*ctx.stack[ctx.stack.index(resolved):], resolved])
            ctx.out.error("E0204", f"include cycle: {cycle}", span)
            return
        stdin = not included and is_stdin(path)
        if not stdin and path.is_dir():
            raise ValueError("it is a directory")
        if not stdin and path.exists() and not path.is_file():
            raise ValueError("not a regular file")  # a device or FIFO may block or never end
        data = read_input(path) if not included else path.read_bytes()
    except (OSError, ValueError, RuntimeError) as exc:
        # ValueError: a NUL in the name; RuntimeError: a symlink loop (Python < 3.13).
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        ctx.out.error("E0203", f"cannot read {path}: {reason}", span)
        return
    try:
        text = data.decode("utf-8").removeprefix(BOM)
    except UnicodeDecodeError as exc:
        if included:
            ctx.out.error("E0212", f"{path} is not a policy file: it is not UTF-8 text", span,
                          "save it as UTF-8", _NOT_SHOWN)
            return
        shown = SourceFile(source_name(path), data.decode("utf-8", errors="replace"))
        offset = len(data[:exc.start].decode("utf-8", errors="replace"))
        ctx.out.error("E0203", f"{path} is not UTF-8: byte {data[exc.start]:#04x} cannot be "
                      "decoded", shown.span(offset, offset + 1), "save the file as UTF-8")
        return
    if included and not _POLICY_START.match(text):
        ctx.out.error("E0212", f"{path} is not a policy file", span,
                      "a policy file starts with define, include, table or docker (after "
                      "comments and blank lines)", _NOT_SHOWN)
        return
    ctx.stack.append(resolved)
    ctx.includes += included
    try:
        _lower_source(SourceFile(source_name(path), text), path.parent, ctx)
    finally:
        ctx.stack.pop()
        ctx.includes -= included


@dataclass(frozen=True, slots=True)
class _ChainHead:
    """A chain whose header had no error, while its rules are parsed."""

    name: str
    hook: ir.Hook | None
    policy: ir.Policy | None
    span: Span


_FAILED = object()  # what a rule with errors lowers to (None is Lark's absent `[rule]`)


def _lower_source(source: SourceFile, directory: Path, ctx: _Context) -> None:
    grammar = lowering_parser(_CALLBACKS)
    saved = ctx.save()
    _CALLBACKS.active.append(_Lowering(source, directory, ctx))
    try:
        # A trailing newline lets the last line end like every other.
        grammar.parse(source.text + "\n")
    except UnexpectedInput as exc:
        ctx.restore(saved)
        ctx.out.extend([syntax_diagnostic(exc, source, grammar)])
    finally:
        _CALLBACKS.active.pop()


class _Lowering:
    """Lowers one file while Lark parses it: Lark calls the methods below (through
    _Callbacks) as it reduces `define`, `include`, `docker`, table and chain headers, `rule`,
    chains and tables, in the order they end in the text. IR goes to the context, errors to
    its collector. Inside a rule, clauses and values are small Lark trees, lowered with the
    rule and then dropped: no tree of the whole file is ever held."""

    def __init__(self, source: SourceFile, directory: Path, ctx: _Context) -> None:
        self.source = source
        self.directory = directory
        self.ctx = ctx
        self.out = ctx.out
        # The table whose chains are being parsed (None if its header had an error: its
        # chains and rules are not lowered), and the chain whose rules are (None likewise).
        self.table_builder: _TableBuilder | None = None
        self.open_chain: _ChainHead | None = None
        self.last_rule_end = 0  # where the last rule ended (a table's span reaches there)
        self.table_start = self.table_header_end = 0
        self.table_is_new = False

    # ------------------------------------------------------------------ spans and helpers
    def span(self, node: Tree[Token] | Token) -> Span:
        """From the node's first token to its last (the parser keeps no positions on trees)."""
        first, last = _edge_token(node, 0), _edge_token(node, -1)
        if first is None or last is None:
            raise AssertionError(f"span of a node without tokens: {node!r}")
        return self.source.span(first.start_pos or 0, last.end_pos or 0)

    def clause_span(self, clause: Tree[Token], rule_span: Span) -> Span:
        # Keyword-only clauses (`syn`, `counter`) keep no token: point at the whole rule.
        return self.span(clause) if _edge_token(clause, 0) is not None else rule_span

    def string(self, token: Token) -> str:
        body = str(token)[1:-1]
        if "\\" not in body:
            return body
        for match in _ESCAPE.finditer(body):
            if match.group(1) not in '"\\':
                start = (token.start_pos or 0) + 1 + match.start()
                self.out.error("E0104", f"unknown escape \\{match.group(1)} in string",
                               self.source.span(start, start + 2),
                               'only \\" and \\\\ are escapes')
        return _ESCAPE.sub(r"\1", body)

    # ------------------------------------------------------------------ top level
    def include(self, children: list[Token]) -> None:
        token = children[0]
        _load_file(self.directory / self.string(token), self.span(token), self.ctx)

    def docker(self, children: list[Token | Tree[Token]]) -> None:
        from rulec.frontends.docker.block import lower_block

        item: Tree[Token] = Tree("docker", children)
        too_deep = _nested_too_deep(item)
        if too_deep is not None:
            self.out.error("E0105", f"blocks nest more than {MAX_BLOCK_DEPTH} deep",
                           self.span(too_deep),
                           "the Docker model nests one level: `network NAME { ... }`")
            return
        self.ctx.docker.append(lower_block(item, self.source, self.out))

    def define(self, children: list[Token | Tree[Token]]) -> None:
        name, value = children
        assert isinstance(name, Token) and isinstance(value, Tree)
        if not _VAR_NAME.match(name):
            self.out.error("E0210", f"invalid variable name {name!s}", self.span(name),
                           "use letters, digits and '_', starting with a letter or '_'")
            return
        if name in self.ctx.defines:
            first = self.ctx.defines[name][1]
            self.out.error("E0202", f"${name} is already defined", self.span(name),
                           f"first defined at {first}")
            return
        self.ctx.defines[str(name)] = (self.atoms(value), self.span(name))

    def atoms(self, value: Tree[Token]) -> list[_Atom] | None:
        """The value's atoms with $variables expanded (defines are resolved when defined);
        None if a variable is undefined or broken (the error is already reported).

        A value is a set, so an atom written twice is kept once (the first time). Without this
        a few lines (`define a1 = { $a0, $a0 }`, `define a2 = { $a1, $a1 }`, ...) double a set
        per line: 600 bytes made a million atoms, 30 lines a billion. Expansion only copies
        atoms written in the source, so a value never holds more than those."""
        tokens = _value_tokens(value.children[0])
        atoms: list[_Atom] = []
        seen: set[tuple[str, str]] = set()
        ok = True
        for token in tokens:
            if token.type != "VAR":
                if (token.type, str(token)) not in seen:
                    seen.add((token.type, str(token)))
                    atoms.append(_Atom(token, self.span(token)))
                continue
            name = token[1:]
            if name not in self.ctx.defines:
                close = difflib.get_close_matches(name, list(self.ctx.defines), n=1)
                notes = [f"did you mean ${close[0]}?"] if close else [
                    "define it first: `define " + name + " = ...`"]
                self.out.error("E0201", f"${name} is not defined", self.span(token), *notes)
                ok = False
                continue
            defined, where = self.ctx.defines[name]
            if defined is None:
                ok = False
                continue
            # Point at the use, with a note: the define may be far away, or in another file.
            use = self.span(token)
            note = self.ctx.define_notes.get(name)
            if note is None:
                note = self.ctx.define_notes[name] = (f"{token!s} is defined at {where}",)
            for a in defined:
                if (a.token.type, str(a.token)) not in seen:
                    seen.add((a.token.type, str(a.token)))
                    atoms.append(_Atom(a.token, use, note))
        return atoms if ok else None

    def table_head(self, children: list[Token | None]) -> None:
        first, second = children
        assert first is not None
        family_token, kind_token = (first, second) if second is not None else (None, first)
        self.table_builder = None
        self.table_start, self.table_header_end = first.start_pos or 0, (
            kind_token.end_pos or 0)
        family = Family.INET
        if family_token is not None:
            if family_token not in _FAMILIES:
                self.out.error("E0301", f"unknown family {family_token!s}",
                               self.span(family_token), "use ip, ip6 or inet")
                return
            family = _FAMILIES[family_token]
        if kind_token not in _TABLES:
            self.out.error("E0301", f"unknown table {kind_token!s}", self.span(kind_token),
                           "use filter, nat, mangle or raw")
            return
        kind = _TABLES[kind_token]
        builder = self.ctx.tables.get((family, kind))
        self.table_is_new = builder is None
        if builder is None:
            # Its span is the whole table's, known when the table ends.
            builder = self.ctx.tables[(family, kind)] = _TableBuilder(
                kind, family, self.source.span(self.table_start, self.table_header_end))
        self.table_builder = builder

    def table(self, children: list[int | None]) -> None:
        chain_ends = [end for end in children[1:] if end is not None]
        builder, self.table_builder = self.table_builder, None
        if builder is not None and self.table_is_new:
            # From the table's first word to its last, as the rest of a table's tokens.
            end = chain_ends[-1] if chain_ends else self.table_header_end
            builder.span = self.source.span(self.table_start, end)

    def chain_head(self, children: list[Token | None]) -> int:
        """Checks a chain's header before its rules are lowered (as they are parsed); returns
        where the header ends."""
        name, external, policy_token = children
        assert name is not None
        header_end = (policy_token or external or name).end_pos or 0
        self.open_chain = None
        table = self.table_builder
        if table is None:
            return header_end
        span = self.span(name)
        if not _CHAIN_NAME.match(name):
            self.out.error("E0210", f"invalid chain name {name!s}", span,
                           "use letters, digits, '_' and '-', starting with a letter or '_'")
            return header_end
        if name in table.chains:
            first = table.chains[name].span
            self.out.error("E0206", f"chain {name!s} is already declared in table "
                           f"{table.family.value} {table.kind.value}", span,
                           f"first declared at {first}")
            return header_end
        builtin = {h.value: h for h in ir.BUILTIN_CHAINS[table.kind]}
        hook = builtin.get(str(name))
        if hook is None and name in ir.Hook.__members__:
            self.out.error("E0209", f"table {table.kind.value} has no built-in chain {name!s}",
                           span, "built-in chains here: " + ", ".join(builtin))
            return header_end
        if external is not None and hook is not None:
            self.out.error("E0208", f"built-in chain {name!s} cannot be external",
                           self.span(external), "the kernel enters built-in chains itself; "
                           "`external` marks a user chain another program jumps to")
        elif external is not None or name in _ALWAYS_EXTERNAL:
            self.ctx.entry_points.add(str(name))
        policy = None
        if policy_token is not None:
            if hook is None:
                self.out.error("E0208", f"user chain {name!s} cannot have a policy",
                               self.span(policy_token),
                               "only built-in chains (" + ", ".join(builtin) + ") have one")
            elif policy_token not in ("accept", "drop"):
                self.out.error("E0301", f"unknown policy {policy_token!s}",
                               self.span(policy_token), "use accept or drop")
            elif table.kind is ir.TableKind.NAT and policy_token == "drop":
                # verify() checks this too, but only knows the chain's span.
                self.out.error("E0315", f"nat chain {name!s} cannot have policy drop",
                               self.span(policy_token),
                               "the nat table is not for filtering; drop in the filter table")
            else:
                policy = ir.Policy(str(policy_token))
        self.open_chain = _ChainHead(str(name), hook, policy, span)
        return header_end

    def chain(self, children: list[object]) -> int:
        """Declares the chain with the rules lowered while it was parsed; returns where the
        chain ends (its last token), for the table's span."""
        header_end, rules = children[0], children[1:]
        assert isinstance(header_end, int)
        # The last rule is optional in the grammar: None if the chain ends with a separator.
        end = self.last_rule_end if len(rules) > 1 or rules[-1] is not None else header_end
        head, self.open_chain = self.open_chain, None
        if head is not None:
            assert self.table_builder is not None
            self.table_builder.chains[head.name] = ir.Chain(
                name=head.name, hook=head.hook, policy=head.policy,
                rules=tuple(r for r in rules if isinstance(r, ir.Rule)), span=head.span)
        return end

    # ------------------------------------------------------------------ rules
    def rule(self, children: list[Tree[Token]]) -> ir.Rule | object:
        """The rule's IR, or _FAILED if it had errors (or its chain did: then it is not
        lowered)."""
        action_tree, *clauses = children
        last = None
        for clause in reversed(clauses):
            if (last := _edge_token(clause, -1)) is not None:
                break
        first = action_tree.children[0]  # the action's keyword
        assert isinstance(first, Token)
        last = last or _edge_token(action_tree, -1)
        assert last is not None
        self.last_rule_end = last.end_pos or 0
        if self.open_chain is None:
            return _FAILED
        span = self.source.span(first.start_pos or 0, self.last_rule_end)
        errors_before = len(self.out.items)
        fields: dict[str, object] = {}
        seen: dict[str, Tree[Token]] = {}
        statements: list[ir.Statement] = []
        comment: str | None = None
        for clause in clauses:
            kind = clause.data
            if kind in ("log_statement", "counter"):
                statements.append(self.log(clause) if kind == "log_statement" else ir.Counter())
                continue
            key = "proto" if kind == "proto_name" else kind
            if key in seen:
                self.out.error("E0304", f"{_CLAUSE_LABEL.get(key, key)} is given twice",
                               self.clause_span(clause, span),
                               f"first given at {self.clause_span(seen[key], span)}")
                continue
            seen[key] = clause
            if kind == "comment":
                token = clause.children[0]
                assert isinstance(token, Token)
                comment = self.string(token)
                continue
            value = _CLAUSES[kind](self, clause)
            if value is not None:
                fields[key] = value
        if "syn" in fields:
            if "tcp_flags" in fields:
                self.out.error("E0304", "`syn` and `flags` both set tcp flags",
                               self.clause_span(seen["tcp_flags"], span))
            fields["tcp_flags"] = fields.pop("syn")
        action = self.action(action_tree)
        self.imply_family(fields, seen, span)
        self.resolve_icmp_type(fields, seen, span)
        if len(self.out.items) > errors_before or action is None:
            return _FAILED
        match = ir.Match(**fields)  # type: ignore[arg-type]
        return ir.Rule(match=match, statements=tuple(statements), action=action,
                       comment=comment, span=span)

    def imply_family(self, fields: dict[str, object], seen: dict[str, Tree[Token]],
                     span: Span) -> None:
        proto = fields.get("proto")
        if not isinstance(proto, Protocol) or proto.negated or proto.number not in (ICMP, ICMPV6):
            return
        implied = Family.IP if proto.number == ICMP else Family.IP6
        given = fields.get("family")
        if isinstance(given, Family) and given is not implied:
            other = "icmpv6" if proto.number == ICMP else "icmp"
            version = {Family.IP: "IPv4", Family.IP6: "IPv6"}
            self.out.error("E0306", f"`{proto.name}` is {version[implied]} only, but the rule "
                           f"says `family {given.value}`", self.clause_span(seen["family"], span),
                           f"for {version[given]} use `{other}`")
        fields["family"] = implied

    def resolve_icmp_type(
        self, fields: dict[str, object], seen: dict[str, Tree[Token]], rule_span: Span
    ) -> None:
        pending = fields.pop("icmp_type", None)
        if pending is None:
            return
        assert isinstance(pending, tuple)
        negated, tokens = pending
        proto = fields.get("proto")
        number = proto.number if isinstance(proto, Protocol) else None
        if number not in (ICMP, ICMPV6):
            self.out.error("E0305", "`type` needs `icmp` or `icmpv6` before it",
                           self.clause_span(seen["icmp_type"], rule_span))
            return
        family = Family.IP if number == ICMP else Family.IP6
        table = ICMP_TYPES if number == ICMP else ICMPV6_TYPES
        values = []
        for token in tokens:
            if token.type == "INT":
                value = _number(token)
            elif token in table:
                value = table[token]
            else:
                close = difflib.get_close_matches(str(token), list(table), n=1)
                notes = [f"did you mean {close[0]}?"] if close else ["or give the type number"]
                self.out.error("E0311", f"unknown {'icmp' if number == ICMP else 'icmpv6'} "
                               f"type {token!s}", self.span(token), *notes)
                continue
            if value > 255:
                self.out.error("E0311", f"icmp type {token!s} is out of range (0-255)",
                               self.span(token))
                continue
            values.append(value)
        if len(values) == len(tokens):
            fields["icmp_type"] = IcmpType(family, tuple(values), negated)

    # ------------------------------------------------------------------ clauses
    def neg(self, token: Token | Tree[Token] | None) -> bool:
        return token is not None

    def addresses(self, tree: Tree[Token]) -> AddressSet | None:
        neg, value = tree.children[-2:]
        assert isinstance(value, Tree)
        inner = value.children[0]
        if isinstance(inner, Token) and inner.type in ("IPV4", "IPV6"):
            # One address, most often written once.
            try:
                return AddressSet((Prefix.parse(str(inner)),), neg is not None)
            except ValueError:
                pass  # the general path below says why
        key = _value_key("address", neg is not None, inner)
        if key is not None and (known := self.ctx.values.get(key)) is not None:
            assert isinstance(known, AddressSet)
            return known
        errors_before = len(self.out.items)
        result = self.lower_addresses(neg is not None, value)
        if key is not None and result is not None and len(self.out.items) == errors_before:
            self.ctx.values[key] = result
        return result

    def lower_addresses(self, negated: bool, value: Tree[Token]) -> AddressSet | None:
        errors_before = len(self.out.items)
        prefixes = []
        atoms = self.atoms(value)
        if atoms is None:
            return None
        for atom in atoms:
            text = str(atom.token)
            if atom.token.type not in ("IPV4", "IPV6"):
                self.out.error("E0303", f"expected an address, got {text}", atom.span,
                               *atom.notes)
                continue
            try:
                prefixes.append(Prefix.parse(text))
            except ValueError as exc:
                self.out.error("E0301", f"invalid address {text}", atom.span,
                               *_address_hint(text, exc), *atom.notes)
        if not prefixes:
            if len(self.out.items) == errors_before:
                self.out.error("E0310", "empty address set: the rule could never match",
                               self.span(value), *self.variable_notes(value))
            return None
        return AddressSet(tuple(prefixes), negated)

    def ports(self, tree: Tree[Token]) -> PortSet | None:
        neg, value = tree.children[-2:]
        assert isinstance(value, Tree)
        key = _value_key("port", neg is not None, value.children[0])
        if key is not None and (known := self.ctx.values.get(key)) is not None:
            assert isinstance(known, PortSet)
            return known
        errors_before = len(self.out.items)
        result = self.lower_ports(neg is not None, value)
        if key is not None and result is not None and len(self.out.items) == errors_before:
            self.ctx.values[key] = result
        return result

    def lower_ports(self, negated: bool, value: Tree[Token]) -> PortSet | None:
        errors_before = len(self.out.items)
        ranges = []
        atoms = self.atoms(value)
        if atoms is None:
            return None
        for atom in atoms:
            port_range = self.port_range(atom)
            if port_range is not None:
                ranges.append(port_range)
        if not ranges:
            if len(self.out.items) == errors_before:
                self.out.error("E0310", "empty port set: the rule could never match",
                               self.span(value), *self.variable_notes(value))
            return None
        return PortSet(tuple(ranges), negated)

    def variable_notes(self, value: Tree[Token]) -> list[str]:
        """Where the $variables of a value are defined (for errors about the whole value)."""
        tokens = list(value.scan_values(lambda v: isinstance(v, Token) and v.type == "VAR"))
        return [f"{t!s} is defined at {self.ctx.defines[t[1:]][1]}" for t in tokens
                if t[1:] in self.ctx.defines]

    def port_range(self, atom: _Atom) -> tuple[int, int] | None:
        token = atom.token
        if token.type == "INT":
            texts = [str(token)] * 2
        elif token.type == "RANGE":
            texts = str(token).split("-")
        else:
            self.out.error("E0303", f"expected a port, got {token!s}", atom.span, *atom.notes)
            return None
        low, high = (_number(t) for t in texts)
        if high > MAX_PORT or low > MAX_PORT:
            shown = texts[1] if high > MAX_PORT else texts[0]
            self.out.error("E0302", f"port {shown} is out of range (0-65535)", atom.span,
                           *atom.notes)
            return None
        if low > high:
            self.out.error("E0302", f"port range {token!s} is reversed", atom.span,
                           f"did you mean {high}-{low}?", *atom.notes)
            return None
        return (low, high)

    def port_atom(self, tree: Tree[Token]) -> tuple[int, int] | None:
        token = tree.children[0]
        assert isinstance(token, Token)
        return self.port_range(_Atom(token, self.span(token)))

    def interface(self, tree: Tree[Token]) -> Interface | None:
        neg, iface = tree.children
        assert isinstance(iface, Tree)
        token = iface.children[0]
        assert isinstance(token, Token)
        name = self.string(token) if token.type == "STRING" else str(token)
        bad = sorted({c for c in name if c in _BAD_IFNAME_CHARS or not c.isprintable()})
        if not name or bad or "+" in name[:-1] or name in (".", ".."):
            self.out.error("E0313", f"invalid interface name {name!r}", self.span(token),
                           "interface names have no spaces, quotes, '/' or ':'; "
                           "'+' only at the end as a wildcard")
            return None
        if too_long := ifname_too_long(name):
            self.out.error("E0313", too_long[0], self.span(token), *too_long[1:])
            return None
        return Interface(name, self.neg(neg))

    def names(self, tree: Tree[Token]) -> list[Token]:
        return [t for t in tree.children if isinstance(t, Token)]

    def ct_state(self, tree: Tree[Token]) -> CtStates | None:
        neg, name_list = tree.children
        assert isinstance(name_list, Tree)
        states = set()
        for token in self.names(name_list):
            try:
                states.add(CtState(str(token)))
            except ValueError:
                self.out.error("E0301", f"unknown conntrack state {token!s}", self.span(token),
                               "use " + ", ".join(s.value for s in CtState))
        return CtStates(frozenset(states), self.neg(neg)) if states else None

    def tcp_flags(self, tree: Tree[Token]) -> TcpFlags | None:
        neg, value_list, mask_list = tree.children
        assert isinstance(value_list, Tree) and isinstance(mask_list, Tree)
        value, mask = self.flag_set(value_list), self.flag_set(mask_list)
        if value is None or mask is None:
            return None
        if not value <= mask:
            missing = ",".join(f.value for f in TcpFlag if f in value - mask)
            self.out.error("E0301", "tcp flags before `/` must be among the flags after it",
                           self.span(tree), f"{missing} is tested only if it is after `/` too",
                           "e.g. `flags syn / syn,rst`: SYN set, RST clear")
            return None
        return TcpFlags(value, mask, self.neg(neg))

    def flag_set(self, tree: Tree[Token]) -> frozenset[TcpFlag] | None:
        flags = set()
        for token in self.names(tree):
            if token == "none":  # `flags none / syn`: SYN clear
                continue
            try:
                flags.add(TcpFlag(str(token).lower()))
            except ValueError:
                self.out.error("E0301", f"unknown tcp flag {token!s}", self.span(token),
                               "use " + ", ".join(f.value for f in TcpFlag))
                return None
        return frozenset(flags)

    def mark_value(self, tree: Tree[Token]) -> tuple[int, int] | None:
        tokens = [t for t in tree.children if isinstance(t, Token)]
        numbers = [_number(t) for t in tokens]
        value, mask = numbers[0], (numbers[1] if len(numbers) > 1 else MAX_MARK)
        if value > MAX_MARK or mask > MAX_MARK:
            self.out.error("E0312", "mark is out of range (32 bits)", self.span(tree))
            return None
        if value & ~mask:
            self.out.error("E0312", f"mark {value:#x} has bits outside its mask {mask:#x}",
                           self.span(tree))
            return None
        return value, mask

    def clause_proto_name(self, tree: Tree[Token]) -> Protocol:
        return _PROTOCOL_NAMED[str(tree.children[0])]

    def clause_proto(self, tree: Tree[Token]) -> Protocol | None:
        neg, token = tree.children
        assert isinstance(token, Token)
        if token.type == "INT" and _number(token) <= 255:
            return Protocol(_number(token), self.neg(neg))
        if token in PROTOCOLS:
            return Protocol(PROTOCOLS[token], self.neg(neg))
        self.out.error("E0301", f"unknown protocol {token!s}", self.span(token),
                       "use a name (" + ", ".join(PROTOCOLS) + ") or a number 0-255")
        return None

    def clause_family(self, tree: Tree[Token]) -> Family | None:
        token = tree.children[0]
        assert isinstance(token, Token)
        if token not in ("ip", "ip6"):
            self.out.error("E0301", f"unknown family {token!s}", self.span(token),
                           "a rule's family is ip or ip6")
            return None
        return _FAMILIES[token]

    def clause_addr_type(self, tree: Tree[Token]) -> AddrType | None:
        _, neg, token = tree.children
        assert isinstance(token, Token)
        try:
            return AddrType(AddrTypeKind(str(token).lower()), self.neg(neg))
        except ValueError:
            self.out.error("E0301", f"unknown address type {token!s}", self.span(token),
                           "use " + ", ".join(k.value for k in AddrTypeKind))
            return None

    def clause_icmp_type(self, tree: Tree[Token]) -> tuple[bool, list[Token]]:
        neg, types = tree.children
        assert isinstance(types, Tree)
        tokens = [t for t in types.children if isinstance(t, Token) and t.type in ("NAME", "INT")]
        return self.neg(neg), tokens  # resolved once the rule's protocol is known

    def clause_mark(self, tree: Tree[Token]) -> Mark | None:
        _, neg, value = tree.children
        assert isinstance(value, Tree)
        parsed = self.mark_value(value)
        return Mark(parsed[0], parsed[1], self.neg(neg)) if parsed else None

    def clause_limit(self, tree: Tree[Token]) -> Limit | None:
        rate, unit, burst = tree.children
        assert isinstance(rate, Token) and isinstance(unit, Token)
        if unit not in _UNITS:
            self.out.error("E0314", f"unknown rate unit {unit!s}", self.span(unit),
                           "use second, minute, hour or day")
            return None
        if _number(rate) < 1:
            self.out.error("E0314", "a rate limit needs a rate of at least 1", self.span(rate))
            return None
        burst_value = _number(burst) if isinstance(burst, Token) else 5
        if not 1 <= burst_value <= 10000:
            assert isinstance(burst, Token)
            self.out.error("E0314", f"burst {burst!s} is out of range (1-10000)",
                           self.span(burst))
            return None
        return Limit(_number(rate), _UNITS[unit], burst_value)

    # ------------------------------------------------------------------ actions
    def log(self, tree: Tree[Token]) -> ir.Log:
        prefix: str | None = None
        level: ir.LogLevel | None = None
        for option in tree.children[1:]:  # after the `log` keyword
            assert isinstance(option, Tree)
            token = option.children[0]
            assert isinstance(token, Token)
            if option.data == "log_prefix":
                prefix = self.string(token)
            elif token in _LEVELS:
                level = _LEVELS[token]
            else:
                self.out.error("E0301", f"unknown log level {token!s}", self.span(token),
                               "use " + ", ".join(_LEVELS))
        return ir.Log(prefix, level)

    def nat_target(self, tree: Tree[Token]) -> tuple[Prefix, tuple[int, int] | None] | None:
        # `IPV6` alone (no brackets, no port) has one child; the other forms two.
        address, port = (*tree.children, None)[:2]
        assert isinstance(address, Token)
        try:
            prefix = Prefix.parse(str(address))
        except ValueError as exc:
            self.out.error("E0301", f"invalid address {address!s}", self.span(address),
                           *_address_hint(str(address), exc))
            return None
        if not prefix.is_host:
            self.out.error("E0301", "a NAT target is one address, not a network",
                           self.span(address))
            return None
        if len(tree.children) == 1 and (split := _port_suffix(str(address))):
            # 2001:db8::1:8080 is an address, but reads as an address and a port.
            host, number = split
            self.out.error("E0319", f"NAT target {address!s} is ambiguous", self.span(address),
                           f"for address {host} and port {number} write [{host}]:{number}; "
                           f"for the address alone write [{address!s}]")
            return None
        ports = self.nat_ports(port) if isinstance(port, Tree) else None
        if isinstance(port, Tree) and ports is None:
            return None
        return prefix, ports

    def nat_ports(self, tree: Tree[Token]) -> tuple[int, int] | None:
        """A port or range to translate to: port 0 is refused, since nothing answers there."""
        ports = self.port_atom(tree)
        if ports is not None and ports[0] == 0:
            self.out.error("E0302", "cannot translate to port 0", self.span(tree),
                           *NAT_PORT_0_NOTES)
            return None
        return ports

    def action(self, tree: Tree[Token]) -> ir.Action | None:
        kind = tree.data
        if kind in _SIMPLE_ACTIONS:
            return _SIMPLE_ACTIONS[kind]()
        children = tree.children[1:]  # after the action keyword
        if kind == "reject":
            token = children[0]
            if token is None:
                return ir.Reject()
            assert isinstance(token, Token)
            if token not in _REJECT:
                self.out.error("E0301", f"unknown reject type {token!s}", self.span(token),
                               "use " + ", ".join(_REJECT))
                return None
            return ir.Reject(_REJECT[token])
        if kind in ("jump", "goto"):
            token = children[0]
            assert isinstance(token, Token)
            if not _CHAIN_NAME.match(token):
                self.out.error("E0210", f"invalid chain name {token!s}", self.span(token))
                return None
            return ir.Jump(str(token)) if kind == "jump" else ir.Goto(str(token))
        if kind == "log":
            return self.log(tree)
        if kind in ("dnat", "snat"):
            target_tree = children[0]
            assert isinstance(target_tree, Tree)
            target = self.nat_target(target_tree)
            if target is None:
                return None
            return ir.Dnat(*target) if kind == "dnat" else ir.Snat(*target)
        if kind == "redirect":
            port_tree = children[0]
            assert isinstance(port_tree, Tree)
            ports = self.nat_ports(port_tree)
            return ir.Redirect(ports) if ports else None
        if kind == "set_mss":
            token = children[0]
            assert isinstance(token, Token)
            if not 1 <= _number(token) <= 65535:
                self.out.error("E0302", f"mss {token!s} is out of range (1-65535)",
                               self.span(token))
                return None
            return ir.SetMss(_number(token))
        if kind == "set_mark":
            value_tree = children[0]
            assert isinstance(value_tree, Tree)
            parsed = self.mark_value(value_tree)
            return ir.SetMark(*parsed) if parsed else None
        raise AssertionError(f"unhandled action {kind}")


class _Callbacks(threading.local):
    """What Lark calls as it reduces a grammar rule (its inline transformer), forwarded to the
    lowering of the file being parsed: includes parse a file inside another. Lark's parser is
    shared, so which lowering is active is kept per thread."""

    def __init__(self) -> None:
        self.active: list[_Lowering] = []

    def define(self, children: list[Token | Tree[Token]]) -> None:
        self.active[-1].define(children)

    def include(self, children: list[Token]) -> None:
        self.active[-1].include(children)

    def docker(self, children: list[Token | Tree[Token]]) -> None:
        self.active[-1].docker(children)

    def table_head(self, children: list[Token | None]) -> None:
        self.active[-1].table_head(children)

    def table(self, children: list[int | None]) -> None:
        self.active[-1].table(children)

    def chain_head(self, children: list[Token | None]) -> int:
        return self.active[-1].chain_head(children)

    def chain(self, children: list[object]) -> int:
        return self.active[-1].chain(children)

    def rule(self, children: list[Tree[Token]]) -> object:
        return self.active[-1].rule(children)


_CALLBACKS = _Callbacks()


# `docker { network x { ... } }` nests blocks in blocks; the grammar allows any depth, but the
# Docker model's lowering walks them recursively, and needs a few levels.
MAX_BLOCK_DEPTH = 16


def _nested_too_deep(tree: Tree[Token]) -> Token | None:
    """The keyword of the first statement whose block nests deeper than MAX_BLOCK_DEPTH in a
    `docker` block, found without recursion; None if there is none."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        for child in node.children:
            if isinstance(child, Tree):
                inner = depth + (child.data == "docker_body")
                if inner > MAX_BLOCK_DEPTH:
                    return _edge_token(node, 0)
                stack.append((child, inner))
    return None


def _value_tokens(inner: Token | Tree[Token]) -> list[Token]:
    """The tokens of a value: itself, or a set's atoms."""
    if isinstance(inner, Token):
        return [inner]
    tokens = [atom.children[0] for atom in inner.children if isinstance(atom, Tree)]
    assert all(isinstance(t, Token) for t in tokens)
    return tokens  # type: ignore[return-value]


def _value_key(kind: str, negated: bool,
               inner: Token | Tree[Token]) -> tuple[object, ...] | None:
    """What a value lowers to depends only on how it is written (a $variable cannot be
    redefined), so its lowering is kept under this key: the atoms' types and texts. Port
    values are few; address values only if they use a variable (a literal address set is
    usually written once, and keeping it would only cost memory)."""
    if isinstance(inner, Token):  # most values: one token
        if kind == "address" and inner.type != "VAR":
            return None
        return (kind, negated, inner.type, str(inner))
    written = tuple((t.type, str(t)) for t in _value_tokens(inner))
    if kind == "address" and not any(t == "VAR" for t, _ in written):
        return None
    return (kind, negated, written)


def _edge_token(node: Tree[Token] | Token, end: int) -> Token | None:
    """The first (end=0) or last (end=-1) token under `node`, without recursion."""
    stack: list[Tree[Token] | Token | None] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, Token):
            return item
        if isinstance(item, Tree):
            children = item.children if end == -1 else list(reversed(item.children))
            stack.extend(children)
    return None


def _number(token: str) -> int:
    """A decimal or 0x number; past 30 digits, a value out of every range (Python's int()
    refuses very long digit strings)."""
    digits = token.lower().removeprefix("0x").lstrip("0")
    if len(digits) > 30:
        return 10**30
    return int(token, 16) if token.lower().startswith("0x") else int(token)


def _port_suffix(text: str) -> tuple[str, str] | None:
    """(address, port) if an unbracketed IPv6 NAT target also reads as `address:port`: the
    text before its last `:` is an IPv6 address and the text after it a decimal port."""
    host, _, number = text.rpartition(":")
    if not number.isdigit():
        return None
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return None
    return host, number


def _address_hint(text: str, exc: ValueError) -> list[str]:
    if "host bits set" in str(exc):
        return [f"did you mean {ipaddress.ip_network(text, strict=False)}?"]
    address, _, _length = text.partition("/")
    v6 = ":" in address
    try:
        (ipaddress.IPv6Address if v6 else ipaddress.IPv4Address)(address)
    except ValueError as specific:
        # ipaddress says e.g. "Octet 300 (> 255) not permitted in '10.0.300.1'".
        reason = re.sub(r" in '[^']*'\Z", "", str(specific))
        return [reason[:1].lower() + reason[1:]]
    return [f"an {'IPv6' if v6 else 'IPv4'} prefix length is 0-{128 if v6 else 32}"]


_SIMPLE_ACTIONS: dict[str, Callable[[], ir.Action]] = {
    "accept": ir.Accept, "drop": ir.Drop, "return_": ir.Return,
    "masquerade": ir.Masquerade, "clamp_mss": ir.ClampMss,
}

_CLAUSE_LABEL = {
    "proto": "the protocol", "saddr": "the source address", "daddr": "the destination address",
    "sport": "the source port", "dport": "the destination port", "iifname": "the input interface",
    "oifname": "the output interface", "ct_state": "ct state", "tcp_flags": "tcp flags",
    "icmp_type": "the icmp type", "mark": "the mark", "limit": "the rate limit",
    "comment": "the comment", "family": "the family", "src_type": "the source address type",
    "dst_type": "the destination address type", "ct_orig_dport": "ct original dport",
}

_CLAUSES: dict[str, Callable[[_Lowering, Tree[Token]], object]] = {
    "proto_name": _Lowering.clause_proto_name,
    "proto": _Lowering.clause_proto,
    "family": _Lowering.clause_family,
    "saddr": _Lowering.addresses,
    "daddr": _Lowering.addresses,
    "src_type": _Lowering.clause_addr_type,
    "dst_type": _Lowering.clause_addr_type,
    "sport": _Lowering.ports,
    "dport": _Lowering.ports,
    "ct_orig_dport": _Lowering.ports,
    "iifname": _Lowering.interface,
    "oifname": _Lowering.interface,
    "ct_state": _Lowering.ct_state,
    "tcp_flags": _Lowering.tcp_flags,
    "syn": lambda self, tree: TcpFlags(frozenset({TcpFlag.SYN}), _SYN_MASK),
    "icmp_type": _Lowering.clause_icmp_type,
    "mark": _Lowering.clause_mark,
    "limit": _Lowering.clause_limit,
}


__all__ = ["RulecError", "parse_files", "parse_text"]
