"""Monte Carlo estimators with standard errors, on one sample of per-path values.

* Mean: the sample mean; standard error ``s / sqrt(n)``.
* VaR at level q: the empirical q-quantile, ``x_(ceil(q n))`` (the smallest value with
  at least a share q of paths at or below it). Standard error from the distribution-free
  order-statistic confidence interval: the ranks ``n q -/+ 1.96 sqrt(n q (1 - q))``
  bracket the true quantile with 95% probability, and half that interval's width over
  1.96 is reported.
* ES at level q: ``VaR + mean((x - VaR)+) / (1 - q)`` (Acerbi and Tasche, 2002; exact
  for ties). Its asymptotic standard error is ``sd((x - VaR)+) / ((1 - q) sqrt(n))``: the
  first-order effect of the VaR's own error vanishes at the true quantile.
"""
import math
from typing import NamedTuple

import numpy as np

_Z95 = 1.959963984540054


class Estimate(NamedTuple):
    """A Monte Carlo estimate and its standard error (NaN when it cannot be estimated)."""

    value: float
    stderr: float

    def __format__(self, spec):
        return f"{format(self.value, spec)} ± {format(self.stderr, spec)}"


def as_sample(values):
    """Per-path values as a flat float64 array; refuses an empty sample."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("no paths to estimate from")
    return x


def level_name(q):
    """``0.99 -> "99"``, ``0.995 -> "99.5"``: the suffix of ``var_99`` and ``summary()`` keys."""
    return f"{round(float(q) * 100, 4):g}"


def _check_level(q):
    q = float(q)
    if not 0.0 < q < 1.0:
        raise ValueError(f"level q must be in (0, 1), got {q}")
    return q


def mean(values):
    """Sample mean and its standard error."""
    x = as_sample(values)
    se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan
    return Estimate(float(x.mean()), se)


def value_at_risk(values, q):
    """Empirical q-quantile and its order-statistic standard error."""
    x = np.sort(as_sample(values))
    q = _check_level(q)
    n = x.size
    rank = max(1, math.ceil(q * n))
    value = float(x[rank - 1])
    if n < 2:
        return Estimate(value, math.nan)
    half = _Z95 * math.sqrt(n * q * (1.0 - q))
    low = min(n, max(1, math.floor(n * q - half)))
    high = min(n, max(1, math.ceil(n * q + half)))
    return Estimate(value, float(x[high - 1] - x[low - 1]) / (2.0 * _Z95))


def expected_shortfall(values, q):
    """Expected shortfall (mean of the worst 1 - q share) and its standard error."""
    x = as_sample(values)
    q = _check_level(q)
    var = value_at_risk(x, q).value
    excess = np.maximum(x - var, 0.0)
    value = var + float(excess.mean()) / (1.0 - q)
    se = float(excess.std(ddof=1)) / ((1.0 - q) * math.sqrt(x.size)) if x.size > 1 else math.nan
    return Estimate(value, se)
