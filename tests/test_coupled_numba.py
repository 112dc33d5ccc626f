"""The numba coupled kernel against the naive reference (``naive_coupled``), bit for bit:
every liquidation mode, both impact laws with cascades, sale limits, dust, crossings,
round limits, thread counts and path blocks; and, with nothing coupled switched on,
against the core numba kernel."""
import numpy as np
import pytest

import ltvsim
from ltvsim import LoanBook
from ltvsim import _config as cfg
from ltvsim.backends._coupled_args import MODE_CLOSE_FACTOR, MODE_FULL, MODE_PARTIAL
from ltvsim.paths import gbm

from coupled_helpers import assert_same, make_options, run_coupled
from naive_coupled import simulate_coupled_naive

S0 = (80_000.0, 3_000.0)
SIGMA = np.array([0.8, 1.0])
DT = 1 / 365
SEED = 9
MODES = {"full": MODE_FULL, "partial": MODE_PARTIAL, "close_factor": MODE_CLOSE_FACTOR}
BRIDGE = (SIGMA**2 * DT)[:, None, None]


def _scenario(n_loans, n_paths, n_steps, book_seed=3, path_seed=21):
    book = LoanBook.synthetic(n_loans, seed=book_seed, initial_ltv=(0.5, 0.64))
    paths = gbm(S0, 0.0, SIGMA, corr=[[1.0, 0.8], [0.8, 1.0]], n_paths=n_paths, n_steps=n_steps, dt=DT,
                seed=path_seed)
    units = np.array([book.collateral[book.asset == a].sum() for a in range(2)])
    return book, paths, units * np.array(S0), units


BOOK, PATHS, NOTIONAL, UNITS = _scenario(120, 11, 10)
N_STEPS, N_PATHS = PATHS.n_steps, PATHS.n_paths
CASCADE = dict(depth=NOTIONAL * 0.01)
CASES = {
    "cascade": CASCADE,
    "one_round": dict(CASCADE, max_rounds=1),
    "sale_limit": dict(CASCADE, max_sell=UNITS * 0.03, permanent=0.2, decay=0.9),
    "dust_and_crossings": dict(CASCADE, min_liquidation=20_000.0, bridge_variance=BRIDGE, close_factor=0.3),
}
_expected = {}


def _naive(key, book, paths, options):
    if key not in _expected:
        _expected[key] = simulate_coupled_naive(book, paths, options, seed=SEED)
    return _expected[key]


@pytest.mark.parametrize("law", ["linear", "sqrt"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("case", list(CASES))
def test_matches_the_naive_reference_bit_for_bit(case, mode, law):
    options = make_options(2, N_STEPS, N_PATHS, mode=MODES[mode], sqrt_law=int(law == "sqrt"), **CASES[case])
    expected = _naive((case, mode, law), BOOK, PATHS, options)
    for n_threads, path_block in ((1, None), (2, 5)):
        actual = run_coupled("numba", BOOK, PATHS, options, seed=SEED, n_threads=n_threads, path_block=path_block)
        assert_same(actual, expected)
    # The case does what it is named for.
    assert expected["path_liquidations"].sum() > 0
    rounds = expected["path_cascade_rounds"]
    if case == "one_round":
        assert rounds.max() == 1
    elif case == "cascade":
        assert rounds.max() >= 2
    elif case == "sale_limit":
        assert expected["path_unsold_collateral"].max() > 0  # orders waited


def test_no_record_steps_gives_the_same_path_figures():
    options = make_options(2, N_STEPS, N_PATHS, **CASCADE)
    expected = _naive(("cascade", "full", "sqrt"), BOOK, PATHS, options)
    actual = run_coupled("numba", BOOK, PATHS, options, seed=SEED, n_threads=2, record_steps=False)
    assert_same(actual, expected, keys=[k for k in actual if not k.startswith("step_")])


@pytest.mark.parametrize("n_loans", [1, 3000])
def test_books_of_any_size(n_loans):
    """A single loan, and more loans than one chunk (LOAN_CHUNK) with the whole stressed
    book in one deep cascade: per-chunk sums and their chunk-order reduction."""
    assert n_loans == 1 or n_loans > cfg.LOAN_CHUNK
    book, paths, notional, units = _scenario(n_loans, 3, 6, book_seed=5, path_seed=8)
    options = make_options(2, paths.n_steps, paths.n_paths, mode=MODE_PARTIAL, depth=notional * 0.01,
                           max_sell=units * 0.2, bridge_variance=BRIDGE)
    expected = simulate_coupled_naive(book, paths, options, seed=SEED)
    for n_threads, path_block in ((1, None), (2, 2)):
        assert_same(run_coupled("numba", book, paths, options, seed=SEED, n_threads=n_threads,
                                path_block=path_block), expected)
    if n_loans > 1:
        assert expected["path_liquidations"].sum() > 0


def test_path_offset_keys_the_draws():
    """Two halves with their offsets give the whole (run_coupled passes each block's start)."""
    options = make_options(2, N_STEPS, N_PATHS, **CASES["dust_and_crossings"])
    expected = _naive(("dust_and_crossings", "full", "sqrt"), BOOK, PATHS, options)
    assert_same(run_coupled("numba", BOOK, PATHS, options, seed=SEED, n_threads=2, path_block=8), expected)


def test_without_coupling_equals_the_core_kernel():
    """depth=None and no rule: the coupled kernel's counts are the core's, money to 1e-12."""
    book, paths, _, _ = _scenario(2500, 16, 20, book_seed=1, path_seed=2)
    core = ltvsim.simulate(book, paths, backend="numba", seed=SEED, record_steps=True, n_threads=2)
    coupled = run_coupled("numba", book, paths, make_options(2, paths.n_steps, paths.n_paths), seed=SEED,
                          n_threads=2, path_block=8)
    for name in cfg.COUNT_FIELDS:
        np.testing.assert_array_equal(coupled[f"path_{name}"], getattr(core, f"path_{name}"), err_msg=name)
    np.testing.assert_array_equal(coupled["loan_margin_calls"], core.loan_margin_calls)
    np.testing.assert_array_equal(coupled["loan_liquidated"], core.loan_liquidated)
    assert core.path_liquidations.sum() > 0 and core.path_topups.sum() > 0
    for name in cfg.MONEY_FIELDS:
        np.testing.assert_allclose(coupled[f"path_{name}"], getattr(core, f"path_{name}"), rtol=1e-12,
                                   atol=1e-12 * np.abs(getattr(core, f"path_{name}")).max(), err_msg=name)
    np.testing.assert_allclose(coupled["loan_loss"], core.loan_loss, rtol=1e-12,
                               atol=1e-12 * core.loan_loss.max())
    assert (coupled["path_cascade_rounds"] <= 1).all()
    np.testing.assert_array_equal(coupled["path_impact_drawdown"], 0.0)


def test_loan_losses_add_in_path_order_over_many_rounds_of_paths():
    """Workers run rounds of paths; a loan's losses from 37 paths (a deep crash, so most
    loans lose on most paths) are still added in path order, for 1 and 2 threads."""
    book, paths, notional, _ = _scenario(300, 37, 8, book_seed=11, path_seed=4)
    crash = paths.prices.copy()
    crash[:, 3:] *= 0.45
    paths = type(paths)(crash, dt=paths.dt)
    options = make_options(2, paths.n_steps, paths.n_paths, depth=notional * 0.01)
    expected = simulate_coupled_naive(book, paths, options, seed=SEED)
    assert (expected["loan_loss"] > 0).mean() > 0.5
    for n_threads in (1, 2):
        assert_same(run_coupled("numba", book, paths, options, seed=SEED, n_threads=n_threads), expected)


def test_call_levels_above_one_report_every_shortfall():
    """With m > 1 a loan below its call level can owe more than its collateral is worth:
    the horizon looks at every loan, not only those that were near a trigger."""
    book, paths, notional, _ = _scenario(200, 6, 5, book_seed=2, path_seed=3)
    high = LoanBook(asset=book.asset, collateral=book.collateral, debt=book.debt * 2.2, rate=book.rate,
                    margin_call_ltv=1.5, liquidation_ltv=1.6, target_ltv=1.2, cure_steps=book.cure_steps,
                    fee=book.fee, topup_prob=book.topup_prob)
    options = make_options(2, paths.n_steps, paths.n_paths, depth=notional * 0.01)
    expected = simulate_coupled_naive(high, paths, options, seed=SEED)
    assert (expected["path_unrealised"] > 0).sum() >= 3
    assert_same(run_coupled("numba", high, paths, options, seed=SEED, n_threads=2), expected)
