"""Near-trigger skipping: the Bar, and the speed-up over evaluating every path.

    python -m pytest benchmarks/bench_skipping.py --benchmark-enable \
        --benchmark-json bench_results/skipping-<date>.json
    python benchmarks/bench_skipping.py bench_results/skipping-<date>.json

The Bar: a synthetic 1,000,000-loan book (``LoanBook.synthetic(1_000_000, seed=7)``,
initial LTV uniform 40-60%) over 10,000 correlated GBM paths (BTC and ETH, s0 80,000 and
3,000, no drift, 60% / 80% annual volatility, correlation 0.8) of 30 daily steps runs in
under 60 seconds on this 2-core machine.

* ``test_bar``: that run, ``simulate(book, paths, backend=..., n_threads=2)`` with the
  defaults (skipping on, default path block), one round per compiled backend. The JSON
  records the seconds and whether the bar is met; nothing is asserted about speed.
* ``test_first_1000_paths``: the same book on the first 1,000 of those paths, with
  skipping (the default) and without (``_path_order.MODE = "off"``, 64-path blocks: the
  kernels as they ran before skipping), for the ratio.

Compilation is kept out of the timings (a small run first). The load average before and
after each run is recorded: the machine is shared, and a busy neighbour shows there.
"""
import os
import sys

import pytest

import ltvsim
from ltvsim.backends import _path_order
from ltvsim.paths import gbm

N_LOANS, N_PATHS, N_STEPS, N_THREADS = 1_000_000, 10_000, 30, 2
BAR_SECONDS = 60.0
_cache = {}


def _book():
    if "book" not in _cache:
        _cache["book"] = ltvsim.LoanBook.synthetic(N_LOANS, seed=7)
    return _cache["book"]


def _paths(n_paths):
    if "paths" not in _cache:
        _cache["paths"] = gbm(
            [80_000.0, 3_000.0], [0.0, 0.0], [0.60, 0.80], corr=[[1.0, 0.8], [0.8, 1.0]],
            n_paths=N_PATHS, n_steps=N_STEPS, dt=1 / 365, seed=2026, assets=["BTC", "ETH"],
        )
    paths = _cache["paths"]
    if n_paths == paths.n_paths:
        return paths
    return ltvsim.PricePaths(paths.prices[:n_paths], dt=paths.dt, assets=paths.assets)


def _run(benchmark, backend, n_paths, mode, path_block=None):
    book, paths = _book(), _paths(n_paths)
    ltvsim.simulate(book.subset(slice(0, 1000)), _paths(64), backend=backend, n_threads=N_THREADS)  # compile
    load_before = os.getloadavg()[0]
    previous, _path_order.MODE = _path_order.MODE, mode
    try:
        result = benchmark.pedantic(
            ltvsim.simulate, args=(book, paths),
            kwargs={"backend": backend, "n_threads": N_THREADS, "path_block": path_block},
            rounds=1, warmup_rounds=0,
        )
    finally:
        _path_order.MODE = previous
    seconds = benchmark.stats.stats.min
    benchmark.extra_info.update(
        backend=backend, book="default", mode=mode, n_threads=N_THREADS, n_loans=N_LOANS,
        n_paths=n_paths, n_steps=N_STEPS, loan_path_steps=N_LOANS * n_paths * N_STEPS,
        path_block=path_block or "default", seconds=seconds,
        load_average_before=load_before, load_average_after=os.getloadavg()[0],
        share_of_loan_paths_called=float(result.loan_margin_calls.sum() / (N_LOANS * n_paths)),
        total_loss=float(result.path_loss.sum()),
    )
    return seconds


@pytest.mark.parametrize("backend", ["cython", "numba"])
def test_bar(benchmark, backend):
    benchmark.group = "bar-1M-loans-x-10000-paths-x-30-steps"
    seconds = _run(benchmark, backend, N_PATHS, "skip")
    benchmark.extra_info.update(bar_seconds=BAR_SECONDS, bar_met=seconds < BAR_SECONDS)


@pytest.mark.parametrize("mode", ["skip", "off"])
@pytest.mark.parametrize("backend", ["cython", "numba"])
def test_first_1000_paths(benchmark, backend, mode):
    benchmark.group = "1M-loans-x-1000-paths-x-30-steps"
    _run(benchmark, backend, 1000, mode, path_block=64 if mode == "off" else None)


def report(path):
    """Print a Markdown table of a saved run."""
    import json

    with open(path) as handle:
        data = json.load(handle)
    machine = data["machine_info"]
    print(f"Machine: {machine.get('cpu', {}).get('brand_raw', '?')}, "
          f"{machine.get('usable_cores', '?')} usable cores; {data['datetime']}")
    print()
    print("| backend | skipping | loans x paths x steps | path block | seconds | M loan-path-steps/s | load before/after |")
    print("|---|---|---|---|---|---|---|")
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        seconds = bench["stats"]["min"]
        print(f"| {info['backend']} | {'on' if info['mode'] == 'skip' else 'off'} | "
              f"{info['n_loans']:,} x {info['n_paths']:,} x {info['n_steps']} | {info['path_block']} | "
              f"{seconds:.1f} | {info['loan_path_steps'] / seconds / 1e6:,.0f} | "
              f"{info['load_average_before']:.1f} / {info['load_average_after']:.1f} |")


if __name__ == "__main__":
    report(sys.argv[1])
