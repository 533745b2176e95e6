"""Shared settings of the benchmark suites.

``fast`` is true when the timings are not wanted (``--benchmark-disable``, where each
benchmark runs once as a plain test) or under CI (env ``CI`` set): the suites then skip
or shrink the cases that take seconds on the pure-Python reference.
"""

from __future__ import annotations

import os

import pytest


def fast_mode(config: pytest.Config) -> bool:
    """Whether to skip the slow cases (benchmarks disabled, or running under CI)."""
    disabled = bool(config.getoption("benchmark_disable", default=False))
    return disabled or bool(os.environ.get("CI"))


@pytest.fixture(scope="session")
def fast(pytestconfig: pytest.Config) -> bool:
    """True when slow benchmark cases should be skipped (see :func:`fast_mode`)."""
    return fast_mode(pytestconfig)
