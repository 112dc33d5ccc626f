"""The loan mechanics compiled with numba (``parallel=True``).

Design (the Cython kernel is the same, name for name):

* Loans outermost, paths innermost. Prices are laid out ``[asset, step, path]`` so the
  inner loops run over contiguous memory and vectorise. A loan's debt schedule
  ``D0 * g**t`` is computed once and shared by all its paths until a partial sale.
* Per loan and step, three passes over the paths:
  A. the guard: one multiply-compare per path against a conservative price threshold,
     above which the spec's own LTV test provably says "below the call level"
     (``_guard_threshold``); a path in a call has guard 0 (always looked at), a closed
     one +inf (never). Usually nothing is near and the step ends here.
  B. the exact LTV of every path, branch-free, and a code for what the spec's rules do
     there: a new call, a market cure, a top-up, a full liquidation, or anything else
     (a partially sold loan; liquidations in partial mode) for ``_settle_path_step``
     (the spec's rules 1-7 verbatim).
  C. the marked paths, listed in path order and then per code without a branch per
     path (``_compact``, ``_split``), and each list through its own branch-free
     handler (``_new_calls``, ``_cures``, ``_topups``, ``_full_liquidations``): the same
     expressions as ``_settle_path_step`` on those paths, without its mispredicted
     branches. The paths of one loan never interact, so the order of the lists changes
     nothing.
* Near-trigger skipping: each block's paths are sorted per asset by their lowest price
  (``_path_order``, in Python), and a loan runs its passes only on the prefix of sorted
  paths whose lowest price reaches its highest guard threshold (``_active_paths``: a
  binary search; with none, the loan costs O(steps)). A skipped path provably stays
  untouched, and an untouched path adds exactly 0.0. Not with record_steps (pass D
  needs every path), a margin-call LTV above 1 or an unusable guard.
* Loans are cut into fixed chunks of ``LOAN_CHUNK``. Threads take chunks in waves, each
  into its own scratch row, with per-path sums per asset in that asset's sorted order;
  they are added serially in chunk order, asset by asset, back into block order, so
  results are identical for any thread count, path block and layout (see
  ``_config.ACTIVE_PATH_GROUP``).
"""
import numba
import numpy as np
from numba import njit, prange

from .. import _config as cfg
from .._numba_threads import run_parallel
from .._rng import MASK64, mix64
from . import _args, _path_order

_U = np.uint64
_GOLDEN = _U(0x9E3779B97F4A7C15)
_MIX1 = _U(0xBF58476D1CE4E5B9)
_MIX2 = _U(0x94D049BB133111EB)
_TO_UNIT = 2.0**-53
_TWO_53 = 2.0**53

_OPEN, _MODIFIED, _CLOSED, _NO_STEP = float(cfg.OPEN), float(cfg.MODIFIED), float(cfg.CLOSED), float(cfg.NO_STEP)
_LOSS, _FEES, _INTEREST, _PRINCIPAL = cfg.LOSS, cfg.FEES, cfg.INTEREST, cfg.PRINCIPAL
_RESIDUAL, _PROCEEDS, _DEBT_CLOSED, _UNREALISED = cfg.RESIDUAL, cfg.PROCEEDS, cfg.DEBT_CLOSED, cfg.UNREALISED
_CALLS, _LIQUIDATIONS, _FULL, _TOPUPS = cfg.CALLS, cfg.LIQUIDATIONS, cfg.FULL_LIQUIDATIONS, cfg.TOPUPS
_STATUS, _GUARD, _CALL_START, _TOPUP_DUE = _args.STATUS, _args.GUARD, _args.CALL_START, _args.TOPUP_DUE
# What pass C must do on a path (pass B's codes): the commonest events of an open path
# each have a code and a branch-free handler; _GENERAL is _settle_path_step.
_GENERAL, _CURED, _NEW_CALL, _TOPUP, _FULL_LIQUIDATION = 1, 2, 3, 4, 5
_N_CODES = _args.N_CODES
assert _N_CODES == 6
_CODE_BITS, _WATCHED = 7, 8  # pass B's return value: the codes OR-ed, and a path in a call
assert _CODE_BITS & _WATCHED == 0 and (_CODE_BITS + 1) & _CODE_BITS == 0 and _CODE_BITS >= _N_CODES - 1
_COLLATERAL_NOW, _DEBT_NOW, _PRINCIPAL_NOW, _LOSS_ON_PATH = _args.COLLATERAL_NOW, _args.DEBT_NOW, _args.PRINCIPAL_NOW, _args.LOSS_ON_PATH
_LOSS_BY_PATH = _args.LOSS_BY_PATH
_STEP_LOSS, _STEP_FEES = cfg.STEP_LOSS, cfg.STEP_FEES
_STEP_OPEN_DEBT, _STEP_COLLATERAL_VALUE = cfg.STEP_OPEN_DEBT, cfg.STEP_COLLATERAL_VALUE
_LOAN_CHUNK = cfg.LOAN_CHUNK
_GROUP = cfg.ACTIVE_PATH_GROUP
_MARGIN, _TINY, _HUGE = cfg.GUARD_MARGIN, cfg.GUARD_TINY, cfg.GUARD_HUGE

_jit = dict(cache=True, nogil=True, error_model="numpy", fastmath=False)
# The per-path functions never allocate: compiled without numba's runtime (NRT) they
# skip the atomic reference counting of every array argument, which otherwise costs
# more than the work of a settled path.
_jit_no_nrt = dict(_jit, _nrt=False)


@njit(inline="always", **_jit)
def _mix64(x):
    z = x + _GOLDEN
    z = (z ^ (z >> _U(30))) * _MIX1
    z = (z ^ (z >> _U(27))) * _MIX2
    return z ^ (z >> _U(31))


@njit(inline="always", **_jit)
def _topup_cut(topup_prob):
    """``_uniform(...) < topup_prob`` exactly when the uniform's 53 bits (the hash
    >> 11) are below ``_topup_cut(topup_prob)``: the uniform is bits * 2**-53 (exact),
    so the test is bits < topup_prob * 2**53, and for an integer that is
    bits < ceil(topup_prob * 2**53) (exact for 0 <= p <= 1)."""
    return _U(np.ceil(topup_prob * _TWO_53))


@njit(inline="always", **_jit)
def _uniform(loan_key, path, step):
    """Counter-based uniform in [0, 1) for (loan key, path, step); see ``ltvsim._rng``."""
    h = _mix64(_mix64(loan_key ^ _U(path)) ^ _U(step))
    return np.float64(h >> _U(11)) * _TO_UNIT


@njit(inline="always", **_jit)
def _guard_threshold(debt_t, collateral, call_collateral):
    """Price above which an open path's LTV is provably below its margin-call LTV.

    ``call_collateral`` is collateral * margin_call_ltv. Valid for any path whose
    collateral is at least the loan's initial collateral and whose debt is the shared
    schedule. Returns +inf (look at every path) where a magnitude leaves the range in
    which the 1e-12 margin bounds the rounding of the exact test.
    """
    threshold = debt_t / call_collateral
    if not (_TINY <= debt_t <= _HUGE and _TINY <= threshold <= _HUGE):
        return np.inf
    if not (_TINY <= collateral * threshold <= _HUGE):
        return np.inf
    return threshold * (1.0 + _MARGIN)


@njit(inline="always", **_jit_no_nrt)
def _reset_guard(p, state, collateral0):
    """Guard factor of a path: 1 = price test applies, 0 = always look, inf = closed."""
    status = state[_STATUS, p]
    if status == _CLOSED:
        state[_GUARD, p] = np.inf
    elif status == _MODIFIED or state[_CALL_START, p] >= 0.0 or state[_COLLATERAL_NOW, p] < collateral0:
        state[_GUARD, p] = 0.0
    else:
        state[_GUARD, p] = 1.0


@njit(inline="always", **_jit_no_nrt)
def _close_in_full(p, t, quantity, proceeds, fee_due, interest, principal, asset, state,
                   acc_money, acc_counts, acc_sold, acc_step_sold, acc_step_money, record):
    """Rule 7's waterfall for a full liquidation of ``quantity`` sold for ``proceeds``:
    fee, interest, principal, residual to the borrower, the shortfall a loss; the path
    closes. (The caller has ended its call and counted the liquidation.)"""
    fee_paid = proceeds if proceeds < fee_due else fee_due
    remaining = proceeds - fee_paid
    interest_paid = remaining if remaining < interest else interest
    remaining = remaining - interest_paid
    principal_paid = remaining if remaining < principal else principal
    residual = remaining - principal_paid
    loss = (interest - interest_paid) + (principal - principal_paid)
    state[_STATUS, p] = _CLOSED
    state[_LOSS_ON_PATH, p] = loss
    acc_counts[_FULL, p] += 1
    acc_money[_LOSS, p] += loss
    acc_money[_FEES, p] += fee_paid
    acc_money[_INTEREST, p] += interest_paid
    acc_money[_PRINCIPAL, p] += principal_paid
    acc_money[_RESIDUAL, p] += residual
    acc_money[_PROCEEDS, p] += proceeds
    acc_money[_DEBT_CLOSED, p] += interest + principal
    acc_sold[asset, p] += quantity
    if record:
        acc_step_sold[t, asset, p] += quantity
        acc_step_money[_STEP_LOSS, t, p] += loss
        acc_step_money[_STEP_FEES, t, p] += fee_paid


@njit(**_jit_no_nrt)
def _liquidate(p, t, price, debt, principal, q, tau, fee, asset, partial, state,
               had_liquidation, acc_money, acc_counts, acc_sold, acc_step_sold,
               acc_step_money, record):
    """Rule 7: sell collateral at the execution price and pay fee, interest, principal."""
    execution = price  # no slippage without market impact
    interest = debt - principal
    if interest < 0.0:
        interest = 0.0
    state[_CALL_START, p] = _NO_STEP
    state[_TOPUP_DUE, p] = _NO_STEP
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
                state[_DEBT_NOW, p] = debt - repaid
                state[_PRINCIPAL_NOW, p] = remaining_principal if remaining_principal > 0.0 else 0.0
                state[_COLLATERAL_NOW, p] = q - sold
                state[_STATUS, p] = _MODIFIED
                acc_money[_FEES, p] += fee_paid
                acc_money[_INTEREST, p] += interest_paid
                acc_money[_PRINCIPAL, p] += principal_paid
                acc_money[_PROCEEDS, p] += proceeds
                acc_money[_DEBT_CLOSED, p] += repaid
                acc_sold[asset, p] += sold
                if record:
                    acc_step_sold[t, asset, p] += sold
                    acc_step_money[_STEP_FEES, t, p] += fee_paid
                return

    # Full liquidation: the waterfall.
    _close_in_full(p, t, q, q * execution, fee * debt, interest, principal, asset, state,
                   acc_money, acc_counts, acc_sold, acc_step_sold, acc_step_money, record)


@njit(**_jit_no_nrt)
def _settle_path_step(p, t, path_index, price, debt_t, debt0, growth, collateral0, m, l,
                      tau, cure, fee, topup_prob, loan_key, asset, partial, state,
                      had_call, had_liquidation, acc_money, acc_counts, acc_sold,
                      acc_step_sold, acc_step_money, record):
    """Rules 1-7 of the spec for one loan on open path ``p`` at step ``t``."""
    # 1. Accrue (the shared schedule already holds D * g for unmodified paths).
    if state[_STATUS, p] == _MODIFIED:
        debt = state[_DEBT_NOW, p]
        if t >= 1:
            debt = debt * growth
        state[_DEBT_NOW, p] = debt
        principal = state[_PRINCIPAL_NOW, p]
    else:
        debt = debt_t
        principal = debt0
    q = state[_COLLATERAL_NOW, p]
    # 2-3. Price and LTV.
    ltv = debt / (q * price)

    # 4. Scheduled top-up: raise collateral to the target LTV if still called.
    if state[_TOPUP_DUE, p] == t:
        state[_TOPUP_DUE, p] = _NO_STEP
        if ltv >= m:
            state[_COLLATERAL_NOW, p] = debt / (tau * price)
            state[_CALL_START, p] = _NO_STEP
            acc_counts[_TOPUPS, p] += 1
            _reset_guard(p, state, collateral0)
            return

    liquidate = False
    if ltv >= l:
        # 5. Liquidation threshold breached.
        liquidate = True
    elif ltv >= m:
        # 6. In the call band.
        if state[_CALL_START, p] < 0.0:
            state[_CALL_START, p] = t
            acc_counts[_CALLS, p] += 1
            had_call[p] = 1
            if _uniform(loan_key, path_index, t) < topup_prob:
                state[_TOPUP_DUE, p] = t + 1
        elif cure >= 1 and t - state[_CALL_START, p] >= cure:
            liquidate = True
    else:
        # Below the call level: a call in progress is cured by the market.
        state[_CALL_START, p] = _NO_STEP
        state[_TOPUP_DUE, p] = _NO_STEP

    if liquidate:
        _liquidate(p, t, price, debt, principal, q, tau, fee, asset, partial, state,
                   had_liquidation, acc_money, acc_counts, acc_sold, acc_step_sold,
                   acc_step_money, record)
    _reset_guard(p, state, collateral0)


@njit(**_jit_no_nrt)
def _count_near(row, guard, n_paths, threshold):
    """Pass A: how many paths are at or below the guard price (guard 0: always)."""
    near = 0
    for p in range(n_paths):
        near += row[p] * guard[p] <= threshold
    return near


# Passes A and B stay functions of their own: inlined into the big loan loop, LLVM
# (like gcc) no longer vectorises them.
@njit(**_jit_no_nrt)
def _mark_events(row, n_paths, step, debt_t, m, l, expire_after, liquidation_code, partial,
                 status, call_start, topup_due, pending, collateral_now):
    """Pass B: the exact LTV of every path, and a code for what rules 4-7 do there.

    ``pending`` becomes, as ``_settle_path_step`` would decide on an open path: _TOPUP
    (a top-up falls due and the LTV is still at or above m), ``liquidation_code`` (the
    LTV at or above l, or an expired cure period; _FULL_LIQUIDATION in full mode),
    _NEW_CALL (rule 6's new call), _CURED (back below m with a call in progress);
    _GENERAL on a partially sold path (its own debt accrues); 0 otherwise, and on a
    closed path. A top-up is only ever due during a call (rules 4-6 set and clear the
    two together), so "due now" implies "called" (the codes exclude each other only
    given that; a code outside 1-5 would fall through every list, and the reference
    tests would see it). Returns the codes OR-ed together
    (non-zero if any path is marked), plus _WATCHED if any path was in a call: then the
    next step skips pass A (a shortcut only: pass B on every path is always exact).
    """
    any_marked = 0
    for p in range(n_paths):
        ltv = debt_t / (collateral_now[p] * row[p])
        start = call_start[p]
        called = start >= 0.0
        in_band = ltv >= m
        above_l = ltv >= l
        due_now = topup_due[p] == step
        expired = called & (step - start >= expire_after)
        # The four codes of an open path exclude each other, in _settle_path_step's order.
        code = ((in_band & due_now) * _TOPUP
                + (in_band & ~due_now & (above_l | expired)) * liquidation_code
                + (in_band & ~called & ~above_l) * _NEW_CALL
                + (~in_band & called) * _CURED)
        code = (status[p] == _OPEN) * code
        if partial:  # loop-invariant (LLVM unswitches it): only partial mode modifies paths
            code = code + (status[p] == _MODIFIED) * _GENERAL
        pending[p] = code
        any_marked |= code | (called * _WATCHED)
    return any_marked


@njit(**_jit_no_nrt)
def _compact(pending, n_paths, marked):
    """The paths with a non-zero code, in path order, into ``marked``; returns how many
    (branch-free: no misprediction per path)."""
    n = 0
    for p in range(n_paths):
        marked[n] = p
        n += pending[p] != 0
    return n


@njit(**_jit_no_nrt)
def _split(marked, n_marked, pending, width, partial):
    """The marked paths into one list per code (``marked[code * width:]``), each in path
    order; returns how many of each, in code order (branch-free). Full mode has no
    _GENERAL path."""
    n_general = 0
    n_cured = 0
    n_call = 0
    n_topup = 0
    n_full = 0
    for k in range(n_marked):
        q = marked[k]
        code = pending[q]
        if partial:  # loop-invariant: LLVM unswitches the loop
            marked[_GENERAL * width + n_general] = q
            n_general += code == _GENERAL
        marked[_CURED * width + n_cured] = q
        marked[_NEW_CALL * width + n_call] = q
        marked[_TOPUP * width + n_topup] = q
        marked[_FULL_LIQUIDATION * width + n_full] = q
        n_cured += code == _CURED
        n_call += code == _NEW_CALL
        n_topup += code == _TOPUP
        n_full += code == _FULL_LIQUIDATION
    return n_general, n_cured, n_call, n_topup, n_full


@njit(**_jit_no_nrt)
def _set_draw_keys(loan_key, path_offset, path_of, n_paths, draw_keys):
    """Each path's draw key, ``mix64(loan key ^ path index)``: ``_uniform``'s first
    half, once per touched loan instead of once per call."""
    for p in range(n_paths):
        draw_keys[p] = _mix64(loan_key ^ _U(path_offset + path_of[p]))


@njit(**_jit_no_nrt)
def _new_calls(paths, n, topup_cut, t, draw_keys, call_start, guard, topup_due, calls,
               had_call):
    """Rule 6 on open paths with no call (_settle_path_step's new-call branch and
    _reset_guard: guard 0 while called). No call means no top-up due (rules 4-6 set and
    clear the two together): topup_due is _NO_STEP and becomes t + 1 if the draw says
    so, without a branch (a branch on the
    draw would wait for its hash): ``draw < topup_prob`` is ``bits < topup_cut``, and
    the hash's first half is the path's draw key."""
    step = np.float64(t)
    topup_step = t + 1 - int(_NO_STEP)
    for k in range(n):
        q = paths[k]
        call_start[q] = step
        calls[q] += 1
        had_call[q] = 1
        guard[q] = 0.0
        drawn = np.int64((_mix64(draw_keys[q] ^ _U(t)) >> _U(11)) < topup_cut)
        topup_due[q] = np.float64(int(_NO_STEP) + drawn * topup_step)


@njit(**_jit_no_nrt)
def _cures(paths, n, collateral0, call_start, topup_due, guard, collateral_now):
    """Back below the call level: the call in progress (and its top-up) is cured by the
    market; the guard as _reset_guard sets it."""
    for k in range(n):
        q = paths[k]
        call_start[q] = _NO_STEP
        topup_due[q] = _NO_STEP
        guard[q] = 1.0 if collateral_now[q] >= collateral0 else 0.0


@njit(**_jit_no_nrt)
def _topups(paths, n, tau, collateral0, row, debt_t, topup_due, collateral_now, call_start,
            topups, guard):
    """Rule 4 on open paths still called when the top-up falls due: collateral raised to
    the target LTV (_settle_path_step's top-up branch and _reset_guard)."""
    for k in range(n):
        q = paths[k]
        collateral = debt_t / (tau * row[q])
        topup_due[q] = _NO_STEP
        collateral_now[q] = collateral
        call_start[q] = _NO_STEP
        topups[q] += 1
        guard[q] = 0.0 if collateral < collateral0 else 1.0


@njit(**_jit_no_nrt)
def _full_liquidations(paths, n, debt0, fee, asset, t, row, debt_t, state, had_liquidation,
                       acc_money, acc_counts, acc_sold, acc_step_sold, acc_step_money, record):
    """Rules 5 and 7 on open paths in full mode: _liquidate's full liquidation (debt on
    the shared schedule, principal the initial debt), without a branch per path."""
    principal = debt0
    interest = debt_t - principal
    if interest < 0.0:
        interest = 0.0
    fee_due = fee * debt_t
    for k in range(n):
        q = paths[k]
        quantity = state[_COLLATERAL_NOW, q]
        state[_CALL_START, q] = _NO_STEP
        state[_TOPUP_DUE, q] = _NO_STEP
        had_liquidation[q] = 1
        acc_counts[_LIQUIDATIONS, q] += 1
        state[_GUARD, q] = np.inf
        _close_in_full(q, t, quantity, quantity * row[q], fee_due, interest, principal, asset,
                       state, acc_money, acc_counts, acc_sold, acc_step_sold, acc_step_money,
                       record)

@njit(**_jit_no_nrt)
def _record_exposure(row, n_paths, debt_t, status, debt_now, collateral_now, open_debt,
                     collateral_value):
    """Pass D (record_steps only): add each open path's debt and collateral value."""
    for p in range(n_paths):
        is_open = status[p] != _CLOSED
        debt = debt_now[p] if status[p] == _MODIFIED else debt_t
        open_debt[p] += debt if is_open else 0.0
        collateral_value[p] += collateral_now[p] * row[p] if is_open else 0.0


@njit(**_jit_no_nrt)
def _active_paths(path_min, n_steps, debt0, growth, collateral0, call_collateral):
    """Near-trigger skipping: how many of the sorted paths (a prefix) the loan must run on.

    The loan's threshold at step t is ``_guard_threshold(debt_t)`` with ``debt_t`` the
    shared schedule ``debt0 * growth * ... * growth``: a monotone sequence (one factor,
    rounding is monotone), and ``_guard_threshold`` is monotone in it while in range. Its
    in-range conditions are intervals in ``debt_t``, so when the thresholds of the first
    and last step are finite, every step's is, and ``trigger``, the larger of the two,
    bounds them all. A path whose lowest price is above ``trigger`` therefore stays
    pristine on every step (by induction: open, initial collateral, no call, guard 1,
    price above the threshold, so pass A never flags it and the guard proves LTV < m <=
    liquidation LTV, so pass B marks nothing), and with m <= 1 its horizon shortfall is
    negative too. Evaluated, it would only add 0.0 to its sums (and 0 to its counts);
    every sum starts at +0.0 and so is never -0.0, and x + 0.0 == x to the last bit.
    Skipping it changes nothing. The caller uses this only without record_steps (pass
    D adds every open path), with m <= 1 and a usable guard.

    Returns the count of sorted minima <= trigger (binary search), rounded up to a
    whole number of ``ACTIVE_PATH_GROUP`` paths (at most all paths); all paths when a
    threshold is out of range.
    """
    n_paths = path_min.shape[0]
    debt_t = debt0
    for t in range(n_steps):
        debt_t = debt_t * growth
    first = _guard_threshold(debt0, collateral0, call_collateral)
    last = _guard_threshold(debt_t, collateral0, call_collateral)
    if not (first < np.inf and last < np.inf):
        return n_paths
    trigger = first if first > last else last
    lo = 0
    hi = n_paths
    while lo < hi:
        mid = (lo + hi) >> 1
        if path_min[mid] <= trigger:
            lo = mid + 1
        else:
            hi = mid
    n_active = (lo + _GROUP - 1) // _GROUP * _GROUP
    return n_active if n_active < n_paths else n_paths


@njit(**_jit_no_nrt)
def _evaluate_loan(i, prices, price_floor, path_min, order, skip, asset, collateral0, debt0,
                   growth, m, l, tau, cure, fee, topup_prob, seed_key, path_offset, partial,
                   state, pending, marked, had_call, draw_keys, had_liquidation, acc_money,
                   acc_counts, acc_sold, acc_step_sold, acc_step_money, record, loan_loss,
                   loan_calls, loan_liquidated):
    """All steps of loan ``i`` on the block's paths that can come near its call; scratch
    left reset. Returns how many paths that was (the loan's active prefix).

    Paths are in the sorted layout of the loan's asset (``_path_order``): position ``j``
    is block path ``order[asset, j]``, which keys the top-up draws. With ``skip`` the
    loan runs on the prefix ``_active_paths`` finds (possibly none), otherwise on all.
    ``price_floor[asset, t, g]`` is the lowest price of the first ``8 (g + 1)`` sorted
    paths: until a loan is touched every path has guard 1, so pass A reduces to
    comparing the prefix's floor with the step's threshold, and a loan that is never
    touched costs O(1) per step.
    """
    n_paths = prices.shape[2]
    n_steps = prices.shape[1] - 1
    call_collateral = collateral0 * m
    guard_usable = _TINY <= m <= _HUGE and _TINY <= collateral0 <= _HUGE and _TINY <= call_collateral <= _HUGE
    n_active = n_paths
    if skip and guard_usable and m <= 1.0 and not record:
        n_active = _active_paths(path_min[asset], n_steps, debt0, growth, collateral0, call_collateral)
        if n_active == 0:
            return 0
    floor_group = (n_active - 1) // _GROUP
    path_of = order[asset]
    status = state[_STATUS]
    guard = state[_GUARD]
    call_start = state[_CALL_START]
    topup_due = state[_TOPUP_DUE]
    collateral_now = state[_COLLATERAL_NOW]
    debt_now = state[_DEBT_NOW]
    loan_key = _mix64(seed_key ^ _U(i))
    expire_after = np.float64(cure) if cure >= 1 else np.inf
    if record:  # pass D reads every path's collateral from step 0
        for p in range(n_paths):
            collateral_now[p] = collateral0
    touched = False
    debt_t = debt0
    width = pending.shape[0]
    watched = False
    liquidation_code = _GENERAL if partial else _FULL_LIQUIDATION
    topup_cut = _topup_cut(topup_prob)
    for t in range(n_steps + 1):
        if t >= 1:
            debt_t = debt_t * growth
        row = prices[asset, t]
        # A. Is any path near its call level (a path in a call, or partially sold, has
        # guard 0 and always is; a closed one only with an infinite threshold)? Skipped
        # after a step with a path in a call or an event: pass B runs anyway.
        near = watched
        if not near:
            threshold = _guard_threshold(debt_t, collateral0, call_collateral) if guard_usable else np.inf
            if touched:
                near = _count_near(row, guard, n_active, threshold) != 0
            else:
                near = price_floor[asset, t, floor_group] <= threshold
        if near:
            if not touched:
                touched = True
                if not record:
                    for p in range(n_active):
                        collateral_now[p] = collateral0
                _set_draw_keys(loan_key, path_offset, path_of, n_active, draw_keys)
            # B. Exact LTV everywhere; events and market cures coded in pending.
            flags = _mark_events(row, n_active, np.float64(t), debt_t, m, l, expire_after,
                                 liquidation_code, partial, status, call_start, topup_due,
                                 pending, collateral_now)
            # C. The spec's rules on the paths marked. Paths of one loan never interact,
            # so each code's paths go through their own handler, in path order.
            watched = flags != 0
            if flags & _CODE_BITS:
                n_pending = _compact(pending, n_active, marked)
                n_general, n_cured, n_call, n_topup, n_full = _split(marked, n_pending, pending, width, partial)
                if n_call > 0:
                    _new_calls(marked[_NEW_CALL * width:], n_call, topup_cut, t, draw_keys,
                               call_start, guard, topup_due, acc_counts[_CALLS], had_call)
                if n_cured > 0:
                    _cures(marked[_CURED * width:], n_cured, collateral0, call_start,
                           topup_due, guard, collateral_now)
                if n_topup > 0:
                    _topups(marked[_TOPUP * width:], n_topup, tau, collateral0, row,
                            debt_t, topup_due, collateral_now, call_start, acc_counts[_TOPUPS],
                            guard)
                if n_full > 0:
                    _full_liquidations(marked[_FULL_LIQUIDATION * width:], n_full, debt0, fee, asset, t, row,
                                       debt_t, state, had_liquidation, acc_money, acc_counts,
                                       acc_sold, acc_step_sold, acc_step_money, record)
                for k in range(n_general):
                    q = marked[_GENERAL * width + k]
                    _settle_path_step(q, t, path_offset + path_of[q], row[q], debt_t, debt0,
                                      growth, collateral0, m, l, tau, cure, fee,
                                      topup_prob, loan_key, asset, partial, state,
                                      had_call, had_liquidation, acc_money, acc_counts,
                                      acc_sold, acc_step_sold, acc_step_money, record)
        if record:
            # D. The book's exposure after the step: debt and collateral value still open.
            _record_exposure(row, n_paths, debt_t, status, debt_now, collateral_now,
                             acc_step_money[_STEP_OPEN_DEBT, t],
                             acc_step_money[_STEP_COLLATERAL_VALUE, t])

    # 8. Horizon: open loans report their mark-to-market shortfall.
    final = prices[asset, n_steps]
    unrealised = acc_money[_UNREALISED]
    if not touched:
        # Every path stayed above its threshold, also at the last step: LTV < m there,
        # so with m <= 1 no path can be under water and nothing is added.
        if m <= 1.0:
            return n_active
        for p in range(n_active):
            shortfall = debt_t - collateral0 * final[p]
            unrealised[p] += shortfall if shortfall > 0.0 else 0.0
        return n_active
    for p in range(n_active):
        debt = debt_now[p] if status[p] == _MODIFIED else debt_t
        shortfall = debt - collateral_now[p] * final[p]
        if status[p] == _CLOSED or shortfall < 0.0:
            shortfall = 0.0
        unrealised[p] += shortfall
    n_called = 0
    n_liquidated = 0
    for p in range(n_active):
        n_called += had_call[p]
        n_liquidated += had_liquidation[p]
        # Leave the scratch reset for the next loan.
        status[p] = _OPEN
        guard[p] = 1.0
        call_start[p] = _NO_STEP
        topup_due[p] = _NO_STEP
        had_call[p] = 0
        had_liquidation[p] = 0
    if n_liquidated != 0:
        _add_loan_loss(i, path_of, n_active, n_paths, state[_LOSS_ON_PATH],
                       state[_LOSS_BY_PATH], loan_loss)
    loan_calls[i] += n_called
    loan_liquidated[i] += n_liquidated
    return n_active


@njit(**_jit_no_nrt)
def _add_loan_loss(i, path_of, n_active, n_paths, loss_on_path, loss_by_path, loan_loss):
    """Add the loan's losses on the block to ``loan_loss[i]`` in block path order (as
    the reference does, whatever the layout); scratch rows left at 0."""
    lost = False
    for p in range(n_active):
        if loss_on_path[p] != 0.0:
            loss_by_path[path_of[p]] = loss_on_path[p]
            loss_on_path[p] = 0.0
            lost = True
    if lost:
        total_loss = loan_loss[i]
        for p in range(n_paths):
            total_loss += loss_by_path[p]
            loss_by_path[p] = 0.0
        loan_loss[i] = total_loss


@njit(**_jit_no_nrt)
def _evaluate_chunk(chunk, prices, price_floor, path_min, order, skip, asset_of, collateral_of,
                    debt_of, growth_of, m_of, l_of, tau_of, cure_of, fee_of, topup_of, seed_key,
                    path_offset, partial, state, pending, marked, had_call, draw_keys,
                    had_liquidation, acc_money, acc_counts, acc_sold, acc_step_sold,
                    acc_step_money, record, loan_loss, loan_calls, loan_liquidated):
    """Every loan of one chunk, in loan order, into one thread slot's scratch (each into
    the accumulators of its asset). Returns the loan-paths evaluated."""
    stop = min((chunk + 1) * _LOAN_CHUNK, debt_of.shape[0])
    evaluated = 0
    for i in range(chunk * _LOAN_CHUNK, stop):
        a = asset_of[i]
        evaluated += _evaluate_loan(i, prices, price_floor, path_min, order, skip, a,
                                    collateral_of[i], debt_of[i], growth_of[i], m_of[i], l_of[i],
                                    tau_of[i], cure_of[i], fee_of[i], topup_of[i], seed_key,
                                    path_offset, partial, state, pending, marked, had_call,
                                    draw_keys, had_liquidation, acc_money[a], acc_counts[a], acc_sold,
                                    acc_step_sold, acc_step_money[a], record, loan_loss,
                                    loan_calls, loan_liquidated)
    return evaluated


@njit(parallel=True, **_jit)
def _evaluate_chunks(prices, price_floor, path_min, order, skip, asset_of, collateral_of, debt_of,
                     growth_of, m_of, l_of, tau_of, cure_of, fee_of, topup_of, seed_key,
                     path_offset, partial, n_slots, path_state, pending, marked, had_call,
                     draw_keys, had_liquidation, acc_money, acc_counts, acc_sold, acc_step_sold,
                     acc_step_money, evaluated, path_money, path_counts, path_sold, step_sold,
                     step_loss, step_fees, step_open_debt, step_collateral_value, loan_loss,
                     loan_calls, loan_liquidated):
    n_loans = debt_of.shape[0]
    n_assets = prices.shape[0]
    n_paths = prices.shape[2]
    record = step_loss.shape[0] > 0
    n_chunks = (n_loans + _LOAN_CHUNK - 1) // _LOAN_CHUNK
    for wave in range(0, n_chunks, n_slots):
        n_busy = min(n_slots, n_chunks - wave)
        for slot in prange(n_busy):
            acc_money[slot] = 0.0
            acc_counts[slot] = 0
            acc_sold[slot] = 0.0
            if record:
                acc_step_sold[slot] = 0.0
                acc_step_money[slot] = 0.0
            evaluated[slot] += _evaluate_chunk(
                wave + slot, prices, price_floor, path_min, order, skip, asset_of,
                collateral_of, debt_of, growth_of, m_of, l_of, tau_of, cure_of, fee_of,
                topup_of, seed_key, path_offset, partial, path_state[slot], pending[slot],
                marked[slot], had_call[slot], draw_keys[slot], had_liquidation[slot], acc_money[slot],
                acc_counts[slot],
                acc_sold[slot], acc_step_sold[slot], acc_step_money[slot], record, loan_loss,
                loan_calls, loan_liquidated)
        # Serial reduction in chunk order, asset by asset, each asset's sums scattered
        # from sorted position back to block order: the result depends neither on
        # n_slots nor on the layout (``_config.ACTIVE_PATH_GROUP``).
        for slot in range(n_busy):
            for a in range(n_assets):
                path_of = order[a]
                for k in range(path_money.shape[0]):
                    for j in range(n_paths):
                        path_money[k, path_of[j]] += acc_money[slot, a, k, j]
                for k in range(path_counts.shape[0]):
                    for j in range(n_paths):
                        path_counts[k, path_of[j]] += acc_counts[slot, a, k, j]
                for j in range(n_paths):
                    path_sold[a, path_of[j]] += acc_sold[slot, a, j]
                if record:
                    for t in range(step_loss.shape[0]):
                        for j in range(n_paths):
                            p = path_of[j]
                            step_loss[t, p] += acc_step_money[slot, a, _STEP_LOSS, t, j]
                            step_fees[t, p] += acc_step_money[slot, a, _STEP_FEES, t, j]
                            step_open_debt[t, p] += acc_step_money[slot, a, _STEP_OPEN_DEBT, t, j]
                            step_collateral_value[t, p] += acc_step_money[slot, a, _STEP_COLLATERAL_VALUE, t, j]
                            step_sold[t, a, p] += acc_step_sold[slot, t, a, j]


def evaluate_block(prices, loans, seed, path_offset, partial, n_threads, out, mode=None):
    """Evaluate every loan on one block of paths and add the results into ``out``.

    Same contract as :func:`ltvsim.backends._numpy_kernel.evaluate_block`. Releases the
    GIL while it runs. ``mode`` (private; default ``_path_order.MODE``) selects the
    layout and near-trigger skipping, which never change a result. Returns the number
    of loan-paths the passes ran on (a test hook).
    """
    n_assets, n_steps_1, n_paths = prices.shape
    record = out.step_loss.shape[0] > 0
    n_workers = max(1, min(n_threads, numba.config.NUMBA_NUM_THREADS))
    n_slots = _args.slot_count(loans.debt.shape[0], n_workers, n_paths, n_steps_1 - 1, n_assets, record)
    scratch = _args.allocate_scratch(n_slots, n_paths, n_steps_1 - 1, n_assets, record)
    seed_key = _U(mix64(int(seed) & MASK64))
    layout = _path_order.sort_paths(prices, mode)
    # The wave's slots are taken one at a time by whichever thread is free.
    chunksize = numba.set_parallel_chunksize(1)
    try:
        run_parallel(_evaluate_chunks, n_workers, layout.prices, layout.floor, layout.path_min,
                     layout.order, layout.skip, *loans, seed_key, path_offset, bool(partial),
                     n_slots, *scratch, *out)
    finally:
        numba.set_parallel_chunksize(chunksize)
    return int(scratch.evaluated.sum())
