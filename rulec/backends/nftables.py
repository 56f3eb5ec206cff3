"""The `nft` backend: one `nft -f` transaction that replaces only rulec's own tables.

It prints the tree of rulec.backends.nft.tree as nft text and decides nothing: how an
expression is spelled follows from the expression and, for literals, the type of what it is
compared with (a mark is hex, an interface name quoted), as in nft's own listing.
"""

from __future__ import annotations

from typing import Any

from rulec.backends.base import Artifact, Backend, EmitOptions
from rulec.backends.nft.check import lower
from rulec.backends.nft.tree import ChainTree, Expr, Json, Script, TableTree, to_tree
from rulec.backends.nft.vocabulary import HEADER, LIMITS
from rulec.ir.nodes import Ruleset

__all__ = ["LIMITS", "NftBackend", "lower", "print_script"]

# Literal types that are not spelled plainly: what a literal is compared with decides.
_STRING, _MARK, _FLAGS, _PLAIN = "string", "mark", "flags", "plain"
Kind = str | tuple["Kind", ...]  # a tuple for the fields of a concatenation

_DEFAULT_BURST = 5  # nft's, for a packet rate; printed only when different
_IMPLICIT_OPS = {"==": "", "in": "", "!=": "!= ", "!": "! "}


class NftBackend(Backend):
    name = "nft"
    limits = LIMITS

    def emit(self, ruleset: Ruleset, options: EmitOptions) -> Artifact:
        return Artifact(target=self.name, text=print_script(to_tree(ruleset, self.limits)),
                        load_command=("nft", "-f", "-"))


def print_script(script: Script) -> str:
    """The script: one atomic transaction."""
    # Declaring first makes the delete valid when the table does not exist yet.
    prologue = [HEADER, "# replace every rulec-* table, in one transaction"]
    for owned in script.owned:
        ident = f"{owned['family']} {owned['name']}"
        prologue += [f"table {ident}", f"delete table {ident}"]
    tables = "\n\n".join("\n".join(_table(table)) for table in script.tables)
    return "\n".join(prologue) + "\n" + ("\n" + tables + "\n" if tables else "")


def _table(table: TableTree) -> list[str]:
    lines = [f"table {table.table['family']} {table.table['name']} {{"]
    for declaration in table.sets:
        lines.extend(_set_declaration(declaration))
    for chain in table.chains:
        lines.extend(_chain(chain))
    lines.append("}")
    return lines


def _set_declaration(declaration: Json) -> list[str]:
    kind = declaration["type"]  # a list of types for a concatenation
    spelled = " . ".join(kind) if isinstance(kind, list) else kind
    lines = [f"\tset {declaration['name']} {{", f"\t\ttype {spelled}"]
    if "flags" in declaration:
        lines.append(f"\t\tflags {', '.join(declaration['flags'])}")
    items = ", ".join(_expr(e, _set_kind(kind)) for e in declaration["elem"])
    lines += [f"\t\telements = {{ {items} }}", "\t}"]
    return lines


def _set_kind(kind: str | list[str]) -> Kind:
    if isinstance(kind, list):
        return tuple(_set_kind(k) for k in kind)
    return {"ifname": _STRING, "mark": _MARK}.get(kind, _PLAIN)


def _chain(chain: ChainTree) -> list[str]:
    head = chain.chain
    lines = [f"\tchain {head['name']} {{"]
    if "hook" in head:
        lines.append(f"\t\ttype {head['type']} hook {head['hook']} priority {head['prio']}; "
                     f"policy {head['policy']};")
    lines.extend("\t\t" + rule_text(rule) for rule in chain.rules)
    lines.append("\t}")
    return lines


def rule_text(rule: Json) -> str:
    """A rule's expressions in order, then its comment."""
    parts = [_statement(item) for item in rule["expr"]]
    if "comment" in rule:
        parts.append("comment " + _quote(rule["comment"]))
    return " ".join(parts)


def _quote(text: str) -> str:
    # The tree holds only text that tree.text() accepted: no `"`, nothing unprintable.
    return f'"{text}"'


def _kind(left: Expr) -> Kind:
    """How literals compared with (or assigned to) `left` are spelled."""
    match _split(left):
        case ("meta", {"key": "iifname" | "oifname"}):
            return _STRING
        case ("meta", {"key": "mark"}):
            return _MARK
        case ("payload", {"protocol": "tcp", "field": "flags"}):
            return _FLAGS
        case ("&" | "|" | "^", [inner, _]):
            return _kind(inner)
        case ("concat", fields):
            return tuple(_kind(f) for f in fields)
        case _:
            return _PLAIN


def _split(e: Expr) -> tuple[str, Any]:
    """An object of libnftables JSON, which has exactly one key, as (key, body); a literal
    as ("", itself)."""
    if isinstance(e, dict) and len(e) == 1:
        ((key, body),) = e.items()
        return key, body
    return "", e


def _expr(e: Expr, kind: Kind = _PLAIN) -> str:
    """An expression: a key (left of a match, or what a statement sets) or a value."""
    match e:
        case bool():
            raise ValueError(f"no nft spelling for {e!r}")
        case int() if kind == _MARK:
            return f"{e:#010x}"
        case int() if kind == _FLAGS:
            return str(e) if e else "0x0"
        case int():
            return str(e)
        case str() if kind == _STRING:
            return _quote(e)
        case str():
            return e
        case list():  # flags or states, as one value
            return ",".join(_expr(item, kind) for item in e)
    match _split(e):
        case ("meta", {"key": "iifname" | "oifname" as key}):
            return str(key)
        case ("meta", {"key": key}):
            return f"meta {key}"
        case ("payload", {"protocol": protocol, "field": field}):
            return f"{protocol} {field}"
        case ("ct", {"key": key, "dir": direction}):
            return f"ct {direction} {key}"
        case ("ct", {"key": key}):
            return f"ct {key}"
        case ("fib", {"result": result, "flags": flags}):
            return f"fib {' . '.join(flags)} {result}"
        case ("rt", {"key": key}):
            return f"rt {key}"
        case ("tcp option", {"name": name, "field": field}):
            return f"tcp option {name} {field}"
        case ("&" | "|" | "^" as op, [left, right]):
            return f"{_expr(left, kind)} {op} {_expr(right, _kind(left))}"
        case ("prefix", {"addr": address, "len": length}):
            return f"{address}/{length}"
        case ("range", [low, high]):
            return f"{_expr(low, kind)}-{_expr(high, kind)}"
        case ("set", items):
            return "{ " + ", ".join(_expr(item, kind) for item in items) + " }"
        case ("concat", fields):
            kinds = kind if isinstance(kind, tuple) else (kind,) * len(fields)
            return " . ".join(_expr(f, k) for f, k in zip(fields, kinds, strict=True))
        case ("elem", {"val": value, "comment": comment}):
            return f"{_expr(value, kind)} comment {_quote(comment)}"
        case _:
            raise ValueError(f"no nft spelling for {e!r}")


def _match(op: str, left: Expr, right: Expr) -> str:
    kind = _kind(left)
    value = _expr(right, kind)
    match _split(left):
        case ("&", [key, list() as mask]):  # `tcp flags syn / syn,ack`, as nft lists it
            return f"{_expr(key)} {_IMPLICIT_OPS[op]}{value} / {_expr(mask, kind)}"
        case ("&", _):
            # 1.0.6 cannot parse `/` followed by a single flag; a masked test states its op.
            return f"{_expr(left)} {op} {value}"
        case _:
            return f"{_expr(left)} {_IMPLICIT_OPS[op]}{value}"


def _statement(item: Json) -> str:
    match _split(item):
        case ("match", {"op": op, "left": left, "right": right}):
            return _match(op, left, right)
        case ("counter", None):
            return "counter"
        case ("limit", {"rate": rate, "burst": burst, "per": per}):
            tail = "" if burst == _DEFAULT_BURST else f" burst {burst} packets"
            return f"limit rate {rate}/{per}{tail}"
        case ("log", options):
            return _log(options or {})
        case ("reject", None):
            return "reject"
        case ("reject", {"type": kind, **rest}):
            return f"reject with {kind}" + (f" {rest['expr']}" if "expr" in rest else "")
        case ("dnat" | "snat" as kind, target):
            return kind + _nat_to(target)
        case ("masquerade", None):
            return "masquerade"
        case ("masquerade" | "redirect" as kind, {"port": port}):
            return f"{kind} to :{_expr(port)}"
        case ("mangle", {"key": key, "value": value}):
            return f"{_expr(key)} set {_expr(value, _kind(key))}"
        case ("vmap", {"key": key, "data": {"set": entries}}):
            kind = _kind(key)
            items = ", ".join(f"{_expr(element, kind)} : {_verdict(verdict)}"
                              for element, verdict in entries)
            return f"{_expr(key)} vmap {{ {items} }}"
        case _:
            return _verdict(item)


def _verdict(item: Json) -> str:
    match _split(item):
        case ("jump" | "goto" as kind, {"target": target}):
            return f"{kind} {target}"
        case ("accept" | "drop" | "return" as kind, None):
            return kind
        case _:
            raise ValueError(f"no nft spelling for {item!r}")


def _log(options: Json) -> str:
    text = "log"
    if "prefix" in options:
        text += " prefix " + _quote(options["prefix"])
    if "level" in options:
        text += f" level {options['level']}"
    return text


def _nat_to(target: Json) -> str:
    family = f" {target['family']}" if "family" in target else ""
    address = target["addr"]
    if "port" in target:
        if ":" in address:  # an IPv6 address before a port needs brackets
            address = f"[{address}]"
        address += ":" + _expr(target["port"])
    return f"{family} to {address}"
