"""Fitting the models to a daily price history (:class:`~ltvsim.paths.history.History`).

Every fit uses the log returns between consecutive calendar days (returns across gaps are
left out; see ``History.report``), treats one day as ``dt = 1/365`` years (crypto trades
every day) and returns a parameter object whose ``s0`` is the last price of the history.

* GBM: exact maximum likelihood (sample mean, variance with ``1/n``, sample correlation).
* GARCH(1,1)-t: maximum likelihood per asset with variance targeting (the mean log
  return and the long-run variance are fixed at their sample values, ``alpha``, ``beta``
  and ``nu`` are maximised by Nelder-Mead), correlation of the standardised
  residuals, and one shared ``nu`` maximising the multivariate-t likelihood of those
  residuals.
* Merton: maximum likelihood per asset of the Poisson mixture of normals (at most
  ``MERTON_MAX_JUMPS`` jumps a day). Splitting jumps into common and own ones is a second,
  approximate stage: days on which every asset's posterior jump probability exceeds 1/2
  count as common jumps (their rate, mean and spread become the common jump's), the
  remaining rate stays with each asset; the diffusion correlation comes from days
  without a jump.
* Regime switching: maximum likelihood of a two-state Gaussian hidden Markov model by EM
  (Baum-Welch); the state with the larger average variance is "stress".
* Bootstrap: no fitting; the history's joint log returns are the model.

No SciPy: the optimiser is the Nelder-Mead below and the recursions are compiled.
"""
import math

import numpy as np
from numba import njit

from .bootstrap import BootstrapParams
from .garch import GARCHParams
from .gbm import GBMParams
from .merton import MertonParams
from .regime import RegimeParams

DAY = 1 / 365
MERTON_MAX_JUMPS = 6
_jit = dict(cache=True, nogil=True, error_model="numpy", fastmath=False)


def _returns(history, min_days=30):
    dates, r = history.log_returns()
    if r.shape[0] < min_days:
        raise ValueError(f"need at least {min_days} daily returns to fit, the history has {r.shape[0]}")
    return dates, r


def _info(history, dates, **more):
    info = {"fitted_on": f"{dates[0] - np.timedelta64(1, 'D')} .. {dates[-1]}", "n_returns": int(dates.size),
            "returns_dropped_for_gaps": len(history.report.dropped_returns)}
    info.update(more)
    return info


def nelder_mead(f, x0, *, step=0.5, max_evals=4000, xtol=1e-7, ftol=1e-9):
    """Minimise ``f`` from ``x0`` (standard Nelder-Mead coefficients, restarts once)."""
    x0 = np.asarray(x0, dtype=np.float64)
    best_x, best_f, evals = x0, f(x0), 1
    for _ in range(2):  # a restart from the optimum guards against a collapsed simplex
        n = x0.size
        simplex = np.vstack([best_x] + [best_x + step * np.eye(n)[i] for i in range(n)])
        values = np.array([f(x) for x in simplex])
        evals += n + 1
        while evals < max_evals:
            order = np.argsort(values)
            simplex, values = simplex[order], values[order]
            if np.max(np.abs(simplex[1:] - simplex[0])) < xtol and values[-1] - values[0] < ftol:
                break
            centroid = simplex[:-1].mean(axis=0)
            xr = centroid + (centroid - simplex[-1])
            fr = f(xr)
            evals += 1
            if fr < values[0]:
                xe = centroid + 2.0 * (centroid - simplex[-1])
                fe = f(xe)
                evals += 1
                simplex[-1], values[-1] = (xe, fe) if fe < fr else (xr, fr)
            elif fr < values[-2]:
                simplex[-1], values[-1] = xr, fr
            else:
                xc = centroid + 0.5 * (simplex[-1] - centroid) if fr >= values[-1] else centroid + 0.5 * (xr - centroid)
                fc = f(xc)
                evals += 1
                if fc < min(fr, values[-1]):
                    simplex[-1], values[-1] = xc, fc
                else:
                    simplex[1:] = simplex[0] + 0.5 * (simplex[1:] - simplex[0])
                    values[1:] = [f(x) for x in simplex[1:]]
                    evals += n
        i = int(np.argmin(values))
        best_x, best_f = simplex[i], values[i]
        step = 0.1
    return best_x, best_f


# ---- GBM -------------------------------------------------------------------------------
def fit_gbm(history, dt=DAY):
    """Maximum-likelihood GBM: ``sigma**2 = var(r) / dt``, ``mu = mean(r) / dt + sigma**2 / 2``."""
    dates, r = _returns(history)
    var = r.var(axis=0)
    sigma = np.sqrt(var / dt)
    mu = r.mean(axis=0) / dt + 0.5 * sigma**2
    corr = np.corrcoef(r, rowvar=False).reshape(r.shape[1], r.shape[1]) if r.shape[1] > 1 else np.eye(1)
    return GBMParams(assets=history.assets, s0=history.prices[-1], mu=mu, sigma=sigma, corr=_clean_corr(corr),
                     info=_info(history, dates, loglik=float(_normal_loglik(r - r.mean(axis=0), var).sum())))


def _normal_loglik(e, var):
    return -0.5 * (np.log(2 * np.pi * var) + e * e / var)


def _clean_corr(c):
    c = 0.5 * (c + c.T)
    np.fill_diagonal(c, 1.0)
    w, v = np.linalg.eigh(c)
    if w.min() < 0:
        c = (v * np.clip(w, 1e-10, None)) @ v.T
        d = np.sqrt(np.diag(c))
        c = c / np.outer(d, d)
        np.fill_diagonal(c, 1.0)
    return c


# ---- GARCH(1,1)-t ----------------------------------------------------------------------
@njit(**_jit)
def garch_variances(e, omega, alpha, beta, v0, out):
    """Conditional variances ``out[t]`` (OUT) of the demeaned returns ``e``."""
    v = v0
    for t in range(e.shape[0]):
        out[t] = v
        v = omega + alpha * e[t] * e[t] + beta * v


@njit(**_jit)
def garch_t_loglik(e, omega, alpha, beta, nu, v0):
    """Log-likelihood of GARCH(1,1) with standardised Student-t (``nu > 2``) shocks."""
    c = math.lgamma(0.5 * (nu + 1.0)) - math.lgamma(0.5 * nu) - 0.5 * math.log(math.pi * (nu - 2.0))
    v = v0
    total = 0.0
    for t in range(e.shape[0]):
        total += c - 0.5 * math.log(v) - 0.5 * (nu + 1.0) * math.log1p(e[t] * e[t] / (v * (nu - 2.0)))
        v = omega + alpha * e[t] * e[t] + beta * v
    return total


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0


def _garch_unpack(theta, target):
    persistence = 0.9995 * _sigmoid(theta[0])
    share = _sigmoid(theta[1])
    alpha, beta = persistence * share, persistence * (1.0 - share)
    return target * (1.0 - alpha - beta), alpha, beta, 2.0 + math.exp(theta[2])


def fit_garch_univariate(r):
    """MLE ``(mean, omega, alpha, beta, nu, loglik, variances, residuals)`` of one series.

    Variance targeting (Engle and Mezrich 1996): ``omega = var(r) (1 - alpha - beta)``,
    so the long-run volatility is the sample's and ``alpha``, ``beta``, ``nu`` are fitted
    by maximum likelihood. Without it crypto returns push ``alpha + beta`` to 1 and the
    long-run variance to absurd values.
    """
    m = float(r.mean())
    e = np.ascontiguousarray(r - m)
    v0 = float(e.var())

    def nll(theta):
        omega, alpha, beta, nu = _garch_unpack(theta, v0)
        if not nu < 500:
            return 1e300
        value = -garch_t_loglik(e, omega, alpha, beta, nu, v0)
        return value if np.isfinite(value) else 1e300

    x0 = np.array([math.log(0.95 / 0.05), math.log(0.1 / 0.85), math.log(3.0)])
    theta, f = nelder_mead(nll, x0)
    omega, alpha, beta, nu = _garch_unpack(theta, v0)
    variances = np.empty_like(e)
    garch_variances(e, omega, alpha, beta, v0, variances)
    return m, omega, alpha, beta, nu, -f, variances, e


def _mvt_loglik(z, corr_inv, logdet, nu):
    """Multivariate standardised-t log-likelihood of unit-variance residuals ``z``."""
    k = z.shape[1]
    q = np.einsum("ti,ij,tj->t", z, corr_inv, z)
    c = math.lgamma(0.5 * (nu + k)) - math.lgamma(0.5 * nu) - 0.5 * k * math.log(math.pi * (nu - 2.0)) - 0.5 * logdet
    return float(np.sum(c - 0.5 * (nu + k) * np.log1p(q / (nu - 2.0))))


def fit_garch(history, dt=DAY):
    """Fit GARCH(1,1)-t per asset, then the shared ``nu`` and the residual correlation."""
    dates, r = _returns(history, min_days=250)
    k = r.shape[1]
    fits = [fit_garch_univariate(r[:, a]) for a in range(k)]
    z = np.column_stack([e / np.sqrt(v) for *_, v, e in fits])
    corr = _clean_corr(np.corrcoef(z, rowvar=False).reshape(k, k)) if k > 1 else np.eye(1)
    if k == 1:
        nu = fits[0][4]
    else:
        inv, logdet = np.linalg.inv(corr), np.linalg.slogdet(corr)[1]
        best = nelder_mead(lambda x: -_mvt_loglik(z, inv, logdet, 2.0 + math.exp(x[0])), [math.log(3.0)])[0]
        nu = 2.0 + math.exp(best[0])
    omega = np.array([f[1] for f in fits])
    alpha = np.array([f[2] for f in fits])
    beta = np.array([f[3] for f in fits])
    # today's conditional variance: one more step of the recursion after the last return
    v_next = np.array([f[1] + f[2] * f[7][-1] ** 2 + f[3] * f[6][-1] for f in fits])
    mu = r.mean(axis=0) / dt + 0.5 * r.var(axis=0) / dt
    info = _info(history, dates, loglik=float(sum(f[5] for f in fits)),
                 nu_per_asset=[round(f[4], 4) for f in fits])
    return GARCHParams(assets=history.assets, s0=history.prices[-1], mu=mu, omega=omega, alpha=alpha, beta=beta,
                       nu=nu, dt_fit=dt, sigma0=np.sqrt(v_next / dt), corr=corr, info=info)


# ---- Merton ----------------------------------------------------------------------------
def _merton_components(r, drift, sigma2, lam, m, s2, dt):
    """``[T, K+1]`` log of Poisson weight x normal density for k = 0..K jumps."""
    k = np.arange(MERTON_MAX_JUMPS + 1)
    logw = -lam * dt + k * math.log(max(lam * dt, 1e-300)) - np.array([math.lgamma(i + 1) for i in k])
    var = sigma2 * dt + k * s2
    mean = drift * dt + k * m
    d = r[:, None] - mean
    return logw - 0.5 * np.log(2 * np.pi * var) - 0.5 * d * d / var


def _logsumexp(x):
    top = x.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=1, keepdims=True)))[:, 0]


def fit_merton_univariate(r, dt=DAY):
    """MLE ``(mu, sigma, rate, jump_mean, jump_std, loglik, jump_probability)``."""
    mad = 1.4826 * np.median(np.abs(r - np.median(r)))

    def unpack(th):
        return th[0], math.exp(2 * th[1]), math.exp(th[2]), th[3], math.exp(2 * th[4])

    def nll(th):
        drift, sigma2, lam, m, s2 = unpack(th)
        if lam > 365 * 5 or s2 < 1e-12:
            return 1e300
        value = -_logsumexp(_merton_components(r, drift, sigma2, lam, m, s2, dt)).sum()
        return value if np.isfinite(value) else 1e300

    x0 = np.array([float(np.median(r)) / dt, math.log(mad / math.sqrt(dt)), math.log(10.0), 0.0, math.log(3 * mad)])
    th, f = nelder_mead(nll, x0, max_evals=6000)
    drift, sigma2, lam, m, s2 = unpack(th)
    comp = _merton_components(r, drift, sigma2, lam, m, s2, dt)
    p_jump = 1.0 - np.exp(comp[:, 0] - _logsumexp(comp))
    kappa = math.expm1(m + 0.5 * s2)
    mu = drift + 0.5 * sigma2 + lam * kappa
    return mu, math.sqrt(sigma2), lam, m, math.sqrt(s2), -f, p_jump


def fit_merton(history, dt=DAY):
    """Per-asset Merton MLE, then the approximate common/own split (see module docstring)."""
    dates, r = _returns(history, min_days=250)
    k = r.shape[1]
    fits = [fit_merton_univariate(r[:, a], dt) for a in range(k)]
    mu = np.array([f[0] for f in fits])
    sigma = np.array([f[1] for f in fits])
    rate = np.array([f[2] for f in fits])
    jm = np.array([f[3] for f in fits])
    js = np.array([f[4] for f in fits])
    p_jump = np.column_stack([f[6] for f in fits])
    years = r.shape[0] * dt
    common_rate, cm, cs = 0.0, np.zeros(k), np.zeros(k)
    if k > 1:
        both = np.all(p_jump > 0.5, axis=1)
        if both.sum() >= 2:
            common_rate = float(both.sum() / years)
            jumps = r[both] - (mu - 0.5 * sigma**2) * dt
            cm, cs = jumps.mean(axis=0), jumps.std(axis=0)
            rate = np.maximum(rate - common_rate, 0.0)
        quiet = np.all(p_jump < 0.5, axis=1)
        corr = _clean_corr(np.corrcoef(r[quiet], rowvar=False))
    else:
        corr = np.eye(1)
    # re-compensate the drift for the common jumps moved out of the own rates
    params = MertonParams(assets=history.assets, s0=history.prices[-1], mu=mu, sigma=sigma, corr=corr,
                          jump_rate=rate, jump_mean=jm, jump_std=js, common_rate=common_rate,
                          common_mean=cm, common_std=cs,
                          info=_info(history, dates, loglik=float(sum(f[5] for f in fits)),
                                     jump_days_per_asset=[int((p_jump[:, a] > 0.5).sum()) for a in range(k)]))
    return params


# ---- regime switching ------------------------------------------------------------------
@njit(**_jit)
def _forward_backward(logb, p, pi0, gamma, xi):
    """Scaled forward-backward for a 2-state HMM; fills ``gamma`` [T, 2] and ``xi`` [2, 2]
    (OUT, summed over time) and returns the log-likelihood."""
    n = logb.shape[0]
    alpha = np.empty((n, 2))
    c = np.empty(n)
    loglik = 0.0
    for t in range(n):
        top = max(logb[t, 0], logb[t, 1])
        b0 = math.exp(logb[t, 0] - top)
        b1 = math.exp(logb[t, 1] - top)
        if t == 0:
            a0, a1 = pi0[0] * b0, pi0[1] * b1
        else:
            a0 = (alpha[t - 1, 0] * p[0, 0] + alpha[t - 1, 1] * p[1, 0]) * b0
            a1 = (alpha[t - 1, 0] * p[0, 1] + alpha[t - 1, 1] * p[1, 1]) * b1
        s = a0 + a1
        c[t] = s
        alpha[t, 0], alpha[t, 1] = a0 / s, a1 / s
        loglik += math.log(s) + top
    beta0, beta1 = 1.0, 1.0
    xi[:, :] = 0.0
    gamma[n - 1, 0], gamma[n - 1, 1] = alpha[n - 1, 0], alpha[n - 1, 1]
    for t in range(n - 2, -1, -1):
        top = max(logb[t + 1, 0], logb[t + 1, 1])
        b0 = math.exp(logb[t + 1, 0] - top) * beta0
        b1 = math.exp(logb[t + 1, 1] - top) * beta1
        for i in range(2):
            xi[i, 0] += alpha[t, i] * p[i, 0] * b0 / c[t + 1]
            xi[i, 1] += alpha[t, i] * p[i, 1] * b1 / c[t + 1]
        nb0 = (p[0, 0] * b0 + p[0, 1] * b1) / c[t + 1]
        nb1 = (p[1, 0] * b0 + p[1, 1] * b1) / c[t + 1]
        beta0, beta1 = nb0, nb1
        gamma[t, 0], gamma[t, 1] = alpha[t, 0] * beta0, alpha[t, 1] * beta1
    return loglik


def _mvn_logpdf(r, mean, cov):
    k = r.shape[1]
    chol = np.linalg.cholesky(cov)
    d = np.linalg.solve(chol, (r - mean).T)
    return -0.5 * (k * math.log(2 * math.pi) + 2 * np.log(np.diag(chol)).sum() + (d * d).sum(axis=0))


def fit_regime(history, dt=DAY, *, max_iter=500, tol=1e-8):
    """Two-state Gaussian HMM by EM; returns :class:`RegimeParams` (rates per year)."""
    dates, r = _returns(history, min_days=250)
    n, k = r.shape
    total_var = np.abs(r - r.mean(axis=0)).sum(axis=1)
    stress0 = total_var > np.quantile(total_var, 0.8)
    means = np.stack([r[~stress0].mean(axis=0), r[stress0].mean(axis=0)])
    covs = np.stack([np.cov(r[~stress0], rowvar=False).reshape(k, k), np.cov(r[stress0], rowvar=False).reshape(k, k)])
    p = np.array([[0.98, 0.02], [0.1, 0.9]])
    pi0 = np.array([0.5, 0.5])
    gamma = np.empty((n, 2))
    xi = np.empty((2, 2))
    previous = -np.inf
    floor = 1e-8 * np.eye(k) * r.var()
    for _ in range(max_iter):
        logb = np.column_stack([_mvn_logpdf(r, means[s], covs[s]) for s in range(2)])
        loglik = _forward_backward(np.ascontiguousarray(logb), p, pi0, gamma, xi)
        for s in range(2):
            w = gamma[:, s]
            means[s] = (w[:, None] * r).sum(axis=0) / w.sum()
            d = r - means[s]
            covs[s] = (w[:, None, None] * d[:, :, None] * d[:, None, :]).sum(axis=0) / w.sum() + floor
        p = xi / xi.sum(axis=1, keepdims=True)
        pi0 = gamma[0]
        if loglik - previous < tol * abs(loglik):
            break
        previous = loglik
    order = np.argsort([np.trace(c) for c in covs])  # calm first
    means, covs, p = means[order], covs[order], p[np.ix_(order, order)]
    sd = np.sqrt(np.stack([np.diag(c) for c in covs]))
    corr = np.stack([_clean_corr(c / np.outer(s, s)) for c, s in zip(covs, sd)])
    sigma = sd / math.sqrt(dt)
    mu = means / dt + 0.5 * sigma**2
    to_stress, to_calm = -math.log1p(-min(p[0, 1], 1 - 1e-12)) / dt, -math.log1p(-min(p[1, 0], 1 - 1e-12)) / dt
    return RegimeParams(assets=history.assets, s0=history.prices[-1], mu=mu, sigma=sigma, corr=corr,
                        rate_to_stress=to_stress, rate_to_calm=to_calm, start="stationary",
                        info=_info(history, dates, loglik=float(loglik),
                                   stress_share=round(float(gamma[:, order[1]].mean()), 4)))


# ---- bootstrap -------------------------------------------------------------------------
def bootstrap_from_history(history, *, block_length=10, stationary=False, mu=None, dt=DAY):
    """A :class:`BootstrapParams` resampling the history's joint daily log returns."""
    dates, r = _returns(history, min_days=2)
    return BootstrapParams(assets=history.assets, s0=history.prices[-1], returns=r,
                           dates=[str(d) for d in dates], block_length=block_length, stationary=stationary,
                           mu=mu, dt_data=dt, info=_info(history, dates))
