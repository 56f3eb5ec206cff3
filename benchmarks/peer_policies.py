"""The enterprise allow-list of `enterprise_policy.py`, written for rulec's peers and as the
set-based ideal nft script: the inputs `benchmarks/peers.py` times and loads.

Every writer expresses the same first-match policy: established/related accepted first, the
terms in order (one rule or term per (term, protocol); deny terms drop every packet from their
/32), then drop. With comments on, every rule carries its term's name.

- ferm: one `domain ip table filter chain INPUT` block; services, server groups and shared
  source groups are `@def` arrays (ferm expands an address array into one rule per address,
  as rulec -O0 does); port lists use `mod multiport destination-ports`; comments are
  `mod comment comment "tNNNNN"`.
- Aerleon: a `.pol` policy plus `.net`/`.svc` definitions; one policy file per target
  (`speedway` for iptables-restore input, `nftables inet` for an `ip` table). Aerleon names
  each term (its chain name, so names survive without comments too); with comments on, each
  term also gets `comment:: "tNNNNN"`. Two deliberate differences: Aerleon applies every
  listed port to every listed protocol, so a udp term with an extra tcp port becomes two
  Aerleon terms (`tNNNNN` and `tNNNNN-udp`); and Aerleon's accepts add `ct state new`
  (`-m state --state NEW,ESTABLISHED,RELATED`), which only also refuses INVALID/UNTRACKED
  packets that the other tools would accept. Its nftables generator emits the
  established/related rule itself, so that policy omits the established term.
- ideal: see `ideal_nft`.
"""

from __future__ import annotations

import bisect
import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass

from enterprise_policy import SERVER_GROUPS, SERVICES, Policy, Term, term_rules

Port = int | tuple[int, int]


def _ports_of(term: Term, proto: str) -> list[str]:
    """The term's port list for one protocol, as names of SERVICES plus its extra tcp port."""
    names = [s for s in term.services if SERVICES[s][0] == proto]
    return names + ([str(term.extra_tcp_port)]
                    if proto == "tcp" and term.extra_tcp_port is not None else [])


# ------------------------------------------------------------------------------ ferm


def _ferm_port(port: Port) -> str:
    return f"{port[0]}:{port[1]}" if isinstance(port, tuple) else str(port)


def to_ferm(policy: Policy, comments: bool = True) -> str:
    lines = [f"@def ${name} = ({' '.join(members)});" for name, members in SERVER_GROUPS.items()]
    lines += [f"@def ${name} = ({' '.join(members)});" for name, members in policy.groups.items()]
    lines += [f"@def ${name} = ({' '.join(map(_ferm_port, ports))});"
              for name, (_, ports) in SERVICES.items()]
    lines += ["domain ip table filter chain INPUT {", "  policy DROP;",
              "  mod conntrack ctstate (ESTABLISHED RELATED) ACCEPT;"]
    for term in policy.terms:
        comment = f' mod comment comment "{term.name}"' if comments else ""
        source = f"${term.group}" if term.group else term.sources[0]
        if term.deny:
            lines.append(f"  saddr {source}{comment} DROP;")
            continue
        to = f" daddr ${term.destination}" if term.destination else ""
        for proto, ports in term_rules(term):
            if len(ports) == 1 and not isinstance(ports[0], tuple):
                match = f"dport {ports[0]}"
            else:
                names = [f"${p}" if not p.isdigit() else p for p in _ports_of(term, proto)]
                match = f"mod multiport destination-ports ({' '.join(names)})"
            lines.append(f"  saddr {source}{to} proto {proto} {match}{comment} ACCEPT;")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ Aerleon


def _aerleon_port(port: Port, proto: str) -> str:
    text = f"{port[0]}-{port[1]}" if isinstance(port, tuple) else str(port)
    return f"{text}/{proto}"


def _token(name: str) -> str:
    return name.upper()


def aerleon_definitions(policy: Policy) -> dict[str, str]:
    """def/*.net and def/*.svc: every address and port list a term names."""
    nets: list[str] = []

    def define(name: str, members: tuple[str, ...]) -> None:
        nets.append(f"{_token(name)} = {members[0]}")
        nets.extend(f"    {m}" for m in members[1:])

    for name, members in (*SERVER_GROUPS.items(), *policy.groups.items()):
        define(name, members)
    for term in policy.terms:
        if term.group is None:
            define(f"src_{term.name}", term.sources)
    svcs: list[str] = []
    for name, (proto, ports) in SERVICES.items():
        svcs.append(f"{_token(name)} = {_aerleon_port(ports[0], proto)}")
        svcs.extend(f"    {_aerleon_port(p, proto)}" for p in ports[1:])
    for term in policy.terms:
        if term.extra_tcp_port is not None:
            svcs.append(f"{_token('port_' + term.name)} = {term.extra_tcp_port}/tcp")
    return {"def/networks.net": "\n".join(nets) + "\n",
            "def/services.svc": "\n".join(svcs) + "\n"}


def to_aerleon(policy: Policy, target: str, comments: bool = True) -> str:
    """The .pol file for `target`: "speedway" (iptables-restore) or "nftables"."""
    if target == "speedway":
        out = ["header {", "  target:: speedway INPUT DROP", "}",
               "term established {", "  option:: established", "  action:: accept", "}"]
    elif target == "nftables":
        out = ["header {", "  target:: nftables inet INPUT", "}"]
    else:
        raise ValueError(target)
    for term in policy.terms:
        source = _token(term.group or f"src_{term.name}")
        common = [f'  comment:: "{term.name}"'] if comments else []
        common.append(f"  source-address:: {source}")
        if term.deny:
            out += [f"term {term.name} {{", *common, "  action:: deny", "}"]
            continue
        if term.destination:
            common.append(f"  destination-address:: {_token(term.destination)}")
        for k, (proto, _) in enumerate(term_rules(term)):
            ports = [_token(p if not p.isdigit() else "port_" + term.name)
                     for p in _ports_of(term, proto)]
            name = term.name if k == 0 else f"{term.name}-{proto}"
            out += [f"term {name} {{", *common, f"  protocol:: {proto}",
                    f"  destination-port:: {' '.join(ports)}", "  action:: accept", "}"]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ the ideal

ANY = (0, 2**32 - 1)


def _interval(prefix: str) -> tuple[int, int]:
    net = ipaddress.IPv4Network(prefix)
    return int(net.network_address), int(net.broadcast_address)


def _subtract(span: tuple[int, int], holes: list[int]) -> list[tuple[int, int]]:
    """`span` without the addresses in `holes` (sorted, inside span)."""
    out, low = [], span[0]
    for hole in holes:
        if low < hole:
            out.append((low, hole - 1))
        low = hole + 1
    if low <= span[1]:
        out.append((low, span[1]))
    return out


@dataclass(frozen=True, slots=True)
class Ideal:
    """The policy as two set lookups: `deny` hosts dropped first, then `allow` elements
    (source span, destination span, protocol, port span) -> the names of the terms behind
    each element, first the one that gives it its meaning."""

    deny: dict[int, str]
    allow: dict[tuple[tuple[int, int], tuple[int, int], str, tuple[int, int]], list[str]]
    silent: tuple[str, ...]  # deny terms that only repeat the default drop: no element

    def verdicts(self) -> Callable[[int, int, str, int], bool]:
        """accepts(src, dst, proto, port), over elements indexed by source /24."""
        by_block: dict[int, list[tuple[tuple[int, int], tuple[int, int], str,
                                       tuple[int, int]]]] = {}
        wide = []
        for key in self.allow:
            lo, hi = key[0][0] >> 8, key[0][1] >> 8
            if hi - lo > 256:
                wide.append(key)
            for block in range(lo, hi + 1 if hi - lo <= 256 else lo):
                by_block.setdefault(block, []).append(key)

        def accepts(src: int, dst: int, proto: str, port: int) -> bool:
            if src in self.deny:
                return False
            return any(s[0] <= src <= s[1] and d[0] <= dst <= d[1] and p == proto
                       and q[0] <= port <= q[1]
                       for s, d, p, q in (*by_block.get(src >> 8, ()), *wide))
        return accepts


def build_ideal(policy: Policy) -> Ideal:
    """First match, rewritten as "deny set, then one allow set" without changing a verdict.

    A deny term for host h at position i only decides packets from h that no earlier term
    accepts. So: if no allow term before i covers h, every packet from h is dropped: h goes
    into the deny set, tested first. If some earlier allow term covers h, h cannot go first
    (it would drop what that term accepts); instead h is cut out of the sources of the allow
    terms *after* i, and the default drop does the rest. A deny covered by an earlier term and
    by no later one only repeats the default drop and leaves no trace. (On enterprise_policy's
    shape every deny host lies in a /24 that one earlier term allows, so the ideal has no deny
    set: putting those hosts in a drop-first set would refuse what the earlier term accepts.)

    The allow elements may then overlap only where one contains another (same source, same
    port, one destination "any"), and a concatenated interval set refuses overlaps, so
    contained and duplicate elements are folded into the element that contains them, keeping
    every term's name in its list.
    """
    # earliest allow position per source prefix: a host is covered before position i when
    # one of the 33 prefixes holding it was allowed before i
    first_allow: dict[tuple[int, int], int] = {}
    for position, term in enumerate(policy.terms):
        if not term.deny:
            for source in term.sources:
                net = ipaddress.IPv4Network(source)
                first_allow.setdefault((int(net.network_address), net.prefixlen), position)
    deny: dict[int, str] = {}
    carved: list[tuple[int, int]] = []  # (host, position) cut from later allows, sorted
    names: dict[int, str] = {}
    for position, term in enumerate(policy.terms):
        names[position] = term.name
        if not term.deny:
            continue
        host = _interval(term.sources[0])[0]
        earliest = min((first_allow.get((host & ~(2**(32 - n) - 1) & 0xFFFFFFFF, n), position)
                        for n in range(33)), default=position)
        if earliest < position:
            carved.append((host, position))
        elif host not in deny:
            deny[host] = term.name
    carved.sort()
    raw: dict[Key, list[str]] = {}
    used: set[tuple[int, int]] = set()
    for position, term in enumerate(policy.terms):
        if term.deny:
            continue
        destinations = ([_interval(d) for d in SERVER_GROUPS[term.destination]]
                        if term.destination else [ANY])
        for source in term.sources:
            span = _interval(source)
            lo = bisect.bisect_left(carved, (span[0], -1))
            hi = bisect.bisect_right(carved, (span[1], 2**62))
            cut = [(h, p) for h, p in carved[lo:hi] if p < position]
            used.update(cut)
            holes = sorted({h for h, _ in cut})
            for s in _subtract(span, holes):
                for d in destinations:
                    for proto, ports in term_rules(term):
                        for port in ports:
                            q = port if isinstance(port, tuple) else (port, port)
                            raw.setdefault((s, d, proto, q), []).append(term.name)
    silent = tuple(names[p] for h, p in carved if (h, p) not in used)
    return Ideal(deny, _disjoint(raw), silent)


Key = tuple[tuple[int, int], tuple[int, int], str, tuple[int, int]]


Named = tuple[tuple[int, int], list[str]]  # a source span and the terms behind it


def _union(spans: list[Named]) -> list[Named]:
    """Overlapping spans merged (adjacent ones kept apart: one element per source keeps one
    name per element), with the names of every span merged in."""
    out: list[Named] = []
    for (lo, hi), names in sorted(spans):
        if out and lo <= out[-1][0][1]:
            (plo, phi), pnames = out[-1]
            out[-1] = ((plo, max(phi, hi)), pnames + names)
        else:
            out.append(((lo, hi), list(names)))
    return out


def _disjoint(raw: dict[Key, list[str]]) -> dict[Key, list[str]]:
    """The allow elements without overlaps (a concatenated interval set refuses them; all are
    accepts, so a union is exact). Per (protocol, port): sources with the same destination are
    merged where they overlap, and the part of a server-group element that an any-destination
    element already covers is folded into that element. Server groups are disjoint, and no two
    port values of this shape overlap, so what is left is disjoint."""
    grouped: dict[tuple[str, tuple[int, int]], dict[tuple[int, int], list[Named]]] = {}
    for (s, d, proto, q), names in raw.items():
        grouped.setdefault((proto, q), {}).setdefault(d, []).append((s, names))
    out: dict[Key, list[str]] = {}
    for (proto, q), by_dst in grouped.items():
        wide = _union(by_dst.pop(ANY, []))
        starts = [span[0] for span, _ in wide]
        for d, spans in by_dst.items():
            for (lo, hi), names in _union(spans):
                k = max(0, bisect.bisect_right(starts, lo) - 1)
                holes: list[tuple[int, int]] = []
                while k < len(wide) and wide[k][0][0] <= hi:
                    (wlo, whi), wnames = wide[k]
                    if whi >= lo:
                        holes.append((max(lo, wlo), min(hi, whi)))
                        wnames.extend(names)
                    k += 1
                low = lo
                for hlo, hhi in holes:
                    if low < hlo:
                        out[((low, hlo - 1), d, proto, q)] = names
                    low = hhi + 1
                if low <= hi:
                    out[((low, hi), d, proto, q)] = names
        for span, names in wide:
            out[(span, ANY, proto, q)] = names
    return out


def _addr(n: int) -> str:
    return str(ipaddress.IPv4Address(n))


def _span(span: tuple[int, int]) -> str:
    lo, hi = span
    size = hi - lo + 1
    if size & (size - 1) == 0 and lo % size == 0:
        return f"{_addr(lo)}/{32 - size.bit_length() + 1}"
    return f"{_addr(lo)}-{_addr(hi)}"


def _names(names: list[str]) -> str:
    """Term names for an element comment, inside nft's 128-byte comment limit."""
    unique = list(dict.fromkeys(names))
    text = " ".join(unique)
    if len(text) <= 127:
        return text
    kept: list[str] = []
    for name in unique:
        if len(" ".join([*kept, name])) + 8 > 127:
            break
        kept.append(name)
    return " ".join(kept) + f" +{len(unique) - len(kept)}"


def ideal_nft(ideal: Ideal, comments: bool = True) -> str:
    """The ideal as an nft script: a ct state rule, a deny-set rule (only if some deny needs
    one), and one lookup in a concatenated interval set
    `ip saddr . ip daddr . meta l4proto . th dport` (nft 1.0.6 on this kernel loads this
    four-field concatenation with intervals, and element comments)."""

    def element(key: str, names: list[str]) -> str:
        return f'{key} comment "{_names(names)}"' if comments else key

    allow = [element(f"{_span(s)} . {_span(d)} . {p} . "
                     f"{q[0] if q[0] == q[1] else f'{q[0]}-{q[1]}'}", names)
             for (s, d, p, q), names in sorted(ideal.allow.items())]
    deny = [element(_addr(h), [name]) for h, name in sorted(ideal.deny.items())]
    out = ["table ip ideal {", "  set allow {",
           "    type ipv4_addr . ipv4_addr . inet_proto . inet_service",
           "    flags interval", "    elements = {", "      " + ",\n      ".join(allow),
           "    }", "  }"]
    if deny:
        out += ["  set deny {", "    type ipv4_addr", "    elements = {",
                "      " + ",\n      ".join(deny), "    }", "  }"]
    out += ["  chain INPUT {", "    type filter hook input priority 0; policy drop;",
            "    ct state established,related accept"]
    if deny:
        out.append("    ip saddr @deny drop")
    out += ["    ip saddr . ip daddr . meta l4proto . th dport @allow accept", "  }", "}"]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ checking


def first_match(policy: Policy) -> Callable[[int, int, str, int], bool]:
    """The policy's verdict for a new packet, term by term (True: accepted)."""
    groups = {name: [_interval(m) for m in members] for name, members in SERVER_GROUPS.items()}
    terms = [([_interval(s) for s in t.sources], t.deny,
              groups[t.destination] if t.destination else [ANY],
              [(p, [q if isinstance(q, tuple) else (q, q) for q in ports])
               for p, ports in term_rules(t)])
             for t in policy.terms]

    def verdict(src: int, dst: int, proto: str, port: int) -> bool:
        for sources, deny, destinations, rules in terms:
            if not any(lo <= src <= hi for lo, hi in sources):
                continue
            if deny:
                return False
            if not any(lo <= dst <= hi for lo, hi in destinations):
                continue
            if any(p == proto and any(lo <= port <= hi for lo, hi in ports)
                   for p, ports in rules):
                return True
        return False
    return verdict


def check_ideal(policy: Policy, ideal: Ideal, probes: int = 300, seed: int = 5) -> int:
    """Compare the ideal with first match on packets aimed at the policy's terms (their
    sources, every deny host, the listed ports and the ports next to them); return the
    number of probes, raise AssertionError on the first disagreement."""
    rnd = random.Random(seed)
    expected, got = first_match(policy), ideal.verdicts()
    deny_hosts = [_interval(t.sources[0])[0] for t in policy.terms if t.deny]
    dsts = [_interval(m)[0] + 1 for ms in SERVER_GROUPS.values() for m in ms] + [0x08080808]
    ports = sorted({q for _, ps in SERVICES.values() for p in ps
                    for q in ((p[0], p[1], p[1] + 1) if isinstance(p, tuple) else (p, p + 1))})
    for _ in range(probes):
        term = rnd.choice(policy.terms)
        if deny_hosts and rnd.random() < 0.3:
            src = rnd.choice(deny_hosts)
        else:
            lo, hi = _interval(rnd.choice(term.sources))
            src = rnd.randint(lo, hi)
        extra = [term.extra_tcp_port] if term.extra_tcp_port else []
        packet = (src, rnd.choice(dsts), rnd.choice(("tcp", "udp")),
                  rnd.choice(ports + extra * 4))
        if expected(*packet) != got(*packet):
            raise AssertionError(f"ideal disagrees with first match on {packet}")
    return probes


def tricky_policy(terms: int = 400, seed: int = 2) -> Policy:
    """enterprise_policy's shape plus the deny cases its generator never makes: a deny
    before the only term that allows its host (must go in the drop-first set), and one between
    two terms allowing its shared group (must be cut from the later term only)."""
    from enterprise_policy import generate

    base = generate(terms, seed)
    group = next(t for t in base.terms if t.group)
    later = next(t for t in reversed(base.terms) if not t.group and not t.deny)
    host = later.sources[0].replace(".0/24", ".7/32")
    group_host = group.sources[0].replace(".0/24", ".9/32")
    out = [Term("d0", (host,), None, (), None, None, deny=True)]
    for t in base.terms:
        out.append(t)
        if t is group:
            out.append(Term("d1", (group_host,), None, (), None, None, deny=True))
            out.append(Term("a1", t.sources, t.group, ("web", "dns"), 10, None))
    return Policy(tuple(out), base.groups)
