"""The reference evaluator: what a ruleset does to one packet. It is the specification the
passes and backends are tested against, so it is kept short and literal, never fast.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import assert_never

from rulec.diagnostics import Span
from rulec.ir import nodes as ir
from rulec.ir.values import (
    PORT_PROTOCOLS,
    TCP,
    AddrTypeKind,
    CtState,
    Family,
    Prefix,
    TcpFlag,
)


class Path(enum.Enum):
    """Where a packet comes from; where it goes is decided by routing after PREROUTING."""

    INCOMING = "incoming"  # arrives on `iif`: to this host (INPUT) or through it (FORWARD)
    LOCAL = "local"  # generated here: OUTPUT then POSTROUTING


@dataclass(frozen=True, slots=True, kw_only=True)
class Packet:
    """The header fields and context the rules can test; ports only for port protocols."""

    family: Family
    proto: int
    saddr: int
    daddr: int
    sport: int | None = None
    dport: int | None = None
    path: Path = Path.INCOMING
    iif: str | None = None
    oif: str | None = None
    ct_state: CtState = CtState.NEW
    ct_orig_dport: int | None = None  # defaults to dport: the connection's original port
    tcp_flags: frozenset[TcpFlag] = frozenset({TcpFlag.SYN})
    icmp_type: int | None = None
    mark: int = 0
    mss: int | None = None
    under_limit: bool = True  # whether every rate limit still has tokens for this packet
    holds: frozenset[str] = frozenset()  # the unmodelled conditions (ir.Unknown) that hold


@dataclass(frozen=True, slots=True, kw_only=True)
class Host:
    """The evaluating host: its addresses (for `type local`, routing and masquerade)."""

    local: frozenset[tuple[Family, int]] = frozenset()
    # Primary address per interface, for masquerade (out) and redirect (in).
    interface_addresses: tuple[tuple[str, Family, int], ...] = ()

    def address_of(self, interface: str | None, family: Family) -> int | None:
        return next((a for name, f, a in self.interface_addresses
                     if name == interface and f is family), None)


class Verdict(enum.Enum):
    ACCEPT = "accept"
    DROP = "drop"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Step:
    """A rule that matched (or a policy that applied), in the order they were met."""

    table: str
    chain: str
    index: int | None  # None: the chain's policy or its end
    action: str
    span: Span | None = field(default=None, compare=False)
    hook: ir.Hook | None = field(default=None, compare=False)  # the hook whose chain ran it


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    packet: Packet  # after NAT, mark and MSS rewrites
    delivered_locally: bool
    trace: tuple[Step, ...] = field(default=(), compare=False)
    rules_evaluated: int = field(default=0, compare=False)
    hooks: tuple[ir.Hook, ...] = field(default=(), compare=False)  # traversed, in order


# Table order within a hook is the base-chain priority: raw -300, mangle -150, nat (dnat)
# -100, filter 0, nat (snat) 100.
_HOOK_TABLES: dict[ir.Hook, tuple[ir.TableKind, ...]] = {
    ir.Hook.PREROUTING: (ir.TableKind.RAW, ir.TableKind.MANGLE, ir.TableKind.NAT),
    ir.Hook.INPUT: (ir.TableKind.MANGLE, ir.TableKind.FILTER, ir.TableKind.NAT),
    ir.Hook.FORWARD: (ir.TableKind.MANGLE, ir.TableKind.FILTER),
    ir.Hook.OUTPUT: (ir.TableKind.RAW, ir.TableKind.MANGLE, ir.TableKind.NAT,
                     ir.TableKind.FILTER),
    ir.Hook.POSTROUTING: (ir.TableKind.MANGLE, ir.TableKind.NAT),
}


class _Result(enum.Enum):
    CONTINUE = 0  # fell through or returned: next rule of the caller / the policy
    ACCEPT = 1
    DROP = 2
    REJECT = 3


@dataclass
class _Run:
    ruleset: ir.Ruleset
    host: Host
    packet: Packet
    trace: list[Step] = field(default_factory=list)
    evaluated: int = 0
    hooks: list[ir.Hook] = field(default_factory=list)

    def hook(self, hook: ir.Hook) -> _Result:
        self.hooks.append(hook)
        for kind in _HOOK_TABLES[hook]:
            # NAT chains only see the first packet of a connection.
            if kind is ir.TableKind.NAT and self.packet.ct_state is not CtState.NEW:
                continue
            for table in self.ruleset.tables:
                if table.kind is not kind or not _family_ok(table.family, self.packet.family):
                    continue
                chain = table.chain(hook.value)
                if chain is None:
                    continue
                result = self.base_chain(table, chain)
                if result in (_Result.DROP, _Result.REJECT):
                    return result
        return _Result.ACCEPT

    def base_chain(self, table: ir.Table, chain: ir.Chain) -> _Result:
        result = self.chain(table, chain)
        if result is not _Result.CONTINUE:
            return result
        policy = chain.policy or ir.Policy.ACCEPT
        self.trace.append(Step(table.kind.value, chain.name, None, f"policy {policy.value}",
                               hook=self.hooks[-1]))
        return _Result.ACCEPT if policy is ir.Policy.ACCEPT else _Result.DROP

    def chain(self, table: ir.Table, chain: ir.Chain) -> _Result:
        """Run a chain; a goto continues in the target and returns where this chain would."""
        current: ir.Chain | None = chain
        while current is not None:
            next_chain = None
            for index, rule in enumerate(current.rules):
                self.evaluated += 1
                if not self.matches(rule.match):
                    continue
                action = rule.action
                if isinstance(action, ir.Vmap):
                    hit = self.lookup(action)
                    if hit is None:  # no entry holds the key: the next rule
                        continue
                    action = hit
                step = Step(table.kind.value, current.name, index,
                            type(action).__name__.lower(), rule.span, self.hooks[-1])
                self.trace.append(step)  # statements (log, counter) change nothing visible
                if isinstance(action, ir.Goto):
                    next_chain = table.chain(action.target)
                    break
                result = self.action(table, action)
                if result is None:  # non-terminal: go on with the next rule
                    continue
                return result
            current = next_chain
        return _Result.CONTINUE

    def lookup(self, vmap: ir.Vmap) -> ir.MapVerdict | None:
        """The verdict of the first entry the packet's key matches (entries are disjoint)."""
        for values, verdict in vmap.entries:
            if self.matches(ir.keyed(ir.ANY, vmap.keys, values)):
                return verdict
        return None

    def action(self, table: ir.Table, action: ir.Action) -> _Result | None:
        p = self.packet
        match action:
            case ir.Accept():
                return _Result.ACCEPT
            case ir.Drop():
                return _Result.DROP
            case ir.Reject():
                return _Result.REJECT
            case ir.Return():
                return _Result.CONTINUE
            case ir.Jump(target=target):
                target_chain = table.chain(target)
                assert target_chain is not None, f"verified rulesets jump to chains: {target}"
                result = self.chain(table, target_chain)
                return None if result is _Result.CONTINUE else result
            case ir.Goto():
                raise AssertionError("goto is handled by chain()")
            case ir.Vmap():
                raise AssertionError("verdict maps are resolved by chain()")
            case ir.Log():
                return None
            case ir.SetMark(value=value, mask=mask):
                self.packet = replace(p, mark=(p.mark & ~mask & 0xFFFFFFFF) ^ value)
                return None
            case ir.SetMss(mss=mss):
                if p.mss is not None and p.mss > mss:
                    self.packet = replace(p, mss=mss)
                return None
            case ir.ClampMss():
                return None  # the path MTU is outside the model; the MSS is kept
            case ir.Dnat(address=address, ports=ports):
                self.packet = replace(p, daddr=address.network,
                                      dport=ports[0] if ports else p.dport)
                return _Result.ACCEPT
            case ir.Redirect(ports=ports):
                local = self.host.address_of(p.iif, p.family)
                self.packet = replace(p, daddr=local if local is not None else _loopback(p),
                                      dport=ports[0])
                return _Result.ACCEPT
            case ir.Snat(address=address, ports=ports):
                self.packet = replace(p, saddr=address.network,
                                      sport=ports[0] if ports else p.sport)
                return _Result.ACCEPT
            case ir.Masquerade(ports=ports):
                local = self.host.address_of(p.oif, p.family)
                if local is None:
                    return _Result.DROP  # no address to masquerade to: the kernel drops
                self.packet = replace(p, saddr=local, sport=ports[0] if ports else p.sport)
                return _Result.ACCEPT
            case _:
                assert_never(action)

    def matches(self, m: ir.Match) -> bool:
        p = self.packet
        if m.family is not None and m.family is not p.family:
            return False
        if m.proto is not None and (p.proto == m.proto.number) == m.proto.negated:
            return False
        if m.saddr is not None and not m.saddr.contains(p.family, p.saddr):
            return False
        if m.daddr is not None and not m.daddr.contains(p.family, p.daddr):
            return False
        for value, port in ((m.sport, p.sport), (m.dport, p.dport)):
            if value is not None and (port is None or not value.contains(port)):
                return False
        if m.iifname is not None and not m.iifname.matches(p.iif):
            return False
        if m.oifname is not None and not m.oifname.matches(p.oif):
            return False
        if m.ct_state is not None and (p.ct_state in m.ct_state.states) == m.ct_state.negated:
            return False
        if m.ct_orig_dport is not None and (
                p.ct_orig_dport is None or not m.ct_orig_dport.contains(p.ct_orig_dport)):
            return False
        for wanted, address in ((m.src_type, p.saddr), (m.dst_type, p.daddr)):
            if wanted is not None and (self.addr_type(address) is wanted.kind) == wanted.negated:
                return False
        if m.tcp_flags is not None and (p.proto != TCP or not m.tcp_flags.matches(p.tcp_flags)):
            return False
        if m.icmp_type is not None:
            if m.icmp_type.family is not p.family or p.icmp_type is None:
                return False
            if not m.icmp_type.contains(p.icmp_type):
                return False
        if m.mark is not None and ((p.mark & m.mark.mask) == m.mark.value) == m.mark.negated:
            return False
        if m.unknown is not None and not (m.unknown.holds <= p.holds
                                          and m.unknown.fails.isdisjoint(p.holds)):
            return False
        return m.limit is None or p.under_limit

    def addr_type(self, address: int) -> AddrTypeKind:
        family = self.packet.family
        if (family, address) in self.host.local:
            return AddrTypeKind.LOCAL
        multicast = Prefix(Family.IP, 0xE0000000, 4) if family is Family.IP else \
            Prefix(Family.IP6, 0xFF << 120, 8)
        if multicast.contains(family, address):
            return AddrTypeKind.MULTICAST
        if family is Family.IP and address == 0xFFFFFFFF:
            return AddrTypeKind.BROADCAST
        return AddrTypeKind.UNICAST


def _family_ok(table: Family, packet: Family) -> bool:
    return table is Family.INET or table is packet


def _loopback(p: Packet) -> int:
    return 0x7F000001 if p.family is Family.IP else 1


def matches(match: ir.Match, packet: Packet, host: Host = Host()) -> bool:
    """Whether one rule's match holds for a packet (on a host, for address types)."""
    return _Run(ir.Ruleset(), host, packet).matches(match)


def evaluate(ruleset: ir.Ruleset, packet: Packet, host: Host = Host()) -> Outcome:
    """Walk the hooks `packet` traverses and return what happens to it.

    Incoming: PREROUTING, then routing on the (possibly DNATed) destination: INPUT if it is
    one of `host.local`, else FORWARD then POSTROUTING. Local: OUTPUT then POSTROUTING.
    """
    if packet.proto not in PORT_PROTOCOLS and (packet.sport or packet.dport):
        raise ValueError("ports only exist for tcp, udp, sctp, udplite and dccp")
    if packet.ct_orig_dport is None:  # conntrack remembers the port from before any DNAT
        packet = replace(packet, ct_orig_dport=packet.dport)
    run = _Run(ruleset, host, packet)
    if packet.path is Path.INCOMING:
        result = run.hook(ir.Hook.PREROUTING)
        local = (run.packet.family, run.packet.daddr) in host.local
        if result is _Result.ACCEPT:
            after = (ir.Hook.INPUT,) if local else (ir.Hook.FORWARD, ir.Hook.POSTROUTING)
            for hook in after:
                result = run.hook(hook)
                if result is not _Result.ACCEPT:
                    break
    else:
        local = False
        result = _Result.ACCEPT
        for hook in (ir.Hook.OUTPUT, ir.Hook.POSTROUTING):
            result = run.hook(hook)
            if result is not _Result.ACCEPT:
                break
    verdict = {_Result.ACCEPT: Verdict.ACCEPT, _Result.DROP: Verdict.DROP,
               _Result.REJECT: Verdict.REJECT}[result]
    return Outcome(verdict, run.packet, local and verdict is Verdict.ACCEPT, tuple(run.trace),
                   run.evaluated, tuple(run.hooks))
