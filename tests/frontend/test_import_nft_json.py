"""Reading libnftables JSON back into the IR: what rulec emits imports as the policy it came
from, what real hosts carry imports or fails closed with a positioned error."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rulec import api
from rulec.analysis.diff import diff
from rulec.diagnostics import RulecError, SourceFile
from rulec.frontends.nft_json import nft_json_to_ir, read_nft_json
from rulec.ir import nodes as ir
from tests.golden.cases import case_files

ROOT = Path(__file__).resolve().parents[2]


def policy_of(case: Path) -> ir.Ruleset:
    return api.parse_files([case], docker=api.docker_options("nft-json"))


def read(text: str, *, opaque: bool = False) -> ir.Ruleset:
    return read_nft_json(SourceFile("dump.json", text), opaque=opaque)


def error_of(text: str, *, opaque: bool = False) -> RulecError:
    with pytest.raises(RulecError) as info:
        read(text, opaque=opaque)
    return info.value


def listing(*rules: list[Any], family: str = "inet", chain: dict[str, Any] | None = None,
            sets: tuple[dict[str, Any], ...] = ()) -> str:
    """A `nft -j list ruleset` document: one table t with an input base chain `in`."""
    head = chain or {"type": "filter", "hook": "input", "prio": 0, "policy": "accept"}
    items: list[Any] = [{"metainfo": {"json_schema_version": 1}},
                        {"table": {"family": family, "name": "t", "handle": 1}},
                        {"chain": {"family": family, "table": "t", "name": "in", **head}}]
    items += [{"set": {"family": family, "table": "t", **s}} for s in sets]
    items += [{"rule": {"family": family, "table": "t", "chain": "in", "expr": expr}}
              for expr in rules]
    return json.dumps({"nftables": items}, indent=1)


TCP_22 = {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                    "right": 22}}
CGROUP = {"match": {"op": "==", "left": {"meta": {"key": "cgroup"}}, "right": 1}}


# Every .nft.json golden importing back to its policy is the golden test's translation
# validation (tests/golden/test_golden.py, validate=True); here the kernel's own listing of
# each .nft golden is read (below), which the golden test cannot do.


def test_a_dropped_port_match_is_a_difference() -> None:
    """The round trip can fail: removing one port test from an artefact is seen."""
    case = ROOT / "tests/golden/cases/basic/stateful_input.rules"
    data = json.loads(case.with_suffix(".nft.json").read_text(encoding="utf-8"))
    for item in data["nftables"]:
        rule = item.get("add", {}).get("rule")
        if rule and any("dport" in json.dumps(e) for e in rule["expr"]):
            rule["expr"] = [e for e in rule["expr"] if "dport" not in json.dumps(e)]
            break
    else:
        pytest.fail("the case has no port match")
    imported = nft_json_to_ir(data, lambda path: None)
    assert diff(policy_of(case), imported).changes != ()


def test_matches_statements_and_verdicts_are_read_as_rulec_models_them() -> None:
    text = listing(
        [TCP_22, {"counter": None}, {"log": {"prefix": "ssh ", "level": "info"}},
         {"accept": None}],
        [{"match": {"op": "in", "left": {"ct": {"key": "state"}},
                    "right": ["established", "related"]}}, {"accept": None}],
        [{"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                    "right": "@admins"}}, {"reject": {"type": "icmpx",
                                                      "expr": "admin-prohibited"}}],
        sets=({"name": "admins", "type": "ipv4_addr", "flags": ["interval"],
               "elem": [{"prefix": {"addr": "198.18.0.0", "len": 24}},
                        {"elem": {"val": "198.19.0.1", "comment": "ignored"}}]},))
    (table,) = read(text).tables
    assert (table.kind, table.family, table.name) == (ir.TableKind.FILTER, ir.Family.INET, "t")
    (chain,) = table.chains
    assert chain.name == "INPUT" and chain.hook is ir.Hook.INPUT
    ssh, state, admins = chain.rules
    assert str(ssh.match.dport) == "22" and ssh.match.proto is not None
    assert ssh.statements == (ir.Log("ssh ", ir.LogLevel.INFO),) and ssh.action == ir.Accept()
    assert state.match.ct_state is not None and not state.match.ct_state.negated
    assert str(admins.match.saddr) == "!= { 198.18.0.0/24, 198.19.0.1 }"
    assert admins.match.family is ir.Family.IP  # `ip saddr` in inet: IPv4 packets only
    assert admins.action == ir.Reject(ir.RejectWith.ADMIN_PROHIBITED)


def test_an_unmodelled_match_is_a_positioned_error_naming_it() -> None:
    text = listing([CGROUP, {"accept": None}])
    (diagnostic,) = error_of(text).diagnostics
    assert diagnostic.code == "E0546"
    assert "cgroup" in diagnostic.message and "nftables[3].rule.expr[0]" in diagnostic.message
    assert diagnostic.span is not None
    pointed = text[diagnostic.span.start:diagnostic.span.end]  # the whole match object
    assert pointed.startswith("{") and '"cgroup"' in pointed and '"accept"' not in pointed


def test_opaque_keeps_an_unmodelled_match_as_a_condition() -> None:
    text = listing([CGROUP, TCP_22, {"accept": None}],
                   [{**CGROUP, "match": {**CGROUP["match"], "op": "!="}}, {"drop": None}])
    first, second = read(text, opaque=True).tables[0].chains[0].rules
    assert first.match.unknown is not None and len(first.match.unknown.holds) == 1
    assert "cgroup" in next(iter(first.match.unknown.holds))
    assert str(first.match.dport) == "22"  # the modelled tests stay
    assert second.match.unknown is not None and second.match.unknown.fails == \
        first.match.unknown.holds  # `!=` is the same condition failing


def test_numgen_is_always_an_unknown_condition_of_its_chain() -> None:
    dice = {"match": {"op": "==", "left": {"numgen": {"mode": "random", "mod": 2,
                                                      "offset": 0}}, "right": 0}}
    (rule,) = read(listing([dice, {"accept": None}])).tables[0].chains[0].rules
    assert rule.match.unknown is not None
    (text,) = rule.match.unknown.holds
    assert text.startswith("in: numgen")


@pytest.mark.parametrize("statement", [
    {"queue": {"num": 1}},
    {"mangle": {"key": {"ct": {"key": "mark"}}, "value": 1}},
    {"notrack": None},
])
def test_an_unmodelled_statement_is_an_error_even_when_opaque(statement: Any) -> None:
    (diagnostic,) = error_of(listing([TCP_22, statement]), opaque=True).diagnostics
    assert diagnostic.code == "E0547" and diagnostic.span is not None


@pytest.mark.parametrize("family", ["arp", "bridge", "netdev"])
def test_families_other_than_ip_ip6_inet_are_refused(family: str) -> None:
    text = json.dumps({"nftables": [{"table": {"family": family, "name": "t"}}]})
    assert [d.code for d in error_of(text).diagnostics] == ["E0541"]


def test_base_chains_rulec_cannot_order_are_refused() -> None:
    """Two filter tables run in one order on every hook in rulec (ruleset order), but here
    table a's input chain runs before b's and b's forward chain before a's."""

    def chain(table: str, hook: str, prio: int) -> dict[str, Any]:
        return {"chain": {"family": "ip", "table": table, "name": hook, "type": "filter",
                          "hook": hook, "prio": prio, "policy": "accept"}}

    items = [{"table": {"family": "ip", "name": "a"}}, {"table": {"family": "ip", "name": "b"}},
             chain("a", "input", 0), chain("a", "forward", 10),
             chain("b", "input", 5), chain("b", "forward", 0)]
    errors = error_of(json.dumps({"nftables": items})).diagnostics
    assert [d.code for d in errors] == ["E0545"]
    assert "cannot order" in errors[0].message and errors[0].span is not None


def test_firewalld_table_imports_in_opaque_mode() -> None:
    """A firewalld `table inet firewalld` as its documentation and nft listing show it
    (written by hand, trimmed): priorities are the standard ones plus 10, and its reverse path
    filter (`fib saddr . iif oif missing`) is not modelled, so only opaque mode reads it."""
    rpf = {"match": {"op": "==", "left": {"fib": {"result": "oif", "flags": ["saddr", "iif"]}},
                     "right": False}}
    items: list[Any] = [{"table": {"family": "inet", "name": "firewalld"}}]
    for name, kind, hook, prio in [("filter_INPUT", "filter", "input", 10),
                                   ("filter_FORWARD", "filter", "forward", 10),
                                   ("raw_PREROUTING", "filter", "prerouting", -290),
                                   ("mangle_PREROUTING", "filter", "prerouting", -140),
                                   ("nat_PREROUTING", "nat", "prerouting", -90),
                                   ("nat_POSTROUTING", "nat", "postrouting", 110)]:
        items.append({"chain": {"family": "inet", "table": "firewalld", "name": name,
                                "type": kind, "hook": hook, "prio": prio, "policy": "accept"}})
    items.append({"chain": {"family": "inet", "table": "firewalld", "name": "filter_IN_public"}})

    def rule(chain: str, *expr: Any) -> dict[str, Any]:
        return {"rule": {"family": "inet", "table": "firewalld", "chain": chain,
                         "expr": list(expr)}}

    items += [
        rule("filter_INPUT", {"match": {"op": "in", "left": {"ct": {"key": "state"}},
                                        "right": ["established", "related"]}}, {"accept": None}),
        rule("filter_INPUT", {"match": {"op": "==", "left": {"meta": {"key": "iifname"}},
                                        "right": "lo"}}, {"accept": None}),
        rule("filter_INPUT", {"goto": {"target": "filter_IN_public"}}),
        rule("filter_IN_public", TCP_22, {"accept": None}),
        rule("filter_IN_public", {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}),
        rule("raw_PREROUTING", {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}},
                                          "right": "ipv6"}}, rpf, {"drop": None}),
    ]
    text = json.dumps({"nftables": items})
    assert [d.code for d in error_of(text).diagnostics] == ["E0546"]
    kinds = sorted(t.kind.value for t in read(text, opaque=True).tables)
    assert kinds == ["filter", "mangle", "nat", "raw"]


_DUMP = (ROOT / "tests/golden/cases/docker_current/one_port.nft.json").read_text(encoding="utf-8")


def _mutations() -> st.SearchStrategy[Any]:
    leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=6),
                     st.sampled_from(["@x", "ip", "tcp", "inet", "input", "accept", "*"]))
    return st.recursive(leaf, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=2)),
        max_leaves=6)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for key, inner in value.items():
            out += _paths(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            out += _paths(inner, (*path, index))
    return out


_DATA = json.loads(_DUMP)
_ALL_PATHS = _paths(_DATA)[1:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_ALL_PATHS), _mutations()), min_size=1, max_size=3))
def test_a_mutated_dump_imports_or_fails_with_rulecs_own_error(
        changes: list[tuple[tuple[Any, ...], Any]]) -> None:
    data = copy.deepcopy(_DATA)
    for path, value in changes:
        node = data
        try:
            for step in path[:-1]:
                node = node[step]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    with contextlib.suppress(RulecError):
        nft_json_to_ir(data, lambda path: None)
    with contextlib.suppress(RulecError):  # and as text, cut short
        read(json.dumps(data)[: len(json.dumps(data)) // 2])


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None,
    reason="loading a ruleset and listing it back needs root and nft (a network namespace)")


@pytest.fixture
def namespace():  # type: ignore[no-untyped-def]
    from rulec.kernel.netns import Namespace

    ns = Namespace("nftj")
    try:
        yield ns
    finally:
        ns.delete()


NFT_CASES = [c for c in case_files() if c.with_suffix(".nft").exists()]


@needs_root
@pytest.mark.parametrize("case", NFT_CASES, ids=lambda c: str(c.relative_to(ROOT)))
def test_every_nft_golden_lists_back_as_its_policy(case: Path, namespace: Any) -> None:
    namespace.run(["nft", "-f", str(case.with_suffix(".nft"))])
    listed = namespace.run(["nft", "-j", "list", "ruleset"]).stdout
    imported = read_nft_json(SourceFile("nft -j list ruleset", listed))
    assert diff(policy_of(case), imported).changes == ()
