"""Docker host frontend: a host model (DSL block or inspect JSON) -> dockerd's own chains,
merged with the operator's rules from the same compilation (DOCKER-USER, a mangle clamp).

model.py is the model, block.py (the DSL block) and state.py (JSON) the two ways in, expand.py
the pure expansion into IR tables; this module joins dockerd's tables with the operator's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rulec.diagnostics import Collector
from rulec.frontends.docker.expand import (
    DOCKER_CHAINS,
    DOCKER_HOOKS,
    DOCKER_USER,
    NFT_TABLE,
    Shape,
    expand,
    layout_problems,
)
from rulec.frontends.docker.model import (
    DockerHost,
    Layout,
    Profile,
    Version,
    check,
    merge_daemons,
    profile,
)
from rulec.frontends.docker.state import load_files
from rulec.ir.nodes import Chain, Rule, Ruleset, Table, TableKind, targets
from rulec.ir.values import Family

__all__ = ["DockerHost", "DockerOptions", "Layout", "Profile", "Shape", "Version", "apply",
           "expand", "generated", "profile"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DockerOptions:
    layout: Layout | None = None  # --docker-layout: overrides the block's `layout`
    shape: Shape = Shape.IPTABLES  # Shape.NFT for the nft targets
    coexist: bool = False  # --noflush: dockerd keeps its chains; only the operator's rules
    state_files: tuple[Path, ...] = ()  # `docker inspect` JSON (--docker-state)


def apply(ruleset: Ruleset, blocks: Sequence[DockerHost], options: DockerOptions,
          out: Collector) -> Ruleset:
    """The operator's ruleset with dockerd's tables merged in; errors go to `out` (and the
    ruleset is then returned unchanged)."""
    for extra in blocks[1:]:
        out.error("E0709", "a second Docker host model: another docker block", extra.span,
                  f"the first is at {blocks[0].span}; one host has one daemon")
    block = blocks[0] if blocks else None
    state = load_files(options.state_files, out) if options.state_files else None
    host = _combine(block, state, out)
    if host is None:
        return ruleset
    before = len([d for d in out.items if d.severity.value == "error"])
    layout_option = f"--docker-layout {options.layout.value}" if options.layout else None
    found = profile(host.daemon, options.layout, out, layout_option)
    if state is not None and (state.networks or state.containers) \
            and host.daemon.version is None and found is not None:
        out.warning("W0702", "the Docker version of this host is not known: rulec assumes "
                    f"{'27.x' if found.layout is Layout.CLASSIC else '29.x'}", state.span,
                    "add `docker version --format '{{json .}}'` output as another "
                    "--docker-state file (or `version` in a docker block): the version decides "
                    "the layout, ip6tables' default and the order of a container's ports")
    check(host, out)
    if found is not None:
        layout_problems(host, found.layout, out)
        _check_operator_chains(ruleset, found.layout, options, out)
        _check_docker_user(ruleset, found, out)
    if found is None or len([d for d in out.items if d.severity.value == "error"]) > before:
        return ruleset
    entry = ruleset.entry_points | {DOCKER_USER}
    if options.coexist:  # dockerd's chains stay as dockerd wrote them
        return replace(ruleset, entry_points=entry)
    shape = options.shape if found.layout is Layout.CURRENT else Shape.IPTABLES
    docker = expand(host, found, shape)
    if any(t.name == NFT_TABLE for t in docker):
        return replace(_merge_nft(ruleset, docker), entry_points=entry)
    return replace(_merge(ruleset, docker), entry_points=entry)


def _combine(block: DockerHost | None, state: DockerHost | None,
             out: Collector) -> DockerHost | None:
    """One host from a docker block and the state files: networks and containers from one of
    them, daemon settings from both (they must agree, E0712)."""
    if block is None or state is None:
        return block or state
    if (block.networks or block.containers) and (state.networks or state.containers):
        out.error("E0709", "networks and containers come from the docker block and from "
                  "--docker-state", block.span, f"the state files start at {state.span}; "
                  "with --docker-state the docker block may set daemon options and the version")
        return None
    source = block if block.networks or block.containers else state
    return replace(source, daemon=merge_daemons(block.daemon, state.daemon, out))


def _check_docker_user(ruleset: Ruleset, found: Profile, out: Collector) -> None:
    """An IPv6 DOCKER-USER dockerd never jumps to would leave its rules unused (E0714)."""
    if found.ip6tables and found.ip6_docker_user:
        return
    for table in ruleset.tables:
        chain = table.chain(DOCKER_USER)
        if table.kind is not TableKind.FILTER or chain is None:
            continue
        if table.family is Family.IP:
            continue
        ip6 = [r for r in chain.rules if r.match.family in (None, Family.IP6)]
        if table.family is Family.INET:  # the rules an ip6 table would hold
            ip6 = list(_restrict_chain(replace(chain, rules=tuple(ip6)), Family.IP6).rules)
        if ip6:
            daemon = f"dockerd {found.version}" if found.version else "dockerd"
            if found.ip6tables:
                why, fix = ("it creates DOCKER-USER in iptables only",
                            "Docker 23.0 and later jump to it; before, filter IPv6 in FORWARD "
                            "(a full replace appends yours after dockerd's rules)")
            else:
                why, fix = ("it writes no ip6tables rules at all (ip6tables is off)",
                            "turn ip6tables on in daemon.json, or filter IPv6 in FORWARD")
            out.error("E0714", f"{daemon} never jumps to an IPv6 DOCKER-USER: {why}",
                      ip6[0].span or chain.span, "these rules would never run; " + fix)


def _check_operator_chains(ruleset: Ruleset, layout: Layout, options: DockerOptions,
                           out: Collector) -> None:
    """Chains dockerd owns cannot come from the operator (E0708)."""
    for table in ruleset.tables:
        owned = DOCKER_CHAINS[layout].get(table.kind, ())
        hooks = DOCKER_HOOKS[layout].get(table.kind, ()) if options.coexist else ()
        for chain in table.chains:
            if chain.name in owned or (options.shape is Shape.NFT and "__" in chain.name):
                out.error("E0708", f"chain {chain.name} belongs to dockerd", chain.span,
                          "the docker model generates it; put your rules into DOCKER-USER")
            elif chain.hook in hooks:
                out.error("E0708", f"with --noflush, declaring {chain.name} in "
                          f"{table.kind.value} would flush dockerd's rules in it", chain.span,
                          "leave dockerd's chains to it: filter forwarded traffic in "
                          "DOCKER-USER, or compile without --noflush to emit both")


def _merge(ruleset: Ruleset, docker: tuple[Table, ...]) -> Ruleset:
    """dockerd's tables with the operator's of the same kind and family folded in: built-in
    chains run dockerd's rules first (dockerd inserts its jumps at the top), DOCKER-USER holds
    the operator's, other operator chains follow dockerd's. An operator inet table turns the
    Docker tables of its kind into one inet table with per-rule families."""
    docker_tables = list(docker)
    rest: list[Table] = []
    for table in ruleset.tables:
        same = [t for t in docker_tables if t.kind is table.kind]
        if not same:
            rest.append(table)
            continue
        if table.family is Family.INET:
            merged_inet = _as_inet(table.kind, same)
            docker_tables = [t for t in docker_tables if t not in same]
            docker_tables.append(_fold(merged_inet, table))
            continue
        target = next((t for t in same if t.family is table.family), None)
        if target is None:
            rest.append(table)
            continue
        docker_tables[docker_tables.index(target)] = _fold(target, table)
    return replace(ruleset, tables=(*docker_tables, *rest))


def _as_inet(kind: TableKind, tables: list[Table]) -> Table:
    chains: dict[str, Chain] = {}
    for table in tables:
        for chain in table.chains:
            rules = tuple(replace(r, match=replace(r.match, family=table.family))
                          for r in chain.rules)
            if chain.name in chains:
                old = chains[chain.name]
                chains[chain.name] = replace(old, rules=old.rules + rules)
            else:
                chains[chain.name] = replace(chain, rules=rules)
    return Table(kind=kind, family=Family.INET, chains=tuple(chains.values()),
                 span=tables[0].span)


def _fold(docker: Table, operator: Table) -> Table:
    chains = {c.name: c for c in docker.chains}
    extra: list[Chain] = []
    for chain in operator.chains:
        mine = chains.get(chain.name)
        if mine is None:
            extra.append(chain)
        elif chain.name == DOCKER_USER:
            chains[chain.name] = chain
        else:  # a built-in chain (verify keeps user chains of dockerd's out, E0708)
            chains[chain.name] = replace(mine, rules=mine.rules + chain.rules,
                                         policy=chain.policy or mine.policy, span=chain.span)
    return replace(docker, chains=(*chains.values(), *extra), span=operator.span)


def _merge_nft(ruleset: Ruleset, docker: tuple[Table, ...]) -> Ruleset:
    """docker-bridges stays Docker's; the operator's DOCKER-USER (and what it jumps to) moves
    into its filter table, the rest of the operator's tables stay rulec-* tables."""
    docker_tables = list(docker)
    rest: list[Table] = []
    for table in ruleset.tables:
        if table.kind is not TableKind.FILTER or table.chain(DOCKER_USER) is None:
            rest.append(table)
            continue
        moved = _reachable(table, DOCKER_USER)
        for index, target in enumerate(docker_tables):
            if target.kind is TableKind.FILTER and table.family in (target.family, Family.INET):
                chains = [_restrict_chain(c, target.family) for c in table.chains
                          if c.name in moved]
                at = [c.name for c in target.chains].index(DOCKER_USER)
                kept = [c for c in target.chains if c.name != DOCKER_USER]
                docker_tables[index] = replace(
                    target, chains=(*kept[:at], *chains, *kept[at:]))
        left = [c for c in table.chains if c.name not in moved
                or c.name in _reachable_from_hooks(table, exclude=DOCKER_USER)]
        if left:
            rest.append(replace(table, chains=tuple(left)))
    return replace(ruleset, tables=(*docker_tables, *rest))


def _reachable(table: Table, start: str) -> set[str]:
    chains = {c.name: c for c in table.chains}
    seen, todo = {start}, [start]
    while todo:
        for rule in chains[todo.pop()].rules:
            for name in targets(rule.action):
                if name in chains and name not in seen:
                    seen.add(name)
                    todo.append(name)
    return seen


def _reachable_from_hooks(table: Table, exclude: str) -> set[str]:
    found: set[str] = set()
    for chain in table.chains:
        if chain.hook is not None:
            found |= _reachable(table, chain.name)
    return found - {exclude}


def _restrict_chain(chain: Chain, family: Family) -> Chain:
    """An inet chain's rules as an ip or ip6 table holds them (rules of the other family go)."""
    rules: list[Rule] = []
    for rule in chain.rules:
        m = rule.match
        if m.family is not None and m.family is not family:
            continue
        changes: dict[str, object] = {"family": None}
        keep = True
        for name in ("saddr", "daddr"):
            value = getattr(m, name)
            if value is None:
                continue
            only = value.restrict(family)
            if not only.prefixes:
                keep = keep and value.negated
                changes[name] = None
            else:
                changes[name] = only
        if keep:
            rules.append(replace(rule, match=replace(m, **changes)))  # type: ignore[arg-type]
    return replace(chain, rules=tuple(rules))


def generated(ruleset: Ruleset) -> bool:
    """Whether the ruleset holds dockerd's chains, whose exact shape the optimiser would
    change (it merges Docker's per-port rules), so the default pipeline leaves it alone."""
    return any(t.name == NFT_TABLE or (t.kind is TableKind.FILTER and any(
        c.name in ("DOCKER-FORWARD", "DOCKER-ISOLATION-STAGE-1") for c in t.chains))
        for t in ruleset.tables)
