"""Numeric settings shared by every backend: one place for constants that define results.

Changing any value here changes results bit for bit (``LOAN_CHUNK`` fixes the order in
which per-path sums are added; the others fix what the kernels compute), so they are
not user options.
"""

#: Loans per work unit. Per-path sums are added loan by loan inside a chunk and chunk by
#: chunk in chunk order, whatever the number of threads, so this constant (not the
#: thread count) fixes the summation order of every per-path money figure.
LOAN_CHUNK = 2048

#: Relative margin of the conservative "nothing can happen" price test. A pristine loan
#: whose price is above ``debt / (collateral * margin_call_ltv) * (1 + GUARD_MARGIN)``
#: provably has LTV < margin_call_ltv in floating point (the rounding error of that
#: test is below 1e-15), so the kernels skip it without evaluating the exact rule.
GUARD_MARGIN = 1e-12

#: Magnitudes inside which the guard's error bound holds (no overflow or underflow in
#: any product it relies on). Outside them the guard flags every path and the exact
#: rules decide.
GUARD_TINY = 1e-280
GUARD_HUGE = 1e280

#: Paths per kernel call when none is given: a block of prices [assets, steps, paths]
#: that stays in cache while every loan is evaluated against it. Any value gives the
#: same numbers.
PATH_BLOCK_BYTES = 1 << 20
MIN_PATH_BLOCK = 64
MAX_PATH_BLOCK = 4096

#: Loans x paths evaluated at once by the vectorised NumPy reference.
NUMPY_BLOCK_ELEMENTS = 1 << 18

#: Paths per random-number block of the built-in path generators: the stream of block
#: b is keyed by (seed, b), so path p is the same whatever the run's size or chunking.
RNG_PATH_BLOCK = 1024

#: Relative tolerance to which money figures of different backends agree (counts agree
#: exactly; the two compiled backends agree bit for bit).
BACKEND_RTOL = 1e-9

# Per-path money accumulators, in the order the kernels store them.
MONEY_FIELDS = (
    "loss",
    "fees",
    "interest_recovered",
    "principal_recovered",
    "residual",
    "proceeds",
    "debt_closed",
    "unrealised",
)
LOSS, FEES, INTEREST, PRINCIPAL, RESIDUAL, PROCEEDS, DEBT_CLOSED, UNREALISED = range(8)
N_MONEY = len(MONEY_FIELDS)

# Per-path event counters.
COUNT_FIELDS = ("margin_calls", "liquidations", "full_liquidations", "topups")
CALLS, LIQUIDATIONS, FULL_LIQUIDATIONS, TOPUPS = range(4)
N_COUNTS = len(COUNT_FIELDS)

# State of one loan on one path inside the compiled kernels.
PRISTINE = 0  # untouched: collateral and debt are the loan's shared schedule
TOUCHED = 1  # has own collateral / call state; debt still the shared schedule
MODIFIED = 2  # partially liquidated: own debt and principal too
CLOSED = 3  # liquidated in full
