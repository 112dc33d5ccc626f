"""The slow, obvious reference of the coupled kernel: market impact and cascades,
close-factor / dust / sale-limit rules, and between-step crossings.

Plain Python floats and ``if`` statements, one path at a time (paths do not interact;
the loans of one path do, through its price). It transcribes ``docs/cascades.md``:

Per path, step t = 0 .. T:

* Impact state per asset: a permanent and a transient log-price shift; at t >= 1 the
  transient part is multiplied by ``decay``. The impact factor is
  ``F = exp(-(permanent + transient))`` and the price loans see is ``S = raw * F``.
* Sweep 1 (round 1), loans in order: a closed loan is skipped; the debt accrues
  (t >= 1); a loan whose order waits (sale limit) re-submits it; otherwise the core
  rules run at S: a top-up due (LTV still >= m) ends the loan's step; then, t >= 1 with
  crossings on, a crossing of the liquidation level between t - 1 and t (LTV < l at the
  previous step's final price and now, draw < exp(-2 ln(S_prev/L) ln(S/L) / v) with
  L = D / (q l)) liquidates; then rule 5 (LTV >= l), rule 6 (call, expiry) and cures.
  A liquidation puts up an order (sized at S) instead of selling at once.
* Clearing, per asset: requested units R (summed over the loans of a chunk in loan
  order, then over chunks in order); fill share phi = 1 when R fits the step's remaining
  sale limit, else remaining / R; impact delta = depth_move * (phi R raw / depth) (linear)
  or depth_move * sqrt(...) (square root), the notional valued at the path's own
  (unimpacted) price raw; sales execute at X = S * slippage(delta);
  permanent += share * delta, transient += (1 - share) * delta.
* Sweep k >= 2, loans in order: settle the previous round's order at X with its fill
  share; then, while k <= max_rounds, a loan that has not acted this step (no order, no
  top-up) and is open is liquidated if LTV >= l at the new S. Sweeps repeat while some
  order was put up.
* After the step: the step's final S is the next step's "previous price"; with
  record_steps the loans' exposure and the impact factor are recorded.
* After step T: open loans (waiting orders included) report max(0, D - q S_T), S_T
  impacted.

Sizing an order at price S: full mode sells all q. Partial mode: the spec's closed form
with X = S (dq = (D - tau q S) / (S/(1+f) - tau S)), full when it cannot apply.
Close-factor mode: repay close_factor * D, or all of D when LTV >= l * full_close_ltv,
selling repay * (1 + f) / S, full when that is >= q. A non-full order whose debt repaid
(q_sell S / (1+f)) or debt left is below min_liquidation becomes full.

Settling a fill of x units at X: a full order filled completely runs the core's full
waterfall on all q (loss = unpaid debt; the loan closes). Any other fill is a sale of x:
repaid = x X / (1+f), fee f * repaid, then interest, then principal; if repaid covers
the whole debt, fee f*D, interest and principal are paid, the rest is returned and the
loan closes (its unsold collateral goes back to the borrower). A fill short of its order
leaves the rest waiting for the next step.

Per-path money is added per chunk of ``LOAN_CHUNK`` loans in the order events happen,
then chunk by chunk, exactly as the compiled kernels add it, so they agree to the bit.
"""
import math

import numpy as np

from ltvsim import _config as cfg
from ltvsim._rng import bridge_uniform, uniform
from ltvsim.backends._coupled_args import (
    MODE_CLOSE_FACTOR,
    MODE_FULL,
    MODE_PARTIAL,
    slippage_factor,
)

MONEY = cfg.MONEY_FIELDS
COUNTS = cfg.COUNT_FIELDS
OPEN, LIQUIDATING, CLOSED = "open", "liquidating", "closed"


def simulate_coupled_naive(book, paths, options, seed=0, loan_chunk=cfg.LOAN_CHUNK):
    """Every loan of ``book`` on every path of ``paths`` under ``options``.

    Returns
    -------
    dict of ndarray
        The names of :attr:`ltvsim.SimulationResult.arrays` (step arrays included) plus
        ``path_cascade_rounds``, ``path_impact_drawdown``, ``path_unsold_collateral`` and
        ``step_impact``.
    """
    n_paths, n_steps, n_assets = paths.n_paths, paths.n_steps, paths.n_assets
    n_loans = len(book)
    prices = np.asarray(paths.prices, dtype=np.float64)
    growth = np.exp(book.rate * paths.dt).tolist()
    terms = [
        dict(asset=int(book.asset[i]), q=float(book.collateral[i]), debt=float(book.debt[i]),
             g=growth[i], m=float(book.margin_call_ltv[i]), l=float(book.liquidation_ltv[i]),
             tau=float(book.target_ltv[i]), c=int(book.cure_steps[i]), f=float(book.fee[i]),
             pi=float(book.topup_prob[i]))
        for i in range(n_loans)
    ]
    out = {f"path_{name}": np.zeros(n_paths) for name in MONEY}
    out.update({f"path_{name}": np.zeros(n_paths, dtype=np.int64) for name in COUNTS})
    out["path_collateral_sold"] = np.zeros((n_paths, n_assets))
    out["path_cascade_rounds"] = np.zeros(n_paths, dtype=np.int64)
    out["path_impact_drawdown"] = np.zeros((n_paths, n_assets))
    out["path_unsold_collateral"] = np.zeros((n_paths, n_assets))
    out["loan_loss"] = np.zeros(n_loans)
    out["loan_margin_calls"] = np.zeros(n_loans, dtype=np.int64)
    out["loan_liquidated"] = np.zeros(n_loans, dtype=np.int64)
    for name in ("step_loss", "step_fees", "step_open_debt", "step_collateral_value"):
        out[name] = np.zeros((n_paths, n_steps + 1))
    out["step_collateral_sold"] = np.zeros((n_paths, n_steps + 1, n_assets))
    out["step_impact"] = np.ones((n_paths, n_steps + 1, n_assets))
    for p in range(n_paths):
        _one_path(p, prices[p].tolist(), terms, options, seed, loan_chunk, n_steps, n_assets, out)
    return out


def _one_path(p, raw, terms, o, seed, loan_chunk, n_steps, n_assets, out):
    n_loans = len(terms)
    n_chunks = max(1, -(-n_loans // loan_chunk))
    money = [dict.fromkeys(MONEY, 0.0) for _ in range(n_chunks)]
    step_money = [{k: [0.0] * (n_steps + 1) for k in ("loss", "fees", "debt", "value")} for _ in range(n_chunks)]
    step_sold = [[[0.0] * n_assets for _ in range(n_steps + 1)] for _ in range(n_chunks)]
    counts = dict.fromkeys(COUNTS, 0)
    sold = [[0.0] * n_assets for _ in range(n_chunks)]
    loans = [
        dict(q=k["q"], debt=k["debt"], principal=k["debt"], status=OPEN, call_start=None,
             topup_due=None, order=0.0, order_kind=None, pending=False, acted=False,
             had_call=False, had_liquidation=False, loss=0.0)
        for k in terms
    ]
    permanent = [0.0] * n_assets
    transient = [0.0] * n_assets
    previous_price = [0.0] * n_assets
    deepest = 0
    worst_factor = [1.0] * n_assets
    cap = [float(v) for v in o.max_sell]
    depth, move = [float(v) for v in o.depth], [float(v) for v in o.depth_move]
    sqrt_law, share = [int(v) for v in o.sqrt_law], [float(v) for v in o.permanent]
    decay = [float(v) for v in o.decay]

    def factor(a):
        return math.exp(-(permanent[a] + transient[a]))

    for t in range(n_steps + 1):
        if t >= 1:
            for a in range(n_assets):
                transient[a] = transient[a] * decay[a]
        price = [raw[t][a] * factor(a) for a in range(n_assets)]
        sold_in_step = [0.0] * n_assets
        requested = [[0.0] * n_assets for _ in range(n_chunks)]
        # Sweep 1: the core rules at the step's opening price; liquidations put up orders.
        for i, (k, s) in enumerate(zip(terms, loans)):
            if s["status"] == CLOSED:
                continue
            s["acted"] = False
            if t >= 1:
                s["debt"] = s["debt"] * k["g"]
            a = k["asset"]
            if s["status"] == LIQUIDATING:
                s["pending"] = True
                s["acted"] = True
                requested[i // loan_chunk][a] += s["order"]
                continue
            if _round_one(i, k, s, t, p, price[a], previous_price[a], o, seed, counts):
                s["pending"] = True
                s["acted"] = True
                requested[i // loan_chunk][a] += s["order"]
        rounds = 0
        round_number = 1
        while True:
            total = [0.0] * n_assets
            for c in range(n_chunks):
                for a in range(n_assets):
                    total[a] += requested[c][a]
            if not any(v > 0.0 for v in total):
                break
            rounds += 1
            fill, execution = [1.0] * n_assets, list(price)
            for a in range(n_assets):
                if total[a] <= 0.0:
                    continue
                room = cap[a] - sold_in_step[a]
                if total[a] <= room:
                    fill[a] = 1.0
                    filled = total[a]
                else:
                    fill[a] = room / total[a] if room > 0.0 else 0.0
                    filled = total[a] * fill[a]
                sold_in_step[a] = sold_in_step[a] + filled
                # Notional at the path's own (unimpacted) price: impact grows with the units
                # sold, so less depth can only mean lower prices (monotone cascades).
                ratio = filled * raw[t][a] / depth[a]
                delta = move[a] * (math.sqrt(ratio) if sqrt_law[a] else ratio)
                execution[a] = price[a] * slippage_factor(delta, sqrt_law[a])
                permanent[a] = permanent[a] + share[a] * delta
                transient[a] = transient[a] + (1.0 - share[a]) * delta
            price = [raw[t][a] * factor(a) for a in range(n_assets)]
            round_number += 1
            decide = round_number <= o.max_rounds
            requested = [[0.0] * n_assets for _ in range(n_chunks)]
            for i, (k, s) in enumerate(zip(terms, loans)):
                a = k["asset"]
                c = i // loan_chunk
                if s["pending"]:
                    s["pending"] = False
                    _settle(k, s, t, fill[a], execution[a], money[c], step_money[c], step_sold[c], counts, sold[c])
                elif decide and s["status"] == OPEN and not s["acted"]:
                    ltv = s["debt"] / (s["q"] * price[a])
                    if ltv >= k["l"]:
                        _liquidate(k, s, ltv, price[a], o, counts)
                        s["pending"] = True
                        s["acted"] = True
                        requested[c][a] += s["order"]
        deepest = max(deepest, rounds)
        for a in range(n_assets):
            previous_price[a] = price[a]
            out["step_impact"][p, t, a] = factor(a)
            worst_factor[a] = min(worst_factor[a], factor(a))
        for i, (k, s) in enumerate(zip(terms, loans)):
            if s["status"] != CLOSED:
                c = i // loan_chunk
                step_money[c]["debt"][t] += s["debt"]
                step_money[c]["value"][t] += s["q"] * price[k["asset"]]

    unsold = [[0.0] * n_assets for _ in range(n_chunks)]
    for i, (k, s) in enumerate(zip(terms, loans)):
        if s["status"] != CLOSED:
            shortfall = s["debt"] - s["q"] * previous_price[k["asset"]]
            money[i // loan_chunk]["unrealised"] += shortfall if shortfall > 0.0 else 0.0
        if s["status"] == LIQUIDATING:
            unsold[i // loan_chunk][k["asset"]] += s["order"]
        out["loan_loss"][i] += s["loss"]
        out["loan_margin_calls"][i] += s["had_call"]
        out["loan_liquidated"][i] += s["had_liquidation"]
    for c in range(n_chunks):
        for name in MONEY:
            out[f"path_{name}"][p] += money[c][name]
        for a in range(n_assets):
            out["path_collateral_sold"][p, a] += sold[c][a]
            out["path_unsold_collateral"][p, a] += unsold[c][a]
        for t in range(n_steps + 1):
            out["step_loss"][p, t] += step_money[c]["loss"][t]
            out["step_fees"][p, t] += step_money[c]["fees"][t]
            out["step_open_debt"][p, t] += step_money[c]["debt"][t]
            out["step_collateral_value"][p, t] += step_money[c]["value"][t]
            for a in range(n_assets):
                out["step_collateral_sold"][p, t, a] += step_sold[c][t][a]
    for name in COUNTS:
        out[f"path_{name}"][p] = counts[name]
    out["path_cascade_rounds"][p] = deepest
    out["path_impact_drawdown"][p] = [1.0 - w for w in worst_factor]


def _round_one(i, k, s, t, p, price, previous_price, o, seed, counts):
    """The core rules of one open loan at the step's opening price; True if it liquidates."""
    ltv = s["debt"] / (s["q"] * price)
    if s["topup_due"] is not None and s["topup_due"] == t:
        s["topup_due"] = None
        if ltv >= k["m"]:
            s["q"] = s["debt"] / (k["tau"] * price)
            s["call_start"] = None
            counts["topups"] += 1
            s["acted"] = True
            return False
    liquidate = False
    if o.bridge and t >= 1 and ltv < k["l"]:
        previous_ltv = s["debt"] / (s["q"] * previous_price)
        variance = float(o.bridge_variance[k["asset"], t, p])
        if previous_ltv < k["l"] and variance > 0.0:
            level = s["debt"] / (s["q"] * k["l"])
            a = math.log(previous_price / level) * math.log(price / level)
            probability = math.exp(-2.0 * a / variance)
            liquidate = bridge_uniform(seed, i, p, t) < probability
    if liquidate:
        pass
    elif ltv >= k["l"]:
        liquidate = True
    elif ltv >= k["m"]:
        if s["call_start"] is None:
            s["call_start"] = t
            s["had_call"] = True
            counts["margin_calls"] += 1
            if uniform(seed, i, p, t) < k["pi"]:
                s["topup_due"] = t + 1
        elif k["c"] >= 1 and t - s["call_start"] >= k["c"]:
            liquidate = True
    else:
        s["call_start"] = None
        s["topup_due"] = None
    if liquidate:
        _liquidate(k, s, ltv, price, o, counts)
    return liquidate


def _liquidate(k, s, ltv, price, o, counts):
    """Put up a liquidation order sized at ``price``."""
    counts["liquidations"] += 1
    s["had_liquidation"] = True
    s["call_start"] = None
    s["topup_due"] = None
    q, debt, f = s["q"], s["debt"], k["f"]
    quantity = q
    if o.mode == MODE_PARTIAL:
        denominator = price / (1.0 + f) - k["tau"] * price
        if denominator > 0.0:
            quantity = (debt - k["tau"] * q * price) / denominator
    elif o.mode == MODE_CLOSE_FACTOR:
        repay = debt if ltv >= k["l"] * o.full_close_ltv else o.close_factor * debt
        quantity = repay * (1.0 + f) / price
    # An order sized at zero or less (a crossing drawn below the target LTV) is full.
    full = o.mode == MODE_FULL or not 0.0 < quantity < q
    if not full and o.min_liquidation > 0.0:
        repaid = quantity * price / (1.0 + f)
        full = repaid < o.min_liquidation or debt - repaid < o.min_liquidation
    s["order"] = q if full else quantity
    s["order_kind"] = "full" if full else "part"
    s["status"] = LIQUIDATING


def _settle(k, s, t, fill, execution, money, step_money, step_sold, counts, sold):
    """Sell this round's fill of the loan's order at ``execution``."""
    a, f = k["asset"], k["f"]
    debt, principal, q = s["debt"], s["principal"], s["q"]
    interest = debt - principal
    if interest < 0.0:
        interest = 0.0
    if s["order_kind"] == "full" and fill == 1.0:
        proceeds = q * execution
        fee_due = f * debt
        fee_paid = proceeds if proceeds < fee_due else fee_due
        rest = proceeds - fee_paid
        interest_paid = rest if rest < interest else interest
        rest = rest - interest_paid
        principal_paid = rest if rest < principal else principal
        residual = rest - principal_paid
        loss = (interest - interest_paid) + (principal - principal_paid)
        _book(money, fee_paid, interest_paid, principal_paid, residual, proceeds, interest + principal, loss)
        step_money["loss"][t] += loss
        step_money["fees"][t] += fee_paid
        step_sold[t][a] += q
        sold[a] += q
        s["loss"] = loss
        s["status"] = CLOSED
        counts["full_liquidations"] += 1
        return
    x = s["order"] if fill == 1.0 else s["order"] * fill
    if x <= 0.0:
        return  # nothing sold this round: the whole order waits
    proceeds = x * execution
    repaid = proceeds / (1.0 + f)
    if repaid >= debt:
        # The sale covers the whole debt: the loan closes, the rest goes back.
        fee_paid = f * debt
        residual = proceeds - fee_paid - interest - principal
        _book(money, fee_paid, interest, principal, residual, proceeds, interest + principal, 0.0)
        step_money["fees"][t] += fee_paid
        step_sold[t][a] += x
        sold[a] += x
        s["status"] = CLOSED
        counts["full_liquidations"] += 1
        return
    fee_paid = f * repaid
    interest_paid = repaid if repaid < interest else interest
    principal_paid = repaid - interest_paid
    s["debt"] = debt - repaid
    remaining_principal = principal - principal_paid
    s["principal"] = remaining_principal if remaining_principal > 0.0 else 0.0
    s["q"] = q - x
    _book(money, fee_paid, interest_paid, principal_paid, 0.0, proceeds, repaid, 0.0)
    step_money["fees"][t] += fee_paid
    step_sold[t][a] += x
    sold[a] += x
    if fill == 1.0:
        s["status"] = OPEN
        s["order"] = 0.0
    else:
        s["order"] = s["order"] - x


def _book(money, fee, interest, principal, residual, proceeds, debt_closed, loss):
    money["fees"] += fee
    money["interest_recovered"] += interest
    money["principal_recovered"] += principal
    money["residual"] += residual
    money["proceeds"] += proceeds
    money["debt_closed"] += debt_closed
    money["loss"] += loss
