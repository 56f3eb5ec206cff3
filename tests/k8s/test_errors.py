"""Bad NetworkPolicy or inventory input: `rulec compile --inventory` prints an error naming the
file, line, object (`namespace/name`) and field path, exits 1 and emits nothing."""

# ruff: noqa: E501  (the expected messages are quoted whole, as the user sees them)

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from rulec import cli

INVENTORY = """\
namespaces: [{name: x, labels: {ns: x}}]
pods:
  - {name: a, namespace: x, labels: {app: web}, ip: 198.18.0.2}
"""
HEAD = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"


def compile_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str,
                  inventory: str = INVENTORY, target: str = "nft") -> tuple[int, str, str]:
    (tmp_path / "cluster.yaml").write_text(inventory, encoding="utf-8")
    (tmp_path / "policy.yaml").write_text(policy, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["compile", "--inventory", "cluster.yaml", "policy.yaml",
                         "--target", target])
    return code, out.getvalue(), err.getvalue()


CASES = {
    "missing-field": (HEAD + "metadata: {namespace: x}\nspec: {}\n", """\
policy.yaml:3:11: error[E0602]: x/?: metadata.name: missing field
   3 | metadata: {namespace: x}
     |           ^^^^^^^^^^^^^^
"""),
    "unknown-operator": (HEAD + """\
metadata: {namespace: x, name: web}
spec:
  podSelector:
    matchExpressions: [{key: app, operator: Inn, values: [web]}]
""", """\
policy.yaml:6:45: error[E0606]: x/web: spec.podSelector.matchExpressions[0].operator: unknown operator 'Inn'
   6 |     matchExpressions: [{key: app, operator: Inn, values: [web]}]
     |                                             ^^^
note: did you mean In?
"""),
    "end-port-below-port": (HEAD + """\
metadata: {namespace: x, name: web}
spec:
  ingress:
    - ports: [{port: 90, endPort: 80}]
""", """\
policy.yaml:6:35: error[E0607]: x/web: spec.ingress[0].ports[0].endPort: endPort 80 is below port 90
   6 |     - ports: [{port: 90, endPort: 80}]
     |                                   ^^
"""),
    "end-port-with-named-port": (HEAD + """\
metadata: {namespace: x, name: web}
spec:
  ingress:
    - ports: [{port: http, endPort: 90}]
""", """\
policy.yaml:6:37: error[E0607]: x/web: spec.ingress[0].ports[0].endPort: endPort cannot be used with the named port 'http'
   6 |     - ports: [{port: http, endPort: 90}]
     |                                     ^^
note: a range needs numeric ports
"""),
    "except-outside-cidr": (HEAD + """\
metadata: {namespace: x, name: web}
spec:
  egress:
    - to:
        - ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}
""", """\
policy.yaml:7:48: error[E0608]: x/web: spec.egress[0].to[0].ipBlock.except[0]: 11.0.0.0/16 is not inside cidr 10.0.0.0/8
   7 |         - ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}
     |                                                ^^^^^^^^^^^
note: every except must be a strict subset of the cidr
"""),
    "yaml-syntax-error": (HEAD + "metadata: {namespace: x, name: a\nspec: {}\n", """\
policy.yaml:4:5: error[E0601]: YAML syntax error: expected ',' or '}', but got ':'
   4 | spec: {}
     |     ^
note: while parsing a flow mapping
"""),
    "peer-with-nothing": (HEAD + """\
metadata: {namespace: x, name: web}
spec:
  ingress:
    - from: [{podSelector: null}]
""", """\
policy.yaml:6:14: error[E0608]: x/web: spec.ingress[0].from[0]: a peer needs podSelector, namespaceSelector or ipBlock
   6 |     - from: [{podSelector: null}]
     |              ^^^^^^^^^^^^^^^^^^^
"""),
    "admin-network-policy": ("""\
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: a}
""", """\
policy.yaml:2:7: error[E0605]: kind: expected NetworkPolicy, found string 'AdminNetworkPolicy'
   2 | kind: AdminNetworkPolicy
     |       ^^^^^^^^^^^^^^^^^^
note: AdminNetworkPolicy and BaselineAdminNetworkPolicy are a different API, which rulec does not implement
"""),
    "control-character": (HEAD + """\
metadata: {namespace: x, name: web}
spec:
  podSelector:
    matchLabels: {app: "we\x01b"}
""", """\
policy.yaml:6:27: error[E0601]: x/web: spec.podSelector.matchLabels.app: control character U+0001 is not allowed in YAML
   6 |     matchLabels: {app: "we\ufffdb"}
     |                           ^
"""),
    "nested-too-deep": (HEAD + """\
metadata: {namespace: x, name: web}
spec:
  podSelector:
    matchLabels: {app: """ + "[" * 70 + "]" * 70 + """}
""", """\
policy.yaml:6:84: error[E0611]: x/web: spec.podSelector.matchLabels.app[0][0][...54 more...][0][0][0][0]: nested more than 64 levels deep
   6 | ...""" + "[" * 50 + "]" * 70 + """...
     | """ + " " * 43 + """^
"""),
    "integer-out-of-range": (HEAD + """\
metadata: {namespace: x, name: web}
spec:
  ingress:
    - ports: [{port: 123456789012345678901234567890}]
""", """\
policy.yaml:6:22: error[E0612]: x/web: spec.ingress[0].ports[0].port: the number 123456789012...(30 characters) is out of range
   6 |     - ports: [{port: 123456789012345678901234567890}]
     |                      ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
note: Kubernetes reads integers of 64 bits
"""),
    "unsupported-tag": (HEAD + """\
metadata: {namespace: x, name: web}
spec:
  podSelector: !!set {app}
""", """\
policy.yaml:5:16: error[E0612]: x/web: spec.podSelector: the tag !!set is not supported: Kubernetes objects hold only strings, numbers, booleans, null, lists and mappings
   5 |   podSelector: !!set {app}
     |                ^
"""),
    "policy-defined-twice": (HEAD + "metadata: {namespace: x, name: web}\nspec: {}\n---\n" + HEAD
                             + "metadata: {namespace: x, name: web}\nspec: {}\n", """\
policy.yaml:8:32: error[E0610]: x/web: metadata.name: NetworkPolicy defined twice
   8 | metadata: {namespace: x, name: web}
     |                                ^^^
note: first defined at policy.yaml:3:32
"""),
}


@pytest.mark.parametrize("name", CASES)
def test_policy_error(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy, expected = CASES[name]
    code, out, err = compile_files(tmp_path, monkeypatch, policy)
    assert (code, out) == (cli.EXIT_POLICY, "")
    assert err == expected + "rulec: 1 error; nothing was emitted\n"


def test_pod_without_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inventory = "namespaces: [{name: x}]\npods:\n  - {name: a, namespace: x}\n"
    code, out, err = compile_files(tmp_path, monkeypatch, HEAD + "metadata: {namespace: x, "
                                   "name: a}\nspec: {}\n", inventory)
    assert (code, out) == (cli.EXIT_POLICY, "")
    assert err == """\
cluster.yaml:3:5: error[E0609]: x/a: pods[0]: pod has no address
   3 |   - {name: a, namespace: x}
     |     ^^^^^^^^^^^^^^^^^^^^^^^
note: give it `ip: <address>` (or `ips:` for dual stack)
rulec: 1 error; nothing was emitted
"""


def test_every_error_of_a_pod_is_reported(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An invalid address (or namespace) used to end the pod's checks there."""
    inventory = """\
namespaces: [{name: x}]
pods:
  - name: a
    namespace: y
    ip: 198.18.0.300
    labels: {app: 'we b'}
    ports: [{name: http, port: 0}]
"""
    code, out, err = compile_files(tmp_path, monkeypatch, HEAD + "metadata: {namespace: x, "
                                   "name: a}\nspec: {}\n", inventory)
    assert (code, out) == (cli.EXIT_POLICY, "")
    assert err == """\
cluster.yaml:4:16: error[E0609]: y/a: pods[0].namespace: namespace 'y' is not in the inventory's namespaces
   4 |     namespace: y
     |                ^
cluster.yaml:5:9: error[E0609]: y/a: pods[0].ip: invalid address: '198.18.0.300' does not appear to be an IPv4 or IPv6 address
   5 |     ip: 198.18.0.300
     |         ^^^^^^^^^^^^
cluster.yaml:6:19: error[E0605]: y/a: pods[0].labels.app: invalid label value 'we b'
   6 |     labels: {app: 'we b'}
     |                   ^^^^^^
note: up to 63 characters of [A-Za-z0-9_.-], starting and ending alphanumeric, or empty
cluster.yaml:7:32: error[E0607]: y/a: pods[0].ports[0].port: port 0 is out of range (1-65535)
   7 |     ports: [{name: http, port: 0}]
     |                                ^
rulec: 4 errors; nothing was emitted
"""


def test_pod_address_clash_points_at_the_address(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    inventory = INVENTORY + "  - {name: b, namespace: x, ip: 198.18.0.2}\n"
    code, _, err = compile_files(tmp_path, monkeypatch, HEAD + "metadata: {namespace: x, "
                                 "name: a}\nspec: {}\n", inventory)
    assert code == cli.EXIT_POLICY
    assert err == """\
cluster.yaml:4:33: error[E0609]: x/b: pods[1]: pod x/b has the address of pod x/a
   4 |   - {name: b, namespace: x, ip: 198.18.0.2}
     |                                 ^^^^^^^^^^
note: pod addresses are unique in a cluster
note: x/a has it at line 3
rulec: 1 error; nothing was emitted
"""


NAMED_INVENTORY = """\
namespaces: [{name: x}]
pods:
  - {name: a, namespace: x, labels: {app: web}, ip: 198.18.0.2,
     ports: [{name: http, port: 80}, {name: dns, port: 53, protocol: UDP}]}
"""
WEB = HEAD + "metadata: {namespace: x, name: web}\nspec:\n  podSelector: {matchLabels: {app: web}}\n"
WARNINGS = {
    "W0601-namespace-not-in-inventory": (HEAD + """\
metadata:
  name: web
  namespace: prod
spec: {}
""", INVENTORY, """\
policy.yaml:5:14: warning[W0601]: prod/web: metadata.namespace: namespace 'prod' is not in the inventory, so the policy selects no pod
   5 |   namespace: prod
     |              ^^^^
"""),
    "W0602-host-bits": (HEAD + """\
metadata: {namespace: x, name: web}
spec:
  ingress:
    - from: [{ipBlock: {cidr: 10.1.2.3/8}}]
""", INVENTORY, """\
policy.yaml:6:31: warning[W0602]: x/web: spec.ingress[0].from[0].ipBlock.cidr: 10.1.2.3/8 has host bits set; it means 10.0.0.0/8
   6 |     - from: [{ipBlock: {cidr: 10.1.2.3/8}}]
     |                               ^^^^^^^^^^
"""),
    "W0603-named-port-typo": (WEB + "  ingress:\n    - ports: [{port: htp}]\n", NAMED_INVENTORY, """\
policy.yaml:7:22: warning[W0603]: x/web: spec.ingress[0].ports[0].port: no selected pod declares a TCP port named 'htp', so this entry allows nothing
   7 |     - ports: [{port: htp}]
     |                      ^^^
note: did you mean http?
note: the selected pods declare dns (UDP), http (TCP)
"""),
    "W0603-named-port-of-another-protocol": (WEB + "  ingress:\n    - ports: [{port: dns}]\n",
                                             NAMED_INVENTORY, """\
policy.yaml:7:22: warning[W0603]: x/web: spec.ingress[0].ports[0].port: no selected pod declares a TCP port named 'dns', so this entry allows nothing
   7 |     - ports: [{port: dns}]
     |                      ^^^
note: 'dns' is declared for UDP; this entry's protocol is TCP
note: the selected pods declare dns (UDP), http (TCP)
"""),
    "W0603-named-port-of-no-peer-pod": (WEB + """\
  policyTypes: [Egress]
  egress:
    - to: [{ipBlock: {cidr: 203.0.113.0/24}}]
      ports: [{port: http}]
""", NAMED_INVENTORY, """\
policy.yaml:9:22: warning[W0603]: x/web: spec.egress[0].ports[0].port: no peer pod declares a TCP port named 'http', so this entry allows nothing
   9 |       ports: [{port: http}]
     |                      ^^^^
note: the rule's peers hold no pod, and a named port matches only pods
"""),
}


@pytest.mark.parametrize("name", WARNINGS)
def test_warning(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy, inventory, expected = WARNINGS[name]
    code, out, err = compile_files(tmp_path, monkeypatch, policy, inventory)
    assert (code, err) == (cli.EXIT_OK, expected)
    assert out


def test_named_ports_that_some_pod_serves_do_not_warn(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    policy = WEB + ("  ingress:\n    - ports: [{port: http}, {port: dns, protocol: UDP}]\n"
                    "  egress:\n    - ports: [{port: http}]\n")
    code, _, err = compile_files(tmp_path, monkeypatch, policy, NAMED_INVENTORY)
    assert (code, err) == (cli.EXIT_OK, "")


def test_every_error_of_every_file_is_reported_at_once(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    policies = "---\n".join(CASES[n][0].replace("name: web", f"name: web{i}") for i, n in
                            enumerate(("missing-field", "unknown-operator", "end-port-below-port")))
    code, out, err = compile_files(tmp_path, monkeypatch, policies, target="iptables")
    assert (code, out) == (cli.EXIT_POLICY, "")
    assert [line.split(": error[")[1][:5] for line in err.splitlines() if ": error[" in line] \
        == ["E0602", "E0606", "E0607"]
    assert err.endswith("rulec: 3 errors; nothing was emitted\n")


def test_hostile_names_never_reach_the_output(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Names and labels are checked as the API server checks them, so a quote or a newline in
    one is an error, never text spliced into a rule."""
    policy = HEAD + 'metadata: {namespace: x, name: "a\\" accept #"}\nspec: {}\n'
    code, out, err = compile_files(tmp_path, monkeypatch, policy)
    assert (code, out) == (cli.EXIT_POLICY, "")
    assert "error[E0605]: x/a\" accept #: metadata.name: invalid name" in err


def test_a_valid_policy_compiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = HEAD + "metadata: {namespace: x, name: web}\nspec:\n  podSelector: {}\n"
    code, out, err = compile_files(tmp_path, monkeypatch, policy)
    assert (code, err) == (cli.EXIT_OK, "")
    assert 'drop comment "x/a isolated for ingress by x/web"' in out


def test_docs_list_every_code_the_frontend_raises() -> None:
    root = Path(__file__).resolve().parents[2]
    source = "".join(p.read_text(encoding="utf-8")
                     for p in (root / "rulec" / "frontends" / "k8s").glob("*.py"))
    doc = (root / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    raised = set(re.findall(r'"([EW]06\d\d)"', source))
    assert raised and raised <= set(re.findall(r"\b([EW]06\d\d)\b", doc))
