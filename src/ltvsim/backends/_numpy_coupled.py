"""The NumPy reference of the coupled kernel: impact cascades, lenders' liquidation rules
and between-step crossings, as boolean masks over a [loans, paths] group.

This is what a quant would write from ``tests/naive_coupled.py`` (the spec): the paths
of a block are taken in groups (``COUPLED_GROUP`` paths, or more when ``GROUP_ELEMENTS``
allows; state is O(loans x group), never O(loans x paths)), steps outermost, and every
sweep of the naive code over the loans of a path becomes one masked operation over the
whole [loans, group] array. The per-path clearing between sweeps (fill share, impact,
slippage, execution price, impact state) is a plain loop over paths and assets with
``math`` functions and ``slippage_factor``, exactly as the spec writes it.

Bit for bit: every per-cell formula is the spec's expression in the spec's order
(elementwise +, -, *, /, sqrt are correctly rounded in NumPy as in Python), the impact
factor and the crossing probability use ``math.exp`` / ``math.log`` as the spec does
(NumPy's own ``exp`` / ``log`` may differ in the last bit), and every per-path sum over
loans is added loan by loan in loan order into its chunk's accumulator
(``np.add.at`` with loan-major indices adds sequentially, in index order), the chunks
then added in chunk order. So this kernel reproduces the naive reference exactly.
"""
import math

import numpy as np

from .. import _config as cfg
from .._rng import bridge_uniform_array, uniform_array
from ._coupled_args import (
    BRIDGE_REACH,
    COUPLED_CLOSED,
    COUPLED_GROUP,
    COUPLED_LIQUIDATING,
    COUPLED_OPEN,
    MODE_CLOSE_FACTOR,
    MODE_FULL,
    MODE_PARTIAL,
    slippage_factor,
)

#: Loans x paths of state evaluated at once: a group holds at least ``COUPLED_GROUP``
#: paths, and more (whole multiples of it) while loans x group stays within this.
GROUP_ELEMENTS = cfg.NUMPY_BLOCK_ELEMENTS


def evaluate_coupled(prices, loans, options, seed, path_offset, n_threads, out):
    """Evaluate every loan on one block of paths with impact and liquidation rules.

    Parameters
    ----------
    prices : ndarray, float64 [n_assets, n_steps + 1, n_paths]
    loans : KernelLoans
    options : CoupledOptions
        ``bridge_variance`` (when ``bridge``) covers this block's paths.
    seed : int
        Seed of the counter-based draws (top-ups and crossings).
    path_offset : int
        Global index of the block's first path (keys the draws).
    n_threads : int
        Ignored: NumPy runs on one thread.
    out : CoupledOutputs
        OUT: ``out.core`` added into as by the core kernels; the cascade arrays written.
    """
    n_loans = loans.debt.shape[0]
    n_paths = prices.shape[2]
    group = max(COUPLED_GROUP, GROUP_ELEMENTS // max(n_loans, 1) // COUPLED_GROUP * COUPLED_GROUP)
    for start in range(0, n_paths, group):
        _Group(prices, loans, options, seed, path_offset, start, min(start + group, n_paths), out).run()


class _Group:
    """One group of paths, paths [start, stop) of the block: state [n_loans, G]."""

    def __init__(self, prices, loans, options, seed, path_offset, start, stop, out):
        self.raw = prices[:, :, start:stop]
        self.o, self.seed, self.out = options, seed, out
        self.cols = slice(start, stop)
        n_loans = loans.debt.shape[0]
        self.n_assets, self.n_steps = prices.shape[0], prices.shape[1] - 1
        self.G = G = stop - start
        self.path = path_offset + start + np.arange(G)  # global path index of each column
        self.loan = np.arange(n_loans)
        self.asset = loans.asset
        self.chunk = self.loan // cfg.LOAN_CHUNK
        self.n_chunks = max(1, -(-n_loans // cfg.LOAN_CHUNK))
        self.record = out.core.step_loss.shape[0] > 0

        def column(values):
            return np.asarray(values)[:, None]

        self.g, self.m, self.l = column(loans.growth), column(loans.margin_call_ltv), column(loans.liquidation_ltv)
        self.tau, self.c, self.f = column(loans.target_ltv), column(loans.cure_steps), column(loans.fee)
        self.pi = column(loans.topup_prob)

        shape = (n_loans, G)
        self.q = np.repeat(column(loans.collateral), G, axis=1).astype(np.float64)
        self.debt = np.repeat(column(loans.debt), G, axis=1).astype(np.float64)
        self.principal = self.debt.copy()
        self.status = np.full(shape, COUPLED_OPEN, dtype=np.int8)
        self.call_start = np.full(shape, -1, dtype=np.int64)
        self.topup_due = np.full(shape, -1, dtype=np.int64)
        self.order = np.zeros(shape)
        self.order_full = np.zeros(shape, dtype=bool)
        self.pending = np.zeros(shape, dtype=bool)
        self.acted = np.zeros(shape, dtype=bool)
        self.had_call = np.zeros(shape, dtype=bool)
        self.had_liquidation = np.zeros(shape, dtype=bool)
        self.loss = np.zeros(shape)

        # Per-chunk accumulators, added loan by loan in loan order.
        self.money = np.zeros((self.n_chunks, cfg.N_MONEY, G))
        self.sold = np.zeros((self.n_chunks, self.n_assets, G))
        self.counts = np.zeros((cfg.N_COUNTS, G), dtype=np.int64)
        # ... and per step: loss and fees (record mode), units sold; reset every step.
        self.step_money = np.zeros((self.n_chunks, 2, G))
        self.step_sold = np.zeros((self.n_chunks, self.n_assets, G))

        # Per-path impact state, plain Python floats [asset][path] as in the spec.
        A = self.n_assets
        self.permanent = [[0.0] * G for _ in range(A)]
        self.transient = [[0.0] * G for _ in range(A)]
        self.worst_factor = [[1.0] * G for _ in range(A)]
        self.previous_price = np.zeros((A, G))
        self.cap = [float(v) for v in options.max_sell]
        self.depth = [float(v) for v in options.depth]
        self.move = [float(v) for v in options.depth_move]
        self.sqrt_law = [int(v) for v in options.sqrt_law]
        self.share = [float(v) for v in options.permanent]
        self.decay = [float(v) for v in options.decay]

    # ---------------------------------------------------------------- helpers
    def _factor(self, a, j):
        return math.exp(-(self.permanent[a][j] + self.transient[a][j]))

    def _impacted_price(self, t):
        """The price loans see: raw price x impact factor, per asset and path."""
        factor = np.array([[self._factor(a, j) for j in range(self.G)] for a in range(self.n_assets)])
        return self.raw[:, t, :] * factor

    def _add_per_chunk(self, acc, li, pj, values, by_asset=False):
        """acc[chunk, (asset,) path] += values, one cell after another in loan order."""
        if by_asset:
            np.add.at(acc, (self.chunk[li], self.asset[li], pj), values)
        else:
            np.add.at(acc, (self.chunk[li], pj), values)

    # ---------------------------------------------------------------- the run
    def run(self):
        out, core, cols = self.out, self.out.core, self.cols
        deepest = np.zeros(self.G, dtype=np.int64)
        for t in range(self.n_steps + 1):
            if t >= 1:
                for a in range(self.n_assets):
                    for j in range(self.G):
                        self.transient[a][j] = self.transient[a][j] * self.decay[a]
            price = self._impacted_price(t)
            self.step_money[...] = 0.0
            self.step_sold[...] = 0.0
            requested = self._sweep_one(t, price)
            price, rounds = self._cascade(t, price, requested)
            deepest = np.maximum(deepest, rounds)

            self.previous_price = price
            live = self.status != COUPLED_CLOSED
            for a in range(self.n_assets):
                for j in range(self.G):
                    factor = self._factor(a, j)
                    if self.record:
                        out.step_impact[t, a, cols.start + j] = factor
                    self.worst_factor[a][j] = min(self.worst_factor[a][j], factor)
            if self.record:
                li, pj = np.nonzero(live)
                exposure = np.zeros((self.n_chunks, 2, self.G))
                np.add.at(exposure, (self.chunk[li], 0, pj), self.debt[li, pj])
                np.add.at(exposure, (self.chunk[li], 1, pj), self.q[li, pj] * price[self.asset[li], pj])
                for c in range(self.n_chunks):
                    core.step_loss[t, cols] += self.step_money[c, 0]
                    core.step_fees[t, cols] += self.step_money[c, 1]
                    core.step_open_debt[t, cols] += exposure[c, 0]
                    core.step_collateral_value[t, cols] += exposure[c, 1]
                    core.step_sold[t, :, cols] += self.step_sold[c]

        # After step T: open loans (waiting orders included) report their shortfall.
        live = self.status != COUPLED_CLOSED
        li, pj = np.nonzero(live)
        shortfall = self.debt[li, pj] - self.q[li, pj] * self.previous_price[self.asset[li], pj]
        np.add.at(self.money, (self.chunk[li], cfg.UNREALISED, pj), np.where(shortfall > 0.0, shortfall, 0.0))
        unsold = np.zeros((self.n_chunks, self.n_assets, self.G))
        li, pj = np.nonzero(self.status == COUPLED_LIQUIDATING)
        self._add_per_chunk(unsold, li, pj, self.order[li, pj], by_asset=True)

        path_unsold = np.zeros((self.n_assets, self.G))
        for c in range(self.n_chunks):
            core.path_money[:, cols] += self.money[c]
            core.path_sold[:, cols] += self.sold[c]
            path_unsold += unsold[c]
        core.path_counts[:, cols] += self.counts
        for j in range(self.G):
            core.loan_loss[:] += self.loss[:, j]
        core.loan_calls[:] += self.had_call.sum(axis=1)
        core.loan_liquidated[:] += self.had_liquidation.sum(axis=1)
        out.path_unsold[:, cols] = path_unsold
        out.path_rounds[cols] = deepest
        out.path_drawdown[:, cols] = [[1.0 - w for w in row] for row in self.worst_factor]

    # ---------------------------------------------------------------- sweep 1
    def _sweep_one(self, t, price):
        """The core rules at the step's opening price; liquidations put up orders."""
        o = self.o
        live = self.status != COUPLED_CLOSED
        self.acted &= ~live
        if t >= 1:
            np.multiply(self.debt, self.g, out=self.debt, where=live)
        waiting = self.status == COUPLED_LIQUIDATING
        is_open = self.status == COUPLED_OPEN
        S = price[self.asset]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ltv = self.debt / (self.q * S)

        # A top-up falls due: still in the call band or worse, collateral goes back to
        # the target LTV and the loan's step ends; otherwise it is cancelled.
        due = is_open & (self.topup_due == t)
        self.topup_due[due] = -1
        topup = due & (ltv >= self.m)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            self.q = np.where(topup, self.debt / (self.tau * S), self.q)
        self.call_start[topup] = -1
        self.counts[cfg.TOPUPS] += topup.sum(axis=0)
        self.acted |= topup
        rest = is_open & ~topup

        crossed = self._crossings(t, price, rest, ltv) if o.bridge and t >= 1 else np.zeros_like(rest)
        rule = rest & ~crossed
        breach = rule & (ltv >= self.l)
        band = rule & ~breach & (ltv >= self.m)
        cured = rule & ~breach & ~band
        new_call = band & (self.call_start < 0)
        expired = band & (self.call_start >= 0) & (self.c >= 1) & (t - self.call_start >= self.c)
        self.call_start[cured] = -1
        self.topup_due[cured] = -1

        li, pj = np.nonzero(new_call)
        self.call_start[li, pj] = t
        self.had_call[li, pj] = True
        self.counts[cfg.CALLS] += new_call.sum(axis=0)
        tops = uniform_array(self.seed, li, self.path[pj], t) < self.pi[li, 0]
        self.topup_due[li[tops], pj[tops]] = t + 1

        liquidate = crossed | breach | expired
        self._liquidate(liquidate, ltv, S)
        submit = waiting | liquidate
        self.pending |= submit
        self.acted |= submit
        requested = np.zeros((self.n_chunks, self.n_assets, self.G))
        li, pj = np.nonzero(submit)
        self._add_per_chunk(requested, li, pj, self.order[li, pj], by_asset=True)
        return requested

    def _crossings(self, t, price, rest, ltv):
        """Open loans that crossed their liquidation level between t - 1 and t."""
        o = self.o
        previous = self.previous_price[self.asset]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            previous_ltv = self.debt / (self.q * previous)
        variance = o.bridge_variance[:, t, self.cols][self.asset]
        candidate = rest & (ltv < self.l) & (previous_ltv < self.l) & (variance > 0.0)
        li, pj = np.nonzero(candidate)
        d, q, lev = self.debt[li, pj], self.q[li, pj], self.l[li, 0]
        s, s_prev, v = price[self.asset[li], pj], previous[li, pj], variance[li, pj]
        level = d / (q * lev)
        # Exact skip: a > BRIDGE_REACH * v means p < exp(-40), below any draw (>= 2**-53);
        # NumPy's log is within a few ulps of math.log, far inside that margin.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            reach = np.log(s_prev / level) * np.log(s / level)
        keep = np.flatnonzero(~(reach > BRIDGE_REACH * v))
        # The rest exactly as the spec: math.log and math.exp, one pair at a time.
        near = zip(s_prev[keep].tolist(), s[keep].tolist(), level[keep].tolist(), v[keep].tolist())
        probability = np.array([math.exp(-2.0 * (math.log(sp / lv) * math.log(sn / lv)) / vv)
                                for sp, sn, lv, vv in near])
        li, pj = li[keep], pj[keep]
        hit = bridge_uniform_array(self.seed, li, self.path[pj], t) < probability
        crossed = np.zeros_like(rest)
        crossed[li[hit], pj[hit]] = True
        return crossed

    # ---------------------------------------------------------------- rounds
    def _cascade(self, t, price, requested):
        """Clear the orders, move the price, settle, liquidate anew: until no path has an
        order or the round limit; returns the step's final price and rounds per path."""
        G, A = self.G, self.n_assets
        active = np.ones(G, dtype=bool)
        rounds = np.zeros(G, dtype=np.int64)
        sold_in_step = [[0.0] * G for _ in range(A)]
        round_number = 1
        while True:
            total = np.zeros((A, G))
            for c in range(self.n_chunks):
                total += requested[c]
            active &= (total > 0.0).any(axis=0)
            if not active.any():
                return price, rounds
            rounds += active
            fill = np.ones((A, G))
            execution = price.copy()
            for j in np.flatnonzero(active).tolist():
                for a in range(A):
                    fill[a, j], execution[a, j] = self._clear(
                        a, j, float(total[a, j]), float(price[a, j]), float(self.raw[a, t, j]), sold_in_step)
            price = self._impacted_price(t)
            round_number += 1
            decide = round_number <= self.o.max_rounds

            settle = self.pending & active
            self.pending &= ~settle
            self._settle(t, settle, fill, execution)
            requested = np.zeros((self.n_chunks, A, G))
            if decide:
                S = price[self.asset]
                fresh = active & ~settle & (self.status == COUPLED_OPEN) & ~self.acted
                with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                    ltv = self.debt / (self.q * S)
                liquidate = fresh & (ltv >= self.l)
                self._liquidate(liquidate, ltv, S)
                self.pending |= liquidate
                self.acted |= liquidate
                li, pj = np.nonzero(liquidate)
                self._add_per_chunk(requested, li, pj, self.order[li, pj], by_asset=True)

    def _clear(self, a, j, total, price, raw, sold_in_step):
        """One path's round on one asset: fill share and execution price; the impact
        state moves. Plain floats, the spec's expressions: the notional sold is valued at
        the path's own (unimpacted) price ``raw``, sales execute below the impacted
        ``price``."""
        if total <= 0.0:
            return 1.0, price
        room = self.cap[a] - sold_in_step[a][j]
        if total <= room:
            fill = 1.0
            filled = total
        else:
            fill = room / total if room > 0.0 else 0.0
            filled = total * fill
        sold_in_step[a][j] = sold_in_step[a][j] + filled
        ratio = filled * raw / self.depth[a]
        delta = self.move[a] * (math.sqrt(ratio) if self.sqrt_law[a] else ratio)
        execution = price * slippage_factor(delta, self.sqrt_law[a])
        self.permanent[a][j] = self.permanent[a][j] + self.share[a] * delta
        self.transient[a][j] = self.transient[a][j] + (1.0 - self.share[a]) * delta
        return fill, execution

    # ---------------------------------------------------------------- orders
    def _liquidate(self, mask, ltv, S):
        """Put up a liquidation order, sized at S, on every cell of ``mask``."""
        o = self.o
        li, pj = np.nonzero(mask)
        if li.size == 0:
            return
        self.counts[cfg.LIQUIDATIONS] += mask.sum(axis=0)
        self.had_liquidation[li, pj] = True
        self.call_start[li, pj] = -1
        self.topup_due[li, pj] = -1
        q, debt, price, f = self.q[li, pj], self.debt[li, pj], S[li, pj], self.f[li, 0]
        quantity = q
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if o.mode == MODE_PARTIAL:
                tau = self.tau[li, 0]
                denominator = price / (1.0 + f) - tau * price
                quantity = np.where(denominator > 0.0, (debt - tau * q * price) / denominator, q)
            elif o.mode == MODE_CLOSE_FACTOR:
                repay = np.where(ltv[li, pj] >= self.l[li, 0] * o.full_close_ltv, debt, o.close_factor * debt)
                quantity = repay * (1.0 + f) / price
            # An order sized at zero or less (a crossing drawn below the target LTV) is full.
            full = np.full(li.shape, o.mode == MODE_FULL) | ~((0.0 < quantity) & (quantity < q))
            if o.min_liquidation > 0.0:
                repaid = quantity * price / (1.0 + f)
                full |= (repaid < o.min_liquidation) | (debt - repaid < o.min_liquidation)
        self.order[li, pj] = np.where(full, q, quantity)
        self.order_full[li, pj] = full
        self.status[li, pj] = COUPLED_LIQUIDATING

    def _settle(self, t, mask, fill, execution):
        """Sell this round's fill of the order of every cell of ``mask`` at its asset's
        execution price; money, sold units and step figures in loan order per chunk."""
        li, pj = np.nonzero(mask)
        if li.size == 0:
            return
        a = self.asset[li]
        fill, X, f = fill[a, pj], execution[a, pj], self.f[li, 0]
        debt, principal, q, order = self.debt[li, pj], self.principal[li, pj], self.q[li, pj], self.order[li, pj]
        interest = debt - principal
        interest = np.where(interest < 0.0, 0.0, interest)
        complete = fill == 1.0
        whole = self.order_full[li, pj] & complete  # the core's full waterfall on all of q
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # A full order filled completely.
            w_proceeds = q * X
            fee_due = f * debt
            w_fee = np.where(w_proceeds < fee_due, w_proceeds, fee_due)
            rest = w_proceeds - w_fee
            w_interest = np.where(rest < interest, rest, interest)
            rest = rest - w_interest
            w_principal = np.where(rest < principal, rest, principal)
            w_residual = rest - w_principal
            w_loss = (interest - w_interest) + (principal - w_principal)
            # Any other fill: a sale of x units.
            x = np.where(complete, order, order * fill)
            proceeds = x * X
            repaid = proceeds / (1.0 + f)
            # ... that covers the whole debt: the loan closes, the rest goes back.
            c_fee = f * debt
            c_residual = proceeds - c_fee - interest - principal
            # ... that repays part of the debt.
            p_fee = f * repaid
            p_interest = np.where(repaid < interest, repaid, interest)
            p_principal = repaid - p_interest
        sale = ~whole & (x > 0.0)  # x <= 0: nothing sold this round, the order waits
        closes = sale & (repaid >= debt)
        part = sale & ~closes
        booked = whole | sale

        def pick(w, c, p):
            return np.where(whole, w, np.where(closes, c, p))

        fee = pick(w_fee, c_fee, p_fee)
        units = np.where(whole, q, x)
        entries = (
            (cfg.LOSS, pick(w_loss, 0.0, 0.0)),
            (cfg.FEES, fee),
            (cfg.INTEREST, pick(w_interest, interest, p_interest)),
            (cfg.PRINCIPAL, pick(w_principal, principal, p_principal)),
            (cfg.RESIDUAL, pick(w_residual, c_residual, 0.0)),
            (cfg.PROCEEDS, np.where(whole, w_proceeds, proceeds)),
            (cfg.DEBT_CLOSED, pick(interest + principal, interest + principal, repaid)),
        )
        k = np.flatnonzero(booked)
        ck, pk = self.chunk[li[k]], pj[k]
        for field, values in entries:
            np.add.at(self.money, (ck, field, pk), values[k])
        np.add.at(self.sold, (ck, a[k], pk), units[k])
        np.add.at(self.step_sold, (ck, a[k], pk), units[k])
        np.add.at(self.step_money, (ck, 1, pk), fee[k])
        w = np.flatnonzero(whole)
        np.add.at(self.step_money, (self.chunk[li[w]], 0, pj[w]), w_loss[w])

        self.loss[li[w], pj[w]] = w_loss[w]
        closed = whole | closes
        self.status[li[closed], pj[closed]] = COUPLED_CLOSED
        self.counts[cfg.FULL_LIQUIDATIONS] += np.bincount(pj[closed], minlength=self.G)

        k = np.flatnonzero(part)
        cells = (li[k], pj[k])
        self.debt[cells] = debt[k] - repaid[k]
        remaining = principal[k] - p_principal[k]
        self.principal[cells] = np.where(remaining > 0.0, remaining, 0.0)
        self.q[cells] = q[k] - x[k]
        done = complete[k]
        self.status[li[k[done]], pj[k[done]]] = COUPLED_OPEN
        self.order[cells] = np.where(done, 0.0, order[k] - x[k])
