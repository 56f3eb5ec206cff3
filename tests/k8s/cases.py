"""Policy cases over the 3x3 model, each covering semantics rules (S1-S16) and carrying a few
hand-derived expectations: (source, destination, protocol, port) -> allowed. The full truth
table of a case comes from tests.k8s.oracle; the spot checks keep the oracle honest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Probe = tuple[str, str, str, int]


@dataclass(frozen=True)
class Case:
    name: str
    covers: tuple[str, ...]
    policies: str
    expect: dict[Probe, bool] = field(default_factory=dict)


def policy(namespace: str, name: str, spec: str) -> str:
    body = "\n".join("  " + line for line in spec.strip("\n").splitlines())
    return (f"---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
            f"metadata: {{namespace: {namespace}, name: {name}}}\nspec:\n{body}\n")


CASES = [
    Case("no-policies", ("S1",), "",
         {("x/a", "y/b", "TCP", 80): True, ("z/c", "x/a", "UDP", 81): True}),
    Case("deny-ingress-one-pod", ("S1", "S6", "S7"), policy("x", "deny-a", """
podSelector: {matchLabels: {pod: a}}
"""), {("y/b", "x/a", "TCP", 80): False, ("x/b", "x/a", "UDP", 81): False,
       ("x/a", "y/b", "TCP", 80): True, ("x/b", "x/c", "TCP", 80): True}),
    Case("allow-all-is-additive", ("S2", "S7"), policy("x", "deny-all", """
podSelector: {}
ingress: []
""") + policy("x", "allow-all-to-a", """
podSelector: {matchLabels: {pod: a}}
ingress: [{}]
"""), {("z/c", "x/a", "UDP", 80): True, ("z/c", "x/b", "TCP", 80): False,
       ("x/a", "x/b", "TCP", 81): False}),
    Case("egress-deny-beats-ingress-allow", ("S3", "S9"), policy("x", "deny-egress-a", """
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
""") + policy("y", "allow-from-x-a", """
podSelector: {matchLabels: {pod: b}}
ingress:
  - from:
      - namespaceSelector: {matchLabels: {ns: x}}
        podSelector: {matchLabels: {pod: a}}
"""), {("x/a", "y/b", "TCP", 80): False, ("x/b", "y/b", "TCP", 80): False,
       ("x/a", "z/a", "UDP", 80): False, ("z/a", "y/b", "TCP", 80): False,
       ("y/a", "x/a", "TCP", 80): True}),
    Case("replies-pass-isolated-direction", ("S4", "S1"), policy("x", "b-ingress-from-a", """
podSelector: {matchLabels: {pod: b}}
policyTypes: [Ingress, Egress]
ingress:
  - from: [{podSelector: {matchLabels: {pod: a}}}]
"""), {("x/a", "x/b", "TCP", 80): True, ("x/a", "x/b", "UDP", 81): True,
       ("x/b", "x/a", "TCP", 80): False, ("x/c", "x/b", "TCP", 80): False}),
    Case("empty-selector-selects-namespace", ("S5",), policy("y", "deny-all", """
podSelector: {}
policyTypes: [Ingress]
""") + policy("z", "selects-nobody", """
podSelector: {matchLabels: {pod: nobody}}
policyTypes: [Ingress, Egress]
"""), {("x/a", "y/a", "TCP", 80): False, ("x/a", "y/c", "UDP", 81): False,
       ("x/a", "z/a", "TCP", 80): True, ("z/b", "x/c", "UDP", 80): True}),
    Case("policy-types-defaulting", ("S6", "S7"), policy("x", "egress-only-rules", """
podSelector: {matchLabels: {pod: a}}
egress:
  - to: [{namespaceSelector: {matchLabels: {ns: y}}}]
""") + policy("x", "empty-egress-list", """
podSelector: {matchLabels: {pod: b}}
egress: []
"""), {("y/a", "x/a", "TCP", 80): False, ("x/a", "y/c", "TCP", 80): True,
       ("x/a", "z/c", "TCP", 80): False, ("x/b", "z/c", "TCP", 80): True,
       ("z/a", "x/b", "TCP", 80): False}),
    Case("rules-or-ports-per-rule", ("S8",), policy("x", "two-rules", """
podSelector: {matchLabels: {pod: a}}
ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
    ports: [{port: 80}]
  - from: [{podSelector: {matchLabels: {pod: c}}}]
    ports: [{port: 81, protocol: UDP}]
"""), {("x/b", "x/a", "TCP", 80): True, ("x/b", "x/a", "UDP", 81): False,
       ("x/c", "x/a", "UDP", 81): True, ("x/c", "x/a", "TCP", 80): False}),
    Case("peers-and-within-or-across", ("S9",), policy("x", "and-peer", """
podSelector: {matchLabels: {pod: a}}
ingress:
  - from:
      - namespaceSelector: {matchLabels: {ns: y}}
        podSelector: {matchLabels: {pod: b}}
""") + policy("x", "or-peers", """
podSelector: {matchLabels: {pod: c}}
ingress:
  - from:
      - namespaceSelector: {matchLabels: {ns: y}}
      - podSelector: {matchLabels: {pod: b}}
"""), {("y/b", "x/a", "TCP", 80): True, ("y/a", "x/a", "TCP", 80): False,
       ("x/b", "x/a", "TCP", 80): False, ("y/a", "x/c", "TCP", 80): True,
       ("x/b", "x/c", "TCP", 80): True, ("z/b", "x/c", "TCP", 80): False}),
    Case("namespace-selector-all", ("S9",), policy("y", "from-everywhere", """
podSelector: {}
ingress:
  - from: [{namespaceSelector: {}}]
    ports: [{port: 80}]
"""), {("z/c", "y/a", "TCP", 80): True, ("z/c", "y/a", "TCP", 81): False}),
    Case("match-expressions", ("S10",), policy("x", "in-notin", """
podSelector: {matchExpressions: [{key: role, operator: NotIn, values: [front]}]}
ingress:
  - from:
      - namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [y, z]}]}
        podSelector: {matchExpressions: [{key: role, operator: Exists}]}
""") + policy("y", "does-not-exist", """
podSelector: {matchLabels: {pod: a}}
ingress:
  - from:
      - namespaceSelector: {}
        podSelector:
          matchLabels: {pod: c}
          matchExpressions: [{key: role, operator: DoesNotExist}]
"""), {("y/a", "x/b", "TCP", 80): True, ("y/c", "x/b", "TCP", 80): False,
       ("y/a", "x/c", "UDP", 80): True, ("x/a", "x/b", "TCP", 80): False,
       ("y/b", "x/a", "TCP", 80): True, ("z/c", "y/a", "TCP", 80): True,
       ("z/b", "y/a", "TCP", 80): False}),
    Case("namespace-by-name-label", ("S11",), policy("x", "from-z-by-name", """
podSelector: {}
ingress:
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}]
"""), {("z/b", "x/a", "TCP", 80): True, ("y/b", "x/a", "TCP", 80): False}),
    Case("ip-block-except", ("S12",), policy("x", "cidr-except", """
podSelector: {matchLabels: {pod: a}}
ingress:
  - from:
      - ipBlock: {cidr: 198.18.0.0/20, except: [198.18.4.0/22, 198.18.8.0/24]}
""") + policy("x", "except-allowed-elsewhere", """
podSelector: {matchLabels: {pod: a}}
ingress:
  - from: [{ipBlock: {cidr: 198.18.5.2/32}}]
    ports: [{port: 81}]
""") + policy("y", "egress-cidr", """
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
  - to: [{ipBlock: {cidr: 198.18.0.0/15, except: [198.18.1.0/24]}}]
"""), {("x/b", "x/a", "TCP", 80): True, ("y/a", "x/a", "TCP", 80): False,
       ("y/b", "x/a", "TCP", 80): False, ("y/b", "x/a", "TCP", 81): True,
       ("z/b", "x/a", "TCP", 80): False, ("z/c", "x/a", "UDP", 80): True,
       ("y/a", "x/b", "TCP", 80): True, ("y/a", "x/a", "TCP", 81): False}),
    Case("protocol-defaults-to-tcp", ("S13", "S16"), policy("x", "any-tcp", """
podSelector: {matchLabels: {pod: a}}
ingress:
  - ports: [{}]
""") + policy("y", "all-udp", """
podSelector: {matchLabels: {pod: a}}
ingress:
  - ports: [{protocol: UDP}]
"""), {("z/a", "x/a", "TCP", 81): True, ("z/a", "x/a", "UDP", 80): False,
       ("z/a", "y/a", "UDP", 81): True, ("z/a", "y/a", "TCP", 80): False}),
    Case("end-port-range", ("S14",), policy("x", "range", """
podSelector: {matchLabels: {pod: a}}
ingress:
  - ports: [{port: 79, endPort: 80}, {port: 81, endPort: 81, protocol: UDP}]
"""), {("y/a", "x/a", "TCP", 80): True, ("y/a", "x/a", "TCP", 81): False,
       ("y/a", "x/a", "UDP", 81): True, ("y/a", "x/a", "UDP", 80): False}),
    Case("named-ports", ("S15", "S16"), policy("x", "named-ingress", """
podSelector: {matchLabels: {pod: a}}
ingress:
  - ports: [{port: serve-81-tcp}, {port: serve-80-udp}]
""") + policy("y", "named-wrong-protocol", """
podSelector: {matchLabels: {pod: a}}
ingress:
  - ports: [{port: serve-80-udp, protocol: TCP}, {port: nobody-serves}]
""") + policy("z", "named-egress", """
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
  - to: [{namespaceSelector: {}}]
    ports: [{port: serve-80-tcp}]
"""), {("y/b", "x/a", "TCP", 81): True, ("y/b", "x/a", "TCP", 80): False,
       ("y/b", "x/a", "UDP", 80): False, ("y/b", "x/a", "UDP", 81): False,
       ("x/b", "y/a", "TCP", 80): False, ("x/b", "y/a", "UDP", 80): False,
       ("z/a", "x/b", "TCP", 80): True, ("z/a", "x/b", "TCP", 81): False,
       ("z/a", "x/a", "TCP", 80): False}),
    Case("protocol-isolation", ("S16",), policy("x", "udp-only", """
podSelector: {matchLabels: {pod: a}}
ingress:
  - ports: [{port: 80, protocol: UDP}]
""") + policy("y", "sctp-only", """
podSelector: {matchLabels: {pod: b}}
ingress:
  - ports: [{port: 80, protocol: SCTP}]
"""), {("z/a", "x/a", "TCP", 80): False, ("z/a", "x/a", "UDP", 80): True,
       ("z/a", "y/b", "TCP", 80): False, ("z/a", "y/b", "UDP", 80): False}),
]

COVERED = sorted({rule for case in CASES for rule in case.covers},
                 key=lambda r: int(r[1:]))


def case_id(case: Case) -> str:
    """`S3+S9-egress-deny-beats-ingress-allow`: the rules a case covers, then its name."""
    return f"{'+'.join(case.covers)}-{case.name}"
