"""Each NetworkPolicy semantics rule (S1-S18, as docs/kubernetes.md numbers them), checked on the
compiled node through the reference evaluator: the whole 3x3 truth table against the oracle,
the hand-written expectations of every case, and the details a table over 9 pods cannot show.
"""

from __future__ import annotations

import random

import pytest

from rulec.diagnostics import RulecError
from rulec.frontends import k8s
from rulec.frontends.k8s.compiler import collapse, effective_types, subtract
from rulec.frontends.k8s.model import IPBlock, Policy
from rulec.ir.evaluate import Host, Packet, Path, Verdict, evaluate
from rulec.ir.nodes import Ruleset, iter_rules, rule_count
from rulec.ir.values import Family, Prefix
from tests.k8s.cases import CASES, COVERED, Case, case_id, policy
from tests.k8s.harness import Probe, compiled, disagreements, node_allows, pair_probes
from tests.k8s.model3x3 import MODEL_PODS, PROBES, inventory_yaml, load
from tests.k8s.oracle import Oracle

BY_KEY = {pod.key: pod for pod in MODEL_PODS}
KINDS = (*PROBES, ("ICMP", None), ("SCTP", 80))


def test_cases_cover_s1_to_s16() -> None:
    assert [f"S{n}" for n in range(1, 17)] == COVERED


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_oracle_meets_hand_written_expectations(case: Case) -> None:
    """The oracle is itself checked against expectations derived by hand from the rules."""
    cluster = load(case.policies)
    oracle = Oracle(cluster.inventory, cluster.policies)
    for (src, dst, protocol, port), expected in case.expect.items():
        a, b = BY_KEY[src], BY_KEY[dst]
        got = oracle.allows(Family.IP, int(Prefix.parse(a.ip).network),
                            int(Prefix.parse(b.ip).network), protocol, port)
        assert got == expected, f"{src} -> {dst} {protocol}/{port}"


@pytest.mark.parametrize("target", ["nft", "iptables"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_compiled_node_matches_oracle(case: Case, target: str) -> None:
    """Every ordered pod pair, TCP and UDP on 80 and 81, ICMP and SCTP: the compiled node
    (after the target's optimiser) allows exactly what the oracle allows, replies included."""
    cluster = load(case.policies)
    probes = pair_probes([p.ip for p in MODEL_PODS], KINDS)
    assert disagreements(cluster, compiled(cluster, target), probes) == []


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_dual_stack_node_matches_oracle(case: Case) -> None:
    """The same over IPv6 on dual-stack pods: every rule exists for both families."""
    cluster = load(case.policies, dual_stack=True)
    probes = pair_probes([p.ip6 for p in MODEL_PODS] + [p.ip for p in MODEL_PODS], PROBES)
    assert disagreements(cluster, compiled(cluster), probes) == []


def _allows(policies: str, src: str, dst: str, protocol: str = "TCP",
            port: int | None = 80, *, inventory: str | None = None) -> bool:
    cluster = k8s.load_texts(("cluster.yaml", inventory or inventory_yaml()),
                             [("policy.yaml", policies)])
    return node_allows(compiled(cluster), Probe(src, dst, protocol, port))


def _ip(key: str) -> str:
    return BY_KEY[key].ip


def _rules_of(ruleset: Ruleset) -> list[str]:
    return sorted(f"{c.name}: {r}" for _, c, r in iter_rules(ruleset))


# S1 -----------------------------------------------------------------------------------------


def test_s1_isolation_for_one_direction_leaves_the_other_open() -> None:
    deny_in = policy("x", "deny-in", "podSelector: {matchLabels: {pod: a}}\n")
    assert not _allows(deny_in, _ip("y/a"), _ip("x/a"))
    assert _allows(deny_in, _ip("x/a"), _ip("y/a"))


def test_s1_traffic_from_outside_the_cluster_meets_the_ingress_side() -> None:
    deny_in = policy("x", "deny-in", "podSelector: {}\n")
    assert not _allows(deny_in, "203.0.113.7", _ip("x/a"))
    assert _allows(deny_in, "203.0.113.7", _ip("y/a"))


# S2 -----------------------------------------------------------------------------------------


def test_s2_a_second_policy_only_widens() -> None:
    one = policy("x", "from-b", """
podSelector: {matchLabels: {pod: a}}
ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
""")
    two = one + policy("x", "from-c", """
podSelector: {matchLabels: {pod: a}}
ingress: [{from: [{podSelector: {matchLabels: {pod: c}}}]}]
""")
    assert not _allows(one, _ip("x/c"), _ip("x/a"))
    assert _allows(two, _ip("x/c"), _ip("x/a")) and _allows(two, _ip("x/b"), _ip("x/a"))


def test_s2_policy_order_and_file_order_do_not_matter() -> None:
    texts = [c.policies for c in CASES if c.policies]
    shuffled = texts[:]
    random.Random(5).shuffle(shuffled)
    inventory = ("cluster.yaml", inventory_yaml())
    first = k8s.load_texts(inventory, [(f"p{i}.yaml", t) for i, t in enumerate(texts)])
    second = k8s.load_texts(inventory, [(f"p{i}.yaml", t) for i, t in enumerate(shuffled)])
    assert k8s.compile_to_ir(first) == k8s.compile_to_ir(second)


# S3, S4 -------------------------------------------------------------------------------------


def test_s3_egress_deny_wins_over_ingress_allow() -> None:
    text = policy("x", "no-egress", "podSelector: {}\npolicyTypes: [Egress]\n") + policy(
        "y", "allow-all", "podSelector: {}\ningress: [{}]\n")
    assert not _allows(text, _ip("x/a"), _ip("y/a"))


def test_s4_replies_pass_where_the_reverse_direction_is_isolated() -> None:
    text = policy("x", "b-in-only-from-a", """
podSelector: {matchLabels: {pod: b}}
policyTypes: [Ingress, Egress]
ingress: [{from: [{podSelector: {matchLabels: {pod: a}}}]}]
""")
    cluster = load(text)
    ruleset = compiled(cluster)
    probe = Probe(_ip("x/a"), _ip("x/b"), "TCP", 80)
    reply = Packet(family=Family.IP, proto=6, saddr=Prefix.parse(_ip("x/b")).network,
                   daddr=Prefix.parse(_ip("x/a")).network, sport=80, dport=40000)
    assert node_allows(ruleset, probe)
    assert evaluate(ruleset, reply).verdict is Verdict.DROP  # as a new connection: no
    assert disagreements(cluster, ruleset, [probe]) == []  # as a reply: yes


# S5 -----------------------------------------------------------------------------------------


def test_s5_a_policy_selecting_no_pod_produces_nothing() -> None:
    nobody = policy("x", "nobody", """
podSelector: {matchLabels: {pod: nobody}}
policyTypes: [Ingress, Egress]
""")
    base = policy("y", "deny", "podSelector: {}\n")
    with_nobody = k8s.compile_to_ir(load(base + nobody))
    assert with_nobody == k8s.compile_to_ir(load(base))
    assert "nobody" not in repr(with_nobody)


def test_s5_no_isolated_pod_means_no_rules() -> None:
    assert rule_count(k8s.compile_to_ir(load(""))) == 0
    empty = k8s.compile_to_ir(load(policy("x", "nobody", "podSelector: {matchLabels: {a: b}}")))
    assert rule_count(empty) == 0


def test_s5_pod_selector_sees_only_its_own_namespace() -> None:
    text = policy("x", "deny-a", "podSelector: {matchLabels: {pod: a}}\n")
    assert not _allows(text, _ip("z/c"), _ip("x/a"))
    assert _allows(text, _ip("z/c"), _ip("y/a"))


# S6, S7 -------------------------------------------------------------------------------------


def _policy_named(text: str, name: str) -> Policy:
    return next(p for p in load(text).policies if p.name == name)


@pytest.mark.parametrize(("spec", "types"), [
    ("podSelector: {}", ("Ingress",)),
    ("podSelector: {}\npolicyTypes: []", ("Ingress",)),
    ("podSelector: {}\negress: []", ("Ingress",)),
    ("podSelector: {}\negress: [{}]", ("Ingress", "Egress")),
    ("podSelector: {}\npolicyTypes: [Egress]\ningress: [{}]", ("Egress",)),
])
def test_s6_policy_types_defaulting(spec: str, types: tuple[str, ...]) -> None:
    assert effective_types(_policy_named(policy("x", "p", spec), "p")) == types


def test_s6_egress_rules_without_policy_types_also_isolate_ingress() -> None:
    text = policy("x", "egress-rules", """
podSelector: {matchLabels: {pod: a}}
egress: [{to: [{podSelector: {}}]}]
""")
    assert not _allows(text, _ip("x/b"), _ip("x/a"))
    assert _allows(text, _ip("x/a"), _ip("x/b")) and not _allows(text, _ip("x/a"), _ip("y/b"))


def test_s7_one_empty_rule_allows_every_protocol() -> None:
    text = policy("x", "all", "podSelector: {}\ningress: [{}]\negress: [{}]\n")
    for protocol, port in (("TCP", 9), ("UDP", 53), ("SCTP", 7), ("ICMP", None)):
        assert _allows(text, _ip("y/a"), _ip("x/a"), protocol, port)


def test_s7_empty_list_allows_nothing() -> None:
    text = policy("x", "none", "podSelector: {}\npolicyTypes: [Ingress, Egress]\ningress: []\n")
    assert not _allows(text, _ip("y/a"), _ip("x/a"), "ICMP", None)
    assert not _allows(text, _ip("x/a"), _ip("y/a"), "UDP", 53)


# S8, S9 -------------------------------------------------------------------------------------


def test_s8_rule_without_ports_allows_icmp_too() -> None:
    text = policy("x", "from-y", """
podSelector: {}
ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]
""")
    assert _allows(text, _ip("y/b"), _ip("x/a"), "ICMP", None)
    assert not _allows(text, _ip("z/b"), _ip("x/a"), "ICMP", None)


def test_s9_namespace_selector_empty_means_every_namespace_but_not_outside() -> None:
    text = policy("x", "cluster", "podSelector: {}\ningress: [{from: [{namespaceSelector: {}}]}]\n")
    assert _allows(text, _ip("z/c"), _ip("x/a"))
    assert not _allows(text, "203.0.113.7", _ip("x/a"))


# S10, S11 -----------------------------------------------------------------------------------


def test_s10_not_in_matches_pods_without_the_key() -> None:
    text = policy("x", "not-front", """
podSelector: {}
ingress:
  - from: [{podSelector: {matchExpressions: [{key: role, operator: NotIn, values: [front]}]}}]
""")
    assert _allows(text, _ip("x/c"), _ip("x/b"))  # c has no role label
    assert _allows(text, _ip("x/b"), _ip("x/c"))
    assert not _allows(text, _ip("x/a"), _ip("x/c"))


def test_s11_namespaces_are_selected_by_label_only() -> None:
    text = policy("x", "from-env-prod", """
podSelector: {}
ingress: [{from: [{namespaceSelector: {matchLabels: {env: prod}}}]}]
""")
    assert _allows(text, _ip("z/a"), _ip("x/a")) and not _allows(text, _ip("y/a"), _ip("x/a"))


def test_s11_the_name_label_is_stamped_when_the_inventory_leaves_it_out() -> None:
    inventory = """
namespaces: [{name: x}, {name: q}]
pods:
  - {name: a, namespace: x, ip: 198.18.1.2}
  - {name: b, namespace: q, ip: 198.18.2.2}
"""
    text = policy("x", "from-q", """
podSelector: {}
ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: q}}}]}]
""")
    assert _allows(text, "198.18.2.2", "198.18.1.2", inventory=inventory)


# S12 ----------------------------------------------------------------------------------------


def test_s12_subtract_leaves_cidr_minus_excepts() -> None:
    block = IPBlock(Prefix.parse("10.0.0.0/8"), (Prefix.parse("10.1.0.0/16"),
                                                 Prefix.parse("10.200.3.4/32")))
    pieces = subtract(block)
    for address in ("10.0.0.1", "10.1.0.0", "10.1.255.255", "10.200.3.4", "10.200.3.5",
                    "10.255.255.255", "11.0.0.0"):
        value = Prefix.parse(address).network
        inside = any(p.contains(Family.IP, value) for p in pieces)
        expected = (Prefix.parse("10.0.0.0/8").contains(Family.IP, value)
                    and not any(e.contains(Family.IP, value) for e in block.excepts))
        assert inside == expected, address
    assert collapse(pieces) == pieces  # already disjoint and minimal


def test_s12_ipv6_block_with_except() -> None:
    text = policy("x", "v6", """
podSelector: {matchLabels: {pod: a}}
ingress: [{from: [{ipBlock: {cidr: "fd00::/16", except: ["fd00:2::/32"]}}]}]
""")
    cluster = load(text, dual_stack=True)
    ruleset = compiled(cluster)
    assert node_allows(ruleset, Probe(BY_KEY["x/c"].ip6, BY_KEY["x/a"].ip6, "TCP", 80))
    assert not node_allows(ruleset, Probe(BY_KEY["x/b"].ip6, BY_KEY["x/a"].ip6, "TCP", 80))
    assert not node_allows(ruleset, Probe(BY_KEY["x/c"].ip, BY_KEY["x/a"].ip, "TCP", 80))


def test_s12_block_matches_addresses_outside_the_cluster() -> None:
    text = policy("x", "egress-doc", """
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress: [{to: [{ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.128/25]}}]}]
""")
    assert _allows(text, _ip("x/a"), "203.0.113.5")
    assert not _allows(text, _ip("x/a"), "203.0.113.200")
    assert not _allows(text, _ip("x/a"), _ip("x/b"))


# S13, S14 -----------------------------------------------------------------------------------


def test_s13_empty_port_entry_is_any_tcp_port_only() -> None:
    text = policy("x", "tcp", "podSelector: {}\ningress: [{ports: [{}]}]\n")
    assert _allows(text, _ip("y/a"), _ip("x/a"), "TCP", 65535)
    assert not _allows(text, _ip("y/a"), _ip("x/a"), "UDP", 80)
    assert not _allows(text, _ip("y/a"), _ip("x/a"), "ICMP", None)


@pytest.mark.parametrize(("port", "allowed"), [(999, False), (1000, True), (1500, True),
                                               (2000, True), (2001, False)])
def test_s14_end_port_is_inclusive(port: int, allowed: bool) -> None:
    text = policy("x", "range",
                  "podSelector: {}\ningress: [{ports: [{port: 1000, endPort: 2000}]}]")
    assert _allows(text, _ip("y/a"), _ip("x/a"), "TCP", port) is allowed


# S15 ----------------------------------------------------------------------------------------

NAMED_INVENTORY = """
namespaces: [{name: x}]
pods:
  - {name: a, namespace: x, labels: {app: web}, ip: 198.18.1.2,
     ports: [{name: http, port: 8080}, {name: dns, port: 53, protocol: UDP}]}
  - {name: b, namespace: x, labels: {app: web}, ip: 198.18.2.2,
     ports: [{name: http, port: 9090}]}
  - {name: c, namespace: x, labels: {app: client}, ip: 198.18.3.2}
"""


def test_s15_named_port_is_resolved_per_receiving_pod_for_ingress() -> None:
    text = policy("x", "http", "podSelector: {matchLabels: {app: web}}\n"
                  "ingress: [{ports: [{port: http}]}]\n")
    for dst, port, allowed in (("198.18.1.2", 8080, True), ("198.18.1.2", 9090, False),
                               ("198.18.2.2", 9090, True), ("198.18.2.2", 8080, False)):
        assert _allows(text, "198.18.3.2", dst, "TCP", port, inventory=NAMED_INVENTORY) is allowed


def test_s15_named_port_is_resolved_per_peer_pod_for_egress() -> None:
    text = policy("x", "to-http", "podSelector: {matchLabels: {app: client}}\n"
                  "policyTypes: [Egress]\negress: [{ports: [{port: http}]}]\n")
    for dst, port, allowed in (("198.18.1.2", 8080, True), ("198.18.1.2", 9090, False),
                               ("198.18.2.2", 9090, True), ("203.0.113.1", 8080, False)):
        assert _allows(text, "198.18.3.2", dst, "TCP", port, inventory=NAMED_INVENTORY) is allowed


def test_s15_named_port_needs_the_protocol_too() -> None:
    text = policy("x", "dns", "podSelector: {matchLabels: {app: web}}\n"
                  "ingress: [{ports: [{port: dns}]}]\n")  # TCP by default; dns is UDP
    assert not _allows(text, "198.18.3.2", "198.18.1.2", "UDP", 53, inventory=NAMED_INVENTORY)
    assert not _allows(text, "198.18.3.2", "198.18.1.2", "TCP", 53, inventory=NAMED_INVENTORY)
    udp = text.replace("{port: dns}", "{port: dns, protocol: UDP}")
    assert _allows(udp, "198.18.3.2", "198.18.1.2", "UDP", 53, inventory=NAMED_INVENTORY)


# S16, S17, S18 ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["UDP", "SCTP"])
def test_s16_other_protocol_rule_still_isolates_tcp(protocol: str) -> None:
    text = policy("x", "only", f"podSelector: {{}}\ningress: [{{ports: [{{port: 80, "
                  f"protocol: {protocol}}}]}}]\n")
    assert not _allows(text, _ip("y/a"), _ip("x/a"), "TCP", 80)
    assert _allows(text, _ip("y/a"), _ip("x/a"), protocol, 80)


def test_s17_the_node_talks_to_isolated_pods() -> None:
    """Only FORWARD is filtered: the node's own traffic (INPUT, OUTPUT) is never touched."""
    ruleset = k8s.compile_to_ir(load(policy("x", "deny", "podSelector: {}\n"
                                            "policyTypes: [Ingress, Egress]\n")))
    node = Prefix.parse("198.18.1.1").network
    pod = Prefix.parse(_ip("x/a")).network
    to_node = Packet(family=Family.IP, proto=6, saddr=pod, daddr=node, sport=40000, dport=22)
    from_node = Packet(family=Family.IP, proto=6, saddr=node, daddr=pod, sport=40000, dport=80,
                       path=Path.LOCAL)
    host = Host(local=frozenset({(Family.IP, node)}))
    assert evaluate(ruleset, to_node, host).verdict is Verdict.ACCEPT
    assert evaluate(ruleset, from_node, host).verdict is Verdict.ACCEPT
    assert [c.hook.value for t in ruleset.tables for c in t.chains if c.hook] == ["FORWARD"]


def test_s18_admin_network_policy_is_refused() -> None:
    text = ("apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n"
            "metadata: {name: a}\nspec: {}\n")
    with pytest.raises(RulecError) as info:
        k8s.load_texts(("cluster.yaml", inventory_yaml()), [("anp.yaml", text)])
    assert "AdminNetworkPolicy and BaselineAdminNetworkPolicy are a different API" in \
        info.value.render()


# Structure ----------------------------------------------------------------------------------


def _grown_inventory(pods_per_namespace: int) -> str:
    lines = ["namespaces: [{name: x, labels: {ns: x}}, {name: y, labels: {ns: y}}]", "pods:"]
    for n in range(pods_per_namespace):
        for i, ns in enumerate("xy"):
            lines.append(f"  - {{name: p{n}, namespace: {ns}, labels: {{tier: t{n % 3}}}, "
                         f"ip: 198.18.{i}.{n + 2}, ports: [{{name: web, port: 80}}]}}")
    return "\n".join(lines) + "\n"


def test_policy_rules_do_not_grow_with_pods_or_peers() -> None:
    text = policy("x", "web", """
podSelector: {matchLabels: {tier: t0}}
ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}}, {podSelector: {}}]
    ports: [{port: 80}, {port: 443}]
  - from: [{ipBlock: {cidr: 198.18.0.0/15, except: [198.18.1.0/24]}}]
    ports: [{port: web}]
""")

    def policy_rules(pods: int) -> int:
        cluster = k8s.load_texts(("c.yaml", _grown_inventory(pods)), [("p.yaml", text)])
        ruleset = compiled(cluster)
        return sum(1 for _, c, _ in iter_rules(ruleset) if c.name.startswith("pol-"))

    assert policy_rules(6) == policy_rules(60) == 2


def test_every_policy_rule_comment_names_policy_and_rule_index() -> None:
    cluster = load("".join(c.policies for c in CASES[1:4]))
    for _, chain, rule in iter_rules(k8s.compile_to_ir(cluster)):
        if chain.name.startswith("pol-"):
            assert rule.comment is not None
            key, _, where = rule.comment.partition(" ")
            assert key in {p.key for p in cluster.policies}
            assert where.startswith(("ingress[", "egress[")) and where.endswith("]")


def test_peers_are_named_sets_of_one_family() -> None:
    cluster = load(CASES[8].policies, dual_stack=True)
    names = {(r.match.saddr.name, r.match.saddr.families) for _, c, r in
             iter_rules(compiled(cluster)) if r.match.saddr is not None and c.name[:4] == "pol-"}
    assert names == {("x_and_peer_in0_ip", frozenset({Family.IP})),
                     ("x_and_peer_in0_ip6", frozenset({Family.IP6})),
                     ("x_or_peers_in0_ip", frozenset({Family.IP})),
                     ("x_or_peers_in0_ip6", frozenset({Family.IP6}))}


def test_set_names_stay_unique_when_policy_names_meet() -> None:
    text = policy("x", "a-b", "podSelector: {}\ningress: [{from: [{podSelector: {}}]}]\n") + \
        policy("x", "a.b", "podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}}]}]\n")
    names = {r.match.saddr.name for _, _, r in iter_rules(k8s.compile_to_ir(load(text)))
             if r.match.saddr is not None}
    assert len(names) == 2 and "x_a_b_in0_ip" in names
