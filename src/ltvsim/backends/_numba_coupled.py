"""The coupled kernel (market impact, cascades, liquidation rules, crossings) compiled
with numba (``parallel=True``); ``tests/naive_coupled.py`` is its specification, and
the Cython kernel (``_cython_coupled.pyx``) is the same design, name for name.

Design:

* Paths are independent; the loans of one path interact only through its price. So
  each worker runs whole paths, one at a time (``_run_path``), steps outermost, with
  its own scratch: O(loans) per worker, never O(loans x paths).
* Most loans never come near a trigger. Per asset, loans are ordered once by their call
  guard price (above it, LTV < m holds provably at every step, with the largest debt
  the loan can reach), by descending guard bucket (the guard's float64 bits without
  the low ones; a radix sort, loan index within a bucket). A loan gets a slot, its
  position in that order, when a price of the path first reaches its bucket's top
  (or, with crossings, when a crossing of its liquidation level could be drawn): so
  every loan whose guard the price reaches, and a few more, which is harmless; until
  then the reference's rules leave it as it was, so it is never looked at. The loan
  arrays are permuted into that order once, so activation and sweeps read memory in
  order.
* Sweep 1 visits the live slots: a slot with no call, no order and its price above its
  call guard is skipped (its debt accrues lazily, by the same repeated multiplications);
  the others run the reference's rules. Sweeps k >= 2 visit the "near" slots (their
  liquidation guard within ``_NEAR_SHARE`` of the opening price; a slot leaves the list
  once it is done for the step) unless the price fell below that share, when every
  live slot is scanned.
* Orders of a round are its "entries", numbered as they are made (in the order the
  sweeps list the slots, which is near slot order),
  with keys ``loan << 32 | entry`` sorted (radix), so that the round's requested units
  are added per chunk of ``LOAN_CHUNK`` loans in loan order, then chunk by chunk. A
  round settles in two phases: each slot's sale in entry order (memory read in order),
  recording what it adds to the sums per entry; then the records are added in loan
  order: per-path money is the reference's sum, bit for bit. Per-loan margin-call and
  liquidation counts are kept per slot per worker (integers: any order); nonzero losses
  are logged per path as loans close and added in path order after each round of
  paths, so nothing depends on the thread count.
* Scheduling: numba has no dynamic schedule, so each round's paths are shared among the
  workers beforehand, heaviest first to the least loaded worker (estimated work: the
  loans the path's lowest price reaches). Which worker runs a path changes no result.
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
#: An order entry's record (``_set_adds``): fees, interest, principal, residual,
#: proceeds, debt closed, loss, units sold; and its kind of sale.
_N_ADDS = 8
_SALE_NONE = 0  # nothing sold
_SALE_CLOSED_WITH_LOSS = 1  # a full order filled: closed, maybe with a loss
_SALE_CLOSED = 2  # the proceeds repaid the debt: closed
_SALE_PART = 3  # part of the debt repaid
# What the core rules did to a loan-path (``_slot_round_one``).
_NO_ACTION = 0
_LIQUIDATED = 1
_TOPPED_UP = 2

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


# Upper bound of a debt's growth over the remaining steps, beyond the rounding of the
# repeated multiplications (at most ~30 ulps, far below this).
_GROWTH_SLACK = 1.0 + 1e-13
#: Sweeps k >= 2 visit the "near" slots (liquidation guard at least this share of the
#: step's opening price) while the price stays above that share; else every live slot.
_NEAR_SHARE = 0.9


@njit(inline="always", **_jit_no_nrt)
def _slot_liquidate(s, ltv, price, tau, fee, l, mode, close_factor, full_close_ltv,
               min_liquidation, st_q, st_debt, st_call, st_topup, st_order, st_kind,
               st_status, st_had_liq, acc_counts, c):
    """Put up a liquidation order sized at ``price`` (reference ``_liquidate``)."""
    acc_counts[c, _LIQUIDATIONS] += 1
    st_had_liq[s] = 1
    st_call[s] = -1
    st_topup[s] = -1
    q = st_q[s]
    debt = st_debt[s]
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
    st_order[s] = q if full else quantity
    st_kind[s] = _FULL_ORDER if full else _PART_ORDER
    st_status[s] = _LIQUIDATING


@njit(inline="always", **_jit_no_nrt)
def _chunk(loan_p, s):
    """The loan chunk of slot ``s``'s loan (its sums' row)."""
    return loan_p[s] // _LOAN_CHUNK


@njit(inline="always", **_jit_no_nrt)
def _loan_key(seed_key, loan_p, s):
    """The draw key of slot ``s``'s loan."""
    return _mix64(seed_key ^ _U(loan_p[s]))


@njit(inline="always", **_jit_no_nrt)
def _slot_round_one(s, t, path, price, previous_price, m_p, l_p, tau_p, cure_p, fee_p, topup_p,
                    loan_p, seed_key, bridge, variance, mode, close_factor, full_close_ltv,
                    min_liquidation, st_q, st_debt, st_call, st_topup, st_order, st_kind,
                    st_status, st_had_call, st_had_liq, acc_counts):
    """The core rules of one open loan-path at the step's opening price (reference
    ``_round_one``): ``_LIQUIDATED``, ``_TOPPED_UP`` or ``_NO_ACTION``. Terms only some
    outcomes need are read in those branches (each is one more cache line)."""
    m = m_p[s]
    l = l_p[s]
    q = st_q[s]
    debt = st_debt[s]
    ltv = debt / (q * price)
    if st_topup[s] == t:
        st_topup[s] = -1
        if ltv >= m:
            st_q[s] = debt / (tau_p[s] * price)
            st_call[s] = -1
            acc_counts[_chunk(loan_p, s), _TOPUPS] += 1
            return _TOPPED_UP
    liquidate = False
    if bridge and t >= 1 and ltv < l:
        previous_ltv = debt / (q * previous_price)
        if previous_ltv < l and variance > 0.0:
            level = debt / (q * l)
            a = math.log(previous_price / level) * math.log(price / level)
            probability = math.exp(-2.0 * a / variance)
            liquidate = _bridge_uniform(_loan_key(seed_key, loan_p, s), path, t) < probability
    if liquidate:
        pass
    elif ltv >= l:
        liquidate = True
    elif ltv >= m:
        if st_call[s] < 0:
            st_call[s] = t
            st_had_call[s] = 1
            acc_counts[_chunk(loan_p, s), _CALLS] += 1
            # Without a branch: the draw is a coin flip no predictor can learn.
            draw = _uniform(_loan_key(seed_key, loan_p, s), path, t)
            st_topup[s] = t + 1 if draw < topup_p[s] else -1
        else:
            cure = cure_p[s]
            if cure >= 1 and t - st_call[s] >= cure:
                liquidate = True
    else:
        st_call[s] = -1
        st_topup[s] = -1
    if liquidate:
        _slot_liquidate(s, ltv, price, tau_p[s], fee_p[s], l, mode, close_factor, full_close_ltv,
                        min_liquidation, st_q, st_debt, st_call, st_topup, st_order, st_kind,
                        st_status, st_had_liq, acc_counts, _chunk(loan_p, s))
        return _LIQUIDATED
    return _NO_ACTION


@njit(inline="always", **_jit_no_nrt)
def _slot_settle(s, fee, fill, execution, e, st_q, st_debt, st_principal, st_order, st_kind,
                 st_status, entry_sale, entry_adds, log_slot, log_loss, n_log):
    """Sell this round's fill of the loan-path's order at ``execution`` (reference
    ``_settle``): the slot's new state, and what the sale adds to the path's sums as
    order entry ``e`` (``_add_settlement`` adds them in loan order)."""
    debt = st_debt[s]
    principal = st_principal[s]
    q = st_q[s]
    interest = debt - principal
    if interest < 0.0:
        interest = 0.0
    if st_kind[s] == _FULL_ORDER and fill == 1.0:
        proceeds = q * execution
        fee_due = fee * debt
        fee_paid = proceeds if proceeds < fee_due else fee_due
        rest = proceeds - fee_paid
        interest_paid = rest if rest < interest else interest
        rest = rest - interest_paid
        principal_paid = rest if rest < principal else principal
        residual = rest - principal_paid
        loss = (interest - interest_paid) + (principal - principal_paid)
        _set_adds(entry_adds, e, fee_paid, interest_paid, principal_paid, residual, proceeds,
                  interest + principal, loss, q)
        entry_sale[e] = _SALE_CLOSED_WITH_LOSS
        if loss != 0.0:  # logged for the merge in path order
            k = n_log[0]
            log_slot[k] = s
            log_loss[k] = loss
            n_log[0] = k + 1
        st_status[s] = _CLOSED
        return
    x = st_order[s] if fill == 1.0 else st_order[s] * fill
    if x <= 0.0:
        entry_sale[e] = _SALE_NONE  # nothing sold this round: the whole order waits
        return
    proceeds = x * execution
    repaid = proceeds / (1.0 + fee)
    if repaid >= debt:
        fee_paid = fee * debt
        residual = proceeds - fee_paid - interest - principal
        _set_adds(entry_adds, e, fee_paid, interest, principal, residual, proceeds,
                  interest + principal, 0.0, x)
        entry_sale[e] = _SALE_CLOSED
        st_status[s] = _CLOSED
        return
    fee_paid = fee * repaid
    interest_paid = repaid if repaid < interest else interest
    principal_paid = repaid - interest_paid
    st_debt[s] = debt - repaid
    remaining_principal = principal - principal_paid
    st_principal[s] = remaining_principal if remaining_principal > 0.0 else 0.0
    st_q[s] = q - x
    _set_adds(entry_adds, e, fee_paid, interest_paid, principal_paid, 0.0, proceeds, repaid, 0.0,
              x)
    entry_sale[e] = _SALE_PART
    if fill == 1.0:
        st_status[s] = _OPEN
        st_order[s] = 0.0
    else:
        st_order[s] = st_order[s] - x


@njit(inline="always", **_jit_no_nrt)
def _set_adds(entry_adds, e, fees, interest, principal, residual, proceeds, debt_closed, loss,
              sold):
    """Entry ``e``'s record: what its sale adds to each sum (see ``_N_ADDS``)."""
    entry_adds[e, 0] = fees
    entry_adds[e, 1] = interest
    entry_adds[e, 2] = principal
    entry_adds[e, 3] = residual
    entry_adds[e, 4] = proceeds
    entry_adds[e, 5] = debt_closed
    entry_adds[e, 6] = loss
    entry_adds[e, 7] = sold


@njit(inline="always", **_jit_no_nrt)
def _add_settlement(e, t, a, c, entry_sale, entry_adds, acc_money, acc_counts, acc_sold,
                    acc_step_money, acc_step_sold, record):
    """Add order entry ``e``'s sale to chunk ``c``'s sums (called in loan order): the
    fields in the order the reference adds them."""
    sale = entry_sale[e]
    if sale == _SALE_NONE:
        return
    acc_money[c, _FEES] += entry_adds[e, 0]
    acc_money[c, _INTEREST] += entry_adds[e, 1]
    acc_money[c, _PRINCIPAL] += entry_adds[e, 2]
    acc_money[c, _RESIDUAL] += entry_adds[e, 3]
    acc_money[c, _PROCEEDS] += entry_adds[e, 4]
    acc_money[c, _DEBT_CLOSED] += entry_adds[e, 5]
    acc_money[c, _LOSS] += entry_adds[e, 6]
    if record:
        if sale == _SALE_CLOSED_WITH_LOSS:
            acc_step_money[c, _STEP_LOSS, t] += entry_adds[e, 6]
        acc_step_money[c, _STEP_FEES, t] += entry_adds[e, 0]
        acc_step_sold[c, t, a] += entry_adds[e, 7]
    acc_sold[c, a] += entry_adds[e, 7]
    if sale != _SALE_PART:
        acc_counts[c, _FULL] += 1


@njit(inline="always", **_jit_no_nrt)
def _catch_up(s, t, growth, st_debt, st_debt_step):
    """Accrue a slot's debt to step ``t`` lazily: the same repeated multiplication the
    reference does step by step."""
    d = st_debt[s]
    k = st_debt_step[s]
    while k < t:
        d = d * growth
        k += 1
    st_debt[s] = d
    st_debt_step[s] = t


@njit(inline="always", **_jit_no_nrt)
def _refresh_guards(s, gmax_p, m_p, l_p, st_q, st_debt, st_cg, st_lg):
    """A slot's call and liquidation guard prices for its present debt and collateral:
    above them its LTV is provably below m (resp. l) for every later step."""
    bound = st_debt[s] * gmax_p[s] * _GROWTH_SLACK
    q = st_q[s]
    st_cg[s] = _trigger_price(bound, q, m_p[s])
    st_lg[s] = _trigger_price(bound, q, l_p[s])


@njit(parallel=True, **_jit_no_nrt)
def _loan_guards(collateral_of, debt_of, gmax_of, m_of, l_of, cg_key, lg_key):
    for i in prange(debt_of.shape[0]):
        bound = debt_of[i] * gmax_of[i] * _GROWTH_SLACK
        cg_key[i] = _trigger_price(bound, collateral_of[i], m_of[i])
        lg_key[i] = _trigger_price(bound, collateral_of[i], l_of[i])


_SLOT_BITS = 32
_SLOT_MASK = (1 << 32) - 1


@njit(inline="always", **_jit_no_nrt)
def _pack(i, s):
    """A pending order's key: sorting keys sorts by loan index; the slot (or the order
    entry) rides along."""
    return (i << _SLOT_BITS) | s


@njit(inline="always", **_jit_no_nrt)
def _push(pending, n_pending, s, loan_p, asset_p, st_order, entry_slot, entry_asset,
          entry_order):
    """Slot ``s``'s order as the round's entry ``n_pending``: its key sorts by loan.
    Returns the new ``n_pending``."""
    pending[n_pending] = _pack(loan_p[s], n_pending)
    entry_slot[n_pending] = s
    entry_asset[n_pending] = asset_p[s]
    entry_order[n_pending] = st_order[s]
    return n_pending + 1


_RADIX_BITS = 11


@njit(**_jit_no_nrt)
def _sort_prefix(keys, n, tmp, counts, loan_bits):
    """Sort ``keys[:n]`` (``_pack``ed, distinct loans) by loan index, in place: insertion
    sort when short, else least-significant-digit radix sort through ``tmp``."""
    if n < 48:
        for k in range(1, n):
            key = keys[k]
            j = k - 1
            while j >= 0 and keys[j] > key:
                keys[j + 1] = keys[j]
                j -= 1
            keys[j + 1] = key
        return
    radix = 1 << _RADIX_BITS
    src = keys
    dst = tmp
    shift = _SLOT_BITS
    while shift < _SLOT_BITS + loan_bits:
        for d in range(radix):
            counts[d] = 0
        for k in range(n):
            counts[(src[k] >> shift) & (radix - 1)] += 1
        running = 0
        for d in range(radix):
            c = counts[d]
            counts[d] = running
            running += c
        for k in range(n):
            d = (src[k] >> shift) & (radix - 1)
            dst[counts[d]] = src[k]
            counts[d] += 1
        src, dst = dst, src
        shift += _RADIX_BITS
    if src is not keys:
        for k in range(n):
            keys[k] = src[k]


@njit(**_jit_no_nrt)
def _chunked_totals(pending, n_pending, entry_asset, entry_order, total, part):
    """Requested units per asset: per chunk in loan order, then chunk by chunk (the
    reference's order; ``pending`` holds the entries' keys, sorted)."""
    n_assets = total.shape[0]
    for a in range(n_assets):
        total[a] = 0.0
        part[a] = 0.0
    chunk = -1
    for k in range(n_pending):
        i = pending[k] >> _SLOT_BITS
        e = pending[k] & _SLOT_MASK
        c = i // _LOAN_CHUNK
        if c != chunk:
            if chunk >= 0:
                for a in range(n_assets):
                    total[a] += part[a]
                    part[a] = 0.0
            chunk = c
        part[entry_asset[e]] += entry_order[e]
    if chunk >= 0:
        for a in range(n_assets):
            total[a] += part[a]


@njit(inline="always", **_jit_no_nrt)
def _activate(s, collateral_p, debt_p, cg_p, lg_p, is_active, alive, n_alive, act_list, n_act,
              st_status, st_q, st_debt, st_debt_step, st_principal, st_call, st_topup,
              st_acted_step, st_had_call, st_had_liq, st_cg, st_lg):
    """Open slot ``s`` (the loan at that position of the activation order) as the
    reference has it before it is first touched: its debt not accrued yet (lazily).
    The order, its kind and the top-up flag are written before they are read."""
    is_active[s] = 1
    st_status[s] = _OPEN
    st_q[s] = collateral_p[s]
    st_debt[s] = debt_p[s]
    st_debt_step[s] = 0
    st_principal[s] = debt_p[s]
    st_call[s] = -1
    st_topup[s] = -1
    st_acted_step[s] = -1
    st_had_call[s] = 0
    st_had_liq[s] = 0
    st_cg[s] = cg_p[s]
    st_lg[s] = lg_p[s]
    alive[n_alive] = s
    act_list[n_act] = s


# Not inlined: Python passes a call with over 30 arguments as *args, which numba's
# inliner rejects; a few calls per step and round, so the call costs nothing.
@njit(**_jit_no_nrt)
def _activate_down_to(a, price, order_start, walk_p, c_ptr, collateral_p, debt_p, cg_p, lg_p,
                      is_active, alive, n_alive, act_list, n_act, fresh, n_fresh, list_fresh,
                      st_status, st_q, st_debt, st_debt_step, st_principal, st_call, st_topup,
                      st_acted_step, st_had_call, st_had_liq, st_cg, st_lg):
    """Give a slot to each loan of asset ``a`` that ``price`` brings to its call guard,
    walking the guard order on from where the path's last walk stopped; list the new
    slots in ``fresh`` if ``list_fresh``. Returns the new ``n_alive, n_act, n_fresh``.

    ``walk_p`` (bucket tops) is non-increasing within an asset and at least each guard,
    so the walk reaches every loan whose guard ``price`` reaches (and maybe a few more).
    """
    stop = order_start[a + 1]
    s = c_ptr[a]
    while s < stop and walk_p[s] >= price:
        if is_active[s] == 0:
            _activate(s, collateral_p, debt_p, cg_p, lg_p, is_active, alive, n_alive, act_list,
                      n_act, st_status, st_q, st_debt, st_debt_step, st_principal, st_call,
                      st_topup, st_acted_step, st_had_call, st_had_liq, st_cg, st_lg)
            n_alive += 1
            n_act += 1
            if list_fresh:
                fresh[n_fresh] = s
                n_fresh += 1
        s += 1
    c_ptr[a] = s
    return n_alive, n_act, n_fresh


@njit(inline="always", **_jit_no_nrt)
def _activate_crossings(a, reach, low, order_start, l_rank, l_walk, l_ptr, collateral_p, debt_p,
                        cg_p, lg_p, is_active, alive, n_alive, act_list, n_act, st_status, st_q,
                        st_debt, st_debt_step, st_principal, st_call, st_topup, st_acted_step,
                        st_had_call, st_had_liq, st_cg, st_lg):
    """Give a slot to each loan of asset ``a`` whose liquidation level a crossing could
    reach this step (its guard times ``reach`` at least the step's ``low``), walking the
    liquidation-guard order on from where the path's last walk stopped. Returns the new
    ``n_alive, n_act``."""
    stop = order_start[a + 1]
    k = l_ptr[a]
    while k < stop and l_walk[k] * reach >= low:
        s = l_rank[k]
        if is_active[s] == 0:
            _activate(s, collateral_p, debt_p, cg_p, lg_p, is_active, alive, n_alive, act_list,
                      n_act, st_status, st_q, st_debt, st_debt_step, st_principal, st_call,
                      st_topup, st_acted_step, st_had_call, st_had_liq, st_cg, st_lg)
            n_alive += 1
            n_act += 1
        k += 1
    l_ptr[a] = k
    return n_alive, n_act


@njit(**_jit_no_nrt)
def _run_path(jp, path, prices, asset_of, collateral_of, debt_of, growth_of, position,
              debt_horizon, mode, close_factor, full_close_ltv, min_liquidation, max_sell,
              depth, depth_move, sqrt_law, share, decay, max_rounds, bridge, variance,
              full_horizon, loan_p, asset_p, collateral_p, debt_p, growth_p, m_p, l_p, tau_p,
              cure_p, fee_p, topup_p, gmax_p, cg_p, lg_p, seed_key, walk_p, l_rank, l_walk,
              order_start,
              is_active, alive, act_list, near, pending, fresh, due, sort_tmp, radix_counts,
              per_asset, c_ptr, l_ptr, st_status, st_q, st_debt, st_debt_step, st_principal,
              st_call, st_topup, st_order, st_kind, st_acted_step, st_had_call, st_had_liq,
              st_cg, st_lg, acc_money, acc_counts, acc_sold, acc_step_money,
              acc_step_sold, schedule, entry_slot, entry_asset, entry_order, entry_sale,
              entry_adds, path_money, path_counts, path_sold, step_sold, step_loss, step_fees,
              step_open_debt, step_collateral_value, path_rounds, path_drawdown, path_unsold,
              step_impact, calls_p, liquidated_p, log_slot, log_loss, log_row, log_count,
              n_log):
    """Every loan on path ``jp`` of the block (global index ``path``).

    Slots are positions in the activation order: per asset, loans by descending call
    guard bucket. A loan gets its slot when a price of the path reaches its bucket (or,
    with crossings, when a crossing of its liquidation level could be drawn); before
    that the reference's rules provably leave it untouched. Per-path sums are added per
    chunk of loans in event order, then chunk by chunk, as the reference does. Losses
    go to row ``log_row`` of the loss log as loans close (``n_log[0]`` of them so far).
    """
    n_assets = prices.shape[0]
    n_steps = prices.shape[1] - 1
    n_loans = debt_of.shape[0]
    n_chunks = acc_money.shape[0]
    loan_bits = 1
    while (1 << loan_bits) < n_loans:
        loan_bits += 1
    record = step_loss.shape[0] > 0
    path_log_slot = log_slot[log_row]
    path_log_loss = log_loss[log_row]
    n_log[0] = 0
    acc_money[:] = 0.0
    acc_counts[:] = 0
    acc_sold[:] = 0.0
    if record:
        acc_step_money[:] = 0.0
        acc_step_sold[:] = 0.0
        for i in range(n_loans):
            schedule[i] = debt_of[i]
    permanent = per_asset[0]
    transient = per_asset[1]
    price = per_asset[2]
    previous_price = per_asset[3]
    low = per_asset[4]
    reach = per_asset[5]
    near_price = per_asset[6]
    worst = per_asset[7]
    fill = per_asset[8]
    execution = per_asset[9]
    sold_in_step = per_asset[10]
    total = per_asset[11]
    part = per_asset[12]
    unsold = per_asset[13]
    for a in range(n_assets):
        permanent[a] = 0.0
        transient[a] = 0.0
        previous_price[a] = 0.0
        reach[a] = 1.0
        worst[a] = 1.0
        unsold[a] = 0.0
        c_ptr[a] = order_start[a]
        l_ptr[a] = order_start[a]
    n_alive = 0
    n_act = 0
    deepest = 0
    for t in range(n_steps + 1):
        crossings = bridge and t >= 1
        for a in range(n_assets):
            if t >= 1:
                transient[a] = transient[a] * decay[a]
            price[a] = prices[a, t, jp] * math.exp(-(permanent[a] + transient[a]))
            sold_in_step[a] = 0.0
            near_price[a] = price[a] * _NEAR_SHARE
            if crossings:
                low[a] = min(price[a], previous_price[a])
                reach[a] = math.exp(math.sqrt(_BRIDGE_REACH * variance[a, t, jp])) * _BRIDGE_SLACK
        # Activation: the price reached these loans' call guards (or, with crossings, a
        # crossing of their liquidation level could be drawn).
        for a in range(n_assets):
            n_alive, n_act, _ = _activate_down_to(
                a, price[a], order_start, walk_p, c_ptr, collateral_p, debt_p, cg_p, lg_p,
                is_active, alive, n_alive, act_list, n_act, fresh, 0, False, st_status, st_q,
                st_debt, st_debt_step, st_principal, st_call, st_topup, st_acted_step,
                st_had_call, st_had_liq, st_cg, st_lg)
            if crossings:
                n_alive, n_act = _activate_crossings(
                    a, reach[a], low[a], order_start, l_rank, l_walk, l_ptr, collateral_p, debt_p,
                    cg_p, lg_p, is_active, alive, n_alive, act_list, n_act, st_status, st_q,
                    st_debt, st_debt_step, st_principal, st_call, st_topup, st_acted_step,
                    st_had_call, st_had_liq, st_cg, st_lg)
        # Sweep 1 over the live slots (closed ones leave the list): the slots the rules
        # may act on go to the due list.
        n_pending = 0
        n_near = 0
        kept = 0
        n_due = 0
        for k in range(n_alive):
            s = alive[k]
            status = st_status[s]
            if status == _CLOSED:
                continue
            alive[kept] = s
            kept += 1
            a = asset_p[s]
            if (status == _OPEN and st_call[s] < 0 and st_topup[s] < 0 and price[a] > st_cg[s]
                    and (not crossings or low[a] > st_lg[s] * reach[a])):
                # LTV < m, no call, no crossing possible: the rules change nothing.
                if st_lg[s] >= near_price[a]:
                    near[n_near] = s
                    n_near += 1
                continue
            due[n_due] = s
            n_due += 1
        n_alive = kept
        # Debts first, in a loop of their own: the chains of multiplications of
        # different slots then overlap instead of each stalling the rules.
        for k in range(n_due):
            s = due[k]
            _catch_up(s, t, growth_p[s], st_debt, st_debt_step)
        for k in range(n_due):
            s = due[k]
            a = asset_p[s]
            if st_status[s] == _LIQUIDATING:
                st_acted_step[s] = t
                n_pending = _push(pending, n_pending, s, loan_p, asset_p, st_order, entry_slot,
                                  entry_asset, entry_order)
                continue
            v = variance[a, t, jp] if bridge else 0.0
            outcome = _slot_round_one(s, t, path, price[a], previous_price[a], m_p, l_p, tau_p,
                                      cure_p, fee_p, topup_p, loan_p, seed_key, bridge, v, mode,
                                      close_factor, full_close_ltv, min_liquidation, st_q,
                                      st_debt, st_call, st_topup, st_order, st_kind, st_status,
                                      st_had_call, st_had_liq, acc_counts)
            if outcome == _LIQUIDATED:
                st_acted_step[s] = t
                n_pending = _push(pending, n_pending, s, loan_p, asset_p, st_order, entry_slot,
                                  entry_asset, entry_order)
            elif outcome == _TOPPED_UP:  # more collateral, lower guards
                st_acted_step[s] = t
                _refresh_guards(s, gmax_p, m_p, l_p, st_q, st_debt, st_cg, st_lg)
            elif st_lg[s] >= near_price[a]:
                near[n_near] = s
                n_near += 1
        _sort_prefix(pending, n_pending, sort_tmp, radix_counts, loan_bits)
        rounds = 0
        round_number = 1
        while True:
            _chunked_totals(pending, n_pending, entry_asset, entry_order, total, part)
            has_orders = False
            for a in range(n_assets):
                if total[a] > 0.0:
                    has_orders = True
            if not has_orders:
                break
            # Clearing (the reference's, per asset).
            rounds += 1
            for a in range(n_assets):
                fill[a] = 1.0
                execution[a] = price[a]
                if total[a] <= 0.0:
                    continue
                room = max_sell[a] - sold_in_step[a]
                if total[a] <= room:
                    fill[a] = 1.0
                    filled = total[a]
                else:
                    fill[a] = room / total[a] if room > 0.0 else 0.0
                    filled = total[a] * fill[a]
                sold_in_step[a] = sold_in_step[a] + filled
                ratio = filled * prices[a, t, jp] / depth[a]
                delta = depth_move[a] * (math.sqrt(ratio) if sqrt_law[a] else ratio)
                execution[a] = price[a] * slippage_factor(delta, sqrt_law[a])
                permanent[a] = permanent[a] + share[a] * delta
                transient[a] = transient[a] + (1.0 - share[a]) * delta
            for a in range(n_assets):
                price[a] = prices[a, t, jp] * math.exp(-(permanent[a] + transient[a]))
            round_number += 1
            decide = round_number <= max_rounds
            # Settle the last round's orders: each slot in the order the entries were
            # made (near slot order, so memory is read in order), then their sums in
            # loan order.
            for e in range(n_pending):
                s = entry_slot[e]
                a = entry_asset[e]
                before = st_status[s]
                _slot_settle(s, fee_p[s], fill[a], execution[a], e, st_q, st_debt, st_principal,
                             st_order, st_kind, st_status, entry_sale, entry_adds, path_log_slot,
                             path_log_loss, n_log)
                if st_status[s] == _OPEN and before == _LIQUIDATING:
                    _refresh_guards(s, gmax_p, m_p, l_p, st_q, st_debt, st_cg, st_lg)
            for k in range(n_pending):
                e = pending[k] & _SLOT_MASK
                _add_settlement(e, t, entry_asset[e], (pending[k] >> _SLOT_BITS) // _LOAN_CHUNK,
                                entry_sale, entry_adds, acc_money, acc_counts, acc_sold,
                                acc_step_money, acc_step_sold, record)
            n_pending = 0
            if not decide:
                continue
            # Loans the new price brought near: fresh slots, then the near list.
            n_fresh = 0
            for a in range(n_assets):
                n_alive, n_act, n_fresh = _activate_down_to(
                    a, price[a], order_start, walk_p, c_ptr, collateral_p, debt_p, cg_p, lg_p,
                    is_active, alive, n_alive, act_list, n_act, fresh, n_fresh, True, st_status,
                    st_q, st_debt, st_debt_step, st_principal, st_call, st_topup, st_acted_step,
                    st_had_call, st_had_liq, st_cg, st_lg)
            rescan = False
            for a in range(n_assets):
                if price[a] < near_price[a]:
                    rescan = True
            if rescan:
                for a in range(n_assets):
                    near_price[a] = min(near_price[a], price[a] * _NEAR_SHARE)
                n_near = 0
                for k in range(n_alive):
                    s = alive[k]
                    if st_status[s] == _OPEN and st_acted_step[s] != t and st_lg[s] >= near_price[asset_p[s]]:
                        near[n_near] = s
                        n_near += 1
            else:
                for k in range(n_fresh):
                    s = fresh[k]
                    if st_lg[s] >= near_price[asset_p[s]]:
                        near[n_near] = s
                        n_near += 1
            kept = 0
            for k in range(n_near):
                s = near[k]
                if st_status[s] != _OPEN or st_acted_step[s] == t:
                    continue  # done for this step: it leaves the list
                near[kept] = s
                kept += 1
                a = asset_p[s]
                if price[a] > st_lg[s]:
                    continue
                _catch_up(s, t, growth_p[s], st_debt, st_debt_step)
                ltv = st_debt[s] / (st_q[s] * price[a])
                if ltv >= l_p[s]:
                    _slot_liquidate(s, ltv, price[a], tau_p[s], fee_p[s], l_p[s], mode,
                                    close_factor, full_close_ltv, min_liquidation, st_q, st_debt,
                                    st_call, st_topup, st_order, st_kind, st_status, st_had_liq,
                                    acc_counts, _chunk(loan_p, s))
                    st_acted_step[s] = t
                    n_pending = _push(pending, n_pending, s, loan_p, asset_p, st_order,
                                      entry_slot, entry_asset, entry_order)
            n_near = kept
            _sort_prefix(pending, n_pending, sort_tmp, radix_counts, loan_bits)
        deepest = max(deepest, rounds)
        for a in range(n_assets):
            previous_price[a] = price[a]
            factor = math.exp(-(permanent[a] + transient[a]))
            if record:
                step_impact[t, a, jp] = factor
            worst[a] = factor if factor < worst[a] else worst[a]
        if record:
            for i in range(n_loans):
                c = i // _LOAN_CHUNK
                a = asset_of[i]
                if t >= 1:
                    schedule[i] = schedule[i] * growth_of[i]
                s = position[i]
                if is_active[s] == 0:
                    acc_step_money[c, _STEP_OPEN_DEBT, t] += schedule[i]
                    acc_step_money[c, _STEP_COLLATERAL_VALUE, t] += collateral_of[i] * price[a]
                elif st_status[s] != _CLOSED:
                    _catch_up(s, t, growth_p[s], st_debt, st_debt_step)
                    acc_step_money[c, _STEP_OPEN_DEBT, t] += st_debt[s]
                    acc_step_money[c, _STEP_COLLATERAL_VALUE, t] += st_q[s] * price[a]
    # After step T. A loan without a slot at the final price has LTV < m there; with
    # m <= 1 its shortfall is 0. Give the others their slots, then add shortfalls and
    # unsold orders per chunk in loan order (``full_horizon``, some m > 1: every loan).
    for a in range(n_assets):
        n_alive, n_act, _ = _activate_down_to(
            a, previous_price[a], order_start, walk_p, c_ptr, collateral_p, debt_p, cg_p, lg_p,
            is_active, alive, n_alive, act_list, n_act, fresh, 0, False, st_status, st_q,
            st_debt, st_debt_step, st_principal, st_call, st_topup, st_acted_step, st_had_call,
            st_had_liq, st_cg, st_lg)
    if full_horizon:
        for i in range(n_loans):
            a = asset_of[i]
            s = position[i]
            if is_active[s] == 0:
                shortfall = debt_horizon[i] - collateral_of[i] * previous_price[a]
            elif st_status[s] != _CLOSED:
                _catch_up(s, n_steps, growth_p[s], st_debt, st_debt_step)
                shortfall = st_debt[s] - st_q[s] * previous_price[a]
            else:
                continue
            acc_money[i // _LOAN_CHUNK, _UNREALISED] += shortfall if shortfall > 0.0 else 0.0
    # One pass over the path's slots: per-slot counts (integers: any order), the slot
    # released, and the slots that may owe a shortfall or hold an unsold order.
    n_short = 0
    for k in range(n_act):
        s = act_list[k]
        calls_p[s] += st_had_call[s]
        liquidated_p[s] += st_had_liq[s]
        is_active[s] = 0
        status = st_status[s]
        if status == _OPEN and not full_horizon and previous_price[asset_p[s]] > st_cg[s]:
            continue  # above its call guard, so LTV < m <= 1: no shortfall
        if status != _CLOSED:
            _catch_up(s, n_steps, growth_p[s], st_debt, st_debt_step)
            shortfall = st_debt[s] - st_q[s] * previous_price[asset_p[s]]
            if shortfall > 0.0 or st_status[s] == _LIQUIDATING:
                pending[n_short] = _pack(loan_p[s], s)
                n_short += 1
    _sort_prefix(pending, n_short, sort_tmp, radix_counts, loan_bits)
    for a in range(n_assets):
        part[a] = 0.0
    chunk = -1
    for k in range(n_short):
        i = pending[k] >> _SLOT_BITS
        s = pending[k] & _SLOT_MASK
        a = asset_p[s]
        c = i // _LOAN_CHUNK
        if not full_horizon:
            shortfall = st_debt[s] - st_q[s] * previous_price[a]
            acc_money[c, _UNREALISED] += shortfall if shortfall > 0.0 else 0.0
        if st_status[s] == _LIQUIDATING:
            if c != chunk:
                for b in range(n_assets):
                    unsold[b] += part[b]
                    part[b] = 0.0
                chunk = c
            part[a] += st_order[s]
    for b in range(n_assets):
        unsold[b] += part[b]
    log_count[log_row] = n_log[0]  # the path's losses, for the merge in path order
    # The path's sums, chunk by chunk.
    for c in range(n_chunks):
        for k in range(path_money.shape[0]):
            path_money[k, jp] += acc_money[c, k]
        for a in range(n_assets):
            path_sold[a, jp] += acc_sold[c, a]
        for k in range(path_counts.shape[0]):
            path_counts[k, jp] += acc_counts[c, k]
        if record:
            for t in range(n_steps + 1):
                step_loss[t, jp] += acc_step_money[c, _STEP_LOSS, t]
                step_fees[t, jp] += acc_step_money[c, _STEP_FEES, t]
                step_open_debt[t, jp] += acc_step_money[c, _STEP_OPEN_DEBT, t]
                step_collateral_value[t, jp] += acc_step_money[c, _STEP_COLLATERAL_VALUE, t]
                for a in range(n_assets):
                    step_sold[t, a, jp] += acc_step_sold[c, t, a]
    path_rounds[jp] = deepest
    for a in range(n_assets):
        path_drawdown[a, jp] = 1.0 - worst[a]
        path_unsold[a, jp] = unsold[a]


@njit(parallel=True, **_jit)
def _evaluate_paths(prices, asset_of, collateral_of, debt_of, growth_of, position, debt_horizon,
                    path_offset, mode, close_factor, full_close_ltv, min_liquidation, max_sell,
                    depth, depth_move, sqrt_law, share, decay, max_rounds, bridge, variance,
                    full_horizon, permuted, seed_key, walk, l_rank, l_walk, order_start,
                    per_round, launch,
                    worker_start, scratch, state, accumulators, schedule, entries, path_money,
                    path_counts, path_sold, step_sold, step_loss, step_fees, step_open_debt,
                    step_collateral_value, path_rounds, path_drawdown, path_unsold, step_impact,
                    loss_p, calls_p, liquidated_p, log_slot, log_loss, log_count):
    """Paths in rounds of ``per_round`` consecutive paths: worker ``w`` runs its share of
    the round (``launch[worker_start[r, w]:worker_start[r, w + 1]]``) with its own
    scratch; after each round the losses are added into ``loss_p`` in path order."""
    n_paths = prices.shape[2]
    n_assets = prices.shape[0]
    n_workers = scratch[0].shape[0]
    per_asset = np.zeros((n_workers, 14, n_assets))
    c_ptr = np.zeros((n_workers, n_assets), dtype=np.int64)
    l_ptr = np.zeros((n_workers, n_assets), dtype=np.int64)
    radix_counts = np.zeros((n_workers, 1 << _RADIX_BITS), dtype=np.int64)
    # The running path's count of logged losses (a cache line per worker: it is written
    # as loans close).
    n_log = np.zeros((n_workers, 8), dtype=np.int64)
    for r in range(worker_start.shape[0]):
        base = r * per_round
        n_rows = min(per_round, n_paths - base)
        for w in prange(n_workers):
            for k in range(worker_start[r, w], worker_start[r, w + 1]):
                jp = launch[k]
                _run_path(jp, path_offset + jp, prices, asset_of, collateral_of, debt_of, growth_of,
                          position, debt_horizon, mode, close_factor, full_close_ltv,
                          min_liquidation, max_sell, depth, depth_move, sqrt_law, share, decay,
                          max_rounds, bridge, variance, full_horizon, permuted[0], permuted[1],
                          permuted[2], permuted[3], permuted[4], permuted[5], permuted[6],
                          permuted[7], permuted[8], permuted[9], permuted[10], permuted[11],
                          permuted[12], permuted[13], seed_key, walk, l_rank, l_walk,
                          order_start, scratch[0][w], scratch[1][w], scratch[2][w], scratch[3][w],
                          scratch[4][w], scratch[5][w], scratch[6][w], scratch[7][w],
                          radix_counts[w], per_asset[w], c_ptr[w], l_ptr[w], state[0][w],
                          state[1][w], state[2][w], state[3][w], state[4][w], state[5][w],
                          state[6][w], state[7][w], state[8][w], state[9][w], state[10][w],
                          state[11][w], state[12][w], state[13][w], accumulators[0][w],
                          accumulators[1][w],
                          accumulators[2][w], accumulators[3][w], accumulators[4][w],
                          schedule[w],
                          entries[0][w], entries[1][w], entries[2][w], entries[3][w],
                          entries[4][w], path_money, path_counts, path_sold, step_sold, step_loss,
                          step_fees, step_open_debt, step_collateral_value, path_rounds,
                          path_drawdown, path_unsold, step_impact, calls_p[w], liquidated_p[w],
                          log_slot, log_loss, jp - base, log_count, n_log[w])
        # Losses in path order (a path's log row is its place in the round).
        for row in range(n_rows):
            for k in range(log_count[row]):
                loss_p[log_slot[row, k]] += log_loss[row, k]


@njit(parallel=True, **_jit_no_nrt)
def _prepare(debt_of, growth_of, collateral_of, m_of, l_of, n_steps, full_horizon, gmax_of,
             debt_horizon, cg_key, lg_key):
    """Per loan: a bound on its debt's growth, its guard prices (from the largest debt it
    can reach) and, when ``full_horizon``, its debt at the horizon if never touched."""
    for i in prange(debt_of.shape[0]):
        growth = growth_of[i]
        if full_horizon:
            d = debt_of[i]
            for _ in range(n_steps):
                d = d * growth
            debt_horizon[i] = d
        g = 1.0
        for _ in range(n_steps):
            g = g * growth
        gmax = g if g > 1.0 else 1.0
        gmax_of[i] = gmax
        bound = debt_of[i] * gmax * _GROWTH_SLACK
        cg_key[i] = _trigger_price(bound, collateral_of[i], m_of[i])
        lg_key[i] = _trigger_price(bound, collateral_of[i], l_of[i])


_INF_BITS = 0x7FF0000000000000  # float64 bits of +inf


@njit(inline="always", **_jit_no_nrt)
def _bucket_top(bits, shift):
    """The float64 bits (as int64) of the smallest double above every guard in the
    bucket of the guard with bits ``bits`` (the bits without the lowest ``shift``);
    +inf stays +inf."""
    if bits >= _INF_BITS or bits < 0:
        return _INF_BITS
    return ((bits >> shift) + 1) << shift


@njit(parallel=True, **_jit_no_nrt)
def _guard_order(asset_of, guard_bits, n_assets, keys, tmp, counts, order, walk_bits):
    """Loans grouped by asset, each group by descending guard bucket (loan index within
    a bucket): a stable radix sort of keys ``asset, bucket, loan``. ``walk_bits`` gets
    each loan's bucket top, non-increasing within an asset, so that walking the order
    while ``walk >= price`` reaches every loan whose guard ``price`` reaches. Guards and
    tops are passed as their float64 bits (int64 views)."""
    n = asset_of.shape[0]
    asset_bits = 1
    while (1 << asset_bits) < n_assets:
        asset_bits += 1
    # Keys fit 31 bits: 21 bits of the guard (sign 0, exponent, 10 bits of mantissa:
    # buckets 0.1% wide), fewer with more than 1024 assets. With up to 2 assets the
    # keys take 22 bits: two radix passes.
    key_bits = 31 - asset_bits if asset_bits > 10 else 21
    shift = 63 - key_bits
    bucket_mask = (1 << key_bits) - 1
    for i in prange(n):
        # Guards are positive (or +inf), so their bits order them; descending buckets.
        keys[i] = _pack((asset_of[i] << key_bits) | (bucket_mask - (guard_bits[i] >> shift)), i)
    _sort_prefix(keys, n, tmp, counts, key_bits + asset_bits)
    for i in prange(n):
        order[i] = keys[i] & _SLOT_MASK
        walk_bits[i] = _bucket_top(guard_bits[order[i]], shift)


def _activation_order(asset_of, guard, n_assets, n_threads=1):
    """``_guard_order`` of a book: (order, walk keys)."""
    n = asset_of.shape[0]
    order = np.empty(n, dtype=np.int64)
    walk = np.empty(n)
    run_parallel(_guard_order, n_threads, asset_of,
                 np.ascontiguousarray(guard, dtype=np.float64).view(np.int64), n_assets,
                 np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64),
                 np.zeros(1 << _RADIX_BITS, dtype=np.int64), order, walk.view(np.int64))
    return order, walk


@njit(parallel=True, **_jit_no_nrt)
def _inverse_into(order, position):
    """``position[order[k]] = k``: where each loan sits in ``order``."""
    for k in prange(order.shape[0]):
        position[order[k]] = k


@njit(**_jit)
def _share_rounds(work, per_round, n_workers):
    """Each round's paths (``per_round`` consecutive paths) shared among the workers,
    longest first: by descending ``work`` (stable), each to the worker with the least
    work so far (then the fewest paths, then the lowest index). Returns ``launch`` and
    ``worker_start``: worker ``w`` runs ``launch[worker_start[r, w]:worker_start[r, w +
    1]]`` in round ``r``."""
    n_paths = work.shape[0]
    n_rounds = (n_paths + per_round - 1) // per_round
    launch = np.empty(n_paths, dtype=np.int64)
    worker_start = np.zeros((n_rounds, n_workers + 1), dtype=np.int64)
    load = np.zeros(n_workers, dtype=np.int64)
    taken = np.zeros(n_workers, dtype=np.int64)
    owner = np.empty(per_round, dtype=np.int64)
    for r in range(n_rounds):
        base = r * per_round
        n_rows = min(per_round, n_paths - base)
        ranked = np.argsort(-work[base:base + n_rows], kind="mergesort")
        load[:] = 0
        taken[:] = 0
        for k in range(n_rows):
            best = 0
            for w in range(1, n_workers):
                if load[w] < load[best] or (load[w] == load[best] and taken[w] < taken[best]):
                    best = w
            owner[k] = best
            load[best] += work[base + ranked[k]]
            taken[best] += 1
        # Worker by worker, each one's paths heaviest first.
        start = base
        for w in range(n_workers):
            worker_start[r, w] = start
            for k in range(n_rows):
                if owner[k] == w:
                    launch[start] = base + ranked[k]
                    start += 1
        worker_start[r, n_workers] = start
    return launch, worker_start


def _launch_order(prices, walk, order_start, per_round, n_workers):
    """``_share_rounds`` of the block's paths, a path's estimated work being the number
    of loans whose call guard (bucket) its lowest raw price reaches, over the assets."""
    n_assets, _, n_paths = prices.shape
    work = np.zeros(n_paths, dtype=np.int64)
    low = prices.min(axis=1)
    for a in range(n_assets):
        descending = -walk[order_start[a]:order_start[a + 1]]  # ascending
        work += np.searchsorted(descending, -low[a], side="right")
    return _share_rounds(work, per_round, n_workers)


@njit(parallel=True, **_jit_no_nrt)
def _gather_into(x, order, out):
    """``out[k] = x[order[k]]``, ``k`` shared among the threads."""
    for k in prange(order.shape[0]):
        out[k] = x[order[k]]


@njit(parallel=True, **_jit_no_nrt)
def _write_back(c_order, loss_p, calls_p, liquidated_p, loan_loss, loan_calls, loan_liquidated):
    """Per-slot outputs back to loan order: losses as merged (they started from the
    block's own, and blocks run one after another), counts summed over the workers
    (integers, any order)."""
    for s in prange(c_order.shape[0]):
        i = c_order[s]
        loan_loss[i] = loss_p[s]
        calls = 0
        liquidated = 0
        for w in range(calls_p.shape[0]):
            calls += calls_p[w, s]
            liquidated += liquidated_p[w, s]
        loan_calls[i] += calls
        loan_liquidated[i] += liquidated


def _gather(x, order, n_threads):
    """``x[order]`` (``x`` 1-D), gathered in parallel."""
    out = np.empty(order.shape[0], dtype=x.dtype)
    run_parallel(_gather_into, n_threads, np.ascontiguousarray(x), order, out)
    return out


def _as_float64(x):
    return np.require(x, np.float64, ("C", "W"))


def _as_int64(x):
    return np.require(x, np.int64, ("C", "W"))


#: Paths per worker in a round (the paths between two merges of the losses); a
#: worker's share of a round is set by the estimated work, so it may run more or fewer.
PATHS_PER_WORKER = 16


def evaluate_coupled(prices, loans, options, seed, path_offset, n_threads, out):
    """Evaluate every loan on one block of paths with market impact and cascades, and
    add the results into ``out`` (a ``CoupledOutputs``); bit for bit the reference
    ``tests/naive_coupled.py``. Releases the GIL while it runs."""
    n_assets, n_steps_1, n_paths = prices.shape
    n_steps = n_steps_1 - 1
    n_loans = loans.debt.shape[0]
    # Slots, steps and order entries are kept in 32 bits (and packed in sort keys).
    if n_steps >= 2**31 - 2:
        raise ValueError("the coupled kernel takes fewer than 2**31 - 2 steps")
    if n_loans >= 2**31:
        raise ValueError("the coupled kernel takes fewer than 2**31 loans")
    n_chunks = max(1, -(-n_loans // _LOAN_CHUNK))
    record = out.core.step_loss.shape[0] > 0
    steps = n_steps_1 if record else 0
    n_workers = max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS, n_paths))
    per_worker = max(1, min(PATHS_PER_WORKER, -(-n_paths // n_workers)))
    seed_key = _U(mix64(int(seed) & MASK64))
    f64, i64 = _as_float64, _as_int64
    o = options
    variance = f64(o.bridge_variance) if o.bridge else np.zeros((1, 1, 1))
    loans = tuple(i64(x) if k in (0, 7) else f64(x) for k, x in enumerate(loans))
    asset_of, collateral_of, debt_of, growth_of, m_of, l_of = loans[:6]
    full_horizon = bool((m_of > 1.0).any())
    gmax_of, cg_key, lg_key = (np.empty(n_loans) for _ in range(3))
    debt_horizon = np.zeros(n_loans if full_horizon else 0)
    run_parallel(_prepare, n_workers, debt_of, growth_of, collateral_of, m_of, l_of, n_steps,
                 full_horizon, gmax_of, debt_horizon, cg_key, lg_key)
    # Per asset, loans by descending call guard bucket: activation walks them as prices
    # fall. The loan arrays, permuted into that order (``permuted``), are read in order.
    order_start = np.zeros(n_assets + 1, dtype=np.int64)
    order_start[1:] = np.cumsum(np.bincount(asset_of, minlength=n_assets))
    c_order, walk = _activation_order(asset_of, cg_key, n_assets, n_workers)
    position = np.empty(n_loans, dtype=np.int64)
    run_parallel(_inverse_into, n_workers, c_order, position)
    if o.bridge:
        l_order, l_walk = _activation_order(asset_of, lg_key, n_assets, n_workers)
        l_rank = position[l_order]
    else:
        l_rank, l_walk = np.zeros(0, dtype=np.int64), np.zeros(0)
    permuted = (c_order,) + tuple(_gather(x, c_order, n_workers) for x in (
        asset_of, collateral_of, debt_of, growth_of, m_of, l_of, loans[6], loans[7], loans[8],
        loans[9], gmax_of, cg_key, lg_key))
    w, n = n_workers, n_loans
    rows = n_workers * per_worker
    scratch = (
        np.zeros((w, n), dtype=np.int8),  # is_active
        np.empty((w, n), dtype=np.int32),  # alive
        np.empty((w, n), dtype=np.int32),  # act_list
        np.empty((w, n), dtype=np.int32),  # near
        np.empty((w, n), dtype=np.int64),  # pending
        np.empty((w, n), dtype=np.int32),  # fresh
        np.empty((w, n), dtype=np.int32),  # due
        np.empty((w, n), dtype=np.int64),  # sort_tmp
    )
    state = (
        np.empty((w, n), dtype=np.int8),  # status
        np.empty((w, n)),  # q
        np.empty((w, n)),  # debt
        np.empty((w, n), dtype=np.int32),  # debt_step
        np.empty((w, n)),  # principal
        np.empty((w, n), dtype=np.int32),  # call_start
        np.empty((w, n), dtype=np.int32),  # topup_due
        np.empty((w, n)),  # order
        np.empty((w, n), dtype=np.int8),  # order kind
        np.empty((w, n), dtype=np.int32),  # acted_step
        np.empty((w, n), dtype=np.int8),  # had_call
        np.empty((w, n), dtype=np.int8),  # had_liquidation
        np.empty((w, n)),  # call guard
        np.empty((w, n)),  # liquidation guard
    )
    accumulators = (
        np.zeros((w, n_chunks, cfg.N_MONEY)),
        np.zeros((w, n_chunks, cfg.N_COUNTS), dtype=np.int64),
        np.zeros((w, n_chunks, n_assets)),
        np.zeros((w, n_chunks, cfg.N_STEP_MONEY, steps)),
        np.zeros((w, n_chunks, steps, n_assets)),
    )
    schedule = np.empty((w, n if record else 0))
    # A round's order entries, in the order they were made.
    entries = (
        np.empty((w, n), dtype=np.int32),  # slot
        np.empty((w, n), dtype=np.int32),  # asset
        np.empty((w, n)),  # order (units requested)
        np.empty((w, n), dtype=np.int8),  # kind of sale
        np.empty((w, n, _N_ADDS)),  # what the sale adds to the sums
    )
    calls_p = np.zeros((w, n), dtype=np.int32)
    liquidated_p = np.zeros((w, n), dtype=np.int32)
    # Losses per slot, from the block's starting per-loan losses: the merge adds each
    # path's in path order, as the reference does per loan.
    core = out.core
    loss_p = _gather(core.loan_loss, c_order, n_workers)
    logs = (
        np.empty((rows, n), dtype=np.int32),
        np.empty((rows, n)),
        np.zeros(rows, dtype=np.int64),
    )
    # Within a round, paths go heaviest first to the least loaded worker (estimated
    # work: loans their lowest price reaches), so that no worker is left a long tail.
    launch, worker_start = _launch_order(prices, walk, order_start, rows, n_workers)
    run_parallel(_evaluate_paths, n_workers, f64(prices), asset_of, collateral_of, debt_of, growth_of,
                 position, debt_horizon, int(path_offset), int(o.mode), float(o.close_factor),
                 float(o.full_close_ltv), float(o.min_liquidation), f64(o.max_sell), f64(o.depth),
                 f64(o.depth_move), i64(o.sqrt_law), f64(o.permanent), f64(o.decay),
                 int(o.max_rounds), bool(o.bridge), variance, full_horizon, permuted, seed_key,
                 walk, l_rank,
                 l_walk, order_start, rows, launch, worker_start, scratch, state, accumulators,
                 schedule, entries, *core[:8], out.path_rounds, out.path_drawdown,
                 out.path_unsold, out.step_impact, loss_p, calls_p, liquidated_p, *logs)
    run_parallel(_write_back, n_workers, c_order, loss_p, calls_p, liquidated_p,
                 core.loan_loss, core.loan_calls, core.loan_liquidated)
