"""The three interchangeable implementations of one kernel, and how to pick one.

Each backend module exposes ``evaluate_block(prices, loans, seed, path_offset, partial,
n_threads, out)`` with the same contract (see ``_numpy_kernel.evaluate_block``).
"""
import importlib

#: Backend names, in the order ``"auto"`` prefers them.
NAMES = ("cython", "numba", "numpy")
_MODULES = {
    "numpy": "ltvsim.backends._numpy_kernel",
    "cython": "ltvsim.backends._cython_kernel",
    "numba": "ltvsim.backends._numba_kernel",
}


def load(name):
    """Import and return the module of backend ``name``.

    Raises
    ------
    ValueError
        For an unknown name.
    ImportError
        When that backend cannot be loaded here (e.g. the Cython extension was not built).
    """
    if name not in _MODULES:
        raise ValueError(f"backend must be one of {['auto', *NAMES]}, got {name!r}")
    return importlib.import_module(_MODULES[name])


_COUPLED_MODULES = {
    "numpy": "ltvsim.backends._numpy_coupled",
    "cython": "ltvsim.backends._cython_coupled",
    "numba": "ltvsim.backends._numba_coupled",
}


def load_coupled(name):
    """Import and return the coupled kernel (cascades, lenders' rules, crossings) of
    backend ``name``: a module with ``evaluate_coupled(prices, loans, options, seed,
    path_offset, n_threads, out)``."""
    if name not in _COUPLED_MODULES:
        raise ValueError(f"backend must be one of {['auto', *NAMES]}, got {name!r}")
    return importlib.import_module(_COUPLED_MODULES[name])


def available():
    """Names of the backends that load on this machine, fastest first."""
    names = []
    for name in NAMES:
        try:
            load(name)
        except ImportError:
            continue
        names.append(name)
    return names


def resolve(name):
    """Map ``"auto"`` to the fastest available backend; check any other name."""
    if name == "auto":
        for candidate in NAMES:
            try:
                load(candidate)
            except ImportError:
                continue
            return candidate
    load(name)
    return name
