"""Shared test options: `--update-goldens` and the hypothesis profiles ("dev" by default, "ci"
with more examples: HYPOTHESIS_PROFILE=ci)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings

# rulec keeps the grammar's parser tables in the user's cache directory; a test run keeps them
# in a temporary one (its subprocesses inherit it), so it writes nothing in the home directory.
_CACHE = tempfile.mkdtemp(prefix="rulec-test-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("ci", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-goldens", action="store_true", default=False,
                     help="rewrite expected golden files (and error goldens) from the output")
