"""Correlated geometric Brownian motion."""
import numpy as np

from .. import _config
from .._validation import check_int, check_positive_float
from ._price_paths import PricePaths


def gbm(s0, mu, sigma, *, corr=None, n_paths, n_steps, dt, seed=0, assets=None, dtype=np.float64):
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
        Paths come in blocks of ``RNG_PATH_BLOCK`` (1024) paths; block ``b`` draws from
        its own stream keyed by ``(seed, b)``, so path ``p`` is the same for any
        ``n_paths`` that contains it.
    assets : sequence of str, optional
        Asset names.
    dtype : numpy dtype
        float64 (default) or float32.

    Returns
    -------
    PricePaths
    """
    s0 = np.atleast_1d(np.asarray(s0, dtype=np.float64))
    n_assets = s0.shape[0]
    mu = np.broadcast_to(np.asarray(mu, dtype=np.float64), (n_assets,))
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (n_assets,))
    if s0.ndim != 1 or not np.all(np.isfinite(s0) & (s0 > 0)):
        raise ValueError(f"s0 must be finite and > 0 per asset, got {s0}")
    if not np.all(np.isfinite(mu)):
        raise ValueError(f"mu must be finite, got {mu}")
    if not np.all(np.isfinite(sigma) & (sigma >= 0)):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
    n_paths = check_int("n_paths", n_paths, minimum=1)
    n_steps = check_int("n_steps", n_steps, minimum=0)
    seed = check_int("seed", seed, minimum=0)
    dt = check_positive_float("dt", dt)
    chol = cholesky_of_correlation(corr, n_assets)

    drift = (mu - 0.5 * sigma**2) * dt
    scale = sigma * np.sqrt(dt)
    out = np.empty((n_paths, n_steps + 1, n_assets), dtype=dtype)
    block = _config.RNG_PATH_BLOCK
    for b in range(-(-n_paths // block)):
        lo, hi = b * block, min((b + 1) * block, n_paths)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, b])))
        z = rng.standard_normal((block, n_steps, n_assets))[: hi - lo]
        log_step = drift + (z @ chol.T) * scale
        log_path = np.concatenate([np.zeros((hi - lo, 1, n_assets)), np.cumsum(log_step, axis=1)], axis=1)
        out[lo:hi] = s0 * np.exp(log_path)
    return PricePaths(out, dt=dt, assets=assets)


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
        raise ValueError(f"corr must be positive semi-definite (smallest eigenvalue {eigenvalues.min():.3g})")
    try:
        return np.linalg.cholesky(corr)
    except np.linalg.LinAlgError:
        return vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))
