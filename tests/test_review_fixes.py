"""Regressions for bugs found in review: LTV buckets, inline model parameters that share
a name with a calibration key, stale per-step files on re-save, infinite config ranges."""
import numpy as np
import pytest

import ltvsim
from ltvsim.config import ConfigError, build_model, load_config
from ltvsim.paths import BootstrapParams, RegimeParams
from ltvsim.paths.params import to_toml
from ltvsim.risk.segments import segment_keys


def _one_loan_result(n_loans):
    book = ltvsim.LoanBook(asset=0, collateral=1.0, debt=np.full(n_loans, 100.0), margin_call_ltv=0.9,
                           liquidation_ltv=0.95, target_ltv=0.5, cure_steps=1)
    paths = ltvsim.PricePaths(np.full((2, 2, 1), 1000.0), dt=1 / 365, assets=["BTC"])
    return ltvsim.simulate(book, paths, backend="numpy")


@pytest.mark.parametrize("low", [0.30, 0.40, 0.50])
def test_round_initial_ltvs_fall_in_the_bucket_they_open(low):
    ltv = np.round(np.arange(low, 0.86, 0.05), 2)
    result = _one_loan_result(ltv.size)
    codes, labels = segment_keys(result, {"initial_ltv": ltv, "asset": np.zeros(ltv.size, dtype=np.int64)},
                                 "initial_ltv")
    for value, code in zip(ltv[:-1], codes[:-1]):
        # A loan at exactly 60% opens the 60%-65% bucket: labels name their lower edge first.
        assert labels[code].startswith(f"{round(value * 100):g}%"), (value, labels[code])
    # The highest value is the top edge: the last bucket is closed above, as np.histogram's.
    assert labels[codes[-1]].endswith(f"-{round(ltv[-1] * 100):g}%"), labels[codes[-1]]
    assert codes[-1] == len(labels) - 1


def _write_config(tmp_path, market):
    path = tmp_path / "job.toml"
    path.write_text("[run]\npaths = 8\nsteps = 3\n\n[book]\nloans = 50\n\n[market]\n" + to_toml(market))
    return path


def test_inline_regime_parameters_include_start(tmp_path):
    params = RegimeParams(assets=["BTC", "ETH"], s0=[80_000.0, 3_000.0], mu=[[0.1, 0.1], [-1.0, -1.0]],
                          sigma=[[0.5, 0.6], [1.0, 1.2]], corr=[[[1, 0.8], [0.8, 1]], [[1, 0.9], [0.9, 1]]],
                          rate_to_stress=3.0, rate_to_calm=20.0, start="stress")
    config = load_config(_write_config(tmp_path, params.to_dict()))
    assert build_model(config["market"], None) == params


def test_inline_bootstrap_parameters_include_block_length_and_stationary(tmp_path):
    returns = np.random.default_rng(0).normal(0, 0.03, (40, 2))
    params = BootstrapParams(assets=["BTC", "ETH"], s0=[80_000.0, 3_000.0], returns=returns,
                             block_length=5.0, stationary=True)
    config = load_config(_write_config(tmp_path, params.to_dict()))
    assert build_model(config["market"], None) == params


def test_calibration_keys_still_refused_without_calibrate_for_models_lacking_them(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text('[market]\nmodel = "gbm"\nassets = ["BTC"]\ns0 = [1.0]\nmu = [0.0]\n'
                    'sigma = [0.5]\ncorr = [[1.0]]\nstart = "calm"\n')
    with pytest.raises(ConfigError, match="start"):
        build_model(load_config(path)["market"], None)


def test_infinite_initial_ltv_range_is_a_config_error(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text("[book]\ninitial_ltv = [0.5, inf]\n")
    with pytest.raises(ConfigError, match=r"initial_ltv"):
        load_config(path)


def test_saving_without_steps_removes_an_earlier_results_steps(tmp_path):
    book = ltvsim.LoanBook.synthetic(200, seed=1, initial_ltv=(0.55, 0.66))
    paths = ltvsim.paths.gbm([80_000.0, 3_000.0], 0.0, [0.6, 0.75], n_paths=6, n_steps=5, dt=1 / 365,
                             assets=["BTC", "ETH"])
    with_steps = ltvsim.simulate(book, paths, backend="numpy", record_steps=True)
    without = ltvsim.simulate(book, paths, backend="numpy", seed=9)
    with_steps.save(tmp_path)
    without.save(tmp_path)
    loaded = ltvsim.SimulationResult.load(tmp_path)
    assert "step_loss" not in loaded.arrays
    assert not (tmp_path / "steps.parquet").exists()
