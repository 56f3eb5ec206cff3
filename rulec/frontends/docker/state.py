"""A real host's state -> DockerHost: the JSON Docker prints, with every error at its line and
column in the JSON file.

A state file (docs/docker.md shows how to capture each) is one of:
- an array of inspect objects: `docker network inspect` networks and `docker inspect`
  containers, told apart by their keys;
- daemon.json, `docker info --format '{{json .}}'` or `docker version --format '{{json .}}'`:
  the daemon's settings and version;
- one object `{"daemon": {daemon.json}, "info": {docker info}, "version": {docker version},
  "networks": [...], "containers": [...]}` holding any of those.
Several files may be given; networks and containers are put in the order dockerd created them.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rulec.diagnostics import Collector, RulecError, SourceFile, Span
from rulec.frontends import read_input, source_name
from rulec.frontends.docker.json_source import JValue, parse
from rulec.frontends.docker.model import (
    Attachment,
    Container,
    Daemon,
    DockerHost,
    GatewayMode,
    Network,
    PortProto,
    Published,
    Subnet,
    Version,
    merge_daemons,
)
from rulec.ir.values import Family, Prefix

_OPT = "com.docker.network."
# daemon.json keys that change dockerd's rules -> Daemon field; the other keys are ignored.
_DAEMON_FLAGS = {"userland-proxy": "userland_proxy", "ip6tables": "ip6tables",
                 "experimental": "experimental",
                 "allow-direct-routing": "allow_direct_routing",
                 "ip-forward-no-drop": "ip_forward_no_drop"}
# Settings whose rules rulec does not reproduce: refused rather than silently left out.
_UNSUPPORTED_DAEMON = {"bridge-accept-fwmark": "--bridge-accept-fwmark"}
_UNSUPPORTED_OPTIONS = (_OPT + "bridge.trusted_host_interfaces",)
_PORT_KEY = re.compile(r"([0-9]{1,5})/(tcp|udp|sctp)\Z")
_HOST_PORT = re.compile(r"[0-9]{1,5}\Z")
_NO_RULES_DRIVERS = ("host", "null", "none")
_STATE_KEYS = ("daemon", "info", "version", "networks", "containers")
# daemon.json's keys are lower-case words with dashes; inspect and info output is CamelCase.
_DAEMON_KEY = re.compile(r"[a-z][a-z0-9-]*\Z")
_TIMESTAMP = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
                        r"(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})\Z")
_CONTAINER_KEYS = ("NetworkSettings", "State", "HostConfig")
_T = TypeVar("_T")
_When = tuple[int, int] | None  # (seconds, nanoseconds) since 1970
_NETWORK_KEYS = ("IPAM", "Scope", "Driver")


@dataclass
class _State:
    out: Collector
    daemon: Daemon | None = None
    daemon_json: Span | None = None  # where daemon.json was read, once
    networks: list[tuple[_When, Network]] = field(default_factory=list)
    containers: list[tuple[_When, Container]] = field(default_factory=list)
    # Containers seen only in a network's "Containers" map: name -> attachments.
    members: dict[str, list[Attachment]] = field(default_factory=dict)
    stopped: set[str] = field(default_factory=set)  # no rules: dockerd removed them
    skipped: set[str] = field(default_factory=set)  # host/none networks: no rules
    span: Span | None = None

    def add_daemon(self, daemon: Daemon) -> None:
        self.daemon = daemon if self.daemon is None else merge_daemons(self.daemon, daemon,
                                                                       self.out)


def load_files(paths: Sequence[Path], out: Collector) -> DockerHost | None:
    """The host described by the state files, or None if any could not be read (reported)."""
    state = _State(out)
    for path in paths:
        try:
            text = read_input(path).decode("utf-8")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            out.error("E0701", f"cannot read Docker state {path}: {reason}", None)
            continue
        source = SourceFile(source_name(path), text.removeprefix("\ufeff"))
        try:
            document = parse(source)
        except RulecError as exc:
            out.extend(exc.diagnostics)
            continue
        state.span = state.span or document.span
        _document(document, state)
    containers = [c for _, c in _in_creation_order(state.containers)]
    known = {c.name for c in containers} | state.stopped
    for name, attachments in state.members.items():
        if name not in known:  # seen in `docker network inspect` only: no published ports
            containers.append(Container(name=name, attachments=tuple(attachments),
                                        span=attachments[0].span))
    return DockerHost(daemon=state.daemon or Daemon(),
                      networks=tuple(n for _, n in _in_creation_order(state.networks)),
                      containers=tuple(containers), span=state.span)


def _in_creation_order(items: list[tuple[_When, _T]]) -> list[tuple[_When, _T]]:
    """By creation (or start) time when every item has one, else as given. dockerd inserts a
    network's rules at the top and appends a container's, so this order is the rules' order;
    `docker ps` lists newest first and `docker network ls` by name."""
    if all(when is not None for when, _ in items):
        return sorted(items, key=lambda item: item[0] or (0, 0))
    return items


# ------------------------------------------------------------------------------ field access

def _get(obj: JValue, key: str) -> JValue | None:
    assert isinstance(obj.value, dict)
    value: JValue | None = obj.value.get(key)
    return value


def _list(value: JValue | None) -> list[JValue]:
    return value.value if value is not None and isinstance(value.value, list) else []


def _dict(value: JValue | None) -> dict[str, JValue]:
    return value.value if value is not None and isinstance(value.value, dict) else {}


def _typed(value: JValue | None, kind: type, what: str, out: Collector) -> JValue | None:
    """`value` if it is of `kind` (None and JSON null pass as absent)."""
    if value is None or value.value is None:
        return None
    if kind is int and isinstance(value.value, int) and not isinstance(value.value, bool):
        return value
    if kind is not int and isinstance(value.value, kind):
        return value
    names = {dict: "an object", list: "an array", str: "a string", bool: "true or false",
             int: "a number"}
    out.error("E0702", f"{what} must be {names[kind]}, not {value.kind()}", value.span)
    return None


def _str(obj: JValue, key: str, out: Collector, *, required: bool = False) -> tuple[str, Span]:
    value = _typed(_get(obj, key), str, key, out)
    if value is None:
        if required and _get(obj, key) is None:
            out.error("E0702", f"missing field {key!r}", obj.span)
        return "", obj.span
    assert isinstance(value.value, str)
    return value.value, value.span


def _bool_text(text: str, span: Span, what: str, out: Collector) -> bool | None:
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    out.error("E0703", f"{what} must be \"true\" or \"false\", not {text!r}", span)
    return None


def _address(text: str, span: Span, what: str, out: Collector, *,
             host: bool = False) -> Prefix | None:
    try:
        prefix = Prefix.parse(text)
    except ValueError as exc:
        out.error("E0703", f"{what} {text!r} is not an address: {exc}", span)
        return None
    if host and not prefix.is_host:
        out.error("E0703", f"{what} {text!r} is a network, not one address", span)
        return None
    return prefix


def _version(text: str, span: Span, what: str, out: Collector) -> Version | None:
    version = Version.parse(text, span)
    if version is None:
        out.error("E0703", f"{what} {text!r} is not a Docker version", span,
                  "e.g. \"20.10.24\" or \"29.1.0\"")
    return version


def _when(obj: JValue, key: str, out: Collector) -> _When:
    """An RFC 3339 time (Docker's, with nanoseconds) as (seconds, nanoseconds) since 1970."""
    text, span = _str(obj, key, out)
    match = _TIMESTAMP.match(text)
    if not text:
        return None
    if match is not None:
        year, month, day, hour, minute, second, fraction, zone = match.groups()
        try:
            offset = datetime.timedelta() if zone == "Z" else (
                (-1 if zone[0] == "-" else 1)
                * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
            moment = datetime.datetime(int(year), int(month), int(day), int(hour), int(minute),
                                       int(second), tzinfo=datetime.timezone(offset))
        except (ValueError, OverflowError):
            pass
        else:
            epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
            seconds = (moment - epoch) // datetime.timedelta(seconds=1)
            return seconds, int((fraction or "0").ljust(9, "0"))
    out.error("E0703", f"{key} {text!r} is not a time", span,
              "e.g. \"2024-05-01T12:00:00.123456789Z\"")
    return None


# ------------------------------------------------------------------------------ documents

def _document(document: JValue, state: _State) -> None:
    out = state.out
    if isinstance(document.value, list):
        for item in document.value:
            _item(item, state)
        return
    if not isinstance(document.value, dict):
        out.error("E0702", f"a Docker state file holds an array or an object, not "
                  f"{document.kind()}", document.span)
        return
    keys = document.value.keys()
    if any(key in _STATE_KEYS for key in keys):
        _state_object(document, state)
    elif "ServerVersion" in keys:
        _info(document, state)
    elif "Server" in keys:
        _docker_version(document, state)
    elif all(_DAEMON_KEY.match(key) for key in keys):
        _daemon(document, state)
    else:
        out.error("E0702", "not a Docker state file", document.span,
                  "expected inspect output (an array), daemon.json, `docker info` or "
                  "`docker version` JSON, or an object of daemon, info, version, networks "
                  "and containers")


def _state_object(document: JValue, state: _State) -> None:
    out = state.out
    assert isinstance(document.value, dict)
    for key, value in document.value.items():
        if key in ("daemon", "info"):
            typed = _typed(value, dict, key, out)
            if typed is not None:
                (_daemon if key == "daemon" else _info)(typed, state)
        elif key == "version":
            if isinstance(value.value, str):
                version = _version(value.value, value.span, "version", out)
                if version is not None:
                    state.add_daemon(Daemon(version=version, span=value.span,
                                            origins=(("version", value.span),)))
            elif _typed(value, dict, "version", out) is not None:
                _docker_version(value, state)
        elif key in ("networks", "containers"):
            for item in _list(_typed(value, list, key, out)):
                if _typed(item, dict, f"an item of {key}", out) is None:
                    continue
                (_network if key == "networks" else _container)(item, state)
        else:
            out.error("E0702", f"unknown key {key!r}", document.key_spans[key],
                      "a state object has " + ", ".join(_STATE_KEYS))


def _item(item: JValue, state: _State) -> None:
    if not isinstance(item.value, dict):
        state.out.error("E0702", f"expected an inspect object, not {item.kind()}", item.span)
    # A container has a "Driver" too (its storage driver), so the container keys go first.
    elif any(key in item.value for key in _CONTAINER_KEYS):
        _container(item, state)
    elif any(key in item.value for key in _NETWORK_KEYS):
        _network(item, state)
    else:
        state.out.error("E0702", "neither a network (`docker network inspect`) nor a container "
                        "(`docker inspect`)", item.span)


def _daemon(obj: JValue, state: _State) -> None:
    out = state.out
    if state.daemon_json is not None:
        out.error("E0707", "daemon options are given twice", obj.span,
                  f"first given at {state.daemon_json}")
        return
    state.daemon_json = obj.span
    assert isinstance(obj.value, dict)
    # A key absent here may still be set by a dockerd flag: it stays unknown (None).
    flags: dict[str, Any] = {}
    origins: list[tuple[str, Span | None]] = []
    for key, value in obj.value.items():
        if key in _DAEMON_FLAGS:
            typed = _typed(value, bool, key, out)
            if typed is not None:
                assert isinstance(typed.value, bool)
                flags[_DAEMON_FLAGS[key]] = typed.value
                origins.append((_DAEMON_FLAGS[key], obj.key_spans[key]))
        elif key in _UNSUPPORTED_DAEMON and value.value not in (None, "", False):
            out.error("E0703", f"rulec does not reproduce {_UNSUPPORTED_DAEMON[key]}",
                      obj.key_spans[key])
        elif key == "iptables" and value.value is False:
            out.error("E0703", "with \"iptables\": false dockerd writes no rules at all",
                      obj.key_spans[key], "there is nothing for rulec to reproduce")
    state.add_daemon(Daemon(span=obj.span, origins=tuple(origins), **flags))


def _info(obj: JValue, state: _State) -> None:
    """`docker info`: the version, and whether the daemon runs with experimental features."""
    out = state.out
    text, span = _str(obj, "ServerVersion", out, required=True)
    version = _version(text, span, "ServerVersion", out) if text else None
    experimental = _typed(_get(obj, "ExperimentalBuild"), bool, "ExperimentalBuild", out)
    origins: list[tuple[str, Span | None]] = [("version", span)]
    flags: dict[str, Any] = {}
    if experimental is not None:
        assert isinstance(experimental.value, bool)
        flags["experimental"] = experimental.value
        origins.append(("experimental", experimental.span))
    state.add_daemon(Daemon(version=version, span=obj.span, origins=tuple(origins), **flags))


def _docker_version(obj: JValue, state: _State) -> None:
    """`docker version`: the server's version (the client's says nothing about the daemon)."""
    out = state.out
    server = _typed(_get(obj, "Server"), dict, "Server", out)
    if server is None:
        if _get(obj, "Server") is None:
            out.error("E0702", "missing field 'Server'", obj.span,
                      "`docker version` could not reach the daemon when this was captured")
        return
    text, span = _str(server, "Version", out, required=True)
    version = _version(text, span, "Server.Version", out) if text else None
    if version is not None:
        state.add_daemon(Daemon(version=version, span=obj.span, origins=(("version", span),)))


def _network(obj: JValue, state: _State) -> None:
    out = state.out
    name, name_span = _str(obj, "Name", out, required=True)
    driver, driver_span = _str(obj, "Driver", out)
    if not name:
        return
    if driver in _NO_RULES_DRIVERS:
        state.skipped.add(name)
        return
    if driver not in ("bridge", ""):
        out.warning("W0701", f"network {name}: driver {driver} gets no rules from rulec",
                    driver_span)
        state.skipped.add(name)
        return
    options = _typed(_get(obj, "Options"), dict, "Options", out)
    opts: dict[str, tuple[str, Span]] = {}
    if options is not None:
        assert isinstance(options.value, dict)
        for key in options.value:
            text, span = _str(options, key, out)
            opts[key] = (text, span)
            if key in _UNSUPPORTED_OPTIONS and text:
                out.error("E0703", f"rulec does not reproduce option {key}", span)
    bridge, bridge_span = opts.get(_OPT + "bridge.name", ("", obj.span))
    if not bridge:
        identifier, bridge_span = _str(obj, "Id", out)
        if not identifier:
            out.error("E0702", f"network {name}: no bridge name and no Id to derive it from",
                      name_span, f"add \"Options\": {{\"{_OPT}bridge.name\": ...}}")
            return
        bridge = "br-" + identifier[:12]  # dockerd's name for user-defined bridges
    flags = {"icc": _OPT + "bridge.enable_icc", "masquerade": _OPT + "bridge.enable_ip_masquerade"}
    values: dict[str, bool] = {}
    for attr, key in flags.items():
        if key in opts:
            parsed = _bool_text(*opts[key], key, out)
            if parsed is not None:
                values[attr] = parsed
    internal = _typed(_get(obj, "Internal"), bool, "Internal", out)
    ipv6 = _typed(_get(obj, "EnableIPv6"), bool, "EnableIPv6", out)
    modes: dict[str, GatewayMode] = {}
    for suffix, attr in (("ipv4", "gateway_mode_v4"), ("ipv6", "gateway_mode_v6")):
        key = _OPT + "bridge.gateway_mode_" + suffix
        if key in opts:
            text, span = opts[key]
            try:
                modes[attr] = GatewayMode(text)
            except ValueError:
                out.error("E0703", f"unknown gateway mode {text!r}", span,
                          "use nat, routed or nat-unprotected")
    snat = []
    for suffix in ("host_ipv4", "host_ipv6"):
        if _OPT + suffix in opts and opts[_OPT + suffix][0]:
            address = _address(*opts[_OPT + suffix], suffix, out, host=True)
            if address is not None:
                snat.append(address)
    subnets = _subnets(obj, bool(ipv6 and ipv6.value), out)
    network = Network(name=name, bridge=bridge, subnets=subnets,
                      internal=bool(internal and internal.value), snat=tuple(snat),
                      span=name_span, bridge_span=bridge_span,
                      **values, **modes)  # type: ignore[arg-type]
    state.networks.append((_when(obj, "Created", out), network))
    _members(obj, network, state)


def _subnets(obj: JValue, ipv6: bool, out: Collector) -> tuple[Subnet, ...]:
    ipam = _typed(_get(obj, "IPAM"), dict, "IPAM", out)
    config = _typed(_get(ipam, "Config"), list, "IPAM.Config", out) if ipam else None
    subnets = []
    for entry in _list(config):
        if _typed(entry, dict, "an IPAM.Config entry", out) is None:
            continue
        text, span = _str(entry, "Subnet", out, required=True)
        prefix = _address(text, span, "subnet", out) if text else None
        if prefix is None or (prefix.family is Family.IP6 and not ipv6):
            continue
        gateway_text, gateway_span = _str(entry, "Gateway", out)
        gateway = _address(gateway_text, gateway_span, "gateway", out, host=True) \
            if gateway_text else None
        subnets.append(Subnet(prefix=prefix, gateway=gateway, span=span))
    return tuple(subnets)


def _members(obj: JValue, network: Network, state: _State) -> None:
    """Addresses from the network's "Containers" map (used for containers not inspected)."""
    members = _typed(_get(obj, "Containers"), dict, "Containers", state.out)
    for member in _dict(members).values():
        if _typed(member, dict, "a member of Containers", state.out) is None:
            continue
        name, _ = _str(member, "Name", state.out, required=True)
        addresses = []
        for key in ("IPv4Address", "IPv6Address"):
            text, span = _str(member, key, state.out)
            if text:
                # "172.17.0.2/16": the address with its subnet's length.
                try:
                    interface = ipaddress.ip_interface(text)
                except ValueError:
                    state.out.error("E0703", f"{key} {text!r} is not an address", span)
                    continue
                address = _address(str(interface.ip), span, key, state.out)
                if address is not None and network.subnet(address.family) is not None:
                    addresses.append(address)
        if name:
            state.members.setdefault(name, []).append(
                Attachment(network=network.name, addresses=tuple(addresses), span=member.span))


def _container(obj: JValue, state: _State) -> None:
    out = state.out
    name, name_span = _str(obj, "Name", out, required=True)
    name = name.removeprefix("/")
    settings = _typed(_get(obj, "NetworkSettings"), dict, "NetworkSettings", out)
    status = _typed(_get(obj, "State"), dict, "State", out)
    running = _typed(_get(status, "Running"), bool, "State.Running", out) if status else None
    if running is not None and running.value is False:
        state.stopped.add(name)  # dockerd removed its rules when it stopped (or never ran)
        return
    if not name or settings is None:
        return
    started = _when(status, "StartedAt", out) if status and _get(status, "StartedAt") else None
    host_config = _typed(_get(obj, "HostConfig"), dict, "HostConfig", out)
    mode = _str(host_config, "NetworkMode", out)[0] if host_config else ""
    mode = "bridge" if mode == "default" else mode
    networks = _typed(_get(settings, "Networks"), dict, "Networks", out)
    attachments: list[Attachment] = []
    for network_name, endpoint in _dict(networks).items():
        if network_name in state.skipped or _typed(endpoint, dict, network_name, out) is None:
            continue
        addresses = []
        for key in ("IPAddress", "GlobalIPv6Address"):
            text, span = _str(endpoint, key, out)
            address = _address(text, span, key, out, host=True) if text else None
            if address is not None:
                addresses.append(address)
        assert networks is not None
        attachment = Attachment(network=network_name, addresses=tuple(addresses),
                                span=networks.key_spans[network_name])
        # Ports are published on the network of the container's network mode.
        attachments.insert(0 if network_name == mode else len(attachments), attachment)
    published = _ports(settings, out) if attachments else ()
    when = started or _when(obj, "Created", out)
    state.containers.append((when, Container(name=name, attachments=tuple(attachments),
                                             published=published, span=name_span)))


def _ports(settings: JValue, out: Collector) -> tuple[Published, ...]:
    ports = _typed(_get(settings, "Ports"), dict, "Ports", out)
    result = []
    for key, bindings in _dict(ports).items():
        assert ports is not None
        match = _PORT_KEY.match(key)
        port = int(match.group(1)) if match else 0
        if match is None or not 0 < port <= 65535:
            out.error("E0703", f"port {key!r} is not PORT/tcp, PORT/udp or PORT/sctp with a "
                      "port from 1 to 65535", ports.key_spans[key],
                      "`docker inspect` lists each published port on its own")
            continue
        # null: an exposed port that is not published
        for binding in _list(_typed(bindings, list, key, out)):
            if _typed(binding, dict, f"a binding of {key}", out) is None:
                continue
            host_text, host_span = _str(binding, "HostIp", out)
            port_text, port_span = _str(binding, "HostPort", out, required=True)
            if not port_text:
                continue  # not allocated: nothing is published
            if not _HOST_PORT.match(port_text) or not 0 < int(port_text) <= 65535:
                out.error("E0703", f"host port {port_text!r} is not a port", port_span)
                continue
            host = _address(host_text, host_span, "HostIp", out, host=True) \
                if host_text else None
            if host_text and host is None:
                continue
            host_port = int(port_text)
            result.append(Published(host=host, host_ports=(host_port, host_port),
                                    container_ports=(port, port),
                                    proto=PortProto(match.group(2)), span=binding.span))
    return tuple(result)
