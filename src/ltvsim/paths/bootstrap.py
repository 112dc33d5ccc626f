"""Historical block bootstrap of joint daily log returns.

Paths are built from blocks of consecutive days of a price history, all assets of a day
taken together (so cross-asset dependence, fat tails and short-range volatility
clustering are kept). ``stationary=False`` (default) draws fixed blocks of
``block_length`` days starting at uniformly drawn days of the circularly wrapped history
(the circular block bootstrap of Politis and Romano 1992); ``stationary=True`` ends each
block after a geometric number of days with mean ``block_length`` (their stationary
bootstrap, 1994). The step is the history's step: only ``dt == dt_data`` is accepted.
``mu`` (optional, annual) re-centres every asset's mean log return to ``mu - sigma**2/2``
of the history's own volatility; by default the history's drift is kept.
"""
import numpy as np
from numba import njit, prange

from ._driver import PathModel, run_kernel
from ._streams import seed_path, uniform
from .params import Field

_jit = dict(cache=True, nogil=True, error_model="numpy", fastmath=False)


class BootstrapParams(PathModel):
    """Block bootstrap of ``returns`` (``[n_days, n_assets]`` log returns, step ``dt_data``)."""

    model = "bootstrap"
    antithetic_ok = False
    fields = (
        Field("s0", ("a",), "positive", "starting price"),
        Field("block_length", (), "atleast1", "days per block (mean days if stationary)", default=10.0),
        Field("dt_data", (), "positive", "step of the history in years", default=1 / 365),
    )
    extra = ("returns", "dates", "stationary", "mu")
    matrices = ()

    def _validate(self):
        returns = np.asarray(self.returns, dtype=np.float64)
        if returns.ndim == 1 and self.n_assets == 1:
            returns = returns[:, None]
        if returns.ndim != 2 or returns.shape[1] != self.n_assets or returns.shape[0] < 2:
            raise ValueError(f"returns must be [n_days >= 2, {self.n_assets}] log returns, got shape {returns.shape}")
        bad = ~np.isfinite(returns)
        if bad.any():
            d, a = np.argwhere(bad)[0]
            raise ValueError(f"returns[{d}, {self.assets[a]}] = {returns[d, a]!r}: must be finite")
        self.returns = np.ascontiguousarray(returns)
        if self.dates is not None:
            self.dates = [str(d) for d in self.dates]
            if len(self.dates) != returns.shape[0]:
                raise ValueError(f"dates has {len(self.dates)} entries, returns has {returns.shape[0]} rows")
        self.stationary = bool(self.stationary) if self.stationary is not None else False
        if self.mu is not None:
            self.mu = np.broadcast_to(np.asarray(self.mu, dtype=np.float64), (self.n_assets,)).copy()

    def to_dict(self):
        d = super().to_dict()
        d["returns"] = self.returns.tolist()
        if self.mu is not None:
            d["mu"] = self.mu.tolist()
        return d

    def __eq__(self, other):
        if type(other) is not type(self):
            return False
        same_mu = (self.mu is None and other.mu is None) or (
            self.mu is not None and other.mu is not None and np.array_equal(self.mu, other.mu))
        return (self.assets == other.assets and np.array_equal(self.returns, other.returns) and same_mu
                and self.stationary == other.stationary and self.dates == other.dates
                and float(self.block_length) == float(other.block_length) and float(self.dt_data) == float(other.dt_data))

    def _prepare(self, s0, dt):
        if not np.isclose(dt, float(self.dt_data), rtol=1e-9, atol=0):
            raise ValueError(f"a bootstrap steps at the history's frequency: dt must be {float(self.dt_data)!r}, got {dt!r}")
        returns = self.returns
        if self.mu is not None:
            var = returns.var(axis=0)
            returns = returns - returns.mean(axis=0) + (self.mu * dt - 0.5 * var)
        return np.log(s0), np.ascontiguousarray(returns), float(self.block_length), bool(self.stationary)

    def _fill(self, out, key, path0, antithetic, prepared, n_threads):
        run_kernel(_bootstrap_kernel, n_threads, out, key, path0, *prepared)


@njit(parallel=True, **_jit)
def _bootstrap_kernel(out, key, path0, log_s0, returns, block_length, stationary):
    n_paths, n_steps_1, n_assets = out.shape
    n_days = returns.shape[0]
    fixed = int(round(block_length))
    restart = 1.0 / block_length
    for i in prange(n_paths):
        state = np.empty(4, dtype=np.uint64)
        seed_path(key, path0 + i, False, state)
        x = log_s0.copy()
        for a in range(n_assets):
            out[i, 0, a] = np.exp(x[a])
        pos = 0
        for t in range(1, n_steps_1):
            if stationary:
                new_block = t == 1 or uniform(state) < restart
            else:
                new_block = (t - 1) % fixed == 0
            if new_block:
                pos = int(uniform(state) * n_days)
                if pos >= n_days:
                    pos = n_days - 1
            else:
                pos += 1
                if pos == n_days:
                    pos = 0
            for a in range(n_assets):
                x[a] += returns[pos, a]
                out[i, t, a] = np.exp(x[a])
