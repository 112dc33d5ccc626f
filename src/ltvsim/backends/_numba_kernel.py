"""The loan mechanics compiled with numba (``parallel=True``).

Design (the Cython kernel is the same, name for name):

* Loans outermost, paths innermost. Prices are laid out ``[asset, step, path]`` so the
  inner loop runs over contiguous memory and vectorises.
* A loan that nothing has happened to yet ("pristine") shares one debt schedule across
  its paths, and one conservative price threshold per step: above it the spec's own
  LTV test provably says "below the call level" (see ``_guard_threshold``), so a single
  multiply-and-compare per path decides that the step changes nothing. Paths at or
  below it, and paths with a call, a partial sale or a closure, go through
  ``_settle_path_step``, which is the spec's rules 1-7 verbatim. Skipping therefore
  never changes a bit of the result.
* Loans are cut into fixed chunks of ``LOAN_CHUNK``. Threads take chunks in waves, each
  into its own scratch row, and the chunks' per-path sums are added serially in chunk
  order, so results are identical for any thread count.
"""
import threading

import numba
import numpy as np
from numba import njit, prange

from .. import _config as cfg

_U = np.uint64
_GOLDEN = _U(0x9E3779B97F4A7C15)
_MIX1 = _U(0xBF58476D1CE4E5B9)
_MIX2 = _U(0x94D049BB133111EB)
_TO_UNIT = 2.0**-53

_PRISTINE, _TOUCHED, _MODIFIED, _CLOSED = cfg.PRISTINE, cfg.TOUCHED, cfg.MODIFIED, cfg.CLOSED
_LOSS, _FEES, _INTEREST, _PRINCIPAL = cfg.LOSS, cfg.FEES, cfg.INTEREST, cfg.PRINCIPAL
_RESIDUAL, _PROCEEDS, _DEBT_CLOSED, _UNREALISED = cfg.RESIDUAL, cfg.PROCEEDS, cfg.DEBT_CLOSED, cfg.UNREALISED
_CALLS, _LIQUIDATIONS, _FULL, _TOPUPS = cfg.CALLS, cfg.LIQUIDATIONS, cfg.FULL_LIQUIDATIONS, cfg.TOPUPS
_LOAN_CHUNK = cfg.LOAN_CHUNK
_MARGIN, _TINY, _HUGE = cfg.GUARD_MARGIN, cfg.GUARD_TINY, cfg.GUARD_HUGE

_jit = dict(cache=True, nogil=True, error_model="numpy", fastmath=False)


@njit(**_jit)
def _mix64(x):
    z = x + _GOLDEN
    z = (z ^ (z >> _U(30))) * _MIX1
    z = (z ^ (z >> _U(27))) * _MIX2
    return z ^ (z >> _U(31))


@njit(**_jit)
def _uniform(loan_key, path, step):
    """Counter-based uniform in [0, 1) for (loan key, path, step); see ``ltvsim._rng``."""
    h = _mix64(_mix64(loan_key ^ _U(path)) ^ _U(step))
    return np.float64(h >> _U(11)) * _TO_UNIT


@njit(**_jit)
def _guard_threshold(debt_t, collateral, call_collateral):
    """Price above which a pristine path's LTV is provably below its margin-call LTV.

    ``call_collateral`` is collateral * margin_call_ltv. Returns +inf (check every path)
    where a magnitude leaves the range in which the 1e-12 margin bounds the rounding.
    """
    threshold = debt_t / call_collateral
    if not (_TINY <= debt_t <= _HUGE and _TINY <= threshold <= _HUGE):
        return np.inf
    if not (_TINY <= collateral * threshold <= _HUGE):
        return np.inf
    return threshold * (1.0 + _MARGIN)


@njit(**_jit)
def _settle_path_step(
    i, p, t, path_index, price, debt_t, debt0, growth, collateral0, m, l, tau, cure, fee,
    topup_prob, loan_key, asset, partial,
    status, guard, collateral_now, debt_now, principal_now, call_start, topup_due,
    had_call, had_liquidation, loss_on_path,
    acc_money, acc_counts, acc_sold, acc_step_sold, acc_step_loss, record,
):
    """Rules 1-7 of the spec for loan ``i`` on path ``p`` at step ``t`` (path open)."""
    if status[p] == _PRISTINE:
        status[p] = _TOUCHED
        collateral_now[p] = collateral0
        call_start[p] = -1
        topup_due[p] = -1
    # 1. Accrue (the shared schedule already holds D * g for unmodified paths).
    if status[p] == _MODIFIED:
        debt = debt_now[p]
        if t >= 1:
            debt = debt * growth
        debt_now[p] = debt
        principal = principal_now[p]
    else:
        debt = debt_t
        principal = debt0
    q = collateral_now[p]
    # 2-3. Price and LTV.
    ltv = debt / (q * price)

    # 4. Scheduled top-up: raise collateral to the target LTV if still called.
    if topup_due[p] == t:
        topup_due[p] = -1
        if ltv >= m:
            collateral_now[p] = debt / (tau * price)
            call_start[p] = -1
            acc_counts[_TOPUPS, p] += 1
            _reset_guard(p, status, guard, collateral_now, call_start, collateral0)
            return

    liquidate = False
    if ltv >= l:
        # 5. Liquidation threshold breached.
        liquidate = True
    elif ltv >= m:
        # 6. In the call band.
        if call_start[p] < 0:
            call_start[p] = t
            acc_counts[_CALLS, p] += 1
            had_call[p] = 1
            if _uniform(loan_key, path_index, t) < topup_prob:
                topup_due[p] = t + 1
        elif cure >= 1 and t - call_start[p] >= cure:
            liquidate = True
    else:
        # Below the call level: a call in progress is cured by the market.
        call_start[p] = -1
        topup_due[p] = -1

    if liquidate:
        _liquidate(
            p, t, price, debt, principal, q, tau, fee, asset, partial,
            status, collateral_now, debt_now, principal_now, call_start, topup_due,
            had_liquidation, loss_on_path, acc_money, acc_counts, acc_sold,
            acc_step_sold, acc_step_loss, record,
        )
    _reset_guard(p, status, guard, collateral_now, call_start, collateral0)


@njit(**_jit)
def _reset_guard(p, status, guard, collateral_now, call_start, collateral0):
    """Guard factor of a path: 1 = price test applies, 0 = always settle, inf = closed."""
    if status[p] == _CLOSED:
        guard[p] = np.inf
    elif status[p] == _MODIFIED or call_start[p] >= 0 or collateral_now[p] < collateral0:
        guard[p] = 0.0
    else:
        guard[p] = 1.0


@njit(**_jit)
def _liquidate(
    p, t, price, debt, principal, q, tau, fee, asset, partial,
    status, collateral_now, debt_now, principal_now, call_start, topup_due,
    had_liquidation, loss_on_path, acc_money, acc_counts, acc_sold,
    acc_step_sold, acc_step_loss, record,
):
    """Rule 7: sell collateral at the execution price and pay fee, interest, principal."""
    execution = price  # no slippage without market impact
    interest = debt - principal
    if interest < 0.0:
        interest = 0.0
    call_start[p] = -1
    topup_due[p] = -1
    had_liquidation[p] = 1
    acc_counts[_LIQUIDATIONS, p] += 1

    if partial:
        denominator = execution / (1.0 + fee) - tau * price
        if denominator > 0.0:
            sold = (debt - tau * q * price) / denominator
            if sold < q:
                proceeds = sold * execution
                repaid = proceeds / (1.0 + fee)
                fee_paid = fee * repaid
                interest_paid = repaid if repaid < interest else interest
                principal_paid = repaid - interest_paid
                remaining_principal = principal - principal_paid
                debt_now[p] = debt - repaid
                principal_now[p] = remaining_principal if remaining_principal > 0.0 else 0.0
                collateral_now[p] = q - sold
                status[p] = _MODIFIED
                acc_money[_FEES, p] += fee_paid
                acc_money[_INTEREST, p] += interest_paid
                acc_money[_PRINCIPAL, p] += principal_paid
                acc_money[_PROCEEDS, p] += proceeds
                acc_money[_DEBT_CLOSED, p] += repaid
                acc_sold[asset, p] += sold
                if record:
                    acc_step_sold[t, asset, p] += sold
                return

    # Full liquidation: the waterfall.
    proceeds = q * execution
    fee_due = fee * debt
    fee_paid = proceeds if proceeds < fee_due else fee_due
    remaining = proceeds - fee_paid
    interest_paid = remaining if remaining < interest else interest
    remaining = remaining - interest_paid
    principal_paid = remaining if remaining < principal else principal
    residual = remaining - principal_paid
    loss = (interest - interest_paid) + (principal - principal_paid)
    status[p] = _CLOSED
    loss_on_path[p] = loss
    acc_counts[_FULL, p] += 1
    acc_money[_LOSS, p] += loss
    acc_money[_FEES, p] += fee_paid
    acc_money[_INTEREST, p] += interest_paid
    acc_money[_PRINCIPAL, p] += principal_paid
    acc_money[_RESIDUAL, p] += residual
    acc_money[_PROCEEDS, p] += proceeds
    acc_money[_DEBT_CLOSED, p] += interest + principal
    acc_sold[asset, p] += q
    if record:
        acc_step_sold[t, asset, p] += q
        acc_step_loss[t, p] += loss


@njit(**_jit)
def _evaluate_loan(
    i, prices, asset_of, collateral_of, debt_of, growth_of, m_of, l_of, tau_of, cure_of,
    fee_of, topup_of, seed_key, path_offset, partial,
    status, guard, collateral_now, debt_now, principal_now, call_start, topup_due,
    had_call, had_liquidation, loss_on_path,
    acc_money, acc_counts, acc_sold, acc_step_sold, acc_step_loss, record,
    loan_loss, loan_calls, loan_liquidated,
):
    """All steps of loan ``i`` on every path of the block; scratch left reset."""
    n_paths = prices.shape[2]
    n_steps = prices.shape[1] - 1
    asset = asset_of[i]
    collateral0 = collateral_of[i]
    debt0 = debt_of[i]
    growth = growth_of[i]
    m = m_of[i]
    call_collateral = collateral0 * m
    loan_key = _mix64(seed_key ^ _U(i))
    guard_usable = _TINY <= m <= _HUGE and _TINY <= collateral0 <= _HUGE and _TINY <= call_collateral <= _HUGE
    touched = False
    debt_t = debt0
    for t in range(n_steps + 1):
        if t >= 1:
            debt_t = debt_t * growth
        threshold = _guard_threshold(debt_t, collateral0, call_collateral) if guard_usable else np.inf
        row = prices[asset, t]
        flagged = 0
        for p in range(n_paths):
            if row[p] * guard[p] <= threshold:
                flagged += 1
        if flagged == 0:
            continue
        touched = True
        for p in range(n_paths):
            if row[p] * guard[p] <= threshold and status[p] != _CLOSED:
                _settle_path_step(
                    i, p, t, path_offset + p, row[p], debt_t, debt0, growth, collateral0,
                    m, l_of[i], tau_of[i], cure_of[i], fee_of[i], topup_of[i], loan_key,
                    asset, partial,
                    status, guard, collateral_now, debt_now, principal_now, call_start,
                    topup_due, had_call, had_liquidation, loss_on_path,
                    acc_money, acc_counts, acc_sold, acc_step_sold, acc_step_loss, record,
                )

    # 8. Horizon: open loans report their mark-to-market shortfall.
    final = prices[asset, n_steps]
    unrealised = acc_money[_UNREALISED]
    if not touched:
        for p in range(n_paths):
            shortfall = debt_t - collateral0 * final[p]
            unrealised[p] += shortfall if shortfall > 0.0 else 0.0
        return
    n_called = 0
    n_liquidated = 0
    total_loss = loan_loss[i]
    for p in range(n_paths):
        state = status[p]
        if state != _CLOSED:
            debt = debt_now[p] if state == _MODIFIED else debt_t
            q = collateral0 if state == _PRISTINE else collateral_now[p]
            shortfall = debt - q * final[p]
            unrealised[p] += shortfall if shortfall > 0.0 else 0.0
        n_called += had_call[p]
        n_liquidated += had_liquidation[p]
        total_loss += loss_on_path[p]
        # Leave the scratch reset for the next loan.
        status[p] = _PRISTINE
        guard[p] = 1.0
        had_call[p] = 0
        had_liquidation[p] = 0
        loss_on_path[p] = 0.0
    loan_loss[i] = total_loss
    loan_calls[i] += n_called
    loan_liquidated[i] += n_liquidated


@njit(parallel=True, **_jit)
def _evaluate_chunks(
    prices, asset_of, collateral_of, debt_of, growth_of, m_of, l_of, tau_of, cure_of,
    fee_of, topup_of, seed_key, path_offset, partial, n_slots,
    status, guard, collateral_now, debt_now, principal_now, call_start, topup_due,
    had_call, had_liquidation, loss_on_path,
    acc_money, acc_counts, acc_sold, acc_step_sold, acc_step_loss,
    path_money, path_counts, path_sold, step_sold, step_loss,
    loan_loss, loan_calls, loan_liquidated,
):
    n_loans = debt_of.shape[0]
    n_paths = prices.shape[2]
    record = step_loss.shape[0] > 0
    n_chunks = (n_loans + _LOAN_CHUNK - 1) // _LOAN_CHUNK
    for wave in range(0, n_chunks, n_slots):
        n_active = min(n_slots, n_chunks - wave)
        for slot in prange(n_active):
            chunk = wave + slot
            acc_money[slot] = 0.0
            acc_counts[slot] = 0
            acc_sold[slot] = 0.0
            if record:
                acc_step_sold[slot] = 0.0
                acc_step_loss[slot] = 0.0
            for i in range(chunk * _LOAN_CHUNK, min((chunk + 1) * _LOAN_CHUNK, n_loans)):
                _evaluate_loan(
                    i, prices, asset_of, collateral_of, debt_of, growth_of, m_of, l_of,
                    tau_of, cure_of, fee_of, topup_of, seed_key, path_offset, partial,
                    status[slot], guard[slot], collateral_now[slot], debt_now[slot],
                    principal_now[slot], call_start[slot], topup_due[slot],
                    had_call[slot], had_liquidation[slot], loss_on_path[slot],
                    acc_money[slot], acc_counts[slot], acc_sold[slot],
                    acc_step_sold[slot], acc_step_loss[slot], record,
                    loan_loss, loan_calls, loan_liquidated,
                )
        # Serial reduction in chunk order: the result does not depend on n_slots.
        for slot in range(n_active):
            for k in range(path_money.shape[0]):
                for p in range(n_paths):
                    path_money[k, p] += acc_money[slot, k, p]
            for k in range(path_counts.shape[0]):
                for p in range(n_paths):
                    path_counts[k, p] += acc_counts[slot, k, p]
            for a in range(path_sold.shape[0]):
                for p in range(n_paths):
                    path_sold[a, p] += acc_sold[slot, a, p]
            if record:
                for t in range(step_loss.shape[0]):
                    for p in range(n_paths):
                        step_loss[t, p] += acc_step_loss[slot, t, p]
                    for a in range(step_sold.shape[1]):
                        for p in range(n_paths):
                            step_sold[t, a, p] += acc_step_sold[slot, t, a, p]


_lock = threading.Lock()


def evaluate_block(prices, loans, seed, path_offset, partial, n_threads, out):
    """Evaluate every loan on one block of paths and add the results into ``out``.

    Same contract as :func:`ltvsim.backends._numpy_kernel.evaluate_block`. Releases the
    GIL while it runs.
    """
    from ._args import allocate_scratch
    from .._rng import MASK64, mix64

    n_assets, n_steps_1, n_paths = prices.shape
    record = out.step_loss.shape[0] > 0
    scratch = allocate_scratch(n_threads, n_paths, n_steps_1 - 1, n_assets, record)
    seed_key = _U(mix64(seed & MASK64))
    n_threads = min(n_threads, numba.config.NUMBA_NUM_THREADS)
    # numba's thread count is per calling thread; the workqueue layer (used only when
    # neither OpenMP nor TBB is present) is not re-entrant, hence the lock there.
    with _lock if _threading_layer() in (None, "workqueue") else _NoLock():
        numba.set_num_threads(n_threads)
        _evaluate_chunks(
            prices, *loans, seed_key, path_offset, bool(partial), n_threads, *scratch,
            *out[:5], *out[5:],
        )


def _threading_layer():
    """numba's threading layer, or None before the first parallel call chose one."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
