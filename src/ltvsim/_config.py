"""Numeric settings shared by every backend: one place for constants that define results.

Changing any value here changes results bit for bit (``LOAN_CHUNK`` fixes the order in
which per-path sums are added; the others fix what the kernels compute), so they are
not user options.
"""

#: Loans per work unit. Per-path sums are added loan by loan inside a chunk and chunk by
#: chunk in chunk order, whatever the number of threads, so this constant (not the
#: thread count) fixes the summation order of every per-path money figure.
LOAN_CHUNK = 2048

#: Near-trigger skipping (the compiled kernels): a block's paths are sorted per asset by
#: their lowest price (``backends._path_order``), and a loan runs only on the prefix of
#: paths that can come near its call level, rounded up to a whole number of groups of
#: this many paths (the granularity of the per-step prefix floors of pass A's
#: shortcut; whole vectors for passes A and B). Per-path sums are then
#: added per asset: in chunk order, each chunk adds, asset after asset, the sum of its
#: loans of that asset (in loan order, from 0.0) to the running total of every path.
#: Neither the layout, the thread count nor the path block changes that order, and
#: a skipped path would only have added 0.0, so skipping changes no bit.
ACTIVE_PATH_GROUP = 8

#: Loan chunks per thread in one wave of the compiled kernels. Each chunk has a scratch
#: slot of its own and the slots are reduced in chunk order, so this does not change
#: results; several chunks per thread, taken dynamically, keep a thread from idling
#: at the end of a wave behind one slow chunk.
SLOTS_PER_THREAD = 4

#: Scratch budget of one block's slots in the compiled kernels: a wave takes as many
#: loan chunks as this holds (up to all of them; while slots are small, few paths per
#: block, that means fewer wave ends to wait at), or ``SLOTS_PER_THREAD`` per thread,
#: whichever is more. Results do not depend on it; memory stays bounded by the larger
#: of the two, whatever the number of loans.
SLOT_SCRATCH_BYTES = 16 << 20

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
#: of about this size; 1056 paths for two assets and 30 steps. With near-trigger
#: skipping a loan runs only on the sorted prefix of a block's paths that can reach its
#: call level, so bigger blocks waste less (the prefix is rounded up to whole groups,
#: and each loan costs O(steps) per block even when no path is near): on 200,000 loans x
#: 1,024 paths, 1,024-path blocks took 30% less time than 64-path ones (record_steps
#: runs, which evaluate every path, took 15% more). Any value gives the same numbers.
PATH_BLOCK_BYTES = 1 << 19
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

# Per-step money accumulators (with record_steps), stacked in the kernels' scratch.
STEP_MONEY_FIELDS = ("loss", "fees", "open_debt", "collateral_value")
STEP_LOSS, STEP_FEES, STEP_OPEN_DEBT, STEP_COLLATERAL_VALUE = range(4)
N_STEP_MONEY = len(STEP_MONEY_FIELDS)

# State of one loan on one path inside the compiled kernels (stored as float64 so that
# every array of the vectorised pass has the same lane width).
OPEN = 0  # debt is the loan's shared schedule D0 * g**t, principal D0
MODIFIED = 1  # partially liquidated: own debt and principal
CLOSED = 2  # liquidated in full
NO_STEP = -1  # "no call in progress" / "no top-up scheduled"

#: Target size of one chunk of paths yielded by the streaming generators
#: (``ltvsim.paths`` ``stream``); a chunk is a whole number of RNG_PATH_BLOCK blocks.
#: Any value gives the same paths.
STREAM_CHUNK_BYTES = 32 << 20

#: Largest number of jumps per step and source the jump models draw by inversion.
MAX_JUMPS_PER_STEP = 200

#: Paths per block of a batch run (``ltvsim.batch``): the unit that is generated,
#: evaluated, checkpointed and (on a cluster) sent as one task. A whole number of
#: RNG_PATH_BLOCK blocks. Per-path results do not depend on it; per-loan loss sums are
#: added block by block, so a streamed run is bit-identical to another streamed run
#: with the same block size (and equal to 1e-12 relative with any other).
BATCH_BLOCK_PATHS = 1024
