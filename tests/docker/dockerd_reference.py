"""The rules dockerd 29.x (iptables backend, current layout) installs for a HostSpec, written by
hand from moby's generated rule documentation (docs/docker.md, "Layouts") with its rule shapes
and order. It validates the packet harness independently of rulec, and plays dockerd in the
coexist test.
"""

from __future__ import annotations

import ipaddress

from rulec.backends.base import Artifact
from tests.docker.host import Container, HostSpec, Network, Publish


def dockerd_rules(spec: HostSpec, family: int = 4, *, docker_user: tuple[str, ...] = ()) -> str:
    """iptables-restore text (family 4) or ip6tables-restore text (family 6), a full replace.

    `docker_user`: rule lines for DOCKER-USER (as an operator would have added them, valid in
    both families), e.g. `-p tcp -m tcp --dport 9 -j DROP`; dockerd writes none since 28.3.
    """
    v6 = family == 6
    nets = [n for n in spec.networks if not v6 or n.subnet6]
    proxy = spec.userland_proxy

    def subnet(n: Network) -> str:
        return (n.subnet6 if v6 else n.subnet4) or ""

    def cip(c: Container) -> str | None:
        return c.ip6 if v6 else c.ip4

    def host(addr: str) -> str:
        return f"{addr}/{128 if v6 else 32}"

    bindings: list[tuple[Container, Network, Publish]] = [
        (c, spec.network(c.network), p) for c in spec.containers for p in c.publish
        if cip(c) and not spec.network(c.network).internal and p.applies_to(family)]

    raw: list[str] = []
    for c in spec.containers:
        net = spec.network(c.network)
        addr = cip(c)
        if addr and not net.internal and net in nets:
            raw.append(f"-A PREROUTING -d {host(addr)} ! -i {net.bridge} -j DROP")
    for _, _, p in bindings:
        if p.host_ip and ipaddress.ip_address(p.host_ip).is_loopback and not v6:
            raw.append(f"-A PREROUTING -d {host(p.host_ip)} ! -i lo -p {p.proto} -m {p.proto} "
                       f"--dport {p.host_port} -j DROP")

    loopback = "::1/128" if v6 else "127.0.0.0/8"
    nat = ["-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
           f"-A OUTPUT{'' if not proxy else f' ! -d {loopback}'} -m addrtype --dst-type LOCAL "
           "-j DOCKER"]
    # Per network rules are inserted at the top: the newest network's come first.
    for net in reversed(nets):
        if not net.internal:
            nat.append(f"-A POSTROUTING -s {subnet(net)} ! -o {net.bridge} -j MASQUERADE")
    if not proxy:
        for net in nets:
            if not net.internal:
                nat.append(f"-A POSTROUTING -o {net.bridge} -m addrtype --src-type LOCAL "
                           "-j MASQUERADE")
        for c, _, p in bindings:
            a = host(cip(c) or "")
            nat.append(f"-A POSTROUTING -s {a} -d {a} -p {p.proto} -m {p.proto} "
                       f"--dport {p.container_port} -j MASQUERADE")
    for c, net, p in bindings:
        to = f"[{cip(c)}]" if v6 else cip(c)
        nat.append("-A DOCKER" + (" ! -s fe80::/10" if v6 else "")
                   + (f" -d {host(p.host_ip)}" if p.host_ip else "")
                   + (f" ! -i {net.bridge}" if proxy else "")
                   + f" -p {p.proto} -m {p.proto} --dport {p.host_port} -j DNAT "
                   f"--to-destination {to}:{p.container_port}")

    docker = [f"-A DOCKER -d {host(cip(c) or '')} ! -i {net.bridge} -o {net.bridge} -p {p.proto} "
              f"-m {p.proto} --dport {p.container_port} -j ACCEPT" for c, net, p in bindings]
    docker += [f"-A DOCKER ! -i {n.bridge} -o {n.bridge} -j DROP" for n in nets if not n.internal]
    bridge = [f"-A DOCKER-BRIDGE -o {n.bridge} -j DOCKER" for n in nets if not n.internal]
    ct = [f"-A DOCKER-CT -o {n.bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
          for n in nets if not n.internal]
    forward = ["-A DOCKER-FORWARD -j DOCKER-CT", "-A DOCKER-FORWARD -j DOCKER-INTERNAL",
               "-A DOCKER-FORWARD -j DOCKER-BRIDGE"]
    internal: list[str] = []
    for n in nets:
        br, s = n.bridge, subnet(n)
        if n.internal:
            forward.append(f"-A DOCKER-FORWARD -i {br} -o {br} -j {'ACCEPT' if n.icc else 'DROP'}")
            internal += ([f"-A DOCKER-INTERNAL ! -i {br} -o {br} ! -s {s} -j DROP",
                          f"-A DOCKER-INTERNAL -i {br} ! -o {br} ! -d {s} -j DROP"] if v6 else
                         [f"-A DOCKER-INTERNAL ! -s {s} -o {br} -j DROP",
                          f"-A DOCKER-INTERNAL ! -d {s} -i {br} -j DROP"])
        elif n.icc:
            forward.append(f"-A DOCKER-FORWARD -i {br} -j ACCEPT")
        else:
            forward += [f"-A DOCKER-FORWARD -i {br} -o {br} -j DROP",
                        f"-A DOCKER-FORWARD -i {br} ! -o {br} -j ACCEPT"]

    user_chains = ("DOCKER", "DOCKER-BRIDGE", "DOCKER-CT", "DOCKER-FORWARD", "DOCKER-INTERNAL",
                   "DOCKER-USER")
    return "\n".join([
        "*raw", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", *raw, "COMMIT",
        "*nat", *(f":{c} ACCEPT [0:0]" for c in ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")),
        ":DOCKER - [0:0]", *nat, "COMMIT",
        "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
        *(f":{c} - [0:0]" for c in user_chains),
        "-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-FORWARD",
        *docker, *bridge, *ct, *forward, *internal,
        *(f"-A DOCKER-USER {rule}" for rule in docker_user), "COMMIT", ""])


def dockerd_artifacts(spec: HostSpec, *,
                      docker_user: tuple[str, ...] = ()) -> tuple[Artifact, Artifact]:
    """dockerd_rules() for both families, ready for rulec.kernel.load."""
    return tuple(Artifact(target=f"{prefix}tables", load_command=(f"{prefix}tables-restore",),
                          text=dockerd_rules(spec, family, docker_user=docker_user))
                 for prefix, family in (("ip", 4), ("ip6", 6)))  # type: ignore[return-value]
