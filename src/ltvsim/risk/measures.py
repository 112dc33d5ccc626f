"""Risk measures with Monte Carlo error bars on any per-path quantity.

Every figure is a :class:`Measure`: ``(value, stderr, low, high)``, the estimate, its
Monte Carlo standard error and a two-sided confidence interval at ``confidence``
(default 95%). Methods (the estimators are those of ``ltvsim._estimators``):

* **mean**: sample mean, standard error ``s / sqrt(n)``, normal interval
  ``value -/+ z se``.
* **VaR at q**: the empirical quantile ``x_(ceil(q n))``. Interval: the distribution-free
  order-statistic interval, the order statistics at ranks
  ``floor(n q - z sqrt(n q (1 - q)))`` and ``ceil(n q + z sqrt(n q (1 - q)))`` (the
  normal approximation of the binomial count of paths below the true quantile); it
  needs no density estimate and is asymmetric when the tail is. The standard error is
  the width of the 95% interval over ``2 x 1.96``, as ``SimulationResult.var``.
* **ES at q**: ``VaR + mean((x - VaR)+) / (1 - q)``; standard error
  ``sd((x - VaR)+) / ((1 - q) sqrt(n))``; normal interval.
* **probabilities** (a tranche attaching, a loss occurring): the share of paths;
  binomial standard error ``sqrt(p (1 - p) / n)``; Wilson score interval, which stays
  inside [0, 1] and is not degenerate when no path (or every path) has the event.

Paths are independent draws, so these hold for any per-path quantity; at level q only
about ``n (1 - q)`` paths inform the tail, so tail figures need many paths.
"""
import math
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

from .._estimators import as_sample, expected_shortfall, level_name, mean, value_at_risk

#: Confidence of the intervals unless told otherwise.
CONFIDENCE = 0.95


class Measure(NamedTuple):
    """An estimate with its Monte Carlo standard error and confidence interval."""

    value: float
    stderr: float
    low: float
    high: float

    def __format__(self, spec):
        return f"{format(self.value, spec)} ± {format(self.stderr, spec)}"


def _z(confidence):
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def mean_measure(values, confidence=CONFIDENCE):
    """Mean with standard error and normal confidence interval."""
    est = mean(as_sample(values))
    half = _z(confidence) * est.stderr
    return Measure(est.value, est.stderr, est.value - half, est.value + half)


def var_measure(values, q, confidence=CONFIDENCE):
    """Value at risk (empirical q-quantile) with its order-statistic interval."""
    x = np.sort(as_sample(values))
    est = value_at_risk(x, q)
    n = x.size
    if n < 2:
        return Measure(est.value, est.stderr, math.nan, math.nan)
    half = _z(confidence) * math.sqrt(n * q * (1.0 - q))
    low = min(n, max(1, math.floor(n * q - half)))
    high = min(n, max(1, math.ceil(n * q + half)))
    return Measure(est.value, est.stderr, float(x[low - 1]), float(x[high - 1]))


def es_measure(values, q, confidence=CONFIDENCE):
    """Expected shortfall with its asymptotic standard error and normal interval."""
    est = expected_shortfall(as_sample(values), q)
    half = _z(confidence) * est.stderr
    return Measure(est.value, est.stderr, est.value - half, est.value + half)


def probability(events, confidence=CONFIDENCE):
    """Share of paths on which ``events`` (bool per path) holds: binomial standard
    error and Wilson score interval."""
    e = np.asarray(events, dtype=bool).ravel()
    n = e.size
    if n == 0:
        raise ValueError("no paths to estimate from")
    p = float(np.count_nonzero(e)) / n
    se = math.sqrt(p * (1.0 - p) / n)
    z = _z(confidence)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Measure(p, se, max(0.0, centre - half), min(1.0, centre + half))


def risk_measures(values, levels=(0.99,), confidence=CONFIDENCE):
    """Mean, and VaR and ES at each level, of one per-path quantity.

    Parameters
    ----------
    values : array_like [n_paths]
    levels : float or sequence of float
        VaR/ES levels in (0, 1).
    confidence : float
        Confidence of the intervals.

    Returns
    -------
    dict
        ``{"mean": Measure, "var_99": Measure, "es_99": Measure, ...}`` (keys named
        as in :meth:`ltvsim.SimulationResult.summary`).
    """
    x = as_sample(values)
    if np.isscalar(levels):
        levels = (levels,)
    out = {"mean": mean_measure(x, confidence)}
    for q in levels:
        out[f"var_{level_name(q)}"] = var_measure(x, q, confidence)
        out[f"es_{level_name(q)}"] = es_measure(x, q, confidence)
    return out


# ---------------------------------------------------------------------- per-path quantities
def reference_prices(result):
    """Step-0 prices of the run's assets when its meta records the market model (runs of
    ``ltvsim run`` / :func:`ltvsim.run_batch`), else ``None``."""
    meta = result.meta
    model = (meta.get("batch") or {}).get("model") or (meta.get("run") or {}).get("market") or {}
    s0 = model.get("s0")
    if s0 is None or len(s0) != len(meta.get("assets", ())):
        return None
    return np.asarray(s0, dtype=np.float64)


def _prices(result, prices):
    if prices is None:
        return None
    if isinstance(prices, dict):
        missing = [a for a in result.assets if a not in prices]
        if missing:
            raise ValueError(f"prices has no entry for asset(s) {missing}")
        prices = [prices[a] for a in result.assets]
    p = np.asarray(prices, dtype=np.float64)
    if p.shape != (len(result.assets),) or not np.all(np.isfinite(p) & (p > 0)):
        raise ValueError(f"prices must be one finite positive price per asset {result.assets}, got {prices!r}")
    return p


def path_quantity(result, name, prices=None):
    """A per-path quantity of ``result`` by name.

    ``"loss"``, ``"fees"``, ``"proceeds"``, ``"margin_calls"``, ``"liquidations"``, ...
    (any ``path_*`` array); ``"collateral_sold_<ASSET>"`` (units);
    ``"collateral_sold_<ASSET>_notional"`` and ``"collateral_sold_notional"`` (units x
    ``prices``, reference prices per asset, a dict or sequence); ``"collateral_sold_proceeds"``
    (total notional at the actual sale prices, i.e. ``path_proceeds``).
    """
    arrays = result.arrays
    if f"path_{name}" in arrays and arrays[f"path_{name}"].ndim == 1:
        return np.asarray(arrays[f"path_{name}"], dtype=np.float64)
    sold = arrays["path_collateral_sold"]
    if name == "collateral_sold_proceeds":
        return np.asarray(arrays["path_proceeds"], dtype=np.float64)
    p = _prices(result, prices)
    for k, asset in enumerate(result.assets):
        if name == f"collateral_sold_{asset}":
            return sold[:, k].astype(np.float64)
        if name == f"collateral_sold_{asset}_notional":
            if p is None:
                raise ValueError(f"{name} needs prices")
            return sold[:, k] * p[k]
    if name == "collateral_sold_notional":
        if p is None:
            raise ValueError(f"{name} needs prices")
        return sold @ p
    raise ValueError(f"unknown per-path quantity {name!r}")


def liquidations_at_risk(result, q=0.99, prices=None, confidence=CONFIDENCE):
    """Collateral sold at the q-quantile over paths ("liquidations at risk").

    Returns ``{asset: {"units": Measure[, "notional": Measure]}, ..., "total":
    {["notional": Measure,] "proceeds": Measure}}``. Notional is units x ``prices``
    (reference prices, e.g. step 0; default :func:`reference_prices`). The total is
    the quantile of the per-path total, not a sum of quantiles; ``proceeds`` is the
    total at the actual sale prices.
    """
    if prices is None:
        prices = reference_prices(result)
    p = _prices(result, prices)
    out = {}
    for asset in result.assets:
        row = {"units": var_measure(path_quantity(result, f"collateral_sold_{asset}"), q, confidence)}
        if p is not None:
            row["notional"] = var_measure(path_quantity(result, f"collateral_sold_{asset}_notional", p), q, confidence)
        out[asset] = row
    total = {}
    if p is not None:
        total["notional"] = var_measure(path_quantity(result, "collateral_sold_notional", p), q, confidence)
    total["proceeds"] = var_measure(path_quantity(result, "collateral_sold_proceeds"), q, confidence)
    out["total"] = total
    return out


def tranche_table(wf, levels=(0.99,), confidence=CONFIDENCE):
    """One row per part of a :class:`~ltvsim.risk.waterfall.Waterfall`: its size, the
    probability that it attaches, the mean of its first attachment step where it
    attaches, and :func:`risk_measures` of the loss it absorbs."""
    rows = []
    for k, name in enumerate(wf.names):
        hit = wf.attached[:, k]
        steps = wf.first_step[hit, k]
        rows.append({
            "name": name,
            "capacity": float(wf.capacity[k]),
            "attach_probability": probability(hit, confidence),
            "mean_first_step": float(steps.mean()) if steps.size else math.nan,
            **risk_measures(wf.absorbed[:, k], levels, confidence),
        })
    return rows
