"""ltvsim: fast, exact Monte Carlo for the risk of crypto-collateralised loan books.

The main objects:

* :class:`LoanBook` - the loans (structure of arrays, validated);
* :class:`PricePaths` and :mod:`ltvsim.paths` - simulated prices;
* :func:`simulate` - every loan on every path, on the ``numpy``, ``cython`` or
  ``numba`` backend;
* :class:`SimulationResult` - per-path and per-loan results and risk measures;
* :func:`run_batch` - a long run block by block in bounded memory, resumable from an
  output directory, optionally on a ``dask.distributed`` cluster (:mod:`ltvsim.batch`).
"""
from ._estimators import Estimate
from .backends import available as available_backends
from .batch import merge_results, run_batch
from .book import LoanBook
from .paths import PricePaths
from .result import SimulationResult
from .simulate import simulate

__version__ = "0.1.0"

__all__ = [
    "Estimate",
    "LoanBook",
    "PricePaths",
    "SimulationResult",
    "available_backends",
    "merge_results",
    "run_batch",
    "simulate",
    "__version__",
]
