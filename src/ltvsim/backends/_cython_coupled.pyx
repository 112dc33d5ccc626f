# cython: language_level=3
"""The coupled kernel (market impact, cascades, lenders' rules, crossings) in Cython:
path-outer, one path at a time per OpenMP thread, only the loans that can act.

A line-by-line twin of ``_numba_coupled.py`` (see its module docstring for the design
and why): the same float expressions in the
same order and the same summation orders, so the results are those of the naive
reference ``tests/naive_coupled.py`` to the last bit.

Paths go in rounds of ``n_workers x paths_per_worker``: an OpenMP ``prange`` over the
round's paths, heaviest first on a dynamic schedule, each run by one thread with its own
scratch. Margin-call and liquidation counts are kept per slot per thread (integers); a
round's losses are logged per path and merged serially in path order after the round,
so no bit depends on the thread count or on which thread ran a path.

Built with ``-ffp-contract=off`` (no fused multiply-add); ``exp``, ``expm1``, ``log`` and
``sqrt`` are libm's.
"""
from cython.parallel cimport prange, threadid
from libc.math cimport exp, expm1, log, sqrt
from libc.string cimport memcpy, memset
cimport numpy as cnp

import numpy as np

from .. import _config as cfg
from .._rng import MASK64, mix64
from . import _coupled_args as _ca

ctypedef unsigned long long u64
ctypedef cnp.int64_t i64
ctypedef cnp.int8_t i8
ctypedef cnp.int32_t i32

cdef enum:
    OPEN = 0
    LIQUIDATING = 1
    CLOSED = 2
    ORDER_FULL = 1
    ORDER_PART = 2
    MODE_FULL = 0
    MODE_PARTIAL = 1
    MODE_CLOSE_FACTOR = 2
    LOSS = 0
    FEES = 1
    INTEREST = 2
    PRINCIPAL = 3
    RESIDUAL = 4
    PROCEEDS = 5
    DEBT_CLOSED = 6
    UNREALISED = 7
    N_MONEY = 8
    CALLS = 0
    LIQUIDATIONS = 1
    FULL_LIQUIDATIONS = 2
    TOPUPS = 3
    N_COUNTS = 4
    STEP_LOSS = 0
    STEP_FEES = 1
    STEP_OPEN_DEBT = 2
    STEP_COLLATERAL_VALUE = 3
    N_STEP_MONEY = 4
    SLOT_BITS = 32
    RADIX_BITS = 11
    N_PER_ASSET = 14
    N_ADDS = 8
    SALE_NONE = 0
    SALE_CLOSED_WITH_LOSS = 1
    SALE_CLOSED = 2
    SALE_PART = 3
    # Loans per chunk of the sums: a compile-time constant, so dividing by it is a shift.
    LOAN_CHUNK = 2048
    NO_ACTION = 0
    LIQUIDATED = 1
    TOPPED_UP = 2

assert (LOSS, FEES, INTEREST, PRINCIPAL, RESIDUAL, PROCEEDS, DEBT_CLOSED, UNREALISED) == tuple(range(cfg.N_MONEY))
assert LOAN_CHUNK == cfg.LOAN_CHUNK, "the coupled kernel's LOAN_CHUNK must be _config's"
assert N_MONEY == cfg.N_MONEY and N_COUNTS == cfg.N_COUNTS and N_STEP_MONEY == cfg.N_STEP_MONEY
assert (CALLS, LIQUIDATIONS, FULL_LIQUIDATIONS, TOPUPS) == (cfg.CALLS, cfg.LIQUIDATIONS, cfg.FULL_LIQUIDATIONS, cfg.TOPUPS)
assert (STEP_LOSS, STEP_FEES, STEP_OPEN_DEBT, STEP_COLLATERAL_VALUE) == (
    cfg.STEP_LOSS, cfg.STEP_FEES, cfg.STEP_OPEN_DEBT, cfg.STEP_COLLATERAL_VALUE)
assert (OPEN, LIQUIDATING, CLOSED) == (_ca.COUPLED_OPEN, _ca.COUPLED_LIQUIDATING, _ca.COUPLED_CLOSED)
assert (ORDER_FULL, ORDER_PART) == (_ca.ORDER_FULL, _ca.ORDER_PART)
assert (MODE_FULL, MODE_PARTIAL, MODE_CLOSE_FACTOR) == (_ca.MODE_FULL, _ca.MODE_PARTIAL, _ca.MODE_CLOSE_FACTOR)

cdef double MARGIN = cfg.GUARD_MARGIN
cdef double TINY = cfg.GUARD_TINY
cdef double HUGE = cfg.GUARD_HUGE
cdef double BRIDGE_REACH = _ca.BRIDGE_REACH
cdef double INF = float("inf")
cdef u64 GOLDEN = 0x9E3779B97F4A7C15ULL
cdef u64 MIX1 = 0xBF58476D1CE4E5B9ULL
cdef u64 MIX2 = 0x94D049BB133111EBULL
cdef u64 BRIDGE_STEP_BIT = 1ULL << 63
cdef double TO_UNIT = 2.0 ** -53
cdef i64 SLOT_MASK = (1 << 32) - 1
cdef u64 INF_BITS = 0x7FF0000000000000ULL
# Extra relative margin of the crossing skip test (``_numba_coupled._BRIDGE_SLACK``).
cdef double BRIDGE_SLACK = 1.0 + 1e-9
# Upper bound of a debt's growth over the remaining steps, beyond the rounding of the
# repeated multiplications (``_numba_coupled._GROWTH_SLACK``).
cdef double GROWTH_SLACK = 1.0 + 1e-13
#: Sweeps k >= 2 visit the "near" slots (liquidation guard at least this share of the
#: step's opening price) while the price stays above that share; else every live slot.
cdef double NEAR_SHARE = 0.9

#: Paths per worker in a round (the paths between two merges of the losses; a thread
#: takes the round's next path when it is free, so it may run more or fewer).
PATHS_PER_WORKER = 16


cdef struct Shared:
    # Everything every worker reads (and the block's outputs, written per path column).
    Py_ssize_t n_assets
    Py_ssize_t n_steps
    Py_ssize_t n_paths
    Py_ssize_t n_loans
    Py_ssize_t n_chunks
    Py_ssize_t n_step_rows   # n_steps + 1 in record mode, else 0
    bint record
    i64 loan_bits
    const double* prices     # [n_assets, n_steps + 1, n_paths]
    const i64* asset_of
    const double* collateral_of
    const double* debt_of
    const double* growth_of
    const i64* position
    const double* debt_horizon
    u64 seed_key
    i64 path_offset
    int mode
    double close_factor
    double full_close_ltv
    double min_liquidation
    const double* max_sell
    const double* depth
    const double* depth_move
    const i64* sqrt_law
    const double* share
    const double* decay
    i64 max_rounds
    bint bridge
    const double* variance   # [n_assets, n_steps + 1, n_paths] (bridge only)
    bint full_horizon
    # Loan terms in activation order (slot s).
    const i32* loan_p
    const i32* asset_p
    const double* collateral_p
    const double* debt_p
    const double* growth_p
    const double* m_p
    const double* l_p
    const double* gmax_p
    const double* tau_p
    const i32* cure_p
    const double* fee_p
    const double* topup_p
    const double* cg_p
    const double* lg_p
    const double* walk_p     # call guards rounded up to their bucket (the walk's key)
    const i64* l_rank
    const double* l_walk     # liquidation guards rounded up, in ``l_rank`` order
    const i64* order_start
    # Outputs.
    double* path_money
    i64* path_counts
    double* path_sold
    double* step_sold
    double* step_loss
    double* step_fees
    double* step_open_debt
    double* step_collateral_value
    i64* path_rounds
    double* path_drawdown
    double* path_unsold
    double* step_impact
    # Per-slot losses of the round's paths, one row of n_loans per path of the round.
    i32* log_slot
    double* log_loss
    i64* log_count


cdef struct Worker:
    i8* is_active
    i32* alive
    i32* act_list
    i32* near
    i64* pending
    i32* fresh
    i32* due
    i64* sort_tmp
    i64* radix_counts
    double* per_asset
    i64* c_ptr
    i64* l_ptr
    i8* st_status
    double* st_q
    double* st_debt
    i32* st_debt_step
    double* st_principal
    i32* st_call
    i32* st_topup
    double* st_order
    i8* st_kind
    i32* st_acted_step
    i8* st_had_call
    i8* st_had_liq
    i32* log_slot            # this path's row of the loss log
    double* log_loss
    Py_ssize_t n_log
    double* st_cg
    double* st_lg
    double* acc_money        # [n_chunks, N_MONEY]
    i64* acc_counts          # [n_chunks, N_COUNTS]
    double* acc_sold         # [n_chunks, n_assets]
    double* acc_step_money   # [n_chunks, N_STEP_MONEY, n_step_rows]
    double* acc_step_sold    # [n_chunks, n_step_rows, n_assets]
    double* schedule         # [n_loans] (record only)
    # The round's order entries (in the order they were made).
    i32* entry_slot
    i32* entry_asset
    double* entry_order
    i8* entry_sale
    double* entry_adds       # [n_loans, N_ADDS]: what each sale adds to the sums
    i32* calls_p             # per slot: paths with a margin call (this worker's)
    i32* liquidated_p        # per slot: paths with a liquidation (this worker's)


cdef inline u64 _mix64(u64 x) noexcept nogil:
    cdef u64 z = x + GOLDEN
    z = (z ^ (z >> 30)) * MIX1
    z = (z ^ (z >> 27)) * MIX2
    return z ^ (z >> 31)


cdef inline double _uniform(u64 loan_key, i64 path, i64 step) noexcept nogil:
    """Counter-based uniform in [0, 1) for (loan key, path, step); see ``ltvsim._rng``."""
    cdef u64 h = _mix64(_mix64(loan_key ^ <u64>path) ^ <u64>step)
    return <double>(h >> 11) * TO_UNIT


cdef inline double _bridge_uniform(u64 loan_key, i64 path, i64 step) noexcept nogil:
    """The crossing draw in (0, 1), never 0; see ``ltvsim._rng.bridge_uniform``."""
    cdef u64 h = _mix64(_mix64(loan_key ^ <u64>path) ^ (<u64>step | BRIDGE_STEP_BIT))
    return <double>((h >> 11) | 1) * TO_UNIT


cdef inline i64 _chunk(const Shared* S, i64 s) noexcept nogil:
    """The loan chunk of slot ``s``'s loan (its sums' row)."""
    return S.loan_p[s] // LOAN_CHUNK


cdef inline u64 _loan_key(const Shared* S, i64 s) noexcept nogil:
    """The draw key of slot ``s``'s loan (``_numba_coupled._loan_key``)."""
    return _mix64(S.seed_key ^ <u64>S.loan_p[s])


cdef inline double _trigger_price(double debt, double collateral, double level) noexcept nogil:
    """``_numba_coupled._trigger_price``: price above which ``debt / (collateral *
    price) < level`` provably holds in floating point; +inf out of range."""
    cdef double level_collateral = collateral * level
    if not (TINY <= level <= HUGE and TINY <= collateral <= HUGE
            and TINY <= level_collateral <= HUGE):
        return INF
    cdef double threshold = debt / level_collateral
    if not (TINY <= debt <= HUGE and TINY <= threshold <= HUGE):
        return INF
    if not (TINY <= collateral * threshold <= HUGE):
        return INF
    return threshold * (1.0 + MARGIN)


cdef inline double slippage_factor(double delta, i64 sqrt_law) noexcept nogil:
    """``_coupled_args.slippage_factor``: the same expressions in the same order."""
    if delta <= 0.0:
        return 1.0
    if sqrt_law:
        if delta < 1e-3:
            return 1.0 - delta * (2.0 / 3.0 - delta * (0.25 - delta * (1.0 / 15.0 - delta * (1.0 / 72.0))))
        return 2.0 * (-expm1(-delta) - delta * exp(-delta)) / (delta * delta)
    if delta < 1e-3:
        return 1.0 - delta * (0.5 - delta * (1.0 / 6.0 - delta * (1.0 / 24.0 - delta * (1.0 / 120.0))))
    return -expm1(-delta) / delta


cdef inline i64 _pack(i64 i, i64 s) noexcept nogil:
    """A sort key: sorting keys sorts by ``i`` (a loan index); ``s`` (a slot or an
    order entry) rides along."""
    return (i << SLOT_BITS) | s


cdef inline void _slot_liquidate(const Shared* S, Worker* W, i64 s, double ltv, double price,
                                 double tau, double fee, double l, i64 c) noexcept nogil:
    """Put up a liquidation order sized at ``price`` (reference ``_liquidate``)."""
    cdef double q, debt, quantity, denominator, repay, repaid
    cdef bint full
    W.acc_counts[c * N_COUNTS + LIQUIDATIONS] += 1
    W.st_had_liq[s] = 1
    W.st_call[s] = -1
    W.st_topup[s] = -1
    q = W.st_q[s]
    debt = W.st_debt[s]
    quantity = q
    if S.mode == MODE_PARTIAL:
        denominator = price / (1.0 + fee) - tau * price
        if denominator > 0.0:
            quantity = (debt - tau * q * price) / denominator
    elif S.mode == MODE_CLOSE_FACTOR:
        repay = debt if ltv >= l * S.full_close_ltv else S.close_factor * debt
        quantity = repay * (1.0 + fee) / price
    full = S.mode == MODE_FULL or not (0.0 < quantity and quantity < q)
    if not full and S.min_liquidation > 0.0:
        repaid = quantity * price / (1.0 + fee)
        full = repaid < S.min_liquidation or debt - repaid < S.min_liquidation
    W.st_order[s] = q if full else quantity
    W.st_kind[s] = ORDER_FULL if full else ORDER_PART
    W.st_status[s] = LIQUIDATING


cdef inline int _slot_round_one(const Shared* S, Worker* W, i64 s, i64 t, i64 path, double price,
                                double previous_price, double variance) noexcept nogil:
    """The core rules of one open loan-path at the step's opening price (reference
    ``_round_one``): ``LIQUIDATED``, ``TOPPED_UP`` or ``NO_ACTION``. Terms only some
    outcomes need are read in those branches (each is one more cache line)."""
    cdef double m = S.m_p[s]
    cdef double l = S.l_p[s]
    cdef double q = W.st_q[s]
    cdef double debt = W.st_debt[s]
    cdef double ltv = debt / (q * price)
    cdef double previous_ltv, level, a, probability
    cdef i64 cure
    cdef bint liquidate
    if W.st_topup[s] == t:
        W.st_topup[s] = -1
        if ltv >= m:
            W.st_q[s] = debt / (S.tau_p[s] * price)
            W.st_call[s] = -1
            W.acc_counts[_chunk(S, s) * N_COUNTS + TOPUPS] += 1
            return TOPPED_UP
    liquidate = False
    if S.bridge and t >= 1 and ltv < l:
        previous_ltv = debt / (q * previous_price)
        if previous_ltv < l and variance > 0.0:
            level = debt / (q * l)
            a = log(previous_price / level) * log(price / level)
            probability = exp(-2.0 * a / variance)
            liquidate = _bridge_uniform(_loan_key(S, s), path, t) < probability
    if liquidate:
        pass
    elif ltv >= l:
        liquidate = True
    elif ltv >= m:
        if W.st_call[s] < 0:
            W.st_call[s] = <i32>t
            W.st_had_call[s] = 1
            W.acc_counts[_chunk(S, s) * N_COUNTS + CALLS] += 1
            # Without a branch: the draw is a coin flip no predictor can learn.
            W.st_topup[s] = <i32>(t + 1) if _uniform(_loan_key(S, s), path, t) < S.topup_p[s] else -1
        else:
            cure = S.cure_p[s]
            if cure >= 1 and t - W.st_call[s] >= cure:
                liquidate = True
    else:
        W.st_call[s] = -1
        W.st_topup[s] = -1
    if liquidate:
        _slot_liquidate(S, W, s, ltv, price, S.tau_p[s], S.fee_p[s], l, _chunk(S, s))
        return LIQUIDATED
    return NO_ACTION


cdef inline void _slot_settle(const Shared* S, Worker* W, i64 s, double fill, double execution,
                              i64 e) noexcept nogil:
    """Sell this round's fill of the loan-path's order at ``execution`` (reference
    ``_settle``): the slot's new state, and what the sale adds to the path's sums as
    order entry ``e`` (``_add_settlement`` adds them in loan order)."""
    cdef double fee = S.fee_p[s]
    cdef double debt = W.st_debt[s]
    cdef double principal = W.st_principal[s]
    cdef double q = W.st_q[s]
    cdef double interest = debt - principal
    cdef double proceeds, fee_due, fee_paid, rest, interest_paid, principal_paid, residual
    cdef double loss, x, repaid, remaining_principal
    cdef double* adds = W.entry_adds + e * N_ADDS
    if interest < 0.0:
        interest = 0.0
    if W.st_kind[s] == ORDER_FULL and fill == 1.0:
        proceeds = q * execution
        fee_due = fee * debt
        fee_paid = proceeds if proceeds < fee_due else fee_due
        rest = proceeds - fee_paid
        interest_paid = rest if rest < interest else interest
        rest = rest - interest_paid
        principal_paid = rest if rest < principal else principal
        residual = rest - principal_paid
        loss = (interest - interest_paid) + (principal - principal_paid)
        _set_adds(adds, fee_paid, interest_paid, principal_paid, residual, proceeds, interest + principal, loss, q)
        W.entry_sale[e] = SALE_CLOSED_WITH_LOSS
        if loss != 0.0:  # logged for the merge in path order
            W.log_slot[W.n_log] = <i32>s
            W.log_loss[W.n_log] = loss
            W.n_log += 1
        W.st_status[s] = CLOSED
        return
    x = W.st_order[s] if fill == 1.0 else W.st_order[s] * fill
    if x <= 0.0:
        W.entry_sale[e] = SALE_NONE  # nothing sold this round: the whole order waits
        return
    proceeds = x * execution
    repaid = proceeds / (1.0 + fee)
    if repaid >= debt:
        fee_paid = fee * debt
        residual = proceeds - fee_paid - interest - principal
        _set_adds(adds, fee_paid, interest, principal, residual, proceeds, interest + principal, 0.0, x)
        W.entry_sale[e] = SALE_CLOSED
        W.st_status[s] = CLOSED
        return
    fee_paid = fee * repaid
    interest_paid = repaid if repaid < interest else interest
    principal_paid = repaid - interest_paid
    W.st_debt[s] = debt - repaid
    remaining_principal = principal - principal_paid
    W.st_principal[s] = remaining_principal if remaining_principal > 0.0 else 0.0
    W.st_q[s] = q - x
    _set_adds(adds, fee_paid, interest_paid, principal_paid, 0.0, proceeds, repaid, 0.0, x)
    W.entry_sale[e] = SALE_PART
    if fill == 1.0:
        W.st_status[s] = OPEN
        W.st_order[s] = 0.0
    else:
        W.st_order[s] = W.st_order[s] - x


cdef inline void _set_adds(double* adds, double fees, double interest, double principal,
                           double residual, double proceeds, double debt_closed, double loss,
                           double sold) noexcept nogil:
    adds[0] = fees
    adds[1] = interest
    adds[2] = principal
    adds[3] = residual
    adds[4] = proceeds
    adds[5] = debt_closed
    adds[6] = loss
    adds[7] = sold


cdef inline void _add_settlement(const Shared* S, Worker* W, i64 e, i64 t, i64 a,
                                 i64 c) noexcept nogil:
    """Add order entry ``e``'s sale to chunk ``c``'s sums (called in loan order)."""
    cdef i8 sale = W.entry_sale[e]
    cdef const double* adds = W.entry_adds + e * N_ADDS
    cdef double* money = W.acc_money + c * N_MONEY
    cdef Py_ssize_t rows = S.n_step_rows
    if sale == SALE_NONE:
        return
    money[FEES] += adds[0]
    money[INTEREST] += adds[1]
    money[PRINCIPAL] += adds[2]
    money[RESIDUAL] += adds[3]
    money[PROCEEDS] += adds[4]
    money[DEBT_CLOSED] += adds[5]
    money[LOSS] += adds[6]
    if S.record:
        if sale == SALE_CLOSED_WITH_LOSS:
            W.acc_step_money[(c * N_STEP_MONEY + STEP_LOSS) * rows + t] += adds[6]
        W.acc_step_money[(c * N_STEP_MONEY + STEP_FEES) * rows + t] += adds[0]
        W.acc_step_sold[(c * rows + t) * S.n_assets + a] += adds[7]
    W.acc_sold[c * S.n_assets + a] += adds[7]
    if sale != SALE_PART:
        W.acc_counts[c * N_COUNTS + FULL_LIQUIDATIONS] += 1


cdef inline Py_ssize_t _push(const Shared* S, Worker* W, Py_ssize_t n_pending, i64 s) noexcept nogil:
    """Slot ``s``'s order as the round's entry ``n_pending``: its key sorts by loan."""
    W.pending[n_pending] = _pack(S.loan_p[s], n_pending)
    W.entry_slot[n_pending] = s
    W.entry_asset[n_pending] = S.asset_p[s]
    W.entry_order[n_pending] = W.st_order[s]
    return n_pending + 1


cdef inline void _catch_up(const Shared* S, Worker* W, i64 s, i64 t) noexcept nogil:
    """Accrue a slot's debt to step ``t`` lazily: the same repeated multiplication the
    reference does step by step."""
    cdef double growth = S.growth_p[s]
    cdef double d = W.st_debt[s]
    cdef i64 k = W.st_debt_step[s]
    while k < t:
        d = d * growth
        k += 1
    W.st_debt[s] = d
    W.st_debt_step[s] = t


cdef inline void _refresh_guards(const Shared* S, Worker* W, i64 s) noexcept nogil:
    """A slot's call and liquidation guard prices for its present debt and collateral."""
    cdef double bound = W.st_debt[s] * S.gmax_p[s] * GROWTH_SLACK
    cdef double q = W.st_q[s]
    W.st_cg[s] = _trigger_price(bound, q, S.m_p[s])
    W.st_lg[s] = _trigger_price(bound, q, S.l_p[s])


cdef void _sort_prefix(i64* keys, Py_ssize_t n, i64* tmp, i64* counts, i64 loan_bits) noexcept nogil:
    """Sort ``keys[:n]`` (``_pack``ed, distinct loans) by loan index, in place: insertion
    sort when short, else least-significant-digit radix sort through ``tmp``."""
    cdef Py_ssize_t k, j, d
    cdef i64 key, running, c, shift
    cdef i64 radix = 1 << RADIX_BITS
    cdef i64* src
    cdef i64* dst
    cdef i64* swap
    if n < 48:
        for k in range(1, n):
            key = keys[k]
            j = k - 1
            while j >= 0 and keys[j] > key:
                keys[j + 1] = keys[j]
                j -= 1
            keys[j + 1] = key
        return
    src = keys
    dst = tmp
    shift = SLOT_BITS
    while shift < SLOT_BITS + loan_bits:
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
        swap = src
        src = dst
        dst = swap
        shift += RADIX_BITS
    if src != keys:
        for k in range(n):
            keys[k] = src[k]


cdef void _chunked_totals(const Shared* S, Worker* W, Py_ssize_t n_pending, double* total,
                          double* part) noexcept nogil:
    """Requested units per asset: per chunk in loan order, then chunk by chunk (the
    reference's order; ``pending`` holds the entries' keys, sorted)."""
    cdef Py_ssize_t n_assets = S.n_assets
    cdef Py_ssize_t a, k
    cdef i64 i, e, c, chunk
    for a in range(n_assets):
        total[a] = 0.0
        part[a] = 0.0
    chunk = -1
    for k in range(n_pending):
        i = W.pending[k] >> SLOT_BITS
        e = W.pending[k] & SLOT_MASK
        c = i // LOAN_CHUNK
        if c != chunk:
            if chunk >= 0:
                for a in range(n_assets):
                    total[a] += part[a]
                    part[a] = 0.0
            chunk = c
        part[W.entry_asset[e]] += W.entry_order[e]
    if chunk >= 0:
        for a in range(n_assets):
            total[a] += part[a]


cdef inline void _activate(const Shared* S, Worker* W, i64 s, Py_ssize_t n_alive,
                           Py_ssize_t n_act) noexcept nogil:
    """Open slot ``s`` as the reference has it before it is first touched (debt accrued
    lazily). The caller increments ``n_alive`` and ``n_act``."""
    W.is_active[s] = 1
    W.st_status[s] = OPEN
    W.st_q[s] = S.collateral_p[s]
    W.st_debt[s] = S.debt_p[s]
    W.st_debt_step[s] = 0
    W.st_principal[s] = S.debt_p[s]
    W.st_call[s] = -1
    W.st_topup[s] = -1
    W.st_acted_step[s] = -1
    W.st_had_call[s] = 0
    W.st_had_liq[s] = 0
    W.st_cg[s] = S.cg_p[s]
    W.st_lg[s] = S.lg_p[s]
    W.alive[n_alive] = s
    W.act_list[n_act] = s


cdef inline Py_ssize_t _activate_down_to(const Shared* S, Worker* W, i64 a, double price,
                                         Py_ssize_t* n_alive, Py_ssize_t* n_act, i32* fresh,
                                         Py_ssize_t n_fresh) noexcept nogil:
    """Give a slot to each loan of asset ``a`` that ``price`` brings to its call guard,
    walking the guard order on from where the path's last walk stopped; list the new
    slots in ``fresh`` unless it is NULL. Returns the new length of ``fresh``."""
    cdef i64 stop = S.order_start[a + 1]
    cdef i64 s = W.c_ptr[a]
    while s < stop and S.walk_p[s] >= price:
        if W.is_active[s] == 0:
            _activate(S, W, s, n_alive[0], n_act[0])
            n_alive[0] += 1
            n_act[0] += 1
            if fresh != NULL:
                fresh[n_fresh] = s
                n_fresh += 1
        s += 1
    W.c_ptr[a] = s
    return n_fresh


cdef inline void _activate_crossings(const Shared* S, Worker* W, i64 a, double reach, double low,
                                     Py_ssize_t* n_alive, Py_ssize_t* n_act) noexcept nogil:
    """Give a slot to each loan of asset ``a`` whose liquidation level a crossing could
    reach this step (its guard times ``reach`` at least the step's ``low``), walking the
    liquidation-guard order on from where the path's last walk stopped."""
    cdef i64 stop = S.order_start[a + 1]
    cdef i64 k = W.l_ptr[a]
    cdef i64 s
    while k < stop and S.l_walk[k] * reach >= low:
        s = S.l_rank[k]
        if W.is_active[s] == 0:
            _activate(S, W, s, n_alive[0], n_act[0])
            n_alive[0] += 1
            n_act[0] += 1
        k += 1
    W.l_ptr[a] = k


cdef void _run_path(const Shared* S, Worker* W, i64 jp, i64 log_row) noexcept nogil:
    """Every loan on path ``jp`` of the block (``_numba_coupled._run_path``)."""
    cdef Py_ssize_t n_assets = S.n_assets
    cdef Py_ssize_t n_steps = S.n_steps
    cdef Py_ssize_t n_paths = S.n_paths
    cdef Py_ssize_t n_loans = S.n_loans
    cdef Py_ssize_t n_chunks = S.n_chunks
    cdef Py_ssize_t rows = S.n_step_rows
    cdef Py_ssize_t n_t = n_steps + 1
    cdef bint record = S.record
    cdef bint bridge = S.bridge
    cdef i64 path = S.path_offset + jp
    cdef i64 loan_bits = S.loan_bits
    cdef double* permanent = W.per_asset
    cdef double* transient = W.per_asset + n_assets
    cdef double* price = W.per_asset + 2 * n_assets
    cdef double* previous_price = W.per_asset + 3 * n_assets
    cdef double* low = W.per_asset + 4 * n_assets
    cdef double* reach = W.per_asset + 5 * n_assets
    cdef double* near_price = W.per_asset + 6 * n_assets
    cdef double* worst = W.per_asset + 7 * n_assets
    cdef double* fill = W.per_asset + 8 * n_assets
    cdef double* execution = W.per_asset + 9 * n_assets
    cdef double* sold_in_step = W.per_asset + 10 * n_assets
    cdef double* total = W.per_asset + 11 * n_assets
    cdef double* part = W.per_asset + 12 * n_assets
    cdef double* unsold = W.per_asset + 13 * n_assets
    cdef i64* c_ptr = W.c_ptr
    cdef i64* l_ptr = W.l_ptr
    cdef i32* alive = W.alive
    cdef i64* pending = W.pending
    cdef i32* near = W.near
    cdef i32* fresh = W.fresh
    cdef i32* due = W.due
    cdef i8* st_status = W.st_status
    cdef const i32* asset_p = S.asset_p
    cdef const double* prices = S.prices
    cdef const double* variance = S.variance
    cdef Py_ssize_t n_alive = 0, n_act = 0, n_pending, n_near, n_fresh, kept, n_short, n_due
    cdef Py_ssize_t k, b, tt
    cdef i64 t, a, s, i, c, e, chunk, deepest = 0, rounds, round_number, status
    cdef bint crossings, has_orders, decide, rescan
    cdef int outcome
    cdef double raw, room, filled, ratio, delta, factor, ltv, v, shortfall, p

    W.log_slot = S.log_slot + log_row * n_loans
    W.log_loss = S.log_loss + log_row * n_loans
    W.n_log = 0
    memset(W.acc_money, 0, n_chunks * N_MONEY * sizeof(double))
    memset(W.acc_counts, 0, n_chunks * N_COUNTS * sizeof(i64))
    memset(W.acc_sold, 0, n_chunks * n_assets * sizeof(double))
    if record:
        memset(W.acc_step_money, 0, n_chunks * N_STEP_MONEY * rows * sizeof(double))
        memset(W.acc_step_sold, 0, n_chunks * rows * n_assets * sizeof(double))
        for k in range(n_loans):
            W.schedule[k] = S.debt_of[k]
    for a in range(n_assets):
        permanent[a] = 0.0
        transient[a] = 0.0
        previous_price[a] = 0.0
        reach[a] = 1.0
        worst[a] = 1.0
        unsold[a] = 0.0
        c_ptr[a] = S.order_start[a]
        l_ptr[a] = S.order_start[a]
    for t in range(n_steps + 1):
        crossings = bridge and t >= 1
        for a in range(n_assets):
            if t >= 1:
                transient[a] = transient[a] * S.decay[a]
            price[a] = prices[(a * n_t + t) * n_paths + jp] * exp(-(permanent[a] + transient[a]))
            sold_in_step[a] = 0.0
            near_price[a] = price[a] * NEAR_SHARE
            if crossings:
                low[a] = price[a] if price[a] < previous_price[a] else previous_price[a]
                reach[a] = exp(sqrt(BRIDGE_REACH * variance[(a * n_t + t) * n_paths + jp])) * BRIDGE_SLACK
        # Activation.
        for a in range(n_assets):
            _activate_down_to(S, W, a, price[a], &n_alive, &n_act, NULL, 0)
            if crossings:
                _activate_crossings(S, W, a, reach[a], low[a], &n_alive, &n_act)
        # Sweep 1 over the live slots (closed ones leave the list).
        n_pending = 0
        n_near = 0
        kept = 0
        n_due = 0
        for k in range(n_alive):
            s = alive[k]
            status = st_status[s]
            if status == CLOSED:
                continue
            alive[kept] = s
            kept += 1
            a = asset_p[s]
            if status == OPEN and W.st_call[s] < 0 and W.st_topup[s] < 0 and price[a] > W.st_cg[s]:
                if not crossings or low[a] > W.st_lg[s] * reach[a]:
                    if W.st_lg[s] >= near_price[a]:
                        near[n_near] = s
                        n_near += 1
                    continue
            due[n_due] = s
            n_due += 1
        # Debts first, in a loop of their own: the chains of multiplications of
        # different slots then overlap instead of each stalling the rules.
        for k in range(n_due):
            _catch_up(S, W, due[k], t)
        for k in range(n_due):
            s = due[k]
            a = asset_p[s]
            if st_status[s] == LIQUIDATING:
                W.st_acted_step[s] = t
                n_pending = _push(S, W, n_pending, s)
                continue
            v = variance[(a * n_t + t) * n_paths + jp] if bridge else 0.0
            outcome = _slot_round_one(S, W, s, t, path, price[a], previous_price[a], v)
            if outcome == LIQUIDATED:
                W.st_acted_step[s] = t
                n_pending = _push(S, W, n_pending, s)
            elif outcome == TOPPED_UP:  # more collateral, lower guards
                W.st_acted_step[s] = t
                _refresh_guards(S, W, s)
            elif W.st_lg[s] >= near_price[a]:
                near[n_near] = s
                n_near += 1
        n_alive = kept
        _sort_prefix(pending, n_pending, W.sort_tmp, W.radix_counts, loan_bits)
        rounds = 0
        round_number = 1
        while True:
            _chunked_totals(S, W, n_pending, total, part)
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
                room = S.max_sell[a] - sold_in_step[a]
                if total[a] <= room:
                    fill[a] = 1.0
                    filled = total[a]
                else:
                    fill[a] = room / total[a] if room > 0.0 else 0.0
                    filled = total[a] * fill[a]
                sold_in_step[a] = sold_in_step[a] + filled
                ratio = filled * prices[(a * n_t + t) * n_paths + jp] / S.depth[a]
                delta = S.depth_move[a] * (sqrt(ratio) if S.sqrt_law[a] else ratio)
                execution[a] = price[a] * slippage_factor(delta, S.sqrt_law[a])
                permanent[a] = permanent[a] + S.share[a] * delta
                transient[a] = transient[a] + (1.0 - S.share[a]) * delta
            for a in range(n_assets):
                price[a] = prices[(a * n_t + t) * n_paths + jp] * exp(-(permanent[a] + transient[a]))
            round_number += 1
            decide = round_number <= S.max_rounds
            # Settle the last round's orders: each slot in the order the entries were
            # made (near slot order, so memory is read in order), then their sums in
            # loan order.
            for e in range(n_pending):
                s = W.entry_slot[e]
                a = W.entry_asset[e]
                status = st_status[s]
                _slot_settle(S, W, s, fill[a], execution[a], e)
                if st_status[s] == OPEN and status == LIQUIDATING:
                    _refresh_guards(S, W, s)
            for k in range(n_pending):
                e = pending[k] & SLOT_MASK
                _add_settlement(S, W, e, t, W.entry_asset[e], (pending[k] >> SLOT_BITS) // LOAN_CHUNK)
            n_pending = 0
            if not decide:
                continue
            # Loans the new price brought near: fresh slots, then the near list.
            n_fresh = 0
            for a in range(n_assets):
                n_fresh = _activate_down_to(S, W, a, price[a], &n_alive, &n_act, fresh, n_fresh)
            rescan = False
            for a in range(n_assets):
                if price[a] < near_price[a]:
                    rescan = True
            if rescan:
                for a in range(n_assets):
                    p = price[a] * NEAR_SHARE
                    near_price[a] = near_price[a] if near_price[a] <= p else p
                n_near = 0
                for k in range(n_alive):
                    s = alive[k]
                    if st_status[s] == OPEN and W.st_acted_step[s] != t and W.st_lg[s] >= near_price[asset_p[s]]:
                        near[n_near] = s
                        n_near += 1
            else:
                for k in range(n_fresh):
                    s = fresh[k]
                    if W.st_lg[s] >= near_price[asset_p[s]]:
                        near[n_near] = s
                        n_near += 1
            kept = 0
            for k in range(n_near):
                s = near[k]
                if st_status[s] != OPEN or W.st_acted_step[s] == t:
                    continue  # done for this step: it leaves the list
                near[kept] = s
                kept += 1
                a = asset_p[s]
                if price[a] > W.st_lg[s]:
                    continue
                _catch_up(S, W, s, t)
                ltv = W.st_debt[s] / (W.st_q[s] * price[a])
                if ltv >= S.l_p[s]:
                    i = S.loan_p[s]
                    _slot_liquidate(S, W, s, ltv, price[a], S.tau_p[s], S.fee_p[s], S.l_p[s],
                                    i // LOAN_CHUNK)
                    W.st_acted_step[s] = t
                    n_pending = _push(S, W, n_pending, s)
            n_near = kept
            _sort_prefix(pending, n_pending, W.sort_tmp, W.radix_counts, loan_bits)
        if rounds > deepest:
            deepest = rounds
        for a in range(n_assets):
            previous_price[a] = price[a]
            factor = exp(-(permanent[a] + transient[a]))
            if record:
                S.step_impact[(t * n_assets + a) * n_paths + jp] = factor
            worst[a] = factor if factor < worst[a] else worst[a]
        if record:
            for i in range(n_loans):
                c = i // LOAN_CHUNK
                a = S.asset_of[i]
                if t >= 1:
                    W.schedule[i] = W.schedule[i] * S.growth_of[i]
                s = S.position[i]
                if W.is_active[s] == 0:
                    W.acc_step_money[(c * N_STEP_MONEY + STEP_OPEN_DEBT) * rows + t] += W.schedule[i]
                    W.acc_step_money[(c * N_STEP_MONEY + STEP_COLLATERAL_VALUE) * rows + t] += S.collateral_of[i] * price[a]
                elif st_status[s] != CLOSED:
                    _catch_up(S, W, s, t)
                    W.acc_step_money[(c * N_STEP_MONEY + STEP_OPEN_DEBT) * rows + t] += W.st_debt[s]
                    W.acc_step_money[(c * N_STEP_MONEY + STEP_COLLATERAL_VALUE) * rows + t] += W.st_q[s] * price[a]
    # After step T: the remaining slots at the final price, then shortfalls and unsold
    # orders per chunk in loan order.
    for a in range(n_assets):
        _activate_down_to(S, W, a, previous_price[a], &n_alive, &n_act, NULL, 0)
    if S.full_horizon:
        for i in range(n_loans):
            a = S.asset_of[i]
            s = S.position[i]
            if W.is_active[s] == 0:
                shortfall = S.debt_horizon[i] - S.collateral_of[i] * previous_price[a]
            elif st_status[s] != CLOSED:
                _catch_up(S, W, s, n_steps)
                shortfall = W.st_debt[s] - W.st_q[s] * previous_price[a]
            else:
                continue
            W.acc_money[(i // LOAN_CHUNK) * N_MONEY + UNREALISED] += shortfall if shortfall > 0.0 else 0.0
    # One pass over the path's slots: per-slot counts (integers: any order), the slot
    # released, and the slots that may owe a shortfall or hold an unsold order.
    n_short = 0
    for k in range(n_act):
        s = W.act_list[k]
        W.calls_p[s] += W.st_had_call[s]
        W.liquidated_p[s] += W.st_had_liq[s]
        W.is_active[s] = 0
        status = st_status[s]
        if status == OPEN and not S.full_horizon and previous_price[asset_p[s]] > W.st_cg[s]:
            continue  # above its call guard, so LTV < m <= 1: no shortfall
        if status != CLOSED:
            _catch_up(S, W, s, n_steps)
            shortfall = W.st_debt[s] - W.st_q[s] * previous_price[asset_p[s]]
            if shortfall > 0.0 or st_status[s] == LIQUIDATING:
                pending[n_short] = _pack(S.loan_p[s], s)
                n_short += 1
    _sort_prefix(pending, n_short, W.sort_tmp, W.radix_counts, loan_bits)
    for a in range(n_assets):
        part[a] = 0.0
    chunk = -1
    for k in range(n_short):
        i = pending[k] >> SLOT_BITS
        s = pending[k] & SLOT_MASK
        a = asset_p[s]
        c = i // LOAN_CHUNK
        if not S.full_horizon:
            shortfall = W.st_debt[s] - W.st_q[s] * previous_price[a]
            W.acc_money[c * N_MONEY + UNREALISED] += shortfall if shortfall > 0.0 else 0.0
        if st_status[s] == LIQUIDATING:
            if c != chunk:
                for b in range(n_assets):
                    unsold[b] += part[b]
                    part[b] = 0.0
                chunk = c
            part[a] += W.st_order[s]
    for b in range(n_assets):
        unsold[b] += part[b]
    S.log_count[log_row] = W.n_log  # the path's losses, for the merge in path order
    # The path's sums, chunk by chunk.
    for c in range(n_chunks):
        for k in range(N_MONEY):
            S.path_money[k * n_paths + jp] += W.acc_money[c * N_MONEY + k]
        for a in range(n_assets):
            S.path_sold[a * n_paths + jp] += W.acc_sold[c * n_assets + a]
        for k in range(N_COUNTS):
            S.path_counts[k * n_paths + jp] += W.acc_counts[c * N_COUNTS + k]
        if record:
            for tt in range(n_steps + 1):
                S.step_loss[tt * n_paths + jp] += W.acc_step_money[(c * N_STEP_MONEY + STEP_LOSS) * rows + tt]
                S.step_fees[tt * n_paths + jp] += W.acc_step_money[(c * N_STEP_MONEY + STEP_FEES) * rows + tt]
                S.step_open_debt[tt * n_paths + jp] += W.acc_step_money[(c * N_STEP_MONEY + STEP_OPEN_DEBT) * rows + tt]
                S.step_collateral_value[tt * n_paths + jp] += W.acc_step_money[(c * N_STEP_MONEY + STEP_COLLATERAL_VALUE) * rows + tt]
                for a in range(n_assets):
                    S.step_sold[(tt * n_assets + a) * n_paths + jp] += W.acc_step_sold[(c * rows + tt) * n_assets + a]
    S.path_rounds[jp] = deepest
    for a in range(n_assets):
        S.path_drawdown[a * n_paths + jp] = 1.0 - worst[a]
        S.path_unsold[a * n_paths + jp] = unsold[a]


cdef void _prepare_one(Py_ssize_t i, const double* debt_of, const double* growth_of,
                       const double* collateral_of, const double* m_of, const double* l_of,
                       Py_ssize_t n_steps, bint full_horizon, double* gmax_of,
                       double* debt_horizon, double* cg_key, double* lg_key) noexcept nogil:
    """Per loan: a bound on its debt's growth, its guard prices (from the largest debt it
    can reach) and, when ``full_horizon``, its debt at the horizon if never touched
    (``_numba_coupled._prepare``)."""
    cdef double growth = growth_of[i]
    cdef double d = debt_of[i]
    cdef double g = 1.0
    cdef double gmax, bound
    cdef Py_ssize_t k
    if full_horizon:
        for k in range(n_steps):
            d = d * growth
        debt_horizon[i] = d
    for k in range(n_steps):
        g = g * growth
    gmax = g if g > 1.0 else 1.0
    gmax_of[i] = gmax
    bound = debt_of[i] * gmax * GROWTH_SLACK
    cg_key[i] = _trigger_price(bound, collateral_of[i], m_of[i])
    lg_key[i] = _trigger_price(bound, collateral_of[i], l_of[i])


cdef inline double _bucket_top(double guard, i64 shift) noexcept nogil:
    """The smallest double above every guard in ``guard``'s bucket (its float64 bits
    without the lowest ``shift``); +inf stays +inf."""
    cdef u64 bits
    cdef double top
    memcpy(&bits, &guard, 8)
    if bits >= INF_BITS:
        return INF
    bits = ((bits >> shift) + 1) << shift
    memcpy(&top, &bits, 8)
    return top


cdef inline u64 _bits(double x) noexcept nogil:
    """The float64 bits of ``x``."""
    cdef u64 bits
    memcpy(&bits, &x, 8)
    return bits


cdef void _guard_order(const i64* asset_of, const double* guard, Py_ssize_t n,
                       Py_ssize_t n_assets, i64* keys, i64* tmp, i64* counts, i64* order,
                       double* walk, int n_threads) noexcept nogil:
    """Loans grouped by asset, each group by descending guard bucket (loan index within
    a bucket): a stable radix sort of keys ``asset, bucket, loan``. ``walk`` gets each
    loan's bucket top, non-increasing within an asset, so that walking the order while
    ``walk >= price`` reaches every loan whose guard ``price`` reaches."""
    cdef Py_ssize_t i
    cdef i64 asset_bits = 1
    while (1 << asset_bits) < n_assets:
        asset_bits += 1
    # Keys fit 31 bits: 21 bits of the guard (sign 0, exponent, 10 bits of mantissa:
    # buckets 0.1% wide), fewer with more than 1024 assets. With up to 2 assets the
    # keys take 22 bits: two radix passes.
    cdef i64 key_bits = 31 - asset_bits if asset_bits > 10 else 21
    cdef i64 shift = 63 - key_bits
    cdef i64 bucket_mask = (1 << key_bits) - 1
    # Guards are positive (or +inf), so their bits order them; descending buckets.
    for i in prange(n, num_threads=n_threads, schedule="static"):
        keys[i] = _pack((asset_of[i] << key_bits) | (bucket_mask - <i64>(_bits(guard[i]) >> shift)), i)
    _sort_prefix(keys, n, tmp, counts, key_bits + asset_bits)
    for i in prange(n, num_threads=n_threads, schedule="static"):
        order[i] = keys[i] & SLOT_MASK
        walk[i] = _bucket_top(guard[order[i]], shift)


def _activation_order(asset_of, guard, Py_ssize_t n_assets, int n_threads=1):
    """``_guard_order`` of a book: (order, walk keys)."""
    cdef Py_ssize_t n = asset_of.shape[0]
    order = np.empty(n + 1, dtype=np.int64)
    walk = np.empty(n + 1)
    keys = np.empty(n + 1, dtype=np.int64)
    tmp = np.empty(n + 1, dtype=np.int64)
    counts = np.zeros((1 << RADIX_BITS) + 8, dtype=np.int64)
    cdef const i64[::1] v_asset = _nonempty(asset_of)
    cdef const double[::1] v_guard = _nonempty(guard)
    cdef i64[::1] v_keys = keys, v_tmp = tmp, v_counts = counts, v_order = order
    cdef double[::1] v_walk = walk
    with nogil:
        _guard_order(&v_asset[0], &v_guard[0], n, n_assets, &v_keys[0], &v_tmp[0],
                     &v_counts[0], &v_order[0], &v_walk[0], n_threads)
    return order[:n], walk[:n]


def _gather(x, order, int n_threads):
    """``x[order]`` and one spare zero (so an empty book still has an element),
    gathered in parallel."""
    out = np.zeros(order.shape[0] + 1, dtype=x.dtype)
    cdef Py_ssize_t n = order.shape[0], k
    cdef const i64[::1] v_order = order
    cdef const i64[::1] src_i
    cdef i64[::1] dst_i
    cdef const double[::1] src_f
    cdef double[::1] dst_f
    if n == 0:
        return out
    if x.dtype == np.float64:
        src_f = x
        dst_f = out
        with nogil:
            for k in prange(n, num_threads=n_threads, schedule="static"):
                dst_f[k] = src_f[v_order[k]]
    else:  # int64 or uint64: the same eight bytes
        src_i = x.view(np.int64)
        dst_i = out.view(np.int64)
        with nogil:
            for k in prange(n, num_threads=n_threads, schedule="static"):
                dst_i[k] = src_i[v_order[k]]
    return out


def _gather_i32(x, order, int n_threads):
    """``x[order]`` (``x`` itself when ``order`` is None) as int32, clipped to
    ``[-1, 2**31 - 1]``, and one spare zero; in parallel."""
    cdef const i64[::1] src = x
    cdef Py_ssize_t n = src.shape[0] if order is None else order.shape[0], k
    out = np.zeros(n + 1, dtype=np.int32)
    cdef i32[::1] dst = out
    cdef const i64[::1] v_order = _nonempty(x if order is None else order)
    cdef bint identity = order is None
    cdef i64 v, top = 2**31 - 1
    with nogil:
        for k in prange(n, num_threads=n_threads, schedule="static"):
            v = src[k] if identity else src[v_order[k]]
            dst[k] = <i32>(-1 if v < -1 else (top if v > top else v))
    return out


def _inverse(order, int n_threads):
    """The inverse permutation of ``order`` (where each loan sits in it)."""
    inverse = np.empty(order.shape[0], dtype=np.int64)
    cdef const i64[::1] v_order = order
    cdef i64[::1] v_inverse = inverse
    cdef Py_ssize_t k, n = order.shape[0]
    with nogil:
        for k in prange(n, num_threads=n_threads, schedule="static"):
            v_inverse[v_order[k]] = k
    return inverse


def _nonempty(x):
    """``x`` itself, or one zero if it is empty (a memoryview's first element must
    exist; kernels never read past ``n_loans``)."""
    return x if x.shape[0] else np.zeros(1, dtype=x.dtype)


def _f64(x):
    return np.ascontiguousarray(x, dtype=np.float64)


def _i64(x):
    return np.ascontiguousarray(x, dtype=np.int64)


def evaluate_coupled(prices, loans, options, seed, path_offset, n_threads, out):
    """Evaluate every loan on one block of paths with market impact and cascades, and
    add the results into ``out`` (a ``CoupledOutputs``); bit for bit the reference
    ``tests/naive_coupled.py``, for any ``n_threads``. Releases the GIL while it runs."""
    prices = _f64(prices)
    cdef const double[:, :, ::1] price_view = prices
    cdef Py_ssize_t n_assets = price_view.shape[0]
    cdef Py_ssize_t n_steps = price_view.shape[1] - 1
    cdef Py_ssize_t n_paths = price_view.shape[2]
    loans = tuple(_i64(x) if k in (0, 7) else _f64(x) for k, x in enumerate(loans))
    cdef Py_ssize_t n_loans = loans[2].shape[0]
    if n_paths == 0 or n_assets == 0:
        return
    if n_steps >= 2**31 - 2:
        raise ValueError("the coupled kernel takes fewer than 2**31 - 2 steps")
    if n_loans >= 2**31:
        raise ValueError("the coupled kernel takes fewer than 2**31 loans")
    cdef Py_ssize_t n_chunks = max(1, (n_loans + LOAN_CHUNK - 1) // LOAN_CHUNK)
    core = out.core
    cdef bint record = core.step_loss.shape[0] > 0
    cdef Py_ssize_t steps = n_steps + 1 if record else 0
    cdef int n_workers = max(1, min(int(n_threads), n_paths))
    cdef i64 per_worker = max(1, min(PATHS_PER_WORKER, (n_paths + n_workers - 1) // n_workers))
    cdef u64 seed_key = mix64(int(seed) & MASK64)
    o = options
    variance = _f64(o.bridge_variance) if o.bridge else np.zeros((1, 1, 1))
    asset_of, collateral_of, debt_of, growth_of, m_of, l_of = loans[:6]
    cdef Py_ssize_t n1 = max(n_loans, 1)
    cdef bint full_horizon = bool((m_of > 1.0).any())
    gmax_of = np.zeros(n1)
    debt_horizon = np.zeros(n1 if full_horizon else 1)
    cg_key = np.zeros(n1)
    lg_key = np.zeros(n1)

    cdef const double[::1] v_debt = _nonempty(debt_of)
    cdef const double[::1] v_growth = _nonempty(growth_of)
    cdef const double[::1] v_coll = _nonempty(collateral_of)
    cdef const double[::1] v_m = _nonempty(m_of)
    cdef const double[::1] v_l = _nonempty(l_of)
    cdef double[::1] v_gmax = gmax_of
    cdef double[::1] v_horizon = debt_horizon
    cdef double[::1] v_cg = cg_key
    cdef double[::1] v_lg = lg_key
    cdef Py_ssize_t i
    with nogil:
        for i in prange(n_loans, num_threads=n_workers, schedule="static"):
            _prepare_one(i, &v_debt[0], &v_growth[0], &v_coll[0], &v_m[0], &v_l[0], n_steps,
                         full_horizon, &v_gmax[0], &v_horizon[0], &v_cg[0], &v_lg[0])
    gmax_of = gmax_of[:n_loans]
    cg_key = cg_key[:n_loans]
    lg_key = lg_key[:n_loans]

    # Per asset, loans by descending call guard: activation walks them as prices fall.
    order_start = np.zeros(n_assets + 1, dtype=np.int64)
    order_start[1:] = np.cumsum(np.bincount(asset_of, minlength=n_assets))
    c_order, walk = _activation_order(asset_of, cg_key, n_assets, n_workers)
    position = _inverse(c_order, n_workers)
    if o.bridge:
        l_order, l_walk = _activation_order(asset_of, lg_key, n_assets, n_workers)
        l_rank = position[l_order]
    else:
        l_rank, l_walk = np.zeros(0, dtype=np.int64), np.zeros(0)
    # The loan arrays in activation order, each with one spare element (empty books).
    # Integers in 32 bits: loan and asset indices fit; steps since a call stay below
    # 2**31 - 2, so clipping a cure period there changes nothing.
    cdef const i32[::1] p_loan = _gather_i32(c_order, None, n_workers)
    cdef const i32[::1] p_asset = _gather_i32(asset_of, c_order, n_workers)
    cdef const i32[::1] p_cure = _gather_i32(loans[7], c_order, n_workers)
    permuted = [_gather(x, c_order, n_workers) for x in [
        collateral_of, debt_of, growth_of, m_of, l_of, loans[6], loans[8], loans[9], gmax_of, cg_key, lg_key]]
    cdef const double[::1] p_coll = permuted[0]
    cdef const double[::1] p_debt = permuted[1]
    cdef const double[::1] p_growth = permuted[2]
    cdef const double[::1] p_m = permuted[3]
    cdef const double[::1] p_l = permuted[4]
    cdef const double[::1] p_tau = permuted[5]
    cdef const double[::1] p_fee = permuted[6]
    cdef const double[::1] p_topup = permuted[7]
    cdef const double[::1] p_gmax = permuted[8]
    cdef const double[::1] p_cg = permuted[9]
    cdef const double[::1] p_lg = permuted[10]
    cdef const i64[::1] v_l_rank = _nonempty(l_rank)
    cdef const double[::1] v_walk = _nonempty(walk)
    cdef const double[::1] v_l_walk = _nonempty(l_walk)
    cdef const i64[::1] v_order_start = order_start
    cdef const i64[::1] v_asset_of = _nonempty(asset_of)
    cdef const i64[::1] v_position = _nonempty(position)
    cdef const double[::1] v_debt_horizon = _nonempty(debt_horizon)
    cdef const double[:, :, ::1] variance_view = variance
    cdef const double[::1] cap = _f64(o.max_sell)
    cdef const double[::1] depth = _f64(o.depth)
    cdef const double[::1] move = _f64(o.depth_move)
    cdef const i64[::1] sqrt_law = _i64(o.sqrt_law)
    cdef const double[::1] share = _f64(o.permanent)
    cdef const double[::1] decay = _f64(o.decay)

    cdef double[:, ::1] path_money = core.path_money
    cdef i64[:, ::1] path_counts = core.path_counts
    cdef double[:, ::1] path_sold = core.path_sold
    cdef double[:, :, ::1] step_sold = core.step_sold
    cdef double[:, ::1] step_loss = core.step_loss
    cdef double[:, ::1] step_fees = core.step_fees
    cdef double[:, ::1] step_open_debt = core.step_open_debt
    cdef double[:, ::1] step_collateral_value = core.step_collateral_value
    cdef i64[::1] path_rounds = out.path_rounds
    cdef double[:, ::1] path_drawdown = out.path_drawdown
    cdef double[:, ::1] path_unsold = out.path_unsold
    cdef double[:, :, ::1] step_impact = out.step_impact

    # Per-worker scratch; rows padded so that no two workers share a cache line.
    w = n_workers
    n = n1 + 64
    cdef i8[:, ::1] is_active = np.zeros((w, n), dtype=np.int8)
    cdef i32[:, ::1] alive = np.empty((w, n), dtype=np.int32)
    cdef i32[:, ::1] act_list = np.empty((w, n), dtype=np.int32)
    cdef i32[:, ::1] near = np.empty((w, n), dtype=np.int32)
    cdef i64[:, ::1] pending = np.empty((w, n), dtype=np.int64)
    cdef i32[:, ::1] fresh = np.empty((w, n), dtype=np.int32)
    cdef i32[:, ::1] due = np.empty((w, n), dtype=np.int32)
    cdef i64[:, ::1] sort_tmp = np.empty((w, n), dtype=np.int64)
    cdef i64[:, ::1] radix_counts = np.zeros((w, (1 << RADIX_BITS) + 8), dtype=np.int64)
    cdef double[:, ::1] per_asset = np.zeros((w, N_PER_ASSET * n_assets + 8))
    cdef i64[:, ::1] c_ptr = np.zeros((w, n_assets + 8), dtype=np.int64)
    cdef i64[:, ::1] l_ptr = np.zeros((w, n_assets + 8), dtype=np.int64)
    cdef i8[:, ::1] st_status = np.empty((w, n), dtype=np.int8)
    cdef double[:, ::1] st_q = np.empty((w, n))
    cdef double[:, ::1] st_debt = np.empty((w, n))
    cdef i32[:, ::1] st_debt_step = np.empty((w, n), dtype=np.int32)
    cdef double[:, ::1] st_principal = np.empty((w, n))
    cdef i32[:, ::1] st_call = np.empty((w, n), dtype=np.int32)
    cdef i32[:, ::1] st_topup = np.empty((w, n), dtype=np.int32)
    cdef double[:, ::1] st_order = np.empty((w, n))
    cdef i8[:, ::1] st_kind = np.empty((w, n), dtype=np.int8)
    cdef i32[:, ::1] st_acted_step = np.empty((w, n), dtype=np.int32)
    cdef i8[:, ::1] st_had_call = np.empty((w, n), dtype=np.int8)
    cdef i8[:, ::1] st_had_liq = np.empty((w, n), dtype=np.int8)
    cdef double[:, ::1] st_cg = np.empty((w, n))
    cdef double[:, ::1] st_lg = np.empty((w, n))
    cdef double[:, ::1] acc_money = np.zeros((w, n_chunks * N_MONEY + 8))
    cdef i64[:, ::1] acc_counts = np.zeros((w, n_chunks * N_COUNTS + 8), dtype=np.int64)
    cdef double[:, ::1] acc_sold = np.zeros((w, n_chunks * n_assets + 8))
    cdef double[:, ::1] acc_step_money = np.zeros((w, n_chunks * N_STEP_MONEY * steps + 8))
    cdef double[:, ::1] acc_step_sold = np.zeros((w, n_chunks * steps * n_assets + 8))
    cdef double[:, ::1] schedule = np.empty((w, (n if record else 0) + 8))
    cdef i32[:, ::1] entry_slot = np.empty((w, n), dtype=np.int32)
    cdef i32[:, ::1] entry_asset = np.empty((w, n), dtype=np.int32)
    cdef double[:, ::1] entry_order = np.empty((w, n))
    cdef i8[:, ::1] entry_sale = np.empty((w, n), dtype=np.int8)
    cdef double[:, ::1] entry_adds = np.empty((w, n * N_ADDS))
    calls_p = np.zeros((w, n), dtype=np.int32)
    liquidated_p = np.zeros((w, n), dtype=np.int32)
    cdef i32[:, ::1] v_calls_p = calls_p
    cdef i32[:, ::1] v_liquidated_p = liquidated_p
    rows = n_workers * per_worker
    cdef i32[:, ::1] log_slot = np.empty((rows, n1), dtype=np.int32)
    cdef double[:, ::1] log_loss = np.empty((rows, n1))
    cdef i64[::1] log_count = np.zeros(rows, dtype=np.int64)
    # Losses per slot, from the block's starting per-loan losses: the merge adds each
    # path's in path order, as the reference does per loan.
    loss_p = _gather(core.loan_loss, c_order, n_workers)
    cdef double[::1] v_loss_p = loss_p
    # Within a round, paths start in descending order of estimated work (loans their
    # lowest price reaches), so that the dynamic schedule leaves no thread a long tail.
    launch = _launch_order(prices, walk, order_start, n_workers * per_worker)
    cdef const i64[::1] v_launch = launch

    cdef Shared sh
    sh.n_assets = n_assets
    sh.n_steps = n_steps
    sh.n_paths = n_paths
    sh.n_loans = n_loans
    sh.n_chunks = n_chunks
    sh.n_step_rows = steps
    sh.record = record
    cdef i64 loan_bits = 1
    while (1 << loan_bits) < n_loans:
        loan_bits += 1
    sh.loan_bits = loan_bits
    sh.prices = &price_view[0, 0, 0]
    sh.asset_of = &v_asset_of[0]
    sh.collateral_of = &v_coll[0]
    sh.debt_of = &v_debt[0]
    sh.growth_of = &v_growth[0]
    sh.position = &v_position[0]
    sh.debt_horizon = &v_debt_horizon[0]
    sh.gmax_p = &p_gmax[0]
    sh.seed_key = seed_key
    sh.path_offset = path_offset
    sh.mode = o.mode
    sh.close_factor = o.close_factor
    sh.full_close_ltv = o.full_close_ltv
    sh.min_liquidation = o.min_liquidation
    sh.max_sell = &cap[0]
    sh.depth = &depth[0]
    sh.depth_move = &move[0]
    sh.sqrt_law = &sqrt_law[0]
    sh.share = &share[0]
    sh.decay = &decay[0]
    sh.max_rounds = o.max_rounds
    sh.bridge = bool(o.bridge)
    sh.variance = &variance_view[0, 0, 0]
    sh.full_horizon = full_horizon
    sh.loan_p = &p_loan[0]
    sh.asset_p = &p_asset[0]
    sh.collateral_p = &p_coll[0]
    sh.debt_p = &p_debt[0]
    sh.growth_p = &p_growth[0]
    sh.m_p = &p_m[0]
    sh.l_p = &p_l[0]
    sh.tau_p = &p_tau[0]
    sh.cure_p = &p_cure[0]
    sh.fee_p = &p_fee[0]
    sh.topup_p = &p_topup[0]
    sh.cg_p = &p_cg[0]
    sh.lg_p = &p_lg[0]
    sh.l_rank = &v_l_rank[0]
    sh.walk_p = &v_walk[0]
    sh.l_walk = &v_l_walk[0]
    sh.order_start = &v_order_start[0]
    sh.path_money = &path_money[0, 0]
    sh.path_counts = &path_counts[0, 0]
    sh.path_sold = &path_sold[0, 0]
    sh.step_sold = &step_sold[0, 0, 0] if record else NULL
    sh.step_loss = &step_loss[0, 0] if record else NULL
    sh.step_fees = &step_fees[0, 0] if record else NULL
    sh.step_open_debt = &step_open_debt[0, 0] if record else NULL
    sh.step_collateral_value = &step_collateral_value[0, 0] if record else NULL
    sh.path_rounds = &path_rounds[0]
    sh.path_drawdown = &path_drawdown[0, 0]
    sh.path_unsold = &path_unsold[0, 0]
    sh.step_impact = &step_impact[0, 0, 0] if record else NULL
    sh.log_slot = &log_slot[0, 0]
    sh.log_loss = &log_loss[0, 0]
    sh.log_count = &log_count[0]

    workers = np.zeros(n_workers * sizeof(Worker), dtype=np.uint8)
    cdef unsigned char[::1] worker_bytes = workers
    cdef Worker* ws = <Worker*>&worker_bytes[0]
    cdef Worker* W
    cdef Py_ssize_t q
    for q in range(n_workers):
        W = &ws[q]
        W.is_active = &is_active[q, 0]
        W.alive = &alive[q, 0]
        W.act_list = &act_list[q, 0]
        W.near = &near[q, 0]
        W.pending = &pending[q, 0]
        W.fresh = &fresh[q, 0]
        W.due = &due[q, 0]
        W.sort_tmp = &sort_tmp[q, 0]
        W.radix_counts = &radix_counts[q, 0]
        W.per_asset = &per_asset[q, 0]
        W.c_ptr = &c_ptr[q, 0]
        W.l_ptr = &l_ptr[q, 0]
        W.st_status = &st_status[q, 0]
        W.st_q = &st_q[q, 0]
        W.st_debt = &st_debt[q, 0]
        W.st_debt_step = &st_debt_step[q, 0]
        W.st_principal = &st_principal[q, 0]
        W.st_call = &st_call[q, 0]
        W.st_topup = &st_topup[q, 0]
        W.st_order = &st_order[q, 0]
        W.st_kind = &st_kind[q, 0]
        W.st_acted_step = &st_acted_step[q, 0]
        W.st_had_call = &st_had_call[q, 0]
        W.st_had_liq = &st_had_liq[q, 0]
        W.st_cg = &st_cg[q, 0]
        W.st_lg = &st_lg[q, 0]
        W.acc_money = &acc_money[q, 0]
        W.acc_counts = &acc_counts[q, 0]
        W.acc_sold = &acc_sold[q, 0]
        W.acc_step_money = &acc_step_money[q, 0]
        W.acc_step_sold = &acc_step_sold[q, 0]
        W.schedule = &schedule[q, 0]
        W.entry_slot = &entry_slot[q, 0]
        W.entry_asset = &entry_asset[q, 0]
        W.entry_order = &entry_order[q, 0]
        W.entry_sale = &entry_sale[q, 0]
        W.entry_adds = &entry_adds[q, 0]
        W.calls_p = &v_calls_p[q, 0]
        W.liquidated_p = &v_liquidated_p[q, 0]

    cdef i64 per_round = n_workers * per_worker
    cdef Py_ssize_t slot
    cdef i64 base = 0
    cdef i64 row, kk, n_rows, jp
    with nogil:
        while base < n_paths:
            n_rows = per_round if per_round < n_paths - base else n_paths - base
            for kk in prange(n_rows, num_threads=n_workers, schedule="dynamic", chunksize=1):
                jp = v_launch[base + kk]
                _run_path(&sh, &ws[threadid()], jp, jp - base)
            # Losses in path order.
            for row in range(n_rows):
                for kk in range(log_count[row]):
                    v_loss_p[log_slot[row, kk]] += log_loss[row, kk]
            base += per_round
    # Back to loan order: losses as merged (they started from the block's own, and blocks
    # run one after another); counts summed over workers (integers).
    cdef double[::1] loan_loss = core.loan_loss
    cdef i64[::1] loan_calls = core.loan_calls
    cdef i64[::1] loan_liquidated = core.loan_liquidated
    cdef i64 calls, liquidated
    with nogil:
        for slot in prange(n_loans, num_threads=n_workers, schedule="static"):
            i = p_loan[slot]
            loan_loss[i] = v_loss_p[slot]
            calls = 0
            liquidated = 0
            for q in range(n_workers):
                calls = calls + v_calls_p[q, slot]
                liquidated = liquidated + v_liquidated_p[q, slot]
            loan_calls[i] += calls
            loan_liquidated[i] += liquidated


def _launch_order(prices, walk, order_start, per_round):
    """Paths of the block, each round's (``per_round`` consecutive paths) in descending
    order of the number of loans whose call guard the path's lowest price reaches."""
    n_assets, _, n_paths = prices.shape
    work = np.zeros(n_paths, dtype=np.int64)
    low = prices.min(axis=1)
    for a in range(n_assets):
        descending = -walk[order_start[a]:order_start[a + 1]]  # ascending
        work += np.searchsorted(descending, -low[a], side="right")
    launch = np.arange(n_paths, dtype=np.int64)
    for base in range(0, n_paths, per_round):
        members = launch[base:base + per_round]
        launch[base:base + per_round] = members[np.argsort(-work[members], kind="stable")]
    return launch
