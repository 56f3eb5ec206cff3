"""Inputs for fuzzing the Kubernetes frontend: real inventories and policies (the goldens, the
3x3 model with every semantics case, the docs, the error cases) mutated as text (YAML syntax:
indicators, anchors, tags, control characters, huge numbers) and as trees (values replaced by
odd or plausible ones, keys dropped or added, subtrees shared so that the dump has aliases),
written back as block or flow YAML, JSON, several documents or a List.

`run_cli` is how the fuzz tests and `python -m tests.k8s.fuzz_campaign` run an input.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from hypothesis import strategies as st

from rulec import cli
from tests.k8s import cases, model3x3
from tests.k8s import test_errors as error_cases

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "k8s" / "golden"
TARGETS = ("iptables", "ip6tables", "nft", "nft-json")
HANG_SECONDS = 30  # one compile of these small inputs takes milliseconds


def _doc_blocks() -> list[str]:
    text = (ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    return [m.group(1) for m in re.finditer(r"```yaml\n(.*?)```", text, re.S)]


def seed_pairs() -> list[tuple[str, str]]:
    """(inventory, policies) texts that belong together."""
    pairs = []
    for case in sorted(p for p in GOLDEN.iterdir() if p.is_dir()):
        pairs.append(((case / "cluster.yaml").read_text(encoding="utf-8"),
                      (case / "policy.yaml").read_text(encoding="utf-8")))
    model = model3x3.inventory_yaml()
    dual = model3x3.inventory_yaml(dual_stack=True)
    for i, case in enumerate(cases.CASES):
        if case.policies.strip():
            pairs.append((dual if i % 3 == 0 else model, case.policies))
    golden_policy = pairs[0][1]
    for block in _doc_blocks():
        if "namespaces:" in block:
            pairs.append((block, golden_policy))
    for policy, _ in error_cases.CASES.values():
        pairs.append((error_cases.INVENTORY, policy))
    for policy, inventory, _ in error_cases.WARNINGS.values():
        pairs.append((inventory, policy))
    return pairs


SEEDS = seed_pairs()

# ---------------------------------------------------------------------------------------------
# Values

FIELDS = ("apiVersion", "kind", "metadata", "spec", "items", "name", "namespace", "labels",
          "podSelector", "namespaceSelector", "ipBlock", "cidr", "except", "ports", "port",
          "endPort", "protocol", "from", "to", "ingress", "egress", "policyTypes",
          "matchLabels", "matchExpressions", "key", "operator", "values", "namespaces", "pods",
          "ip", "ips", "containerPort", "status", "annotations", "<<")
PLAUSIBLE = (
    0, 1, 53, 80, 81, 443, 8080, 9000, 65535, "http", "dns", "dns-tcp", "serve-80-tcp",
    "serve-81-udp", "metrics", "TCP", "UDP", "SCTP", "In", "NotIn", "Exists", "DoesNotExist",
    "Ingress", "Egress", "10.0.0.0/8", "198.18.0.0/15", "198.18.0.0/24", "198.18.1.2/32",
    "0.0.0.0/0", "::/0", "fd00::/64", "fd00:1::2/128", "2001:db8::/32", "203.0.113.0/24",
    "198.18.1.2", "198.18.9.2", "198.18.200.2", "fd00:5::2", "x", "y", "z", "a", "b", "c",
    "web", "db", "front", "back", "prod", "kube-system", "kubernetes.io/metadata.name",
    "n" * 63, ("a" * 63 + ".") * 3 + "a" * 61, "a-b.c-d", "x9", "v" * 63,  # longest names
    "app", "role", "pod", "ns", "env", "NetworkPolicy", "List", "networking.k8s.io/v1", "",
    None, True, False, [], {},
)
ODD = (
    -1, 65536, 2**31, 2**63 - 1, 2**63, 2**64, 10**30, 0.5, 80.0, 1e300, float("nan"),
    float("inf"), "a" * 64, "a" * 300, "x/y", "é" * 8, "a\nb", "a b", "-", "--a", "$x", '"',
    "\\", "'", "on", "1:30", "2024-01-01", "0x50", "0o120", "1e3", "80", "tcp", "ICMP", "%s",
    "\x00", "\x1b[31m", "\u202e", "\ufeff", "<<", "*", "&", "!", "# c", "{}", "[]", "~",
    "10.0.0.1/33", "300.1.1.1", "10.0.0.0/08", "::ffff:1.2.3.4", "fe80::1%eth0",
    "198.18.1.2/24", "0.0.0.0/32", "kubernetes.io/", "a/b/c", "A" * 16,
)
SCALARS = st.one_of(st.sampled_from(PLAUSIBLE), st.sampled_from(ODD),
                    st.integers(-3, 70_000), st.text(max_size=8))
VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS, lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=4)), inner,
                        max_size=3)),
    max_leaves=8)

# ---------------------------------------------------------------------------------------------
# Tree mutations


def _spots(tree: Any) -> list[tuple[Any, Any]]:
    """(container, key or index) of every value in the tree, each shared container (a later
    alias, perhaps a cycle) visited once."""
    found: list[tuple[Any, Any]] = []
    stack, seen = [tree], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        items: Any = node.items() if isinstance(node, dict) else enumerate(node) \
            if isinstance(node, list) else ()
        for key, value in items:
            found.append((node, key))
            stack.append(value)
    return found


@st.composite
def tree_mutations(draw: st.DrawFn, docs: list[Any], *, plausible: bool) -> list[Any]:
    docs = copy.deepcopy(docs)
    root: dict[str, Any] = {"docs": docs}
    for _ in range(draw(st.integers(1, 4))):
        spots = _spots(root)[1:]  # not the list of documents itself
        if not spots:
            break
        node, key = draw(st.sampled_from(spots))
        kinds = ["replace", "replace", "delete", "add", "duplicate", "share"]
        kind = draw(st.sampled_from(kinds))
        if kind == "replace":
            value = draw(st.sampled_from(PLAUSIBLE) if plausible else VALUES)
            node[key] = copy.deepcopy(value)
        elif kind == "delete":
            del node[key]
        elif kind == "add" and isinstance(node[key], dict):
            node[key][draw(st.sampled_from(FIELDS))] = copy.deepcopy(
                draw(st.sampled_from(PLAUSIBLE) if plausible else VALUES))
        elif kind == "add" and isinstance(node[key], list):
            node[key].append(copy.deepcopy(draw(st.sampled_from(PLAUSIBLE) if plausible
                                                else VALUES)))
        elif kind == "duplicate" and isinstance(node, list):
            node.insert(key, copy.deepcopy(node[key]))
        elif kind == "share":  # the same object twice: PyYAML writes an anchor and an alias
            other, other_key = draw(st.sampled_from(spots))
            if isinstance(node[key], dict | list) and other is not node[key]:
                with contextlib.suppress(KeyError, IndexError):
                    other[other_key] = node[key]
    return docs


def _dump(draw: st.DrawFn, docs: list[Any]) -> str:
    """The documents as YAML (block, flow or mixed; one stream or a List) or as JSON."""
    docs = [d for d in docs if d is not None] or [None]
    form = draw(st.sampled_from(["block", "flow", "default", "list", "json", "json-tabs"]))
    try:
        if form in ("json", "json-tabs"):
            doc = docs[0] if len(docs) == 1 else {"apiVersion": "v1", "kind": "List",
                                                  "items": docs}
            return json.dumps(doc, indent="\t" if form == "json-tabs" else 2,
                              ensure_ascii=draw(st.booleans()))
        if form == "list":
            docs = [{"apiVersion": "v1", "kind": "List", "items": docs}]
        flow = {"block": False, "flow": True, "default": None, "list": False}[form]
        return yaml.safe_dump_all(docs, default_flow_style=flow, sort_keys=draw(st.booleans()),
                                  allow_unicode=draw(st.booleans()),
                                  explicit_start=draw(st.booleans()))
    except (ValueError, TypeError, yaml.YAMLError, RecursionError):
        return yaml.safe_dump_all([str(docs)[:200]])  # a shared cycle or NaN key: just text


# ---------------------------------------------------------------------------------------------
# Text mutations

SYNTAX = (": ", ":", "- ", "-", "[", "]", "{", "}", ",", "\n", "\n  ", "  ", "\t", "#", "'",
          '"', "|", ">", "? ", "&a ", "*a", "&b [*a, *a] ", "<<: ", "<<: *a\n", "---\n",
          "...\n", "%YAML 1.1\n", "!!str ", "!!int ", "!!binary ", "!!python/object:os.system ",
          "!local ", "! ", "~", "null", "on", "y", "\x00", "\x01", "\x1b", "\x7f", "\x85",
          "\u2028", "\ufeff", "\ud800", "9" * 400, "9" * 5000, "0x" + "f" * 40, "1e400",
          ".nan", "-.inf", "[" * 80, "[" * 10_000, "{a: " * 70)


@st.composite
def text_mutations(draw: st.DrawFn, text: str) -> str:
    tokens = re.findall(r"\S+|\s+", text) or [""]
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(("delete", "insert", "insert", "duplicate", "swap", "char")))
        i = draw(st.integers(0, len(tokens) - 1))
        j = draw(st.integers(i, min(len(tokens), i + 6)))
        if edit == "delete":
            del tokens[i:j]
        elif edit == "insert":
            tokens.insert(i, draw(st.one_of(st.sampled_from(SYNTAX), st.text(max_size=4))))
        elif edit == "duplicate":
            tokens[i:i] = tokens[i:j]
        elif edit == "swap" and j > i:
            tokens[i], tokens[j - 1] = tokens[j - 1], tokens[i]
        elif edit == "char" and tokens:
            k = draw(st.integers(0, len(tokens[i])))
            tokens[i] = tokens[i][:k] + draw(st.characters()) + tokens[i][k + 1:]
        if not tokens:
            tokens = [""]
    return "".join(tokens)


@functools.cache
def _documents(text: str) -> list[Any] | None:
    """A seed's documents as PyYAML reads them; None for the seeds that are not YAML."""
    try:
        return list(yaml.safe_load_all(text))
    except (yaml.YAMLError, ValueError):
        return None


@st.composite
def mutated_file(draw: st.DrawFn, text: str, *, plausible: bool = False) -> str:
    modes = ["tree"] if plausible else ["tree", "tree", "text", "tree+text", "none"]
    mode = draw(st.sampled_from(modes))
    docs = _documents(text)
    if docs is None:
        mode = "none" if plausible else "text"
    if mode == "none":
        return text
    if "tree" in mode:
        assert docs is not None
        text = _dump(draw, draw(tree_mutations(docs, plausible=plausible)))
    if "text" in mode:
        text = draw(text_mutations(text))
    return text


@dataclass(frozen=True, slots=True)
class Input:
    inventory: str
    policy: str
    target: str


@st.composite
def inputs(draw: st.DrawFn, *, plausible: bool = False) -> Input:
    """An inventory and a policy file, one or both mutated, and a target. `plausible`: tree
    mutations with plausible values only, so that many inputs compile."""
    inventory, policy = draw(st.sampled_from(SEEDS))
    which = draw(st.sampled_from(["policy", "policy", "inventory", "both"]))
    if which in ("policy", "both"):
        policy = draw(mutated_file(policy, plausible=plausible))
    if which in ("inventory", "both"):
        inventory = draw(mutated_file(inventory, plausible=plausible))
    return Input(inventory, policy, draw(st.sampled_from(TARGETS)))


# ---------------------------------------------------------------------------------------------
# Running


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise Hang in the main thread after `seconds`, so that a hang fails instead of waiting."""
    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise Hang(f"no answer after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def write(directory: Path, case: Input) -> tuple[Path, Path]:
    inventory, policy = directory / "cluster.yaml", directory / "policy.yaml"
    # surrogatepass: a lone surrogate from st.text() becomes invalid UTF-8 on disk.
    inventory.write_bytes(case.inventory.encode("utf-8", errors="surrogatepass"))
    policy.write_bytes(case.policy.encode("utf-8", errors="surrogatepass"))
    return inventory, policy


def run_cli(directory: Path, case: Input, target: str | None = None) -> tuple[int, str, str]:
    """`rulec compile --inventory` on the input: exit status, standard output and error."""
    inventory, policy = write(directory, case)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            time_limit(HANG_SECONDS):
        code = cli.main(["compile", "--inventory", str(inventory), str(policy),
                         "--target", target or case.target])
    return code, out.getvalue(), err.getvalue()
