"""GARCH(1,1) with Student-t innovations and constant conditional correlation.

At the frequency it was fitted at (``dt_fit`` years per step, daily by default) asset
``a`` follows, with ``v`` the per-step variance of the log return,

    r[t]   = (mu - h[t] / 2) dt + sqrt(v[t]) eps[t],         v = h dt
    v[t+1] = omega + alpha * v[t] * eps[t]**2 + beta * v[t]

where ``eps = L n * sqrt((nu - 2) / W)``, ``n ~ N(0, I)``, ``W ~ chi2(nu)`` shared by the
assets (a multivariate Student-t with unit variances and correlation ``corr``, so crashes
arrive together). ``nu = inf`` gives normal innovations.

Other step lengths. GARCH is not closed under a change of frequency, so for ``dt !=
dt_fit`` the recursion is rescaled in calendar time: with ``phi = alpha + beta`` and
``q = dt / dt_fit``, the step uses persistence ``phi**q``, news weight ``alpha * (1 -
phi**q) / (1 - phi)`` and the same unconditional annual variance ``hbar = omega / (dt_fit
(1 - phi))``. This keeps the long-run volatility, the half-life of volatility shocks in
calendar time and the ratio of news weight to mean reversion; it is exact at ``dt ==
dt_fit`` and an approximation otherwise.
"""
import math

import numpy as np
from numba import njit, prange

from ._driver import PathModel, run_kernel
from ._streams import gamma, normal, seed_path
from .gbm import cholesky_of_correlation
from .params import Field

_jit = dict(cache=True, nogil=True, error_model="numpy", fastmath=False)


class GARCHParams(PathModel):
    """GARCH(1,1)-t parameters (see the module docstring for the model).

    ``omega``, ``alpha`` and ``beta`` are per step of ``dt_fit`` years and per asset;
    ``sigma0`` is the annualised conditional volatility of the first step (default: the
    long-run volatility).
    """

    model = "garch"
    fields = (
        Field("s0", ("a",), "positive", "starting price"),
        Field("mu", ("a",), "finite", "annual drift", default=0.0),
        Field("omega", ("a",), "positive", "variance intercept per fitted step"),
        Field("alpha", ("a",), "nonnegative", "weight of the last squared shock"),
        Field("beta", ("a",), "nonnegative", "weight of the last variance"),
        Field("nu", (), "nu", "Student-t degrees of freedom (inf: normal)", default=float("inf")),
        Field("dt_fit", (), "positive", "step length the parameters are for (years)", default=1 / 365),
        Field("sigma0", ("a",), "nonnegative", "annual volatility of the first step", default=float("nan")),
    )
    matrices = ("corr",)

    def __init__(self, **kw):
        sigma0 = kw.get("sigma0")
        if sigma0 is None or np.any(np.isnan(np.asarray(sigma0, dtype=float))):
            kw["sigma0"] = 0.0  # filled in by _validate
            self._fill_sigma0 = np.isnan(np.broadcast_to(np.asarray(sigma0 if sigma0 is not None else np.nan, dtype=float), (len(kw.get("assets", ())) or 1,)))
        else:
            self._fill_sigma0 = None
        super().__init__(**kw)

    def _validate(self):
        persistence = self.alpha + self.beta
        bad = persistence >= 1
        if bad.any():
            a = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"alpha + beta [{self.assets[a]}] = {persistence[a]!r}: must be < 1 for a stationary GARCH"
                " (long-run variance omega / (1 - alpha - beta))"
            )
        if self._fill_sigma0 is not None:
            fill = np.broadcast_to(self._fill_sigma0, (self.n_assets,))
            self.sigma0 = np.where(fill, self.long_run_vol(), self.sigma0)
        del self._fill_sigma0

    def long_run_vol(self):
        """Unconditional annual volatility ``sqrt(omega / (dt_fit (1 - alpha - beta)))``."""
        return np.sqrt(self.omega / (float(self.dt_fit) * (1.0 - self.alpha - self.beta)))

    def step_coefficients(self, dt):
        """``(omega, alpha, beta)`` of the recursion for annual variances at step ``dt``."""
        phi = self.alpha + self.beta
        q = dt / float(self.dt_fit)
        phi_q = phi**q
        alpha_q = np.where(phi > 0, self.alpha * (1.0 - phi_q) / np.where(phi < 1, 1.0 - phi, 1.0), 0.0)
        hbar = self.long_run_vol() ** 2
        if q == 1.0:
            alpha_q, phi_q = self.alpha.copy(), phi
        return hbar * (1.0 - phi_q), alpha_q, phi_q - alpha_q

    def _prepare(self, s0, dt):
        chol = cholesky_of_correlation(self.corr, self.n_assets)
        omega, alpha, beta = self.step_coefficients(dt)
        nu = float(self.nu)
        t_scale = math.sqrt((nu - 2.0)) if math.isfinite(nu) else 0.0
        return (np.log(s0), self.mu * dt, np.ascontiguousarray(chol), self.sigma0**2,
                omega, alpha, beta, dt, nu if math.isfinite(nu) else 0.0, t_scale)

    def _fill(self, out, key, path0, antithetic, prepared, n_threads):
        run_kernel(_garch_kernel, n_threads, out, key, path0, antithetic, *prepared)


@njit(parallel=True, **_jit)
def _garch_kernel(out, key, path0, antithetic, log_s0, mu_dt, chol, h0, omega, alpha, beta, dt, nu, t_scale):
    """``nu == 0`` means normal innovations; ``h`` are annual conditional variances."""
    n_paths, n_steps_1, n_assets = out.shape
    half_nu = 0.5 * nu
    for i in prange(n_paths):
        state = np.empty(4, dtype=np.uint64)
        sign = seed_path(key, path0 + i, antithetic, state)
        x = log_s0.copy()
        h = h0.copy()
        n = np.empty(n_assets)
        for a in range(n_assets):
            out[i, 0, a] = math.exp(x[a])
        for t in range(1, n_steps_1):
            for a in range(n_assets):
                n[a] = sign * normal(state)
            scale = 1.0
            if nu > 0.0:
                scale = t_scale / math.sqrt(2.0 * gamma(state, half_nu))
            for a in range(n_assets):
                e = 0.0
                for b in range(n_assets):
                    e += chol[a, b] * n[b]
                e *= scale
                x[a] += mu_dt[a] - 0.5 * h[a] * dt + math.sqrt(h[a] * dt) * e
                h[a] = omega[a] + alpha[a] * h[a] * e * e + beta[a] * h[a]
                out[i, t, a] = math.exp(x[a])
