"""Shared pytest fixtures and hypothesis settings.

Sections: hypothesis profiles, kernel implementations. Add new fixtures in their own
section below.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest
from hypothesis import HealthCheck, settings

# --- hypothesis profiles ------------------------------------------------------------
# "default" for local runs; "ci" (fewer examples) when the CI environment variable is
# set. Choose one explicitly with HYPOTHESIS_PROFILE=name.

settings.register_profile(
    "default",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default")
)

# --- kernel implementations ---------------------------------------------------------

IMPLEMENTATIONS = ("native", "python")


def load_impl(name: str) -> ModuleType:
    """The kernel module behind an implementation name: varemi._native or reference."""
    if name == "native":
        from varemi import _native

        return _native
    from varemi.core import reference

    return reference


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """Each kernel test runs once on the Rust kernels and once on the Python reference."""
    return load_impl(request.param)
