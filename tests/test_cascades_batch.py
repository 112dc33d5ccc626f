"""Cascade options through run_batch, resume, the ``ltvsim`` command and config files."""
import numpy as np
import pytest

import ltvsim
from ltvsim import LiquidationRules, MarketImpact, cli
from ltvsim.batch import run_batch
from ltvsim.config import ConfigError, load_config
from ltvsim.paths import GBMParams

MODEL = GBMParams(assets=("BTC", "ETH"), s0=[80_000.0, 3_000.0], mu=0.0, sigma=[0.6, 0.8],
                  corr=[[1.0, 0.8], [0.8, 1.0]])
IMPACT = MarketImpact(depth={"BTC": 3e6, "ETH": 5e5})
RULES = LiquidationRules(max_sell={"BTC": 2.0, "ETH": 40.0}, min_liquidation=500.0)


def _book():
    return ltvsim.LoanBook.synthetic(400, seed=3, prices={"BTC": 80_000.0, "ETH": 3_000.0}, initial_ltv=(0.5, 0.64))


def test_a_batch_with_impact_equals_one_simulate_call(compiled_backend, tmp_path):
    book = _book()
    kwargs = dict(impact=IMPACT, rules=RULES, crossings=True, liquidation="partial")
    batch = run_batch(book, MODEL, n_paths=40, n_steps=10, dt=1 / 365, seed=5, block_paths=16,
                      backend=compiled_backend, record_steps=True, out_dir=tmp_path / "run", **kwargs)
    paths = MODEL.paths(40, 10, 1 / 365, seed=5)
    direct = ltvsim.simulate(book, paths, backend=compiled_backend, seed=5, record_steps=True, **kwargs)
    assert batch.path_cascade_rounds.max() >= 2
    for name, array in direct.arrays.items():
        if name == "loan_loss":  # added block by block: equal to rounding
            np.testing.assert_allclose(batch.arrays[name], array, rtol=1e-12)
        else:
            np.testing.assert_array_equal(batch.arrays[name], array, err_msg=name)
    reloaded = ltvsim.SimulationResult.load(tmp_path / "run")
    np.testing.assert_array_equal(reloaded.path_impact_drawdown, batch.path_impact_drawdown)
    np.testing.assert_array_equal(reloaded.step_impact, batch.step_impact)
    # The options are part of the run: other options in the same directory are refused.
    with pytest.raises(ValueError):
        run_batch(book, MODEL, n_paths=40, n_steps=10, dt=1 / 365, seed=5, block_paths=16,
                  backend=compiled_backend, record_steps=True, out_dir=tmp_path / "run", liquidation="partial")


def test_cli_runs_with_impact_and_prints_the_cascade(capsys):
    code = cli.main(["run", "--loans", "500", "--paths", "16", "--steps", "8", "--quiet",
                     "--impact-depth", "BTC=3e6,ETH=5e5", "--crossings", "--max-sell", "BTC=2,ETH=40"])
    assert code == 0
    text = capsys.readouterr().out
    assert "cascade rounds" in text and "impact drawdown" in text


def test_config_tables_build_the_options(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text('[impact]\ndepth = { BTC = 2e9, ETH = 5e8 }\nhalf_life_days = 2.0\n'
                    '[rules]\nmin_liquidation = 1000.0\nmax_sell = 50.0\n[run]\ncrossings = true\n')
    config = load_config(path)
    from ltvsim.config import build_impact, build_rules

    impact, rules = build_impact(config["impact"]), build_rules(config["rules"])
    assert impact.depth == {"BTC": 2e9, "ETH": 5e8} and impact.half_life == pytest.approx(2 / 365)
    assert rules.min_liquidation == 1000.0 and rules.max_sell == 50.0
    assert config["run"]["crossings"] is True


@pytest.mark.parametrize("text, match", [
    ("[impact]\nlaw = \"sqrt\"\n", r"\[impact\] needs depth"),
    ("[impact]\ndepth = -1\n", r"\[impact\] depth = -1: must be a number > 0"),
    ("[rules]\nmax_sell = { BTC = 0 }\n", r"\[rules\] max_sell"),
    ("[rules]\nclose_factr = 0.5\n", r"unknown key 'close_factr' in \[rules\]"),
])
def test_bad_config_tables_are_refused(tmp_path, text, match):
    path = tmp_path / "job.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)
