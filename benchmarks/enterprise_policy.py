"""A generic enterprise allow-list, generated: the policy shape the optimiser and peer
benchmarks measure (benchmarks/peers.py, benchmarks/compile_scaling.py --shape enterprise).

Each term allows one source to one or two named service lists: ~90 % of terms a unique /24,
the rest one of N/50 shared groups of four /24s. ~10 % of the lists are udp-only (DNS, NTP,
SNMP); ~20 % of terms add one unique tcp port; ~30 % restrict the destination to one of three
server groups; ~2 % are deny terms for one /32 that lies inside some term's /24 (so order
matters, as in real policies). Established and related traffic is accepted first; the policy
drops the rest. `Policy` is the abstract form; `to_rulec` writes it as rulec DSL, other
writers (ferm, Aerleon) live beside their benchmark.

    python benchmarks/enterprise_policy.py 10000 [--no-comments] > policy.rules
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass

# name -> (protocol, ports or (low, high) ranges)
SERVICES: dict[str, tuple[str, tuple[int | tuple[int, int], ...]]] = {
    "web": ("tcp", (80, 443)),
    "mail": ("tcp", (25, 465, 587, 993)),
    "db": ("tcp", (3306, 5432)),
    "ssh": ("tcp", (22,)),
    "app": ("tcp", ((8000, 8099),)),
    "monitoring": ("tcp", (9090, 9100)),
    "dns": ("udp", (53,)),
    "ntp": ("udp", (123,)),
    "snmp": ("udp", (161, 162)),
}
TCP_LISTS = ("web", "mail", "db", "ssh", "app", "monitoring")
UDP_LISTS = ("dns", "ntp", "snmp")
# Three server groups a term may restrict its destination to.
SERVER_GROUPS: dict[str, tuple[str, ...]] = {
    "servers_a": ("192.0.2.0/26", "192.0.2.128/27"),
    "servers_b": ("198.51.100.0/25",),
    "servers_c": ("203.0.113.0/28", "203.0.113.64/28", "203.0.113.200/29"),
}


@dataclass(frozen=True, slots=True)
class Term:
    name: str
    sources: tuple[str, ...]  # prefixes, or the members of a shared group
    group: str | None  # the shared group's name, if the source is one
    services: tuple[str, ...]  # names in SERVICES
    extra_tcp_port: int | None
    destination: str | None  # a SERVER_GROUPS name
    deny: bool = False  # deny terms have one /32 source and no services


@dataclass(frozen=True, slots=True)
class Policy:
    terms: tuple[Term, ...]
    groups: dict[str, tuple[str, ...]]  # shared source groups used by the terms


def _unique_24(k: int) -> str:
    # 10.0.0.0/8, then 11.0.0.0/8: only ever loaded into a test namespace, never routed.
    return f"{10 + (k >> 16)}.{k >> 8 & 255}.{k & 255}.0/24"


def _group_24(k: int) -> str:
    return f"100.{64 + (k >> 8 & 63)}.{k & 255}.0/24"  # inside 100.64.0.0/10


def generate(terms: int, seed: int = 1) -> Policy:
    rnd = random.Random(seed)
    group_count = max(1, terms // 50)
    groups = {f"g{g:05d}": tuple(_group_24(4 * g + i) for i in range(4))
              for g in range(group_count)}
    out: list[Term] = []
    unique = 0
    extra_ports = iter(range(10000, 65536))
    for i in range(terms):
        name = f"t{i:05d}"
        if rnd.random() < 0.02 and unique:
            # A host inside some allowed /24: the deny must stay where it is written.
            host = _unique_24(rnd.randrange(unique)).replace(".0/24", f".{rnd.randrange(1, 255)}")
            out.append(Term(name, (host + "/32",), None, (), None, None, deny=True))
            continue
        if rnd.random() < 0.9:
            sources, group = (_unique_24(unique),), None
            unique += 1
        else:
            group = f"g{rnd.randrange(group_count):05d}"
            sources = groups[group]
        lists = UDP_LISTS if rnd.random() < 0.1 else TCP_LISTS
        services = tuple(sorted(rnd.sample(lists, rnd.choice((1, 2)))))
        extra = next(extra_ports) if rnd.random() < 0.2 else None
        destination = rnd.choice(tuple(SERVER_GROUPS)) if rnd.random() < 0.3 else None
        out.append(Term(name, sources, group, services, extra, destination))
    used = {t.group for t in out if t.group is not None}
    return Policy(tuple(out), {g: m for g, m in groups.items() if g in used})


def term_rules(term: Term) -> list[tuple[str, list[int | tuple[int, int]]]]:
    """(protocol, ports) per protocol the term allows, tcp first."""
    by_proto: dict[str, list[int | tuple[int, int]]] = {}
    for service in term.services:
        proto, ports = SERVICES[service]
        by_proto.setdefault(proto, []).extend(ports)
    if term.extra_tcp_port is not None:
        by_proto.setdefault("tcp", []).append(term.extra_tcp_port)
    return sorted(by_proto.items())


def _rulec_port(port: int | tuple[int, int]) -> str:
    return f"{port[0]}-{port[1]}" if isinstance(port, tuple) else str(port)


def to_rulec(policy: Policy, comments: bool = True) -> str:
    lines = [f"define {name} = {{ {', '.join(members)} }}"
             for name, members in SERVER_GROUPS.items()]
    lines += [f"define {name} = {{ {', '.join(members)} }}"
              for name, members in policy.groups.items()]
    lines += [f"define {name} = {{ {', '.join(map(_rulec_port, ports))} }}"
              for name, (_, ports) in SERVICES.items()]
    lines += ["table ip filter {", "  chain INPUT policy drop {",
              "    accept ct state established,related"]
    for term in policy.terms:
        comment = f' comment "{term.name}"' if comments else ""
        source = f"${term.group}" if term.group else term.sources[0]
        if term.deny:
            lines.append(f"    drop from {source}{comment}")
            continue
        to = f" to ${term.destination}" if term.destination else ""
        for proto, _ in term_rules(term):
            ports = [f"${s}" for s in term.services if SERVICES[s][0] == proto]
            if proto == "tcp" and term.extra_tcp_port is not None:
                ports.append(str(term.extra_tcp_port))
            port_text = ports[0] if len(ports) == 1 else "{ " + ", ".join(ports) + " }"
            lines.append(f"    accept {proto} dport {port_text} from {source}{to}{comment}")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("terms", type=int)
    options.add_argument("--no-comments", action="store_true")
    options.add_argument("--seed", type=int, default=1)
    args = options.parse_args()
    print(to_rulec(generate(args.terms, args.seed), not args.no_comments), end="")


if __name__ == "__main__":
    main()
