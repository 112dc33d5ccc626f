"""Cascades, lenders' liquidation rules and between-step crossings through ``simulate``,
on every backend: hand-computed cases, invariants, monotonicity, the option checks, and
the crossing probability against a 24x finer simulation."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ltvsim
from ltvsim import LiquidationRules, MarketImpact
from ltvsim.paths import gbm

from helpers import book_of, path_of
from ltvsim.book import FIELDS
from naive_coupled import simulate_coupled_naive
from coupled_helpers import assert_same, make_options

# Two loans on one asset at a flat price of 100: A (LTV 0.85) is liquidated at step 0;
# B (LTV 0.79) is in its call band until A's sale moves the price.
LOAN_A = dict(collateral=10.0, debt=850.0, margin_call_ltv=0.7, liquidation_ltv=0.8, target_ltv=0.5)
LOAN_B = dict(collateral=10.0, debt=790.0, margin_call_ltv=0.7, liquidation_ltv=0.8, target_ltv=0.5)


def _linear(depth):
    return MarketImpact(depth=depth, law="linear", depth_move=0.02, permanent=1.0, half_life=None)


def test_a_forced_sale_pushes_the_next_loan_over_in_the_same_step(backend):
    book, paths = book_of(LOAN_A, LOAN_B), path_of(100.0, 100.0)
    r = ltvsim.simulate(book, paths, backend=backend, impact=_linear(1000.0))
    # Round 1: A sells 10 units, notional 1000 = depth: the log price falls by 0.02.
    delta_1 = 0.02
    x_a = 100.0 * (1 - math.exp(-delta_1)) / delta_1  # average price while selling
    price_2 = 100.0 * math.exp(-delta_1)
    assert 790.0 / (10.0 * price_2) >= 0.8  # B is over its liquidation LTV in round 2
    delta_2 = 0.02 * 10.0 * 100.0 / 1000.0  # notional at the path's own price
    x_b = price_2 * (1 - math.exp(-delta_2)) / delta_2
    assert r.path_liquidations.tolist() == [2]
    assert r.path_full_liquidations.tolist() == [2]
    assert r.path_margin_calls.tolist() == [1]  # B's call in round 1
    assert r.path_cascade_rounds.tolist() == [2]
    np.testing.assert_allclose(r.path_proceeds, [10 * x_a + 10 * x_b], rtol=1e-12)
    np.testing.assert_allclose(r.path_residual, [10 * x_a - 850 + 10 * x_b - 790], rtol=1e-12)
    np.testing.assert_allclose(r.path_collateral_sold, [[20.0]])
    np.testing.assert_allclose(r.path_impact_drawdown, [[1 - math.exp(-delta_1 - delta_2)]], rtol=1e-12)
    assert r.path_loss.tolist() == [0.0]


def test_with_enough_depth_the_second_loan_survives(backend):
    book, paths = book_of(LOAN_A, LOAN_B), path_of(100.0, 100.0)
    r = ltvsim.simulate(book, paths, backend=backend, impact=_linear(10_000.0))
    delta = 0.02 * 1000.0 / 10_000.0
    assert 790.0 / (10.0 * 100.0 * math.exp(-delta)) < 0.8
    assert r.path_liquidations.tolist() == [1]
    assert r.path_cascade_rounds.tolist() == [1]
    np.testing.assert_allclose(r.path_proceeds, [1000.0 * (1 - math.exp(-delta)) / delta], rtol=1e-12)
    # B is still open at the horizon, valued at the impacted price.
    np.testing.assert_allclose(r.path_collateral_sold, [[10.0]])
    assert r.path_unrealised.tolist() == [0.0]


def test_transient_impact_recovers_with_its_half_life(backend):
    book, paths = book_of(LOAN_A), path_of(100.0, 100.0, 100.0)
    impact = MarketImpact(depth=1000.0, law="linear", permanent=0.25, half_life=1.0)  # dt = 1 year
    r = ltvsim.simulate(book, paths, backend=backend, impact=impact, record_steps=True)
    delta = 0.02
    expected = [math.exp(-delta), math.exp(-(0.25 * delta + 0.75 * delta * 0.5)),
                math.exp(-(0.25 * delta + 0.75 * delta * 0.25))]
    np.testing.assert_allclose(r.step_impact[0, :, 0], expected, rtol=1e-12)


def test_impact_off_is_the_core_kernel_exactly(backend):
    book = ltvsim.LoanBook.synthetic(300, seed=3, initial_ltv=(0.5, 0.64))
    paths = gbm([80_000.0, 3_000.0], 0.0, [0.6, 0.8], corr=[[1, 0.8], [0.8, 1]], n_paths=9, n_steps=20,
                dt=1 / 365, seed=4, assets=["BTC", "ETH"])
    plain = ltvsim.simulate(book, paths, backend=backend, seed=5)
    off = ltvsim.simulate(book, paths, backend=backend, seed=5, impact=None, rules=None, crossings=False)
    assert plain.meta["kernel"] == off.meta["kernel"] == "core"
    for name, array in plain.arrays.items():
        np.testing.assert_array_equal(off.arrays[name], array, err_msg=name)
    # The coupled kernel with infinite depth: same events; money to rounding (it adds
    # the loans' amounts in another order).
    inf = ltvsim.simulate(book, paths, backend=backend, seed=5, impact=MarketImpact(depth=math.inf))
    assert inf.meta["kernel"] == "coupled"
    for name, array in plain.arrays.items():
        if array.dtype.kind == "i":
            np.testing.assert_array_equal(inf.arrays[name], array, err_msg=name)
        else:
            np.testing.assert_allclose(inf.arrays[name], array, rtol=1e-12, atol=1e-6, err_msg=name)
    assert inf.path_cascade_rounds.max() <= 1
    assert np.all(inf.path_impact_drawdown == 0.0)


def test_close_factor_repays_half_with_a_bonus(backend):
    # LTV 0.82 >= 0.8: health 0.8 / 0.82 = 0.976 > 0.95, so at most half the debt.
    book = book_of(dict(collateral=1.0, debt=82.0, fee=0.05))
    r = ltvsim.simulate(book, path_of(100.0), backend=backend, liquidation="close_factor")
    repaid = 41.0
    seized = repaid * 1.05 / 100.0
    assert r.path_liquidations.tolist() == [1] and r.path_full_liquidations.tolist() == [0]
    np.testing.assert_allclose(r.path_collateral_sold, [[seized]], rtol=1e-12)
    np.testing.assert_allclose(r.path_proceeds, [seized * 100.0], rtol=1e-12)
    np.testing.assert_allclose(r.path_principal_recovered, [repaid], rtol=1e-12)
    np.testing.assert_allclose(r.path_fees, [0.05 * repaid], rtol=1e-12)  # the bonus
    # The loan stays open with 41 of debt against 1 - seized units.
    np.testing.assert_allclose(r.path_unrealised, [0.0])


def test_close_factor_repays_everything_below_health_095(backend):
    # LTV 0.85: health 0.8 / 0.85 = 0.941 <= 0.95: the whole debt may be repaid.
    book = book_of(dict(collateral=1.0, debt=85.0, fee=0.05))
    r = ltvsim.simulate(book, path_of(100.0), backend=backend, liquidation="close_factor")
    np.testing.assert_allclose(r.path_debt_closed, [85.0], rtol=1e-12)
    np.testing.assert_allclose(r.path_proceeds, [85.0 * 1.05], rtol=1e-12)
    np.testing.assert_allclose(r.path_collateral_sold, [[0.8925]], rtol=1e-12)
    np.testing.assert_allclose(r.path_fees, [4.25], rtol=1e-12)
    assert r.path_loss.tolist() == [0.0]


def test_dust_rule_closes_the_loan_in_full(backend):
    # Partial mode would sell dq = (82 - 0.5*100) / (100 - 50) = 0.64 units and leave 18
    # of debt; with a 20 dust threshold the loan is closed in full instead.
    book = book_of(dict(collateral=1.0, debt=82.0, fee=0.0))
    partial = ltvsim.simulate(book, path_of(100.0), backend=backend, liquidation="partial",
                              rules=LiquidationRules(min_liquidation=1.0))
    np.testing.assert_allclose(partial.path_collateral_sold, [[0.64]], rtol=1e-12)
    assert partial.path_full_liquidations.tolist() == [0]
    dust = ltvsim.simulate(book, path_of(100.0), backend=backend, liquidation="partial",
                           rules=LiquidationRules(min_liquidation=20.0))
    assert dust.path_full_liquidations.tolist() == [1]
    np.testing.assert_allclose(dust.path_collateral_sold, [[1.0]])
    np.testing.assert_allclose(dust.path_residual, [18.0], rtol=1e-12)


def test_sale_limit_fills_pro_rata_and_the_rest_waits(backend):
    book = book_of(dict(collateral=1.0, debt=85.0), dict(collateral=3.0, debt=255.0))
    paths = path_of(100.0, 90.0, 90.0)
    r = ltvsim.simulate(book, paths, backend=backend, rules=LiquidationRules(max_sell=2.0), record_steps=True)
    # Step 0: 4 units asked, 2 allowed: each order half filled (0.5 and 1.5 units at 100).
    # Step 1: the other halves (2 units) at 90; the loans close.
    np.testing.assert_allclose(r.step_collateral_sold[0, :, 0], [2.0, 2.0, 0.0])
    np.testing.assert_allclose(r.path_proceeds, [200.0 + 180.0], rtol=1e-12)
    assert r.path_liquidations.tolist() == [2]
    assert r.path_full_liquidations.tolist() == [2]
    np.testing.assert_allclose(r.path_residual, [380.0 - 340.0], rtol=1e-12)
    assert r.path_unsold_collateral.tolist() == [[0.0]]
    # With a one-step horizon, half the collateral is still waiting at the end.
    short = ltvsim.simulate(book, path_of(100.0), backend=backend, rules=LiquidationRules(max_sell=2.0))
    np.testing.assert_allclose(short.path_unsold_collateral, [[2.0]])
    np.testing.assert_allclose(short.path_unrealised, [0.0])


def _book_without_topups(n, seed, low):
    book = ltvsim.LoanBook.synthetic(n, seed=seed, initial_ltv=(low, low + 0.14))
    fields = {name: getattr(book, name) for name in FIELDS}
    fields["topup_prob"] = 0.0
    return ltvsim.LoanBook(**fields, asset_names=book.asset_names)


_books = st.builds(_book_without_topups, st.integers(1, 60), st.integers(0, 2**31), st.floats(0.45, 0.7))


@settings(max_examples=15)
@given(book=_books, path_seed=st.integers(0, 2**31), depth=st.floats(1e4, 1e8), shrink=st.floats(0.05, 0.95))
def test_less_depth_never_means_fewer_liquidations(backend, book, path_seed, depth, shrink):
    paths = gbm([80_000.0, 3_000.0], 0.0, [0.6, 0.8], n_paths=3, n_steps=10, dt=1 / 365, seed=path_seed,
                assets=["BTC", "ETH"])
    deep = ltvsim.simulate(book, paths, backend=backend, impact=_linear(depth))
    shallow = ltvsim.simulate(book, paths, backend=backend, impact=_linear(depth * shrink))
    assert np.all(shallow.path_liquidations >= deep.path_liquidations)
    assert np.all(shallow.loan_liquidated >= deep.loan_liquidated)
    assert np.all(shallow.path_impact_drawdown >= deep.path_impact_drawdown - 1e-15)
    # At a single step nothing can be liquidated earlier at a better price: losses too.
    one = ltvsim.PricePaths(paths.prices[:, :1], dt=paths.dt, assets=paths.assets)
    deep1 = ltvsim.simulate(book, one, backend=backend, impact=_linear(depth))
    shallow1 = ltvsim.simulate(book, one, backend=backend, impact=_linear(depth * shrink))
    assert np.all(shallow1.path_loss >= deep1.path_loss * (1 - 1e-12))


@settings(max_examples=10)
@given(book=_books, path_seed=st.integers(0, 2**31), mode=st.sampled_from(["full", "partial", "close_factor"]),
       law=st.sampled_from(["sqrt", "linear"]), cap=st.one_of(st.none(), st.floats(0.5, 50.0)))
def test_invariants_hold_with_every_option(backend, book, path_seed, mode, law, cap):
    paths = gbm([80_000.0, 3_000.0], 0.0, [0.6, 0.8], n_paths=4, n_steps=8, dt=1 / 365, seed=path_seed,
                assets=["BTC", "ETH"])
    r = ltvsim.simulate(book, paths, backend=backend, liquidation=mode, crossings=True,
                        impact=MarketImpact(depth=[5e5, 1e5], law=law),
                        rules=LiquidationRules(max_sell=cap, min_liquidation=100.0))
    scale = float(book.debt.sum()) * 2
    np.testing.assert_allclose(r.path_proceeds, r.path_fees + r.path_interest_recovered
                               + r.path_principal_recovered + r.path_residual, rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(r.path_loss, r.path_debt_closed - r.path_interest_recovered
                               - r.path_principal_recovered, rtol=1e-9, atol=1e-9 * scale)
    assert np.all(r.path_full_liquidations <= len(book))
    assert np.all(r.path_loss >= 0) and np.all(r.path_residual >= -1e-9 * scale)
    assert np.all((r.path_impact_drawdown >= 0) & (r.path_impact_drawdown < 1))
    # Every backend gives the reference's numbers.
    options = _options_of(mode, law, cap, paths)
    expected = simulate_coupled_naive(book, paths, options, seed=0)
    assert_same(r.arrays, expected, exact=backend != "numpy")


def _options_of(mode, law, cap, paths):
    from ltvsim.cascade import coupled_options

    options = coupled_options(mode, MarketImpact(depth=[5e5, 1e5], law=law), LiquidationRules(max_sell=cap, min_liquidation=100.0),
                              True, paths.n_assets, paths.assets, paths.dt)
    return options._replace(bridge_variance=paths.step_variance())


def test_results_do_not_depend_on_threads_or_blocks(compiled_backend):
    book = ltvsim.LoanBook.synthetic(3000, seed=1, initial_ltv=(0.5, 0.64))
    paths = gbm([80_000.0, 3_000.0], 0.0, [0.6, 0.8], n_paths=19, n_steps=12, dt=1 / 365, seed=2, assets=["BTC", "ETH"])
    kwargs = dict(impact=MarketImpact(depth=[2e7, 5e6]), rules=LiquidationRules(max_sell=[5.0, 100.0]),
                  liquidation="partial", crossings=True, record_steps=True)
    base = ltvsim.simulate(book, paths, backend=compiled_backend, n_threads=1, **kwargs)
    assert base.path_cascade_rounds.max() >= 2
    for other in (ltvsim.simulate(book, paths, backend=compiled_backend, n_threads=2, **kwargs),
                  ltvsim.simulate(book, paths, backend=compiled_backend, n_threads=2, path_block=5, **kwargs),
                  ltvsim.simulate(book, paths, backend="cython" if compiled_backend == "numba" else "numba", **kwargs)):
        for name, array in base.arrays.items():
            np.testing.assert_array_equal(other.arrays[name], array, err_msg=name)


# ---------------------------------------------------------------- between-step crossings
def _barrier_book(n):
    # LTV 0.6 at the start; call and liquidation both at 0.8 (price 75% of today's).
    return ltvsim.LoanBook(asset=np.zeros(n, dtype=np.int64), collateral=1.0, debt=60.0, rate=0.0,
                           margin_call_ltv=0.8, liquidation_ltv=0.8, target_ltv=0.5, cure_steps=0,
                           fee=0.0, topup_prob=0.0)


def _share_liquidated(result):
    return float(np.mean(result.path_liquidations > 0))


def test_crossings_match_a_24x_finer_simulation(backend):
    n_paths = 20_000 if backend != "numpy" else 4_000
    book = _barrier_book(1)
    daily = gbm(100.0, 0.0, 0.8, n_paths=n_paths, n_steps=30, dt=1 / 365, seed=11)
    hourly = gbm(100.0, 0.0, 0.8, n_paths=n_paths, n_steps=30 * 24, dt=1 / 8760, seed=12)
    p_bridge = _share_liquidated(ltvsim.simulate(book, daily, backend=backend, crossings=True))
    p_daily = _share_liquidated(ltvsim.simulate(book, daily, backend=backend))
    p_fine = _share_liquidated(ltvsim.simulate(book, hourly, backend=backend))
    se = math.sqrt(p_fine * (1 - p_fine) / n_paths + p_bridge * (1 - p_bridge) / n_paths)
    assert abs(p_bridge - p_fine) < 4 * se, (p_bridge, p_fine, se)
    assert p_bridge > p_daily + 4 * math.sqrt(p_daily * (1 - p_daily) / n_paths) * 0.5
    # And the crossing share is close to the continuous-monitoring closed form.
    sigma, horizon, level = 0.8, 30 / 365, math.log(0.75)
    drift = -0.5 * sigma**2
    s = sigma * math.sqrt(horizon)
    nd = lambda x: 0.5 * math.erfc(-x / math.sqrt(2))  # noqa: E731
    exact = nd((level - drift * horizon) / s) + math.exp(2 * drift * level / sigma**2) * nd((level + drift * horizon) / s)
    assert abs(p_bridge - exact) < 4 * math.sqrt(exact * (1 - exact) / n_paths)


def test_crossings_use_the_volatility_the_paths_carry(backend):
    book = _barrier_book(1)
    paths = gbm(100.0, 0.0, 0.8, n_paths=2_000, n_steps=30, dt=1 / 365, seed=11)
    calm = ltvsim.PricePaths(paths.prices, dt=paths.dt, volatility=0.0)  # no crossing is possible
    assert _share_liquidated(ltvsim.simulate(book, calm, backend=backend, crossings=True)) == \
        _share_liquidated(ltvsim.simulate(book, paths, backend=backend))
    realised = ltvsim.PricePaths(paths.prices, dt=paths.dt)  # volatility estimated per path
    p_realised = _share_liquidated(ltvsim.simulate(book, realised, backend=backend, crossings=True))
    p_true = _share_liquidated(ltvsim.simulate(book, paths, backend=backend, crossings=True))
    assert abs(p_realised - p_true) < 0.03


# ---------------------------------------------------------------- option checks
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(impact=MarketImpact(depth=-1.0)), ValueError, r"depth\['BTC'\] \(asset 0\) = -1.0"),
        (dict(impact=MarketImpact(depth={"BTC": 1e9})), ValueError, r"depth has no value for asset\(s\) \['ETH'\]"),
        (dict(impact=MarketImpact(depth={"BTC": 1e9, "ETH": 1e8, "SOL": 1.0})), ValueError, r"unknown asset\(s\) \['SOL'\]"),
        (dict(impact=MarketImpact(depth=[1e9, 1e8], permanent=[0.5, 1.5])), ValueError, r"permanent\['ETH'\] \(asset 1\) = 1.5"),
        (dict(impact=MarketImpact(depth=[1e9, 1e8, 1e7])), ValueError, r"depth must be a number or one value per asset \(2\)"),
        (dict(impact="deep"), TypeError, "impact must be a MarketImpact"),
        (dict(rules=LiquidationRules(max_sell=[1.0, 0.0])), ValueError, r"max_sell\['ETH'\] \(asset 1\) = 0.0"),
        (dict(rules={"close_factor": 0.5}), TypeError, "rules must be a LiquidationRules"),
        (dict(crossings="yes"), TypeError, "crossings must be True or False"),
    ],
)
def test_bad_options_are_refused_before_any_kernel(kwargs, error, match):
    book = ltvsim.LoanBook.synthetic(5, seed=1)
    paths = gbm([80_000.0, 3_000.0], 0.0, [0.6, 0.8], n_paths=2, n_steps=3, dt=1 / 365, assets=["BTC", "ETH"])
    with pytest.raises(error, match=match):
        ltvsim.simulate(book, paths, backend="numpy", **kwargs)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: MarketImpact(depth=1.0, law="cubic"), "law must be one of"),
        (lambda: MarketImpact(depth=1.0, half_life=0.0), "half_life must be"),
        (lambda: MarketImpact(depth=1.0, max_rounds=0), "max_rounds must be"),
        (lambda: LiquidationRules(close_factor=0.0), r"close_factor must be a number in \(0.0, 1.0\]"),
        (lambda: LiquidationRules(full_close_health=1.5), "full_close_health must be"),
        (lambda: LiquidationRules(min_liquidation=-1.0), "min_liquidation must be"),
    ],
)
def test_bad_option_objects_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_volatility_is_refused():
    prices = np.full((2, 4, 1), 100.0)
    with pytest.raises(ValueError, match=r"volatility\[1, 2, 0\] \(path 1, step 2, asset 0\) = -0.1"):
        vol = np.full((2, 3, 1), 0.5)
        vol[1, 2, 0] = -0.1
        ltvsim.PricePaths(prices, dt=1.0, volatility=vol)
    with pytest.raises(ValueError, match="volatility must be a number, one per asset"):
        ltvsim.PricePaths(prices, dt=1.0, volatility=[0.5, 0.6])


def test_asset_indices_past_sixteen_bits(backend):
    # The last of 32,769 assets crashes to 60 and its loan is liquidated at the impacted
    # price; asset 0 (same crash) the same way. Both loans lose the same amount.
    n_assets = 2**15 + 1
    prices = np.full((1, 3, n_assets), 100.0)
    prices[0, 2, :] = 60.0
    paths = ltvsim.PricePaths(prices, dt=1 / 365)
    book = ltvsim.LoanBook(asset=[n_assets - 1, 0], collateral=[1.0, 1.0], debt=[60.0, 60.0], rate=0.0,
                           margin_call_ltv=0.75, liquidation_ltv=0.85, target_ltv=0.6, cure_steps=1,
                           fee=0.02, topup_prob=0.0)
    result = ltvsim.simulate(book, paths, backend=backend, impact=MarketImpact(depth=1000.0), seed=0)
    assert result.loan_liquidated.tolist() == [1, 1]
    assert result.loan_loss[0] == result.loan_loss[1] > 0.0
    assert result.path_loss[0] == result.loan_loss.sum()
