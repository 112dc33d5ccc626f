"""Risk measures with error bars: values against numpy.quantile and a direct tail mean,
standard errors against the spread of independent replications, probabilities,
liquidations at risk."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ltvsim
from ltvsim._estimators import expected_shortfall, value_at_risk
from ltvsim.risk import (
    CapitalStructure,
    es_measure,
    liquidations_at_risk,
    mean_measure,
    path_quantity,
    probability,
    reference_prices,
    risk_measures,
    tranche_table,
    var_measure,
    waterfall,
)


def tail_mean(x, q):
    """ES by definition (no ties): the worst n (1 - q) values, the boundary one weighted."""
    x = np.sort(x)
    n = x.size
    k = math.ceil(n * q)
    return (x[k:].sum() + (k - n * q) * x[k - 1]) / (n * (1.0 - q))


@given(n=st.integers(2, 500), seed=st.integers(0, 2**32 - 1),
       q=st.sampled_from([0.5, 0.9, 0.95, 0.975, 0.99, 0.995]))
def test_var_es_mean_values(n, seed, q):
    x = np.random.default_rng(seed).lognormal(0.0, 1.0, n)
    var, es, mu = var_measure(x, q), es_measure(x, q), mean_measure(x)
    assert var.value == np.quantile(x, q, method="inverted_cdf")
    assert es.value == pytest.approx(tail_mean(x, q), rel=1e-12)
    assert mu.value == pytest.approx(x.mean(), rel=1e-12)
    assert mu.stderr == pytest.approx(x.std(ddof=1) / math.sqrt(n), rel=1e-12)
    # Same figures as the result's own estimators, intervals around them.
    assert var.stderr == value_at_risk(x, q).stderr
    assert es.stderr == expected_shortfall(x, q).stderr
    assert var.low <= var.value <= var.high
    assert es.low <= es.value <= es.high
    # At 95% the VaR interval is exactly the one its standard error is derived from.
    assert (var.high - var.low) / (2 * 1.959963984540054) == pytest.approx(var.stderr, rel=1e-12, abs=1e-300)


def test_risk_measures_keys_and_levels():
    x = np.arange(1000.0)
    out = risk_measures(x, (0.95, 0.995))
    assert list(out) == ["mean", "var_95", "es_95", "var_99.5", "es_99.5"]
    assert out["var_95"].value == 949.0
    wider = var_measure(x, 0.95, confidence=0.99)
    assert wider.low <= out["var_95"].low and wider.high >= out["var_95"].high
    with pytest.raises(ValueError, match="confidence"):
        var_measure(x, 0.95, confidence=1.0)
    with pytest.raises(ValueError, match="level"):
        risk_measures(x, 1.5)


def test_standard_errors_match_the_spread_of_replications():
    """400 independent samples of 4,000 paths each (seeded): the reported standard error,
    averaged over replications, matches the standard deviation of the estimates within
    15% for the mean, VaR 95% and ES 95% and the probability of an event; 95% intervals
    cover the true value in 90-99% of replications. (With 400 replications the sample
    standard deviation itself is within about 7% of the truth at two sigma.)"""
    rng = np.random.default_rng(20261121)
    reps, n, q = 400, 4000, 0.95
    true_var = math.exp(1.6448536269514722)  # lognormal(0, 1) quantile
    est = {"mean": [], "var": [], "es": [], "p": []}
    se = {"mean": [], "var": [], "es": [], "p": []}
    covered = {"var": 0, "p": 0}
    for _ in range(reps):
        x = rng.lognormal(0.0, 1.0, n)
        for key, measure in (("mean", mean_measure(x)), ("var", var_measure(x, q)), ("es", es_measure(x, q)),
                             ("p", probability(x > 3.0))):
            est[key].append(measure.value)
            se[key].append(measure.stderr)
        v, p = var_measure(x, q), probability(x > 3.0)
        covered["var"] += v.low <= true_var <= v.high
        covered["p"] += p.low <= 0.13688 <= p.high  # P(lognormal(0,1) > 3) = 1 - Phi(ln 3)
    for key in est:
        spread = np.std(est[key], ddof=1)
        assert np.mean(se[key]) == pytest.approx(spread, rel=0.15), key
    for key, hits in covered.items():
        assert 0.90 <= hits / reps <= 0.99, key


def test_probability_binomial_and_wilson():
    p = probability(np.arange(100) < 30)
    assert p.value == 0.3
    assert p.stderr == pytest.approx(math.sqrt(0.3 * 0.7 / 100))
    assert p.low < 0.3 < p.high
    none = probability(np.zeros(50, dtype=bool))
    assert none.value == 0.0 and none.stderr == 0.0 and none.low == 0.0 and 0.0 < none.high < 0.1
    every = probability(np.ones(50, dtype=bool))
    assert every.high == 1.0 and every.low > 0.9


@pytest.fixture(scope="module")
def run():
    s0 = {"BTC": 80_000.0, "ETH": 3_000.0}
    book = ltvsim.LoanBook.synthetic(2000, seed=5, prices=s0, initial_ltv=(0.55, 0.74))
    model = ltvsim.paths.GBMParams(assets=("BTC", "ETH"), s0=(80_000.0, 3_000.0), mu=(0.0, 0.0),
                                   sigma=(1.2, 1.4), corr=[[1.0, 0.8], [0.8, 1.0]])
    result = ltvsim.run_batch(book, model, n_paths=200, n_steps=10, dt=1 / 365, seed=5, record_steps=True)
    return book, result


def test_liquidations_at_risk(run):
    _, result = run
    prices = reference_prices(result)
    np.testing.assert_array_equal(prices, [80_000.0, 3_000.0])
    lar = liquidations_at_risk(result, 0.95)
    sold = result.path_collateral_sold
    for k, asset in enumerate(result.assets):
        assert lar[asset]["units"].value == np.quantile(sold[:, k], 0.95, method="inverted_cdf")
        assert lar[asset]["notional"].value == pytest.approx(
            np.quantile(sold[:, k] * prices[k], 0.95, method="inverted_cdf"), rel=1e-12)
    assert lar["total"]["notional"].value == pytest.approx(
        np.quantile(sold @ prices, 0.95, method="inverted_cdf"), rel=1e-12)
    assert lar["total"]["proceeds"].value == np.quantile(result.path_proceeds, 0.95, method="inverted_cdf")
    # Given prices override the run's; a total is not the sum of per-asset quantiles.
    mine = liquidations_at_risk(result, 0.95, prices={"BTC": 1.0, "ETH": 1.0})
    assert mine["BTC"]["notional"].value == lar["BTC"]["units"].value


def test_path_quantities(run):
    _, result = run
    np.testing.assert_array_equal(path_quantity(result, "loss"), result.path_loss)
    np.testing.assert_array_equal(path_quantity(result, "margin_calls"), result.path_margin_calls)
    np.testing.assert_array_equal(path_quantity(result, "collateral_sold_ETH"), result.path_collateral_sold[:, 1])
    np.testing.assert_allclose(path_quantity(result, "collateral_sold_notional", [2.0, 3.0]),
                               result.path_collateral_sold @ [2.0, 3.0])
    with pytest.raises(ValueError, match="needs prices"):
        path_quantity(result, "collateral_sold_BTC_notional")
    with pytest.raises(ValueError, match="unknown"):
        path_quantity(result, "nonsense")
    mc = risk_measures(path_quantity(result, "margin_calls"), 0.99)
    assert mc["var_99"].value == np.quantile(result.path_margin_calls, 0.99, method="inverted_cdf")


def test_tranche_table():
    s = CapitalStructure(reserve=1.0, fee_share=0.0, tranches=[("first loss", 4.0)], basis="amount")
    loss = np.array([[0.0], [2.0], [10.0], [0.5]])
    w = waterfall(loss, None, s)
    rows = tranche_table(w, 0.5)
    assert [r["name"] for r in rows] == ["reserve", "first loss", "senior"]
    assert [r["attach_probability"].value for r in rows] == [0.75, 0.5, 0.25]
    assert rows[1]["mean"].value == pytest.approx((1 + 4) / 4)
    assert rows[2]["capacity"] == math.inf
    assert rows[0]["mean_first_step"] == 0.0 and math.isnan(rows[2]["mean_first_step"]) is False
