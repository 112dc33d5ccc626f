"""Correlated geometric Brownian motion."""
import math

import numpy as np
from numba import njit, prange

from ._driver import PathModel, run_kernel
from ._streams import normal, seed_path
from .params import Field

_jit = dict(cache=True, nogil=True, error_model="numpy", fastmath=False)


class GBMParams(PathModel):
    """Correlated geometric Brownian motion.

    ``log S[t+dt] = log S[t] + (mu - sigma**2 / 2) dt + sigma sqrt(dt) Z`` with
    ``Z ~ N(0, corr)``, so ``E[S[t]] = S[0] exp(mu t)`` for any step length.
    """

    model = "gbm"
    fields = (
        Field("s0", ("a",), "positive", "starting price"),
        Field("mu", ("a",), "finite", "annual drift (arithmetic)", default=0.0),
        Field("sigma", ("a",), "nonnegative", "annual volatility"),
    )
    matrices = ("corr",)

    def bridge_volatility(self):
        """GBM's own sigma: between two steps its log price is a Brownian bridge."""
        return self.sigma

    def _prepare(self, s0, dt):
        chol = cholesky_of_correlation(self.corr, self.n_assets)
        drift = (self.mu - 0.5 * self.sigma**2) * dt
        scale = np.ascontiguousarray(chol * (self.sigma * math.sqrt(dt))[:, None])
        return np.log(s0), drift, scale

    def _fill(self, out, key, path0, antithetic, prepared, n_threads):
        run_kernel(_gbm_kernel, n_threads, out, key, path0, antithetic, *prepared)


@njit(inline="always", **_jit)
def diffuse(state, sign, drift, scale, z, x):
    """One step of correlated Brownian log-returns: ``x += drift + scale @ (sign * Z)``.

    Draws the step's normals from the path's stream into ``z`` (scratch). Shared by
    the models built on GBM, so they consume their streams in the same order.
    """
    n_assets = x.shape[0]
    for a in range(n_assets):
        z[a] = sign * normal(state)
    for a in range(n_assets):
        inc = drift[a]
        for b in range(n_assets):
            inc += scale[a, b] * z[b]
        x[a] += inc


@njit(parallel=True, **_jit)
def _gbm_kernel(out, key, path0, antithetic, log_s0, drift, scale):
    """Fill ``out[i]`` (OUT) with path ``path0 + i``: one stream per path, steps in order."""
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
            for a in range(n_assets):
                out[i, t, a] = math.exp(x[a])


def gbm(s0, mu, sigma, *, corr=None, n_paths, n_steps, dt, seed=0, assets=None, dtype=np.float64, antithetic=False, n_threads=None):
    """Correlated geometric Brownian motion price paths.

    ``log S[t+1] = log S[t] + (mu - sigma**2 / 2) * dt + sigma * sqrt(dt) * Z`` with
    ``Z ~ N(0, corr)`` independent across steps.

    Parameters
    ----------
    s0, mu, sigma : float or array of float, one per asset
        Starting price (step 0), annual arithmetic drift and annual volatility.
    corr : array_like, optional
        ``[n_assets, n_assets]`` correlation matrix (symmetric, unit diagonal, positive
        semi-definite). Default: independent assets.
    n_paths, n_steps : int
        Number of paths and of steps after step 0.
    dt : float
        Step length in years.
    seed : int
        Paths come in blocks of ``RNG_PATH_BLOCK`` (1024) paths; path ``p`` (block
        ``p // 1024``, lane ``p % 1024``) draws from its own stream keyed by ``(seed,
        block, lane)``, so it is the same for any ``n_paths``, chunking or thread count.
    assets : sequence of str, optional
        Asset names (default ``asset0``, ``asset1``, ...).
    dtype : numpy dtype
        float64 (default) or float32.
    antithetic : bool
        Paths ``2k + 1`` use the negated shocks of path ``2k``.
    n_threads : int, optional
        Threads (default: every usable core); results do not depend on it.

    Returns
    -------
    PricePaths

    Examples
    --------
    >>> p = gbm([60_000.0, 3_000.0], 0.0, [0.6, 0.8], corr=[[1, 0.8], [0.8, 1]],
    ...         n_paths=4, n_steps=30, dt=1 / 365, assets=["BTC", "ETH"])
    >>> p.prices.shape
    (4, 31, 2)
    """
    s0 = np.atleast_1d(np.asarray(s0, dtype=np.float64))
    if s0.ndim != 1:
        raise ValueError(f"s0 must be a scalar or 1-D (one price per asset), got shape {s0.shape}")
    names = tuple(assets) if assets is not None else tuple(f"asset{i}" for i in range(s0.shape[0]))
    if len(names) != s0.shape[0]:
        raise ValueError(f"assets names {len(names)} assets, s0 has {s0.shape[0]}")
    params = GBMParams(assets=names, s0=s0, mu=mu, sigma=sigma, corr=corr)
    paths = params.paths(n_paths, n_steps, dt, seed=seed, antithetic=antithetic, dtype=dtype, n_threads=n_threads)
    if assets is None:
        paths.assets = None
    return paths


def cholesky_of_correlation(corr, n_assets):
    """Validate a correlation matrix and return a factor ``L`` with ``L @ L.T == corr``.

    Positive semi-definite matrices (e.g. perfectly correlated assets) are accepted: the
    factor then comes from the eigen-decomposition.
    """
    if corr is None:
        return np.eye(n_assets)
    corr = np.asarray(corr, dtype=np.float64)
    if corr.shape != (n_assets, n_assets):
        raise ValueError(f"corr must be [{n_assets}, {n_assets}], got shape {corr.shape}")
    if not np.all(np.isfinite(corr)):
        raise ValueError("corr has non-finite entries")
    if not np.allclose(corr, corr.T, atol=1e-12):
        raise ValueError("corr must be symmetric")
    if not np.allclose(np.diag(corr), 1.0, atol=1e-12):
        raise ValueError(f"corr must have a unit diagonal, got {np.diag(corr)}")
    eigenvalues, vectors = np.linalg.eigh(corr)
    if eigenvalues.min() < -1e-10:
        raise ValueError(
            f"corr must be positive semi-definite (smallest eigenvalue {eigenvalues.min():.3g});"
            " estimate it from joint data or shrink it towards the identity"
        )
    try:
        return np.linalg.cholesky(corr)
    except np.linalg.LinAlgError:
        return vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))
