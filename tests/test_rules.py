"""Hand-computed cases of the loan mechanics, one rule at a time, on every backend.

Most cases use :data:`helpers.BASE_LOAN`: 1 unit of collateral, debt 50, so the LTV is
``50 / S``. The margin call level 0.7 is crossed below S = 71.43, the liquidation level
0.8 at S = 62.5 and below, and the target LTV 0.5 sits at S = 100. Every run is also
checked against the naive reference (``tests/naive.py``), so these numbers pin down
both.
"""
import numpy as np
import pytest

import ltvsim
from helpers import assert_same_result, book_of, one_loan, path_of, paths_of
from naive import simulate_naive

EXACT = dict(rel=1e-12, abs=1e-12)


def run(book, paths, backend, liquidation="full", seed=0, **kwargs):
    """simulate() with record_steps, after checking it against the naive reference."""
    result = ltvsim.simulate(book, paths, backend=backend, liquidation=liquidation, seed=seed,
                             record_steps=True, **kwargs)
    reference = simulate_naive(book, paths, liquidation, seed)
    assert_same_result(result, reference, rtol=1e-12, atol=1e-12, steps=True, label=f"{backend} vs naive: ")
    return result


def assert_no_money(result):
    for name in ("loss", "fees", "interest_recovered", "principal_recovered", "residual",
                 "proceeds", "debt_closed"):
        assert getattr(result, f"path_{name}")[0] == 0.0, name
    assert result.path_collateral_sold.sum() == 0.0
    assert result.path_liquidations[0] == 0
    assert result.path_full_liquidations[0] == 0


def sold_steps(result, path=0, asset=0):
    """Steps at which collateral of ``asset`` was sold on ``path``."""
    return np.flatnonzero(result.step_collateral_sold[path, :, asset]).tolist()


# ----------------------------------------------------------------------------- calls
def test_call_then_cure_by_the_market(backend):
    # LTV: 0.5, 0.714 (call at step 1), 0.5 (cured), 0.5.
    r = run(one_loan(cure_steps=1), path_of(100, 70, 100, 100), backend)
    assert r.path_margin_calls.tolist() == [1]
    assert r.loan_margin_calls.tolist() == [1]
    assert r.loan_liquidated.tolist() == [0]
    assert_no_money(r)
    assert r.path_unrealised[0] == 0.0  # max(0, 50 - 1 * 100)


def test_cure_by_the_market_resets_the_deadline(backend):
    # c = 2. Call at 1; step 2 is 1 step into it; step 3 cures (LTV 0.5). New call at 4;
    # step 5 is 1 step into it; step 6 cures. Had the first call not ended at step 3,
    # step 4 (4 - 1 >= 2) would have liquidated.
    r = run(one_loan(cure_steps=2), path_of(100, 70, 70, 100, 70, 70, 100), backend)
    assert r.path_margin_calls.tolist() == [2]  # each new call is counted
    assert r.loan_margin_calls.tolist() == [1]  # one path with calls
    assert_no_money(r)


def test_thresholds_are_inclusive(backend):
    # 7 / (1 * 10) == 0.7 and 8 / 10 == 0.8 exactly in floating point.
    called = run(one_loan(debt=7.0), path_of(10.0), backend)
    assert called.path_margin_calls.tolist() == [1]
    assert called.path_liquidations.tolist() == [0]
    liquidated = run(one_loan(debt=8.0), path_of(10.0), backend)
    assert liquidated.path_margin_calls.tolist() == [0]
    assert liquidated.path_full_liquidations.tolist() == [1]
    # m == l: the liquidation rule comes first, no call is issued.
    both = run(one_loan(debt=7.0, margin_call_ltv=0.7, liquidation_ltv=0.7), path_of(10.0), backend)
    assert both.path_margin_calls.tolist() == [0]
    assert both.path_full_liquidations.tolist() == [1]


@pytest.mark.parametrize("cure", [1, 2, 3])
def test_call_expires_after_cure_steps(backend, cure):
    # Call at step 1, LTV 0.714 throughout: liquidated at step 1 + c, at S = 70:
    # proceeds 70, fee 0, interest 0, principal 50, residual 20, no loss.
    r = run(one_loan(cure_steps=cure), path_of(100, 70, 70, 70, 70, 70), backend)
    assert sold_steps(r) == [1 + cure]
    assert r.path_margin_calls.tolist() == [1]
    assert r.path_liquidations.tolist() == [1]
    assert r.path_full_liquidations.tolist() == [1]
    assert r.path_proceeds[0] == 70.0
    assert r.path_principal_recovered[0] == 50.0
    assert r.path_residual[0] == 20.0
    assert r.path_loss[0] == 0.0
    assert r.path_fees[0] == 0.0
    assert r.path_interest_recovered[0] == 0.0
    assert r.path_debt_closed[0] == 50.0
    assert r.path_unrealised[0] == 0.0  # closed loans have no unrealised exposure
    assert r.step_collateral_sold[0, 1 + cure, 0] == 1.0
    assert r.loan_liquidated.tolist() == [1]


def test_cure_steps_zero_means_no_deadline(backend):
    # LTV 0.5, 0.714, 0.769, 0.794, 0.714, 0.781, 0.714: in the band from step 1 on but
    # never >= 0.8. One call, never liquidated.
    prices = (100, 70, 65, 63, 70, 64, 70)
    r = run(one_loan(cure_steps=0), path_of(*prices), backend)
    assert r.path_margin_calls.tolist() == [1]
    assert_no_money(r)
    assert r.path_unrealised[0] == 0.0  # 50 - 70 < 0
    # Only l liquidates: at S = 62.5 the LTV is exactly 0.8. Proceeds 62.5, residual 12.5.
    r = run(one_loan(cure_steps=0), path_of(*prices, 62.5), backend)
    assert sold_steps(r) == [7]
    assert r.path_margin_calls.tolist() == [1]
    assert r.path_residual[0] == 12.5
    assert r.path_principal_recovered[0] == 50.0
    # The same path with c = 1 liquidates at step 2.
    assert sold_steps(run(one_loan(cure_steps=1), path_of(*prices), backend)) == [2]


# ----------------------------------------------------------------------------- top-ups
def test_topup_restores_target_and_ends_the_call(backend):
    # c = 1: without a top-up step 2 would liquidate (cure expired). Call at step 1; the
    # top-up at step 2 (LTV still 0.714 >= 0.7) raises q to 50 / (0.5 * 70) = 1.428571.
    # Step 3: LTV 50 / (1.428571 * 70) = 0.5. Step 4: S = 30, LTV 1.1667 >= 0.8, full
    # liquidation of q: proceeds 42.857143, loss 50 - 42.857143 = 7.142857.
    book = one_loan(cure_steps=1, topup_prob=1.0)
    r = run(book, path_of(100, 70, 70, 70), backend)
    assert r.path_topups.tolist() == [1]
    assert r.path_margin_calls.tolist() == [1]
    assert_no_money(r)
    r = run(book, path_of(100, 70, 70, 70, 30), backend)
    q = 50.0 / (0.5 * 70.0)
    assert q == pytest.approx(1.4285714285714286, **EXACT)
    assert r.path_collateral_sold[0, 0] == q
    assert sold_steps(r) == [4]
    assert r.path_proceeds[0] == q * 30.0
    assert r.path_loss[0] == pytest.approx(7.142857142857142, **EXACT)
    assert r.path_margin_calls.tolist() == [1]  # no new call: LTV jumped straight over l


def test_topup_applies_even_beyond_the_liquidation_ltv(backend):
    # Call at 1; at step 2 S = 50, LTV 1.0 >= l, but the scheduled top-up comes first
    # (rule 4 before 5): q = 50 / (0.5 * 50) = 2, nothing else that step. Step 3: S = 20,
    # LTV 50 / 40 = 1.25: full liquidation of 2 units, proceeds 40, loss 10.
    book = one_loan(topup_prob=1.0)
    r = run(book, path_of(100, 70, 50), backend)
    assert r.path_topups.tolist() == [1]
    assert_no_money(r)
    r = run(book, path_of(100, 70, 50, 20), backend)
    assert r.path_collateral_sold[0, 0] == 2.0
    assert r.path_proceeds[0] == 40.0
    assert r.path_loss[0] == 10.0
    assert sold_steps(r) == [3]


def test_topup_then_a_new_call_is_counted_and_topped_up_again(backend):
    # After the top-up at 2, q = 1.428571; S = 45 at step 3 gives LTV 0.7778 (band): a
    # second call, and (pi = 1) a second top-up at step 4 (LTV still 0.7778).
    r = run(one_loan(topup_prob=1.0), path_of(100, 70, 70, 45, 45), backend)
    assert r.path_margin_calls.tolist() == [2]
    assert r.path_topups.tolist() == [2]
    assert r.loan_margin_calls.tolist() == [1]
    assert_no_money(r)


def test_topup_cancelled_when_the_market_cures_first(backend):
    # Call at 1 (top-up due at 2). Step 2: LTV 0.5 < m: cured, top-up cancelled, not
    # counted. Step 3: new call (2nd), top-up due at 4. Step 4: LTV 0.714 >= m: top-up.
    r = run(one_loan(topup_prob=1.0, cure_steps=5), path_of(100, 70, 100, 70, 70), backend)
    assert r.path_margin_calls.tolist() == [2]
    assert r.path_topups.tolist() == [1]
    assert_no_money(r)
    # Cancelled only: cured at step 2, never called again.
    r = run(one_loan(topup_prob=1.0), path_of(100, 70, 100, 100), backend)
    assert r.path_topups.tolist() == [0]


def test_topup_due_after_the_horizon_never_happens(backend):
    # Call at the last step: the top-up would fall due at step 2, beyond T = 1.
    r = run(one_loan(topup_prob=1.0), path_of(100, 70), backend)
    assert r.path_margin_calls.tolist() == [1]
    assert r.path_topups.tolist() == [0]


def test_topup_prob_zero_never_tops_up(backend):
    r = run(one_loan(topup_prob=0.0, cure_steps=2), path_of(100, 70, 70, 70), backend)
    assert r.path_topups.tolist() == [0]
    assert sold_steps(r) == [3]


@pytest.mark.parametrize("call_step", [0, 1, 3])
@pytest.mark.parametrize("seed", [0, 12345, 2**64 - 1])
def test_topup_draw_is_the_counter_based_uniform(backend, call_step, seed):
    # Decision 3: scheduled iff uniform(seed, loan row, global path index, call step) < pi.
    # Two loans (rows 0 and 1, pi 0.5 and 0.3), 40 paths in blocks of 7 so that the
    # global path index matters; c = 0 so nothing else happens.
    n_paths = 40
    prices = [[100.0] * call_step + [70.0, 70.0] for _ in range(n_paths)]
    book = book_of(dict(topup_prob=0.5, cure_steps=0), dict(topup_prob=0.3, cure_steps=0))
    r = run(book, paths_of(prices), backend, seed=seed, path_block=7)
    expected = [
        int(ltvsim._rng.uniform(seed, 0, p, call_step) < 0.5) + int(ltvsim._rng.uniform(seed, 1, p, call_step) < 0.3)
        for p in range(n_paths)
    ]
    assert r.path_topups.tolist() == expected
    assert r.path_margin_calls.tolist() == [2] * n_paths
    assert 0 < sum(expected) < 2 * n_paths  # the draws are not all alike


@pytest.mark.parametrize("seed", [0, 2**64 - 1])
def test_topup_draw_at_the_probability_itself(backend, seed):
    # The compiled kernels test u < pi as an integer comparison of the draw's 53 bits
    # with ceil(pi * 2**53): at pi == u exactly there is no top-up, one ulp above there
    # is, and pi = 1 always tops up. Each path's own draw is the boundary.
    n_paths = 9
    prices = paths_of([[100.0, 70.0, 70.0] for _ in range(n_paths)])
    draws = [ltvsim._rng.uniform(seed, 0, p, 1) for p in range(n_paths)]
    for pi, expected in ((draws, 0), (np.nextafter(draws, 1.0), 1)):
        for p in range(n_paths):
            book = book_of(dict(topup_prob=float(pi[p]), cure_steps=0))
            r = run(book, prices, backend, seed=seed)
            assert r.path_topups[p] == expected, (p, pi[p])
    r = run(book_of(dict(topup_prob=1.0, cure_steps=0)), prices, backend, seed=seed)
    assert r.path_topups.tolist() == [1] * n_paths


# ----------------------------------------------------------------------------- liquidation
def test_jump_over_liquidation_ltv_liquidates_at_once(backend):
    # Step 1: S = 40, LTV 1.25 >= 0.8 with no call first. f = 5%: proceeds 40,
    # fee min(40, 0.05 * 50) = 2.5, interest 0, principal 37.5, residual 0, loss 12.5.
    r = run(one_loan(fee=0.05), path_of(100, 40, 100), backend)
    assert r.path_margin_calls.tolist() == [0]
    assert r.path_liquidations.tolist() == [1]
    assert r.path_full_liquidations.tolist() == [1]
    assert r.path_proceeds[0] == 40.0
    assert r.path_fees[0] == 2.5
    assert r.path_interest_recovered[0] == 0.0
    assert r.path_principal_recovered[0] == 37.5
    assert r.path_residual[0] == 0.0
    assert r.path_loss[0] == 12.5
    assert r.path_debt_closed[0] == 50.0
    assert r.loan_loss.tolist() == [12.5]
    assert r.loan_liquidated.tolist() == [1]
    assert r.loan_margin_calls.tolist() == [0]
    assert r.step_loss[0].tolist() == [0.0, 12.5, 0.0]
    assert r.path_unrealised[0] == 0.0


def test_jump_over_liquidation_ltv_during_a_call(backend):
    # Call at 1 with c = 3; S = 40 at step 2 liquidates before the deadline.
    r = run(one_loan(cure_steps=3), path_of(100, 70, 40), backend)
    assert r.path_margin_calls.tolist() == [1]
    assert sold_steps(r) == [2]
    assert r.path_loss[0] == 10.0


def test_liquidation_at_step_zero_without_accrual(backend):
    # S0 = 60: LTV 0.8333 >= 0.8 at step 0. No accrual at step 0 (rate 10%): interest 0,
    # proceeds 60, principal 50, residual 10.
    for prices in [(60.0,), (60.0, 100.0, 100.0)]:
        r = run(one_loan(rate=0.1), path_of(*prices), backend)
        assert sold_steps(r) == [0]
        assert r.path_interest_recovered[0] == 0.0
        assert r.path_debt_closed[0] == 50.0
        assert r.path_principal_recovered[0] == 50.0
        assert r.path_residual[0] == 10.0
        assert r.path_margin_calls.tolist() == [0]


def test_call_at_step_zero(backend):
    # S0 = 70: call at step 0. With c = 2 and LTV in the band at 1 and 2, liquidation at 2.
    r = run(one_loan(cure_steps=2), path_of(70, 100), backend)
    assert r.path_margin_calls.tolist() == [1]
    assert_no_money(r)
    r = run(one_loan(cure_steps=2), path_of(70, 70, 70), backend)
    assert sold_steps(r) == [2]
    r = run(one_loan(topup_prob=1.0), path_of(70, 70), backend)
    assert r.path_topups.tolist() == [1]


def test_partial_liquidation_closed_form(backend):
    # f = 2%, S = 60 at step 1: LTV 0.8333 >= 0.8.
    # denominator = 60 / 1.02 - 0.5 * 60 = 29.4 / 1.02; numerator = 50 - 0.5 * 1 * 60 = 20
    # dq = 20 * 1.02 / 29.4 = 34/49 = 0.693878 < q = 1: partial.
    # proceeds = 60 dq = 2040/49; repaid = proceeds / 1.02 = 2000/49 = 40.816327;
    # fee = 0.02 repaid = 40/49; interest 0 so principal repaid 2000/49;
    # D' = 50 - 2000/49 = 450/49, q' = 15/49, LTV' = (450/49) / (15/49 * 60) = 0.5 = tau.
    book = one_loan(fee=0.02)
    r = run(book, path_of(100, 60), backend, liquidation="partial")
    dq = (50.0 - 0.5 * 1.0 * 60.0) / (60.0 / 1.02 - 0.5 * 60.0)
    repaid = dq * 60.0 / 1.02
    assert dq == pytest.approx(34 / 49, **EXACT)
    assert repaid == pytest.approx(2000 / 49, **EXACT)
    assert r.path_liquidations.tolist() == [1]
    assert r.path_full_liquidations.tolist() == [0]
    assert r.loan_liquidated.tolist() == [1]
    assert r.path_collateral_sold[0, 0] == dq
    assert r.path_proceeds[0] == dq * 60.0
    assert r.path_fees[0] == 0.02 * repaid
    assert r.path_principal_recovered[0] == repaid
    assert r.path_interest_recovered[0] == 0.0
    assert r.path_debt_closed[0] == repaid
    assert r.path_residual[0] == 0.0
    assert r.path_loss[0] == 0.0
    assert r.path_unrealised[0] == 0.0
    assert (50.0 - repaid) / ((1.0 - dq) * 60.0) == pytest.approx(0.5, **EXACT)  # LTV' = tau
    assert r.step_collateral_sold[0, :, 0].tolist() == [0.0, dq]

    # Step 2: S = 10, LTV' = 3 >= 0.8; dq = (450/49 - 75/49) / (10/1.02 - 5) = 1.593 >= q'
    # = 15/49: full. proceeds 150/49, fee min(150/49, 0.02 * 450/49) = 9/49, principal
    # 141/49, loss 450/49 - 141/49 = 309/49. Totals: fees 40/49 + 9/49 = 1, collateral
    # sold 34/49 + 15/49 = 1, debt closed 2000/49 + 450/49 = 50.
    r = run(book, path_of(100, 60, 10), backend, liquidation="partial")
    assert r.path_liquidations.tolist() == [2]
    assert r.path_full_liquidations.tolist() == [1]
    assert r.loan_liquidated.tolist() == [1]
    assert r.path_fees[0] == pytest.approx(1.0, **EXACT)
    assert r.path_collateral_sold[0, 0] == pytest.approx(1.0, **EXACT)
    assert r.path_debt_closed[0] == pytest.approx(50.0, **EXACT)
    assert r.path_proceeds[0] == pytest.approx(2190 / 49, **EXACT)
    assert r.path_principal_recovered[0] == pytest.approx(2141 / 49, **EXACT)
    assert r.path_loss[0] == pytest.approx(309 / 49, **EXACT)
    assert r.step_loss[0, 2] == pytest.approx(309 / 49, **EXACT)
    assert r.step_loss[0, 1] == 0.0  # a partial sale realises no loss
    assert r.step_collateral_sold[0, 1, 0] == dq
    assert r.step_collateral_sold[0, 2, 0] == pytest.approx(15 / 49, **EXACT)

    # The same path in full mode: everything goes at step 1: proceeds 60, fee 1,
    # principal 50, residual 9.
    r = run(book, path_of(100, 60, 10), backend, liquidation="full")
    assert sold_steps(r) == [1]
    assert (r.path_proceeds[0], r.path_fees[0], r.path_principal_recovered[0], r.path_residual[0]) == (60.0, 1.0, 50.0, 9.0)


def test_partial_just_below_the_fallback(backend):
    # f = 20%, S = 62.5: LTV (1 + f) = 0.96 < 1. dq = 18.75 / (62.5 / 1.2 - 31.25)
    # = 22.5 / 25 = 0.9; proceeds 56.25, repaid 46.875, fee 9.375, D' = 3.125, q' = 0.1,
    # LTV' = 3.125 / 6.25 = 0.5.
    r = run(one_loan(fee=0.2), path_of(100, 62.5), backend, liquidation="partial")
    assert r.path_full_liquidations.tolist() == [0]
    assert r.path_liquidations.tolist() == [1]
    assert r.path_collateral_sold[0, 0] == pytest.approx(0.9, **EXACT)
    assert r.path_proceeds[0] == pytest.approx(56.25, **EXACT)
    assert r.path_debt_closed[0] == pytest.approx(46.875, **EXACT)
    assert r.path_fees[0] == pytest.approx(9.375, **EXACT)
    assert r.path_unrealised[0] == 0.0


def test_partial_falls_back_to_full_when_ltv_times_one_plus_fee_reaches_one(backend):
    # f = 25%, S = 62.5: LTV 0.8, LTV (1 + f) = 1 exactly. dq = 18.75 / (50 - 31.25) = 1 = q,
    # not < q: full. proceeds 62.5, fee min(62.5, 12.5) = 12.5, principal 50, residual 0.
    r = run(one_loan(fee=0.25), path_of(100, 62.5), backend, liquidation="partial")
    assert r.path_full_liquidations.tolist() == [1]
    assert r.path_liquidations.tolist() == [1]
    assert (r.path_proceeds[0], r.path_fees[0], r.path_principal_recovered[0]) == (62.5, 12.5, 50.0)
    assert (r.path_residual[0], r.path_loss[0], r.path_collateral_sold[0, 0]) == (0.0, 0.0, 1.0)
    # Beyond: S = 55, LTV (1 + f) = 1.136: full, proceeds 55, fee 12.5, principal 42.5, loss 7.5.
    r = run(one_loan(fee=0.25), path_of(100, 55), backend, liquidation="partial")
    assert r.path_full_liquidations.tolist() == [1]
    assert (r.path_proceeds[0], r.path_fees[0], r.path_principal_recovered[0], r.path_loss[0]) == (55.0, 12.5, 42.5, 7.5)


@pytest.mark.parametrize(
    "tau, fee, price, expected",
    [
        # tau (1 + f) = 1.08 > 1: denominator 45/1.2 - 0.9 * 45 = -3 < 0 (the closed form
        # would "sell" a negative amount). Full: proceeds 45, fee 10, principal 35, loss 15.
        (0.9, 0.2, 45.0, dict(proceeds=45.0, fees=10.0, principal_recovered=35.0, loss=15.0)),
        # tau (1 + f) = 1: denominator 50/1.25 - 0.8 * 50 = 0 exactly. Full: proceeds 50,
        # fee 12.5, principal 37.5, loss 12.5.
        (0.8, 0.25, 50.0, dict(proceeds=50.0, fees=12.5, principal_recovered=37.5, loss=12.5)),
    ],
)
def test_partial_falls_back_to_full_when_the_denominator_is_not_positive(backend, tau, fee, price, expected):
    book = one_loan(target_ltv=tau, margin_call_ltv=0.95, liquidation_ltv=1.0, fee=fee)
    r = run(book, path_of(100, price), backend, liquidation="partial")
    assert r.path_full_liquidations.tolist() == [1]
    assert r.path_collateral_sold[0, 0] == 1.0
    for name, value in expected.items():
        assert getattr(r, f"path_{name}")[0] == value, name


# ----------------------------------------------------------------------------- waterfall
G = float(np.exp(0.1 * 1.0))  # rate 10%, dt = 1 year: g = 1.105171
D2 = 50.0 * G * G  # debt at step 2: 61.070138; interest 11.070138


@pytest.mark.parametrize(
    "price, fee, hand",
    [
        # Covered: proceeds 70; fee 0.02 * 61.070138 = 1.221403; interest 11.070138;
        # principal 50; residual 70 - 1.221403 - 61.070138 = 7.708459; loss 0.
        (70.0, 0.02, dict(fees=1.221403, interest_recovered=11.070138, principal_recovered=50.0,
                          residual=7.708459, loss=0.0)),
        # Principal shortfall: proceeds 40; fee 1.221403; interest 11.070138;
        # principal 40 - 12.291541 = 27.708459; residual 0; loss 50 - 27.708459 = 22.291541.
        (40.0, 0.02, dict(fees=1.221403, interest_recovered=11.070138, principal_recovered=27.708459,
                          residual=0.0, loss=22.291541)),
        # Interest shortfall: proceeds 10; fee 1.221403; interest 8.778597 of 11.070138;
        # principal 0; loss 2.291541 + 50 = 52.291541.
        (10.0, 0.02, dict(fees=1.221403, interest_recovered=8.778597, principal_recovered=0.0,
                          residual=0.0, loss=52.291541)),
        # Fee larger than proceeds: f = 50%, fee due 30.535069 > 20: the fee takes all
        # 20, the whole debt 61.070138 is lost.
        (20.0, 0.5, dict(fees=20.0, interest_recovered=0.0, principal_recovered=0.0,
                         residual=0.0, loss=61.070138)),
    ],
)
def test_full_liquidation_waterfall(backend, price, fee, hand):
    # Steps 0, 1 at S = 100 (LTV 0.5, 0.553); step 2 at `price`, LTV >= 0.8: liquidation.
    r = run(one_loan(rate=0.1, fee=fee), path_of(100, 100, price, dt=1.0), backend)
    assert sold_steps(r) == [2]
    for name, value in hand.items():
        assert getattr(r, f"path_{name}")[0] == pytest.approx(value, abs=1e-6), name
    # Decision 5, exactly: fee first, then interest, then principal, then residual.
    interest = D2 - 50.0
    fee_paid = min(price, fee * D2)
    interest_paid = min(price - fee_paid, interest)
    principal_paid = min(price - fee_paid - interest_paid, 50.0)
    assert r.path_proceeds[0] == price
    assert r.path_fees[0] == pytest.approx(fee_paid, **EXACT)
    assert r.path_interest_recovered[0] == pytest.approx(interest_paid, **EXACT)
    assert r.path_principal_recovered[0] == pytest.approx(principal_paid, **EXACT)
    assert r.path_loss[0] == pytest.approx((interest - interest_paid) + (50.0 - principal_paid), **EXACT)
    assert r.path_debt_closed[0] == pytest.approx(D2, **EXACT)
    # The identities of the spec.
    assert r.path_proceeds[0] == pytest.approx(
        r.path_fees[0] + r.path_interest_recovered[0] + r.path_principal_recovered[0] + r.path_residual[0], **EXACT)
    assert r.path_loss[0] == pytest.approx(
        r.path_debt_closed[0] - r.path_interest_recovered[0] - r.path_principal_recovered[0], **EXACT)
    assert r.path_loss[0] >= 0.0 and r.path_residual[0] >= 0.0


def test_covered_liquidation_has_exactly_zero_loss(backend):
    # Interest makes the amounts inexact, yet a covered loan loses exactly 0.
    r = run(one_loan(rate=0.37, fee=0.031), path_of(100, 99, 97, 60, dt=1 / 12), backend)
    assert r.path_full_liquidations.tolist() == [1]
    assert r.path_loss[0] == 0.0
    assert r.loan_loss[0] == 0.0
    assert r.path_residual[0] > 0.0


# ----------------------------------------------------------------------------- accrual
def test_interest_accrues_by_repeated_multiplication(backend):
    # rate 8%, daily steps: g = exp(0.08 / 365) computed once; D_5 = 50 g g g g g.
    # S = 100 for steps 0-4 (LTV ~0.5), S = 60 at step 5: LTV 0.834 >= 0.8.
    # Proceeds 60 cover it: interest recovered D_5 - 50 = 0.054807, principal 50,
    # residual 60 - D_5.
    dt = 1 / 365
    g = np.exp(np.array([0.08]) * dt)[0]
    debt = 50.0
    for _ in range(5):
        debt = debt * g
    assert debt == pytest.approx(50.0 * np.exp(0.08 * 5 / 365), rel=1e-14)
    assert debt - 50.0 == pytest.approx(0.0548, abs=1e-4)
    r = run(one_loan(rate=0.08), path_of(100, 100, 100, 100, 100, 60, dt=dt), backend)
    assert sold_steps(r) == [5]
    assert r.path_debt_closed[0] == debt
    assert r.path_interest_recovered[0] == debt - 50.0
    assert r.path_principal_recovered[0] == 50.0
    assert r.path_residual[0] == pytest.approx(60.0 - debt, **EXACT)


def test_open_loans_report_unrealised_shortfall_with_accrued_debt(backend):
    # m = 1.5, l = 2: the loan stays open with LTV above 1. rate 8%, dt = 1 year.
    # D_3 = 100 g^3 = 127.124915; LTV 0.5, 0.722, 0.938, 1.412 (< 1.5: no call).
    # Unrealised at the horizon: D_3 - 1 * 90 = 37.124915. Nothing realised.
    g = float(np.exp(0.08))
    book = one_loan(debt=100.0, rate=0.08, margin_call_ltv=1.5, liquidation_ltv=2.0, target_ltv=0.5)
    r = run(book, path_of(200, 150, 120, 90), backend)
    assert r.path_margin_calls.tolist() == [0]
    assert_no_money(r)
    assert r.path_unrealised[0] == pytest.approx(100.0 * g * g * g - 90.0, **EXACT)
    assert r.path_unrealised[0] == pytest.approx(37.124915, abs=1e-6)
    # With a price above the debt the shortfall is 0, not negative.
    assert run(book, path_of(200, 150, 120, 130), backend).path_unrealised[0] == 0.0


def test_unrealised_after_partial_liquidation_and_topup(backend):
    # l = 2, c = 1. Call at 1 (S 60, LTV 0.833); cure expires at 2 (S 60): partial sale as
    # in test_partial_liquidation_closed_form: D' = 450/49, q' = 15/49, LTV 0.5. Step 3:
    # S = 25, LTV 450 / 375 = 1.2, in [m, l): a new call, open at the horizon with
    # unrealised 450/49 - 15/49 * 25 = 75/49 = 1.530612.
    book = one_loan(fee=0.02, liquidation_ltv=2.0, cure_steps=1)
    r = run(book, path_of(100, 60, 60, 25), backend, liquidation="partial")
    assert r.path_liquidations.tolist() == [1]
    assert r.path_full_liquidations.tolist() == [0]
    assert r.path_margin_calls.tolist() == [2]
    assert r.path_unrealised[0] == pytest.approx(75 / 49, **EXACT)
    # Top-up: call at 1, top-up at 2 to q = 50 / 35; S = 30 at step 3: LTV 1.1667 (a call)
    # and unrealised 50 - 30 * 50 / 35 = 7.142857.
    book = one_loan(liquidation_ltv=2.0, topup_prob=1.0)
    r = run(book, path_of(100, 70, 70, 30), backend)
    assert r.path_topups.tolist() == [1]
    assert r.path_margin_calls.tolist() == [2]
    assert r.path_unrealised[0] == pytest.approx(50.0 - (50.0 / 35.0) * 30.0, **EXACT)
    assert r.path_unrealised[0] == pytest.approx(7.142857, abs=1e-6)


# ----------------------------------------------------------------------------- steps and assets
def test_record_steps_places_sales_and_losses(backend):
    # Loan A: asset 0, q 1, D 50, c = 1.  Loan B: asset 1, q 2, D 50 (LTV 25 / S).
    # Path 0: A called at 1, cure expires at 2 (S 70: proceeds 70, residual 20);
    #         B jumps to LTV 0.833 at 2 (S 30: proceeds 60, residual 10).
    # Path 1: A jumps at 1 (S 40: loss 10); B jumps at 3 (S 20: proceeds 40, loss 10).
    book = book_of(dict(asset=0, cure_steps=1), dict(asset=1, collateral=2.0, cure_steps=1))
    prices = np.array([
        [[100, 100], [70, 100], [70, 30], [100, 30]],
        [[100, 100], [40, 100], [40, 100], [40, 20]],
    ], dtype=float)
    paths = ltvsim.PricePaths(prices, dt=1 / 365)
    r = run(book, paths, backend)
    expected_sold = np.zeros((2, 4, 2))
    expected_sold[0, 2, 0] = 1.0
    expected_sold[0, 2, 1] = 2.0
    expected_sold[1, 1, 0] = 1.0
    expected_sold[1, 3, 1] = 2.0
    np.testing.assert_array_equal(r.step_collateral_sold, expected_sold)
    np.testing.assert_array_equal(r.step_loss, [[0, 0, 0, 0], [0, 10, 0, 10]])
    np.testing.assert_array_equal(r.path_collateral_sold, [[1, 2], [1, 2]])
    np.testing.assert_array_equal(r.path_loss, [0, 20])
    np.testing.assert_array_equal(r.path_residual, [30, 0])
    np.testing.assert_array_equal(r.loan_loss, [10, 10])
    np.testing.assert_array_equal(r.loan_liquidated, [2, 2])
    np.testing.assert_array_equal(r.loan_margin_calls, [1, 0])
    np.testing.assert_array_equal(r.path_margin_calls, [1, 0])
    np.testing.assert_array_equal(r.path_full_liquidations, [2, 2])
    np.testing.assert_array_equal(r.step_collateral_sold.sum(axis=1), r.path_collateral_sold)
    np.testing.assert_array_equal(r.step_loss.sum(axis=1), r.path_loss)
    # Without record_steps the step arrays are absent and say how to get them.
    plain = ltvsim.simulate(book, paths, backend=backend)
    assert "step_loss" not in plain.arrays
    with pytest.raises(AttributeError, match="record_steps=True"):
        plain.step_loss
    assert_same_result(plain, r, rtol=0.0)


def test_loans_only_see_their_own_asset(backend):
    # Asset 0 crashes; the loan on asset 1 does nothing.
    prices = np.array([[[100, 100], [1, 100], [1, 100]]], dtype=float)
    r = run(one_loan(asset=1, cure_steps=1), ltvsim.PricePaths(prices, dt=1.0), backend)
    assert r.path_margin_calls.tolist() == [0]
    assert_no_money(r)
    np.testing.assert_array_equal(r.path_collateral_sold, [[0.0, 0.0]])


def test_auto_backend_is_available_and_matches(backend):
    assert ltvsim.available_backends()[0] in ("cython", "numba", "numpy")
    assert set(ltvsim.available_backends()) == {"cython", "numba", "numpy"}
    book, paths = one_loan(cure_steps=1, fee=0.03), path_of(100, 70, 70)
    auto = ltvsim.simulate(book, paths)
    assert auto.meta["backend"] in ltvsim.available_backends()
    assert_same_result(auto, ltvsim.simulate(book, paths, backend=backend), rtol=0.0)
