"""Portfolio loss waterfall: who absorbs each path's realised shortfall, and when.

Design note
-----------
Losses are absorbed in order of seniority by

1. a **reserve** (insurance) fund: it starts at ``reserve`` and receives ``fee_share``
   of the liquidation fees as they are earned;
2. **tranches**, junior first (a first-loss tranche, then mezzanine, ...), each with a
   fixed size;
3. the **senior lender**, who takes whatever is left (unbounded).

Timing convention (per path, at each step ``t = 0 .. n_steps``, in this order):

* the fund is credited with ``fee_share * step_fees[t]`` (fees earned at step ``t``
  can absorb losses of step ``t`` and later: a liquidation's fee is taken out of the
  same sale proceeds before the shortfall is known, see ``docs/mechanics.md``);
* then ``step_loss[t]`` is absorbed: the fund pays ``min(balance, loss)``, the excess
  goes to the tranches by seniority.

The fund is a balance that is drawn down and refilled, so it needs a loop over steps
(vectorised over paths). Tranches are not replenished: tranche ``k`` with attachment
point ``a_k`` (the sizes of the tranches junior to it) and size ``s_k`` has absorbed
``min(max(E_t - a_k, 0), s_k)`` by step ``t``, where ``E_t`` is the cumulative loss that
got past the fund; the senior lender has absorbed ``max(E_t - a_K, 0)``.

A part *attaches* on a path when it absorbs a positive amount there; its first step
of attachment is the first step at which its cumulative absorbed loss is positive
(``-1`` when it never attaches).

Without per-step data (a result run without ``record_steps``) the path's total loss is
treated as one step and the fund gets **no** fee income, a conservative choice: the
fees could have been earned after the loss.
"""
import math
from dataclasses import dataclass, field

import numpy as np

#: Names of the two parts that are always present.
RESERVE = "reserve"
SENIOR = "senior"


@dataclass(frozen=True)
class CapitalStructure:
    """Who absorbs losses, in order: reserve fund, tranches (junior first), senior lender.

    Parameters
    ----------
    reserve : float
        Initial size of the reserve fund (>= 0).
    fee_share : float
        Share of liquidation fees paid into the fund as they are earned (0 to 1).
    tranches : sequence of (name, size)
        Tranches junior first; sizes > 0 (a name may not be ``"reserve"`` or ``"senior"``).
    basis : {"fraction", "amount"}
        Whether ``reserve`` and tranche sizes are fractions of the book's initial debt
        (``total_debt``) or amounts in the quote currency.

    Examples
    --------
    >>> s = CapitalStructure(reserve=0.001, fee_share=0.5,
    ...                      tranches=[("first loss", 0.005), ("mezzanine", 0.02)])
    >>> s.amounts(1e9)
    (1000000.0, [('first loss', 5000000.0), ('mezzanine', 20000000.0)])
    """

    reserve: float = 0.0
    fee_share: float = 0.0
    tranches: tuple = field(default_factory=tuple)
    basis: str = "fraction"

    def __post_init__(self):
        tranches = tuple((str(name), float(size)) for name, size in self.tranches)
        object.__setattr__(self, "tranches", tranches)
        object.__setattr__(self, "reserve", float(self.reserve))
        object.__setattr__(self, "fee_share", float(self.fee_share))
        if self.basis not in ("fraction", "amount"):
            raise ValueError(f"basis must be 'fraction' or 'amount', got {self.basis!r}")
        if not (math.isfinite(self.reserve) and self.reserve >= 0):
            raise ValueError(f"reserve must be finite and >= 0, got {self.reserve}")
        if not 0.0 <= self.fee_share <= 1.0:
            raise ValueError(f"fee_share must be in [0, 1], got {self.fee_share}")
        names = [RESERVE]
        for k, (name, size) in enumerate(tranches):
            if not (math.isfinite(size) and size > 0):
                raise ValueError(f"tranche {k} ({name!r}) size must be finite and > 0, got {size}")
            if name in names or name == SENIOR:
                raise ValueError(f"tranche {k} name {name!r} is used twice or reserved; use another name")
            names.append(name)

    @property
    def names(self):
        """Names of every part, most junior first: reserve, tranches, senior."""
        return [RESERVE] + [name for name, _ in self.tranches] + [SENIOR]

    def amounts(self, total_debt=None):
        """``(reserve, [(name, size), ...])`` in the quote currency.

        ``total_debt`` (the book's initial debt) is needed when ``basis == "fraction"``.
        """
        if self.basis == "amount":
            return self.reserve, list(self.tranches)
        if total_debt is None:
            raise ValueError("tranche sizes are fractions of the book's debt: pass total_debt "
                             "(or the book), or give sizes as amounts (basis='amount')")
        total_debt = float(total_debt)
        if not (math.isfinite(total_debt) and total_debt > 0):
            raise ValueError(f"total_debt must be finite and > 0, got {total_debt}")
        return self.reserve * total_debt, [(name, size * total_debt) for name, size in self.tranches]

    def to_dict(self):
        return {"reserve": self.reserve, "fee_share": self.fee_share,
                "tranches": [list(t) for t in self.tranches], "basis": self.basis}


#: The structure the report uses unless told otherwise (fractions of the initial debt):
#: a reserve of 0.1% topped up by half of the liquidation fees, a 0.5% first-loss
#: tranche, a 2% mezzanine tranche, then the senior lender. Illustrative round figures,
#: of the order of the first-loss pieces of published crypto-backed loan pools.
DEFAULT_STRUCTURE = CapitalStructure(
    reserve=0.001, fee_share=0.5, tranches=(("first loss", 0.005), ("mezzanine", 0.02)), basis="fraction"
)


@dataclass
class Waterfall:
    """Per-path outcome of a :class:`CapitalStructure` (parts ordered junior first).

    Attributes
    ----------
    names : list of str
        ``["reserve", <tranches>..., "senior"]``.
    capacity : ndarray [n_parts]
        Size of each part in the quote currency (the reserve's *initial* size; ``inf``
        for the senior lender).
    absorbed : ndarray [n_paths, n_parts]
        Loss absorbed by each part on each path; rows sum to the path's loss.
    attached : ndarray of bool [n_paths, n_parts]
        Whether the part absorbed a positive loss on the path.
    first_step : ndarray of int64 [n_paths, n_parts]
        First step at which the part had absorbed a positive loss, or -1.
    fund_income : ndarray [n_paths]
        Fee income paid into the reserve fund over the horizon.
    fund_end : ndarray [n_paths]
        Reserve fund balance after the last step.
    loss : ndarray [n_paths]
        Total loss the waterfall was given (sum of ``step_loss`` over steps).
    per_step : bool
        False when the path total was treated as one step (no fee income, see module note).
    """

    names: list
    capacity: np.ndarray
    absorbed: np.ndarray
    attached: np.ndarray
    first_step: np.ndarray
    fund_income: np.ndarray
    fund_end: np.ndarray
    loss: np.ndarray
    per_step: bool
    structure: CapitalStructure = None
    total_debt: float = None

    def part(self, name):
        """Loss absorbed by one part on each path (``ndarray [n_paths]``)."""
        return self.absorbed[:, self.names.index(name)]

    @property
    def n_paths(self):
        return self.absorbed.shape[0]


def waterfall(step_loss, step_fees=None, structure=DEFAULT_STRUCTURE, total_debt=None):
    """Run the loss waterfall on every path.

    Parameters
    ----------
    step_loss : array_like [n_paths, n_steps + 1] (or [n_paths] for one step)
        Realised shortfall at each step (>= 0).
    step_fees : array_like of the same shape, optional
        Liquidation fees earned at each step; ``None`` means no fee income.
    structure : CapitalStructure
    total_debt : float, optional
        The book's initial debt; needed when the structure's sizes are fractions.

    Returns
    -------
    Waterfall
    """
    if not isinstance(structure, CapitalStructure):
        raise TypeError(f"structure must be a CapitalStructure, got {type(structure).__name__}")
    loss = _steps("step_loss", step_loss)
    fees = np.zeros_like(loss) if step_fees is None else _steps("step_fees", step_fees)
    if fees.shape != loss.shape:
        raise ValueError(f"step_fees has shape {fees.shape}, step_loss has {loss.shape}; they must match")
    reserve, tranches = structure.amounts(total_debt)
    sizes = np.array([size for _, size in tranches], dtype=np.float64)
    n_paths, n_t = loss.shape
    n_parts = len(tranches) + 2

    # 1. The reserve fund: a balance per path, credited then drawn at each step.
    balance = np.full(n_paths, reserve)
    fund_absorbed = np.zeros(n_paths)
    fund_first = np.full(n_paths, -1, dtype=np.int64)
    excess = np.empty_like(loss)  # loss that got past the fund at each step
    income = fees * structure.fee_share
    for t in range(n_t):
        balance += income[:, t]
        take = np.minimum(balance, loss[:, t])
        balance -= take
        fund_absorbed += take
        excess[:, t] = loss[:, t] - take
        fund_first[(fund_first < 0) & (take > 0)] = t

    # 2. Tranches and the senior lender on the cumulative excess.
    cum = np.cumsum(excess, axis=1)  # [n_paths, n_t]
    bounds = np.concatenate([[0.0], np.cumsum(sizes)])  # attachment points, then the top
    absorbed = np.empty((n_paths, n_parts))
    first = np.empty((n_paths, n_parts), dtype=np.int64)
    absorbed[:, 0] = fund_absorbed
    first[:, 0] = fund_first
    for k in range(len(tranches) + 1):
        above = np.maximum(cum - bounds[k], 0.0)
        part = np.minimum(above, sizes[k]) if k < len(tranches) else above
        absorbed[:, k + 1] = part[:, -1]
        hit = part > 0
        first[:, k + 1] = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
    capacity = np.concatenate([[reserve], sizes, [np.inf]])
    return Waterfall(
        names=structure.names, capacity=capacity, absorbed=absorbed, attached=absorbed > 0,
        first_step=first, fund_income=income.sum(axis=1), fund_end=balance, loss=loss.sum(axis=1),
        per_step=n_t > 1 or step_fees is not None, structure=structure, total_debt=total_debt,
    )


def result_waterfall(result, structure=DEFAULT_STRUCTURE, total_debt=None, book=None):
    """:func:`waterfall` on a :class:`~ltvsim.SimulationResult`.

    Uses ``step_loss`` and ``step_fees`` when the result recorded steps; otherwise the
    path's total loss as one step with no fee income (see the module note).
    ``total_debt`` defaults to ``book.debt.sum()`` when a book is given.
    """
    if total_debt is None and book is not None:
        total_debt = float(np.sum(book.debt))
    arrays = result.arrays
    if "step_loss" in arrays:
        return waterfall(arrays["step_loss"], arrays.get("step_fees"), structure, total_debt)
    w = waterfall(arrays["path_loss"][:, None], None, structure, total_debt)
    w.per_step = False
    return w


def _steps(name, values):
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be [n_paths, n_steps + 1], got shape {x.shape}")
    bad = ~np.isfinite(x) | (x < 0)
    if bad.any():
        p, t = np.argwhere(bad)[0]
        raise ValueError(f"{name}[{p}, {t}] = {x[p, t]!r}: must be finite and >= 0")
    return x
