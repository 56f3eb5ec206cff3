"""The Ansible collection's tests: skipped, saying why, without ansible-playbook, and (for the
playbooks against namespaces) without root and network namespaces."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rulec.kernel import available
from tests.ansible.playbook import UNAVAILABLE, Ansible
from tests.kernel.probe import Topology, make_topology

HERE = Path(__file__).parent
collect_ignore = ["callback_plugins"]  # Ansible's to load (it imports ansible), not pytest's
KERNEL = available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE not in item.path.parents:
            continue
        if UNAVAILABLE:
            item.add_marker(pytest.mark.skip(reason=UNAVAILABLE))
        if item.get_closest_marker("kernel") and KERNEL:
            item.add_marker(pytest.mark.skip(reason=f"kernel tests: {KERNEL}"))


@pytest.fixture
def ansible(tmp_path: Path) -> Ansible:
    return Ansible(tmp_path / "ansible")


@pytest.fixture
def topology() -> Iterator[Topology]:
    with make_topology() as topo:
        yield topo


@pytest.fixture
def second_topology() -> Iterator[Topology]:
    with make_topology() as topo:
        yield topo
