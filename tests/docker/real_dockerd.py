"""A real dockerd as the oracle for the Docker frontend: Debian's docker.io (20.10, the classic
layout) started inside a fresh network namespace, never in the root one.

`ip netns exec` gives the start script a private mount namespace: cgroup v1 hierarchies, /run
and /etc/docker are mounted again inside it, and containerd and dockerd, started from that
script with config files under a temporary directory, keep it. The docker client talks to
dockerd's socket in that directory. An image comes from `docker import` of a busybox-static
rootfs (no registry). `ext`, a peer on the namespace's uplink, probes published ports; probe
agents run in the containers' own namespaces through nsenter. Everything is torn down by PID
in `stop()`, even after a failure half way: containers, dockerd, containerd, whatever process
is left in the namespace, the namespace, the cgroup directories, the temporary directory.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rulec.kernel import Namespace, rule_lines, veth_pair
from rulec.kernel.netns import unique_name
from tests.docker.host import kernel_unavailable

DOCKER = "/usr/bin/docker"  # docker.io's client, not whatever else is on PATH
BUSYBOX = "/bin/busybox"  # busybox-static's
IMAGE = "rulec-busybox"

# Uplink between the daemon's namespace ("host") and `ext`; Docker's own ranges are set in the
# daemon config and on every network, all from 198.18.0.0/15 and 2001:db8::/32.
HOST4, EXT4 = "198.18.0.1", "198.18.0.2"
HOST6, EXT6 = "2001:db8:ff::1", "2001:db8:ff::2"
BRIDGE4, BRIDGE6 = "198.18.17.0/24", "2001:db8:17::/64"
ROUTED_FROM_EXT = ("198.18.16.0/20", "2001:db8:17::/64", "2001:db8:18::/64", "2001:db8:20::/64")


def unavailable() -> str | None:
    """Why a real dockerd cannot run here, or None."""
    reason = kernel_unavailable()
    if reason is not None:
        return reason
    for tool in ("dockerd", "containerd", "containerd-shim-runc-v2", "runc", "docker-proxy",
                 "nsenter", "iptables-save", "ip6tables-save"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install docker.io)"
    if not os.access(DOCKER, os.X_OK):
        return f"{DOCKER} is missing (apt-get install docker.io)"
    if not _static_executable(BUSYBOX):
        return f"{BUSYBOX} is not a static executable (apt-get install busybox-static)"
    return None


def _static_executable(path: str) -> bool:
    """An ELF file without a program interpreter (PT_INTERP): it runs in an empty rootfs."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit ELF only
                return False
            phoff, = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


@dataclass(frozen=True, slots=True)
class Config:
    """The daemon options of one run (daemon.json keys in the comments)."""

    name: str
    userland_proxy: bool = True  # userland-proxy
    ip6tables: bool | None = None  # ip6tables (with experimental: true); None: key absent
    # ipv6 + fixed-cidr-v6: IPv6 on the default bridge too. The user networks get IPv6 subnets
    # in every configuration, so the ip6tables default can be seen.

    def daemon_json(self) -> dict[str, Any]:
        """The options that shape the firewall, as the fixture's daemon.json keeps them."""
        options: dict[str, Any] = {"iptables": True, "userland-proxy": self.userland_proxy,
                                   "bip": "198.18.17.1/24", "ipv6": True,
                                   "fixed-cidr-v6": BRIDGE6}
        if self.ip6tables is not None:
            options |= {"ip6tables": self.ip6tables, "experimental": True}
        return options


CONFIGS = (
    Config("proxy", userland_proxy=True, ip6tables=True),
    Config("noproxy", userland_proxy=False, ip6tables=True),
    Config("ip6tables-default", userland_proxy=True),
)


@dataclass(frozen=True, slots=True)
class Run:
    """One `docker run`: a container that sleeps (probe servers are started beside it)."""

    name: str
    network: str
    publish: tuple[str, ...] = ()
    connect: tuple[str, ...] = ()  # `docker network connect` afterwards
    start: bool = True  # False: `docker create` only, a container that never ran


# Ports chosen so that host and container ports sort the same way: dockerd then writes them in
# one order (host port, largest first), which differs from the JSON's key order.
CONTAINERS = (
    Run("web", "bridge", ("8080:80", "8443:443", "9000:9000", "5353:53/udp",
                          "127.0.0.1:8082:81")),
    Run("peer", "bridge"),
    Run("api", "apps", ("8090:80",)),
    Run("qa", "quiet", ("8091:80",)),
    Run("qb", "quiet"),
    Run("va", "vault", ("8092:80",)),
    Run("vb", "vault"),
    Run("multi", "apps", ("8093:80",), connect=("quiet",)),
    Run("stopped", "bridge", ("8094:80",), start=False),
)
NETWORKS = (
    ("apps", ("--subnet", "198.18.18.0/24", "--ipv6", "--subnet", "2001:db8:18::/64")),
    ("quiet", ("--subnet", "198.18.19.0/24", "-o", "com.docker.network.bridge.enable_icc=false",
               "-o", "com.docker.network.bridge.name=quiet0")),
    ("vault", ("--internal", "--subnet", "198.18.20.0/24", "--ipv6", "--subnet",
               "2001:db8:20::/64")),
)
CGROUP_HIERARCHIES = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio",
                      "pids")

_START = """set -eu
T=$1
mount -t tmpfs rulec-cgroup /sys/fs/cgroup
for h in {hierarchies}; do
  mkdir -p /sys/fs/cgroup/$h && mount -t cgroup -o $h cgroup /sys/fs/cgroup/$h
done
mkdir -p /sys/fs/cgroup/systemd
mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
mount -t tmpfs rulec-run /run
mount -t tmpfs rulec-etc-docker /etc/docker
containerd --config "$T/containerd.toml" </dev/null >"$T/containerd.log" 2>&1 &
echo $! >"$T/containerd.pid"
i=0
while [ ! -S "$T/containerd.sock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
dockerd --config-file "$T/daemon.json" </dev/null >"$T/dockerd.log" 2>&1 &
echo $! >"$T/dockerd.pid.start"
"""


@dataclass(frozen=True, slots=True)
class Capture:
    """What the daemon shows: its rules and the JSON the docs tell users to feed rulec."""

    iptables: str  # iptables-save
    ip6tables: str
    networks: list[Any]  # docker network inspect $(docker network ls -q)
    containers: list[Any]  # docker inspect $(docker ps -aq)
    info: dict[str, Any]  # docker info --format '{{json .}}'
    version: dict[str, Any]  # docker version --format '{{json .}}'
    daemon: dict[str, Any]  # the firewall options of daemon.json


class ContainerNetns:
    """A container's network namespace (made by dockerd), entered through nsenter by PID; it
    answers run() and popen() as rulec.kernel.Namespace does, for the probe helpers."""

    def __init__(self, name: str, pid: int) -> None:
        self.name = name
        self.pid = pid

    def _argv(self, argv: Sequence[str]) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.pid}/ns/net", "--", *argv]

    def run(self, argv: Sequence[str], input: str | None = None, check: bool = True,
            timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        from rulec.kernel.netns import run

        return run(self._argv(argv), input=input, check=check, timeout=timeout)

    def popen(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(self._argv(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)


@dataclass
class RealDockerd:
    """dockerd + containerd in the namespace `host`, with `ext` on its uplink."""

    config: Config
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rulec-dockerd-")))
    host: Namespace | None = None
    ext: Namespace | None = None
    cgroup_parent: str = field(default_factory=lambda: unique_name("dockerd"))
    pids: dict[str, int] = field(default_factory=dict)
    started: float = 0.0

    # ------------------------------------------------------------------ start and stop
    def start(self) -> None:
        """Namespaces, uplink, containerd, dockerd, the image; stop() undoes every step."""
        self.started = time.monotonic()
        self.host = Namespace("rdockerd")
        self.ext = Namespace("rdext")
        for ns in (self.host, self.ext):
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0")
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0")
        veth_pair(self.host, "eth0", self.ext, "eth0")
        for ns, v4, v6 in ((self.host, HOST4, HOST6), (self.ext, EXT4, EXT6)):
            ns.add_address("eth0", f"{v4}/24")
            ns.add_address("eth0", f"{v6}/64")
            ns.link_up("eth0")
        for dest in ROUTED_FROM_EXT:
            self.ext.add_route(dest, HOST6 if ":" in dest else HOST4)
        self._write_configs()
        script = _START.format(hierarchies=" ".join(CGROUP_HIERARCHIES))
        self.host.run(["sh", "-c", script, "start", str(self.tmp)], timeout=30)
        self.pids["containerd"] = int((self.tmp / "containerd.pid").read_text())
        self.pids["dockerd"] = int((self.tmp / "dockerd.pid.start").read_text())
        self._await_daemon()
        self._import_image()

    def _write_configs(self) -> None:
        t = self.tmp
        (t / "cli").mkdir()
        (t / "containerd.toml").write_text("\n".join([
            "version = 2", f'root = "{t}/containerd/root"', f'state = "{t}/containerd/state"',
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
            "[grpc]", f'  address = "{t}/containerd.sock"',
            "[ttrpc]", f'  address = "{t}/containerd.sock.ttrpc"',
            "[debug]", f'  address = "{t}/containerd-debug.sock"', ""]), encoding="utf-8")
        daemon = {"data-root": f"{t}/docker", "exec-root": f"{t}/exec",
                  "pidfile": f"{t}/dockerd.pid", "hosts": [f"unix://{t}/docker.sock"],
                  "containerd": f"{t}/containerd.sock", "storage-driver": "vfs",
                  "cgroup-parent": self.cgroup_parent, **self.config.daemon_json()}
        (t / "daemon.json").write_text(json.dumps(daemon, indent=2), encoding="utf-8")

    def _await_daemon(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.docker("version", check=False).returncode == 0:
                return
            if not _alive(self.pids["dockerd"]):
                break
            time.sleep(0.1)
        log = (self.tmp / "dockerd.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"dockerd did not come up:\n{log}")

    def _import_image(self) -> None:
        rootfs = self.tmp / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        for applet in ("sh", "sleep"):
            (rootfs / "bin" / applet).symlink_to("busybox")
        tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True,
                             check=True, timeout=30).stdout
        self.docker_bytes(["import", "-", IMAGE], tar)

    def stop(self) -> None:
        """Tear everything down, whatever state start() or a test left it in."""
        try:
            if self.pids.get("dockerd") and _alive(self.pids["dockerd"]):
                ids = self.docker("ps", "-aq", check=False).stdout.split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False, timeout=60)
        finally:
            for name in ("dockerd", "containerd"):
                pid = self.pids.get(name)
                if pid:
                    # dockerd gives running containers 10 s to stop before it exits.
                    _terminate(pid, grace=30.0)
            # Whatever survived (shims, proxies, the processes of containers a failed run left):
            # ours alone sit in this namespace or under our cgroup-parent.
            leftovers = set(self._cgroup_pids())
            if self.host is not None:
                leftovers |= set(_pids_in_netns(self.host))
            for pid in sorted(leftovers):
                _terminate(pid, grace=2.0)
            for ns in (self.host, self.ext):
                if ns is not None:
                    ns.delete()
            self._remove_cgroups()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _cgroup_dirs(self) -> list[Path]:
        """The cgroup-parent directories runc made under each hierarchy, deepest first. runc
        puts a relative cgroup-parent below its own cgroup, which is ours."""
        root = Path("/sys/fs/cgroup")
        found: list[Path] = []
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            name = controllers.removeprefix("name=") or "unified"
            for top in {root / name, *(root / c for c in controllers.split(","))}:
                base = top / path.lstrip("/") / self.cgroup_parent
                if base.is_dir():
                    found += [p for p in base.rglob("*") if p.is_dir()] + [base]
        return sorted(found, key=lambda p: len(p.parts), reverse=True)

    def _cgroup_pids(self) -> list[int]:
        pids: set[int] = set()
        for directory in self._cgroup_dirs():
            try:
                pids |= {int(x) for x in (directory / "cgroup.procs").read_text().split()}
            except OSError:
                continue
        return sorted(pids)

    def _remove_cgroups(self) -> None:
        for directory in self._cgroup_dirs():
            try:
                directory.rmdir()
            except OSError:  # reported by the caller's check that nothing is left
                continue

    def leftovers(self) -> list[str]:
        """What stop() could not remove (empty after a clean tear-down)."""
        left = [f"process {pid}" for pid in (*self.pids.values(), *self._cgroup_pids())
                if _alive(pid)]
        left += [str(p) for p in self._cgroup_dirs()]
        left += [str(ns.path) for ns in (self.host, self.ext)
                 if ns is not None and os.path.exists(ns.path)]
        return left + ([str(self.tmp)] if self.tmp.exists() else [])

    # ------------------------------------------------------------------ the docker client
    def docker(self, *args: str, check: bool = True,
               timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([DOCKER, "-H", f"unix://{self.tmp}/docker.sock", *args],
                              capture_output=True, text=True, timeout=timeout, check=False,
                              env=self._env())
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
        return done

    def docker_bytes(self, args: Sequence[str], data: bytes) -> None:
        subprocess.run([DOCKER, "-H", f"unix://{self.tmp}/docker.sock", *args], input=data,
                       capture_output=True, timeout=60, check=True, env=self._env())

    def _env(self) -> dict[str, str]:
        # The client's own state (config.json, contexts) stays in the temporary directory.
        return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                "DOCKER_CONFIG": str(self.tmp / "cli")}

    def json(self, *args: str) -> Any:
        return json.loads(self.docker(*args).stdout)

    # ------------------------------------------------------------------ the scenario
    def build(self) -> None:
        """The networks and containers of the scenario, in this order."""
        for name, options in NETWORKS:
            self.docker("network", "create", *options, name)
        for run in CONTAINERS:
            ports = [a for p in run.publish for a in ("-p", p)]
            verb = ["run", "-d"] if run.start else ["create"]
            self.docker(*verb, "--name", run.name, "--network", run.network, *ports, IMAGE,
                        "/bin/sleep", "3600")
            for network in run.connect:
                self.docker("network", "connect", network, run.name)

    def capture(self) -> Capture:
        assert self.host is not None
        networks = self.json("network", "inspect", *self.docker("network", "ls", "-q")
                             .stdout.split())
        containers = self.json("inspect", *self.docker("ps", "-aq").stdout.split())
        return Capture(
            iptables=self.host.run(["iptables-save"]).stdout,
            ip6tables=self.host.run(["ip6tables-save"]).stdout,
            networks=networks, containers=containers,
            info=self.json("info", "--format", "{{json .}}"),
            version=self.json("version", "--format", "{{json .}}"),
            daemon=self.config.daemon_json())

    def container(self, name: str) -> ContainerNetns:
        pid = int(self.docker("inspect", "-f", "{{.State.Pid}}", name).stdout)
        return ContainerNetns(name, pid)

    def address(self, name: str, network: str, family: int = 4) -> str:
        key = "IPAddress" if family == 4 else "GlobalIPv6Address"
        template = f'{{{{(index .NetworkSettings.Networks "{network}").{key}}}}}'
        return self.docker("inspect", "-f", template, name).stdout.strip()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (our own child that exited) is as good as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _terminate(pid: int, grace: float = 10.0) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.05)


def _pids_in_netns(ns: Namespace) -> list[int]:
    """Processes whose network namespace is `ns` (only ours can be there)."""
    try:
        target = os.stat(ns.path).st_ino
    except OSError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == target:
                found.append(int(entry))
        except OSError:
            continue
    return found


# ------------------------------------------------------------------------------ fixtures on disk

FIXTURES = Path(__file__).resolve().parent / "real"
_FILES = {"iptables": "iptables.save", "ip6tables": "ip6tables.save",
          "networks": "networks.json", "containers": "containers.json", "info": "info.json",
          "version": "version.json", "daemon": "daemon.json"}


def write_capture(capture: Capture, directory: Path, tmp: Path | None = None) -> None:
    """The capture as files; `tmp` (the daemon's temporary directory) becomes a fixed path so
    that a committed fixture does not change with every run's directory name."""
    directory.mkdir(parents=True, exist_ok=True)
    for attr, filename in _FILES.items():
        value = getattr(capture, attr)
        text = value if isinstance(value, str) else json.dumps(value, indent=4) + "\n"
        if tmp is not None:
            text = text.replace(str(tmp), "/var/lib/rulec-dockerd")
        if attr in ("iptables", "ip6tables"):  # timestamps of iptables-save's comments
            text = re.sub(r"^# (Generated by|Completed on) .*$", r"# \1 iptables-save", text,
                          flags=re.M)
        (directory / filename).write_text(text, encoding="utf-8")


def read_capture(directory: Path) -> Capture:
    values: dict[str, Any] = {}
    for attr, filename in _FILES.items():
        text = (directory / filename).read_text(encoding="utf-8")
        values[attr] = text if filename.endswith(".save") else json.loads(text)
    return Capture(**values)


def chains(save_text: str) -> dict[str, tuple[str, list[str]]]:
    """iptables-save (or iptables-restore) text -> {"table/CHAIN": (policy, rule lines)}, the
    rules in order, without counters and comments."""
    out: dict[str, tuple[str, list[str]]] = {}
    table = ""
    for line in rule_lines(save_text, keep_empty=True):
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            name, policy = line[1:].split()[:2]
            out[f"{table}/{name}"] = (policy, [])
        elif line.startswith("-A "):
            out.setdefault(f"{table}/{line.split()[1]}", ("?", []))[1].append(line)
    return out


def chain_differences(want: str, got: str) -> list[str]:
    """Every chain whose policy or rules differ, as a readable diff (empty: equal)."""
    expected, actual = chains(want), chains(got)
    report = []
    for name in sorted(set(expected) | set(actual)):
        if expected.get(name) != actual.get(name):
            diff = difflib.unified_diff(_shown(expected.get(name)), _shown(actual.get(name)),
                                        "dockerd", "rulec", lineterm="", n=1)
            report.append(f"{name}:\n" + "\n".join(list(diff)[2:]))
    return report


def _shown(chain: tuple[str, list[str]] | None) -> list[str]:
    return ["(no such chain)"] if chain is None else [f"policy {chain[0]}", *chain[1]]


def state_files(capture: Capture, directory: Path) -> dict[str, Path]:
    """The capture as the inputs docs/docker.md documents: the two inspect files with the
    daemon's options and version beside them, and the one-file state.json."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, value in (("networks", capture.networks), ("containers", capture.containers),
                        ("daemon", capture.daemon), ("info", capture.info),
                        ("version", capture.version),
                        ("state", {"daemon": capture.daemon, "info": capture.info,
                                   "networks": capture.networks,
                                   "containers": capture.containers})):
        files[name] = directory / f"{name}.json"
        files[name].write_text(json.dumps(value, indent=4), encoding="utf-8")
    return files


__all__ = ["CONFIGS", "CONTAINERS", "EXT4", "EXT6", "FIXTURES", "HOST4", "HOST6", "Capture",
           "Config", "ContainerNetns", "RealDockerd", "chain_differences", "chains",
           "read_capture", "state_files", "unavailable", "write_capture"]
