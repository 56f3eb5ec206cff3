"""The typed cluster model: NetworkPolicy objects and the inventory, validated as strictly as
the API server does, every error naming file, line, object (`namespace/name`) and field path.

Codes: E0601 syntax, E0602 missing field, E0603 unknown field, E0604 wrong type, E0605 invalid
value, E0606 bad selector, E0607 bad port, E0608 bad peer or ipBlock, E0609 bad inventory,
E0610 duplicate, E0611 past rulec's limits, E0612 a value Kubernetes cannot hold; W0601-W0603
warnings.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rulec.diagnostics import Collector, SourceFile, Span
from rulec.frontends.k8s.source import Path, YList, YMap, clip, documents, format_path, quote
from rulec.ir.values import Family, Prefix

PROTOCOLS = ("TCP", "UDP", "SCTP")
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
POLICY_TYPES = ("Ingress", "Egress")
NAMESPACE_LABEL = "kubernetes.io/metadata.name"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
_PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9]|-(?=[a-z0-9]))*\Z")  # IANA_SVC_NAME, no "--"
_METADATA = frozenset({
    "name", "namespace", "labels", "annotations", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generateName",
    "selfLink", "finalizers", "ownerReferences", "managedFields",
})


# --------------------------------------------------------------------------------------------
# The model


Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # one of OPERATORS
    values: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Selector:
    """A LabelSelector: every matchLabels pair and every requirement must hold."""

    match_labels: Labels = ()
    expressions: tuple[Requirement, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.match_labels and not self.expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels):
            return False
        for req in self.expressions:
            present = req.key in labels
            match req.operator:
                case "In":
                    ok = present and labels[req.key] in req.values
                case "NotIn":
                    ok = not present or labels[req.key] not in req.values
                case "Exists":
                    ok = present
                case _:
                    ok = not present
            if not ok:
                return False
        return True


@dataclass(frozen=True, slots=True)
class IPBlock:
    cidr: Prefix
    excepts: tuple[Prefix, ...] = ()


@dataclass(frozen=True, slots=True)
class Peer:
    """One entry of `from`/`to`: selectors (either or both), or an ipBlock."""

    pod_selector: Selector | None = None
    namespace_selector: Selector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True, slots=True)
class PortEntry:
    protocol: str  # defaulted: TCP
    port: int | str | None = None
    end_port: int | None = None
    span: Span | None = field(default=None, compare=False)
    path: str = field(default="", compare=False)  # e.g. spec.ingress[0].ports[1]
    port_span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """An ingress or egress rule; `peers`/`ports` None means the list was empty or missing."""

    index: int
    peers: tuple[Peer, ...] | None
    ports: tuple[PortEntry, ...] | None
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Policy:
    namespace: str
    name: str
    pod_selector: Selector
    # As written: None when `policyTypes` is absent (the compiler applies the defaulting).
    policy_types: tuple[str, ...] | None
    ingress: tuple[PolicyRule, ...]
    egress: tuple[PolicyRule, ...]
    span: Span | None = field(default=None, compare=False)
    namespace_span: Span | None = field(default=None, compare=False)
    name_span: Span | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    labels: Labels
    span: Span | None = field(default=None, compare=False)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True, slots=True)
class ContainerPort:
    port: int
    protocol: str = "TCP"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    labels: Labels
    addresses: tuple[Prefix, ...]  # host prefixes, IPv4 before IPv6
    ports: tuple[ContainerPort, ...] = ()
    span: Span | None = field(default=None, compare=False)
    address_spans: tuple[Span, ...] = field(default=(), compare=False)  # as `addresses`
    name_span: Span | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True, slots=True)
class Inventory:
    namespaces: tuple[Namespace, ...]
    pods: tuple[Pod, ...]


# --------------------------------------------------------------------------------------------
# Reading, with errors that say where


class _Object:
    """Error reporting for one object: `file:line:col: error[E06xx]: ns/name: path: message`."""

    def __init__(self, out: Collector, label: str) -> None:
        self.out = out
        self.label = label
        self.count = 0  # errors reported through this object

    def error(self, code: str, path: str, message: str, span: Span, *notes: str) -> None:
        where = f"{path}: " if path else ""
        self.count += 1
        self.out.error(code, f"{self.label}: {where}{message}", span, *notes)

    def warning(self, code: str, path: str, message: str, span: Span, *notes: str) -> None:
        where = f"{path}: " if path else ""
        self.out.warning(code, f"{self.label}: {where}{message}", span, *notes)

    def fields(self, value: YMap, path: str, allowed: Iterable[str],
               required: Iterable[str] = ()) -> bool:
        """Report unknown and missing fields; False if a required one is missing."""
        known = tuple(allowed)
        for key in value:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                note = [f"did you mean {close[0]}?"] if close else [
                    "known fields: " + ", ".join(known)]
                self.error("E0603", _join(path, key), "unknown field", value.key_span(key), *note)
        complete = True
        for key in required:
            if value.get(key) is None:
                self.error("E0602", _join(path, key), "missing field" if key not in value
                           else "missing field (it is null)", value.value_span(key))
                complete = False
        return complete

    def typed(self, value: Any, kind: type, what: str, path: str, span: Span) -> bool:
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            self.error("E0604", path, f"expected {what}, found {_describe(value)}", span)
        return ok

    def mapping(self, parent: YMap, key: str, path: str) -> YMap | None:
        value = parent.get(key)
        if value is None:
            return None
        return value if self.typed(value, YMap, "a mapping", _join(path, key),
                                   parent.value_span(key)) else None

    def sequence(self, parent: YMap, key: str, path: str) -> YList | None:
        value = parent.get(key)
        if value is None:
            return None
        return value if self.typed(value, YList, "a list", _join(path, key),
                                   parent.value_span(key)) else None

    def string(self, parent: YMap, key: str, path: str) -> str | None:
        value = parent.get(key)
        if value is None:
            return None
        return value if self.typed(value, str, "a string", _join(path, key),
                                   parent.value_span(key)) else None

    def labels(self, parent: YMap, key: str, path: str, *, values: bool = True) -> Labels:
        """A map of label key -> value (matchLabels, metadata.labels), checked for syntax."""
        value = self.mapping(parent, key, path)
        if value is None:
            return ()
        here = _join(path, key)
        pairs = []
        for name, text in value.items():
            span = value.value_span(name)
            if not label_key_ok(name):
                self.error("E0605", here, f"invalid label key {quote(name)}", value.key_span(name),
                           "a key is [prefix/]name: name up to 63 characters of [A-Za-z0-9_.-] "
                           "starting and ending alphanumeric, prefix a DNS subdomain")
                continue
            if not isinstance(text, str):
                self.error("E0604", f"{here}.{name}", f"label values are strings, found "
                           f"{_describe(text)}", span,
                           "quote it: YAML reads yes, no, on, off, numbers and null as non-strings")
                continue
            if values and not label_value_ok(text):
                self.error("E0605", f"{here}.{name}", f"invalid label value {quote(text)}", span,
                           "up to 63 characters of [A-Za-z0-9_.-], starting and ending "
                           "alphanumeric, or empty")
                continue
            pairs.append((name, text))
        return tuple(sorted(pairs))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _first_at(span: Span | None) -> list[str]:
    return [f"first at line {span.line}"] if span is not None else []


def object_label(namespace: Any, name: Any) -> str:
    return (f"{clip(namespace) if isinstance(namespace, str) else '?'}/"
            f"{clip(name) if isinstance(name, str) else '?'}")


def _where(label: str, path: Path) -> str:
    return f"{label}: {format_path(path)}" if path else label


def policy_where(root: Any, path: Path) -> str:
    """The object and path of a spot in a policy file's document, as _Object names them: a
    List's item by its own metadata, with the path inside it."""
    label, rest = "document", path
    if len(path) >= 2 and path[0] == "items" and isinstance(path[1], int):
        items = root.get("items") if isinstance(root, YMap) else None
        label, rest = f"items[{path[1]}]", path[2:]
        root = items[path[1]] if isinstance(items, YList) and path[1] < len(items) else None
    meta = root.get("metadata") if isinstance(root, YMap) else None
    if isinstance(meta, YMap):
        label = object_label(meta.get("namespace"), meta.get("name"))
    return _where(label, rest)


def inventory_where(root: Any, path: Path) -> str:
    """A pod's problems name the pod, everything else the inventory."""
    label = "inventory"
    if len(path) >= 2 and path[0] == "pods" and isinstance(path[1], int):
        pods = root.get("pods") if isinstance(root, YMap) else None
        pod = pods[path[1]] if isinstance(pods, YList) and path[1] < len(pods) else None
        if isinstance(pod, YMap):
            label = object_label(pod.get("namespace"), pod.get("name"))
    return _where(label, path)


def _describe(value: Any) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return f"boolean {str(value).lower()}"
        case int():
            return f"number {value}"
        case float():
            return f"number {value}"
        case str():
            return f"string {quote(value)}"
        case YMap() | dict():
            return "a mapping"
        case YList() | list():
            return "a list"
        case _:
            return type(value).__name__


def label_key_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and _LABEL_NAME.match(name) is not None


def label_value_ok(value: str) -> bool:
    return value == "" or (len(value) <= 63 and _LABEL_NAME.match(value) is not None)


def parse_prefix(text: str, *, host: bool) -> tuple[Prefix | None, str | None, bool]:
    """(prefix, problem, had host bits): a host address, or a CIDR read as the API server reads
    it (host bits are cleared, as netutils.ParseCIDRSloppy does)."""
    try:
        if host:
            address = ipaddress.ip_address(text)
            family = Family.IP if address.version == 4 else Family.IP6
            return Prefix(family, int(address), family.bits), None, False
        if "/" not in text:
            return None, f"{quote(text)} is not a CIDR (write e.g. {clip(text)}/32)", False
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        return None, str(exc).replace(repr(text), quote(text)), False
    family = Family.IP if net.version == 4 else Family.IP6
    cleared = str(net) != text and int(ipaddress.ip_interface(text).ip) != int(net.network_address)
    return Prefix(family, int(net.network_address), net.prefixlen), None, cleared


# --------------------------------------------------------------------------------------------
# NetworkPolicy


def _selector(obj: _Object, parent: YMap, key: str, path: str) -> Selector | None:
    value = obj.mapping(parent, key, path)
    if value is None:
        return None
    here = _join(path, key)
    obj.fields(value, here, ("matchLabels", "matchExpressions"))
    match_labels = obj.labels(value, "matchLabels", here)
    expressions = []
    items = obj.sequence(value, "matchExpressions", here)
    for i, item in enumerate(items or ()):
        where = f"{here}.matchExpressions[{i}]"
        span = items.item_spans[i] if items is not None else value.span
        if not obj.typed(item, YMap, "a mapping", where, span):
            continue
        if not obj.fields(item, where, ("key", "operator", "values"), ("key", "operator")):
            continue
        label, operator = obj.string(item, "key", where), obj.string(item, "operator", where)
        if label is None or operator is None:
            continue
        if not label_key_ok(label):
            obj.error("E0605", f"{where}.key", f"invalid label key {quote(label)}",
                      item.value_span("key"))
            continue
        if operator not in OPERATORS:
            close = difflib.get_close_matches(operator, OPERATORS, n=1)
            obj.error("E0606", f"{where}.operator", f"unknown operator {quote(operator)}",
                      item.value_span("operator"),
                      f"did you mean {close[0]}?" if close else
                      "operators: " + ", ".join(OPERATORS))
            continue
        raw = obj.sequence(item, "values", where)
        values = []
        for j, text in enumerate(raw or ()):
            span_j = raw.item_spans[j] if raw is not None else item.span
            if obj.typed(text, str, "a string", f"{where}.values[{j}]", span_j):
                values.append(text)
        if operator in ("In", "NotIn") and not values:
            obj.error("E0606", f"{where}.values", f"operator {operator} needs at least one value",
                      item.value_span("values") if "values" in item else item.span)
            continue
        if operator in ("Exists", "DoesNotExist") and raw:
            obj.error("E0606", f"{where}.values", f"operator {operator} takes no values",
                      item.value_span("values"))
            continue
        expressions.append(Requirement(label, operator, frozenset(values)))
    return Selector(match_labels, tuple(expressions))


def _ip_block(obj: _Object, value: YMap, path: str) -> IPBlock | None:
    if not obj.fields(value, path, ("cidr", "except"), ("cidr",)):
        return None
    text = obj.string(value, "cidr", path)
    if text is None:
        return None
    cidr, problem, cleared = parse_prefix(text, host=False)
    if cidr is None:
        obj.error("E0608", f"{path}.cidr", f"invalid cidr: {problem}", value.value_span("cidr"))
        return None
    if cleared:
        obj.warning("W0602", f"{path}.cidr", f"{text} has host bits set; it means {cidr}",
                    value.value_span("cidr"))
    excepts = []
    items = obj.sequence(value, "except", path)
    for i, item in enumerate(items or ()):
        where = f"{path}.except[{i}]"
        span = items.item_spans[i] if items is not None else value.span
        if not obj.typed(item, str, "a string", where, span):
            continue
        prefix, problem, _ = parse_prefix(item, host=False)
        if prefix is None:
            obj.error("E0608", where, f"invalid cidr: {problem}", span)
        elif prefix.family is not cidr.family:
            obj.error("E0608", where, f"{item} is not of the family of cidr {cidr}", span)
        elif not (cidr.first <= prefix.first and prefix.last <= cidr.last) or prefix == cidr:
            obj.error("E0608", where, f"{item} is not inside cidr {cidr}", span,
                      "every except must be a strict subset of the cidr")
        else:
            excepts.append(prefix)
    return IPBlock(cidr, tuple(sorted(set(excepts), key=lambda p: p.sort_key)))


def _peers(obj: _Object, rule: YMap, key: str, path: str) -> tuple[Peer, ...] | None:
    items = obj.sequence(rule, key, path)
    if not items:
        return None  # empty or missing: every peer
    peers = []
    for i, item in enumerate(items):
        where = f"{path}.{key}[{i}]"
        if not obj.typed(item, YMap, "a mapping", where, items.item_spans[i]):
            continue
        obj.fields(item, where, ("podSelector", "namespaceSelector", "ipBlock"))
        pods = _selector(obj, item, "podSelector", where)
        namespaces = _selector(obj, item, "namespaceSelector", where)
        block_map = obj.mapping(item, "ipBlock", where)
        if block_map is not None and (pods is not None or namespaces is not None):
            obj.error("E0608", where, "ipBlock cannot be combined with podSelector or "
                      "namespaceSelector in one peer", items.item_spans[i],
                      "make them two peers (OR) instead")
            continue
        if block_map is None and pods is None and namespaces is None:
            # Also for `podSelector: null`: the API server refuses a peer with nothing set.
            # (A value of the wrong type was reported where it was read.)
            if all(item.get(k) is None for k in ("podSelector", "namespaceSelector", "ipBlock")):
                obj.error("E0608", where, "a peer needs podSelector, namespaceSelector or "
                          "ipBlock", items.item_spans[i])
            continue
        if block_map is not None:
            block = _ip_block(obj, block_map, f"{where}.ipBlock")
            if block is not None:
                peers.append(Peer(ip_block=block))
        else:
            peers.append(Peer(pod_selector=pods, namespace_selector=namespaces))
    return tuple(peers)


def _port_entries(obj: _Object, rule: YMap, path: str) -> tuple[PortEntry, ...] | None:
    items = obj.sequence(rule, "ports", path)
    if not items:
        return None  # empty or missing: every port of every protocol
    entries = []
    for i, item in enumerate(items):
        where = f"{path}.ports[{i}]"
        span = items.item_spans[i]
        if not obj.typed(item, YMap, "a mapping", where, span):
            continue
        obj.fields(item, where, ("protocol", "port", "endPort"))
        ok = True
        protocol = obj.string(item, "protocol", where) or "TCP"
        if protocol not in PROTOCOLS:
            obj.error("E0605", f"{where}.protocol", f"unknown protocol {quote(protocol)}",
                      item.value_span("protocol"), "protocols: TCP, UDP, SCTP")
            ok = False
        port, end = item.get("port"), item.get("endPort")
        if isinstance(port, str) and port.isdigit():
            obj.error("E0607", f"{where}.port", f"port {quote(port)} is a string of digits",
                      item.value_span("port"), "write the number without quotes")
            ok = False
        elif isinstance(port, str):
            if len(port) > 15 or not _PORT_NAME.match(port) or not re.search("[a-z]", port):
                obj.error("E0607", f"{where}.port", f"invalid port name {quote(port)}",
                          item.value_span("port"), "a port name is up to 15 characters of "
                          "[a-z0-9-] with at least one letter, no leading, trailing or double -")
                ok = False
        elif port is not None:
            if not obj.typed(port, int, "a number or a port name", f"{where}.port",
                             item.value_span("port")):
                ok = False
            elif not 1 <= port <= 65535:
                obj.error("E0607", f"{where}.port", f"port {port} is out of range (1-65535)",
                          item.value_span("port"))
                ok = False
        if end is not None:
            if not obj.typed(end, int, "a number", f"{where}.endPort", item.value_span("endPort")):
                ok = False
            elif port is None:
                obj.error("E0607", f"{where}.endPort", "endPort needs a port",
                          item.value_span("endPort"))
                ok = False
            elif isinstance(port, str):
                obj.error("E0607", f"{where}.endPort", f"endPort cannot be used with the named "
                          f"port {quote(port)}", item.value_span("endPort"),
                          "a range needs numeric ports")
                ok = False
            elif not 1 <= end <= 65535:
                obj.error("E0607", f"{where}.endPort", f"endPort {end} is out of range (1-65535)",
                          item.value_span("endPort"))
                ok = False
            elif isinstance(port, int) and end < port:
                obj.error("E0607", f"{where}.endPort", f"endPort {end} is below port {port}",
                          item.value_span("endPort"))
                ok = False
        if ok:
            entries.append(PortEntry(protocol, port, end, span, where,
                                     item.value_span("port") if port is not None else None))
    if not entries:
        return ()  # every entry was bad: errors were reported, nothing will be emitted
    return tuple(entries)


def _rules(obj: _Object, spec: YMap, key: str, peer_key: str) -> tuple[PolicyRule, ...]:
    items = obj.sequence(spec, key, "spec")
    rules = []
    for i, item in enumerate(items or ()):
        where = f"spec.{key}[{i}]"
        span = items.item_spans[i] if items is not None else spec.span
        if item is None:  # `- ` with nothing: an empty rule, as the API server reads it
            item = YMap()
            item.span, item.key_spans, item.value_spans = span, {}, {}
        if not obj.typed(item, YMap, "a mapping", where, span):
            continue
        obj.fields(item, where, (peer_key, "ports"))
        rules.append(PolicyRule(i, _peers(obj, item, peer_key, where),
                                _port_entries(obj, item, where), span))
    return tuple(rules)


def _policy(doc: YMap, span: Span, out: Collector, where: str) -> Policy | None:
    meta = doc.get("metadata")
    label = where
    if isinstance(meta, YMap):
        ns, name = meta.get("namespace"), meta.get("name")
        label = object_label(ns, name)
    obj = _Object(out, label)
    obj.fields(doc, "", ("apiVersion", "kind", "metadata", "spec", "status"),
               ("apiVersion", "kind", "metadata", "spec"))
    api_version = doc.get("apiVersion")
    if api_version is not None and api_version != "networking.k8s.io/v1":
        obj.error("E0605", "apiVersion", f"expected networking.k8s.io/v1, found "
                  f"{_describe(api_version)}", doc.value_span("apiVersion"))
    metadata = obj.mapping(doc, "metadata", "")
    spec = obj.mapping(doc, "spec", "")
    # Every part is checked even when another is wrong: one run reports every problem.
    namespace = name = None
    if metadata is not None:
        obj.fields(metadata, "metadata", _METADATA, ("name", "namespace"))
        namespace = obj.string(metadata, "namespace", "metadata")
        name = obj.string(metadata, "name", "metadata")
        for key, value, pattern in (("namespace", namespace, _DNS_LABEL),
                                    ("name", name, _DNS_SUBDOMAIN)):
            if value is not None and (len(value) > 253 or not pattern.match(value)):
                obj.error("E0605", f"metadata.{key}", f"invalid {key} {quote(value)}",
                          metadata.value_span(key), "lower-case letters, digits and -"
                          + (" (and . in names)" if key == "name" else ""))
                namespace = name = None
    if spec is None:
        return None
    obj.fields(spec, "spec", ("podSelector", "policyTypes", "ingress", "egress"))
    selector = _selector(obj, spec, "podSelector", "spec") or Selector()
    types: tuple[str, ...] | None = None
    raw_types = obj.sequence(spec, "policyTypes", "spec")
    if raw_types is not None:
        kept = []
        for i, item in enumerate(raw_types):
            if item not in POLICY_TYPES:
                obj.error("E0605", f"spec.policyTypes[{i}]", f"unknown policy type "
                          f"{_describe(item)}", raw_types.item_spans[i],
                          "policy types: Ingress, Egress")
            elif item not in kept:
                kept.append(item)
        # defaults.go defaults on len(policyTypes) == 0, so `policyTypes: []` is omitted (S6).
        types = tuple(kept) if raw_types else None
    ingress = _rules(obj, spec, "ingress", "from")
    egress = _rules(obj, spec, "egress", "to")
    if metadata is None or namespace is None or name is None:
        return None
    return Policy(namespace, name, selector, types, ingress, egress, span,
                  metadata.value_span("namespace"), metadata.value_span("name"))


def _kind(doc: Any, span: Span, out: Collector) -> str | None:
    if not isinstance(doc, YMap):
        out.error("E0604", f"a document must be a mapping (a Kubernetes object), found "
                  f"{_describe(doc)}", span)
        return None
    kind = doc.get("kind")
    if kind is None:
        out.error("E0602", "kind: missing field", doc.span)
        return None
    if kind not in ("NetworkPolicy", "List", "NetworkPolicyList"):
        note = ("AdminNetworkPolicy and BaselineAdminNetworkPolicy are a different API, which "
                "rulec does not implement" if isinstance(kind, str) and "Admin" in kind else
                "policy files hold NetworkPolicy objects (or a List of them)")
        out.error("E0605", f"kind: expected NetworkPolicy, found {_describe(kind)}",
                  doc.value_span("kind"), note)
        return None
    return str(kind)


def read_policies(source: SourceFile, out: Collector) -> list[Policy]:
    """Every NetworkPolicy of a file: multi-document streams and `kind: List` included."""
    policies: list[Policy] = []
    for doc, span in documents(source, out, policy_where):
        kind = _kind(doc, span, out)
        if kind is None:
            continue
        if kind == "NetworkPolicy":
            policy = _policy(doc, span, out, "document")
            if policy is not None:
                policies.append(policy)
            continue
        obj = _Object(out, kind)
        obj.fields(doc, "", ("apiVersion", "kind", "metadata", "items"), ("items",))
        items = obj.sequence(doc, "items", "")
        for i, item in enumerate(items or ()):
            item_span = items.item_spans[i] if items is not None else span
            if _kind(item, item_span, out) == "NetworkPolicy":
                policy = _policy(item, item_span, out, f"items[{i}]")
                if policy is not None:
                    policies.append(policy)
    return policies


# --------------------------------------------------------------------------------------------
# Inventory


def _container_ports(obj: _Object, pod: YMap, path: str) -> tuple[ContainerPort, ...]:
    items = obj.sequence(pod, "ports", path)
    ports: list[ContainerPort] = []
    names: set[str] = set()
    for i, item in enumerate(items or ()):
        where = f"{path}.ports[{i}]"
        span = items.item_spans[i] if items is not None else pod.span
        if not obj.typed(item, YMap, "a mapping", where, span):
            continue
        before = obj.count
        obj.fields(item, where, ("name", "port", "containerPort", "protocol"))
        number = item.get("port", item.get("containerPort"))
        key = "port" if "port" in item else "containerPort"
        if number is None:
            obj.error("E0602", f"{where}.port", "missing field", span)
        elif not obj.typed(number, int, "a number", f"{where}.{key}", item.value_span(key)):
            pass
        elif not 1 <= number <= 65535:
            obj.error("E0607", f"{where}.{key}", f"port {number} is out of range (1-65535)",
                      item.value_span(key))
        protocol = obj.string(item, "protocol", where) or "TCP"
        if protocol not in PROTOCOLS:
            obj.error("E0605", f"{where}.protocol", f"unknown protocol {quote(protocol)}",
                      item.value_span("protocol"), "protocols: TCP, UDP, SCTP")
        name = obj.string(item, "name", where)
        if name is not None:
            if len(name) > 15 or not _PORT_NAME.match(name) or not re.search("[a-z]", name):
                obj.error("E0607", f"{where}.name", f"invalid port name {quote(name)}",
                          item.value_span("name"))
            elif name in names:
                obj.error("E0610", f"{where}.name", f"port name {quote(name)} is used twice in "
                          "this pod", item.value_span("name"))
            names.add(name)
        if obj.count == before:
            ports.append(ContainerPort(number, protocol, name))
    return tuple(ports)


def _pod(obj_out: Collector, item: YMap, where: str, namespaces: dict[str, Namespace],
         broken: set[str]) -> Pod | None:
    """The pod, or None when it has errors; every error of the pod is reported."""
    obj = _Object(obj_out, object_label(item.get("namespace"), item.get("name")))
    obj.fields(item, where, ("name", "namespace", "labels", "ip", "ips", "ports"),
               ("name", "namespace"))
    namespace, pod_name = obj.string(item, "namespace", where), obj.string(item, "name", where)
    if namespace in broken:
        obj.count += 1  # its error is reported at the namespace
    elif namespace is not None and namespace not in namespaces:
        obj.error("E0609", f"{where}.namespace", f"namespace {quote(namespace)} is not in the "
                  "inventory's namespaces", item.value_span("namespace"))
    if pod_name is not None and (len(pod_name) > 253 or not _DNS_SUBDOMAIN.match(pod_name)):
        obj.error("E0605", f"{where}.name", f"invalid name {quote(pod_name)}",
                  item.value_span("name"))
    texts: list[tuple[str, Span, str]] = []
    if item.get("ip") is not None and obj.typed(item["ip"], str, "a string", f"{where}.ip",
                                                item.value_span("ip")):
        texts.append((item["ip"], item.value_span("ip"), f"{where}.ip"))
    ips = obj.sequence(item, "ips", where)
    for i, text in enumerate(ips or ()):
        span = ips.item_spans[i] if ips is not None else item.span
        if obj.typed(text, str, "a string", f"{where}.ips[{i}]", span):
            texts.append((text, span, f"{where}.ips[{i}]"))
    if not texts and item.get("ip") is None and not ips:
        obj.error("E0609", where, "pod has no address", item.span,
                  "give it `ip: <address>` (or `ips:` for dual stack)")
    addresses: dict[Prefix, Span] = {}
    for text, span, path in texts:
        prefix, problem, _ = parse_prefix(text, host=True)
        if prefix is None:
            obj.error("E0609", path, f"invalid address: {problem}", span)
        elif prefix in addresses:
            continue
        elif any(a.family is prefix.family for a in addresses):
            obj.error("E0609", path, "a pod has at most one address per family", span)
        else:
            addresses[prefix] = span
    labels = obj.labels(item, "labels", where)
    ports = _container_ports(obj, item, where)
    if obj.count or namespace is None or pod_name is None:
        return None
    ordered = sorted(addresses, key=lambda p: p.sort_key)
    return Pod(namespace, pod_name, labels, tuple(ordered), ports, item.span,
               tuple(addresses[a] for a in ordered), item.value_span("name"))


def read_inventory(source: SourceFile, out: Collector) -> Inventory:
    """The inventory: `namespaces` (name, labels) and `pods` (name, namespace, labels, ip or ips,
    ports); the first document of the file."""
    namespaces: dict[str, Namespace] = {}
    pods: dict[str, Pod] = {}
    owners: dict[Prefix, Pod] = {}
    docs = documents(source, out, inventory_where)
    if not docs:
        if not out.has_errors:
            out.error("E0602", "the inventory is empty: it needs `namespaces` and `pods`",
                      source.span(0, 1))
        return Inventory((), ())
    doc, span = docs[0]
    obj = _Object(out, "inventory")
    if not obj.typed(doc, YMap, "a mapping", "", span):
        return Inventory((), ())
    obj.fields(doc, "", ("namespaces", "pods"), ("namespaces",))
    broken: set[str] = set()  # namespaces listed with errors: their pods are not blamed
    for i, item in enumerate(obj.sequence(doc, "namespaces", "") or ()):
        where = f"namespaces[{i}]"
        item_span = doc["namespaces"].item_spans[i]
        if not obj.typed(item, YMap, "a mapping", where, item_span):
            continue
        before = obj.count
        obj.fields(item, where, ("name", "labels"), ("name",))
        name = obj.string(item, "name", where)
        labels = dict(obj.labels(item, "labels", where))
        if name is None:
            continue
        if len(name) > 63 or not _DNS_LABEL.match(name):
            obj.error("E0605", f"{where}.name", f"invalid namespace name {quote(name)}",
                      item.value_span("name"), "a DNS label: lower-case letters, digits and -")
        elif name in namespaces:
            obj.error("E0610", f"{where}.name", f"namespace {quote(name)} is listed twice",
                      item.value_span("name"), *_first_at(namespaces[name].span))
            continue
        stamped = labels.setdefault(NAMESPACE_LABEL, name)  # the API server stamps it
        if stamped != name:
            raw = item.get("labels")
            obj.error("E0609", f"{where}.labels.{NAMESPACE_LABEL}", f"must be {quote(name)}, the "
                      "namespace's own name", raw.value_span(NAMESPACE_LABEL)
                      if isinstance(raw, YMap) else item.span,
                      "the API server sets this label and keeps it equal to the name")
        if obj.count > before:
            broken.add(name)
            continue
        namespaces[name] = Namespace(name, tuple(sorted(labels.items())), item.span)
    for i, item in enumerate(obj.sequence(doc, "pods", "") or ()):
        where = f"pods[{i}]"
        item_span = doc["pods"].item_spans[i]
        if not obj.typed(item, YMap, "a mapping", where, item_span):
            continue
        pod = _pod(out, item, where, namespaces, broken)
        if pod is None:
            continue
        pod_obj = _Object(out, pod.key)
        first = pods.get(pod.key)
        if first is not None:
            pod_obj.error("E0610", f"{where}.name", f"pod {pod.key} is listed twice",
                          pod.name_span or item_span, *_first_at(first.span))
            continue
        clash = next(((a, s) for a, s in zip(pod.addresses, pod.address_spans, strict=True)
                      if a in owners), None)
        if clash is not None:
            other = owners[clash[0]]
            where_other = next((s for a, s in zip(other.addresses, other.address_spans,
                                                   strict=True) if a == clash[0]), None)
            pod_obj.error("E0609", where, f"pod {pod.key} has the address of pod {other.key}",
                          clash[1], "pod addresses are unique in a cluster",
                          *([f"{other.key} has it at line {where_other.line}"] if where_other
                            else []))
            continue
        pods[pod.key] = pod
        owners.update(dict.fromkeys(pod.addresses, pod))
    if len(docs) > 1:
        out.error("E0605", "the inventory is one document; this file has more",
                  docs[1][1])
    return Inventory(tuple(namespaces[n] for n in sorted(namespaces)),
                     tuple(pods[k] for k in sorted(pods)))
