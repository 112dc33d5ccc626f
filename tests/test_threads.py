"""simulate() called from several Python threads at once gives the sequential results.

The compiled kernels release the GIL and keep all state in per-call scratch, so calls
overlap; nothing may leak between them.
"""
import threading

import pytest

import ltvsim
from helpers import assert_identical


@pytest.fixture(scope="module")
def workloads():
    """Two different runs (books, paths, modes, seeds), each big enough to overlap."""
    book_a = ltvsim.LoanBook.synthetic(2500, seed=21, initial_ltv=(0.5, 0.8))
    book_b = ltvsim.LoanBook.synthetic(2200, seed=22, initial_ltv=(0.45, 0.75))
    paths_a = ltvsim.paths.gbm([80_000.0, 3_000.0], 0.0, [0.8, 1.0], n_paths=96, n_steps=30, dt=1 / 365,
                               seed=1, assets=["BTC", "ETH"])
    paths_b = ltvsim.paths.gbm([80_000.0, 3_000.0], -0.5, [1.0, 1.2], n_paths=80, n_steps=20, dt=1 / 52,
                               seed=2, assets=["BTC", "ETH"])
    return [
        dict(book=book_a, paths=paths_a, liquidation="partial", seed=5, record_steps=True, path_block=32),
        dict(book=book_b, paths=paths_b, liquidation="full", seed=6, record_steps=False),
    ]


def run_concurrently(calls):
    """Start every call in its own thread at once; return results in order."""
    results = [None] * len(calls)
    errors = []
    barrier = threading.Barrier(len(calls))

    def work(k, kwargs):
        try:
            barrier.wait()
            results[k] = ltvsim.simulate(**kwargs)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k, kw)) for k, kw in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "a simulate call hung"
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize(
    "backends",
    [("cython", "cython"), ("numba", "numba"), ("cython", "numba")],
    ids=lambda b: "+".join(b),
)
def test_concurrent_calls_match_sequential_calls(workloads, backends):
    calls = [dict(w, backend=b, n_threads=2) for w, b in zip(workloads, backends)]
    sequential = [ltvsim.simulate(**kw) for kw in calls]
    assert sequential[0].path_liquidations.sum() > 0 and sequential[1].path_liquidations.sum() > 0
    for attempt in range(2):
        concurrent = run_concurrently(calls)
        for k, (a, b) in enumerate(zip(concurrent, sequential)):
            assert_identical(a, b, label=f"attempt {attempt}, call {k} ({backends[k]}): ")


@pytest.mark.parametrize("backend", ["cython", "numba"])
def test_the_same_run_in_two_threads(workloads, backend):
    kwargs = dict(workloads[0], backend=backend, n_threads=1)
    sequential = ltvsim.simulate(**kwargs)
    first, second = run_concurrently([kwargs, kwargs])
    assert_identical(first, sequential)
    assert_identical(second, sequential)


@pytest.mark.parametrize("liquidation", ["full", "partial"])
def test_many_waves_give_the_one_wave_results(compiled_backend, monkeypatch, liquidation):
    # With few paths a block's slots fit the scratch budget and one wave takes every loan
    # chunk; a tiny budget makes the kernels reuse SLOTS_PER_THREAD slots over many
    # waves (each zeroed and reduced in chunk order). Same bits, any thread count.
    n_loans = 9 * ltvsim._config.LOAN_CHUNK + 17  # more chunks than 2 threads' slots
    book = ltvsim.LoanBook.synthetic(n_loans, seed=23, initial_ltv=(0.5, 0.75))
    paths = ltvsim.paths.gbm([80_000.0, 3_000.0], 0.0, [0.9, 1.1], n_paths=12, n_steps=15,
                             dt=1 / 365, seed=3, assets=["BTC", "ETH"])
    kwargs = dict(backend=compiled_backend, liquidation=liquidation, seed=9, record_steps=True)
    one_wave = ltvsim.simulate(book, paths, n_threads=2, **kwargs)
    from ltvsim.backends import _args
    assert _args.slot_count(n_loans, 2, 12, 15, 2, True) == 10  # every chunk in one wave
    monkeypatch.setattr(ltvsim._config, "SLOT_SCRATCH_BYTES", 1)
    assert _args.slot_count(n_loans, 2, 12, 15, 2, True) == 2 * ltvsim._config.SLOTS_PER_THREAD
    for n_threads in (1, 2):
        assert_identical(one_wave, ltvsim.simulate(book, paths, n_threads=n_threads, **kwargs),
                         label=f"{n_threads} threads, small waves: ")
