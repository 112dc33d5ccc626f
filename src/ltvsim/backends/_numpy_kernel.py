"""The NumPy reference: the loan mechanics over a block of loans x paths, one step at a time.

This is what a quant would write: every rule of ``docs/mechanics.md`` as a boolean mask
over a [loans, paths] block. It is readable and slow (every cell is computed at every
step); the compiled backends must give the same counts and the same money to 1e-9.
Memory is bounded by ``NUMPY_BLOCK_ELEMENTS`` cells per block.
"""
import numpy as np

from .. import _config as cfg
from .._rng import uniform_array


def evaluate_block(prices, loans, seed, path_offset, partial, n_threads, out):
    """Evaluate every loan on one block of paths and add the results into ``out``.

    Parameters
    ----------
    prices : ndarray, float64 [n_assets, n_steps + 1, n_paths]
    loans : KernelLoans
    seed : int
        Seed of the counter-based top-up draws.
    path_offset : int
        Global index of the block's first path (keys the draws).
    partial : bool
        Partial liquidation (True) or full (False).
    n_threads : int
        Ignored: NumPy runs on one thread.
    out : KernelOutputs
        OUT: path arrays and loan arrays, added into.
    """
    n_loans = loans.debt.shape[0]
    n_paths = prices.shape[2]
    loans_per_block = max(1, cfg.NUMPY_BLOCK_ELEMENTS // n_paths)
    for lo in range(0, n_loans, loans_per_block):
        _evaluate_loans(prices, loans, slice(lo, min(lo + loans_per_block, n_loans)), seed, path_offset, partial, out)


def _evaluate_loans(prices, loans, rows, seed, path_offset, partial, out):
    n_steps = prices.shape[1] - 1
    n_paths = prices.shape[2]
    record = out.step_loss.shape[0] > 0
    loan_index = np.arange(rows.start, rows.stop)
    n = loan_index.shape[0]
    shape = (n, n_paths)

    def column(field):
        return getattr(loans, field)[rows][:, None]

    asset = loans.asset[rows]
    g, m, l = column("growth"), column("margin_call_ltv"), column("liquidation_ltv")
    tau, cure, f, topup_prob = column("target_ltv"), column("cure_steps"), column("fee"), column("topup_prob")

    q = np.broadcast_to(column("collateral"), shape).copy()
    debt = np.broadcast_to(column("debt"), shape).copy()
    principal = debt.copy()
    is_open = np.ones(shape, dtype=bool)
    call_start = np.full(shape, -1, dtype=np.int64)
    topup_due = np.full(shape, -1, dtype=np.int64)
    had_call = np.zeros(shape, dtype=bool)
    had_liquidation = np.zeros(shape, dtype=bool)
    money = np.zeros((cfg.N_MONEY,) + shape)
    counts = np.zeros((cfg.N_COUNTS,) + shape, dtype=np.int64)
    n_assets = prices.shape[0]
    sold = np.zeros((n_assets, n_paths))

    for t in range(n_steps + 1):
        # 1. Accrue: one multiply per step, as in every backend.
        if t >= 1:
            debt = debt * g
        # 2-3. Price and LTV.
        price = prices[asset, t, :]
        ltv = debt / (q * price)
        active = is_open.copy()

        # 4. A scheduled top-up falls due: if the loan is still in its call band or worse,
        #    collateral is raised so that LTV = target and the call ends; if the market
        #    has cured it already, the top-up is cancelled (rule 6's else branch).
        due = active & (topup_due == t)
        topup = due & (ltv >= m)
        q = np.where(topup, debt / (tau * price), q)
        call_start[topup] = -1
        topup_due[due] = -1
        counts[cfg.TOPUPS] += topup
        active &= ~topup

        # 5. At or beyond the liquidation LTV: liquidate.
        breach = active & (ltv >= l)
        # 6. In the call band: issue a call, or liquidate when the cure period expired.
        band = active & ~breach & (ltv >= m)
        new_call = band & (call_start < 0)
        expired = band & (call_start >= 0) & (cure >= 1) & (t - call_start >= cure)
        cured = active & (ltv < m)
        call_start[cured] = -1
        topup_due[cured] = -1

        li, pj = np.nonzero(new_call)
        call_start[li, pj] = t
        had_call[li, pj] = True
        counts[cfg.CALLS, li, pj] += 1
        draw = uniform_array(seed, loan_index[li], path_offset + pj, t)
        tops = draw < topup_prob[li, 0]
        topup_due[li[tops], pj[tops]] = t + 1

        # 7. Liquidation at the step's price.
        li, pj = np.nonzero(breach | expired)
        if li.size:
            _liquidate(li, pj, t, price, q, debt, principal, is_open, call_start, topup_due,
                       tau, f, asset, partial, money, counts, sold, had_liquidation, out, record)
        if record:
            # The book's exposure after the step: debt and collateral value still open.
            out.step_open_debt[t] += np.where(is_open, debt, 0.0).sum(axis=0)
            out.step_collateral_value[t] += np.where(is_open, q * price, 0.0).sum(axis=0)

    # 8. Open loans report their mark-to-market shortfall at the horizon.
    final_price = prices[asset, n_steps, :]
    money[cfg.UNREALISED] = np.where(is_open, np.maximum(debt - q * final_price, 0.0), 0.0)

    out.path_money[...] += money.sum(axis=1)
    out.path_counts[...] += counts.sum(axis=1)
    out.path_sold[...] += sold
    out.loan_loss[rows] += money[cfg.LOSS].sum(axis=1)
    out.loan_calls[rows] += had_call.sum(axis=1)
    out.loan_liquidated[rows] += had_liquidation.sum(axis=1)


def _liquidate(li, pj, t, price, q, debt, principal, is_open, call_start, topup_due,
               tau, f, asset, partial, money, counts, sold, had_liquidation, out, record):
    """Rule 7 on the cells (li, pj): partial sale back to target LTV, or full sale."""
    s = price[li, pj]
    x = s  # execution price: no slippage without market impact
    d, p_out, q_now = debt[li, pj], principal[li, pj], q[li, pj]
    fee_rate, target = f[li, 0], tau[li, 0]
    interest = np.maximum(d - p_out, 0.0)
    n_assets, n_paths = sold.shape

    is_partial = np.zeros(li.shape, dtype=bool)
    if partial:
        denominator = x / (1.0 + fee_rate) - target * s
        with np.errstate(divide="ignore", invalid="ignore"):
            dq = (d - target * q_now * s) / denominator
        is_partial = (denominator > 0) & (dq < q_now)
        k = np.flatnonzero(is_partial)
        proceeds = dq[k] * x[k]
        repaid = proceeds / (1.0 + fee_rate[k])
        fee_paid = fee_rate[k] * repaid
        interest_paid = np.minimum(repaid, interest[k])
        principal_paid = repaid - interest_paid
        cells = (li[k], pj[k])
        debt[cells] = d[k] - repaid
        principal[cells] = np.maximum(p_out[k] - principal_paid, 0.0)
        q[cells] = q_now[k] - dq[k]
        _book(money, cells, fee=fee_paid, interest=interest_paid, principal=principal_paid,
              residual=0.0, proceeds=proceeds, debt_closed=repaid, loss=0.0)
        _sell(sold, out, asset[li[k]], pj[k], dq[k], t, record)
        if record:
            out.step_fees[t] += np.bincount(pj[k], weights=fee_paid, minlength=n_paths)

    k = np.flatnonzero(~is_partial)
    proceeds = q_now[k] * x[k]
    fee_paid = np.minimum(proceeds, fee_rate[k] * d[k])
    remaining = proceeds - fee_paid
    interest_paid = np.minimum(remaining, interest[k])
    remaining = remaining - interest_paid
    principal_paid = np.minimum(remaining, p_out[k])
    residual = remaining - principal_paid
    loss = (interest[k] - interest_paid) + (p_out[k] - principal_paid)
    cells = (li[k], pj[k])
    _book(money, cells, fee=fee_paid, interest=interest_paid, principal=principal_paid,
          residual=residual, proceeds=proceeds, debt_closed=interest[k] + p_out[k], loss=loss)
    _sell(sold, out, asset[li[k]], pj[k], q_now[k], t, record)
    if record:
        out.step_loss[t] += np.bincount(pj[k], weights=loss, minlength=n_paths)
        out.step_fees[t] += np.bincount(pj[k], weights=fee_paid, minlength=n_paths)
    is_open[cells] = False
    counts[cfg.FULL_LIQUIDATIONS][cells] += 1

    counts[cfg.LIQUIDATIONS][li, pj] += 1
    had_liquidation[li, pj] = True
    call_start[li, pj] = -1
    topup_due[li, pj] = -1


def _book(money, cells, *, fee, interest, principal, residual, proceeds, debt_closed, loss):
    money[cfg.FEES][cells] += fee
    money[cfg.INTEREST][cells] += interest
    money[cfg.PRINCIPAL][cells] += principal
    money[cfg.RESIDUAL][cells] += residual
    money[cfg.PROCEEDS][cells] += proceeds
    money[cfg.DEBT_CLOSED][cells] += debt_closed
    money[cfg.LOSS][cells] += loss


def _sell(sold, out, asset, path, quantity, t, record):
    np.add.at(sold, (asset, path), quantity)
    if record:
        np.add.at(out.step_sold[t], (asset, path), quantity)
