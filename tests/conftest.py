"""Shared fixtures: the ``backend`` every behavioural test runs on, hypothesis profiles,
and a guard that proves no kernel ran."""
import os

import pytest
from hypothesis import HealthCheck, settings

from ltvsim.backends import _numpy_kernel

BACKENDS = ("numpy", "cython", "numba")
COMPILED = ("cython", "numba")

# Profiles: "default" for a developer's run, "ci" for a longer search, "quick" for a
# smoke run. Choose with HYPOTHESIS_PROFILE=ci.
settings.register_profile(
    "default",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("quick", deadline=None, max_examples=10)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _load(name):
    """Import a backend's module. A backend that does not load fails its tests (an
    unbuilt Cython extension must not pass silently as a skip)."""
    from ltvsim import backends

    return backends.load(name)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request):
    """Name of the backend under test; every behavioural test runs on all three."""
    _load(request.param)
    return request.param


@pytest.fixture(scope="session", params=COMPILED)
def compiled_backend(request):
    """The two compiled backends (which must agree bit for bit)."""
    _load(request.param)
    return request.param


@pytest.fixture
def no_kernel(monkeypatch):
    """Make every backend's ``evaluate_block`` fail if called; yields the call log."""
    calls = []

    def forbidden(*args, **kwargs):  # pragma: no cover - reached only on a bug
        calls.append(args)
        raise AssertionError("a kernel ran on input that should have been refused")

    for name in BACKENDS:
        module = _load(name)
        monkeypatch.setattr(module, "evaluate_block", forbidden)
    assert _numpy_kernel.evaluate_block is forbidden
    yield calls
    assert calls == []
