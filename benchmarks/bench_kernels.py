"""Kernel throughput in loan-path-steps per second: backend x threads x book.

    python -m pytest benchmarks/bench_kernels.py --benchmark-enable \
        --benchmark-json bench_results/kernels-<date>.json
    python benchmarks/report.py bench_results/kernels-<date>.json

Books (``LoanBook.synthetic``, 1,000,000 loans, BTC/ETH, 64 correlated-GBM paths of 30
daily steps, 60% / 75% annual volatility, correlation 0.8):

* ``default``: initial LTV uniform 40-60% (the CLI's book);
* ``stressed``: initial LTV uniform 50-64%, so every loan starts just below one of its
  product's call levels (65%, 70%, 75%), the riskiest within one point; about a quarter
  of loan-paths get a margin call within the 30 days.

The ``numpy`` backend (the vectorised NumPy reference: what a quant would write) runs
the same books on 100,000 loans in the same session; throughput is per loan-path-step,
so the sizes compare. Compilation is kept out of the timings (a warm-up round).
"""
import numpy as np
import pytest

import ltvsim
from ltvsim.paths import gbm

N_PATHS, N_STEPS = 64, 30
BOOKS = {"default": (0.40, 0.60), "stressed": (0.50, 0.64)}
_cache = {}


def _paths():
    if "paths" not in _cache:
        _cache["paths"] = gbm(
            [80_000.0, 3_000.0], [0.0, 0.0], [0.60, 0.75], corr=[[1.0, 0.8], [0.8, 1.0]],
            n_paths=N_PATHS, n_steps=N_STEPS, dt=1 / 365, seed=2026, assets=["BTC", "ETH"],
        )
    return _cache["paths"]


def _book(kind, n_loans):
    key = (kind, n_loans)
    if key not in _cache:
        _cache[key] = ltvsim.LoanBook.synthetic(n_loans, seed=7, initial_ltv=BOOKS[kind])
    return _cache[key]


def _run(benchmark, backend, kind, n_loans, n_threads, rounds):
    book, paths = _book(kind, n_loans), _paths()
    ltvsim.simulate(book.subset(slice(0, 1000)), paths, backend=backend, n_threads=n_threads)  # compile
    result = benchmark.pedantic(
        ltvsim.simulate, args=(book, paths),
        kwargs={"backend": backend, "n_threads": n_threads}, rounds=rounds, warmup_rounds=0,
    )
    work = n_loans * N_PATHS * N_STEPS
    benchmark.extra_info.update(
        backend=backend, book=kind, n_threads=n_threads, n_loans=n_loans, n_paths=N_PATHS,
        n_steps=N_STEPS, loan_path_steps=work,
        share_of_loan_paths_called=float(result.loan_margin_calls.sum() / (n_loans * N_PATHS)),
    )


@pytest.mark.parametrize("kind", list(BOOKS))
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("backend", ["cython", "numba"])
def test_compiled(benchmark, backend, n_threads, kind):
    benchmark.group = f"{kind}-book-1M-loans-x-64-paths-x-30-steps"
    _run(benchmark, backend, kind, 1_000_000, n_threads, rounds=5)


@pytest.mark.parametrize("kind", list(BOOKS))
def test_numpy_reference(benchmark, kind):
    benchmark.group = f"{kind}-book-1M-loans-x-64-paths-x-30-steps"
    _run(benchmark, "numpy", kind, 100_000, 1, rounds=1)
