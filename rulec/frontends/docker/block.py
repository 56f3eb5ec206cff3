"""The DSL's `docker { ... }` block -> DockerHost. The grammar only knows statements of words
(`NAME arg* [{ ... }]`); this module gives them their meaning and reports bad ones with spans.

    docker {
      version "20.10.24"              # or `layout current|classic`; default 29.x
      userland-proxy off              # also: ip6tables, experimental, allow-direct-routing,
                                      #   ip-forward-no-drop
      network apps {
        bridge br-apps                # default: docker0 for `bridge`, else the network name
        subnet 172.18.0.0/16 gateway 172.18.0.1
        subnet fd00:18::/64
        icc off                       # internal, masquerade off, snat ADDRESS,
        gateway-mode routed           #   gateway-mode [ipv4|ipv6] nat|routed|nat-unprotected
      }
      container web {
        network apps 172.18.0.2 fd00:18::2
        publish "8080:80" "127.0.0.1:5353:53/udp"
      }
    }
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lark import Token, Tree

from rulec.diagnostics import Collector, SourceFile, Span
from rulec.frontends.docker.model import (
    Attachment,
    Container,
    Daemon,
    DockerHost,
    GatewayMode,
    Layout,
    Network,
    PortProto,
    Published,
    Subnet,
    Version,
)
from rulec.ir.values import Family, Prefix

_ESCAPE = re.compile(r"\\(.)")
_SWITCH = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False}
# `ipv6` is the older spelling of `ip6tables` (it means dockerd's ip6tables setting).
_DAEMON = {"userland-proxy": "userland_proxy", "ip6tables": "ip6tables", "ipv6": "ip6tables",
           "experimental": "experimental", "allow-direct-routing": "allow_direct_routing",
           "ip-forward-no-drop": "ip_forward_no_drop"}
_PORTS = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?\Z")


@dataclass
class _Statement:
    keyword: str
    args: list[Token]
    body: list[_Statement] | None
    span: Span  # the keyword
    whole: Span  # the keyword and its arguments
    arg_spans: list[Span] = field(default_factory=list)


def lower_block(tree: Tree[Token], source: SourceFile, out: Collector) -> DockerHost:
    """One `docker { ... }` block; errors go to `out` (the host is still returned)."""
    lowering = _Lowering(source, out)
    statements = lowering.statements(tree.children)
    first = _first_token(tree)
    span = source.span(first.start_pos or 0, (first.end_pos or 0)) if first else None
    return lowering.host(statements, span)


def _first_token(tree: Tree[Token]) -> Token | None:
    for child in tree.children:
        if isinstance(child, Token):
            return child
        if isinstance(child, Tree):
            found = _first_token(child)
            if found is not None:
                return found
    return None


class _Lowering:
    def __init__(self, source: SourceFile, out: Collector) -> None:
        self.source = source
        self.out = out

    def token_span(self, token: Token) -> Span:
        return self.source.span(token.start_pos or 0, token.end_pos or 0)

    def statements(self, children: Sequence[Tree[Token] | Token | None]) -> list[_Statement]:
        result = []
        for child in children:
            if not isinstance(child, Tree) or child.data != "docker_stmt":
                continue
            keyword, *rest = child.children
            assert isinstance(keyword, Token)
            body_tree = rest.pop() if rest else None
            args = []
            for arg in rest:
                assert isinstance(arg, Tree)
                token = arg.children[0]
                assert isinstance(token, Token)
                args.append(token)
            body = self.statements(body_tree.children) if isinstance(body_tree, Tree) else None
            span = self.token_span(keyword)
            last = args[-1] if args else keyword
            whole = self.source.span(keyword.start_pos or 0, last.end_pos or 0)
            result.append(_Statement(str(keyword), args, body, span, whole,
                                     [self.token_span(a) for a in args]))
        return result

    def text(self, token: Token) -> str:
        if token.type == "STRING":
            return _ESCAPE.sub(r"\1", str(token)[1:-1])
        return str(token)

    # ------------------------------------------------------------------ helpers
    def arity(self, stmt: _Statement, low: int, high: int, usage: str) -> bool:
        count = len(stmt.args)
        if low <= count <= high and stmt.body is None:
            return True
        self.out.error("E0703", f"`{stmt.keyword}` expects {usage}", stmt.whole)
        return False

    def switch(self, stmt: _Statement, default: bool | None = None) -> bool | None:
        if not stmt.args and default is not None and stmt.body is None:
            return default
        if not self.arity(stmt, 1, 1, "on or off"):
            return None
        word = self.text(stmt.args[0]).lower()
        if word not in _SWITCH:
            self.out.error("E0703", f"`{stmt.keyword}` is on or off, not {word!r}",
                           stmt.arg_spans[0])
            return None
        return _SWITCH[word]

    def address(self, token: Token, span: Span, what: str, *, host: bool = True) -> Prefix | None:
        text = self.text(token)
        try:
            prefix = Prefix.parse(text)
        except ValueError as exc:
            self.out.error("E0703", f"{what} {text!r} is not valid: {exc}", span)
            return None
        if host and not prefix.is_host:
            self.out.error("E0703", f"{what} must be one address, not the network {prefix}",
                           span)
            return None
        return prefix

    def unknown(self, stmt: _Statement, where: str, known: list[str]) -> None:
        self.out.error("E0703", f"unknown setting `{stmt.keyword}` in {where}", stmt.span,
                       "known here: " + ", ".join(known))

    # ------------------------------------------------------------------ the block
    def host(self, statements: list[_Statement], span: Span | None) -> DockerHost:
        settings: dict[str, Any] = {}
        origins: dict[str, Span] = {}
        networks: list[Network] = []
        containers: list[Container] = []
        for stmt in statements:
            if stmt.keyword in ("network", "container"):
                if stmt.body is None or len(stmt.args) != 1:
                    self.out.error("E0703", f"`{stmt.keyword}` expects a name and a block",
                                   stmt.whole, f"e.g. `{stmt.keyword} NAME {{ ... }}`")
                elif stmt.keyword == "network":
                    networks.append(self.network(self.text(stmt.args[0]), stmt))
                else:
                    containers.append(self.container(self.text(stmt.args[0]), stmt))
                continue
            if stmt.keyword not in ("layout", "version", *_DAEMON):
                self.unknown(stmt, "docker", ["version", "layout", *_DAEMON, "network",
                                              "container"])
                continue
            name = _DAEMON.get(stmt.keyword, stmt.keyword)
            value = self.setting(stmt)
            if value is None:
                continue
            if name in settings:
                self.out.error("E0707", f"`{stmt.keyword}` is set twice", stmt.whole,
                               f"first set at {origins[name]}")
            settings[name] = value
            origins[name] = stmt.whole
        daemon = Daemon(span=span, origins=tuple(origins.items()), **settings)
        return DockerHost(daemon=daemon, networks=tuple(networks),
                          containers=tuple(containers), span=span)

    def setting(self, stmt: _Statement) -> Any:
        """The value of a daemon setting (`layout`, `version`, a switch), or None if bad."""
        if stmt.keyword == "layout":
            if not self.arity(stmt, 1, 1, "current or classic"):
                return None
            word = self.text(stmt.args[0])
            try:
                return Layout(word)
            except ValueError:
                self.out.error("E0703", f"unknown layout {word!r}", stmt.arg_spans[0],
                               "use current (Docker 29) or classic (Docker 20.10-27)")
                return None
        if stmt.keyword == "version":
            if not self.arity(stmt, 1, 1, 'a Docker version, e.g. "20.10.24" or 29'):
                return None
            word = self.text(stmt.args[0])
            version = Version.parse(word, stmt.arg_spans[0])
            if version is None:
                self.out.error("E0703", f"{word!r} is not a Docker version", stmt.arg_spans[0],
                               'e.g. "20.10.24" or 29')
            return version
        return self.switch(stmt)

    def network(self, name: str, block: _Statement) -> Network:
        assert block.body is not None
        span = block.arg_spans[0]
        bridge = "docker0" if name == "bridge" else name
        bridge_span = span
        subnets: list[Subnet] = []
        snat: list[Prefix] = []
        flags: dict[str, object] = {}
        for stmt in block.body:
            key = stmt.keyword
            if key == "bridge":
                if self.arity(stmt, 1, 1, "an interface name"):
                    bridge = self.text(stmt.args[0])
                    bridge_span = stmt.arg_spans[0]
            elif key == "subnet":
                subnet = self.subnet(stmt)
                if subnet is not None:
                    subnets.append(subnet)
            elif key in ("icc", "masquerade", "internal"):
                value = self.switch(stmt, default=True if key == "internal" else None)
                if value is not None:
                    flags[key] = value
            elif key == "snat":
                if self.arity(stmt, 1, 2, "an address per family"):
                    for token, arg_span in zip(stmt.args, stmt.arg_spans, strict=True):
                        address = self.address(token, arg_span, "snat address")
                        if address is not None:
                            snat.append(address)
            elif key == "gateway-mode":
                self.gateway_mode(stmt, flags)
            else:
                self.unknown(stmt, f"network {name}", ["bridge", "subnet", "icc", "internal",
                                                       "masquerade", "snat", "gateway-mode"])
        return Network(name=name, bridge=bridge, subnets=tuple(subnets), snat=tuple(snat),
                       span=span, bridge_span=bridge_span, **flags)  # type: ignore[arg-type]

    def subnet(self, stmt: _Statement) -> Subnet | None:
        args = stmt.args
        if not (len(args) in (1, 3) and stmt.body is None) or (
                len(args) == 3 and self.text(args[1]) != "gateway"):
            self.out.error("E0703", "`subnet` expects a prefix and optionally `gateway ADDRESS`",
                           stmt.whole, "e.g. `subnet 172.18.0.0/16 gateway 172.18.0.1`")
            return None
        prefix = self.address(args[0], stmt.arg_spans[0], "subnet", host=False)
        gateway = self.address(args[2], stmt.arg_spans[2], "gateway") if len(args) == 3 else None
        if prefix is None:
            return None
        return Subnet(prefix=prefix, gateway=gateway, span=stmt.arg_spans[0])

    def gateway_mode(self, stmt: _Statement, flags: dict[str, object]) -> None:
        if not self.arity(stmt, 1, 2, "[ipv4|ipv6] nat|routed|nat-unprotected"):
            return
        words = [self.text(a) for a in stmt.args]
        targets = ["gateway_mode_v4", "gateway_mode_v6"]
        if len(words) == 2:
            if words[0] not in ("ipv4", "ipv6"):
                self.out.error("E0703", f"expected ipv4 or ipv6, not {words[0]!r}",
                               stmt.arg_spans[0])
                return
            targets = ["gateway_mode_v4" if words[0] == "ipv4" else "gateway_mode_v6"]
        try:
            mode = GatewayMode(words[-1])
        except ValueError:
            self.out.error("E0703", f"unknown gateway mode {words[-1]!r}", stmt.arg_spans[-1],
                           "use nat, routed or nat-unprotected")
            return
        for target in targets:
            flags[target] = mode

    def container(self, name: str, block: _Statement) -> Container:
        assert block.body is not None
        attachments: list[Attachment] = []
        published: list[Published] = []
        for stmt in block.body:
            if stmt.keyword == "network":
                if self.arity(stmt, 1, 3, "a network name and its addresses"):
                    addresses = [a for a in (
                        self.address(token, arg_span, "address")
                        for token, arg_span in zip(stmt.args[1:], stmt.arg_spans[1:],
                                                   strict=True)) if a is not None]
                    attachments.append(Attachment(network=self.text(stmt.args[0]),
                                                  addresses=tuple(addresses), span=stmt.whole))
            elif stmt.keyword == "publish":
                if self.arity(stmt, 1, 64, '"[HOST:]HOSTPORT:PORT[/PROTO]"'):
                    for token, arg_span in zip(stmt.args, stmt.arg_spans, strict=True):
                        port = self.publish(token, arg_span)
                        if port is not None:
                            published.append(port)
            else:
                self.unknown(stmt, f"container {name}", ["network", "publish"])
        return Container(name=name, attachments=tuple(attachments), published=tuple(published),
                         span=block.arg_spans[0])

    def publish(self, token: Token, span: Span) -> Published | None:
        """docker run -p syntax: [HOST:]HOSTPORT[-END]:PORT[-END][/tcp|udp|sctp]."""
        if token.type != "STRING":
            self.out.error("E0703", "write a published port as a string", span,
                           f'e.g. publish "{token!s}:{token!s}"')
            return None
        spec = self.text(token)
        body, _, proto_text = spec.partition("/")
        try:
            proto = PortProto(proto_text or "tcp")
        except ValueError:
            self.out.error("E0703", f"unknown protocol {proto_text!r} in {spec!r}", span,
                           "use tcp, udp or sctp")
            return None
        host: Prefix | None = None
        if body.startswith("["):  # [v6]:host:container
            address, bracket, rest = body[1:].partition("]")
            if not bracket or not rest.startswith(":"):
                self.out.error("E0703", f"bad published port {spec!r}", span,
                               'e.g. "[::1]:8080:80"')
                return None
            host = self.host_address(address, span)
            if host is None:
                return None
            parts = rest[1:].split(":")
        else:
            parts = body.split(":")
            if len(parts) == 3:
                host = self.host_address(parts[0], span)
                if host is None:
                    return None
                parts = parts[1:]
        if len(parts) != 2 or not parts[0]:
            self.out.error("E0703", f"published port {spec!r} needs a host port", span,
                           "rulec cannot know an ephemeral port; write HOSTPORT:PORT")
            return None
        ranges = [self.ports(part, spec, span) for part in parts]
        if ranges[0] is None or ranges[1] is None:
            return None
        return Published(host=host, host_ports=ranges[0], container_ports=ranges[1],
                         proto=proto, span=span)

    def host_address(self, text: str, span: Span) -> Prefix | None:
        try:
            prefix = Prefix.parse(text)
        except ValueError:
            self.out.error("E0703", f"host address {text!r} is not an address", span)
            return None
        if not prefix.is_host or (prefix.family is Family.INET):
            self.out.error("E0703", f"host address {text!r} is a network", span)
            return None
        return prefix

    def ports(self, text: str, spec: str, span: Span) -> tuple[int, int] | None:
        match = _PORTS.match(text)
        if match is None:
            self.out.error("E0703", f"{text!r} in {spec!r} is not a port or a range", span)
            return None
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if not 0 < low <= high <= 65535:
            self.out.error("E0703", f"port range {text!r} in {spec!r} is out of order or out "
                           "of range (1-65535)", span)
            return None
        return low, high
