"""Coupled kernel (market impact and cascades) against the plain kernel, same session.

    python -m pytest benchmarks/bench_cascades.py --benchmark-enable \
        --benchmark-json bench_results/cascades-<date>.json
    python benchmarks/report.py bench_results/cascades-<date>.json

The core benchmark books of ``bench_kernels.py`` (1,000,000 synthetic loans, 64
correlated-GBM paths of 30 daily steps, BTC/ETH at 60% / 75% volatility): ``default``
(initial LTV 40-60%) and ``stressed`` (50-64%). Each compiled backend on 2 threads runs
them plainly (``kernel=core``) and with market impact on (``kernel=impact``: square-root
law, 2% depth of $2bn for BTC and $500m for ETH, half permanent, one-day half-life, up
to 10 rounds). The Bar: the impact run keeps at least a third of the plain run's
throughput; ``impact_share_of_core`` in each impact run's ``extra_info`` is the ratio of
the two minima measured in this session.
"""
import numpy as np
import pytest

import ltvsim
from ltvsim import MarketImpact
from ltvsim.paths import gbm

N_LOANS, N_PATHS, N_STEPS = 1_000_000, 64, 30
BOOKS = {"default": (0.40, 0.60), "stressed": (0.50, 0.64)}
IMPACT = MarketImpact(depth={"BTC": 2e9, "ETH": 5e8}, law="sqrt", permanent=0.5, half_life=1 / 365, max_rounds=10)
_cache = {}
_core_minimum = {}


def _paths():
    if "paths" not in _cache:
        _cache["paths"] = gbm(
            [80_000.0, 3_000.0], [0.0, 0.0], [0.60, 0.75], corr=[[1.0, 0.8], [0.8, 1.0]],
            n_paths=N_PATHS, n_steps=N_STEPS, dt=1 / 365, seed=2026, assets=["BTC", "ETH"],
        )
    return _cache["paths"]


def _book(kind):
    if kind not in _cache:
        _cache[kind] = ltvsim.LoanBook.synthetic(N_LOANS, seed=7, initial_ltv=BOOKS[kind])
    return _cache[kind]


@pytest.mark.parametrize("kind", list(BOOKS))
@pytest.mark.parametrize("backend", ["cython", "numba"])
@pytest.mark.parametrize("kernel", ["core", "impact"])
def test_impact_vs_core(benchmark, kernel, backend, kind):
    benchmark.group = f"{kind}-book-1M-loans-x-64-paths-x-30-steps"
    book, paths = _book(kind), _paths()
    kwargs = {"backend": backend, "n_threads": 2}
    if kernel == "impact":
        kwargs["impact"] = IMPACT
    ltvsim.simulate(book.subset(slice(0, 1000)), paths, **kwargs)  # compile
    result = benchmark.pedantic(ltvsim.simulate, args=(book, paths), kwargs=kwargs, rounds=3, warmup_rounds=0)
    info = dict(
        backend=backend, book=kind, kernel=kernel, n_threads=2, n_loans=N_LOANS, n_paths=N_PATHS,
        n_steps=N_STEPS, loan_path_steps=N_LOANS * N_PATHS * N_STEPS,
        mean_liquidations_per_path=float(result.path_liquidations.mean()),
    )
    minimum = benchmark.stats.stats.min
    if kernel == "core":
        _core_minimum[(backend, kind)] = minimum
    else:
        info["mean_cascade_rounds"] = float(result.path_cascade_rounds.mean())
        info["max_cascade_rounds"] = int(result.path_cascade_rounds.max())
        info["mean_impact_drawdown"] = result.path_impact_drawdown.mean(axis=0).tolist()
        core = _core_minimum.get((backend, kind))
        if core is not None:
            info["impact_share_of_core"] = core / minimum
            info["bar_one_third_met"] = bool(core / minimum >= 1 / 3)
    benchmark.extra_info.update(info)
