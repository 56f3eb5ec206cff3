"""The kernel is the judge: for inputs that once compiled into something the kernel (or
iptables-restore, nft, libnftables) then rejected, every target either emits a ruleset that
loads with every loader, or refuses with a positioned error. Nothing in between."""

from __future__ import annotations

import json

import pytest

from rulec import api
from rulec.backends import Artifact
from rulec.diagnostics import RulecError
from rulec.kernel import load, namespace
from rulec.kernel.readback import iptables_rules, nft_list
from tests.backends.test_iptables import restore_tokens

pytestmark = pytest.mark.kernel

TARGETS = ("iptables", "ip6tables", "nft", "nft-json")
LOADS = "loads"
NAME = "judged.rules"


def _policy(rule: str, table: str = "inet filter", chain: str = "FORWARD") -> str:
    return f"table {table} {{\n  chain {chain} {{\n    {rule}\n  }}\n}}\n"


def _outcome(text: str, target: str, passes: tuple[str, ...] | None = None
             ) -> Artifact | RulecError:
    try:
        return api.compile_text(text, target, name=NAME, passes=passes)
    except RulecError as exc:
        return exc


def _judge(text: str, expected: dict[str, str], passes: tuple[str, ...] | None = None) -> None:
    """expected: target -> LOADS, or the error code it must refuse with."""
    for target, wanted in expected.items():
        result = _outcome(text, target, passes)
        if isinstance(result, RulecError):
            codes = [d.code for d in result.diagnostics]
            assert wanted in codes, f"{target}: wanted {wanted}, got\n{result.render()}"
            assert all(d.span is not None and d.span.file == NAME for d in result.diagnostics)
            continue
        assert wanted == LOADS, f"{target} compiled, but should refuse with {wanted}"
        with namespace("judge") as ns:
            verdict = load(result, ns)  # every loader: iptables-nft and -legacy; libnftables
        assert verdict.ok, f"{target}: {verdict.message}\n{result.text}"


def _all(outcome: str, **others: str) -> dict[str, str]:
    return {target: others.get(target.replace("-", "_"), outcome) for target in TARGETS}


# ------------------------------------------------------------------ interface names: bytes

@pytest.mark.parametrize(("name", "fits"), [
    ("ééééééé1", True), ("ééééééé+", True), ("éééééééé", False), ("ééééééé1+", False),
    ("a" * 15, True), ("a" * 14 + "+", True), ("€€€€€", True), ("€€€€€a", False),
])
def test_interface_name_is_measured_in_bytes(name: str, fits: bool) -> None:
    # IFNAMSIZ counts bytes: "éééééééé" is 8 characters but 16 bytes.
    _judge(_policy(f'accept in "{name}" out "{name}"'), _all(LOADS if fits else "E0313"))


# ------------------------------------------------------------------ text in quoted strings

# Every printable ASCII character, and a few others, in the middle of a comment and a prefix.
CHARACTERS = [chr(c) for c in range(0x20, 0x7F)] + ["é", "€", "中", "😀", "x\u0301"]
# What each target's text cannot carry: `"` ends nft's quoted strings (and JSON follows the
# text target, so that a listing loads back); `$` starts a variable in an nft log prefix.
CANNOT = {"comment": {"nft": {'"'}, "nft-json": {'"'}},
          "log prefix": {"nft": {'"', "$"}, "nft-json": {'"', "$"}}}


def _dsl_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _held_comments(artifact: Artifact) -> list[str]:
    with namespace("judge") as ns:
        verdict = load(artifact, ns)
        assert verdict.ok, f"{verdict.loader}: {verdict.message}"
        if artifact.target in ("iptables", "ip6tables"):
            family = "ip6" if artifact.target == "ip6tables" else "ip"
            found = []
            for variant in ("nft", "legacy"):
                tokens = [restore_tokens(line) for line in iptables_rules(ns, family, variant)]
                found.append([t[t.index("--comment") + 1] for t in tokens if "--comment" in t])
            assert found[0] == found[1]
            return found[0]
        return [item["rule"]["comment"] for item in nft_list(ns)["nftables"]
                if "comment" in item.get("rule", {})]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("what", ["comment", "log prefix"])
def test_every_character_is_carried_or_refused(what: str, target: str) -> None:
    texts = [f"a{ch}b" for ch in CHARACTERS]
    if what == "comment":
        rules = [f"accept tcp dport {i + 1} comment {_dsl_string(t)}" for i, t in enumerate(texts)]
    else:  # the comment carries the prefix too, to read it back from every target
        rules = [f"log prefix {_dsl_string(t)} tcp dport {i + 1} comment {_dsl_string(t)}"
                 for i, t in enumerate(texts)]
    text = "table ip6 filter {\n" if target == "ip6tables" else "table ip filter {\n"
    text += "  chain INPUT {\n" + "".join(f"    {r}\n" for r in rules) + "  }\n}\n"
    result = _outcome(text, target, passes=())
    refused: set[str] = set()
    if isinstance(result, RulecError):
        for diagnostic in result.diagnostics:
            assert diagnostic.code == "E0405" and diagnostic.span is not None, result.render()
            refused.add(CHARACTERS[diagnostic.span.line - 3])
        assert refused <= CANNOT[what].get(target, set()) | CANNOT["comment"].get(target, set())
        keep = [r for r, ch in zip(rules, CHARACTERS, strict=True) if ch not in refused]
        text = text.split("  chain INPUT {\n")[0] + "  chain INPUT {\n" + "".join(
            f"    {r}\n" for r in keep) + "  }\n}\n"
        result = _outcome(text, target, passes=())
    assert not isinstance(result, RulecError), result.render()
    assert refused == CANNOT[what].get(target, set())
    assert sorted(_held_comments(result)) == sorted(
        t for t, ch in zip(texts, CHARACTERS, strict=True) if ch not in refused)


@pytest.mark.parametrize("target", TARGETS)
def test_every_character_in_an_interface_name_loads_or_is_refused(target: str) -> None:
    # Each name alone: refused with a position (the language or the target), or kept; then
    # every kept name in one policy, which must load.
    kept = []
    for ch in CHARACTERS:
        name = _dsl_string(f"a{ch}b"[:15])
        result = _outcome(_policy(f"accept in {name}"), target, passes=())
        if isinstance(result, RulecError):
            assert all(d.span is not None and d.code in ("E0313", "E0405", "E0409")
                       for d in result.diagnostics), result.render()
        else:
            kept.append(name)
    assert len(kept) > 60, kept
    rules = "\n    ".join(f"accept in {name} tcp dport {i + 1}" for i, name in enumerate(kept))
    _judge(_policy(rules), {target: LOADS}, passes=())


# ------------------------------------------------------------------ rate limits

@pytest.mark.parametrize(("rate", "expected"), [
    ("10000/second", _all(LOADS)),
    ("10001/second", _all(LOADS, iptables="E0406", ip6tables="E0406")),
    ("9223372036854775807/second", _all(LOADS, iptables="E0406", ip6tables="E0406")),
    ("9223372036854775808/second", _all(LOADS, iptables="E0406", ip6tables="E0406",
                                        nft_json="E0408")),
    ("18446744073709551610/second", _all(LOADS, iptables="E0406", ip6tables="E0406",
                                         nft_json="E0408")),
    ("18446744073709551615/second", _all("E0408", iptables="E0406", ip6tables="E0406")),
    # iptables-legacy: 1/day with the default burst of 5 overflows the kernel's 32-bit credits
    # ("Numerical result out of range"); rulec refuses any burst whose credits could wrap.
    ("1/day", _all(LOADS, iptables="E0406", ip6tables="E0406")),
    ("1/day burst 1", _all(LOADS)),
    ("1/day burst 10000", _all(LOADS, iptables="E0406", ip6tables="E0406")),
])
def test_rate_limit_loads_or_is_refused(rate: str, expected: dict[str, str]) -> None:
    _judge(_policy(f"accept tcp dport 22 limit {rate}"), expected)


# ------------------------------------------------------------------ interface names in JSON

@pytest.mark.parametrize("name", ["tcp", "udp", "udplite", "esp", "ah", "icmp", "icmpv6",
                                  "comp", "dccp", "sctp", "redirect", "@x"])
def test_interface_named_like_a_json_constant(name: str) -> None:
    # libnftables' JSON parser reads these strings as typed constants (or a set reference).
    _judge(_policy(f'accept in "{name}"'), _all(LOADS, nft_json="E0409"))


def test_interface_named_like_a_protocol_in_a_verdict_map_keeps_its_meaning() -> None:
    """With the optimiser, nft gets `iifname vmap { "tcp" : accept, "eth0" : drop }`. In JSON,
    libnftables loaded that map with the key "\\x06" instead of "tcp", without an error."""
    text = _policy('accept in "tcp"\n    drop in "eth0"\n    accept in "lo"')
    _judge(text, _all(LOADS, nft_json="E0409"))
    artifact = _outcome(text, "nft")
    assert isinstance(artifact, Artifact) and "vmap" in artifact.text
    with namespace("judge") as ns:
        assert load(artifact, ns).ok
        listed = json.dumps(nft_list(ns))
    assert '"tcp"' in listed and "\\u0006" not in listed


# ------------------------------------------------------------------ jumps nested too deep

def _chain_of_jumps(depth: int, last: str) -> str:
    lines = ["table ip filter {", "  chain INPUT {", "    jump c1", "  }"]
    for i in range(1, depth):
        lines += [f"  chain c{i} {{", f"    jump c{i + 1}", "  }"]
    return "\n".join([*lines, f"  chain c{depth} {{", f"    {last}", "  }", "}"]) + "\n"


@pytest.mark.parametrize(("depth", "expected"), [
    (15, _all(LOADS)), (16, _all("E0410")),
])
def test_jump_depth(depth: int, expected: dict[str, str]) -> None:
    # nf_tables refuses a jump 16 chains below a base chain ("Too many links"); iptables-nft
    # too, legacy iptables does not.
    expected = {t: e for t, e in expected.items() if t != "ip6tables"}
    _judge(_chain_of_jumps(depth, "accept tcp dport 22"), expected, passes=())


def test_helper_chains_count_towards_the_jump_depth() -> None:
    # iptables needs a helper chain for a negated set: one jump more than nft.
    last = "accept tcp dport 22 from != { 192.0.2.1, 192.0.2.2 }"
    _judge(_chain_of_jumps(15, last), {"iptables": "E0410", "nft": LOADS, "nft-json": LOADS},
           passes=())


# ------------------------------------------------------------------ drop in the nat table

def test_drop_in_nat_is_refused() -> None:
    # iptables: 'The "nat" table is not intended for filtering, the use of DROP is therefore
    # inhibited.'
    _judge(_policy("drop tcp dport 22", "ip nat", "PREROUTING"),
           {"iptables": "E0315", "nft": "E0315", "nft-json": "E0315"})


# ------------------------------------------------------------------ address types in IPv6

@pytest.mark.parametrize("kind", ["broadcast", "blackhole", "prohibit"])
def test_address_type_ipv6_addrtype_cannot_test(kind: str) -> None:
    # xt_addrtype: "ipv6 does not support BROADCAST matching", "ipv6 BLACKHOLE matching not
    # supported", "ipv6 PROHIBIT (THROW, NAT ..) matching not supported".
    _judge(_policy(f"accept to type {kind}", "ip6 filter", "INPUT"),
           {"ip6tables": "E0406", "nft": LOADS, "nft-json": LOADS})
    _judge(_policy(f"accept from type != {kind}", "inet filter", "INPUT"),
           _all(LOADS, ip6tables="E0406"))
    _judge(_policy(f"accept family ip to type {kind}", "inet filter", "INPUT"), _all(LOADS))


@pytest.mark.parametrize("kind", ["unicast", "local", "anycast", "multicast", "unreachable"])
def test_address_type_ipv6_can_test(kind: str) -> None:
    _judge(_policy(f"accept to type {kind} from type != {kind}", "inet filter", "INPUT"),
           _all(LOADS))


# ------------------------------------------------------------------ NAT ports by protocol

@pytest.mark.parametrize(("rule", "table", "chain"), [
    ("redirect to 94-1063 udplite", "ip nat", "PREROUTING"),
    ("dnat to 192.0.2.1:80 udplite", "ip nat", "PREROUTING"),
    ("snat to [2001:db8::1]:1-2 udplite", "ip6 nat", "POSTROUTING"),
])
def test_nat_ports_of_udplite(rule: str, table: str, chain: str) -> None:
    # iptables' NAT targets: "Need TCP, UDP, SCTP or DCCP with port specification".
    expected = {"nft": LOADS, "nft-json": LOADS}
    expected["ip6tables" if table.startswith("ip6") else "iptables"] = "E0406"
    _judge(_policy(rule, table, chain), expected)


@pytest.mark.parametrize("proto", ["tcp", "udp", "sctp", "dccp"])
def test_nat_ports_of_protocols_iptables_translates(proto: str) -> None:
    _judge(_policy(f"dnat to 192.0.2.1:80 {proto}", "ip nat", "PREROUTING"),
           {"iptables": LOADS, "nft": LOADS, "nft-json": LOADS})
