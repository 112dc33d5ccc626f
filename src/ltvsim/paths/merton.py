"""Merton jump-diffusion with common and per-asset jumps.

Between jumps each asset follows correlated GBM. Two kinds of jumps arrive as Poisson
processes: *common* jumps (rate ``common_rate`` per year) hit every asset at once, asset
``a`` by a log-size ``common_mean[a] + common_std[a] * e`` with one shared ``e ~ N(0, 1)``
(so BTC and ETH crash together, by their own amounts); *own* jumps of asset ``a`` (rate
``jump_rate[a]``) have log-size ``N(jump_mean[a], jump_std[a]**2)`` and hit it alone.
``k`` jumps in one step add ``k * mean + std * sqrt(k) * e`` (the exact law of a sum of
``k`` normal jumps). The drift is compensated, so ``E[S[t]] = S[0] exp(mu t)``.

Per step and path the kernel draws ``n_assets`` diffusion normals, one uniform for the
common jump count and one per asset for the own jump counts (inversion), plus one normal
per jump source that fired.
"""
import math

import numpy as np
from numba import njit, prange

from ._driver import PathModel, run_kernel
from ._streams import normal, poisson_inverse, seed_path, uniform
from .gbm import cholesky_of_correlation, diffuse
from .params import Field

_jit = dict(cache=True, nogil=True, error_model="numpy", fastmath=False)


class MertonParams(PathModel):
    """Merton jump-diffusion parameters (see the module docstring for the model)."""

    model = "merton"
    fields = (
        Field("s0", ("a",), "positive", "starting price"),
        Field("mu", ("a",), "finite", "annual drift (arithmetic, jumps included)", default=0.0),
        Field("sigma", ("a",), "nonnegative", "annual diffusion volatility"),
        Field("jump_rate", ("a",), "nonnegative", "own jumps per year", default=0.0),
        Field("jump_mean", ("a",), "finite", "mean log-size of an own jump", default=0.0),
        Field("jump_std", ("a",), "nonnegative", "std of the log-size of an own jump", default=0.0),
        Field("common_rate", (), "nonnegative", "common jumps per year", default=0.0),
        Field("common_mean", ("a",), "finite", "mean log-size of a common jump", default=0.0),
        Field("common_std", ("a",), "nonnegative", "std of the log-size of a common jump", default=0.0),
    )
    matrices = ("corr",)

    def compensator(self):
        """Annual drift given up to jumps: ``sum(rate * (E[exp(J)] - 1))`` per asset."""
        own = self.jump_rate * np.expm1(self.jump_mean + 0.5 * self.jump_std**2)
        common = self.common_rate * np.expm1(self.common_mean + 0.5 * self.common_std**2)
        return own + common

    def _prepare(self, s0, dt):
        chol = cholesky_of_correlation(self.corr, self.n_assets)
        drift = (self.mu - 0.5 * self.sigma**2 - self.compensator()) * dt
        scale = np.ascontiguousarray(chol * (self.sigma * math.sqrt(dt))[:, None])
        own_lam = self.jump_rate * dt
        common_lam = float(self.common_rate) * dt
        return (
            np.log(s0), drift, scale,
            common_lam, math.exp(-common_lam), self.common_mean.copy(), self.common_std.copy(),
            own_lam, np.exp(-own_lam), self.jump_mean.copy(), self.jump_std.copy(),
        )

    def _fill(self, out, key, path0, antithetic, prepared, n_threads):
        run_kernel(_merton_kernel, n_threads, out, key, path0, antithetic, *prepared)


@njit(parallel=True, **_jit)
def _merton_kernel(out, key, path0, antithetic, log_s0, drift, scale,
                   common_lam, common_p0, common_mean, common_std,
                   own_lam, own_p0, own_mean, own_std):
    n_paths, n_steps_1, n_assets = out.shape
    for i in prange(n_paths):
        state = np.empty(4, dtype=np.uint64)
        sign = seed_path(key, path0 + i, antithetic, state)
        x = log_s0.copy()
        z = np.empty(n_assets)
        for a in range(n_assets):
            out[i, 0, a] = math.exp(x[a])
        for t in range(1, n_steps_1):
            diffuse(state, sign, drift, scale, z, x)
            u = uniform(state)
            if u >= common_p0:
                k = poisson_inverse(u, common_lam, common_p0)
                e = sign * normal(state)
                rk = math.sqrt(k)
                for a in range(n_assets):
                    x[a] += k * common_mean[a] + common_std[a] * rk * e
            for a in range(n_assets):
                u = uniform(state)
                if u >= own_p0[a]:
                    k = poisson_inverse(u, own_lam[a], own_p0[a])
                    e = sign * normal(state)
                    x[a] += k * own_mean[a] + own_std[a] * math.sqrt(k) * e
            for a in range(n_assets):
                out[i, t, a] = math.exp(x[a])
