"""ltvsim: fast, exact Monte Carlo for the risk of crypto-collateralised loan books.

The main objects:

* :class:`LoanBook` - the loans (structure of arrays, validated);
* :class:`PricePaths` and :mod:`ltvsim.paths` - simulated prices;
* :func:`simulate` - every loan on every path, on the ``numpy``, ``cython`` or
  ``numba`` backend;
* :class:`MarketImpact`, :class:`LiquidationRules` - deleveraging cascades and lenders'
  liquidation rules, options of :func:`simulate` (:mod:`ltvsim.cascade`);
* :class:`SimulationResult` - per-path and per-loan results and risk measures;
* :func:`run_batch` - a long run block by block in bounded memory, resumable from an
  output directory, optionally on a ``dask.distributed`` cluster (:mod:`ltvsim.batch`);
* :mod:`ltvsim.risk` - loss waterfall (:class:`CapitalStructure`), risk measures with
  error bars, segment views; :mod:`ltvsim.report` - the HTML risk report
  (:func:`write_report`, needs matplotlib).
"""
from ._estimators import Estimate
from .backends import available as available_backends
from .batch import merge_results, run_batch
from .book import LoanBook
from .cascade import LiquidationRules, MarketImpact
from .paths import PricePaths
from . import report, risk
from .report import write_report
from .result import SimulationResult
from .risk import CapitalStructure
from .simulate import simulate

__version__ = "0.1.0"

__all__ = [
    "CapitalStructure",
    "Estimate",
    "LiquidationRules",
    "LoanBook",
    "MarketImpact",
    "PricePaths",
    "SimulationResult",
    "available_backends",
    "merge_results",
    "run_batch",
    "simulate",
    "write_report",
    "__version__",
]
