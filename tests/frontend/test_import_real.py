"""Real dumps read back: the captures of a real dockerd 20.10 (tests/docker/real/, Debian's
docker.io in a namespace) import without error, print as a policy proven equivalent, and are
equivalent, family by family, to rulec's own model of the same host built from that host's
`docker inspect` JSON — the dockerd that wrote them and the model agree on every packet."""

from __future__ import annotations

from pathlib import Path

import pytest

from rulec import api
from rulec.ir.values import Family

REAL = Path(__file__).resolve().parents[1] / "docker" / "real"
CAPTURES = sorted(p for p in REAL.iterdir() if p.is_dir())
STATE = ("networks", "containers", "daemon", "info", "version")


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
@pytest.mark.parametrize(("dump", "family"), [("iptables.save", Family.IP),
                                              ("ip6tables.save", Family.IP6)])
def test_a_real_dockerd_dump_imports_and_matches_the_model_of_its_host(
        capture: Path, dump: str, family: Family, tmp_path: Path) -> None:
    imported = api.read_dump(capture / dump, "iptables-save", family=family.value)
    policy = api.to_policy(imported)  # proven equivalent to the dump before it returns
    assert ("chain DOCKER" in policy) == bool(imported.tables)
    (tmp_path / "empty.rules").write_text("")
    model = api.parse_files([tmp_path / "empty.rules"], docker=api.docker_options(
        "iptables", state=[capture / f"{name}.json" for name in STATE]))
    result = api.diff(imported, model, (family,))
    assert result.equivalent, [c.kind for c in result.changes]
