"""Two-state regime-switching GBM (calm / stress).

A continuous-time Markov chain switches between regime 0 ("calm") and 1 ("stress") with
rates ``rate_to_stress`` and ``rate_to_calm`` per year; the chance of leaving a regime
within one step is ``1 - exp(-rate dt)``, so any step length describes the same chain. In
regime ``s`` the assets follow correlated GBM with drift ``mu[s]``, volatility
``sigma[s]`` and correlation ``corr[s]`` (stress typically has higher volatility, lower
drift and higher correlation). The regime of step ``t`` is decided before its shock; the
first step's regime is drawn from ``start``: "calm", "stress" or "stationary" (the chain's
long-run probabilities).
"""
import math

import numpy as np
from numba import njit, prange

from ._driver import PathModel, run_kernel
from ._streams import normal, seed_path, uniform
from .gbm import cholesky_of_correlation
from .params import Field, check_corr

_jit = dict(cache=True, nogil=True, error_model="numpy", fastmath=False)
REGIMES = ("calm", "stress")
_STARTS = ("calm", "stress", "stationary")


class RegimeParams(PathModel):
    """Regime-switching parameters; ``mu``, ``sigma`` are ``[regime, asset]``, ``corr`` is
    ``[regime, asset, asset]``."""

    model = "regime"
    fields = (
        Field("s0", ("a",), "positive", "starting price"),
        Field("mu", ("r", "a"), "finite", "annual drift per regime"),
        Field("sigma", ("r", "a"), "nonnegative", "annual volatility per regime"),
        Field("rate_to_stress", (), "nonnegative", "calm -> stress switches per year"),
        Field("rate_to_calm", (), "nonnegative", "stress -> calm switches per year"),
    )
    matrices = ("corr",)
    extra = ("start",)

    def _check_matrix(self, name, value):
        n = self.n_assets
        if value is None:
            return np.stack([np.eye(n), np.eye(n)])
        value = np.asarray(value, dtype=np.float64)
        if value.shape == (n, n):
            value = np.stack([value, value])
        if value.shape != (2, n, n):
            raise ValueError(f"corr must be [2, {n}, {n}] (one matrix per regime), got {value.shape}")
        return np.stack([check_corr(f"corr[{r}]", value[i], self.assets) for i, r in enumerate(REGIMES)])

    def _validate(self):
        if self.start is None:
            self.start = "stationary"
        if self.start not in _STARTS:
            raise ValueError(f"start must be one of {_STARTS}, got {self.start!r}")

    def stationary_stress_probability(self):
        """Long-run share of time in the stress regime."""
        total = float(self.rate_to_stress + self.rate_to_calm)
        return float(self.rate_to_stress) / total if total > 0 else 0.0

    def _prepare(self, s0, dt):
        drift = (self.mu - 0.5 * self.sigma**2) * dt
        scale = np.stack([
            cholesky_of_correlation(self.corr[r], self.n_assets) * (self.sigma[r] * math.sqrt(dt))[:, None]
            for r in range(2)
        ])
        switch = np.array([-math.expm1(-float(self.rate_to_stress) * dt), -math.expm1(-float(self.rate_to_calm) * dt)])
        p_stress = {"calm": 0.0, "stress": 1.0, "stationary": self.stationary_stress_probability()}[self.start]
        return np.log(s0), np.ascontiguousarray(drift), np.ascontiguousarray(scale), switch, p_stress

    def _fill(self, out, key, path0, antithetic, prepared, n_threads):
        run_kernel(_regime_kernel, n_threads, out, key, path0, antithetic, *prepared)

    def regimes(self, n_paths, n_steps, dt, *, seed=0, antithetic=False, path_offset=0):
        """The regime (0 calm, 1 stress) of every step of the paths with the same seed."""
        n_paths, n_steps, dt, seed, s0, antithetic, _ = self._check_run(n_paths, n_steps, dt, seed, None, antithetic, np.float64)
        prepared = self._prepare(s0, dt)
        out = np.empty((n_paths, n_steps + 1, self.n_assets))
        states = np.zeros((n_paths, n_steps), dtype=np.int8)
        from ._streams import seed_key

        _regime_kernel_states(out, np.uint64(seed_key(np.uint64(seed))), np.int64(path_offset), antithetic, *prepared, states)
        return states


@njit(**_jit)
def _regime_path(out, i, key, path, antithetic, log_s0, drift, scale, switch, p_stress, states, record):
    n_steps_1, n_assets = out.shape[1], out.shape[2]
    state = np.empty(4, dtype=np.uint64)
    sign = seed_path(key, path, antithetic, state)
    x = log_s0.copy()
    z = np.empty(n_assets)
    s = 1 if uniform(state) < p_stress else 0
    for a in range(n_assets):
        out[i, 0, a] = math.exp(x[a])
    for t in range(1, n_steps_1):
        if t > 1 and uniform(state) < switch[s]:
            s = 1 - s
        if record:
            states[i, t - 1] = s
        for a in range(n_assets):
            z[a] = sign * normal(state)
        for a in range(n_assets):
            inc = drift[s, a]
            for b in range(n_assets):
                inc += scale[s, a, b] * z[b]
            x[a] += inc
            out[i, t, a] = math.exp(x[a])


@njit(parallel=True, **_jit)
def _regime_kernel(out, key, path0, antithetic, log_s0, drift, scale, switch, p_stress):
    dummy = np.zeros((1, 1), dtype=np.int8)
    for i in prange(out.shape[0]):
        _regime_path(out, i, key, path0 + i, antithetic, log_s0, drift, scale, switch, p_stress, dummy, False)


@njit(**_jit)
def _regime_kernel_states(out, key, path0, antithetic, log_s0, drift, scale, switch, p_stress, states):
    for i in range(out.shape[0]):
        _regime_path(out, i, key, path0 + i, antithetic, log_s0, drift, scale, switch, p_stress, states, True)
