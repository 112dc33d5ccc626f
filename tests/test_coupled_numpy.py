"""The NumPy coupled kernel against the naive reference (``naive_coupled``), bit for bit,
on small stressed synthetic books and GBM paths: every liquidation mode, both impact
laws, cascades, sale limits, dust, crossings, round limits, path blocks and groups."""
import numpy as np
import pytest

import ltvsim
from ltvsim import LoanBook
from ltvsim import _config as cfg
from ltvsim._rng import bridge_uniform, bridge_uniform_array
from ltvsim.backends import _numpy_coupled
from ltvsim.backends._coupled_args import MODE_CLOSE_FACTOR, MODE_FULL, MODE_PARTIAL
from ltvsim.book import DEFAULT_PRICES
from ltvsim.paths import gbm

from coupled_helpers import assert_same, make_options, run_coupled
from naive_coupled import simulate_coupled_naive

S0 = (DEFAULT_PRICES["BTC"], DEFAULT_PRICES["ETH"])
SIGMA = np.array([0.8, 1.0])
DT = 1 / 365
SEED = 4
MODES = {"full": MODE_FULL, "partial": MODE_PARTIAL, "close_factor": MODE_CLOSE_FACTOR}


def _scenario(n_loans, n_paths, n_steps, book_seed=11, path_seed=5):
    book = LoanBook.synthetic(n_loans, seed=book_seed, initial_ltv=(0.5, 0.64))
    paths = gbm(S0, 0.0, SIGMA, corr=[[1.0, 0.8], [0.8, 1.0]], n_paths=n_paths, n_steps=n_steps, dt=DT,
                seed=path_seed)
    units = np.array([book.collateral[book.asset == a].sum() for a in range(2)])
    return book, paths, units * np.array(S0), units


BOOK, PATHS, NOTIONAL, UNITS = _scenario(200, 11, 20)
N_STEPS, N_PATHS = PATHS.n_steps, PATHS.n_paths
BRIDGE = (SIGMA**2 * DT)[:, None, None]

# Depth small enough that one loan's sale moves the price by about a percent.
CASCADE = dict(depth=NOTIONAL * 0.02)
CASES = {
    "cascade": CASCADE,
    "deep_cascade": dict(depth=NOTIONAL * 0.005),
    "transient_impact": dict(depth=NOTIONAL * 0.01, permanent=0.2, decay=0.9),
    "permanent_impact": dict(depth=NOTIONAL * 0.01, permanent=1.0, decay=0.0),
    "one_round": dict(CASCADE, max_rounds=1),
    "sale_limit": dict(CASCADE, max_sell=UNITS * 0.03),
    "min_liquidation": dict(CASCADE, min_liquidation=20_000.0),
    "crossings": dict(CASCADE, bridge_variance=BRIDGE),
    "everything": dict(depth=NOTIONAL * 0.01, max_sell=UNITS * 0.05, min_liquidation=5_000.0,
                       bridge_variance=BRIDGE, close_factor=0.3),
}


def _run_all_ways(book, paths, options, monkeypatch, path_blocks=(None, 5)):
    """The NumPy kernel over each path block, and with groups of COUPLED_GROUP paths."""
    results = [run_coupled("numpy", book, paths, options, seed=SEED, path_block=b) for b in path_blocks]
    with monkeypatch.context() as m:
        m.setattr(_numpy_coupled, "GROUP_ELEMENTS", 0)  # groups of 8 (+ the rest)
        results.append(run_coupled("numpy", book, paths, options, seed=SEED, n_threads=2))
    return results


@pytest.mark.parametrize("law", ["linear", "sqrt"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("case", list(CASES))
def test_matches_the_naive_reference_bit_for_bit(case, mode, law, monkeypatch):
    options = make_options(2, N_STEPS, N_PATHS, mode=MODES[mode], sqrt_law=int(law == "sqrt"), **CASES[case])
    expected = simulate_coupled_naive(BOOK, PATHS, options, seed=SEED)
    for actual in _run_all_ways(BOOK, PATHS, options, monkeypatch):
        assert_same(actual, expected)

    # The case does what it is named for.
    assert expected["path_liquidations"].sum() > 0
    rounds = expected["path_cascade_rounds"]
    if case == "one_round":
        assert rounds.max() == 1
    elif case != "sale_limit":
        assert rounds.max() >= 2
    if case == "sale_limit":
        per_step = expected["step_collateral_sold"]
        assert np.all(per_step <= UNITS * 0.03 * (1 + 1e-12))
        assert np.any(per_step >= UNITS * 0.03 * (1 - 1e-12))  # the limit binds: orders wait


def test_dust_closes_partial_sales_in_full():
    """So that the min_liquidation cases above test something."""
    without = run_coupled("numpy", BOOK, PATHS, make_options(2, N_STEPS, N_PATHS, mode=MODE_PARTIAL, **CASCADE),
                          seed=SEED)
    dust = make_options(2, N_STEPS, N_PATHS, mode=MODE_PARTIAL, **CASES["min_liquidation"])
    assert run_coupled("numpy", BOOK, PATHS, dust, seed=SEED)["path_full_liquidations"].sum() > \
        without["path_full_liquidations"].sum()


def test_crossings_only_add_liquidations_without_impact():
    """Without impact loans are independent and the draws counter-based: a loan path
    liquidated without crossings is liquidated with them, some of them earlier."""
    without = run_coupled("numpy", BOOK, PATHS, make_options(2, N_STEPS, N_PATHS), seed=SEED)
    crossing = run_coupled("numpy", BOOK, PATHS, make_options(2, N_STEPS, N_PATHS, bridge_variance=BRIDGE),
                           seed=SEED)
    assert np.all(crossing["loan_liquidated"] >= without["loan_liquidated"])
    assert not np.array_equal(crossing["step_collateral_sold"], without["step_collateral_sold"])


@pytest.mark.parametrize("mode", list(MODES))
def test_a_bigger_book_over_thirty_steps(mode, monkeypatch):
    book, paths, notional, units = _scenario(500, 11, 30, book_seed=3)
    options = make_options(2, 30, 11, mode=MODES[mode], depth=notional * 0.01, max_sell=units * 0.05,
                           min_liquidation=2_000.0, bridge_variance=BRIDGE)
    expected = simulate_coupled_naive(book, paths, options, seed=SEED)
    for actual in _run_all_ways(book, paths, options, monkeypatch):
        assert_same(actual, expected)
    assert expected["path_cascade_rounds"].max() >= 2


@pytest.mark.parametrize("mode", list(MODES))
def test_more_loans_than_one_chunk(mode, monkeypatch):
    """Two loan chunks: per-path sums are added per chunk, then chunk by chunk."""
    book, paths, notional, units = _scenario(cfg.LOAN_CHUNK + 60, 3, 8, book_seed=5, path_seed=9)
    options = make_options(2, 8, 3, mode=MODES[mode], sqrt_law=0, depth=notional * 0.01,
                           max_sell=units * 0.05, bridge_variance=BRIDGE)
    expected = simulate_coupled_naive(book, paths, options, seed=SEED)
    for actual in _run_all_ways(book, paths, options, monkeypatch, path_blocks=(None, 2)):
        assert_same(actual, expected)
    assert expected["path_liquidations"].sum() > 0


def test_step_arrays_off_change_nothing_else():
    options = make_options(2, N_STEPS, N_PATHS, mode=MODE_PARTIAL, **CASES["everything"])
    recorded = run_coupled("numpy", BOOK, PATHS, options, seed=SEED)
    plain = run_coupled("numpy", BOOK, PATHS, options, seed=SEED, record_steps=False)
    assert_same(plain, recorded, keys=[k for k in recorded if not k.startswith("step_")])


@pytest.mark.parametrize("liquidation", ["full", "partial"])
def test_without_impact_it_is_the_core_kernel(liquidation):
    """No depth, no rules: the coupled kernel does what the core NumPy kernel does (the
    core adds its money in another order, so money agrees to 1e-9)."""
    core = ltvsim.simulate(BOOK, PATHS, backend="numpy", liquidation=liquidation, seed=SEED,
                           record_steps=True).arrays
    options = make_options(2, N_STEPS, N_PATHS, mode=MODES[liquidation])
    coupled = run_coupled("numpy", BOOK, PATHS, options, seed=SEED, path_block=5)
    assert_same(coupled, core, exact=False)
    for key, values in core.items():
        if values.dtype.kind == "i":
            np.testing.assert_array_equal(coupled[key], values, err_msg=key)
    assert coupled["path_cascade_rounds"].max() == 1
    assert core["path_liquidations"].sum() > 0


def test_bridge_uniform_array_is_bridge_uniform():
    loan = np.arange(0, 5000, 7)
    path = loan * 13 + 5
    for seed in (0, 1, 2**63 + 5):
        for step in (0, 1, 30, 2**40):
            expected = [bridge_uniform(seed, int(i), int(p), step) for i, p in zip(loan, path)]
            np.testing.assert_array_equal(bridge_uniform_array(seed, loan, path, step), expected)
