# cython: language_level=3
"""The loan mechanics in Cython (OpenMP ``prange``, ``nogil``).

Same design and the same function names as ``_numba_kernel.py`` (read its header): loans
outermost, paths innermost over prices laid out ``[asset, step, path]``; per loan and
step a guard pass (A), a branch-free exact pass that codes each path's event (B), and
(C) the marked paths listed per code, each list through a branch-free handler, the rest
through ``_settle_path_step``; near-trigger skipping over each block's paths sorted by
their lowest price (``_path_order``), each loan on its active prefix only; fixed loan
chunks in waves with per-asset accumulators and a serial chunk-order, asset-by-asset
reduction back into block order, so results do not depend on the thread count, the
path block or the layout. Built with ``-ffp-contract=off`` so that no multiply-add is fused: the two
compiled backends then agree to the last bit.
"""
from cython.parallel cimport prange
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from libc.math cimport ceil
cimport numpy as cnp

from .. import _config as cfg
from .._rng import MASK64, mix64
from . import _args, _path_order

ctypedef unsigned long long u64
ctypedef cnp.int64_t i64
ctypedef cnp.int8_t i8

cdef enum:
    # Path status and "no step" markers, compared with float64 state (exact integers).
    OPEN = 0
    MODIFIED = 1
    CLOSED = 2
    NO_STEP = -1
    # What pass C must do on a path (pass B's codes): the commonest events of an open
    # path each have a code and a branch-free handler; GENERAL is _settle_path_step.
    GENERAL = 1
    CURED = 2
    NEW_CALL = 3
    TOPUP = 4
    FULL_LIQUIDATION = 5
    N_CODES = 6
    CODE_BITS = 7           # the codes fit in these bits of pass B's return value ...
    WATCHED = 8             # ... and this one says that a path was in a call
    LOSS = 0
    FEES = 1
    INTEREST = 2
    PRINCIPAL = 3
    RESIDUAL = 4
    PROCEEDS = 5
    DEBT_CLOSED = 6
    UNREALISED = 7
    CALLS = 0
    LIQUIDATIONS = 1
    FULL_LIQUIDATIONS = 2
    TOPUPS = 3
    STEP_LOSS_ROW = 0
    STEP_FEES_ROW = 1
    STEP_OPEN_DEBT_ROW = 2
    STEP_COLLATERAL_VALUE_ROW = 3

# The enum above must match the shared configuration.
assert (LOSS, FEES, INTEREST, PRINCIPAL, RESIDUAL, PROCEEDS, DEBT_CLOSED, UNREALISED) == tuple(range(cfg.N_MONEY))
assert (CALLS, LIQUIDATIONS, FULL_LIQUIDATIONS, TOPUPS) == (cfg.CALLS, cfg.LIQUIDATIONS, cfg.FULL_LIQUIDATIONS, cfg.TOPUPS)

assert N_CODES == _args.N_CODES
assert CODE_BITS & WATCHED == 0 and (CODE_BITS + 1) & CODE_BITS == 0 and CODE_BITS >= N_CODES - 1
assert (OPEN, MODIFIED, CLOSED, NO_STEP) == (cfg.OPEN, cfg.MODIFIED, cfg.CLOSED, cfg.NO_STEP)
assert (STEP_LOSS_ROW, STEP_FEES_ROW, STEP_OPEN_DEBT_ROW, STEP_COLLATERAL_VALUE_ROW) == (
    cfg.STEP_LOSS, cfg.STEP_FEES, cfg.STEP_OPEN_DEBT, cfg.STEP_COLLATERAL_VALUE)

cdef extern from *:
    # Rows of one thread's scratch never overlap: telling the compiler lets it vectorise
    # the exact pass without run-time alias checks.
    ctypedef double* double_ptr "double * __restrict__"
    ctypedef const double* const_double_ptr "const double * __restrict__"
cdef Py_ssize_t LOAN_CHUNK = cfg.LOAN_CHUNK
cdef Py_ssize_t GROUP = cfg.ACTIVE_PATH_GROUP
cdef Py_ssize_t N_STEP_MONEY = cfg.N_STEP_MONEY
cdef double MARGIN = cfg.GUARD_MARGIN
cdef double TINY = cfg.GUARD_TINY
cdef double HUGE = cfg.GUARD_HUGE
cdef double INF = float("inf")
cdef u64 GOLDEN = 0x9E3779B97F4A7C15ULL
cdef u64 MIX1 = 0xBF58476D1CE4E5B9ULL
cdef u64 MIX2 = 0x94D049BB133111EBULL
cdef double TO_UNIT = 2.0 ** -53
cdef double TWO_53 = 2.0 ** 53


cdef struct LoanTerms:
    i64 index
    i64 asset
    double collateral0
    double debt0
    double growth
    double m
    double l
    double tau
    i64 cure
    double fee
    double topup_prob
    u64 loan_key
    # ``_uniform(...) < topup_prob`` exactly when the uniform's 53 bits (the hash >> 11)
    # are below topup_cut: the uniform is bits * 2**-53 (exact), so the test is
    # bits < topup_prob * 2**53, and for an integer that is bits < ceil(topup_prob *
    # 2**53) (exact for 0 <= p <= 1).
    u64 topup_cut


cdef struct PathScratch:
    # One thread slot's per-path rows (each ``width`` long) and accumulators.
    Py_ssize_t width
    Py_ssize_t n_assets
    bint record
    double* status
    double* guard
    double* call_start
    double* topup_due
    i64* pending
    i64* marked             # [N_CODES][width]: the marked paths, then one list per code
    double* collateral_now
    double* debt_now
    double* principal_now
    double* loss_on_path
    double* loss_by_path    # a loan's losses scattered back to block order
    i8* had_call
    u64* draw_keys          # the loan's mix64(loan key ^ path index), per path
    const i64* path_index   # [n_assets][n_paths]: the block's path offset + order
    i8* had_liquidation
    double* acc_money       # [N_MONEY][width]: the rows of the current loan's asset
    i64* acc_counts         # [N_COUNTS][width]: likewise
    double* acc_sold        # [n_assets][width]
    double* acc_step_sold   # [steps][n_assets][width]
    double* acc_step_loss   # [steps][width] (rows of one [N_STEP_MONEY][steps][width] block)
    double* acc_step_fees
    double* acc_step_open_debt
    double* acc_step_collateral_value
    # All assets' accumulators ([n_assets][N_MONEY][width], [n_assets][N_COUNTS][width],
    # [n_assets][N_STEP_MONEY][steps][width]); the pointers above select one asset's.
    double* money_all
    i64* counts_all
    double* step_money_all
    Py_ssize_t money_size
    Py_ssize_t counts_size
    Py_ssize_t step_rows_size   # steps * width


cdef inline u64 _mix64(u64 x) noexcept nogil:
    cdef u64 z = x + GOLDEN
    z = (z ^ (z >> 30)) * MIX1
    z = (z ^ (z >> 27)) * MIX2
    return z ^ (z >> 31)


cdef inline double _uniform(u64 loan_key, i64 path, i64 step) noexcept nogil:
    """Counter-based uniform in [0, 1) for (loan key, path, step); see ``ltvsim._rng``."""
    cdef u64 h = _mix64(_mix64(loan_key ^ <u64>path) ^ <u64>step)
    return <double>(h >> 11) * TO_UNIT


cdef void _set_draw_keys(u64 loan_key, const i64* path_index, Py_ssize_t n_paths,
                         u64* draw_keys) noexcept nogil:
    """Each path's draw key, ``mix64(loan key ^ path index)``: ``_uniform``'s first
    half, once per touched loan instead of once per call (contiguous: gcc vectorises)."""
    cdef Py_ssize_t p
    for p in range(n_paths):
        draw_keys[p] = _mix64(loan_key ^ <u64>path_index[p])


cdef inline double _guard_threshold(double debt_t, double collateral, double call_collateral) noexcept nogil:
    """Price above which an open path's LTV is provably below its margin-call LTV."""
    cdef double threshold = debt_t / call_collateral
    if not (TINY <= debt_t <= HUGE and TINY <= threshold <= HUGE):
        return INF
    if not (TINY <= collateral * threshold <= HUGE):
        return INF
    return threshold * (1.0 + MARGIN)


cdef inline void _reset_guard(Py_ssize_t p, PathScratch* s, double collateral0) noexcept nogil:
    """Guard factor of a path: 1 = price test applies, 0 = always look, inf = closed."""
    if s.status[p] == CLOSED:
        s.guard[p] = INF
    elif s.status[p] == MODIFIED or s.call_start[p] >= 0.0 or s.collateral_now[p] < collateral0:
        s.guard[p] = 0.0
    else:
        s.guard[p] = 1.0


cdef inline void _close_in_full(Py_ssize_t p, i64 t, double quantity, double proceeds,
                                double fee_due, double interest, double principal,
                                i64 asset, PathScratch* s) noexcept nogil:
    """Rule 7's waterfall for a full liquidation of ``quantity`` sold for ``proceeds``:
    fee, interest, principal, residual to the borrower, the shortfall a loss; the path
    closes. (The caller has ended its call and counted the liquidation.)"""
    cdef double fee_paid, remaining, interest_paid, principal_paid, residual, loss
    cdef Py_ssize_t w = s.width
    fee_paid = proceeds if proceeds < fee_due else fee_due
    remaining = proceeds - fee_paid
    interest_paid = remaining if remaining < interest else interest
    remaining = remaining - interest_paid
    principal_paid = remaining if remaining < principal else principal
    residual = remaining - principal_paid
    loss = (interest - interest_paid) + (principal - principal_paid)
    s.status[p] = CLOSED
    s.loss_on_path[p] = loss
    s.acc_counts[FULL_LIQUIDATIONS * w + p] += 1
    s.acc_money[LOSS * w + p] += loss
    s.acc_money[FEES * w + p] += fee_paid
    s.acc_money[INTEREST * w + p] += interest_paid
    s.acc_money[PRINCIPAL * w + p] += principal_paid
    s.acc_money[RESIDUAL * w + p] += residual
    s.acc_money[PROCEEDS * w + p] += proceeds
    s.acc_money[DEBT_CLOSED * w + p] += interest + principal
    s.acc_sold[asset * w + p] += quantity
    if s.record:
        s.acc_step_sold[(t * s.n_assets + asset) * w + p] += quantity
        s.acc_step_loss[t * w + p] += loss
        s.acc_step_fees[t * w + p] += fee_paid


cdef void _liquidate(Py_ssize_t p, i64 t, double price, double debt, double principal, double q,
                     const LoanTerms* loan, bint partial, PathScratch* s) noexcept nogil:
    """Rule 7: sell collateral at the execution price and pay fee, interest, principal."""
    cdef double execution = price  # no slippage without market impact
    cdef double interest = debt - principal
    cdef double denominator, sold, proceeds, repaid, fee_paid, interest_paid
    cdef double principal_paid, remaining_principal
    cdef Py_ssize_t w = s.width
    if interest < 0.0:
        interest = 0.0
    s.call_start[p] = NO_STEP
    s.topup_due[p] = NO_STEP
    s.had_liquidation[p] = 1
    s.acc_counts[LIQUIDATIONS * w + p] += 1

    if partial:
        denominator = execution / (1.0 + loan.fee) - loan.tau * price
        if denominator > 0.0:
            sold = (debt - loan.tau * q * price) / denominator
            if sold < q:
                proceeds = sold * execution
                repaid = proceeds / (1.0 + loan.fee)
                fee_paid = loan.fee * repaid
                interest_paid = repaid if repaid < interest else interest
                principal_paid = repaid - interest_paid
                remaining_principal = principal - principal_paid
                s.debt_now[p] = debt - repaid
                s.principal_now[p] = remaining_principal if remaining_principal > 0.0 else 0.0
                s.collateral_now[p] = q - sold
                s.status[p] = MODIFIED
                s.acc_money[FEES * w + p] += fee_paid
                s.acc_money[INTEREST * w + p] += interest_paid
                s.acc_money[PRINCIPAL * w + p] += principal_paid
                s.acc_money[PROCEEDS * w + p] += proceeds
                s.acc_money[DEBT_CLOSED * w + p] += repaid
                s.acc_sold[loan.asset * w + p] += sold
                if s.record:
                    s.acc_step_sold[(t * s.n_assets + loan.asset) * w + p] += sold
                    s.acc_step_fees[t * w + p] += fee_paid
                return

    # Full liquidation: the waterfall.
    _close_in_full(p, t, q, q * execution, loan.fee * debt, interest, principal, loan.asset, s)


cdef void _settle_path_step(const LoanTerms* loan, Py_ssize_t p, i64 t, i64 path_index,
                            double price, double debt_t, bint partial, PathScratch* s) noexcept nogil:
    """Rules 1-7 of the spec for one loan on open path ``p`` at step ``t``."""
    cdef double debt, principal, q, ltv
    cdef bint liquidate = False
    # 1. Accrue (the shared schedule already holds D * g for unmodified paths).
    if s.status[p] == MODIFIED:
        debt = s.debt_now[p]
        if t >= 1:
            debt = debt * loan.growth
        s.debt_now[p] = debt
        principal = s.principal_now[p]
    else:
        debt = debt_t
        principal = loan.debt0
    q = s.collateral_now[p]
    # 2-3. Price and LTV.
    ltv = debt / (q * price)

    # 4. Scheduled top-up: raise collateral to the target LTV if still called.
    if s.topup_due[p] == t:
        s.topup_due[p] = NO_STEP
        if ltv >= loan.m:
            s.collateral_now[p] = debt / (loan.tau * price)
            s.call_start[p] = NO_STEP
            s.acc_counts[TOPUPS * s.width + p] += 1
            _reset_guard(p, s, loan.collateral0)
            return

    if ltv >= loan.l:
        # 5. Liquidation threshold breached.
        liquidate = True
    elif ltv >= loan.m:
        # 6. In the call band.
        if s.call_start[p] < 0.0:
            s.call_start[p] = t
            s.acc_counts[CALLS * s.width + p] += 1
            s.had_call[p] = 1
            if _uniform(loan.loan_key, path_index, t) < loan.topup_prob:
                s.topup_due[p] = t + 1
        elif loan.cure >= 1 and t - s.call_start[p] >= loan.cure:
            liquidate = True
    else:
        # Below the call level: a call in progress is cured by the market.
        s.call_start[p] = NO_STEP
        s.topup_due[p] = NO_STEP

    if liquidate:
        _liquidate(p, t, price, debt, principal, q, loan, partial, s)
    _reset_guard(p, s, loan.collateral0)


cdef i64 _count_near(const_double_ptr row, const_double_ptr guard, Py_ssize_t n_paths,
                     double threshold) noexcept nogil:
    """Pass A: how many paths are at or below the guard price (guard 0: always)."""
    cdef i64 near = 0
    cdef Py_ssize_t p
    for p in range(n_paths):
        near += <i64>(row[p] * guard[p] <= threshold)
    return near


cdef i64 _mark_events(const_double_ptr row, Py_ssize_t n_paths, double step,
                      double debt_t, double m, double l, double expire_after,
                      i64 liquidation_code, bint partial, const_double_ptr status,
                      const_double_ptr call_start, const_double_ptr topup_due,
                      i64* pending, const_double_ptr collateral_now) noexcept nogil:
    """Pass B: the exact LTV of every path, and a code for what rules 4-7 do there.

    ``pending`` becomes, as ``_settle_path_step`` would decide on an open path: TOPUP (a
    top-up falls due and the LTV is still at or above m), ``liquidation_code`` (the LTV
    at or above l, or an expired cure period; FULL_LIQUIDATION in full mode), NEW_CALL
    (rule 6's new call), CURED (back below m with a call in progress); GENERAL on a
    partially sold path (its own debt accrues); 0 otherwise, and on a closed path.
    A top-up is only ever due during a call (rules 4-6 set and clear the two together),
    so "due now" implies "called" (the codes exclude each other only given that; a code
    outside 1-5 would fall through every list, and the reference tests would see it). Returns the codes OR-ed together (non-zero if any
    path is marked), plus WATCHED if any path was in a call: then the next step skips
    pass A (a shortcut only: pass B on every path is always exact).
    """
    cdef Py_ssize_t p
    cdef double ltv, start
    # 64-bit integer truth values: the same lane width as the doubles, so gcc vectorises.
    # The four codes of an open path exclude each other, in _settle_path_step's order.
    cdef i64 called, in_band, due_now, above_l, expired, code, any_marked = 0
    for p in range(n_paths):
        ltv = debt_t / (collateral_now[p] * row[p])
        start = call_start[p]
        called = start >= 0.0
        in_band = ltv >= m
        above_l = ltv >= l
        due_now = topup_due[p] == step
        expired = called & (step - start >= expire_after)
        code = ((in_band & due_now) * TOPUP
                + (in_band & (not due_now) & (above_l | expired)) * liquidation_code
                + (in_band & (not called) & (not above_l)) * NEW_CALL
                + ((not in_band) & called) * CURED)
        code = (status[p] == OPEN) * code
        if partial:  # loop-invariant (gcc unswitches it): only partial mode modifies paths
            code = code + (status[p] == MODIFIED) * GENERAL
        pending[p] = code
        any_marked |= code | (called * WATCHED)
    return any_marked


cdef i64 _compact(const i64* pending, Py_ssize_t n_paths, i64* marked) noexcept nogil:
    """The paths with a non-zero code, in path order, into ``marked``; returns how many
    (branch-free: no misprediction per path)."""
    cdef i64 n = 0
    cdef Py_ssize_t p
    for p in range(n_paths):
        marked[n] = p
        n += pending[p] != 0
    return n


cdef void _split(const i64* marked, Py_ssize_t n_marked, const i64* pending,
                 Py_ssize_t width, bint partial, i64* lists, i64* counts) noexcept nogil:
    """The marked paths into one list per code (``lists[code * width:]``), each in path
    order; ``counts[code]`` how many (branch-free). Full mode has no GENERAL path."""
    cdef i64 n_general = 0, n_cured = 0, n_call = 0, n_topup = 0, n_full = 0, code
    cdef Py_ssize_t k, q
    cdef i64* general = lists + GENERAL * width
    cdef i64* cured = lists + CURED * width
    cdef i64* new_call = lists + NEW_CALL * width
    cdef i64* topup = lists + TOPUP * width
    cdef i64* full = lists + FULL_LIQUIDATION * width
    for k in range(n_marked):
        q = marked[k]
        code = pending[q]
        if partial:  # loop-invariant: gcc unswitches the loop
            general[n_general] = q
            n_general += code == GENERAL
        cured[n_cured] = q
        new_call[n_call] = q
        topup[n_topup] = q
        full[n_full] = q
        n_cured += code == CURED
        n_call += code == NEW_CALL
        n_topup += code == TOPUP
        n_full += code == FULL_LIQUIDATION
    counts[GENERAL] = n_general
    counts[CURED] = n_cured
    counts[NEW_CALL] = n_call
    counts[TOPUP] = n_topup
    counts[FULL_LIQUIDATION] = n_full


cdef void _new_calls(const i64* paths, i64 n, const LoanTerms* loan, i64 t,
                     PathScratch* s) noexcept nogil:
    """Rule 6 on open paths with no call (_settle_path_step's new-call branch and
    _reset_guard: guard 0 while called). No call means no top-up due (rules 4-6 set and
    clear the two together): topup_due is NO_STEP and becomes t + 1 if the draw says so,
    without a branch (a branch on the
    draw would wait for its hash): ``draw < topup_prob`` is the exact integer test
    ``bits < topup_cut`` (see ``LoanTerms.topup_cut``), and the hash's first half is
    the path's draw key."""
    cdef Py_ssize_t k, q
    cdef double step = <double>t
    cdef i64 drawn, topup_step = t + 1 - NO_STEP
    cdef double_ptr call_start = s.call_start
    cdef double_ptr guard = s.guard
    cdef double_ptr topup_due = s.topup_due
    cdef i64* calls = s.acc_counts + CALLS * s.width
    cdef i8* had_call = s.had_call
    cdef const u64* draw_keys = s.draw_keys
    cdef u64 topup_cut = loan.topup_cut
    for k in range(n):
        q = paths[k]
        call_start[q] = step
        calls[q] += 1
        had_call[q] = 1
        guard[q] = 0.0
        drawn = (_mix64(draw_keys[q] ^ <u64>t) >> 11) < topup_cut
        topup_due[q] = <double>(NO_STEP + drawn * topup_step)


cdef void _cures(const i64* paths, i64 n, double collateral0, PathScratch* s) noexcept nogil:
    """Back below the call level: the call in progress (and its top-up) is cured by the
    market; the guard as _reset_guard sets it."""
    cdef Py_ssize_t k, q
    for k in range(n):
        q = paths[k]
        s.call_start[q] = NO_STEP
        s.topup_due[q] = NO_STEP
        s.guard[q] = 1.0 if s.collateral_now[q] >= collateral0 else 0.0


cdef void _topups(const i64* paths, i64 n, const LoanTerms* loan, const double* row,
                  double debt_t, PathScratch* s) noexcept nogil:
    """Rule 4 on open paths still called when the top-up falls due: collateral raised to
    the target LTV (_settle_path_step's top-up branch and _reset_guard)."""
    cdef Py_ssize_t k, q
    cdef double collateral
    cdef i64* topups = s.acc_counts + TOPUPS * s.width
    for k in range(n):
        q = paths[k]
        collateral = debt_t / (loan.tau * row[q])
        s.topup_due[q] = NO_STEP
        s.collateral_now[q] = collateral
        s.call_start[q] = NO_STEP
        topups[q] += 1
        s.guard[q] = 0.0 if collateral < loan.collateral0 else 1.0


cdef void _full_liquidations(const i64* paths, i64 n, const LoanTerms* loan, i64 t,
                             const double* row, double debt_t, PathScratch* s) noexcept nogil:
    """Rules 5 and 7 on open paths in full mode: _liquidate's full liquidation (debt on
    the shared schedule, principal the initial debt), without a branch per path."""
    cdef Py_ssize_t k, q, w = s.width
    cdef double principal = loan.debt0
    cdef double interest = debt_t - principal
    cdef double fee_due = loan.fee * debt_t
    cdef double quantity
    if interest < 0.0:
        interest = 0.0
    for k in range(n):
        q = paths[k]
        quantity = s.collateral_now[q]
        s.call_start[q] = NO_STEP
        s.topup_due[q] = NO_STEP
        s.had_liquidation[q] = 1
        s.acc_counts[LIQUIDATIONS * w + q] += 1
        s.guard[q] = INF
        _close_in_full(q, t, quantity, quantity * row[q], fee_due, interest, principal,
                       loan.asset, s)


cdef void _record_exposure(const_double_ptr row, Py_ssize_t n_paths, double debt_t,
                           const_double_ptr status, const_double_ptr debt_now,
                           const_double_ptr collateral_now, double_ptr open_debt,
                           double_ptr collateral_value) noexcept nogil:
    """Pass D (record_steps only): add each open path's debt and collateral value."""
    cdef Py_ssize_t p
    cdef i64 is_open
    cdef double debt
    for p in range(n_paths):
        is_open = status[p] != CLOSED
        debt = debt_now[p] if status[p] == MODIFIED else debt_t
        open_debt[p] += debt if is_open else 0.0
        collateral_value[p] += collateral_now[p] * row[p] if is_open else 0.0


cdef Py_ssize_t _active_paths(const double* path_min, Py_ssize_t n_paths, Py_ssize_t n_steps,
                              double debt0, double growth, double collateral0,
                              double call_collateral) noexcept nogil:
    """Near-trigger skipping: how many of the sorted paths (a prefix) the loan must run on.

    See the numba kernel's ``_active_paths`` for why a skipped path would have added
    exactly nothing. Returns the count of sorted minima <= the larger of the first and
    last step's thresholds, rounded up to whole groups (at most all paths); all paths
    when a threshold is out of range.
    """
    cdef double debt_t = debt0
    cdef double first, last, trigger
    cdef Py_ssize_t t, lo = 0, hi = n_paths, mid, n_active
    for t in range(n_steps):
        debt_t = debt_t * growth
    first = _guard_threshold(debt0, collateral0, call_collateral)
    last = _guard_threshold(debt_t, collateral0, call_collateral)
    if not (first < INF and last < INF):
        return n_paths
    trigger = first if first > last else last
    while lo < hi:
        mid = (lo + hi) >> 1
        if path_min[mid] <= trigger:
            lo = mid + 1
        else:
            hi = mid
    n_active = (lo + GROUP - 1) // GROUP * GROUP
    return n_active if n_active < n_paths else n_paths


cdef void _add_loan_loss(Py_ssize_t i, const i64* path_of, Py_ssize_t n_active,
                         Py_ssize_t n_paths, double* loss_on_path, double* loss_by_path,
                         double* loan_loss) noexcept nogil:
    """Add the loan's losses on the block to ``loan_loss[i]`` in block path order (as
    the reference does, whatever the layout); scratch rows left at 0."""
    cdef bint lost = False
    cdef Py_ssize_t p
    cdef double total_loss
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


cdef Py_ssize_t _evaluate_loan(const LoanTerms* loan, const double* prices,
                               const double* price_floor, const double* path_min,
                               const i64* order, bint skip, Py_ssize_t n_steps,
                               Py_ssize_t n_paths, Py_ssize_t n_groups, i64 path_offset,
                               bint partial, PathScratch* s, double* loan_loss,
                               i64* loan_calls, i64* loan_liquidated) noexcept nogil:
    """All steps of one loan on the block's paths that can come near its call; scratch
    left reset. Returns how many paths that was (the loan's active prefix).

    Paths are in the sorted layout of the loan's asset (``_path_order``): position ``j``
    is block path ``order[asset, j]``, which keys the top-up draws. With ``skip`` the
    loan runs on the prefix ``_active_paths`` finds (possibly none), otherwise on all.
    ``price_floor[asset, t, g]`` is the lowest price of the first ``8 (g + 1)`` sorted
    paths: until a loan is touched every path has guard 1, so pass A reduces to
    comparing the prefix's floor with the step's threshold, and a loan that is never
    touched costs O(1) per step.
    """
    cdef double collateral0 = loan.collateral0
    cdef double m = loan.m
    cdef double l = loan.l
    cdef double call_collateral = collateral0 * m
    cdef bint guard_usable = (TINY <= m <= HUGE and TINY <= collateral0 <= HUGE
                              and TINY <= call_collateral <= HUGE)
    cdef bint can_expire = loan.cure >= 1
    cdef double cure_steps = <double>loan.cure
    cdef bint touched = False
    cdef double debt_t = loan.debt0
    cdef double threshold, debt, shortfall
    cdef const double* row
    cdef const double* final
    cdef const double* floor_row
    cdef const i64* path_of = order + loan.asset * n_paths
    cdef double* status = s.status
    cdef double* guard = s.guard
    cdef double* call_start = s.call_start
    cdef double* topup_due = s.topup_due
    cdef i64* pending = s.pending
    cdef double* collateral_now = s.collateral_now
    cdef double* debt_now = s.debt_now
    cdef double* unrealised = s.acc_money + UNREALISED * s.width
    cdef Py_ssize_t t, p, q, k, floor_group
    cdef i64* marked = s.marked
    cdef Py_ssize_t n_active = n_paths
    cdef i64 n_pending, flags
    cdef bint watched = False
    cdef bint near
    cdef double expire_after = cure_steps if can_expire else INF
    cdef i64 counts[N_CODES]
    cdef i64 liquidation_code = GENERAL if partial else FULL_LIQUIDATION
    cdef i64 n_called, n_liquidated
    if skip and guard_usable and m <= 1.0 and not s.record:
        n_active = _active_paths(path_min + loan.asset * n_paths, n_paths, n_steps,
                                 loan.debt0, loan.growth, collateral0, call_collateral)
        if n_active == 0:
            return 0
    floor_group = (n_active - 1) // GROUP
    if s.record:  # pass D reads every path's collateral from step 0
        for p in range(n_paths):
            collateral_now[p] = collateral0
    for t in range(n_steps + 1):
        if t >= 1:
            debt_t = debt_t * loan.growth
        row = prices + (loan.asset * (n_steps + 1) + t) * n_paths
        # A. Is any path near its call level (a path in a call, or partially sold, has
        # guard 0 and always is; a closed one only with an infinite threshold)? Skipped
        # after a step with a path in a call or an event: pass B runs anyway.
        near = watched
        if not near:
            threshold = _guard_threshold(debt_t, collateral0, call_collateral) if guard_usable else INF
            if touched:
                near = _count_near(row, guard, n_active, threshold) != 0
            else:
                near = price_floor[(loan.asset * (n_steps + 1) + t) * n_groups + floor_group] <= threshold
        if near:
            if not touched:
                touched = True
                if not s.record:
                    for p in range(n_active):
                        collateral_now[p] = collateral0
                _set_draw_keys(loan.loan_key, s.path_index + loan.asset * n_paths, n_active,
                               s.draw_keys)
            # B. Exact LTV everywhere; events and market cures coded in pending.
            flags = _mark_events(row, n_active, <double>t, debt_t, m, l, expire_after,
                                 liquidation_code, partial, status, call_start, topup_due,
                                 pending, collateral_now)
            watched = flags != 0
            # C. The spec's rules on the paths marked. Paths of one loan never interact,
            # so each code's paths go through their own handler, in path order.
            if flags & CODE_BITS:
                n_pending = _compact(pending, n_active, marked)
                _split(marked, n_pending, pending, s.width, partial, marked, counts)
                if counts[NEW_CALL] > 0:
                    _new_calls(marked + NEW_CALL * s.width, counts[NEW_CALL], loan, t, s)
                if counts[CURED] > 0:
                    _cures(marked + CURED * s.width, counts[CURED], collateral0, s)
                if counts[TOPUP] > 0:
                    _topups(marked + TOPUP * s.width, counts[TOPUP], loan, row, debt_t, s)
                if counts[FULL_LIQUIDATION] > 0:
                    _full_liquidations(marked + FULL_LIQUIDATION * s.width,
                                       counts[FULL_LIQUIDATION], loan, t, row, debt_t, s)
                for k in range(counts[GENERAL]):
                    q = marked[GENERAL * s.width + k]
                    _settle_path_step(loan, q, t, path_offset + path_of[q], row[q], debt_t,
                                      partial, s)
        if s.record:
            # D. The book's exposure after the step: debt and collateral value still open.
            _record_exposure(row, n_paths, debt_t, status, debt_now, collateral_now,
                             s.acc_step_open_debt + t * s.width,
                             s.acc_step_collateral_value + t * s.width)

    # 8. Horizon: open loans report their mark-to-market shortfall.
    final = prices + (loan.asset * (n_steps + 1) + n_steps) * n_paths
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
        debt = debt_now[p] if status[p] == MODIFIED else debt_t
        shortfall = debt - collateral_now[p] * final[p]
        if status[p] == CLOSED or shortfall < 0.0:
            shortfall = 0.0
        unrealised[p] += shortfall
    n_called = 0
    n_liquidated = 0
    for p in range(n_active):
        n_called += s.had_call[p]
        n_liquidated += s.had_liquidation[p]
        # Leave the scratch reset for the next loan.
        status[p] = OPEN
        guard[p] = 1.0
        call_start[p] = NO_STEP
        topup_due[p] = NO_STEP
        s.had_call[p] = 0
        s.had_liquidation[p] = 0
    if n_liquidated != 0:
        _add_loan_loss(loan.index, path_of, n_active, n_paths, s.loss_on_path,
                       s.loss_by_path, loan_loss)
    loan_calls[loan.index] += n_called
    loan_liquidated[loan.index] += n_liquidated
    return n_active


cdef i64 _evaluate_chunk(Py_ssize_t chunk, const double* prices, const double* price_floor,
                         const double* path_min, const i64* order, bint skip,
                         Py_ssize_t n_steps, Py_ssize_t n_paths, Py_ssize_t n_groups,
                         Py_ssize_t n_loans,
                         const i64* asset_of, const double* collateral_of, const double* debt_of,
                         const double* growth_of, const double* m_of, const double* l_of,
                         const double* tau_of, const i64* cure_of, const double* fee_of,
                         const double* topup_of, u64 seed_key, i64 path_offset, bint partial,
                         PathScratch* s, double* loan_loss, i64* loan_calls,
                         i64* loan_liquidated) noexcept nogil:
    """Every loan of one chunk, in loan order, into one thread slot's scratch (each into
    the accumulators of its asset). Returns the loan-paths evaluated."""
    cdef LoanTerms loan
    cdef Py_ssize_t i
    cdef i64 evaluated = 0
    cdef double* step_money
    cdef Py_ssize_t stop = (chunk + 1) * LOAN_CHUNK
    if stop > n_loans:
        stop = n_loans
    for i in range(chunk * LOAN_CHUNK, stop):
        loan.index = i
        loan.asset = asset_of[i]
        loan.collateral0 = collateral_of[i]
        loan.debt0 = debt_of[i]
        loan.growth = growth_of[i]
        loan.m = m_of[i]
        loan.l = l_of[i]
        loan.tau = tau_of[i]
        loan.cure = cure_of[i]
        loan.fee = fee_of[i]
        loan.topup_prob = topup_of[i]
        loan.loan_key = _mix64(seed_key ^ <u64>i)
        loan.topup_cut = <u64>ceil(loan.topup_prob * TWO_53)
        s.acc_money = s.money_all + loan.asset * s.money_size
        s.acc_counts = s.counts_all + loan.asset * s.counts_size
        if s.record:
            step_money = s.step_money_all + loan.asset * N_STEP_MONEY * s.step_rows_size
            s.acc_step_loss = step_money + STEP_LOSS_ROW * s.step_rows_size
            s.acc_step_fees = step_money + STEP_FEES_ROW * s.step_rows_size
            s.acc_step_open_debt = step_money + STEP_OPEN_DEBT_ROW * s.step_rows_size
            s.acc_step_collateral_value = step_money + STEP_COLLATERAL_VALUE_ROW * s.step_rows_size
        evaluated += _evaluate_loan(&loan, prices, price_floor, path_min, order, skip, n_steps,
                                    n_paths, n_groups, path_offset, partial, s, loan_loss,
                                    loan_calls, loan_liquidated)
    return evaluated


def evaluate_block(prices, loans, seed, path_offset, partial, n_threads, out, mode=None):
    """Evaluate every loan on one block of paths and add the results into ``out``.

    Same contract as :func:`ltvsim.backends._numpy_kernel.evaluate_block`. Releases the
    GIL while it runs. ``mode`` (private; default ``_path_order.MODE``) selects the
    layout and near-trigger skipping, which never change a result. Returns the number
    of loan-paths the passes ran on (a test hook).
    """
    layout = _path_order.sort_paths(prices, mode)
    cdef const double[:, :, ::1] price_view = layout.prices
    cdef const double[:, :, ::1] floor_view = layout.floor
    cdef const double[:, ::1] min_view = layout.path_min
    cdef const i64[:, ::1] order = layout.order
    # Each sorted position's global path index, which keys the top-up draws.
    cdef const i64[:, ::1] path_index = layout.order + path_offset
    cdef bint skip = layout.skip
    cdef const i64[::1] asset_of = loans.asset
    cdef const double[::1] collateral_of = loans.collateral
    cdef const double[::1] debt_of = loans.debt
    cdef const double[::1] growth_of = loans.growth
    cdef const double[::1] m_of = loans.margin_call_ltv
    cdef const double[::1] l_of = loans.liquidation_ltv
    cdef const double[::1] tau_of = loans.target_ltv
    cdef const i64[::1] cure_of = loans.cure_steps
    cdef const double[::1] fee_of = loans.fee
    cdef const double[::1] topup_of = loans.topup_prob
    cdef double[:, ::1] path_money = out.path_money
    cdef i64[:, ::1] path_counts = out.path_counts
    cdef double[:, ::1] path_sold = out.path_sold
    cdef double[:, :, ::1] step_sold = out.step_sold
    cdef double[:, ::1] step_loss = out.step_loss
    cdef double[:, ::1] step_fees = out.step_fees
    cdef double[:, ::1] step_open_debt = out.step_open_debt
    cdef double[:, ::1] step_collateral_value = out.step_collateral_value
    cdef double[::1] loan_loss = out.loan_loss
    cdef i64[::1] loan_calls = out.loan_calls
    cdef i64[::1] loan_liquidated = out.loan_liquidated

    cdef Py_ssize_t n_assets = price_view.shape[0]
    cdef Py_ssize_t n_steps = price_view.shape[1] - 1
    cdef Py_ssize_t n_paths = price_view.shape[2]
    cdef Py_ssize_t n_groups = floor_view.shape[2]
    cdef Py_ssize_t n_loans = debt_of.shape[0]
    cdef bint record = step_loss.shape[0] > 0
    cdef int n_workers = max(1, n_threads)
    cdef Py_ssize_t n_slots = _args.slot_count(n_loans, n_workers, n_paths, n_steps, n_assets, record)
    cdef u64 seed_key = mix64(int(seed) & MASK64)
    cdef i64 offset = path_offset
    cdef bint is_partial = bool(partial)
    cdef Py_ssize_t n_money = path_money.shape[0]
    cdef Py_ssize_t n_counts = path_counts.shape[0]
    cdef Py_ssize_t n_step_rows = step_loss.shape[0]

    scratch = _args.allocate_scratch(n_slots, n_paths, n_steps, n_assets, record)
    cdef double[:, :, ::1] path_state = scratch.path_state
    cdef i64[:, ::1] pending = scratch.pending
    cdef i64[:, ::1] marked = scratch.marked
    cdef i8[:, ::1] had_call = scratch.had_call
    cdef u64[:, ::1] draw_keys = scratch.draw_keys
    cdef i8[:, ::1] had_liquidation = scratch.had_liquidation
    cdef double[:, :, :, ::1] acc_money = scratch.acc_money
    cdef i64[:, :, :, ::1] acc_counts = scratch.acc_counts
    cdef double[:, :, ::1] acc_sold = scratch.acc_sold
    cdef double[:, :, :, ::1] acc_step_sold = scratch.acc_step_sold
    cdef double[:, :, :, :, ::1] acc_step_money = scratch.acc_step_money
    cdef i64[::1] evaluated = scratch.evaluated
    cdef Py_ssize_t width = path_state.shape[2]

    cdef PathScratch* slots = <PathScratch*> malloc(n_slots * sizeof(PathScratch))
    if slots == NULL:
        raise MemoryError()
    cdef Py_ssize_t slot, k, a, t, j, p, wave, n_busy
    cdef Py_ssize_t n_chunks = (n_loans + LOAN_CHUNK - 1) // LOAN_CHUNK
    cdef const double* price_ptr = &price_view[0, 0, 0]
    cdef const double* floor_ptr = &floor_view[0, 0, 0]
    cdef const double* min_ptr = &min_view[0, 0]
    cdef const i64* order_ptr = &order[0, 0]
    cdef const i64* path_of
    cdef Py_ssize_t money_size = n_money * width
    cdef Py_ssize_t counts_size = n_counts * width
    cdef Py_ssize_t sold_size = n_assets * width
    cdef Py_ssize_t step_sold_size = n_step_rows * n_assets * width
    cdef Py_ssize_t step_money_size = n_assets * N_STEP_MONEY * n_step_rows * width
    cdef double* step_money
    try:
        for slot in range(n_slots):
            slots[slot].width = width
            slots[slot].n_assets = n_assets
            slots[slot].record = record
            slots[slot].status = &path_state[slot, _args.STATUS, 0]
            slots[slot].guard = &path_state[slot, _args.GUARD, 0]
            slots[slot].call_start = &path_state[slot, _args.CALL_START, 0]
            slots[slot].topup_due = &path_state[slot, _args.TOPUP_DUE, 0]
            slots[slot].pending = &pending[slot, 0]
            slots[slot].marked = &marked[slot, 0]
            slots[slot].collateral_now = &path_state[slot, _args.COLLATERAL_NOW, 0]
            slots[slot].debt_now = &path_state[slot, _args.DEBT_NOW, 0]
            slots[slot].principal_now = &path_state[slot, _args.PRINCIPAL_NOW, 0]
            slots[slot].loss_on_path = &path_state[slot, _args.LOSS_ON_PATH, 0]
            slots[slot].loss_by_path = &path_state[slot, _args.LOSS_BY_PATH, 0]
            slots[slot].had_call = &had_call[slot, 0]
            slots[slot].draw_keys = &draw_keys[slot, 0]
            slots[slot].path_index = &path_index[0, 0]
            slots[slot].had_liquidation = &had_liquidation[slot, 0]
            slots[slot].money_all = &acc_money[slot, 0, 0, 0]
            slots[slot].counts_all = &acc_counts[slot, 0, 0, 0]
            slots[slot].money_size = money_size
            slots[slot].counts_size = counts_size
            slots[slot].step_rows_size = n_step_rows * width
            slots[slot].acc_money = slots[slot].money_all
            slots[slot].acc_counts = slots[slot].counts_all
            slots[slot].acc_sold = &acc_sold[slot, 0, 0]
            slots[slot].acc_step_sold = &acc_step_sold[slot, 0, 0, 0] if record else NULL
            slots[slot].step_money_all = &acc_step_money[slot, 0, 0, 0, 0] if record else NULL
            slots[slot].acc_step_loss = NULL
            slots[slot].acc_step_fees = NULL
            slots[slot].acc_step_open_debt = NULL
            slots[slot].acc_step_collateral_value = NULL
        with nogil:
            wave = 0
            while wave < n_chunks:
                n_busy = n_chunks - wave
                if n_busy > n_slots:
                    n_busy = n_slots
                for slot in prange(n_busy, num_threads=n_workers, schedule="dynamic", chunksize=1):
                    memset(slots[slot].money_all, 0, n_assets * money_size * sizeof(double))
                    memset(slots[slot].counts_all, 0, n_assets * counts_size * sizeof(i64))
                    memset(slots[slot].acc_sold, 0, sold_size * sizeof(double))
                    if record:
                        memset(slots[slot].acc_step_sold, 0, step_sold_size * sizeof(double))
                        memset(slots[slot].step_money_all, 0, step_money_size * sizeof(double))
                    evaluated[slot] += _evaluate_chunk(
                        wave + slot, price_ptr, floor_ptr, min_ptr, order_ptr, skip, n_steps,
                        n_paths, n_groups, n_loans, &asset_of[0], &collateral_of[0],
                        &debt_of[0], &growth_of[0], &m_of[0], &l_of[0], &tau_of[0],
                        &cure_of[0], &fee_of[0], &topup_of[0], seed_key, offset, is_partial,
                        &slots[slot], &loan_loss[0], &loan_calls[0], &loan_liquidated[0])
                # Serial reduction in chunk order, asset by asset, each asset's sums
                # scattered from sorted position back to block order: the result depends
                # neither on n_slots nor on the layout (``_config.ACTIVE_PATH_GROUP``).
                for slot in range(n_busy):
                    for a in range(n_assets):
                        path_of = order_ptr + a * n_paths
                        for k in range(n_money):
                            for j in range(n_paths):
                                path_money[k, path_of[j]] += acc_money[slot, a, k, j]
                        for k in range(n_counts):
                            for j in range(n_paths):
                                path_counts[k, path_of[j]] += acc_counts[slot, a, k, j]
                        for j in range(n_paths):
                            path_sold[a, path_of[j]] += acc_sold[slot, a, j]
                        if record:
                            step_money = slots[slot].step_money_all + a * N_STEP_MONEY * n_step_rows * width
                            for t in range(n_step_rows):
                                for j in range(n_paths):
                                    p = path_of[j]
                                    step_loss[t, p] += step_money[(STEP_LOSS_ROW * n_step_rows + t) * width + j]
                                    step_fees[t, p] += step_money[(STEP_FEES_ROW * n_step_rows + t) * width + j]
                                    step_open_debt[t, p] += step_money[(STEP_OPEN_DEBT_ROW * n_step_rows + t) * width + j]
                                    step_collateral_value[t, p] += step_money[(STEP_COLLATERAL_VALUE_ROW * n_step_rows + t) * width + j]
                                    step_sold[t, a, p] += acc_step_sold[slot, t, a, j]
                wave += n_slots
    finally:
        free(slots)
    return int(scratch.evaluated.sum())
