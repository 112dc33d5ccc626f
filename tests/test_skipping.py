"""Near-trigger skipping in the compiled kernels changes no bit, and does skip.

The compiled kernels sort each block's paths by their lowest price (per asset) and run
a loan only on the prefix of paths that can come near its call level
(``ltvsim.backends._path_order``). The private ``_path_order.MODE`` switch runs the
same kernels with the sorted layout but every path ("sort") or in block order ("off");
all three must agree to the last bit, with each other, across the two compiled
backends, and for any thread count and path block.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ltvsim
from helpers import assert_identical, book_of, paths_of
from ltvsim import backends
from ltvsim.backends import _path_order
from ltvsim.backends._args import new_block_outputs
from ltvsim.simulate import kernel_loans
from test_properties import loan_books, seeds

MODES = ("full", "partial")


def run(book, paths, backend, mode, **kw):
    """simulate() with the path-order mode ``mode``."""
    previous = _path_order.MODE
    _path_order.MODE = mode
    try:
        return ltvsim.simulate(book, paths, backend=backend, **kw)
    finally:
        _path_order.MODE = previous


# ----------------------------------------------------------------------------- strategies
@st.composite
def many_paths(draw, max_paths=80, max_steps=12):
    """Enough paths (9-``max_paths``) that a loan's active prefix can be a part of them:
    random walks of drawn volatility, with drawn crashes, of one or two assets."""
    n_assets = draw(st.integers(1, 2))
    n_paths = draw(st.integers(9, max_paths))
    n_steps = draw(st.integers(0, max_steps))
    vol = draw(st.sampled_from([0.01, 0.05, 0.15, 0.3]))
    crash = draw(st.sampled_from([0.0, 0.05, 0.2]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    moves = np.exp(vol * rng.standard_normal((n_paths, n_steps, n_assets)))
    moves = np.where(rng.random(moves.shape) < crash, rng.choice([0.3, 0.6, 1.5], moves.shape), moves)
    s0 = np.array([80_000.0, 3_000.0][:n_assets])
    prices = s0 * np.concatenate([np.ones((n_paths, 1, n_assets)), np.cumprod(moves, axis=1)], axis=1)
    dt = draw(st.sampled_from([1 / 365, 1 / 12]))
    return ltvsim.PricePaths(prices, dt=dt)


@st.composite
def skipping_cases(draw):
    """A book of loans near their call (``loan_books``'s edge values) and far from it."""
    paths = draw(many_paths())
    book = draw(loan_books(paths, max_loans=25))
    far = draw(st.integers(0, 25))
    if far:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        asset = rng.integers(0, paths.n_assets, far)
        s0 = np.asarray(paths.prices[:, 0, :]).mean(axis=0)[asset]
        m = rng.choice([0.65, 0.7, 0.75], far)
        debt = rng.uniform(1e3, 1e6, far)
        ltv0 = m * rng.uniform(0.05, 0.9, far)
        extra = ltvsim.LoanBook(
            asset=asset, collateral=debt / (ltv0 * s0), debt=debt, rate=rng.choice([0.0, 0.1, 2.0], far),
            margin_call_ltv=m, liquidation_ltv=m + 0.1, target_ltv=m - 0.15,
            cure_steps=rng.integers(0, 4, far), fee=rng.choice([0.0, 0.05], far),
            topup_prob=rng.choice([0.0, 0.5, 1.0], far),
        )
        book = _concat(book, extra, rng.permutation(len(book) + far))
    return book, paths


def _concat(a, b, order):
    fields = ("asset", "collateral", "debt", "rate", "margin_call_ltv", "liquidation_ltv",
              "target_ltv", "cure_steps", "fee", "topup_prob")
    return ltvsim.LoanBook(**{f: np.concatenate([getattr(a, f), getattr(b, f)])[order] for f in fields})


# ----------------------------------------------------------------------------- bit-identical
@settings(max_examples=30)
@given(case=skipping_cases(), liquidation=st.sampled_from(MODES), seed=seeds,
       record_steps=st.booleans())
def test_skipping_changes_no_bit(compiled_backend, case, liquidation, seed, record_steps):
    book, paths = case
    kw = dict(liquidation=liquidation, seed=seed, record_steps=record_steps, n_threads=2)
    skip = run(book, paths, compiled_backend, "skip", **kw)
    for other in ("sort", "off"):
        assert_identical(skip, run(book, paths, compiled_backend, other, **kw),
                         label=f"{compiled_backend} skip vs {other}: ")


@settings(max_examples=20)
@given(case=skipping_cases(), liquidation=st.sampled_from(MODES), seed=seeds)
def test_compiled_backends_agree_with_skipping(case, liquidation, seed):
    book, paths = case
    kw = dict(liquidation=liquidation, seed=seed, n_threads=2, path_block=32)
    for record_steps in (False, True):
        cython = run(book, paths, "cython", "skip", record_steps=record_steps, **kw)
        numba = run(book, paths, "numba", "skip", record_steps=record_steps, **kw)
        assert_identical(cython, numba, label=f"record_steps={record_steps} cython vs numba: ")


@settings(max_examples=10)
@given(case=skipping_cases(), liquidation=st.sampled_from(MODES), seed=seeds)
def test_threads_and_path_blocks_with_skipping(compiled_backend, case, liquidation, seed):
    book, paths = case
    kw = dict(liquidation=liquidation, seed=seed)
    base = run(book, paths, compiled_backend, "off", n_threads=1, path_block=paths.n_paths, **kw)
    for n_threads in (1, 2):
        for path_block in (8, 64, 100):
            other = run(book, paths, compiled_backend, "skip", n_threads=n_threads, path_block=path_block, **kw)
            assert_identical(other, base, label=f"n_threads={n_threads} path_block={path_block}: ")


def test_gbm_book_with_every_feature(compiled_backend):
    """A synthetic book (rates > 0, top-ups, several products) on GBM paths, partial and
    full, with and without record_steps: skipping on == off, and loans were liquidated."""
    book = ltvsim.LoanBook.synthetic(3000, seed=3, initial_ltv=(0.3, 0.7))
    paths = ltvsim.paths.gbm([80_000.0, 3_000.0], [0.0, 0.0], [0.8, 1.0], corr=[[1, 0.8], [0.8, 1]],
                             n_paths=300, n_steps=20, dt=1 / 365, seed=11, assets=["BTC", "ETH"])
    for liquidation in MODES:
        for record_steps in (False, True):
            kw = dict(liquidation=liquidation, seed=9, record_steps=record_steps, n_threads=2, path_block=256)
            skip = run(book, paths, compiled_backend, "skip", **kw)
            assert skip.path_liquidations.sum() > 0 and skip.path_topups.sum() > 0
            assert_identical(skip, run(book, paths, compiled_backend, "off", **kw), label=f"{liquidation}: ")


# ----------------------------------------------------------------------------- it skips
def _evaluated(book, paths, backend, mode, record_steps=False):
    """Loan-paths the kernel's passes ran on, for one block of all paths."""
    kernel = backends.load(backend)
    loan_outputs = (np.zeros(len(book)), np.zeros(len(book), dtype=np.int64), np.zeros(len(book), dtype=np.int64))
    out = new_block_outputs(paths.n_paths, paths.n_steps, paths.n_assets, record_steps, loan_outputs)
    prices = paths.kernel_block(0, paths.n_paths)
    return kernel.evaluate_block(prices, kernel_loans(book, paths.dt), 0, 0, False, 2, out, mode=mode)


def test_a_loan_runs_only_on_the_paths_that_can_reach_its_call(compiled_backend):
    # 64 paths; 5 of them dip to 60 at some step, the others never go below 100.
    rows = np.full((64, 6), 120.0)
    rows[:, 3] = 100.0
    dips = [3, 17, 40, 41, 63]
    rows[dips, 2] = 60.0
    paths = paths_of(rows)
    near = dict()  # BASE_LOAN: call at S < 71.43, so only the 5 dipping paths
    far = dict(debt=10.0)  # call at S < 14.3: no path
    above_one = dict(margin_call_ltv=1.2, liquidation_ltv=1.3, target_ltv=0.5)  # never skipped
    accruing = dict(debt=40.0, rate=0.1)  # call price grows with the debt: still the dips only
    book = book_of(near, far, above_one, accruing)
    assert _evaluated(book, paths, compiled_backend, "skip") == 8 + 0 + 64 + 8
    assert _evaluated(book, paths, compiled_backend, "sort") == 4 * 64
    assert _evaluated(book, paths, compiled_backend, "off") == 4 * 64
    assert _evaluated(book, paths, compiled_backend, "skip", record_steps=True) == 4 * 64
    # And the loans on the dips were liquidated there, at the right paths.
    r = run(book, paths, compiled_backend, "skip", path_block=64)
    assert set(np.flatnonzero(r.path_liquidations)) == set(dips)
    assert_identical(r, run(book, paths, compiled_backend, "off", path_block=64))


def test_most_loan_paths_of_a_calm_book_are_skipped(compiled_backend):
    book = ltvsim.LoanBook.synthetic(2000, seed=7)
    paths = ltvsim.paths.gbm([80_000.0, 3_000.0], [0.0, 0.0], [0.6, 0.8], corr=[[1, 0.8], [0.8, 1]],
                             n_paths=512, n_steps=30, dt=1 / 365, seed=1, assets=["BTC", "ETH"])
    evaluated = _evaluated(book, paths, compiled_backend, "skip")
    assert 0 < evaluated < 0.4 * len(book) * paths.n_paths


# ----------------------------------------------------------------------------- the layout
@settings(max_examples=30)
@given(paths=many_paths())
def test_sorted_layout(paths):
    prices = paths.kernel_block(0, paths.n_paths)
    layout = _path_order.sort_paths(prices, "skip")
    n_assets, n_steps_1, n_paths = prices.shape
    for a in range(n_assets):
        assert sorted(layout.order[a]) == list(range(n_paths))
        np.testing.assert_array_equal(layout.prices[a], prices[a][:, layout.order[a]])
        np.testing.assert_array_equal(layout.path_min[a], prices[a].min(axis=0)[layout.order[a]])
        assert np.all(np.diff(layout.path_min[a]) >= 0)
        for g in range(layout.floor.shape[2]):
            stop = min(8 * (g + 1), n_paths)
            np.testing.assert_array_equal(layout.floor[a, :, g], layout.prices[a, :, :stop].min(axis=1))
    off = _path_order.sort_paths(prices, "off")
    assert not off.skip and np.array_equal(off.prices, prices)
    np.testing.assert_array_equal(off.floor[:, :, -1], prices.min(axis=2))


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="path order mode"):
        _path_order.sort_paths(np.ones((1, 2, 3)), "fast")
