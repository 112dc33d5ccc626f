"""What every backend's coupled kernel (``evaluate_coupled``) receives besides the core's
arguments: market impact, liquidation rules and between-step crossings, checked and
typed by ``ltvsim.simulate``; kernels trust them completely.

The coupled kernel runs steps outermost: within a step, every loan of a path must see the
price that the other loans' forced sales left behind, so loans cannot run to the horizon
one by one as in the core kernel. Its state is O(loans) per thread, never
O(loans x paths) (``docs/cascades.md`` says how each backend keeps it).
"""
import math
from typing import NamedTuple

import numpy as np

#: Paths the NumPy coupled kernel evaluates together (at least; its state is loans x this).
COUPLED_GROUP = 8

#: How a liquidation is sized (``CoupledOptions.mode``).
MODE_FULL, MODE_PARTIAL, MODE_CLOSE_FACTOR = 0, 1, 2

#: Kind of a liquidation order in the coupled kernel's state.
ORDER_NONE, ORDER_FULL, ORDER_PART = 0, 1, 2

#: A loan path's status in the coupled kernel (OPEN and CLOSED as in the core).
COUPLED_OPEN, COUPLED_LIQUIDATING, COUPLED_CLOSED = 0, 1, 2

#: Between-step crossings are drawn only where their probability can exceed 2**-54 (the
#: smallest draw, see ``ltvsim._rng.bridge_uniform``): ``p = exp(-2 a / v)`` with
#: ``a > BRIDGE_REACH * v`` is below exp(-40) < 2**-54, so skipping such pairs is exact.
BRIDGE_REACH = 20.0


class CoupledOptions(NamedTuple):
    """Options of the coupled kernel, one value or one array per asset."""

    mode: int  # MODE_FULL, MODE_PARTIAL or MODE_CLOSE_FACTOR
    close_factor: float  # share of the debt one close-factor liquidation repays
    full_close_ltv: float  # close-factor mode: LTV / liquidation_ltv at or above which all debt may be repaid
    min_liquidation: float  # quote currency; a smaller sale, or a smaller debt left, closes the loan in full
    max_sell: np.ndarray  # float64 [n_assets]: units sellable per path and step (inf: no limit)
    depth: np.ndarray  # float64 [n_assets]: notional that moves the price by depth_move (inf: no impact)
    depth_move: np.ndarray  # float64 [n_assets]: log-price move of selling ``depth`` at once
    sqrt_law: np.ndarray  # int64 [n_assets]: 1 square-root impact, 0 linear
    permanent: np.ndarray  # float64 [n_assets]: share of each round's impact that is permanent
    decay: np.ndarray  # float64 [n_assets]: factor on the transient impact from one step to the next
    max_rounds: int  # liquidation rounds per step and path
    bridge: bool  # draw between-step crossings of the liquidation level
    bridge_variance: np.ndarray  # float64 [n_assets, n_steps + 1, n_paths]: sigma**2 * dt of the step ending at t


def slippage_factor(delta, sqrt_law):
    """Average price of a round's sales relative to the price before them.

    Selling ``v`` of the round's notional moves the log price by ``delta * (v / N)`` (linear
    law) or ``delta * sqrt(v / N)`` (square-root law); the average of ``exp(-that)`` over
    the notional sold is ``(1 - e**-delta) / delta``, or ``2 (1 - (1 + delta) e**-delta) /
    delta**2``. Small ``delta`` uses the Taylor series (the closed forms cancel). Every
    backend evaluates exactly these expressions, in this order (numba compiles this very
    function).
    """
    if delta <= 0.0:
        return 1.0
    if sqrt_law:
        if delta < 1e-3:
            return 1.0 - delta * (2.0 / 3.0 - delta * (0.25 - delta * (1.0 / 15.0 - delta * (1.0 / 72.0))))
        return 2.0 * (-math.expm1(-delta) - delta * math.exp(-delta)) / (delta * delta)
    if delta < 1e-3:
        return 1.0 - delta * (0.5 - delta * (1.0 / 6.0 - delta * (1.0 / 24.0 - delta * (1.0 / 120.0))))
    return -math.expm1(-delta) / delta


class CoupledOutputs(NamedTuple):
    """What the coupled kernel writes for one block of paths: the core's outputs
    (``core``, a ``KernelOutputs`` added into exactly as the core kernel does) and the
    cascade's own per-path figures."""

    core: "object"  # KernelOutputs
    path_rounds: np.ndarray  # int64 [n_paths]: most liquidation rounds in any one step
    path_drawdown: np.ndarray  # float64 [n_assets, n_paths]: 1 - lowest impact factor after any step
    path_unsold: np.ndarray  # float64 [n_assets, n_paths]: collateral still waiting to be sold after step T
    step_impact: np.ndarray  # float64 [n_steps + 1, n_assets, n_paths] or empty [0, 0, 0]: impact factor after each step


def new_coupled_outputs(core, n_paths, n_steps, n_assets, record_steps):
    """Zeroed cascade outputs around the core outputs ``core`` of one block."""
    steps = n_steps + 1 if record_steps else 0
    return CoupledOutputs(
        core=core,
        path_rounds=np.zeros(n_paths, dtype=np.int64),
        path_drawdown=np.zeros((n_assets, n_paths)),
        path_unsold=np.zeros((n_assets, n_paths)),
        step_impact=np.zeros((steps, n_assets if record_steps else 0, n_paths if record_steps else 0)),
    )
