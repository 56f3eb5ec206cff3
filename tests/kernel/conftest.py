"""Kernel tests: skipped unless this machine can create network namespaces and load rules.

Fixtures: `netns` (one empty namespace) and `topology` (client -- router -- server).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rulec.kernel import Namespace, available, namespace
from tests.kernel.probe import Topology, make_topology

HERE = Path(__file__).parent
UNAVAILABLE = available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.kernel)
            if UNAVAILABLE:
                item.add_marker(pytest.mark.skip(reason=f"kernel tests: {UNAVAILABLE}"))


@pytest.fixture
def netns() -> Iterator[Namespace]:
    with namespace("t") as ns:
        yield ns


@pytest.fixture
def topology() -> Iterator[Topology]:
    with make_topology() as topo:
        yield topo
