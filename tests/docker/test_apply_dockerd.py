"""`rulec apply --noflush` (coexist mode) beside a real running dockerd: Debian's docker.io 20.10
in its own network namespace (tests/docker/real_dockerd.py), every rulec command run inside it.

One daemon, one scene, in order:
  A  dockerd alone (the default bridge);
  B  `rulec apply --noflush` of POLICY (the CLI): filter DOCKER-USER without a closing
     `return`, mangle FORWARD in both families (20.10 has no IPv6 DOCKER-USER, E0714);
  C  dockerd creates a network (and appends its `-j RETURN` to DOCKER-USER) and runs a
     container with a published port;
  D  the same policy applied again (the library call, to see what was sent);
  E  `rulec rollback`;
  F  the policy applied again, then G  a changed one (a second admin source, and `return`);
  H  dockerd creates another network, then I  the changed policy applied again.
Each test below checks one claim about the snapshots of iptables-save and ip6tables-save taken
after each step (counters and comments aside, every other byte compared), about what each apply
sent, or about real connections from `ext` to the published port at D, E and G.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rulec import api
from rulec.kernel import Namespace, rule_lines
from tests.docker.real_dockerd import EXT4, HOST4, IMAGE, Config, RealDockerd, unavailable
from tests.kernel.probe import Attempt, attempts, servers

UNAVAILABLE = unavailable()
pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(UNAVAILABLE is not None, reason=f"real dockerd: {UNAVAILABLE}")]

OTHER4 = "198.18.0.3"  # a second address of `ext`: not an admin until policy G
APPS4 = "198.18.18.0/24"
APPS = ("--subnet", APPS4, "--ipv6", "--subnet", "2001:db8:18::/64")
MORE4 = "198.18.21.0/24"
CLAMP = "mss clamp to pmtu tcp flags syn / syn,rst out eth0"


def policy(admins: str, end: str = "") -> str:
    return f"""\
table ip filter {{
  chain DOCKER-USER {{
    accept ct state established,related
    accept tcp ct original dport 8080 from {admins} in eth0 comment "admins"
    drop tcp ct original dport 8080 in eth0
    drop in eth0 to 198.18.16.0/20 ct state new comment "no direct access to containers"
    {end}
  }}
}}
table ip mangle {{
  chain FORWARD {{
    {CLAMP}
  }}
}}
table ip6 mangle {{
  chain FORWARD {{
    {CLAMP}
  }}
}}
"""


POLICY, CHANGED = policy(EXT4), policy(f"{{ {EXT4}, {OTHER4} }}", "return")
DOCKER_USER = ("ip", "filter", "DOCKER-USER")
RETURN = "-A DOCKER-USER -j RETURN"
FAMILIES = (("ip", "iptables"), ("ip6", "ip6tables"))

Key = tuple[str, str, str]  # family, table, chain


@dataclass(frozen=True, slots=True)
class Chain:
    policy: str | None  # None: a --noflush file's `-F BUILTIN`, which keeps the policy
    rules: tuple[str, ...]


Snapshot = dict[Key, Chain]


def chains_of(family: str, text: str) -> Snapshot:
    """iptables-save or iptables-restore text -> its chains, without counters and comments.
    Tables holding nothing (empty built-in chains, ACCEPT) are left out, as rule_lines does."""
    table = ""
    policies: dict[Key, str | None] = {}
    rules: dict[Key, list[str]] = {}
    for line in rule_lines(text):
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            name, chain_policy = line[1:].split()[:2]
            policies[family, table, name] = chain_policy
        elif line.startswith("-F ") and len(line.split()) == 2:
            policies.setdefault((family, table, line.split()[1]), None)
        elif line.startswith("-A "):
            rules.setdefault((family, table, line.split()[1]), []).append(line)
    return {k: Chain(p, tuple(rules.get(k, ()))) for k, p in policies.items()}


def others(snapshot: Snapshot, declared: set[Key]) -> Snapshot:
    """Every chain the policy does not declare. iptables-nft lists all built-in chains of a
    table once it exists, so a table rulec had to create for a declared chain (mangle here)
    brings empty ACCEPT chains along: those are not a change to anyone's rules."""
    out = {k: v for k, v in snapshot.items() if k not in declared}
    for family, table in {k[:2] for k in declared}:
        rest = [k for k in out if k[:2] == (family, table)]
        if all(out[k] == Chain("ACCEPT", ()) for k in rest):
            for k in rest:
                del out[k]
    return out


def compiled(text: str) -> Snapshot:
    out: Snapshot = {}
    for family, target in FAMILIES:
        out |= chains_of(family, api.compile_text(text, target, noflush=True).text)
    return out


@dataclass
class Applied:
    change: str
    applied: bool
    sent: list[tuple[list[str], str]]
    seconds: float


@dataclass
class Scene:
    daemon: RealDockerd
    policy: Path
    changed: Path
    state: Path
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    cli: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    applied: dict[str, Applied] = field(default_factory=dict)
    probes: dict[str, dict[str, bool]] = field(default_factory=dict)
    drift: dict[str, int] = field(default_factory=dict)  # `rulec diff --live --noflush` status
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def host(self) -> Namespace:
        assert self.daemon.host is not None
        return self.daemon.host

    def snapshot(self, name: str) -> None:
        self.snapshots[name] = {k: v for family, target in FAMILIES
                                for k, v in chains_of(family, self.host.run(
                                    [f"{target}-save"]).stdout).items()}

    def rulec(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.host.run([sys.executable, "-m", "rulec", *args], check=False, timeout=120)

    def apply_cli(self, step: str, path: Path) -> None:
        started = time.monotonic()
        done = self.cli[step] = self.rulec("apply", "--noflush", "--target", "iptables",
                                           "--state-dir", str(self.state), str(path))
        self.seconds[f"apply {step} (CLI)"] = time.monotonic() - started
        assert done.returncode == 0, done.stdout + done.stderr

    def apply_library(self, step: str, path: Path) -> None:
        """rulec.apply() in the daemon's namespace; what it sent, in order."""
        started = time.monotonic()
        done = self.host.run([sys.executable, "-c", _APPLY, str(path), str(self.state)],
                             check=False, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        result = json.loads(done.stdout)
        self.applied[step] = Applied(result["change"], result["applied"],
                                     [(argv, text) for argv, text in result["sent"]],
                                     time.monotonic() - started)
        self.seconds[f"apply {step} (library)"] = self.applied[step].seconds

    def check_drift(self, step: str, path: Path) -> None:
        done = self.rulec("diff", "--live", "--target", "iptables", "--noflush", str(path))
        self.drift[step] = done.returncode

    def probe(self, step: str) -> None:
        """Connections from `ext`: to the published port from the admin and from the other
        address, and straight to the container's own address (routed from `ext`)."""
        assert self.daemon.ext is not None
        web = self.daemon.address("web", "apps")
        tries = {"admin -> published": Attempt(HOST4, 8080, src=EXT4),
                 "other -> published": Attempt(HOST4, 8080, src=OTHER4),
                 "admin -> container": Attempt(web, 80, src=EXT4)}
        got = attempts(self.daemon.ext, list(tries.values()))
        self.probes[step] = {name: o.connected for name, o in zip(tries, got, strict=True)}


_APPLY = """\
import json, sys
from rulec.apply import apply
r = apply([sys.argv[1]], target="iptables", noflush=True, state_dir=sys.argv[2])
print(json.dumps({"change": r.change, "applied": r.applied,
                  "sent": [[list(s.argv), s.text] for s in r.sent]}))
"""


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    tmp = tmp_path_factory.mktemp("apply-dockerd")
    (tmp / "policy.rules").write_text(POLICY, encoding="utf-8")
    (tmp / "changed.rules").write_text(CHANGED, encoding="utf-8")
    daemon = RealDockerd(Config("apply", userland_proxy=False, ip6tables=True))
    s = Scene(daemon, tmp / "policy.rules", tmp / "changed.rules", tmp / "state")
    try:
        with ExitStack() as stack:
            started = time.monotonic()
            daemon.start()
            assert daemon.ext is not None
            daemon.ext.add_address("eth0", f"{OTHER4}/24")
            s.seconds["dockerd start"] = time.monotonic() - started
            s.snapshot("A")
            s.apply_cli("B", s.policy)
            s.snapshot("B")
            s.check_drift("B", s.policy)
            started = time.monotonic()
            daemon.docker("network", "create", *APPS, "apps")
            daemon.docker("run", "-d", "--name", "web", "--network", "apps", "-p", "8080:80",
                          IMAGE, "/bin/sleep", "3600")
            s.seconds["network + container"] = time.monotonic() - started
            s.snapshot("C")
            stack.enter_context(servers([(daemon.container("web"), (80,), "tcp")]))
            s.apply_library("D", s.policy)
            s.snapshot("D")
            s.check_drift("D", s.policy)
            s.probe("D")
            started = time.monotonic()
            s.cli["E"] = s.rulec("rollback", "--state-dir", str(s.state))
            s.seconds["rollback (CLI)"] = time.monotonic() - started
            s.snapshot("E")
            s.probe("E")
            s.apply_library("F", s.policy)
            s.snapshot("F")
            s.apply_library("G", s.changed)
            s.snapshot("G")
            s.check_drift("G", s.changed)
            s.probe("G")
            daemon.docker("network", "create", "--subnet", MORE4, "more")
            s.snapshot("H")
            s.apply_library("I", s.changed)
            s.snapshot("I")
            yield s
    finally:
        daemon.stop()
        print("\napply beside dockerd, seconds:", {k: round(v, 2) for k, v in s.seconds.items()})
    assert daemon.leftovers() == []


def test_the_first_apply_leaves_every_chain_it_does_not_declare_as_it_was(scene: Scene) -> None:
    """Coexist mode: dockerd's chains (filter, nat, both families) and the policies and rules
    of every other chain read back the same after the apply as before it."""
    declared = set(compiled(POLICY))
    before, after = scene.snapshots["A"], scene.snapshots["B"]
    assert before[DOCKER_USER] == Chain("-", (RETURN,))  # dockerd made it
    assert {("ip", "nat", "DOCKER"), ("ip6", "nat", "DOCKER")} <= set(before)  # and these
    assert others(after, declared) == others(before, declared)
    assert "loading-ip: iptables-restore" in scene.cli["B"].stderr
    assert "loading-ip6: ip6tables-restore" in scene.cli["B"].stderr


def test_the_declared_chains_hold_rulecs_rules(scene: Scene) -> None:
    """DOCKER-USER and both mangle FORWARD chains hold exactly what rulec compiled (at D, with
    the RETURN dockerd appended after them, which changes nothing), and `rulec diff --live
    --noflush` sees no drift."""
    for step, text in (("B", POLICY), ("D", POLICY), ("F", POLICY), ("G", CHANGED),
                       ("I", CHANGED)):
        live = scene.snapshots[step]
        for key, chain in compiled(text).items():
            wanted = (*chain.rules, RETURN) if (step, key) == ("D", DOCKER_USER) else chain.rules
            assert key in live, (step, key)
            assert live[key].rules == wanted, (step, key)
            if chain.policy is not None:
                assert live[key].policy == chain.policy, (step, key)
    assert scene.drift == {"B": 0, "D": 0, "G": 0}


def test_dockerd_adds_its_rules_for_a_new_network_and_container_and_a_return_to_rulecs(
        scene: Scene) -> None:
    """After the apply, dockerd still writes what a network and a published port need (the
    DNAT, the DOCKER accept, the bridge's FORWARD rules); of rulec's chains it touches only
    DOCKER-USER, to append the `-j RETURN` it finds missing."""
    d = scene.daemon
    web, web6 = d.address("web", "apps"), d.address("web", "apps", 6)
    bridge = _bridge(d, "apps")
    before, after = scene.snapshots["B"], scene.snapshots["C"]
    expected = {
        ("ip", "nat", "DOCKER"): f"-A DOCKER -p tcp -m tcp --dport 8080 -j DNAT "
                                 f"--to-destination {web}:80",
        ("ip6", "nat", "DOCKER"): f"-A DOCKER -p tcp -m tcp --dport 8080 -j DNAT "
                                  f"--to-destination [{web6}]:80",
        ("ip", "filter", "DOCKER"): f"-A DOCKER -d {web}/32 ! -i {bridge} -o {bridge} "
                                    "-p tcp -m tcp --dport 80 -j ACCEPT",
        ("ip", "filter", "FORWARD"): f"-A FORWARD -o {bridge} -j DOCKER",
        ("ip6", "filter", "FORWARD"): f"-A FORWARD -o {bridge} -j DOCKER",
    }
    for key, line in expected.items():
        assert line not in before.get(key, Chain(None, ())).rules, key
        assert line in after[key].rules, key
    assert after[DOCKER_USER] == Chain("-", (*before[DOCKER_USER].rules, RETURN))
    for key in set(compiled(POLICY)) - {DOCKER_USER}:
        assert after[key] == before[key], key
    # dockerd still jumps to DOCKER-USER first.
    assert after["ip", "filter", "FORWARD"].rules[0] == "-A FORWARD -j DOCKER-USER"


def test_dockerd_leaves_a_docker_user_that_ends_in_return_alone(scene: Scene) -> None:
    """Policy G ends DOCKER-USER with `return`: the next network dockerd makes adds its rules
    and leaves every declared chain as rulec loaded it."""
    before, after = scene.snapshots["G"], scene.snapshots["H"]
    line = f"-A FORWARD -o {_bridge(scene.daemon, 'more')} -j DOCKER"
    assert line not in before["ip", "filter", "FORWARD"].rules
    assert line in after["ip", "filter", "FORWARD"].rules
    for key in compiled(CHANGED):
        assert after[key] == before[key], key


def _bridge(d: RealDockerd, network: str) -> str:
    return "br-" + d.docker("network", "inspect", "-f", "{{.Id}}", network).stdout.strip()[:12]


def test_applying_the_same_policy_again_sends_nothing(scene: Scene) -> None:
    """Applied again after dockerd's changes (D: after a network, a container and dockerd's
    RETURN; I: after another network), the policy finds its chains as compiled: nothing is
    loaded, and every chain, dockerd's new ones included, reads back exactly as before."""
    for step, before in (("D", "C"), ("I", "H")):
        again = scene.applied[step]
        assert (again.change, again.applied, again.sent) == ("none", True, []), step
        assert scene.snapshots[step] == scene.snapshots[before], step


def test_the_published_port_answers_only_the_admin_under_rulecs_rules(scene: Scene) -> None:
    """Real connections through dockerd's DNAT and rulec's DOCKER-USER: the admin reaches the
    published port, the other address does not, nobody reaches the container directly;
    rolled back, Docker's rules alone let all three through; policy G lets the second address
    in too."""
    assert scene.probes["D"] == {"admin -> published": True, "other -> published": False,
                                 "admin -> container": False}
    assert scene.probes["E"] == {"admin -> published": True, "other -> published": True,
                                 "admin -> container": True}
    assert scene.probes["G"] == {"admin -> published": True, "other -> published": True,
                                 "admin -> container": False}


def test_rollback_restores_the_declared_chains_and_leaves_dockers_rules(scene: Scene) -> None:
    """`rulec rollback` puts back what the declared chains held before the first apply
    (DOCKER-USER: dockerd's lone RETURN; mangle: nothing) and keeps everything dockerd wrote
    since, the new network's and container's rules included."""
    done = scene.cli["E"]
    assert done.returncode == 0, done.stdout + done.stderr
    declared = set(compiled(POLICY))
    before, now = scene.snapshots["A"], scene.snapshots["E"]
    assert {k: v for k, v in now.items() if k in declared} == {
        k: v for k, v in before.items() if k in declared}
    assert now["ip", "filter", "DOCKER-USER"] == Chain("-", ("-A DOCKER-USER -j RETURN",))
    assert others(now, declared) == others(scene.snapshots["D"], declared)


def test_a_changed_policy_beside_dockerd_reloads_only_the_chain_that_changed(
        scene: Scene) -> None:
    """F re-applies the policy after the rollback, G changes one DOCKER-USER rule: each apply
    sends `--noflush` restores naming declared chains only, G just DOCKER-USER (the mangle
    clamps are unchanged), and every other chain reads back exactly as before."""
    declared = set(compiled(POLICY))
    for step, expected in (("F", declared), ("G", {("ip", "filter", "DOCKER-USER")})):
        applied = scene.applied[step]
        assert applied.change == "chains" and applied.applied, step
        named: set[Key] = set()
        for argv, text in applied.sent:
            assert argv[0] in ("iptables-restore", "ip6tables-restore"), argv
            assert "--noflush" in argv, argv
            named |= _chains_named("ip6" if argv[0].startswith("ip6") else "ip", text)
        assert named == expected, step
    assert others(scene.snapshots["F"], declared) == others(scene.snapshots["E"], declared)
    assert others(scene.snapshots["G"], declared) == others(scene.snapshots["F"], declared)
    for key in declared - {("ip", "filter", "DOCKER-USER")}:
        assert scene.snapshots["G"][key] == scene.snapshots["F"][key], key


def _chains_named(family: str, restore: str) -> set[Key]:
    """Every (family, table, chain) an iptables-restore input declares, flushes, deletes or
    changes; a line of any other kind fails the test."""
    named: set[Key] = set()
    table = ""
    for raw in restore.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            named.add((family, table, line[1:].split()[0]))
        elif line.split()[0] in ("-A", "-F", "-X", "-I", "-D", "-R", "-N", "-P", "-Z"):
            named.add((family, table, line.split()[1]))
        else:
            raise AssertionError(f"unexpected line in what apply sent: {line!r}")
    return named

