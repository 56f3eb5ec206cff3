"""For random inventories and policies, written out as YAML and read back like user input, the
compiled node (through the reference evaluator, after each target's optimiser) allows exactly
the connections the oracle allows, and passes the replies of those it allows.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rulec.frontends import k8s
from tests.k8s.harness import compiled, disagreements, node_allows, pair_probes

PROPERTY = settings(max_examples=settings.default.max_examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NAMESPACES = ("a", "b", "c")
POD_LABELS = {"app": ("web", "db"), "role": ("r1", "r2")}
NS_LABELS = {"env": ("prod", "dev"), "team": ("t1", "t2")}
CONTAINER_PORTS = ({"name": "http", "port": 80}, {"name": "http", "port": 8080},
                   {"name": "dns", "port": 53, "protocol": "UDP"},
                   {"name": "alt", "port": 81, "protocol": "TCP"},
                   {"name": "sctp", "port": 80, "protocol": "SCTP"})
CIDRS = (("198.18.0.0/24", ("198.18.0.0/30", "198.18.0.4/32")), ("198.18.0.0/29", ()),
         ("0.0.0.0/0", ("198.18.0.0/31",)), ("203.0.113.0/24", ()),
         ("fd00::/64", ("fd00::/126",)), ("::/0", ()))
KINDS = (("TCP", 80), ("TCP", 81), ("TCP", 8080), ("UDP", 53), ("UDP", 80), ("SCTP", 80),
         ("ICMP", None))
OUTSIDE = ("203.0.113.9", "198.18.0.200", "2001:db8::9")


def labels(pool: dict[str, tuple[str, ...]]) -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in pool.items()})


def selectors(pool: dict[str, tuple[str, ...]]) -> st.SearchStrategy[dict[str, Any]]:
    keys = sorted(pool)
    expression = st.one_of(
        st.builds(lambda k, op, vs: {"key": k, "operator": op, "values": vs},
                  st.sampled_from(keys), st.sampled_from(["In", "NotIn"]),
                  st.lists(st.sampled_from(("web", "db", "r1", "prod", "t2")), min_size=1,
                           max_size=2, unique=True)),
        st.builds(lambda k, op: {"key": k, "operator": op}, st.sampled_from(keys),
                  st.sampled_from(["Exists", "DoesNotExist"])))
    return st.fixed_dictionaries({}, optional={
        "matchLabels": labels(pool), "matchExpressions": st.lists(expression, max_size=2)})


@st.composite
def peers(draw: st.DrawFn) -> dict[str, Any]:
    # A drawn kind, not st.one_of: one_of drew the ipBlock branch for 6% of peers.
    kind = draw(st.sampled_from(["pod", "namespace", "both", "ipBlock", "ipBlock"]))
    if kind == "ipBlock":
        cidr, inside = draw(st.sampled_from(CIDRS))
        excepts = draw(st.lists(st.sampled_from(inside), min_size=1, unique=True)) if inside else []
        return {"ipBlock": {"cidr": cidr, **({"except": excepts} if excepts else {})}}
    peer: dict[str, Any] = {}
    if kind in ("pod", "both"):
        peer["podSelector"] = draw(selectors(POD_LABELS))
    if kind in ("namespace", "both"):
        peer["namespaceSelector"] = draw(selectors(NS_LABELS))
    return peer


def port_entries() -> st.SearchStrategy[dict[str, Any]]:
    def entry(protocol: str | None, port: int | str | None, width: int | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if protocol is not None:
            out["protocol"] = protocol
        if port is not None:
            out["port"] = port
            if isinstance(port, int) and width is not None:
                out["endPort"] = port + width
        return out

    return st.builds(entry, st.sampled_from([None, None, "TCP", "UDP", "SCTP"]),
                     st.sampled_from([None, 53, 80, 81, 8000, "http", "http", "dns", "alt",
                                      "sctp", "nope"]),
                     st.sampled_from([None, 0, 1, 100]))


@st.composite
def rules(draw: st.DrawFn, peer_key: str) -> dict[str, Any]:
    # Shapes are drawn from lists, so that hypothesis's preference for the empty and the
    # missing does not starve the cases with peers and ports.
    rule: dict[str, Any] = {}
    for key, items in ((peer_key, peers()), ("ports", port_entries())):
        shape = draw(st.sampled_from(["some", "some", "missing", "empty"]))
        if shape != "missing":
            rule[key] = draw(st.lists(items, min_size=1, max_size=2)) if shape == "some" else []
    return rule


@st.composite
def clusters(draw: st.DrawFn) -> tuple[str, str]:
    """(inventory YAML, policies YAML)."""
    namespaces = [{"name": n, "labels": draw(labels(NS_LABELS))}
                  for n in NAMESPACES[:draw(st.integers(1, 3))]]
    dual = draw(st.booleans())
    pods = []
    for i in range(draw(st.integers(2, 6))):
        pod: dict[str, Any] = {
            "name": f"p{i}", "namespace": draw(st.sampled_from(namespaces))["name"],
            "labels": draw(labels(POD_LABELS)),
            "ports": draw(st.lists(st.sampled_from(CONTAINER_PORTS), min_size=1, max_size=3,
                                   unique_by=lambda p: p["name"]))}
        if dual:
            pod["ips"] = [f"198.18.0.{i + 1}", f"fd00::{i + 1}"]
        else:
            pod["ip"] = f"198.18.0.{i + 1}"
        pods.append(pod)
    policies = []
    for i in range(draw(st.sampled_from([1, 2, 3, 4, 0]))):
        spec: dict[str, Any] = {"podSelector": draw(selectors(POD_LABELS))}
        types = draw(st.sampled_from([None, [], ["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
        if types is not None:
            spec["policyTypes"] = types
        for key, peer_key in (("ingress", "from"), ("egress", "to")):
            shape = draw(st.sampled_from(["some", "some", "missing", "empty"]))
            if shape != "missing":
                spec[key] = (draw(st.lists(rules(peer_key), min_size=1, max_size=2))
                             if shape == "some" else [])
        policies.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                         "metadata": {"namespace": draw(st.sampled_from(namespaces))["name"],
                                      "name": f"np{i}"},
                         "spec": spec})
    return (yaml.safe_dump({"namespaces": namespaces, "pods": pods}),
            yaml.safe_dump_all(policies))


@PROPERTY
@given(clusters())
def test_compiled_node_allows_exactly_what_the_semantics_allow(texts: tuple[str, str]) -> None:
    inventory, policies = texts
    cluster = k8s.load_texts(("cluster.yaml", inventory), [("policy.yaml", policies)])
    addresses = [str(a) for pod in cluster.inventory.pods for a in pod.addresses]
    probes = list(pair_probes(addresses + list(OUTSIDE), KINDS))
    for target in ("nft", "iptables"):
        wrong = disagreements(cluster, compiled(cluster, target), probes)
        assert wrong == [], f"{target}: {wrong[:5]}\n{inventory}---\n{policies}"


def test_the_generator_reaches_both_verdicts() -> None:
    """Guard against a generator that only ever makes open (or closed) clusters."""
    seen: set[bool] = set()

    @settings(max_examples=60, deadline=None, database=None)
    @given(clusters())
    def collect(texts: tuple[str, str]) -> None:
        cluster = k8s.load_texts(("cluster.yaml", texts[0]), [("policy.yaml", texts[1])])
        ruleset = compiled(cluster)
        pods = [str(p.addresses[0]) for p in cluster.inventory.pods]
        for probe in pair_probes(pods, KINDS[:2]):
            seen.add(node_allows(ruleset, probe))

    collect()
    assert seen == {True, False}


def test_ipv6_only_peers_allow_nothing_to_ipv4_only_receivers() -> None:
    # Found by the property test: with a named port, the receivers' set had only IPv4 and
    # the peers' only IPv6; no family had both, and the rule came out testing no address.
    inventory = (
        "namespaces:\n- {name: a, labels: {}}\npods:\n"
        "- {ip: 198.18.0.1, labels: {}, name: p0, namespace: a, "
        "ports: [{name: http, port: 80}]}\n"
        "- {ip: 198.18.0.2, labels: {}, name: p1, namespace: a, "
        "ports: [{name: http, port: 80}]}\n")
    policies = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                "metadata: {name: np0, namespace: a}\nspec:\n  podSelector: {}\n  ingress:\n"
                "  - from:\n    - ipBlock: {cidr: '::/0'}\n    ports:\n    - port: http\n")
    cluster = k8s.load_texts(("cluster.yaml", inventory), [("policy.yaml", policies)])
    probes = list(pair_probes(["198.18.0.1", "198.18.0.2", *OUTSIDE], KINDS))
    for target in ("nft", "iptables"):
        assert disagreements(cluster, compiled(cluster, target), probes) == [], target
