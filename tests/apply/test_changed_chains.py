"""Which chains `rulec apply` reloads (rulec.apply.host.changed_chains): the ones whose rules
or policy differ from what was compiled, counters aside; in coexist mode the declared ones only.
"""

from __future__ import annotations

from rulec.apply.host import changed_chains, parse_save

COMPILED = """\
*filter
:DOCKER-USER - [0:0]
-A DOCKER-USER -i eth0 -p tcp -m conntrack --ctorigdstport 8080 -j DROP
COMMIT
"""


def live(*docker_user: str) -> str:
    """iptables-save -c of a Docker host whose DOCKER-USER holds `docker_user`."""
    rules = "".join(f"[3:180] -A DOCKER-USER {r}\n" for r in docker_user)
    return ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [7:420]\n:DOCKER - [0:0]\n"
            ":DOCKER-USER - [0:0]\n[9:540] -A FORWARD -j DOCKER-USER\n"
            "[9:540] -A FORWARD -o docker0 -j DOCKER\n" + rules + "COMMIT\n")


DROP = "-i eth0 -p tcp -m conntrack --ctorigdstport 8080 -j DROP"


def changed(held: str, compiled: str = COMPILED) -> dict[str, set[str]]:
    return changed_chains(parse_save(held), parse_save(compiled), declared_only=True)


def test_the_compiled_rules_with_other_counters_are_no_change() -> None:
    assert changed(live(DROP)) == {}


def test_the_return_dockerd_appends_to_docker_user_is_no_change() -> None:
    """`docker network create` appends `-j RETURN` to a DOCKER-USER without one; leaving the
    chain at its end does the same, so the next apply must not reload it (nor, the other way
    round, when the policy ends with `return` and the kernel's chain does not)."""
    assert changed(live(DROP, "-j RETURN")) == {}
    assert changed(live(DROP), COMPILED.replace("COMMIT", "-A DOCKER-USER -j RETURN\nCOMMIT")) \
        == {}


def test_a_return_that_is_not_last_or_not_unconditional_is_a_change() -> None:
    assert changed(live("-j RETURN", DROP)) == {"filter": {"DOCKER-USER"}}
    assert changed(live(DROP, "-i eth1 -j RETURN")) == {"filter": {"DOCKER-USER"}}
    assert changed(live(DROP, "-j RETURN", "-j RETURN")) == {"filter": {"DOCKER-USER"}}


def test_coexist_mode_looks_at_the_declared_chains_only() -> None:
    """dockerd's FORWARD and DOCKER are not in the policy: with declared_only they are none of
    apply's business; without it (a full load) they are chains to replace."""
    assert changed(live()) == {"filter": {"DOCKER-USER"}}
    full = changed_chains(parse_save(live(DROP)), parse_save(COMPILED), declared_only=False)
    assert full == {"filter": {"INPUT", "FORWARD", "DOCKER"}}
