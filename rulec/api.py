"""Library entry points: parse a policy, verify it, and emit it for a target.

The compile path: parse -> ir.verify -> (provenance) -> verify against the target's limits
-> the backend's lowering and printing.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from rulec.backends import Artifact, EmitOptions, get_backend
from rulec.diagnostics import Diagnostic, RulecError, warning
from rulec.frontends import dsl
from rulec.ir.nodes import (
    Accept,
    Chain,
    Goto,
    Jump,
    Policy,
    Return,
    Rule,
    Ruleset,
    Table,
    map_rules,
)
from rulec.ir.values import Family
from rulec.ir.verify import verify, verify_texts
from rulec.passes import DEFAULT_PIPELINE, IMPORT_PIPELINE, PassContext, PassStats, run_pipeline

if TYPE_CHECKING:
    from rulec.analysis.diff import Diff
    from rulec.analysis.explain import Explanation
    from rulec.frontends.docker import DockerOptions
    from rulec.ir.evaluate import Host, Packet

TARGETS = ("iptables", "ip6tables", "nft", "nft-json")


@dataclass(frozen=True, slots=True)
class CompileResult:
    ruleset: Ruleset  # after the passes, before the backend's own lowering
    artifact: Artifact
    warnings: tuple[Diagnostic, ...]
    pass_stats: tuple[PassStats, ...] = ()
    # iptables/ip6tables with both_families: the other family's file (ip6tables/iptables).
    other_family: Artifact | None = None


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Compiling allocates millions of acyclic objects; the cyclic collector's full passes over
    them made compile time grow faster than linearly (2.3x per 2x rules at 40k)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_text(text: str, name: str = "<string>", *,
               docker: DockerOptions | None = None,
               warnings: list[Diagnostic] | None = None) -> Ruleset:
    """Parse DSL source text into a verified IR ruleset (RulecError on bad input)."""
    with paused_gc():
        ruleset = dsl.parse_text(text, name, docker, warnings)
        verify(ruleset)
    return ruleset


def parse_files(paths: Sequence[str | Path], *,
                docker: DockerOptions | None = None,
                warnings: list[Diagnostic] | None = None) -> Ruleset:
    """Parse one or more .rules files (their tables are merged, in order) into a verified IR.
    A Docker host model (`docker { ... }` or `docker.state_files`) becomes dockerd's chains."""
    with paused_gc():
        ruleset = dsl.parse_files([Path(p) for p in paths], docker, warnings)
        verify(ruleset)
    return ruleset


def docker_options(target: str, *, layout: str | None = None,
                   state: Sequence[str | Path] = (), noflush: bool = False) -> DockerOptions:
    """How a Docker host model compiles for `target`: nft targets get Docker 29's nftables
    shape, `noflush` is the coexist mode (only the operator's DOCKER-USER and mangle rules)."""
    from rulec.frontends.docker import DockerOptions, Layout, Shape

    if layout is not None and layout not in {m.value for m in Layout}:
        raise ValueError(f"unknown Docker layout {layout!r}; choose current or classic")
    return DockerOptions(layout=Layout(layout) if layout else None,
                         shape=Shape.NFT if target in ("nft", "nft-json") else Shape.IPTABLES,
                         coexist=noflush, state_files=tuple(Path(p) for p in state))


def docker_passes(ruleset: Ruleset, passes: Sequence[str] | None) -> Sequence[str] | None:
    # dockerd's rules are compared rule by rule with Docker's own; optimise only on request.
    from rulec.frontends.docker import generated

    return () if passes is None and generated(ruleset) else passes


def with_provenance(ruleset: Ruleset) -> Ruleset:
    """Append `file:line` of its source to every rule's comment, for review."""

    def annotate(_table: Table, _chain: Chain, rule: Rule) -> tuple[Rule, ...]:
        if rule.span is None:
            return (rule,)
        where = f"{rule.span.file}:{rule.span.line}"
        comment = f"{rule.comment} ({where})" if rule.comment else where
        return (replace(rule, comment=comment),)

    return map_rules(ruleset, annotate)


# iptables and ip6tables each print one family's half of a policy.
_OTHER_FAMILY = {"iptables": "ip6tables", "ip6tables": "iptables"}


def compile_ruleset(ruleset: Ruleset, target: str, *, noflush: bool = False,
                    provenance: bool = False, passes: Sequence[str] | None = None,
                    ipset: bool = False, both_families: bool = False,
                    validate: bool = False) -> CompileResult:
    """Optimise (`passes`: None for the default pipeline, () for none), check the result
    against the target's limits, then print it. `validate`: read each artefact back and prove
    it means what `ruleset` means (rulec.validation.ValidationError otherwise: a bug).
    `ipset` (iptables/ip6tables): address sets become ipsets, in `artifact.ipsets`. iptables
    and ip6tables print one family each: with `both_families` the other family's file comes
    in `other_family`, without it a policy with rules for the other family gets W0401."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if both_families and target not in _OTHER_FAMILY:
        raise ValueError(f"both_families applies to iptables and ip6tables, not {target}")
    written = ruleset
    if provenance:
        ruleset = with_provenance(ruleset)
    ctx = PassContext(named_sets=target in ("nft", "nft-json"))
    options = EmitOptions(noflush=noflush, ipset=ipset)
    with paused_gc():
        for name in (target, _OTHER_FAMILY[target]) if both_families else (target,):
            verify_texts(ruleset, get_backend(name).limits)
        ruleset, stats = run_pipeline(
            ruleset, ctx, DEFAULT_PIPELINE if passes is None else tuple(passes))
        warnings = [*ctx.warnings]
        artifacts = []
        for name in (target, _OTHER_FAMILY[target]) if both_families else (target,):
            backend = get_backend(name)
            warnings.extend(verify(ruleset, backend.limits))
            artifacts.append(backend.emit(ruleset, options))
    if validate:
        from rulec.validation import validate as validated

        for artifact in artifacts:
            validated(written, artifact)
    if target in _OTHER_FAMILY and not both_families:
        warnings.extend(left_out_family(ruleset, target))
    return CompileResult(ruleset, artifacts[0], tuple(dict.fromkeys(warnings)), stats,
                         artifacts[1] if both_families else None)


def left_out_family(ruleset: Ruleset, target: str) -> tuple[Diagnostic, ...]:
    """W0401 if the half of the policy `target` does not print would change some packet's fate
    (a reachable rule that drops, rejects, rewrites or marks, or a drop policy): loading only
    one half leaves the other family's traffic unfiltered. A half that only accepts is what no
    rules at all do, so it is not worth a warning."""
    from rulec.backends.iptables import restrict_rule
    from rulec.passes.remove_unreachable import remove_unreachable

    family = Family.IP6 if target == "iptables" else Family.IP
    tables = tuple(
        replace(t, family=family, chains=tuple(
            replace(c, rules=tuple(r for r in (restrict_rule(t, rule, family) for rule in c.rules)
                                   if r is not None))
            for c in t.chains))
        for t in ruleset.tables if t.family in (family, Family.INET))
    half = remove_unreachable(replace(ruleset, tables=tables), PassContext())
    deciding = [r for t in half.tables for c in t.chains for r in c.rules
                if not isinstance(r.action, Accept | Return | Jump | Goto)]
    dropping = [c for t in half.tables for c in t.chains if c.policy is Policy.DROP]
    rules, policies = len(deciding), len(dropping)
    if not rules and not policies:
        return ()
    # The first thing the left-out half would have decided; NetworkPolicy tables have no span.
    spans = [n.span for n in deciding] + [c.span for c in dropping] + [t.span for t in tables]
    span = next((s for s in spans if s is not None), None)
    other = _OTHER_FAMILY[target]
    printed, left = ("IPv4", "IPv6") if family is Family.IP6 else ("IPv6", "IPv4")
    return (warning("W0401", f"--target {target} prints only the {printed} half of this policy; "
                    f"its {left} half ({rules} rules that drop, reject, rewrite or mark, "
                    f"{policies} drop policies) is left out and {left} traffic stays unfiltered",
                    span,
                    "write both halves in one run: rulec compile -t iptables -o rules.v4 "
                    f"--ip6-output rules.v6 ... (or compile for {other} too)",
                    f"if the policy is not meant for {left}, declare its tables "
                    f"`{'ip' if family is Family.IP6 else 'ip6'}` instead of `inet`"),)


def emit(ruleset: Ruleset, target: str, *, noflush: bool = False,
         passes: Sequence[str] | None = None, ipset: bool = False) -> Artifact:
    """compile_ruleset() for callers that only want the artifact."""
    return compile_ruleset(ruleset, target, noflush=noflush, passes=passes,
                           ipset=ipset).artifact


def compile_files(paths: Sequence[str | Path], target: str, *, noflush: bool = False,
                  provenance: bool = False, passes: Sequence[str] | None = None,
                  docker_layout: str | None = None,
                  docker_state: Sequence[str | Path] = (), ipset: bool = False,
                  both_families: bool = False, validate: bool = False) -> CompileResult:
    """The whole pipeline on policy files (and a Docker host's inspect JSON, if given)."""
    docker = docker_options(target, layout=docker_layout, state=docker_state, noflush=noflush)
    warnings: list[Diagnostic] = []  # the frontend's (e.g. W0701), before the passes'
    ruleset = parse_files(paths, docker=docker, warnings=warnings)
    result = compile_ruleset(ruleset, target, noflush=noflush, provenance=provenance,
                             passes=docker_passes(ruleset, passes), ipset=ipset,
                             both_families=both_families, validate=validate)
    return replace(result, warnings=(*warnings, *result.warnings))


def parse_k8s_files(inventory: str | Path, policies: Sequence[str | Path]) -> Ruleset:
    """Kubernetes NetworkPolicy files plus a cluster inventory -> a verified IR ruleset for a
    node that routes between the pods (RulecError on bad input)."""
    return _parse_k8s(inventory, policies)[0]


def _parse_k8s(inventory: str | Path,
               policies: Sequence[str | Path]) -> tuple[Ruleset, tuple[Diagnostic, ...]]:
    from rulec.frontends import k8s

    with paused_gc():
        cluster = k8s.load_files(inventory, policies)
        ruleset = k8s.compile_to_ir(cluster)
        verify(ruleset)
    return ruleset, cluster.warnings


def compile_k8s_files(inventory: str | Path, policies: Sequence[str | Path], target: str, *,
                      noflush: bool = False, provenance: bool = False,
                      passes: Sequence[str] | None = None, ipset: bool = False,
                      both_families: bool = False, validate: bool = False) -> CompileResult:
    """The whole pipeline on NetworkPolicy files and an inventory."""
    ruleset, warnings = _parse_k8s(inventory, policies)
    result = compile_ruleset(ruleset, target, noflush=noflush, provenance=provenance,
                             passes=passes, ipset=ipset, both_families=both_families,
                             validate=validate)
    return replace(result, warnings=(*warnings, *result.warnings))


def compile_text(text: str, target: str, *, name: str = "<string>", noflush: bool = False,
                 passes: Sequence[str] | None = None, docker_layout: str | None = None,
                 docker_state: Sequence[str | Path] = (), ipset: bool = False) -> Artifact:
    """The whole pipeline on a string."""
    docker = docker_options(target, layout=docker_layout, state=docker_state, noflush=noflush)
    ruleset = parse_text(text, name, docker=docker)
    return emit(ruleset, target, noflush=noflush, passes=docker_passes(ruleset, passes),
                ipset=ipset)


def read_dump(path: str | Path, fmt: str | None = None, *, family: str | None = None,
              ipsets: str | Path | None = None, opaque: bool = False) -> Ruleset:
    """A ruleset dump (iptables-save text, nft JSON or nft text; `fmt` None: told by its
    content) as IR. `ipsets`: an `ipset save` file for the dump's `-m set` matches. `opaque`
    keeps matches rulec does not model as unknown conditions (analysis only) instead of
    refusing them. RulecError, positioned in the dump, for anything else it cannot read."""
    from rulec.frontends import dumps

    if fmt is not None and fmt not in dumps.FORMATS:
        raise ValueError(f"unknown dump format {fmt!r}; choose one of {', '.join(dumps.FORMATS)}")
    sets = dumps.read_ipsets(ipsets) if ipsets is not None else None
    with paused_gc():
        return dumps.read_dump(dumps.read_source(path), fmt,  # type: ignore[arg-type]
                               family=Family(family) if family else None, opaque=opaque,
                               ipsets=sets)


def to_policy(ruleset: Ruleset) -> str:
    """A ruleset (an imported dump) as a rulec policy that compiles back to the same
    behaviour: optimised where that is proven safe (merged rules, defines for repeated sets,
    comments kept), printed, parsed back and proven equivalent before it is returned
    (rulec.validation.ValidationError if not: a bug)."""
    from rulec.ir.printer import print_ruleset
    from rulec.ir.verify import verify_modelled
    from rulec.validation import ValidationError

    verify_modelled(ruleset)
    with paused_gc():
        written = run_pipeline(ruleset, PassContext(named_sets=True), IMPORT_PIPELINE)[0]
        text = print_ruleset(written)
        back = parse_text(text, "<import output>")
    proof = diff(ruleset, back)
    if not proof.equivalent:
        raise ValidationError("import", proof)
    return text


def diff(old: Ruleset, new: Ruleset,
         families: Sequence[Family] = (Family.IP, Family.IP6)) -> Diff:
    """Every packet whose fate differs between two rulesets (verdict, NAT rewrite, mark or
    MSS change), grouped into changes with a witness packet and the deciding rule of each
    side; `Diff.equivalent` when there are none. Only `families` are compared (an
    ip6tables-save dump says nothing of IPv4). Exact: rulec.analysis.diff."""
    from rulec.analysis.diff import diff as compare

    with paused_gc():
        return compare(old, new, families)


def optimised(ruleset: Ruleset, target: str = "nft") -> Ruleset:
    """What the default optimiser pipeline makes of a ruleset for a target (before the
    backend's own lowering), as compile runs it (dockerd's own chains are kept as they are)."""
    ctx = PassContext(named_sets=target in ("nft", "nft-json"))
    passes = docker_passes(ruleset, None)
    with paused_gc():
        return run_pipeline(ruleset, ctx, DEFAULT_PIPELINE if passes is None else passes)[0]


def explain(ruleset: Ruleset, packet: Packet | str, host: Host | None = None) -> Explanation:
    """What `ruleset` does to one packet, step by step: the hooks and chains it passes, the
    rules that matched (file:line and source text), the verdict and the rewrites. `packet` is
    a Packet or its spelling (docs/explain.md; RulecError E0801 pointing at the bad column),
    `host` the host's addresses: by default none for a Packet (so an incoming packet is
    forwarded) and what a spelling's `to-host` / `from-host` / `addr` say. Explains the
    ruleset as given: pass the parsed policy, before the passes, to see the rules as written."""
    from rulec.analysis import explain as explaining

    if isinstance(packet, str):
        spec = explaining.parse_packet(packet)
        packet, host = spec.packet, spec.host if host is None else host
    return explaining.explain(ruleset, packet, host)


def explain_pods(inventory: str | Path, policies: Sequence[str | Path], from_pod: str,
                 to_pod: str, port: str) -> Explanation:
    """explain() for the first packet from pod `ns/name` to pod `ns/name` on `port` (`80/tcp`)
    through the node NetworkPolicy files and an inventory compile for (RulecError on bad input,
    ValueError naming an unknown pod or a bad port)."""
    from rulec.analysis import explain as explaining
    from rulec.frontends import k8s

    with paused_gc():
        cluster = k8s.load_files(inventory, policies)
        ruleset = k8s.compile_to_ir(cluster)
        verify(ruleset)
    spec = explaining.pod_packet(cluster.inventory.pods, from_pod, to_pod, port)
    return explaining.explain(ruleset, spec.packet, spec.host)


__all__ = ["TARGETS", "CompileResult", "RulecError", "compile_files", "compile_k8s_files",
           "compile_ruleset", "compile_text", "diff", "docker_options", "emit", "explain",
           "explain_pods", "optimised",
           "parse_files", "parse_k8s_files", "parse_text", "with_provenance"]
