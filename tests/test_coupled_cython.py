"""The Cython coupled kernel against the naive reference (tests/naive_coupled.py), bit
for bit, on every option, thread count and path block; and against the core kernel when
nothing is coupled."""
import numpy as np
import pytest

import ltvsim
from ltvsim import _config as cfg
from ltvsim.backends._coupled_args import MODE_CLOSE_FACTOR, MODE_FULL, MODE_PARTIAL
from ltvsim.paths import gbm

from coupled_helpers import assert_same, make_options, run_coupled
from naive_coupled import simulate_coupled_naive

pytest.importorskip("ltvsim.backends._cython_coupled")

SIGMA = np.array([0.60, 0.75])
DT = 1 / 365
N_PATHS, N_STEPS = 11, 12  # 11: one full group of 8 paths and a short one
SEED = 4
MODES = {"full": MODE_FULL, "partial": MODE_PARTIAL, "close_factor": MODE_CLOSE_FACTOR}
# Small depths, so that forced sales move the price and cascades run several rounds.
DEPTH = [2e5, 5e4]
SCENARIOS = {
    "no_impact": dict(),
    "sqrt": dict(depth=DEPTH),
    "linear": dict(depth=[1e6, 2.5e5], sqrt_law=0, permanent=1.0, decay=0.0),
    "sale_limit": dict(depth=DEPTH, max_sell=[0.5, 10.0], min_liquidation=5000.0),
    "crossings": dict(depth=DEPTH, bridge_variance=(SIGMA**2 * DT)[:, None, None]),
    "one_round": dict(depth=[3e4, 7.5e3], max_rounds=1, min_liquidation=1000.0),
}
# (n_threads, path_block): one block of every path, and blocks of 5 (groups cut short).
RUNS = [(1, None), (2, 5)]
_cache = {}


def _paths(n_paths=N_PATHS, n_steps=N_STEPS, seed=2026):
    key = ("paths", n_paths, n_steps, seed)
    if key not in _cache:
        _cache[key] = gbm([80_000.0, 3_000.0], [0.0, 0.0], SIGMA, corr=[[1.0, 0.8], [0.8, 1.0]],
                          n_paths=n_paths, n_steps=n_steps, dt=DT, seed=seed)
    return _cache[key]


def _book(n_loans, seed=3):
    key = ("book", n_loans, seed)
    if key not in _cache:
        _cache[key] = ltvsim.LoanBook.synthetic(n_loans, seed=seed, initial_ltv=(0.5, 0.64))
    return _cache[key]


def _naive(book, paths, options):
    return simulate_coupled_naive(book, paths, options, seed=SEED)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("mode", list(MODES))
def test_matches_naive_bit_for_bit(mode, scenario):
    book, paths = _book(400), _paths()
    options = make_options(2, N_STEPS, N_PATHS, mode=MODES[mode], **SCENARIOS[scenario])
    expected = _naive(book, paths, options)
    if scenario != "no_impact":
        assert expected["path_impact_drawdown"].max() > 0.0
    for n_threads, path_block in RUNS:
        actual = run_coupled("cython", book, paths, options, seed=SEED, n_threads=n_threads,
                             path_block=path_block)
        assert_same(actual, expected, exact=True)


def test_cascades_and_waiting_orders_happen():
    """The scenarios above exercise what they are meant to: several rounds in a step,
    orders that wait for the next step, crossings that liquidate."""
    book, paths = _book(400), _paths()
    sqrt = _naive(book, paths, make_options(2, N_STEPS, N_PATHS, **SCENARIOS["sqrt"]))
    assert sqrt["path_cascade_rounds"].max() >= 2
    waits = _naive(book, paths, make_options(2, N_STEPS, N_PATHS, mode=MODE_PARTIAL, **SCENARIOS["sale_limit"]))
    assert waits["path_unsold_collateral"].max() > 0.0
    # Crossings at daily variances are rare on so small a book: a wider bridge makes
    # some draws succeed (and those must match too).
    options = make_options(2, N_STEPS, N_PATHS, mode=MODE_PARTIAL, depth=DEPTH,
                           bridge_variance=(25.0 * SIGMA**2 * DT)[:, None, None])
    expected = _naive(book, paths, options)
    with_crossings = run_coupled("cython", book, paths, options, seed=SEED, n_threads=2, path_block=5)
    assert_same(with_crossings, expected, exact=True)
    without = run_coupled("cython", book, paths, options._replace(bridge=False, bridge_variance=np.zeros((0, 0, 0))),
                          seed=SEED)
    assert with_crossings["path_liquidations"].sum() > without["path_liquidations"].sum()


@pytest.mark.parametrize("mode", [MODE_FULL, MODE_PARTIAL])
def test_more_than_one_loan_chunk(mode):
    """A book of two loan chunks (the second one short), few paths: chunk-order sums."""
    n_loans = cfg.LOAN_CHUNK + 700
    book, paths = _book(n_loans, seed=11), _paths(n_paths=3, n_steps=8, seed=3)
    options = make_options(2, 8, 3, mode=mode, depth=[1e6, 2.5e5], max_sell=[40.0, 800.0],
                           bridge_variance=(SIGMA**2 * DT)[:, None, None])
    expected = simulate_coupled_naive(book, paths, options, seed=SEED)
    assert expected["path_cascade_rounds"].max() >= 2
    assert expected["path_unsold_collateral"].max() > 0.0
    for n_threads, path_block in [(1, None), (2, None), (2, 2)]:
        actual = run_coupled("cython", book, paths, options, seed=SEED, n_threads=n_threads, path_block=path_block)
        assert_same(actual, expected, exact=True)
    # Without per-step arrays the path and loan figures are the same.
    actual = run_coupled("cython", book, paths, options, seed=SEED, n_threads=2, record_steps=False)
    assert_same(actual, expected, exact=True, keys=[k for k in expected if not k.startswith("step_")])


@pytest.mark.parametrize("liquidation,mode", [("full", MODE_FULL), ("partial", MODE_PARTIAL)])
def test_no_impact_equals_core_kernel(liquidation, mode):
    """Nothing coupled: the core kernel's counts exactly, its money to 1e-12 relative
    (the two add per-path sums in different orders)."""
    book, paths = _book(3000, seed=5), _paths()
    core = ltvsim.simulate(book, paths, backend="cython", liquidation=liquidation, seed=SEED,
                           record_steps=True, n_threads=2)
    coupled = run_coupled("cython", book, paths, make_options(2, N_STEPS, N_PATHS, mode=mode), seed=SEED,
                          n_threads=2, path_block=5)
    assert core.arrays["path_liquidations"].sum() > 0
    for key, expected in core.arrays.items():
        if key not in coupled:
            continue
        actual = np.asarray(coupled[key])
        expected = np.asarray(expected)
        if expected.dtype.kind == "i":
            np.testing.assert_array_equal(actual, expected, err_msg=key)
        else:
            np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12 * max(1.0, float(np.abs(expected).max(initial=0))),
                                       err_msg=key)
    assert coupled["path_cascade_rounds"].max() == 1  # orders settle in one round, no cascade
    assert not coupled["path_impact_drawdown"].any()
    np.testing.assert_array_equal(coupled["step_impact"], 1.0)


def test_groups_in_parallel_add_loan_losses_in_path_order():
    """Threads take whole groups of paths; each loan's losses from several groups are
    still added in path order (a deep crash: every loan loses on many paths)."""
    book = _book(300)
    paths = gbm([80_000.0, 3_000.0], [0.0, 0.0], 3.0 * SIGMA, corr=[[1.0, 0.8], [0.8, 1.0]],
                n_paths=40, n_steps=N_STEPS, dt=DT, seed=7)
    options = make_options(2, N_STEPS, 40, depth=[1e3, 2.5e2], depth_move=0.2)
    expected = _naive(book, paths, options)
    assert (expected["path_loss"] > 0).sum() >= 16  # losses on many paths, in several groups
    assert expected["loan_margin_calls"].sum() > 0
    for n_threads, path_block in [(1, None), (2, None), (3, None), (2, 24)]:
        actual = run_coupled("cython", book, paths, options, seed=SEED, n_threads=n_threads, path_block=path_block)
        assert_same(actual, expected, exact=True)
