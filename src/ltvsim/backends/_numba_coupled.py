"""The coupled kernel (market impact, cascades, liquidation rules, crossings) compiled
with numba (``parallel=True``); ``tests/naive_coupled.py`` is its specification.

Design (the Cython kernel uses the same names and layout):

* Paths run in groups of ``COUPLED_GROUP`` with steps outermost: within a step every
  loan of a path must see the price the other loans' forced sales left behind. Per
  group the state is ``[n_loans, COUPLED_GROUP]`` per field, O(loans), never
  O(loans x paths).
* Per step: sweep 1 (the core rules at the step's opening price; liquidations put up
  orders) runs in parallel over chunks of ``LOAN_CHUNK`` loans, each chunk writing
  only its own accumulators and loans. Then, while a path has orders: its clearing
  (fill share, impact, slippage, execution price) runs serially per path and asset,
  and sweep k >= 2 settles the orders and liquidates loans the new price pushed over
  their level, again in parallel over chunks. Sums over chunks are serial, in chunk
  order, so no result depends on the thread count.
* Pristine skipping: until a loan is touched, every path of the group has it open,
  uncalled, with its initial collateral and the shared debt schedule ``D0 * g * g
  ...``. It is skipped while the group's lowest price is above the core's guard
  threshold (its LTV is then provably below the call level on every path) and, with
  crossings, no crossing can be drawn. The first time that fails its rows are
  initialised and it is evaluated exactly from then on.
* Sweeps k >= 2 visit only the chunk's loans with an order (a list kept in loan
  order) unless the price fell to a chunk's highest trigger price (``crit``, the
  largest price at which one of its open loan-paths could reach its liquidation
  level), in which case the chunk's loans are scanned in order.
* Every float is computed with the reference's expressions in its order, and every
  per-path sum is added per chunk in event order, then chunk by chunk: the results
  are the reference's, bit for bit.
"""
import math

import numba
import numpy as np
from numba import njit, prange

from .. import _config as cfg
from .._numba_threads import run_parallel
from .._rng import MASK64, mix64
from ._coupled_args import (
    BRIDGE_REACH,
    COUPLED_CLOSED,
    COUPLED_GROUP,
    COUPLED_LIQUIDATING,
    COUPLED_OPEN,
    MODE_CLOSE_FACTOR,
    MODE_FULL,
    MODE_PARTIAL,
    ORDER_FULL,
    ORDER_NONE,
    ORDER_PART,
)
from ._coupled_args import slippage_factor as _ca_slippage_factor
# The counter-based hash and top-up draw are the core kernel's own.
from ._numba_kernel import _TO_UNIT, _U, _mix64, _uniform

_BRIDGE_BIT = _U(1 << 63)

_G = COUPLED_GROUP
_OPEN, _LIQUIDATING, _CLOSED = COUPLED_OPEN, COUPLED_LIQUIDATING, COUPLED_CLOSED
_NONE, _FULL_ORDER, _PART_ORDER = ORDER_NONE, ORDER_FULL, ORDER_PART
_FULL_MODE, _PARTIAL_MODE, _CLOSE_FACTOR_MODE = MODE_FULL, MODE_PARTIAL, MODE_CLOSE_FACTOR
_LOSS, _FEES, _INTEREST, _PRINCIPAL = cfg.LOSS, cfg.FEES, cfg.INTEREST, cfg.PRINCIPAL
_RESIDUAL, _PROCEEDS, _DEBT_CLOSED, _UNREALISED = cfg.RESIDUAL, cfg.PROCEEDS, cfg.DEBT_CLOSED, cfg.UNREALISED
_CALLS, _LIQUIDATIONS, _FULL, _TOPUPS = cfg.CALLS, cfg.LIQUIDATIONS, cfg.FULL_LIQUIDATIONS, cfg.TOPUPS
_STEP_LOSS, _STEP_FEES = cfg.STEP_LOSS, cfg.STEP_FEES
_STEP_OPEN_DEBT, _STEP_COLLATERAL_VALUE = cfg.STEP_OPEN_DEBT, cfg.STEP_COLLATERAL_VALUE
_LOAN_CHUNK = cfg.LOAN_CHUNK
_MARGIN, _TINY, _HUGE = cfg.GUARD_MARGIN, cfg.GUARD_TINY, cfg.GUARD_HUGE
_BRIDGE_REACH = BRIDGE_REACH
# Extra relative margin of the crossing skip test (the probability bound has ~2.5 in
# its exponent to spare; this only guards the rounding of the test itself).
_BRIDGE_SLACK = 1.0 + 1e-9

# A loan's ``touched`` state in the group: pristine (no rows yet), touched (its rows
# hold every lane's state), dead (closed on every lane: nothing left to do).
_PRISTINE, _TOUCHED, _DEAD = 0, 1, 2

_jit = dict(cache=True, nogil=True, error_model="numpy", fastmath=False)
_jit_no_nrt = dict(_jit, _nrt=False)


@njit(inline="always", **_jit)
def _bridge_uniform(loan_key, path, step):
    """Crossing draw, never 0; see ``ltvsim._rng.bridge_uniform``."""
    h = _mix64(_mix64(loan_key ^ _U(path)) ^ (_U(step) | _BRIDGE_BIT))
    return np.float64((h >> _U(11)) | _U(1)) * _TO_UNIT


# The spec's own function, compiled: the same expressions in the same order.
slippage_factor = njit(inline="always", **_jit)(_ca_slippage_factor)


@njit(inline="always", **_jit)
def _trigger_price(debt, collateral, level):
    """Price above which ``debt / (collateral * price) < level`` provably holds in
    floating point (the core's ``_guard_threshold``, ``level`` = the LTV); +inf where a
    magnitude leaves the range in which the margin bounds the rounding."""
    level_collateral = collateral * level
    if not (_TINY <= level <= _HUGE and _TINY <= collateral <= _HUGE and _TINY <= level_collateral <= _HUGE):
        return np.inf
    threshold = debt / level_collateral
    if not (_TINY <= debt <= _HUGE and _TINY <= threshold <= _HUGE):
        return np.inf
    if not (_TINY <= collateral * threshold <= _HUGE):
        return np.inf
    return threshold * (1.0 + _MARGIN)


@njit(**_jit_no_nrt)
def _liquidate(i, j, ltv, price, tau, fee, l, mode, close_factor, full_close_ltv,
               min_liquidation, st_q, st_debt, st_call, st_topup, st_order, st_kind,
               st_status, st_had_liq, acc_counts, c):
    """Put up a liquidation order sized at ``price`` (reference ``_liquidate``)."""
    acc_counts[c, _LIQUIDATIONS, j] += 1
    st_had_liq[i, j] = 1
    st_call[i, j] = -1
    st_topup[i, j] = -1
    q = st_q[i, j]
    debt = st_debt[i, j]
    quantity = q
    if mode == _PARTIAL_MODE:
        denominator = price / (1.0 + fee) - tau * price
        if denominator > 0.0:
            quantity = (debt - tau * q * price) / denominator
    elif mode == _CLOSE_FACTOR_MODE:
        repay = debt if ltv >= l * full_close_ltv else close_factor * debt
        quantity = repay * (1.0 + fee) / price
    full = mode == _FULL_MODE or not (0.0 < quantity and quantity < q)
    if not full and min_liquidation > 0.0:
        repaid = quantity * price / (1.0 + fee)
        full = repaid < min_liquidation or debt - repaid < min_liquidation
    st_order[i, j] = q if full else quantity
    st_kind[i, j] = _FULL_ORDER if full else _PART_ORDER
    st_status[i, j] = _LIQUIDATING


@njit(**_jit_no_nrt)
def _round_one(i, j, t, path, price, previous_price, m, l, tau, cure, fee, topup_prob,
               loan_key, bridge, variance, mode, close_factor, full_close_ltv,
               min_liquidation, st_q, st_debt, st_call, st_topup, st_order, st_kind,
               st_status, st_acted, st_had_call, st_had_liq, acc_counts, c):
    """The core rules of one open loan-path at the step's opening price (reference
    ``_round_one``); True if it liquidates."""
    q = st_q[i, j]
    debt = st_debt[i, j]
    ltv = debt / (q * price)
    if st_topup[i, j] == t:
        st_topup[i, j] = -1
        if ltv >= m:
            st_q[i, j] = debt / (tau * price)
            st_call[i, j] = -1
            acc_counts[c, _TOPUPS, j] += 1
            st_acted[i, j] = 1
            return False
    liquidate = False
    if bridge and t >= 1 and ltv < l:
        previous_ltv = debt / (q * previous_price)
        if previous_ltv < l and variance > 0.0:
            level = debt / (q * l)
            a = math.log(previous_price / level) * math.log(price / level)
            probability = math.exp(-2.0 * a / variance)
            liquidate = _bridge_uniform(loan_key, path, t) < probability
    if liquidate:
        pass
    elif ltv >= l:
        liquidate = True
    elif ltv >= m:
        if st_call[i, j] < 0:
            st_call[i, j] = t
            st_had_call[i, j] = 1
            acc_counts[c, _CALLS, j] += 1
            if _uniform(loan_key, path, t) < topup_prob:
                st_topup[i, j] = t + 1
        elif cure >= 1 and t - st_call[i, j] >= cure:
            liquidate = True
    else:
        st_call[i, j] = -1
        st_topup[i, j] = -1
    if liquidate:
        _liquidate(i, j, ltv, price, tau, fee, l, mode, close_factor, full_close_ltv,
                   min_liquidation, st_q, st_debt, st_call, st_topup, st_order, st_kind,
                   st_status, st_had_liq, acc_counts, c)
    return liquidate


@njit(**_jit_no_nrt)
def _settle(i, j, t, a, fee, fill, execution, st_q, st_debt, st_principal, st_order,
            st_kind, st_status, st_loss, acc_money, acc_counts, acc_sold, acc_step_money,
            acc_step_sold, record, c):
    """Sell this round's fill of the loan-path's order at ``execution`` (reference
    ``_settle``)."""
    debt = st_debt[i, j]
    principal = st_principal[i, j]
    q = st_q[i, j]
    interest = debt - principal
    if interest < 0.0:
        interest = 0.0
    if st_kind[i, j] == _FULL_ORDER and fill == 1.0:
        proceeds = q * execution
        fee_due = fee * debt
        fee_paid = proceeds if proceeds < fee_due else fee_due
        rest = proceeds - fee_paid
        interest_paid = rest if rest < interest else interest
        rest = rest - interest_paid
        principal_paid = rest if rest < principal else principal
        residual = rest - principal_paid
        loss = (interest - interest_paid) + (principal - principal_paid)
        acc_money[c, _FEES, j] += fee_paid
        acc_money[c, _INTEREST, j] += interest_paid
        acc_money[c, _PRINCIPAL, j] += principal_paid
        acc_money[c, _RESIDUAL, j] += residual
        acc_money[c, _PROCEEDS, j] += proceeds
        acc_money[c, _DEBT_CLOSED, j] += interest + principal
        acc_money[c, _LOSS, j] += loss
        if record:
            acc_step_money[c, _STEP_LOSS, t, j] += loss
            acc_step_money[c, _STEP_FEES, t, j] += fee_paid
            acc_step_sold[c, t, a, j] += q
        acc_sold[c, a, j] += q
        st_loss[i, j] = loss
        st_status[i, j] = _CLOSED
        acc_counts[c, _FULL, j] += 1
        return
    x = st_order[i, j] if fill == 1.0 else st_order[i, j] * fill
    if x <= 0.0:
        return  # nothing sold this round: the whole order waits
    proceeds = x * execution
    repaid = proceeds / (1.0 + fee)
    if repaid >= debt:
        fee_paid = fee * debt
        residual = proceeds - fee_paid - interest - principal
        acc_money[c, _FEES, j] += fee_paid
        acc_money[c, _INTEREST, j] += interest
        acc_money[c, _PRINCIPAL, j] += principal
        acc_money[c, _RESIDUAL, j] += residual
        acc_money[c, _PROCEEDS, j] += proceeds
        acc_money[c, _DEBT_CLOSED, j] += interest + principal
        acc_money[c, _LOSS, j] += 0.0
        if record:
            acc_step_money[c, _STEP_FEES, t, j] += fee_paid
            acc_step_sold[c, t, a, j] += x
        acc_sold[c, a, j] += x
        st_status[i, j] = _CLOSED
        acc_counts[c, _FULL, j] += 1
        return
    fee_paid = fee * repaid
    interest_paid = repaid if repaid < interest else interest
    principal_paid = repaid - interest_paid
    st_debt[i, j] = debt - repaid
    remaining_principal = principal - principal_paid
    st_principal[i, j] = remaining_principal if remaining_principal > 0.0 else 0.0
    st_q[i, j] = q - x
    acc_money[c, _FEES, j] += fee_paid
    acc_money[c, _INTEREST, j] += interest_paid
    acc_money[c, _PRINCIPAL, j] += principal_paid
    acc_money[c, _RESIDUAL, j] += 0.0
    acc_money[c, _PROCEEDS, j] += proceeds
    acc_money[c, _DEBT_CLOSED, j] += repaid
    acc_money[c, _LOSS, j] += 0.0
    if record:
        acc_step_money[c, _STEP_FEES, t, j] += fee_paid
        acc_step_sold[c, t, a, j] += x
    acc_sold[c, a, j] += x
    if fill == 1.0:
        st_status[i, j] = _OPEN
        st_order[i, j] = 0.0
    else:
        st_order[i, j] = st_order[i, j] - x


@njit(inline="always", **_jit_no_nrt)
def _lane_trigger(idle, debt, q, l):
    """A lane's trigger price for sweeps k >= 2 (``_trigger_price`` without branches):
    above it an idle open loan-path provably stays below its liquidation level; -inf
    where it cannot liquidate (not ``idle``), +inf where the bound does not hold."""
    level_collateral = q * l
    threshold = debt / level_collateral
    usable = ((_TINY <= l) & (l <= _HUGE) & (_TINY <= q) & (q <= _HUGE)
              & (_TINY <= level_collateral) & (level_collateral <= _HUGE)
              & (_TINY <= debt) & (debt <= _HUGE) & (_TINY <= threshold) & (threshold <= _HUGE)
              & (_TINY <= q * threshold) & (q * threshold <= _HUGE))
    trigger = threshold * (1.0 + _MARGIN) if usable else np.inf
    return trigger if idle else -np.inf


@njit(inline="always", **_jit_no_nrt)
def _touch(i, n_group, debt, collateral0, debt0, l, st_status, st_q, st_debt, st_principal,
           st_call, st_topup, st_order, st_kind, st_pending, st_acted, st_had_call,
           st_had_liq, st_loss, st_trigger, touched):
    """First look at a pristine loan: its rows from (q0, the schedule's debt, D0). Lanes
    past the group's last path are closed (never looked at)."""
    trigger = _trigger_price(debt, collateral0, l)
    for j in range(_G):
        st_status[i, j] = _OPEN if j < n_group else _CLOSED
        st_q[i, j] = collateral0
        st_debt[i, j] = debt
        st_principal[i, j] = debt0
        st_call[i, j] = -1
        st_topup[i, j] = -1
        st_order[i, j] = 0.0
        st_kind[i, j] = _NONE
        st_pending[i, j] = 0
        st_acted[i, j] = 0
        st_had_call[i, j] = 0
        st_had_liq[i, j] = 0
        st_loss[i, j] = 0.0
        st_trigger[i, j] = trigger if j < n_group else -np.inf
    touched[i] = _TOUCHED


@njit(**_jit_no_nrt)
def _sweep_one(c, t, n_group, group_start, path_offset, price, previous_price, price_min,
               bridge_min, bridge_low, bridge_reach, asset_of, collateral_of, debt_of,
               growth_of, m_of, l_of, tau_of, cure_of, fee_of, topup_of, seed_key, mode,
               close_factor, full_close_ltv, min_liquidation, bridge, variance, touched,
               schedule, pristine_threshold, st_status, st_q, st_debt, st_principal, st_call,
               st_topup, st_order, st_kind, st_pending, st_acted, st_had_call, st_had_liq,
               st_loss, st_trigger, acc_counts, requested, crit_pristine, crit_touched,
               order_list, order_count):
    """Sweep 1 over the loans of chunk ``c``: accrue, the core rules at the opening
    price, orders put up; the chunk's trigger prices and its list of orders.

    A touched loan first runs a branch-free pass over its lanes (accrue; is anything
    due: an order, a call in progress, LTV >= m, a possible crossing?); the reference's
    rules run only on the lanes where something is. On the others they would change
    nothing (LTV < m, no call: the cure branch resets what is already reset).
    """
    n_assets = requested.shape[1]
    for a in range(n_assets):
        crit_pristine[c, a] = -np.inf
        for j in range(_G):
            requested[c, a, j] = 0.0
            crit_touched[c, a, j] = -np.inf
    n_orders = 0
    start = c * _LOAN_CHUNK
    stop = min(start + _LOAN_CHUNK, debt_of.shape[0])
    crossings = bridge and t >= 1
    for i in range(start, stop):
        state = touched[i]
        if state == _DEAD:
            continue
        a = asset_of[i]
        accrue = t >= 1
        if state == _PRISTINE:
            debt = schedule[i]
            if accrue:
                debt = debt * growth_of[i]
                schedule[i] = debt
            collateral0 = collateral_of[i]
            threshold = _trigger_price(debt, collateral0, m_of[i])
            pristine_threshold[i] = threshold
            if price_min[a] > threshold:
                skip = True
                if crossings:
                    level = debt / (collateral0 * l_of[i])
                    skip = (_TINY <= level <= _HUGE
                            and bridge_min[a] > level * (1.0 + _MARGIN) * bridge_reach[a])
                if skip:
                    if threshold > crit_pristine[c, a]:
                        crit_pristine[c, a] = threshold
                    continue
            _touch(i, n_group, debt, collateral0, debt_of[i], l_of[i], st_status, st_q, st_debt,
                   st_principal, st_call, st_topup, st_order, st_kind, st_pending, st_acted,
                   st_had_call, st_had_liq, st_loss, st_trigger, touched)
            accrue = False
        m = m_of[i]
        l = l_of[i]
        # Branch-free pass over the lanes (x * 1.0 == x: no accrual at t = 0). A lane
        # open at LTV < m where no crossing can be drawn only has its call ended (the
        # reference's cure branch; a top-up due is then cancelled): done here. The
        # others (an order, LTV >= m, a possible crossing) are marked in ``due``.
        growth = growth_of[i] if accrue else 1.0
        due = 0
        n_closed = 0
        for j in range(_G):
            status = st_status[i, j]
            debt = st_debt[i, j] * growth
            st_debt[i, j] = debt
            st_acted[i, j] = 0
            q = st_q[i, j]
            ltv = debt / (q * price[a, j])
            is_open = status == _OPEN
            quiet = is_open & (ltv < m)
            if crossings:
                level = debt / (q * l)
                far = (_TINY <= level) & (level <= _HUGE) & (bridge_low[a, j] > level * (1.0 + _MARGIN) * bridge_reach[a])
                quiet = quiet & far
            st_call[i, j] = -1 if quiet else st_call[i, j]
            st_topup[i, j] = -1 if quiet else st_topup[i, j]
            due |= ((status == _LIQUIDATING) | (is_open & ~quiet)) << j
            n_closed += status == _CLOSED
            st_trigger[i, j] = _lane_trigger(is_open, debt, q, l)
        if n_closed == _G:
            touched[i] = _DEAD
            continue
        if due != 0:
            loan_key = _mix64(seed_key ^ _U(i))
            has_order = False
            for j in range(n_group):
                if not (due >> j) & 1:
                    continue
                if st_status[i, j] == _LIQUIDATING:
                    st_pending[i, j] = 1
                    st_acted[i, j] = 1
                    requested[c, a, j] += st_order[i, j]
                    has_order = True
                else:
                    v = variance[a, t, group_start + j] if bridge else 0.0
                    if _round_one(i, j, t, path_offset + group_start + j, price[a, j],
                                  previous_price[a, j], m, l, tau_of[i], cure_of[i], fee_of[i],
                                  topup_of[i], loan_key, bridge, v, mode, close_factor,
                                  full_close_ltv, min_liquidation, st_q, st_debt, st_call, st_topup,
                                  st_order, st_kind, st_status, st_acted, st_had_call, st_had_liq,
                                  acc_counts, c):
                        st_pending[i, j] = 1
                        st_acted[i, j] = 1
                        requested[c, a, j] += st_order[i, j]
                        has_order = True
                # After the rules: an idle open lane keeps a trigger price, others none.
                idle = st_status[i, j] == _OPEN and st_acted[i, j] == 0
                st_trigger[i, j] = _lane_trigger(idle, st_debt[i, j], st_q[i, j], l)
            if has_order:
                order_list[c, n_orders] = i
                n_orders += 1
        for j in range(_G):
            crit_touched[c, a, j] = max(crit_touched[c, a, j], st_trigger[i, j])
    order_count[c] = n_orders


@njit(**_jit_no_nrt)
def _sweep_next(c, t, n_group, decide, active, price, price_min, fill, execution,
                asset_of, collateral_of, debt_of, l_of, tau_of, fee_of, mode, close_factor,
                full_close_ltv, min_liquidation, touched, schedule, pristine_threshold,
                st_status, st_q, st_debt, st_principal, st_call, st_topup, st_order,
                st_kind, st_pending, st_acted, st_had_call, st_had_liq, st_loss, st_trigger,
                acc_money, acc_counts, acc_sold, acc_step_money, acc_step_sold, record,
                requested, crit_pristine, crit_touched, order_list, order_count,
                new_order_list, new_order_count):
    """Sweep k >= 2 over chunk ``c``: settle the last round's orders (in loan order),
    then, while rounds may still decide, liquidate the loans the new price pushed over
    their level (a scan in loan order, only where a trigger price was reached; a loan
    only where one of its lanes' trigger price was)."""
    n_assets = requested.shape[1]
    for a in range(n_assets):
        for j in range(_G):
            requested[c, a, j] = 0.0
    for k in range(order_count[c]):
        i = order_list[c, k]
        a = asset_of[i]
        fee = fee_of[i]
        for j in range(n_group):
            if active[j] and st_pending[i, j]:
                st_pending[i, j] = 0
                _settle(i, j, t, a, fee, fill[a, j], execution[a, j], st_q, st_debt,
                        st_principal, st_order, st_kind, st_status, st_loss, acc_money,
                        acc_counts, acc_sold, acc_step_money, acc_step_sold, record, c)
    n_orders = 0
    scan = False
    if decide:
        for a in range(n_assets):
            for j in range(n_group):
                if active[j] and (price[a, j] <= crit_pristine[c, a] or price[a, j] <= crit_touched[c, a, j]):
                    scan = True
    if scan:
        start = c * _LOAN_CHUNK
        stop = min(start + _LOAN_CHUNK, debt_of.shape[0])
        for i in range(start, stop):
            state = touched[i]
            if state == _DEAD:
                continue
            a = asset_of[i]
            if state == _PRISTINE:
                if price_min[a] > pristine_threshold[i]:
                    continue
                _touch(i, n_group, schedule[i], collateral_of[i], debt_of[i], l_of[i], st_status,
                       st_q, st_debt, st_principal, st_call, st_topup, st_order, st_kind,
                       st_pending, st_acted, st_had_call, st_had_liq, st_loss, st_trigger,
                       touched)
            n_near = 0
            for j in range(_G):  # inactive lanes (active 0) never count
                n_near += active[j] & (price[a, j] <= st_trigger[i, j])
            if n_near == 0:
                continue
            l = l_of[i]
            has_order = False
            for j in range(n_group):
                if active[j] and st_status[i, j] == _OPEN and st_acted[i, j] == 0:
                    ltv = st_debt[i, j] / (st_q[i, j] * price[a, j])
                    if ltv >= l:
                        _liquidate(i, j, ltv, price[a, j], tau_of[i], fee_of[i], l, mode,
                                   close_factor, full_close_ltv, min_liquidation, st_q,
                                   st_debt, st_call, st_topup, st_order, st_kind, st_status,
                                   st_had_liq, acc_counts, c)
                        st_pending[i, j] = 1
                        st_acted[i, j] = 1
                        st_trigger[i, j] = -np.inf
                        requested[c, a, j] += st_order[i, j]
                        has_order = True
            if has_order:
                new_order_list[c, n_orders] = i
                n_orders += 1
    new_order_count[c] = n_orders


@njit(**_jit_no_nrt)
def _record_exposure(c, t, n_group, price, asset_of, collateral_of, touched, schedule,
                     st_status, st_q, st_debt, acc_step_money):
    """After the step: debt and collateral value of the chunk's open loan-paths."""
    start = c * _LOAN_CHUNK
    stop = min(start + _LOAN_CHUNK, asset_of.shape[0])
    for i in range(start, stop):
        a = asset_of[i]
        if touched[i] == _PRISTINE:
            debt = schedule[i]
            q = collateral_of[i]
            for j in range(n_group):
                acc_step_money[c, _STEP_OPEN_DEBT, t, j] += debt
                acc_step_money[c, _STEP_COLLATERAL_VALUE, t, j] += q * price[a, j]
            continue
        for j in range(n_group):
            if st_status[i, j] != _CLOSED:
                acc_step_money[c, _STEP_OPEN_DEBT, t, j] += st_debt[i, j]
                acc_step_money[c, _STEP_COLLATERAL_VALUE, t, j] += st_q[i, j] * price[a, j]


@njit(**_jit_no_nrt)
def _horizon(c, n_group, final, asset_of, collateral_of, touched, schedule, st_status, st_q,
             st_debt, st_order, st_had_call, st_had_liq, st_loss, acc_money, unsold,
             loan_loss, loan_calls, loan_liquidated):
    """After step T: unrealised exposure, unsold orders and the per-loan outputs."""
    start = c * _LOAN_CHUNK
    stop = min(start + _LOAN_CHUNK, asset_of.shape[0])
    for i in range(start, stop):
        a = asset_of[i]
        if touched[i] == _PRISTINE:
            debt = schedule[i]
            q = collateral_of[i]
            for j in range(n_group):
                shortfall = debt - q * final[a, j]
                acc_money[c, _UNREALISED, j] += shortfall if shortfall > 0.0 else 0.0
            continue
        total_loss = loan_loss[i]
        n_called = 0
        n_liquidated = 0
        for j in range(n_group):
            status = st_status[i, j]
            if status != _CLOSED:
                shortfall = st_debt[i, j] - st_q[i, j] * final[a, j]
                acc_money[c, _UNREALISED, j] += shortfall if shortfall > 0.0 else 0.0
            if status == _LIQUIDATING:
                unsold[c, a, j] += st_order[i, j]
            total_loss += st_loss[i, j]
            n_called += st_had_call[i, j]
            n_liquidated += st_had_liq[i, j]
        loan_loss[i] = total_loss
        loan_calls[i] += n_called
        loan_liquidated[i] += n_liquidated


@njit(parallel=True, **_jit)
def _evaluate_groups(prices, asset_of, collateral_of, debt_of, growth_of, m_of, l_of, tau_of,
                     cure_of, fee_of, topup_of, seed_key, path_offset, mode, close_factor,
                     full_close_ltv, min_liquidation, max_sell, depth, depth_move, sqrt_law,
                     share, decay, max_rounds, bridge, variance, touched, schedule,
                     pristine_threshold, st_status, st_q, st_debt, st_principal, st_call,
                     st_topup, st_order, st_kind, st_pending, st_acted, st_had_call,
                     st_had_liq, st_loss, st_trigger, acc_money, acc_counts, acc_sold, acc_unsold,
                     acc_step_money, acc_step_sold, requested, crit_pristine, crit_touched,
                     order_lists, order_counts, path_money, path_counts, path_sold,
                     step_sold, step_loss, step_fees, step_open_debt, step_collateral_value,
                     loan_loss, loan_calls, loan_liquidated, path_rounds, path_drawdown,
                     path_unsold, step_impact):
    n_assets = prices.shape[0]
    n_steps = prices.shape[1] - 1
    n_paths = prices.shape[2]
    n_loans = debt_of.shape[0]
    n_chunks = acc_money.shape[0]
    record = step_loss.shape[0] > 0
    permanent = np.zeros((n_assets, _G))
    transient = np.zeros((n_assets, _G))
    price = np.zeros((n_assets, _G))
    previous_price = np.zeros((n_assets, _G))
    worst = np.ones((n_assets, _G))
    fill = np.ones((n_assets, _G))
    execution = np.zeros((n_assets, _G))
    sold_in_step = np.zeros((n_assets, _G))
    total = np.zeros(n_assets)
    price_min = np.zeros(n_assets)
    bridge_min = np.zeros(n_assets)
    bridge_low = np.zeros((n_assets, _G))
    bridge_reach = np.ones(n_assets)
    active = np.zeros(_G, dtype=np.int8)
    deepest = np.zeros(_G, dtype=np.int64)
    rounds_now = np.zeros(_G, dtype=np.int64)
    for group_start in range(0, n_paths, _G):
        n_group = min(_G, n_paths - group_start)
        for c in prange(n_chunks):
            start = c * _LOAN_CHUNK
            stop = min(start + _LOAN_CHUNK, n_loans)
            for i in range(start, stop):
                touched[i] = _PRISTINE
                schedule[i] = debt_of[i]
            acc_money[c] = 0.0
            acc_counts[c] = 0
            acc_sold[c] = 0.0
            acc_unsold[c] = 0.0
            if record:
                acc_step_money[c] = 0.0
                acc_step_sold[c] = 0.0
        permanent[:] = 0.0
        transient[:] = 0.0
        previous_price[:] = 0.0
        worst[:] = 1.0
        deepest[:] = 0
        for t in range(n_steps + 1):
            for a in range(n_assets):
                price_min[a] = np.inf
                bridge_min[a] = np.inf
                v_max = 0.0
                for j in range(n_group):
                    if t >= 1:
                        transient[a, j] = transient[a, j] * decay[a]
                    price[a, j] = prices[a, t, group_start + j] * math.exp(-(permanent[a, j] + transient[a, j]))
                    sold_in_step[a, j] = 0.0
                    price_min[a] = min(price_min[a], price[a, j])
                    if bridge and t >= 1:
                        bridge_low[a, j] = min(price[a, j], previous_price[a, j])
                        bridge_min[a] = min(bridge_min[a], bridge_low[a, j])
                        v_max = max(v_max, variance[a, t, group_start + j])
                bridge_reach[a] = math.exp(math.sqrt(_BRIDGE_REACH * v_max)) * _BRIDGE_SLACK
            for c in prange(n_chunks):
                _sweep_one(c, t, n_group, group_start, path_offset, price, previous_price,
                           price_min, bridge_min, bridge_low, bridge_reach, asset_of, collateral_of,
                           debt_of, growth_of, m_of, l_of, tau_of, cure_of, fee_of, topup_of,
                           seed_key, mode, close_factor, full_close_ltv, min_liquidation,
                           bridge, variance, touched, schedule, pristine_threshold, st_status,
                           st_q, st_debt, st_principal, st_call, st_topup, st_order, st_kind,
                           st_pending, st_acted, st_had_call, st_had_liq, st_loss, st_trigger,
                           acc_counts, requested, crit_pristine, crit_touched, order_lists[0],
                           order_counts[0])
            for j in range(_G):
                active[j] = 1 if j < n_group else 0
                rounds_now[j] = 0
            current = 0
            round_number = 1
            while True:
                # Clearing, per path and asset (the reference's loop head and body).
                any_active = False
                for j in range(n_group):
                    if not active[j]:
                        continue
                    has_orders = False
                    for a in range(n_assets):
                        acc = 0.0
                        for c in range(n_chunks):
                            acc += requested[c, a, j]
                        total[a] = acc
                        if acc > 0.0:
                            has_orders = True
                    if not has_orders:
                        active[j] = 0
                        continue
                    any_active = True
                    rounds_now[j] += 1
                    for a in range(n_assets):
                        fill[a, j] = 1.0
                        execution[a, j] = price[a, j]
                        if total[a] <= 0.0:
                            continue
                        room = max_sell[a] - sold_in_step[a, j]
                        if total[a] <= room:
                            fill[a, j] = 1.0
                            filled = total[a]
                        else:
                            fill[a, j] = room / total[a] if room > 0.0 else 0.0
                            filled = total[a] * fill[a, j]
                        sold_in_step[a, j] = sold_in_step[a, j] + filled
                        # The notional at the path's own (unimpacted) price.
                        ratio = filled * prices[a, t, group_start + j] / depth[a]
                        delta = depth_move[a] * (math.sqrt(ratio) if sqrt_law[a] else ratio)
                        execution[a, j] = price[a, j] * slippage_factor(delta, sqrt_law[a])
                        permanent[a, j] = permanent[a, j] + share[a] * delta
                        transient[a, j] = transient[a, j] + (1.0 - share[a]) * delta
                    for a in range(n_assets):
                        price[a, j] = prices[a, t, group_start + j] * math.exp(-(permanent[a, j] + transient[a, j]))
                if not any_active:
                    break
                round_number += 1
                decide = round_number <= max_rounds
                for a in range(n_assets):
                    price_min[a] = np.inf
                    for j in range(n_group):
                        if active[j]:
                            price_min[a] = min(price_min[a], price[a, j])
                for c in prange(n_chunks):
                    _sweep_next(c, t, n_group, decide, active, price, price_min, fill, execution,
                                asset_of, collateral_of, debt_of, l_of, tau_of, fee_of, mode,
                                close_factor, full_close_ltv, min_liquidation, touched, schedule,
                                pristine_threshold, st_status, st_q, st_debt, st_principal,
                                st_call, st_topup, st_order, st_kind, st_pending, st_acted,
                                st_had_call, st_had_liq, st_loss, st_trigger, acc_money, acc_counts,
                                acc_sold, acc_step_money, acc_step_sold, record, requested,
                                crit_pristine, crit_touched, order_lists[current],
                                order_counts[current], order_lists[1 - current],
                                order_counts[1 - current])
                current = 1 - current
            for j in range(n_group):
                deepest[j] = max(deepest[j], rounds_now[j])
                for a in range(n_assets):
                    previous_price[a, j] = price[a, j]
                    factor = math.exp(-(permanent[a, j] + transient[a, j]))
                    if record:
                        step_impact[t, a, group_start + j] = factor
                    worst[a, j] = factor if factor < worst[a, j] else worst[a, j]
            if record:
                for c in prange(n_chunks):
                    _record_exposure(c, t, n_group, price, asset_of, collateral_of, touched,
                                     schedule, st_status, st_q, st_debt, acc_step_money)
        for c in prange(n_chunks):
            _horizon(c, n_group, previous_price, asset_of, collateral_of, touched, schedule,
                     st_status, st_q, st_debt, st_order, st_had_call, st_had_liq, st_loss,
                     acc_money, acc_unsold, loan_loss, loan_calls, loan_liquidated)
        # Serial reduction in chunk order.
        for j in range(n_group):
            p = group_start + j
            for c in range(n_chunks):
                for k in range(path_money.shape[0]):
                    path_money[k, p] += acc_money[c, k, j]
                for k in range(path_counts.shape[0]):
                    path_counts[k, p] += acc_counts[c, k, j]
                for a in range(n_assets):
                    path_sold[a, p] += acc_sold[c, a, j]
                if record:
                    for t in range(n_steps + 1):
                        step_loss[t, p] += acc_step_money[c, _STEP_LOSS, t, j]
                        step_fees[t, p] += acc_step_money[c, _STEP_FEES, t, j]
                        step_open_debt[t, p] += acc_step_money[c, _STEP_OPEN_DEBT, t, j]
                        step_collateral_value[t, p] += acc_step_money[c, _STEP_COLLATERAL_VALUE, t, j]
                        for a in range(n_assets):
                            step_sold[t, a, p] += acc_step_sold[c, t, a, j]
            path_rounds[p] = deepest[j]
            for a in range(n_assets):
                path_drawdown[a, p] = 1.0 - worst[a, j]
                unsold_total = 0.0
                for c in range(n_chunks):
                    unsold_total += acc_unsold[c, a, j]
                path_unsold[a, p] = unsold_total


def _as_float64(x):
    """Writable C-contiguous float64 (numba compiles read-only arrays separately)."""
    return np.require(x, np.float64, ("C", "W"))


def _as_int64(x):
    return np.require(x, np.int64, ("C", "W"))


def evaluate_coupled(prices, loans, options, seed, path_offset, n_threads, out):
    """Evaluate every loan on one block of paths with market impact and cascades, and
    add the results into ``out`` (a ``CoupledOutputs``).

    Same contract as the reference ``tests/naive_coupled.py`` (bit for bit) and the
    other backends' ``evaluate_coupled``. Releases the GIL while it runs.
    """
    n_assets, n_steps_1, n_paths = prices.shape
    n_loans = loans.debt.shape[0]
    n_chunks = max(1, -(-n_loans // _LOAN_CHUNK))
    record = out.core.step_loss.shape[0] > 0
    steps = n_steps_1 if record else 0
    n_slots = max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS))
    seed_key = _U(mix64(int(seed) & MASK64))
    f64, i64 = _as_float64, _as_int64
    o = options
    variance = f64(o.bridge_variance) if o.bridge else np.zeros((1, 1, 1))
    loans = tuple(i64(x) if k in (0, 7) else f64(x) for k, x in enumerate(loans))
    state = (
        np.zeros(n_loans, dtype=np.int8),  # touched
        np.zeros(n_loans),  # schedule
        np.zeros(n_loans),  # pristine_threshold
        np.zeros((n_loans, _G), dtype=np.int8),  # status
        np.zeros((n_loans, _G)),  # q
        np.zeros((n_loans, _G)),  # debt
        np.zeros((n_loans, _G)),  # principal
        np.zeros((n_loans, _G), dtype=np.int32),  # call_start
        np.zeros((n_loans, _G), dtype=np.int32),  # topup_due
        np.zeros((n_loans, _G)),  # order
        np.zeros((n_loans, _G), dtype=np.int8),  # order_kind
        np.zeros((n_loans, _G), dtype=np.int8),  # pending
        np.zeros((n_loans, _G), dtype=np.int8),  # acted
        np.zeros((n_loans, _G), dtype=np.int8),  # had_call
        np.zeros((n_loans, _G), dtype=np.int8),  # had_liquidation
        np.zeros((n_loans, _G)),  # loss
        np.zeros((n_loans, _G)),  # trigger
    )
    accumulators = (
        np.zeros((n_chunks, cfg.N_MONEY, _G)),
        np.zeros((n_chunks, cfg.N_COUNTS, _G), dtype=np.int64),
        np.zeros((n_chunks, n_assets, _G)),  # sold
        np.zeros((n_chunks, n_assets, _G)),  # unsold
        np.zeros((n_chunks, cfg.N_STEP_MONEY, steps, _G)),
        np.zeros((n_chunks, steps, n_assets, _G)),
        np.zeros((n_chunks, n_assets, _G)),  # requested
        np.zeros((n_chunks, n_assets)),  # crit_pristine
        np.zeros((n_chunks, n_assets, _G)),  # crit_touched
        np.zeros((2, n_chunks, _LOAN_CHUNK), dtype=np.int64),  # order lists
        np.zeros((2, n_chunks), dtype=np.int64),  # order counts
    )
    run_parallel(_evaluate_groups, n_slots, f64(prices), *loans, seed_key, int(path_offset), int(o.mode),
                 float(o.close_factor), float(o.full_close_ltv), float(o.min_liquidation),
                 f64(o.max_sell), f64(o.depth), f64(o.depth_move), i64(o.sqrt_law),
                 f64(o.permanent), f64(o.decay),
                 int(o.max_rounds), bool(o.bridge), variance, *state, *accumulators, *out.core,
                 out.path_rounds, out.path_drawdown, out.path_unsold, out.step_impact)
