"""Model statistics against their parameters, within stated Monte Carlo error.

Tolerances are multiples of the estimator's standard error (SE) computed from the sample
itself; 5 SE keeps the false-alarm rate of each seeded check negligible.
"""
import math

import numpy as np
import pytest

from ltvsim.paths import GARCHParams, GBMParams, MertonParams, RegimeParams, gbm
from _paths_helpers import models


def ncdf(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@pytest.mark.parametrize("dt", [1 / 365, 1 / (365 * 24), 1 / (365 * 3)])
def test_gbm_log_return_moments_and_correlation_for_any_dt(dt):
    mu, sigma, rho = np.array([0.2, -0.1]), np.array([0.6, 0.9]), 0.65
    p = gbm([100.0, 10.0], mu, sigma, corr=[[1, rho], [rho, 1]], n_paths=4000, n_steps=50, dt=dt, seed=2)
    r = np.diff(np.log(p.prices), axis=1).reshape(-1, 2)
    n = r.shape[0]
    sd = sigma * math.sqrt(dt)
    assert np.all(np.abs(r.mean(axis=0) - (mu - sigma**2 / 2) * dt) < 5 * sd / math.sqrt(n))
    assert np.all(np.abs(r.std(axis=0) / sd - 1) < 5 / math.sqrt(2 * n))
    assert abs(np.corrcoef(r.T)[0, 1] - rho) < 5 * (1 - rho**2) / math.sqrt(n)
    # annualised volatility is the same whatever the step
    horizon = np.log(p.prices[:, -1] / p.prices[:, 0])
    assert np.all(np.abs(horizon.std(axis=0) / (sigma * math.sqrt(50 * dt)) - 1) < 5 / math.sqrt(2 * 4000))


def test_gbm_expected_price_is_s0_exp_mu_t():
    p = gbm(100.0, 0.3, 0.5, n_paths=20_000, n_steps=10, dt=1 / 12, seed=8)
    final = p.prices[:, -1, 0]
    expected = 100 * math.exp(0.3 * 10 / 12)
    assert abs(final.mean() - expected) < 5 * final.std() / math.sqrt(final.size)


def test_gbm_barrier_hit_probability_matches_bgk_corrected_first_passage():
    """Down-barrier hit frequency vs the continuous first-passage formula with the barrier
    moved by exp(-0.5826 sigma sqrt(dt)) (Broadie, Glasserman and Kou 1997)."""
    s0, mu, sigma, T, n_steps, barrier = 100.0, 0.05, 0.8, 0.5, 126, 65.0
    dt = T / n_steps
    p = gbm(s0, mu, sigma, n_paths=40_000, n_steps=n_steps, dt=dt, seed=13)
    hit = (p.prices[:, 1:, 0].min(axis=1) <= barrier).mean()
    b = barrier * math.exp(-0.5826 * sigma * math.sqrt(dt))
    nu = mu - 0.5 * sigma**2
    x = math.log(b / s0)
    st = sigma * math.sqrt(T)
    expected = ncdf((x - nu * T) / st) + math.exp(2 * nu * x / sigma**2) * ncdf((x + nu * T) / st)
    se = math.sqrt(expected * (1 - expected) / 40_000)
    assert abs(hit - expected) < 4 * se + 2e-3, (hit, expected)  # 2e-3: BGK's O(1/n_steps) residual
    # without the correction the continuous formula is clearly off
    raw = ncdf((math.log(barrier / s0) - nu * T) / st) + (barrier / s0) ** (2 * nu / sigma**2) * ncdf((math.log(barrier / s0) + nu * T) / st)
    assert raw - hit > 4 * se


def test_merton_jump_frequency_and_sizes():
    dt, n_paths, n_steps = 1 / 365, 4000, 365
    m = MertonParams(assets=["A", "B"], s0=[1.0, 1.0], mu=0.0, sigma=0.0, jump_rate=[10.0, 20.0],
                     jump_mean=[-0.03, 0.02], jump_std=[0.02, 0.01], common_rate=5.0,
                     common_mean=[-0.1, -0.2], common_std=[0.03, 0.05])
    r = np.diff(np.log(m.paths(n_paths, n_steps, dt, seed=4).prices), axis=1).reshape(-1, 2)
    drift = -m.compensator() * dt
    jumped = np.abs(r - drift) > 1e-12
    n = r.shape[0]
    for a, own in enumerate([10.0, 20.0]):
        p = 1 - math.exp(-(own + 5.0) * dt)
        assert abs(jumped[:, a].mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
    p_both = 1 - math.exp(-5.0 * dt)  # both jump on a common jump (or two own ones, ~0.2% of that)
    p_both_total = p_both + (1 - p_both) * (1 - math.exp(-10 * dt)) * (1 - math.exp(-20 * dt))
    assert abs(np.all(jumped, axis=1).mean() - p_both_total) < 5 * math.sqrt(p_both_total / n)
    # mean log jump of B on days only B jumps is dominated by its own jumps
    expected_total = (10 * -0.03 + 5 * -0.1) * dt  # mean jump log-return per step of A
    mean_a = (r[:, 0] - drift[0]).mean()
    sd_a = (r[:, 0] - drift[0]).std()
    assert abs(mean_a - expected_total) < 5 * sd_a / math.sqrt(n)


def test_merton_mean_price_is_compensated():
    m = MertonParams(assets=["A"], s0=[100.0], mu=0.1, sigma=0.4, jump_rate=8, jump_mean=-0.05, jump_std=0.05,
                     common_rate=2, common_mean=-0.1, common_std=0.05)
    final = m.paths(20_000, 30, 1 / 365, seed=1).prices[:, -1, 0]
    assert abs(final.mean() - 100 * math.exp(0.1 * 30 / 365)) < 5 * final.std() / math.sqrt(final.size)


def test_garch_squared_return_autocorrelation_matches_theory():
    """Normal-innovation GARCH(1,1): rho_1 = a(1 - ab - b^2)/(1 - 2ab - b^2), rho_k = rho_1 (a+b)^(k-1)."""
    a, b = 0.1, 0.8
    g = GARCHParams(assets=["A"], s0=[1.0], omega=1e-4 * (1 - a - b), alpha=a, beta=b, nu=float("inf"))
    r = np.diff(np.log(g.paths(2000, 600, 1 / 365, seed=6).prices[:, :, 0]), axis=1)[:, 100:]
    x = r - r.mean()
    s = x * x
    s = s - s.mean()
    var = (s * s).mean()
    rho1 = a * (1 - a * b - b * b) / (1 - 2 * a * b - b * b)
    for k, expected in [(1, rho1), (2, rho1 * (a + b)), (5, rho1 * (a + b) ** 4)]:
        per_path = (s[:, k:] * s[:, :-k]).mean(axis=1) / var
        se = per_path.std() / math.sqrt(per_path.size)
        assert abs(per_path.mean() - expected) < 5 * se + 0.01, (k, per_path.mean(), expected)
    # unconditional variance per step is omega / (1 - a - b)
    assert abs(x.var() / 1e-4 - 1) < 0.05


@pytest.mark.parametrize("dt", [1 / 365, 1 / (365 * 24)])
def test_garch_t_long_run_volatility_and_tails_for_any_dt(dt):
    g = GARCHParams(assets=["A"], s0=[1.0], omega=2e-5, alpha=0.08, beta=0.9, nu=6.0)
    n_steps = int(round(60 / 365 / dt))
    p = g.paths(3000, n_steps, dt, seed=3)
    horizon = np.log(p.prices[:, -1, 0])
    T = n_steps * dt
    # starts at the long-run variance, whose expectation it keeps: var(log S_T) ~ hbar T
    assert abs(horizon.var() / (g.long_run_vol()[0] ** 2 * T) - 1) < 0.1
    r = np.diff(np.log(p.prices[:, :, 0]), axis=1).ravel()
    z = (r - r.mean()) / r.std()
    assert (z**4).mean() > 3.5  # fat tails (t innovations and clustering)


def test_regime_switching_spends_the_stationary_share_in_stress():
    reg = models()["regime"]
    states = reg.regimes(3000, 365, 1 / 365, seed=2)
    p = reg.stationary_stress_probability()
    assert abs(states.mean() - p) < 0.01  # ~8 SE given the chain's autocorrelation
    # volatility conditional on regime
    r = np.diff(np.log(reg.paths(3000, 365, 1 / 365, seed=2).prices[:, :, 0]), axis=1)
    for s in (0, 1):
        vol = r[states == s].std() * math.sqrt(365)
        assert abs(vol / reg.sigma[s, 0] - 1) < 0.02


def test_regime_rates_scale_with_dt():
    reg = models()["regime"]
    hourly = reg.regimes(500, 365 * 24, 1 / (365 * 24), seed=1)
    daily = reg.regimes(500, 365, 1 / 365, seed=1)
    assert abs(hourly.mean() - daily.mean()) < 0.03
    switches = np.abs(np.diff(hourly.astype(int), axis=1)).sum(axis=1).mean()
    p = reg.stationary_stress_probability()
    expected = (1 - p) * 3 + p * 15  # switches per year in the long run
    assert abs(switches / expected - 1) < 0.1


def test_bootstrap_steps_are_history_returns_in_blocks():
    boot = models()["bootstrap"]
    p = boot.paths(200, 30, 1 / 365, seed=1)
    r = np.diff(np.log(p.prices), axis=1)
    rows = {tuple(np.round(x, 12)) for x in boot.returns}
    assert all(tuple(np.round(x, 12)) in rows for x in r.reshape(-1, 2))
    # within a block of 7 days the history's days follow each other
    index = {tuple(np.round(x, 12)): i for i, x in enumerate(boot.returns)}
    pos = np.array([[index[tuple(np.round(x, 12))] for x in path] for path in r])
    assert np.all((pos[:, 1:7] - pos[:, :6]) % boot.returns.shape[0] == 1)
    with pytest.raises(ValueError, match="dt must be"):
        boot.paths(2, 3, 1 / 24)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: GBMParams(assets=["BTC"], s0=[1.0], sigma=[-0.2]), r"sigma\[BTC\] = -0.2: must be finite and >= 0"),
        (lambda: GBMParams(assets=["BTC", "ETH"], s0=[1.0, 1.0], sigma=0.5, corr=[[1, 1.2], [1.2, 1]]), "positive semi-definite"),
        (lambda: GBMParams(assets=["BTC", "ETH"], s0=[1.0, 1.0], sigma=0.5, corr=[[1, 0.2], [0.3, 1]]), "symmetric"),
        (lambda: GBMParams(assets=["BTC", "ETH"], s0=[1.0, 1.0], sigma=0.5, corr=[[2, 0], [0, 1]]), "unit diagonal"),
        (lambda: GBMParams(assets=["BTC"], s0=[0.0], sigma=0.5), r"s0\[BTC\] = 0.0"),
        (lambda: MertonParams(assets=["BTC"], s0=[1.0], sigma=0.5, jump_rate=-1), r"jump_rate\[BTC\]"),
        (lambda: GARCHParams(assets=["ETH"], s0=[1.0], omega=1e-5, alpha=0.2, beta=0.85), r"alpha \+ beta \[ETH\]"),
        (lambda: GARCHParams(assets=["ETH"], s0=[1.0], omega=1e-5, alpha=0.1, beta=0.8, nu=2.0), r"nu = 2.0: must be > 2"),
        (lambda: RegimeParams(assets=["A"], s0=[1.0], mu=[[0], [0]], sigma=[[0.1], [-1]], rate_to_stress=1, rate_to_calm=1), r"sigma\[stress, A\]"),
        (lambda: GBMParams(assets=["BTC"], s0=[1.0], sigma=0.5, volatility=1), "unknown parameter"),
    ],
)
def test_bad_parameters_raise_clear_errors(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_bad_run_arguments():
    g = models()["gbm"]
    with pytest.raises(KeyError, match="unknown asset"):
        g.paths(2, 2, 1 / 365, s0={"DOGE": 1.0})
    with pytest.raises(ValueError, match="dt"):
        g.paths(2, 2, -1.0)
    with pytest.raises(ValueError, match="dtype"):
        g.paths(2, 2, 1 / 365, dtype=np.int32)
    with pytest.raises(ValueError, match="seed"):
        g.paths(2, 2, 1 / 365, seed=2**64)
    p = g.paths(2, 2, 1 / 365, s0={"ETH": 2000.0}, seed=2**64 - 1)
    assert p.prices[0, 0, 1] == 2000.0 and p.prices[0, 0, 0] == 60_000.0
