"""What every backend's ``evaluate_block`` receives: loan terms, outputs, scratch.

Python builds these (checked, typed, contiguous); kernels trust them completely.
"""
from typing import NamedTuple

import numpy as np

from .. import _config


class KernelLoans(NamedTuple):
    """Per-loan terms as contiguous arrays (``growth = exp(rate * dt)``, computed once in
    Python so every backend multiplies by the very same number)."""

    asset: np.ndarray  # int64
    collateral: np.ndarray
    debt: np.ndarray
    growth: np.ndarray
    margin_call_ltv: np.ndarray
    liquidation_ltv: np.ndarray
    target_ltv: np.ndarray
    cure_steps: np.ndarray  # int64
    fee: np.ndarray
    topup_prob: np.ndarray


class KernelOutputs(NamedTuple):
    """Arrays a kernel adds into. Path arrays hold one block of paths (paths innermost);
    loan arrays persist across blocks, so each block adds its paths in path order."""

    path_money: np.ndarray  # [N_MONEY, n_paths] float64
    path_counts: np.ndarray  # [N_COUNTS, n_paths] int64
    path_sold: np.ndarray  # [n_assets, n_paths] float64
    step_sold: np.ndarray  # [n_steps + 1, n_assets, n_paths] or empty [0, 0, 0]
    step_loss: np.ndarray  # [n_steps + 1, n_paths] or empty [0, 0]
    step_fees: np.ndarray  # [n_steps + 1, n_paths] or empty: liquidation fees earned
    step_open_debt: np.ndarray  # [n_steps + 1, n_paths] or empty: debt of loans open after the step
    step_collateral_value: np.ndarray  # [n_steps + 1, n_paths] or empty: their collateral x price
    loan_loss: np.ndarray  # [n_loans] float64
    loan_calls: np.ndarray  # [n_loans] int64
    loan_liquidated: np.ndarray  # [n_loans] int64


def new_block_outputs(n_paths, n_steps, n_assets, record_steps, loan_outputs):
    """Zeroed path outputs for one block, sharing the run's loan outputs."""
    steps = n_steps + 1 if record_steps else 0
    return KernelOutputs(
        path_money=np.zeros((_config.N_MONEY, n_paths)),
        path_counts=np.zeros((_config.N_COUNTS, n_paths), dtype=np.int64),
        path_sold=np.zeros((n_assets, n_paths)),
        step_sold=np.zeros((steps, n_assets if record_steps else 0, n_paths if record_steps else 0)),
        step_loss=np.zeros((steps, n_paths if record_steps else 0)),
        step_fees=np.zeros((steps, n_paths if record_steps else 0)),
        step_open_debt=np.zeros((steps, n_paths if record_steps else 0)),
        step_collateral_value=np.zeros((steps, n_paths if record_steps else 0)),
        loan_loss=loan_outputs[0],
        loan_calls=loan_outputs[1],
        loan_liquidated=loan_outputs[2],
    )


class Scratch(NamedTuple):
    """Per-thread scratch of the compiled kernels: one row per thread slot, each row
    padded to whole cache lines plus one, so that threads never share a line.

    ``path_state`` stacks the float64 per-path rows (see ``STATE_ROWS``); the kernels
    take them apart by index.
    """

    path_state: np.ndarray  # float64 [slots, N_STATE_ROWS, width]
    pending: np.ndarray  # int64 [slots, width]: what pass C must do on each path (0: nothing)
    marked: np.ndarray  # int64 [slots, N_CODES * width]: the marked paths, then one list per code
    had_call: np.ndarray  # int8 [slots, width]
    # The loan's per-path draw keys, mix64(loan key ^ path index): the first half of the
    # top-up draw's hash, computed once when the loan is touched.
    draw_keys: np.ndarray  # uint64 [slots, width]
    had_liquidation: np.ndarray  # int8 [slots, width]
    # Accumulators of one loan chunk, per path in the sorted order of the loans' asset
    # (``_path_order``): money, counts and per-step money have a row block per asset.
    acc_money: np.ndarray  # [slots, n_assets, N_MONEY, width]
    acc_counts: np.ndarray  # [slots, n_assets, N_COUNTS, width] int64
    acc_sold: np.ndarray  # [slots, n_assets, width] (only asset a's loans sell asset a)
    acc_step_sold: np.ndarray  # [slots, steps, n_assets, width] (steps = 0 when not recording)
    acc_step_money: np.ndarray  # [slots, n_assets, N_STEP_MONEY, steps, width]: loss, fees, open debt, value
    evaluated: np.ndarray  # int64 [slots]: loan-paths the passes ran on (a test hook)


#: Rows of ``Scratch.path_state`` and the value each holds between loans.
STATE_ROWS = {
    "status": float(_config.OPEN),
    "guard": 1.0,
    "call_start": float(_config.NO_STEP),
    "topup_due": float(_config.NO_STEP),
    "collateral_now": 0.0,
    "debt_now": 0.0,
    "principal_now": 0.0,
    "loss_on_path": 0.0,
    "loss_by_path": 0.0,  # a loan's losses scattered back to block order
}
(STATUS, GUARD, CALL_START, TOPUP_DUE, COLLATERAL_NOW, DEBT_NOW, PRINCIPAL_NOW,
 LOSS_ON_PATH, LOSS_BY_PATH) = range(len(STATE_ROWS))
N_STATE_ROWS = len(STATE_ROWS)
#: Pass B's codes (0 and five kinds of event; see the compiled kernels): ``marked`` holds
#: the marked paths and one list per code.
N_CODES = 6


def slot_count(n_loans, n_workers, n_paths, n_steps, n_assets, record_steps):
    """Scratch slots (loan chunks per wave) of a block: ``SLOTS_PER_THREAD`` per worker
    or as many as ``SLOT_SCRATCH_BYTES`` holds, whichever is more, at most one per chunk."""
    n_chunks = -(-n_loans // _config.LOAN_CHUNK)
    width = -(-n_paths // 8) * 8 + 8
    steps = n_steps + 1 if record_steps else 0
    rows = (N_STATE_ROWS + 1 + N_CODES + n_assets * (_config.N_MONEY + _config.N_COUNTS + 1)
            + steps * n_assets * (1 + _config.N_STEP_MONEY))
    slot_bytes = 8 * width * (rows + 1) + 2 * width
    by_memory = _config.SLOT_SCRATCH_BYTES // slot_bytes
    return max(1, min(max(n_workers * _config.SLOTS_PER_THREAD, by_memory), n_chunks))


def allocate_scratch(n_slots, n_paths, n_steps, n_assets, record_steps):
    """Scratch in its reset state."""
    # Whole 8-path lines plus one, so that rows of different slots never share a line.
    width = -(-n_paths // 8) * 8 + 8
    steps = n_steps + 1 if record_steps else 0
    path_state = np.empty((n_slots, N_STATE_ROWS, width))
    path_state[...] = np.array(list(STATE_ROWS.values()))[None, :, None]
    return Scratch(
        path_state=path_state,
        pending=np.zeros((n_slots, width), dtype=np.int64),
        marked=np.zeros((n_slots, N_CODES * width), dtype=np.int64),
        had_call=np.zeros((n_slots, width), dtype=np.int8),
        draw_keys=np.zeros((n_slots, width), dtype=np.uint64),
        had_liquidation=np.zeros((n_slots, width), dtype=np.int8),
        acc_money=np.zeros((n_slots, n_assets, _config.N_MONEY, width)),
        acc_counts=np.zeros((n_slots, n_assets, _config.N_COUNTS, width), dtype=np.int64),
        acc_sold=np.zeros((n_slots, n_assets, width)),
        acc_step_sold=np.zeros((n_slots, steps, n_assets if steps else 0, width if steps else 0)),
        acc_step_money=np.zeros((n_slots, n_assets, _config.N_STEP_MONEY, steps, width if steps else 0)),
        evaluated=np.zeros(n_slots, dtype=np.int64),
    )
