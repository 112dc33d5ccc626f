"""The slow, obvious reference every backend is held against.

One loan on one path at a time, with plain Python floats and ``if`` statements: a
line-by-line transcription of ``shared/spec/MECHANICS.md`` ("One step t on one path")
and of the project's decisions where the spec leaves a choice open:

1. Order within a step: accrue (t >= 1, ``D <- D * g``), price, ``LTV = D / (q * S)``,
   then rule 4 (top-up due), 5 (liquidation), 6 (call band), else the market cures.
2. A top-up scheduled for t0 + 1 executes only if at t0 + 1 the LTV is still >= m; then
   ``q = D / (tau * S)``, the call ends and nothing else happens that step (even when the
   LTV was >= l before the top-up). Otherwise it is cancelled and not counted.
3. Top-up draw: ``u = ltvsim._rng.uniform(seed, loan_row, path_index, t0)``; scheduled iff
   ``u < topup_prob``.
4. Cure expiry: in a call issued at t0 with c >= 1, at a step t with ``t - t0 >= c`` and
   the LTV still in [m, l): liquidate. c = 0: no deadline. A call ends when the LTV drops
   below m, after a top-up, or after a liquidation; a later LTV >= m is a new call.
5. Full liquidation waterfall at X = S: fee, then interest, then principal, then residual.
6. Partial liquidation: the closed form, falling back to full when it cannot apply.
7. Horizon: open loans report ``max(0, D - q * S_T)`` as unrealised.
8. Step 0: no accrual, otherwise the same rules.

Nothing here is vectorised and nothing is shared with the package except the
counter-based draw (decision 3) and ``g = numpy.exp(rate * dt)``, which the spec
requires to be computed once so that every backend multiplies by the same number.
"""
import numpy as np

from ltvsim._rng import uniform

MONEY = ("loss", "fees", "interest_recovered", "principal_recovered", "residual",
         "proceeds", "debt_closed", "unrealised")
COUNTS = ("margin_calls", "liquidations", "full_liquidations", "topups")


def simulate_naive(book, paths, liquidation="full", seed=0):
    """Every loan of ``book`` on every path of ``paths``, one step at a time.

    Returns
    -------
    dict of ndarray
        The same names as :attr:`ltvsim.SimulationResult.arrays`, the step arrays
        included, plus ``loan_first_liquidation`` ([n_loans, n_paths], the first step
        at which the loan was liquidated on that path, -1 if never).
    """
    if liquidation not in ("full", "partial"):
        raise ValueError(liquidation)
    partial = liquidation == "partial"
    n_paths, n_steps, n_assets = paths.n_paths, paths.n_steps, paths.n_assets
    n_loans = len(book)
    # float32 prices are read as the float64 numbers they are, as the kernels read them.
    prices = np.asarray(paths.prices, dtype=np.float64).tolist()
    growth = np.exp(book.rate * paths.dt).tolist()

    money = {name: [0.0] * n_paths for name in MONEY}
    counts = {name: [0] * n_paths for name in COUNTS}
    sold = [[0.0] * n_assets for _ in range(n_paths)]
    step_sold = [[[0.0] * n_assets for _ in range(n_steps + 1)] for _ in range(n_paths)]
    step_loss = [[0.0] * (n_steps + 1) for _ in range(n_paths)]
    step_fees = [[0.0] * (n_steps + 1) for _ in range(n_paths)]
    step_open_debt = [[0.0] * (n_steps + 1) for _ in range(n_paths)]
    step_collateral_value = [[0.0] * (n_steps + 1) for _ in range(n_paths)]
    loan_loss = [0.0] * n_loans
    loan_calls = [0] * n_loans
    loan_liquidated = [0] * n_loans
    first_liquidation = [[-1] * n_paths for _ in range(n_loans)]

    terms = [
        dict(
            asset=int(book.asset[i]),
            q=float(book.collateral[i]),
            debt=float(book.debt[i]),
            g=growth[i],
            m=float(book.margin_call_ltv[i]),
            l=float(book.liquidation_ltv[i]),
            tau=float(book.target_ltv[i]),
            c=int(book.cure_steps[i]),
            f=float(book.fee[i]),
            pi=float(book.topup_prob[i]),
        )
        for i in range(n_loans)
    ]

    for p in range(n_paths):
        for i in range(n_loans):
            events = _one_loan_one_path(terms[i], i, p, prices[p], n_steps, partial, seed)
            for name in MONEY:
                money[name][p] += events["money"][name]
            for name in COUNTS:
                counts[name][p] += events["counts"][name]
            a = terms[i]["asset"]
            for t, quantity, loss, fee_paid in events["sales"]:
                sold[p][a] += quantity
                step_sold[p][t][a] += quantity
                step_loss[p][t] += loss
                step_fees[p][t] += fee_paid
            for t, open_debt, collateral_value in events["exposure"]:
                step_open_debt[p][t] += open_debt
                step_collateral_value[p][t] += collateral_value
            loan_loss[i] += events["money"]["loss"]
            loan_calls[i] += events["counts"]["margin_calls"] > 0
            loan_liquidated[i] += events["counts"]["liquidations"] > 0
            if events["sales"]:
                first_liquidation[i][p] = events["sales"][0][0]

    out = {f"path_{name}": np.array(money[name], dtype=np.float64) for name in MONEY}
    out.update({f"path_{name}": np.array(counts[name], dtype=np.int64) for name in COUNTS})
    out["path_collateral_sold"] = np.array(sold, dtype=np.float64).reshape(n_paths, n_assets)
    out["loan_loss"] = np.array(loan_loss, dtype=np.float64)
    out["loan_margin_calls"] = np.array(loan_calls, dtype=np.int64)
    out["loan_liquidated"] = np.array(loan_liquidated, dtype=np.int64)
    out["step_collateral_sold"] = np.array(step_sold, dtype=np.float64).reshape(n_paths, n_steps + 1, n_assets)
    out["step_loss"] = np.array(step_loss, dtype=np.float64).reshape(n_paths, n_steps + 1)
    out["step_fees"] = np.array(step_fees, dtype=np.float64).reshape(n_paths, n_steps + 1)
    out["step_open_debt"] = np.array(step_open_debt, dtype=np.float64).reshape(n_paths, n_steps + 1)
    out["step_collateral_value"] = np.array(step_collateral_value, dtype=np.float64).reshape(n_paths, n_steps + 1)
    out["loan_first_liquidation"] = np.array(first_liquidation, dtype=np.int64).reshape(n_loans, n_paths)
    return out


def _one_loan_one_path(k, loan_row, path_index, path_prices, n_steps, partial, seed):
    """The life of one loan on one path. Returns its money, counts and sales."""
    money = dict.fromkeys(MONEY, 0.0)
    counts = dict.fromkeys(COUNTS, 0)
    sales = []  # (step, quantity sold, realised loss, fee paid)
    exposure = []  # (step, debt, collateral value) at the end of each step the loan is open

    a, m, l, tau, c, f = k["asset"], k["m"], k["l"], k["tau"], k["c"], k["f"]
    q = k["q"]
    debt = k["debt"]
    principal = k["debt"]  # all principal at step 0
    call_start = None  # step of the call in progress
    topup_due = None  # step at which a scheduled top-up falls due
    is_open = True

    for t in range(n_steps + 1):
        if t >= 1:
            # The loan was open at the end of step t - 1: record its exposure there.
            exposure.append((t - 1, debt, q * path_prices[t - 1][a]))
        # 1. Accrue: one multiply per step, from step 1 on.
        if t >= 1:
            debt = debt * k["g"]
        # 2. Price.  3. LTV.
        s = path_prices[t][a]
        ltv = debt / (q * s)

        # 4. A scheduled top-up falls due.
        if topup_due is not None and topup_due == t:
            topup_due = None
            if ltv >= m:
                q = debt / (tau * s)
                call_start = None
                counts["topups"] += 1
                continue  # nothing else happens to this loan at this step
            # else: the market cured it first; the top-up is cancelled (rule 6, else).

        liquidate = False
        if ltv >= l:
            # 5. At or beyond the liquidation LTV.
            liquidate = True
        elif ltv >= m:
            # 6. In the call band.
            if call_start is None:
                call_start = t
                counts["margin_calls"] += 1
                if uniform(seed, loan_row, path_index, t) < k["pi"]:
                    topup_due = t + 1
            elif c >= 1 and t - call_start >= c:
                liquidate = True
        else:
            # Below the call level: the market cures a call in progress.
            call_start = None
            topup_due = None

        if not liquidate:
            continue

        # 7. Liquidation at the execution price X = S (no market impact).
        x = s
        interest = debt - principal
        if interest < 0.0:
            interest = 0.0
        counts["liquidations"] += 1
        call_start = None
        topup_due = None

        if partial:
            denominator = x / (1.0 + f) - tau * s
            if denominator > 0.0:
                dq = (debt - tau * q * s) / denominator
                if dq < q:
                    proceeds = dq * x
                    repaid = proceeds / (1.0 + f)
                    fee_paid = f * repaid
                    interest_paid = repaid if repaid < interest else interest
                    principal_paid = repaid - interest_paid
                    debt = debt - repaid
                    # Mathematically principal_paid <= principal (the new debt is
                    # tau * (q - dq) * S > 0); only rounding can push it below zero.
                    principal = max(principal - principal_paid, 0.0)
                    q = q - dq
                    money["fees"] += fee_paid
                    money["interest_recovered"] += interest_paid
                    money["principal_recovered"] += principal_paid
                    money["proceeds"] += proceeds
                    money["debt_closed"] += repaid
                    sales.append((t, dq, 0.0, fee_paid))
                    continue  # the loan stays open, out of its call

        # Full liquidation: the waterfall fee -> interest -> principal -> residual.
        proceeds = q * x
        rest = proceeds
        fee_paid = min(rest, f * debt)
        rest = rest - fee_paid
        interest_paid = min(rest, interest)
        rest = rest - interest_paid
        principal_paid = min(rest, principal)
        residual = rest - principal_paid
        loss = (interest - interest_paid) + (principal - principal_paid)
        money["fees"] += fee_paid
        money["interest_recovered"] += interest_paid
        money["principal_recovered"] += principal_paid
        money["residual"] += residual
        money["proceeds"] += proceeds
        money["debt_closed"] += interest + principal
        money["loss"] += loss
        counts["full_liquidations"] += 1
        sales.append((t, q, loss, fee_paid))
        is_open = False
        break

    # 8. Horizon: mark-to-market shortfall of a loan still open.
    if is_open:
        shortfall = debt - q * path_prices[n_steps][a]
        money["unrealised"] += shortfall if shortfall > 0.0 else 0.0
        exposure.append((n_steps, debt, q * path_prices[n_steps][a]))
    return {"money": money, "counts": counts, "sales": sales, "exposure": exposure}
