# cython: language_level=3
"""The coupled kernel (market impact, cascades, lenders' rules, crossings) in Cython
(OpenMP ``prange`` over groups of paths, ``nogil``).

The slow, obvious version is ``tests/naive_coupled.py``: this file computes exactly the
same numbers, in the same order of floating-point operations, and the numba kernel
(``_numba_coupled.py``) is the same design, name for name.

Why it is built this way:

* Loans of one path interact through its price, so steps are outermost. Paths run in
  groups of ``COUPLED_GROUP``; a group's state is ``[n_loans, COUPLED_GROUP]`` per field
  (never loans x paths).
* Per step: sweep 1 (``_sweep_one``) runs the core rules on every loan at the step's
  opening price; then, while some path of the group has orders, the clearing
  (``_clear``: fill share, impact, slippage, execution price) runs serially per path and
  asset, and the next sweep (``_sweep_next``) settles the orders and looks for new
  liquidations at the impacted price. Sweeps run over fixed loan chunks of
  ``LOAN_CHUNK``; each chunk has its own accumulators, reduced in chunk order.
* Threads take whole groups (``prange`` over groups, dynamic): a group's paths depend
  only on its own loans, so a thread runs a group's every step and sweep alone
  (``_run_group``), with its own copy of the group state (one per thread, O(loans)),
  and no barrier. Per-path sums are those of one thread; the per-loan outputs, shared by
  all groups, are logged per group and added in group order (``_merge``), so no bit
  depends on the thread count.
* Pristine skipping: a loan no path of the group has touched (every path open, no call,
  initial collateral, debt on the shared schedule ``D0 * g * g ...``) is skipped when the
  group's lowest price is above the core's conservative guard threshold (and, with
  crossings, when no crossing draw can succeed); the first time it is not skipped its
  state rows are initialised and it is evaluated exactly from then on.
* Touched loans keep a guard per path (``_path_guard``): above it nothing can happen
  there but the debt's accrual, so sweep 1 compares prices with guards and accrues the
  debts lazily (``_advance``: the same multiplies, in the same order). A loan's trigger
  for later sweeps takes a quiet path's guard as its bound unless that could list it.
* Sweeps k >= 2 visit a chunk's "near" list (loans with an order or within
  ``NEAR_SHARE`` of a trigger, in loan order) and pass over a listed loan while every
  path's price / opening price stays above its reach; the whole chunk is scanned only
  when the price falls to the reach of an unlisted loan. Every skip is a proof that the
  exact rule would do nothing, so no bit changes.

Built with ``-ffp-contract=off`` (no fused multiply-add), and ``exp``, ``expm1``, ``log``
and ``sqrt`` are libm's, the functions Python's ``math`` module calls: the results are
those of the naive reference to the last bit.
"""
from cython.parallel cimport prange, threadid
from libc.math cimport exp, expm1, log, sqrt
from libc.stdlib cimport free, malloc, realloc
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

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    typedef omp_lock_t ltvsim_lock;
    static void ltvsim_lock_init(ltvsim_lock* l) { omp_init_lock(l); }
    static void ltvsim_lock_destroy(ltvsim_lock* l) { omp_destroy_lock(l); }
    static void ltvsim_lock_set(ltvsim_lock* l) { omp_set_lock(l); }
    static void ltvsim_lock_unset(ltvsim_lock* l) { omp_unset_lock(l); }
    #else
    typedef int ltvsim_lock;
    static void ltvsim_lock_init(ltvsim_lock* l) { (void)l; }
    static void ltvsim_lock_destroy(ltvsim_lock* l) { (void)l; }
    static void ltvsim_lock_set(ltvsim_lock* l) { (void)l; }
    static void ltvsim_lock_unset(ltvsim_lock* l) { (void)l; }
    #endif
    """
    ctypedef struct ltvsim_lock:
        pass
    void ltvsim_lock_init(ltvsim_lock* l) nogil
    void ltvsim_lock_destroy(ltvsim_lock* l) nogil
    void ltvsim_lock_set(ltvsim_lock* l) nogil
    void ltvsim_lock_unset(ltvsim_lock* l) nogil

cdef enum:
    # A loan path's status and the kind of its order.
    OPEN = 0
    LIQUIDATING = 1
    CLOSED = 2
    ORDER_NONE = 0
    ORDER_FULL = 1
    ORDER_PART = 2
    MODE_FULL = 0
    MODE_PARTIAL = 1
    MODE_CLOSE_FACTOR = 2
    NO_STEP = -1
    # Per-path money and count accumulators.
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
    # Per-step money accumulators (record mode).
    STEP_LOSS = 0
    STEP_FEES = 1
    STEP_OPEN_DEBT = 2
    STEP_COLLATERAL_VALUE = 3
    N_STEP_MONEY = 4
    # Paths per group.
    G = 8

# The enum above must match the shared configuration.
assert (LOSS, FEES, INTEREST, PRINCIPAL, RESIDUAL, PROCEEDS, DEBT_CLOSED, UNREALISED) == tuple(range(cfg.N_MONEY))
assert N_MONEY == cfg.N_MONEY and N_COUNTS == cfg.N_COUNTS and N_STEP_MONEY == cfg.N_STEP_MONEY
assert (CALLS, LIQUIDATIONS, FULL_LIQUIDATIONS, TOPUPS) == (cfg.CALLS, cfg.LIQUIDATIONS, cfg.FULL_LIQUIDATIONS, cfg.TOPUPS)
assert (STEP_LOSS, STEP_FEES, STEP_OPEN_DEBT, STEP_COLLATERAL_VALUE) == (
    cfg.STEP_LOSS, cfg.STEP_FEES, cfg.STEP_OPEN_DEBT, cfg.STEP_COLLATERAL_VALUE)
assert (OPEN, LIQUIDATING, CLOSED) == (_ca.COUPLED_OPEN, _ca.COUPLED_LIQUIDATING, _ca.COUPLED_CLOSED)
assert (ORDER_NONE, ORDER_FULL, ORDER_PART) == (_ca.ORDER_NONE, _ca.ORDER_FULL, _ca.ORDER_PART)
assert (MODE_FULL, MODE_PARTIAL, MODE_CLOSE_FACTOR) == (_ca.MODE_FULL, _ca.MODE_PARTIAL, _ca.MODE_CLOSE_FACTOR)
assert G == _ca.COUPLED_GROUP and NO_STEP == cfg.NO_STEP

cdef Py_ssize_t LOAN_CHUNK = cfg.LOAN_CHUNK
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
#: A sweep k >= 2 visits only a chunk's "near" list (loans with an order, or a path whose
#: trigger price is at least this share of its opening price) while every path's price
#: stays above the triggers of the chunk's other loans; otherwise it scans the chunk.
cdef double NEAR_SHARE = 0.9


cdef struct LoanEntry:
    # A group's contribution to a loan's outputs: a loss (one path) or its counts.
    i64 loan
    i64 calls
    i64 liquidated
    double loss


cdef struct Log:
    LoanEntry* entries
    Py_ssize_t count
    Py_ssize_t capacity


cdef struct Kernel:
    # Everything a sweep reads or writes: set up once, the step fields between sweeps.
    Py_ssize_t n_loans
    Py_ssize_t n_assets
    Py_ssize_t n_steps
    Py_ssize_t n_paths
    Py_ssize_t n_step_rows   # n_steps + 1 in record mode, else 0
    bint record
    # Loan terms [n_loans].
    const i64* asset
    const double* collateral0
    const double* debt0
    const double* growth
    const double* m
    const double* l
    const double* tau
    const i64* cure
    const double* fee
    const double* topup_prob
    u64 seed_key
    i64 path_offset
    # Options.
    int mode
    double close_factor
    double full_close_ltv
    double min_liquidation
    bint bridge
    const double* bridge_variance  # [n_assets, n_steps + 1, n_paths]
    # Group state [n_loans, G] and per loan [n_loans].
    i8* status
    double* collateral
    double* debt
    double* principal
    i32* call_start         # steps fit in int32 (checked)
    i32* topup_due
    double* order
    i8* order_kind
    i8* pending
    i32* acted              # step + 1 at which the path last acted (an order or a top-up)
    i8* modified            # partially sold: own debt, off the shared schedule
    i8* had_call
    i8* had_liquidation
    double* loss
    i8* touched
    i64* debt_step          # a touched loan's path debts are accrued through this step
    double* guard           # [n_loans, G]: a touched path's price bound: above it, no rule acts
                            # there at any later step but accrual (-inf: closed; +inf: look)
    double* schedule_debt   # a pristine loan's debt D0 * g * ... at step schedule_step
    i64* schedule_step
    const double* bound     # [n_loans]: a pristine loan's guard threshold at step T (>= at any t)
    # Per-chunk lists for sweeps k >= 2.
    i64* near               # [n_chunks, LOAN_CHUNK]: loan indices, in loan order
    i64* near_count         # [n_chunks]
    double* crit            # [n_chunks, n_assets]: highest reach of the loans not listed
    double* trig            # [n_loans]: a listed loan's reach (+inf: it has an order)
    # Per-chunk accumulators.
    double* acc_money       # [n_chunks, N_MONEY, G]
    i64* acc_counts         # [n_chunks, N_COUNTS, G]
    double* acc_sold        # [n_chunks, n_assets, G]
    double* acc_requested   # [n_chunks, n_assets, G]
    double* acc_unsold      # [n_chunks, n_assets, G]
    double* acc_step_sold   # [n_chunks, n_step_rows, n_assets, G]
    double* acc_step_money  # [n_chunks, N_STEP_MONEY, n_step_rows, G]
    # The group's per-loan outputs, logged for the ordered merge (``_merge``).
    Log log
    bint failed             # out of memory for the log
    # The group and step being swept.
    Py_ssize_t group_start
    Py_ssize_t n_group
    i64 t
    bint decide
    double* price           # [n_assets, G]: the price loans see now
    double* previous_price  # [n_assets, G]: the previous step's final price
    double* fill            # [n_assets, G]: this round's fill share
    double* execution       # [n_assets, G]: this round's execution price
    i8* active              # [G]: path still clearing rounds this step
    double* low             # [n_assets]: lowest price over the paths swept
    double* low_both        # [n_assets]: lowest of price and previous price (sweep 1)
    double* reach           # [n_assets]: crossing factor exp(sqrt(REACH * max variance))
    double* opening         # [n_assets, G]: the step's opening price (sweep 1)
    double* inverse_opening # [n_assets, G]: 1 / opening (reaches carry a margin far above its rounding)
    double* low_open        # [n_assets]: its lowest over the group's paths
    double* drop            # [n_assets]: lowest price / opening price over the paths swept
    Py_ssize_t n_chunks
    # The group's impact and clearing rows.
    double* permanent       # [n_assets, G]
    double* transient       # [n_assets, G]
    double* sold_in_step    # [n_assets, G]
    double* worst_factor    # [n_assets, G]
    i64* rounds             # [G]
    i64* deepest            # [G]


cdef struct Block:
    # What every group of the block shares: prices, impact options, outputs.
    Py_ssize_t n_groups
    const double* raw       # [n_assets, n_steps + 1, n_paths]: the block's exogenous prices
    const double* cap
    const double* depth
    const double* move
    const i64* sqrt_law
    const double* share
    const double* decay
    i64 max_rounds
    double* path_money      # [N_MONEY, n_paths]
    i64* path_counts        # [N_COUNTS, n_paths]
    double* path_sold       # [n_assets, n_paths]
    double* step_sold       # [n_step_rows, n_assets, n_paths]
    double* step_loss       # [n_step_rows, n_paths] (and the next three)
    double* step_fees
    double* step_open_debt
    double* step_collateral_value
    i64* path_rounds        # [n_paths]
    double* path_drawdown   # [n_assets, n_paths]
    double* path_unsold     # [n_assets, n_paths]
    double* step_impact     # [n_step_rows, n_assets, n_paths]
    # Per-loan outputs (persist across blocks), merged in group order under ``lock``.
    double* loan_loss
    i64* loan_calls
    i64* loan_liquidated
    Log* logs               # [n_groups]: finished groups' logs not merged yet
    i8* finished            # [n_groups]
    Py_ssize_t merged       # groups merged so far (in order)
    ltvsim_lock lock


cdef struct Accumulators:
    # One chunk's rows of the accumulators.
    double* money
    i64* counts
    double* sold
    double* requested
    double* unsold
    double* step_sold
    double* step_money


cdef inline Accumulators _chunk_accumulators(const Kernel* k, Py_ssize_t chunk) noexcept nogil:
    cdef Accumulators acc
    acc.money = k.acc_money + chunk * N_MONEY * G
    acc.counts = k.acc_counts + chunk * N_COUNTS * G
    acc.sold = k.acc_sold + chunk * k.n_assets * G
    acc.requested = k.acc_requested + chunk * k.n_assets * G
    acc.unsold = k.acc_unsold + chunk * k.n_assets * G
    acc.step_sold = k.acc_step_sold + chunk * k.n_step_rows * k.n_assets * G
    acc.step_money = k.acc_step_money + chunk * N_STEP_MONEY * k.n_step_rows * G
    return acc


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


cdef inline double _guard_threshold(double debt_t, double collateral, double ltv_collateral) noexcept nogil:
    """Price above which a pristine path's LTV is provably below the LTV level of
    ``ltv_collateral`` (collateral * that level); the core kernels' test."""
    cdef double threshold = debt_t / ltv_collateral
    if not (TINY <= debt_t <= HUGE and TINY <= threshold <= HUGE):
        return INF
    if not (TINY <= collateral * threshold <= HUGE):
        return INF
    return threshold * (1.0 + MARGIN)


cdef inline double _pristine_threshold(double debt_t, double collateral, double level) noexcept nogil:
    """``_guard_threshold`` with the magnitude checks of ``level`` and its collateral."""
    cdef double level_collateral = collateral * level
    if not (TINY <= level <= HUGE and TINY <= collateral <= HUGE
            and TINY <= level_collateral <= HUGE):
        return INF
    return _guard_threshold(debt_t, collateral, level_collateral)


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


cdef inline void _book(double* money, Py_ssize_t g, double fee, double interest, double principal,
                       double residual, double proceeds, double debt_closed, double loss) noexcept nogil:
    money[FEES * G + g] += fee
    money[INTEREST * G + g] += interest
    money[PRINCIPAL * G + g] += principal
    money[RESIDUAL * G + g] += residual
    money[PROCEEDS * G + g] += proceeds
    money[DEBT_CLOSED * G + g] += debt_closed
    money[LOSS * G + g] += loss


cdef inline double _schedule(const Kernel* k, Py_ssize_t i, i64 t) noexcept nogil:
    """A pristine loan's debt at step ``t`` (the shared schedule: one multiply per step,
    advanced lazily from where it was last asked for)."""
    cdef double debt = k.schedule_debt[i]
    cdef i64 step = k.schedule_step[i]
    cdef double g = k.growth[i]
    while step < t:
        debt = debt * g
        step += 1
    k.schedule_debt[i] = debt
    k.schedule_step[i] = step
    return debt


cdef inline double _trigger(const Kernel* k, Py_ssize_t i, Py_ssize_t n_group) noexcept nogil:
    """The touched loan's reach for the rest of the step: the highest ratio, over its open
    paths that have not acted, of the price at which the path could be at or above its
    liquidation LTV to the path's opening price (+inf: a path has an order). While every
    path's price / opening price stays above it, no sweep can liquidate the loan."""
    cdef Py_ssize_t g, idx
    cdef Py_ssize_t a = k.asset[i]
    cdef double reach = -INF
    cdef double ratio
    cdef double l = k.l[i]
    for g in range(n_group):
        idx = i * G + g
        if k.status[idx] == OPEN and k.acted[idx] != k.t + 1:
            ratio = _pristine_threshold(k.debt[idx], k.collateral[idx], l) * k.inverse_opening[a * G + g]
            if ratio > reach or ratio != ratio:
                reach = ratio if ratio == ratio else INF
        elif k.pending[idx]:
            return INF
    return reach * (1.0 + MARGIN)


cdef inline void _touch(const Kernel* k, Py_ssize_t i, double debt, i64 step) noexcept nogil:
    """Initialise a pristine loan's state rows (every path open, initial terms, ``debt``
    accrued through ``step``)."""
    cdef Py_ssize_t g, idx
    cdef double q0 = k.collateral0[i]
    cdef double d0 = k.debt0[i]
    for g in range(G):
        idx = i * G + g
        k.status[idx] = OPEN
        k.collateral[idx] = q0
        k.debt[idx] = debt
        k.principal[idx] = d0
        k.call_start[idx] = NO_STEP
        k.topup_due[idx] = NO_STEP
        k.order[idx] = 0.0
        k.order_kind[idx] = ORDER_NONE
        k.pending[idx] = 0
        k.acted[idx] = 0
        k.modified[idx] = 0
        k.had_call[idx] = 0
        k.had_liquidation[idx] = 0
        k.loss[idx] = 0.0
        k.guard[idx] = k.bound[i]
    k.touched[i] = 1
    k.debt_step[i] = step


cdef inline void _advance(const Kernel* k, Py_ssize_t i, i64 t) noexcept nogil:
    """Accrue a touched loan's path debts through step ``t`` (the steps it was passed
    over: the same multiplies, in the same order, as one per step)."""
    cdef Py_ssize_t g, idx
    cdef i64 step = k.debt_step[i]
    cdef i64 s
    cdef double growth = k.growth[i]
    cdef double debt
    if step >= t:
        return
    for g in range(k.n_group):
        idx = i * G + g
        if k.status[idx] == CLOSED:
            continue
        debt = k.debt[idx]
        for s in range(step, t):
            debt = debt * growth
        k.debt[idx] = debt
    k.debt_step[i] = t


cdef double _path_guard(const Kernel* k, Py_ssize_t i, Py_ssize_t idx) noexcept nogil:
    """The guard of a touched loan's path (debts accrued through the current step): a
    price above which, at any later step, sweep 1 changes nothing there but the debt's
    accrual (open, no call, no order, LTV < m), and no later sweep of the step can
    liquidate it (m <= l). A path on the shared schedule with the initial collateral
    has the pristine bound (as in the core kernels); a partially sold or topped-up one
    its own guard threshold at step T (a top-up's is far below the bound). -inf:
    closed; +inf: always look."""
    cdef i64 s
    cdef double debt
    cdef double growth = k.growth[i]
    if k.status[idx] == CLOSED:
        return -INF
    if (k.status[idx] != OPEN or k.pending[idx] or k.call_start[idx] != NO_STEP
            or k.topup_due[idx] != NO_STEP):
        return INF
    if not k.modified[idx] and k.collateral[idx] == k.collateral0[i]:
        return k.bound[i]
    if not (growth >= 1.0):
        return INF
    debt = k.debt[idx]
    for s in range(k.debt_step[i], k.n_steps):
        debt = debt * growth
    return _pristine_threshold(debt, k.collateral[idx], k.m[i])


cdef void _liquidate(const Kernel* k, Py_ssize_t i, Py_ssize_t idx, Py_ssize_t g, double ltv,
                     double price, Accumulators* acc) noexcept nogil:
    """Put up a liquidation order sized at ``price``."""
    cdef double q = k.collateral[idx]
    cdef double debt = k.debt[idx]
    cdef double f = k.fee[i]
    cdef double quantity = q
    cdef double denominator, repay, repaid
    cdef bint full
    acc.counts[LIQUIDATIONS * G + g] += 1
    k.had_liquidation[idx] = 1
    k.call_start[idx] = NO_STEP
    k.topup_due[idx] = NO_STEP
    if k.mode == MODE_PARTIAL:
        denominator = price / (1.0 + f) - k.tau[i] * price
        if denominator > 0.0:
            quantity = (debt - k.tau[i] * q * price) / denominator
    elif k.mode == MODE_CLOSE_FACTOR:
        repay = debt if ltv >= k.l[i] * k.full_close_ltv else k.close_factor * debt
        quantity = repay * (1.0 + f) / price
    # An order sized at zero or less (a crossing drawn below the target LTV) is full.
    full = k.mode == MODE_FULL or not (0.0 < quantity < q)
    if not full and k.min_liquidation > 0.0:
        repaid = quantity * price / (1.0 + f)
        full = repaid < k.min_liquidation or debt - repaid < k.min_liquidation
    k.order[idx] = q if full else quantity
    k.order_kind[idx] = ORDER_FULL if full else ORDER_PART
    k.status[idx] = LIQUIDATING


cdef bint _round_one(const Kernel* k, Py_ssize_t i, Py_ssize_t idx, Py_ssize_t g, double price,
                     double previous_price, Accumulators* acc) noexcept nogil:
    """The core rules of one open loan path at the step's opening price; True if it liquidates."""
    cdef i64 t = k.t
    cdef double debt = k.debt[idx]
    cdef double q = k.collateral[idx]
    cdef double ltv = debt / (q * price)
    cdef double l = k.l[i]
    cdef double m = k.m[i]
    cdef double previous_ltv, variance, level, a, probability
    cdef i64 path = k.path_offset + k.group_start + g
    cdef bint liquidate = False
    if k.topup_due[idx] == t:
        k.topup_due[idx] = NO_STEP
        if ltv >= m:
            k.collateral[idx] = debt / (k.tau[i] * price)
            k.call_start[idx] = NO_STEP
            acc.counts[TOPUPS * G + g] += 1
            k.acted[idx] = t + 1
            return False
    if k.bridge and t >= 1 and ltv < l:
        previous_ltv = debt / (q * previous_price)
        variance = k.bridge_variance[(k.asset[i] * (k.n_steps + 1) + t) * k.n_paths + k.group_start + g]
        if previous_ltv < l and variance > 0.0:
            level = debt / (q * l)
            a = log(previous_price / level) * log(price / level)
            probability = exp(-2.0 * a / variance)
            liquidate = _bridge_uniform(_mix64(k.seed_key ^ <u64>i), path, t) < probability
    if liquidate:
        pass
    elif ltv >= l:
        liquidate = True
    elif ltv >= m:
        if k.call_start[idx] == NO_STEP:
            k.call_start[idx] = t
            k.had_call[idx] = 1
            acc.counts[CALLS * G + g] += 1
            if _uniform(_mix64(k.seed_key ^ <u64>i), path, t) < k.topup_prob[i]:
                k.topup_due[idx] = t + 1
        elif k.cure[i] >= 1 and t - k.call_start[idx] >= k.cure[i]:
            liquidate = True
    else:
        k.call_start[idx] = NO_STEP
        k.topup_due[idx] = NO_STEP
    if liquidate:
        _liquidate(k, i, idx, g, ltv, price, acc)
    return liquidate


cdef void _settle(const Kernel* k, Py_ssize_t i, Py_ssize_t idx, Py_ssize_t g, double fill,
                  double execution, Accumulators* acc) noexcept nogil:
    """Sell this round's fill of the loan's order at ``execution``."""
    cdef Py_ssize_t a = k.asset[i]
    cdef Py_ssize_t t = k.t
    cdef double f = k.fee[i]
    cdef double debt = k.debt[idx]
    cdef double principal = k.principal[idx]
    cdef double q = k.collateral[idx]
    cdef double interest = debt - principal
    cdef double proceeds, fee_due, fee_paid, rest, interest_paid, principal_paid, residual
    cdef double loss, x, repaid, remaining_principal
    if interest < 0.0:
        interest = 0.0
    if k.order_kind[idx] == ORDER_FULL and fill == 1.0:
        proceeds = q * execution
        fee_due = f * debt
        fee_paid = proceeds if proceeds < fee_due else fee_due
        rest = proceeds - fee_paid
        interest_paid = rest if rest < interest else interest
        rest = rest - interest_paid
        principal_paid = rest if rest < principal else principal
        residual = rest - principal_paid
        loss = (interest - interest_paid) + (principal - principal_paid)
        _book(acc.money, g, fee_paid, interest_paid, principal_paid, residual, proceeds, interest + principal, loss)
        if k.record:
            acc.step_money[(STEP_LOSS * k.n_step_rows + t) * G + g] += loss
            acc.step_money[(STEP_FEES * k.n_step_rows + t) * G + g] += fee_paid
            acc.step_sold[(t * k.n_assets + a) * G + g] += q
        acc.sold[a * G + g] += q
        k.loss[idx] = loss
        k.status[idx] = CLOSED
        acc.counts[FULL_LIQUIDATIONS * G + g] += 1
        return
    x = k.order[idx] if fill == 1.0 else k.order[idx] * fill
    if x <= 0.0:
        return  # nothing sold this round: the whole order waits
    proceeds = x * execution
    repaid = proceeds / (1.0 + f)
    if repaid >= debt:
        # The sale covers the whole debt: the loan closes, the rest goes back.
        fee_paid = f * debt
        residual = proceeds - fee_paid - interest - principal
        _book(acc.money, g, fee_paid, interest, principal, residual, proceeds, interest + principal, 0.0)
        if k.record:
            acc.step_money[(STEP_FEES * k.n_step_rows + t) * G + g] += fee_paid
            acc.step_sold[(t * k.n_assets + a) * G + g] += x
        acc.sold[a * G + g] += x
        k.status[idx] = CLOSED
        acc.counts[FULL_LIQUIDATIONS * G + g] += 1
        return
    fee_paid = f * repaid
    interest_paid = repaid if repaid < interest else interest
    principal_paid = repaid - interest_paid
    k.debt[idx] = debt - repaid
    k.modified[idx] = 1
    remaining_principal = principal - principal_paid
    k.principal[idx] = remaining_principal if remaining_principal > 0.0 else 0.0
    k.collateral[idx] = q - x
    _book(acc.money, g, fee_paid, interest_paid, principal_paid, 0.0, proceeds, repaid, 0.0)
    if k.record:
        acc.step_money[(STEP_FEES * k.n_step_rows + t) * G + g] += fee_paid
        acc.step_sold[(t * k.n_assets + a) * G + g] += x
    acc.sold[a * G + g] += x
    if fill == 1.0:
        k.status[idx] = OPEN
        k.order[idx] = 0.0
    else:
        k.order[idx] = k.order[idx] - x


cdef double _visit_one(const Kernel* k, Py_ssize_t i, Accumulators* acc) noexcept nogil:
    """Sweep 1 on loan ``i``: the core rules at the opening price on every path. Returns
    an upper bound of the loan's trigger price for the rest of the step (+inf: it has
    an order)."""
    cdef Py_ssize_t a = k.asset[i]
    cdef Py_ssize_t g, idx
    cdef i64 t = k.t
    cdef double debt, previous, threshold, bound, price, guard, ratio
    cdef u64 mask
    cdef const double* prices
    cdef const double* inverse
    cdef const double* guards
    cdef double m = k.m[i]
    cdef bint skip, quiet
    cdef bint crossings = k.bridge and t >= 1
    cdef i8 status
    cdef i8 event[G]
    cdef double ratios[G]
    cdef i64 n_events = 0
    if not k.touched[i]:
        # The bound at step T first: one comparison for most loans.
        bound = k.bound[i]
        if k.low[a] > bound and (not crossings or k.low_both[a] > bound * k.reach[a]):
            return bound / k.low[a] * (1.0 + MARGIN)
        previous = _schedule(k, i, t - 1) if t >= 1 else k.debt0[i]
        debt = previous * k.growth[i] if t >= 1 else previous
        threshold = _pristine_threshold(debt, k.collateral0[i], m)
        skip = k.low[a] > threshold
        if skip and crossings:
            skip = k.low_both[a] > _pristine_threshold(debt, k.collateral0[i], k.l[i]) * k.reach[a]
        if skip:
            return threshold / k.low[a] * (1.0 + MARGIN)
        _touch(k, i, debt, t)
    # Paths above their guard are quiet (one comparison each); if all are, the loan's
    # debts accrue later, when they are next needed.
    bound = -INF  # the highest guard / opening price
    mask = 0
    prices = k.price + a * G
    inverse = k.inverse_opening + a * G
    guards = k.guard + i * G
    for g in range(k.n_group):
        price = prices[g]
        guard = guards[g]
        if crossings:
            previous = k.previous_price[a * G + g]
            quiet = price > guard and (price if price < previous else previous) > guard * k.reach[a]
        else:
            quiet = price > guard
        mask |= (<u64>(not quiet)) << g
        guard = guard * inverse[g]
        ratios[g] = guard
        if guard > bound or guard != guard:
            bound = guard if guard == guard else INF
    if mask == 0:
        return bound * (1.0 + MARGIN)
    for g in range(k.n_group):
        event[g] = (mask >> g) & 1
    _advance(k, i, t)
    # Of the other paths, those where a rule may act: an order waiting, a call in
    # progress, LTV >= m, or a crossing that could be drawn.
    n_events = 0
    for g in range(k.n_group):
        if not event[g]:
            continue
        idx = i * G + g
        status = k.status[idx]
        if status == CLOSED:
            event[g] = 0
            continue
        if status == LIQUIDATING:
            event[g] = 1
            n_events += 1
            continue
        debt = k.debt[idx]
        price = k.price[a * G + g]
        quiet = (debt / (k.collateral[idx] * price) < m and k.call_start[idx] == NO_STEP
                 and k.topup_due[idx] == NO_STEP)
        if quiet and crossings:
            previous = k.previous_price[a * G + g]
            quiet = (price if price < previous else previous) > (
                _pristine_threshold(debt, k.collateral[idx], k.l[i]) * k.reach[a])
        event[g] = not quiet
        n_events += not quiet
    if n_events != 0:
        for g in range(k.n_group):
            if not event[g]:
                continue
            idx = i * G + g
            if k.status[idx] == LIQUIDATING:
                k.pending[idx] = 1
                k.acted[idx] = t + 1
                acc.requested[a * G + g] += k.order[idx]
                continue
            if _round_one(k, i, idx, g, k.price[a * G + g], k.previous_price[a * G + g], acc):
                k.pending[idx] = 1
                k.acted[idx] = t + 1
                acc.requested[a * G + g] += k.order[idx]
            k.guard[idx] = _path_guard(k, i, idx)
    # The trigger (``_trigger``'s bound): a quiet path's guard / opening price bounds its
    # share (above its guard, ``_visit_next`` leaves it alone); exact where that bound
    # could list the loan, and on the other paths.
    bound = -INF
    for g in range(k.n_group):
        ratio = ratios[g]
        if (mask >> g) & 1 or not (ratio < NEAR_SHARE):
            idx = i * G + g
            if k.status[idx] == OPEN and k.acted[idx] != t + 1:
                guard = _pristine_threshold(k.debt[idx], k.collateral[idx], k.l[i]) * inverse[g]
                if guard != guard:
                    guard = INF
                if not (mask >> g) & 1 and ratio < guard:
                    guard = ratio
                ratio = guard
            elif k.pending[idx]:
                return INF
            else:
                continue
        if ratio > bound or ratio != ratio:
            bound = ratio if ratio == ratio else INF
    return bound * (1.0 + MARGIN)


cdef double _visit_next(const Kernel* k, Py_ssize_t i, Accumulators* acc) noexcept nogil:
    """Sweep k >= 2 on loan ``i``: settle the last round's orders, then (while
    ``k.decide``) liquidate open paths that have not acted and now reach l. Returns an
    upper bound of the loan's trigger price for the rest of the step."""
    cdef Py_ssize_t a = k.asset[i]
    cdef Py_ssize_t g, idx
    cdef bint decide = k.decide
    cdef double ltv, price, threshold, debt
    if not k.touched[i]:
        # Nothing pending: only a new liquidation could happen.
        if not decide or k.low[a] > k.bound[i]:
            return k.bound[i] / k.low_open[a] * (1.0 + MARGIN)
        debt = _schedule(k, i, k.t)
        threshold = _pristine_threshold(debt, k.collateral0[i], k.l[i])
        if k.low[a] > threshold:
            return threshold / k.low_open[a] * (1.0 + MARGIN)
        _touch(k, i, debt, k.t)
    else:
        _advance(k, i, k.t)
    for g in range(k.n_group):
        if not k.active[g]:
            continue
        idx = i * G + g
        price = k.price[a * G + g]
        if k.pending[idx]:
            k.pending[idx] = 0
            _settle(k, i, idx, g, k.fill[a * G + g], k.execution[a * G + g], acc)
            k.guard[idx] = _path_guard(k, i, idx)
        elif decide and price <= k.guard[idx] and k.status[idx] == OPEN and k.acted[idx] != k.t + 1:
            ltv = k.debt[idx] / (k.collateral[idx] * price)
            if ltv >= k.l[i]:
                _liquidate(k, i, idx, g, ltv, price, acc)
                k.pending[idx] = 1
                k.acted[idx] = k.t + 1
                acc.requested[a * G + g] += k.order[idx]
                k.guard[idx] = INF
    return _trigger(k, i, k.n_group)


cdef inline void _file(const Kernel* k, Py_ssize_t chunk, Py_ssize_t i, double trigger,
                       i64* count) noexcept nogil:
    """Put loan ``i`` on its chunk's near list, or raise the chunk's highest trigger
    price of loans not listed."""
    cdef Py_ssize_t a = k.asset[i]
    cdef double* crit = k.crit + chunk * k.n_assets
    if trigger >= NEAR_SHARE or trigger != trigger:
        k.near[chunk * LOAN_CHUNK + count[0]] = i
        k.trig[i] = trigger
        count[0] += 1
    elif trigger > crit[a]:
        crit[a] = trigger


cdef void _sweep_one(const Kernel* k, Py_ssize_t chunk) noexcept nogil:
    """Sweep 1 of step ``k.t`` over one chunk, in loan order; files the near list."""
    cdef Accumulators acc = _chunk_accumulators(k, chunk)
    cdef Py_ssize_t start = chunk * LOAN_CHUNK
    cdef Py_ssize_t stop = start + LOAN_CHUNK
    cdef Py_ssize_t i, a
    cdef i64 count = 0
    if stop > k.n_loans:
        stop = k.n_loans
    memset(acc.requested, 0, k.n_assets * G * sizeof(double))
    for a in range(k.n_assets):
        k.crit[chunk * k.n_assets + a] = -INF
    for i in range(start, stop):
        _file(k, chunk, i, _visit_one(k, i, &acc), &count)
    k.near_count[chunk] = count


cdef void _sweep_next(const Kernel* k, Py_ssize_t chunk) noexcept nogil:
    """Sweep k >= 2 over one chunk, in loan order: its near list while no other loan can
    reach its liquidation level, else every loan (filing the list anew)."""
    cdef Accumulators acc = _chunk_accumulators(k, chunk)
    cdef Py_ssize_t start = chunk * LOAN_CHUNK
    cdef Py_ssize_t stop = start + LOAN_CHUNK
    cdef Py_ssize_t i, a, j
    cdef i64 count = 0
    cdef bint scan = False
    cdef const i64* near = k.near + chunk * LOAN_CHUNK
    if stop > k.n_loans:
        stop = k.n_loans
    memset(acc.requested, 0, k.n_assets * G * sizeof(double))
    if k.decide:
        for a in range(k.n_assets):
            if not (k.drop[a] > k.crit[chunk * k.n_assets + a]):
                scan = True
    if not scan:
        # A listed loan with no order and no path that can reach l is passed over.
        for j in range(k.near_count[chunk]):
            i = near[j]
            if not (k.drop[k.asset[i]] > k.trig[i]):
                k.trig[i] = _visit_next(k, i, &acc)
        return
    for a in range(k.n_assets):
        k.crit[chunk * k.n_assets + a] = -INF
    for i in range(start, stop):
        _file(k, chunk, i, _visit_next(k, i, &acc), &count)
    k.near_count[chunk] = count


cdef void _record_exposure(const Kernel* k, Py_ssize_t chunk) noexcept nogil:
    """Record mode, after step ``k.t``: debt and collateral value of every loan path not
    closed, in loan order."""
    cdef Accumulators acc = _chunk_accumulators(k, chunk)
    cdef Py_ssize_t start = chunk * LOAN_CHUNK
    cdef Py_ssize_t stop = start + LOAN_CHUNK
    cdef Py_ssize_t i, g, idx, a
    cdef Py_ssize_t n_group = k.n_group
    cdef double* open_debt = acc.step_money + (STEP_OPEN_DEBT * k.n_step_rows + k.t) * G
    cdef double* value = acc.step_money + (STEP_COLLATERAL_VALUE * k.n_step_rows + k.t) * G
    cdef double debt, q0
    if stop > k.n_loans:
        stop = k.n_loans
    for i in range(start, stop):
        a = k.asset[i]
        if k.touched[i]:
            _advance(k, i, k.t)
            for g in range(n_group):
                idx = i * G + g
                if k.status[idx] != CLOSED:
                    open_debt[g] += k.debt[idx]
                    value[g] += k.collateral[idx] * k.price[a * G + g]
        else:
            debt = _schedule(k, i, k.t)
            q0 = k.collateral0[i]
            for g in range(n_group):
                open_debt[g] += debt
                value[g] += q0 * k.price[a * G + g]


cdef void _log(Kernel* k, Py_ssize_t i, i64 calls, i64 liquidated, double loss) noexcept nogil:
    """Append a loan's output entry to the group's log."""
    cdef Log* log = &k.log
    cdef Py_ssize_t capacity
    cdef LoanEntry* entries
    if log.count == log.capacity:
        capacity = 2 * log.capacity if log.capacity > 0 else 1024
        entries = <LoanEntry*>realloc(log.entries, capacity * sizeof(LoanEntry))
        if entries == NULL:
            k.failed = True
            return
        log.entries = entries
        log.capacity = capacity
    log.entries[log.count].loan = i
    log.entries[log.count].calls = calls
    log.entries[log.count].liquidated = liquidated
    log.entries[log.count].loss = loss
    log.count += 1


cdef void _horizon(Kernel* k, Py_ssize_t chunk) noexcept nogil:
    """After step T: unrealised shortfall, unsold collateral, and the loans' outputs
    logged (in loan order, each loan's paths in order; zero losses and counts left out,
    since adding them changes nothing)."""
    cdef Accumulators acc = _chunk_accumulators(k, chunk)
    cdef Py_ssize_t start = chunk * LOAN_CHUNK
    cdef Py_ssize_t stop = start + LOAN_CHUNK
    cdef Py_ssize_t i, g, idx, a
    cdef Py_ssize_t n_group = k.n_group
    cdef double* unrealised = acc.money + UNREALISED * G
    cdef double shortfall, debt, q0
    cdef i64 n_called, n_liquidated
    if stop > k.n_loans:
        stop = k.n_loans
    for i in range(start, stop):
        a = k.asset[i]
        if k.touched[i]:
            _advance(k, i, k.n_steps)
            n_called = 0
            n_liquidated = 0
            for g in range(n_group):
                idx = i * G + g
                if k.status[idx] != CLOSED:
                    shortfall = k.debt[idx] - k.collateral[idx] * k.previous_price[a * G + g]
                    unrealised[g] += shortfall if shortfall > 0.0 else 0.0
                if k.status[idx] == LIQUIDATING:
                    acc.unsold[a * G + g] += k.order[idx]
                if k.loss[idx] != 0.0:
                    _log(k, i, 0, 0, k.loss[idx])
                n_called += k.had_call[idx]
                n_liquidated += k.had_liquidation[idx]
            if n_called != 0 or n_liquidated != 0:
                _log(k, i, n_called, n_liquidated, 0.0)
        else:
            # No loss, call or liquidation on any path (adding them would add zeros).
            # With m <= 1, a price above the loan's bound puts LTV < m <= 1 on every
            # path: the shortfall is not positive and 0.0 would be added.
            if k.m[i] <= 1.0 and k.low[a] > k.bound[i]:
                continue
            debt = _schedule(k, i, k.n_steps)
            q0 = k.collateral0[i]
            for g in range(n_group):
                shortfall = debt - q0 * k.previous_price[a * G + g]
                unrealised[g] += shortfall if shortfall > 0.0 else 0.0


cdef void _bounds(const Kernel* k, Py_ssize_t chunk) noexcept nogil:
    """``k.bound`` of one chunk's loans: the guard threshold of the schedule at step T."""
    cdef Py_ssize_t start = chunk * LOAN_CHUNK
    cdef Py_ssize_t stop = start + LOAN_CHUNK
    cdef Py_ssize_t i, t
    cdef double debt, g
    cdef double* bound = <double*>k.bound
    if stop > k.n_loans:
        stop = k.n_loans
    for i in range(start, stop):
        debt = k.debt0[i]
        g = k.growth[i]
        for t in range(k.n_steps):
            debt = debt * g
        bound[i] = _pristine_threshold(debt, k.collateral0[i], k.m[i]) if g >= 1.0 else INF


cdef bint _clear(Kernel* k, const Block* b) noexcept nogil:
    """Between sweeps, serially per path and asset: fill share, impact, slippage and
    execution price of the orders the last sweep put up; the new price. Paths without
    orders stop clearing (``k.active``). Returns True if some path cleared."""
    cdef Py_ssize_t n_assets = k.n_assets
    cdef Py_ssize_t n_chunks = k.n_chunks
    cdef const double* raw = b.raw
    cdef const double* cap = b.cap
    cdef const double* depth = b.depth
    cdef const double* move = b.move
    cdef const i64* sqrt_law = b.sqrt_law
    cdef const double* share = b.share
    cdef double* permanent = k.permanent
    cdef double* transient = k.transient
    cdef double* sold_in_step = k.sold_in_step
    cdef i64* rounds = k.rounds
    cdef Py_ssize_t g, a, c, ag
    cdef double total, room, filled, ratio, delta, price
    cdef bint any_order, any_active = False
    cdef double totals[64]
    cdef double* requested
    for g in range(k.n_group):
        if not k.active[g]:
            continue
        any_order = False
        for a in range(n_assets):
            total = 0.0
            for c in range(n_chunks):
                total += k.acc_requested[(c * n_assets + a) * G + g]
            totals[a] = total
            if total > 0.0:
                any_order = True
        if not any_order:
            k.active[g] = 0
            continue
        any_active = True
        rounds[g] += 1
        for a in range(n_assets):
            ag = a * G + g
            total = totals[a]
            price = k.price[ag]
            k.fill[ag] = 1.0
            k.execution[ag] = price
            if total <= 0.0:
                continue
            room = cap[a] - sold_in_step[ag]
            if total <= room:
                k.fill[ag] = 1.0
                filled = total
            else:
                k.fill[ag] = room / total if room > 0.0 else 0.0
                filled = total * k.fill[ag]
            sold_in_step[ag] = sold_in_step[ag] + filled
            # The notional at the path's own (unimpacted) price.
            ratio = filled * raw[(a * (k.n_steps + 1) + k.t) * k.n_paths + k.group_start + g] / depth[a]
            delta = move[a] * (sqrt(ratio) if sqrt_law[a] else ratio)
            k.execution[ag] = price * slippage_factor(delta, sqrt_law[a])
            permanent[ag] = permanent[ag] + share[a] * delta
            transient[ag] = transient[ag] + (1.0 - share[a]) * delta
        for a in range(n_assets):
            ag = a * G + g
            k.price[ag] = raw[(a * (k.n_steps + 1) + k.t) * k.n_paths + k.group_start + g] * exp(
                -(permanent[ag] + transient[ag]))
    return any_active


cdef void _lowest_prices(Kernel* k, bint with_previous) noexcept nogil:
    """``k.low`` (and ``k.low_both``): the lowest price of each asset over the paths a
    sweep evaluates."""
    cdef Py_ssize_t a, g
    cdef double low, low_both, v, drop
    for a in range(k.n_assets):
        low = INF
        low_both = INF
        for g in range(k.n_group):
            if not k.active[g]:
                continue
            v = k.price[a * G + g]
            if v < low or v != v:
                low = v if v == v else -INF
            if with_previous:
                if v < low_both or v != v:
                    low_both = v if v == v else -INF
                v = k.previous_price[a * G + g]
                if v < low_both or v != v:
                    low_both = v if v == v else -INF
        k.low[a] = low
        k.low_both[a] = low_both
        drop = INF
        for g in range(k.n_group):
            if not k.active[g]:
                continue
            v = k.price[a * G + g] / k.opening[a * G + g]
            if v < drop or v != v:
                drop = v if v == v else -INF
        k.drop[a] = drop


cdef void _merge(Kernel* k, Block* b, Py_ssize_t group) noexcept nogil:
    """Hand the group's log over and add every finished group's log, in group order, into
    the per-loan outputs: each loan's losses are added in path order, as by one thread."""
    cdef Py_ssize_t j
    cdef Log* log
    cdef LoanEntry* e
    ltvsim_lock_set(&b.lock)
    b.logs[group] = k.log
    b.finished[group] = 1
    k.log.entries = NULL
    k.log.count = 0
    k.log.capacity = 0
    while b.merged < b.n_groups and b.finished[b.merged]:
        log = &b.logs[b.merged]
        for j in range(log.count):
            e = &log.entries[j]
            if e.loss != 0.0:
                b.loan_loss[e.loan] = b.loan_loss[e.loan] + e.loss
            b.loan_calls[e.loan] += e.calls
            b.loan_liquidated[e.loan] += e.liquidated
        free(log.entries)
        log.entries = NULL
        log.count = 0
        b.merged += 1
    ltvsim_lock_unset(&b.lock)


cdef void _run_group(Kernel* k, Block* b, Py_ssize_t group) noexcept nogil:
    """Every step of one group of paths, serially over the loan chunks, with the calling
    thread's own state (``k``); then the group's sums, in chunk order."""
    cdef Py_ssize_t n_loans = k.n_loans
    cdef Py_ssize_t n_assets = k.n_assets
    cdef Py_ssize_t n_steps = k.n_steps
    cdef Py_ssize_t n_paths = k.n_paths
    cdef Py_ssize_t n_chunks = k.n_chunks
    cdef Py_ssize_t n_step_rows = k.n_step_rows
    cdef Py_ssize_t group_start = group * G
    cdef Py_ssize_t n_group = n_paths - group_start
    cdef Py_ssize_t g, a, c, j, t, p, ag, chunk
    cdef bint bridge = k.bridge
    cdef bint record = k.record
    cdef i64 round_number
    cdef double factor, v, vmax, total
    cdef double* price = k.price
    cdef double* permanent = k.permanent
    cdef double* transient = k.transient
    cdef double* worst_factor = k.worst_factor
    cdef i64* deepest = k.deepest
    if n_group > G:
        n_group = G
    k.group_start = group_start
    k.n_group = n_group
    memset(k.touched, 0, n_loans * sizeof(i8))
    memcpy(k.schedule_debt, k.debt0, n_loans * sizeof(double))
    memset(k.schedule_step, 0, n_loans * sizeof(i64))
    memset(k.acc_money, 0, n_chunks * N_MONEY * G * sizeof(double))
    memset(k.acc_counts, 0, n_chunks * N_COUNTS * G * sizeof(i64))
    memset(k.acc_sold, 0, n_chunks * n_assets * G * sizeof(double))
    memset(k.acc_unsold, 0, n_chunks * n_assets * G * sizeof(double))
    if record:
        memset(k.acc_step_sold, 0, n_chunks * n_step_rows * n_assets * G * sizeof(double))
        memset(k.acc_step_money, 0, n_chunks * N_STEP_MONEY * n_step_rows * G * sizeof(double))
    for ag in range(n_assets * G):
        permanent[ag] = 0.0
        transient[ag] = 0.0
        k.previous_price[ag] = 0.0
        worst_factor[ag] = 1.0
    for g in range(G):
        deepest[g] = 0

    for t in range(n_steps + 1):
        k.t = t
        # The step's opening price: decay the transient impact, apply both.
        for a in range(n_assets):
            if bridge and t >= 1:
                vmax = 0.0
                for g in range(n_group):
                    v = k.bridge_variance[(a * (n_steps + 1) + t) * n_paths + group_start + g]
                    if v > vmax or v != v:
                        vmax = v if v == v else INF
                k.reach[a] = exp(sqrt(BRIDGE_REACH * vmax)) * (1.0 + MARGIN)
            for g in range(n_group):
                ag = a * G + g
                if t >= 1:
                    transient[ag] = transient[ag] * b.decay[a]
                price[ag] = b.raw[(a * (n_steps + 1) + t) * n_paths + group_start + g] * exp(
                    -(permanent[ag] + transient[ag]))
                k.sold_in_step[ag] = 0.0
        for g in range(n_group):
            k.active[g] = 1
            k.rounds[g] = 0
        for a in range(n_assets):
            for g in range(n_group):
                ag = a * G + g
                k.opening[ag] = price[ag]
                k.inverse_opening[ag] = 1.0 / price[ag]
        _lowest_prices(k, bridge and t >= 1)
        for a in range(n_assets):
            k.low_open[a] = k.low[a]
        # Sweep 1.
        for chunk in range(n_chunks):
            _sweep_one(k, chunk)
        round_number = 1
        while _clear(k, b):
            round_number = round_number + 1
            k.decide = round_number <= b.max_rounds
            _lowest_prices(k, False)
            for chunk in range(n_chunks):
                _sweep_next(k, chunk)
        for g in range(n_group):
            if k.rounds[g] > deepest[g]:
                deepest[g] = k.rounds[g]
            for a in range(n_assets):
                ag = a * G + g
                k.previous_price[ag] = price[ag]
                factor = exp(-(permanent[ag] + transient[ag]))
                if record:
                    b.step_impact[(t * n_assets + a) * n_paths + group_start + g] = factor
                if factor < worst_factor[ag]:
                    worst_factor[ag] = factor
        if record:
            for chunk in range(n_chunks):
                _record_exposure(k, chunk)

    # After step T; then the chunks' sums, in chunk order.
    for g in range(n_group):
        k.active[g] = 1
    _lowest_prices(k, False)  # of the final prices (price is previous_price now)
    for chunk in range(n_chunks):
        _horizon(k, chunk)
    for g in range(n_group):
        p = group_start + g
        for c in range(n_chunks):
            for j in range(N_MONEY):
                b.path_money[j * n_paths + p] += k.acc_money[(c * N_MONEY + j) * G + g]
            for j in range(N_COUNTS):
                b.path_counts[j * n_paths + p] += k.acc_counts[(c * N_COUNTS + j) * G + g]
            for a in range(n_assets):
                b.path_sold[a * n_paths + p] += k.acc_sold[(c * n_assets + a) * G + g]
        for a in range(n_assets):
            total = 0.0
            for c in range(n_chunks):
                total += k.acc_unsold[(c * n_assets + a) * G + g]
            b.path_unsold[a * n_paths + p] = total
            b.path_drawdown[a * n_paths + p] = 1.0 - worst_factor[a * G + g]
        b.path_rounds[p] = deepest[g]
        if record:
            for c in range(n_chunks):
                for t in range(n_step_rows):
                    b.step_loss[t * n_paths + p] += k.acc_step_money[((c * N_STEP_MONEY + STEP_LOSS) * n_step_rows + t) * G + g]
                    b.step_fees[t * n_paths + p] += k.acc_step_money[((c * N_STEP_MONEY + STEP_FEES) * n_step_rows + t) * G + g]
                    b.step_open_debt[t * n_paths + p] += k.acc_step_money[((c * N_STEP_MONEY + STEP_OPEN_DEBT) * n_step_rows + t) * G + g]
                    b.step_collateral_value[t * n_paths + p] += k.acc_step_money[((c * N_STEP_MONEY + STEP_COLLATERAL_VALUE) * n_step_rows + t) * G + g]
                    for a in range(n_assets):
                        b.step_sold[(t * n_assets + a) * n_paths + p] += k.acc_step_sold[((c * n_step_rows + t) * n_assets + a) * G + g]
    _merge(k, b, group)


def _rows(n_workers, shape, dtype=np.float64, fill=0):
    """One zeroed (or ``fill``) array of ``shape`` per worker, rows a cache line apart."""
    size = int(np.prod(shape, dtype=np.int64))
    width = size + 64 // np.dtype(dtype).itemsize
    return np.full((n_workers, width), fill, dtype=dtype)


def evaluate_coupled(prices, loans, options, seed, path_offset, n_threads, out):
    """Evaluate every loan on one block of paths with market impact and cascades, and add
    the results into ``out`` (a ``CoupledOutputs``).

    Same contract as ``tests/naive_coupled.simulate_coupled_naive`` for the paths of the
    block (path ``p`` of the block is path ``path_offset + p`` of the run), bit for bit,
    for any ``n_threads``. Releases the GIL while it runs.
    """
    cdef const double[:, :, ::1] price_view = prices
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
    core = out.core
    cdef double[:, ::1] path_money = core.path_money
    cdef i64[:, ::1] path_counts = core.path_counts
    cdef double[:, ::1] path_sold = core.path_sold
    cdef double[:, :, ::1] step_sold = core.step_sold
    cdef double[:, ::1] step_loss = core.step_loss
    cdef double[:, ::1] step_fees = core.step_fees
    cdef double[:, ::1] step_open_debt = core.step_open_debt
    cdef double[:, ::1] step_collateral_value = core.step_collateral_value
    cdef double[::1] loan_loss = core.loan_loss
    cdef i64[::1] loan_calls = core.loan_calls
    cdef i64[::1] loan_liquidated = core.loan_liquidated
    cdef i64[::1] path_rounds = out.path_rounds
    cdef double[:, ::1] path_drawdown = out.path_drawdown
    cdef double[:, ::1] path_unsold = out.path_unsold
    cdef double[:, :, ::1] step_impact = out.step_impact

    cdef Py_ssize_t n_assets = price_view.shape[0]
    cdef Py_ssize_t n_steps = price_view.shape[1] - 1
    cdef Py_ssize_t n_paths = price_view.shape[2]
    cdef Py_ssize_t n_loans = debt_of.shape[0]
    cdef bint record = step_loss.shape[0] > 0
    cdef Py_ssize_t n_step_rows = n_steps + 1 if record else 0
    cdef Py_ssize_t n_chunks = (n_loans + LOAN_CHUNK - 1) // LOAN_CHUNK
    cdef Py_ssize_t n_groups = (n_paths + G - 1) // G
    # Threads take whole groups; each needs its own group state.
    cdef int n_workers = max(1, min(n_threads, n_groups))
    cdef int n_slots = max(1, min(n_threads, n_chunks))
    if n_paths == 0 or n_loans == 0 or n_assets == 0:
        return
    if n_assets > 64:
        raise ValueError("the coupled kernel takes at most 64 assets")
    if n_steps >= 2**31 - 2:
        raise ValueError("the coupled kernel takes fewer than 2**31 - 2 steps")

    # Options, per asset.
    cdef const double[::1] cap = np.ascontiguousarray(options.max_sell, dtype=np.float64)
    cdef const double[::1] depth = np.ascontiguousarray(options.depth, dtype=np.float64)
    cdef const double[::1] move = np.ascontiguousarray(options.depth_move, dtype=np.float64)
    cdef const i64[::1] sqrt_law = np.ascontiguousarray(options.sqrt_law, dtype=np.int64)
    cdef const double[::1] share = np.ascontiguousarray(options.permanent, dtype=np.float64)
    cdef const double[::1] decay = np.ascontiguousarray(options.decay, dtype=np.float64)
    cdef bint bridge = bool(options.bridge)
    cdef const double[:, :, ::1] variance_view
    if bridge:
        variance_view = np.ascontiguousarray(options.bridge_variance, dtype=np.float64)
    else:
        variance_view = np.zeros((1, 1, 1))

    # Each worker's group state, per-chunk accumulators and group rows; state rows are
    # set when a loan is first touched in a group, so they start uninitialised.
    w = n_workers
    cdef i8[:, :, ::1] status = np.empty((w, n_loans, G), dtype=np.int8)
    cdef double[:, :, ::1] collateral = np.empty((w, n_loans, G))
    cdef double[:, :, ::1] debt = np.empty((w, n_loans, G))
    cdef double[:, :, ::1] principal = np.empty((w, n_loans, G))
    cdef i32[:, :, ::1] call_start = np.empty((w, n_loans, G), dtype=np.int32)
    cdef i32[:, :, ::1] topup_due = np.empty((w, n_loans, G), dtype=np.int32)
    cdef double[:, :, ::1] order = np.empty((w, n_loans, G))
    cdef i8[:, :, ::1] order_kind = np.empty((w, n_loans, G), dtype=np.int8)
    cdef i8[:, :, ::1] pending = np.empty((w, n_loans, G), dtype=np.int8)
    cdef i32[:, :, ::1] acted = np.empty((w, n_loans, G), dtype=np.int32)
    cdef i8[:, :, ::1] modified = np.empty((w, n_loans, G), dtype=np.int8)
    cdef double[:, :, ::1] guard = np.empty((w, n_loans, G))
    cdef i8[:, :, ::1] had_call = np.empty((w, n_loans, G), dtype=np.int8)
    cdef i8[:, :, ::1] had_liquidation = np.empty((w, n_loans, G), dtype=np.int8)
    cdef double[:, :, ::1] loss = np.empty((w, n_loans, G))
    cdef i64[:, ::1] debt_step = np.zeros((w, n_loans), dtype=np.int64)
    cdef i8[:, ::1] touched = np.zeros((w, n_loans), dtype=np.int8)
    cdef double[:, ::1] schedule_debt = np.zeros((w, n_loans))
    cdef i64[:, ::1] schedule_step = np.zeros((w, n_loans), dtype=np.int64)
    cdef double[:, ::1] trig = np.zeros((w, n_loans))
    cdef i64[:, ::1] near = np.zeros((w, n_chunks * LOAN_CHUNK), dtype=np.int64)
    cdef i64[:, ::1] near_count = _rows(w, (n_chunks,), np.int64)
    cdef double[:, ::1] crit = _rows(w, (n_chunks, n_assets))
    cdef double[:, ::1] acc_money = _rows(w, (n_chunks, N_MONEY, G))
    cdef i64[:, ::1] acc_counts = _rows(w, (n_chunks, N_COUNTS, G), np.int64)
    cdef double[:, ::1] acc_sold = _rows(w, (n_chunks, n_assets, G))
    cdef double[:, ::1] acc_requested = _rows(w, (n_chunks, n_assets, G))
    cdef double[:, ::1] acc_unsold = _rows(w, (n_chunks, n_assets, G))
    cdef double[:, ::1] acc_step_sold = _rows(w, (n_chunks, n_step_rows, n_assets, G))
    cdef double[:, ::1] acc_step_money = _rows(w, (n_chunks, N_STEP_MONEY, n_step_rows, G))
    cdef double[:, ::1] price = _rows(w, (n_assets, G))
    cdef double[:, ::1] previous_price = _rows(w, (n_assets, G))
    cdef double[:, ::1] fill = _rows(w, (n_assets, G), fill=1.0)
    cdef double[:, ::1] execution = _rows(w, (n_assets, G))
    cdef double[:, ::1] permanent = _rows(w, (n_assets, G))
    cdef double[:, ::1] transient = _rows(w, (n_assets, G))
    cdef double[:, ::1] sold_in_step = _rows(w, (n_assets, G))
    cdef double[:, ::1] worst_factor = _rows(w, (n_assets, G), fill=1.0)
    cdef i8[:, ::1] active = _rows(w, (G,), np.int8)
    cdef i64[:, ::1] rounds = _rows(w, (G,), np.int64)
    cdef i64[:, ::1] deepest = _rows(w, (G,), np.int64)
    cdef double[:, ::1] low = _rows(w, (n_assets,))
    cdef double[:, ::1] low_both = _rows(w, (n_assets,))
    cdef double[:, ::1] opening = _rows(w, (n_assets, G), fill=1.0)
    cdef double[:, ::1] inverse_opening = _rows(w, (n_assets, G), fill=1.0)
    cdef double[:, ::1] low_open = _rows(w, (n_assets,))
    cdef double[:, ::1] drop = _rows(w, (n_assets,))
    cdef double[:, ::1] reach = _rows(w, (n_assets,))
    cdef double[::1] bound = np.zeros(n_loans)
    logs = np.zeros(n_groups * sizeof(Log), dtype=np.uint8)
    cdef i8[::1] finished = np.zeros(n_groups, dtype=np.int8)
    kernels = np.zeros(n_workers * sizeof(Kernel), dtype=np.uint8)
    cdef unsigned char[::1] logs_bytes = logs
    cdef unsigned char[::1] kernel_bytes = kernels
    cdef Kernel* ks = <Kernel*>&kernel_bytes[0]
    cdef Kernel* k
    cdef Block blk
    cdef Py_ssize_t group, chunk, q
    cdef bint failed = False

    for q in range(n_workers):
        k = &ks[q]
        k.n_loans = n_loans
        k.n_assets = n_assets
        k.n_steps = n_steps
        k.n_paths = n_paths
        k.n_step_rows = n_step_rows
        k.n_chunks = n_chunks
        k.record = record
        k.asset = &asset_of[0]
        k.collateral0 = &collateral_of[0]
        k.debt0 = &debt_of[0]
        k.growth = &growth_of[0]
        k.m = &m_of[0]
        k.l = &l_of[0]
        k.tau = &tau_of[0]
        k.cure = &cure_of[0]
        k.fee = &fee_of[0]
        k.topup_prob = &topup_of[0]
        k.seed_key = mix64(int(seed) & MASK64)
        k.path_offset = path_offset
        k.mode = options.mode
        k.close_factor = options.close_factor
        k.full_close_ltv = options.full_close_ltv
        k.min_liquidation = options.min_liquidation
        k.bridge = bridge
        k.bridge_variance = &variance_view[0, 0, 0]
        k.bound = &bound[0]
        k.status = &status[q, 0, 0]
        k.collateral = &collateral[q, 0, 0]
        k.debt = &debt[q, 0, 0]
        k.principal = &principal[q, 0, 0]
        k.call_start = &call_start[q, 0, 0]
        k.topup_due = &topup_due[q, 0, 0]
        k.order = &order[q, 0, 0]
        k.order_kind = &order_kind[q, 0, 0]
        k.pending = &pending[q, 0, 0]
        k.acted = &acted[q, 0, 0]
        k.modified = &modified[q, 0, 0]
        k.guard = &guard[q, 0, 0]
        k.had_call = &had_call[q, 0, 0]
        k.had_liquidation = &had_liquidation[q, 0, 0]
        k.loss = &loss[q, 0, 0]
        k.debt_step = &debt_step[q, 0]
        k.touched = &touched[q, 0]
        k.schedule_debt = &schedule_debt[q, 0]
        k.schedule_step = &schedule_step[q, 0]
        k.trig = &trig[q, 0]
        k.near = &near[q, 0]
        k.near_count = &near_count[q, 0]
        k.crit = &crit[q, 0]
        k.acc_money = &acc_money[q, 0]
        k.acc_counts = &acc_counts[q, 0]
        k.acc_sold = &acc_sold[q, 0]
        k.acc_requested = &acc_requested[q, 0]
        k.acc_unsold = &acc_unsold[q, 0]
        k.acc_step_sold = &acc_step_sold[q, 0]
        k.acc_step_money = &acc_step_money[q, 0]
        k.price = &price[q, 0]
        k.previous_price = &previous_price[q, 0]
        k.fill = &fill[q, 0]
        k.execution = &execution[q, 0]
        k.permanent = &permanent[q, 0]
        k.transient = &transient[q, 0]
        k.sold_in_step = &sold_in_step[q, 0]
        k.worst_factor = &worst_factor[q, 0]
        k.active = &active[q, 0]
        k.rounds = &rounds[q, 0]
        k.deepest = &deepest[q, 0]
        k.low = &low[q, 0]
        k.low_both = &low_both[q, 0]
        k.opening = &opening[q, 0]
        k.inverse_opening = &inverse_opening[q, 0]
        k.low_open = &low_open[q, 0]
        k.drop = &drop[q, 0]
        k.reach = &reach[q, 0]

    blk.n_groups = n_groups
    blk.raw = &price_view[0, 0, 0]
    blk.cap = &cap[0]
    blk.depth = &depth[0]
    blk.move = &move[0]
    blk.sqrt_law = &sqrt_law[0]
    blk.share = &share[0]
    blk.decay = &decay[0]
    blk.max_rounds = options.max_rounds
    blk.path_money = &path_money[0, 0]
    blk.path_counts = &path_counts[0, 0]
    blk.path_sold = &path_sold[0, 0]
    blk.path_rounds = &path_rounds[0]
    blk.path_drawdown = &path_drawdown[0, 0]
    blk.path_unsold = &path_unsold[0, 0]
    blk.step_sold = &step_sold[0, 0, 0] if record else NULL
    blk.step_loss = &step_loss[0, 0] if record else NULL
    blk.step_fees = &step_fees[0, 0] if record else NULL
    blk.step_open_debt = &step_open_debt[0, 0] if record else NULL
    blk.step_collateral_value = &step_collateral_value[0, 0] if record else NULL
    blk.step_impact = &step_impact[0, 0, 0] if record else NULL
    blk.loan_loss = &loan_loss[0]
    blk.loan_calls = &loan_calls[0]
    blk.loan_liquidated = &loan_liquidated[0]
    blk.logs = <Log*>&logs_bytes[0]
    blk.finished = &finished[0]
    blk.merged = 0
    ltvsim_lock_init(&blk.lock)
    with nogil:
        # Every pristine loan's guard threshold at step T: its debt only grows (g >= 1),
        # so this bounds its threshold at every step.
        for chunk in prange(n_chunks, num_threads=n_slots, schedule="static"):
            _bounds(&ks[0], chunk)
        for group in prange(n_groups, num_threads=n_workers, schedule="dynamic", chunksize=1):
            _run_group(&ks[threadid()], &blk, group)
    ltvsim_lock_destroy(&blk.lock)
    for q in range(n_workers):
        failed = failed or ks[q].failed
        free(ks[q].log.entries)
    if failed or blk.merged != n_groups:
        raise MemoryError("the coupled kernel ran out of memory for its loan outputs")
