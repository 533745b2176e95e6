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


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the CLI's main in-process and return its one ``error:`` line (exit 2 expected).

    The same code path as ``python -m varemi`` without the seconds a subprocess spends
    importing torch; offline, so a hub id fails at once.
    """
    import helpers as h

    from varemi.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def one_error(*args) -> str:
        code = main([str(a) for a in args])
        err = capsys.readouterr().err
        assert code == 2, err
        errors = h.error_lines(err)
        assert len(errors) == 1 and "Traceback" not in err, err
        return errors[0]

    return one_error
