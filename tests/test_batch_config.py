"""``ltvsim run CONFIG.toml``: the example config runs and means what it says, options
override the file, every model source works, bad keys and values are named."""
from pathlib import Path

import numpy as np
import pytest

import ltvsim
from helpers import assert_identical
from ltvsim import cli
from ltvsim.batch import run_batch
from ltvsim.config import ConfigError, build_model, load_config

EXAMPLE = Path(__file__).parents[1] / "examples" / "batch.toml"
SMALL = ["--paths", "120", "--quiet"]


def run_cli(*argv):
    try:
        return cli.main(["run", *argv])
    except SystemExit as exc:
        return exc.code


def write(tmp_path, text, name="job.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_example_config_runs_and_means_what_it_says(tmp_path, capsys):
    assert run_cli(str(EXAMPLE), *SMALL, "--out", str(tmp_path / "out")) == 0
    out = capsys.readouterr().out
    assert "20,000 loans x 120 paths x 30 steps" in out and "seed 1" in out
    config = load_config(EXAMPLE)
    model = build_model(config["market"], None)
    assert model == cli.default_model()  # the example spells out the built-in market
    book = ltvsim.LoanBook.synthetic(20_000, seed=1, prices={"BTC": 80_000.0, "ETH": 3_000.0})
    expected = run_batch(book, model, n_paths=120, n_steps=30, dt=1 / 365, seed=1, block_paths=256)
    assert_identical(ltvsim.SimulationResult.load(tmp_path / "out"), expected)
    saved = ltvsim.SimulationResult.load(tmp_path / "out").meta
    assert saved["run"]["config"] == str(EXAMPLE) and saved["batch"]["block_paths"] == 256


def test_every_key_of_the_schema_is_documented_in_the_example():
    text = EXAMPLE.read_text()
    for table, keys in ltvsim.config.SCHEMA.items():
        assert f"[{table}]" in text
        for key in keys:
            assert f"{key} =" in text, f"[{table}] {key} is not documented in {EXAMPLE.name}"


def test_command_line_options_override_the_file(tmp_path, capsys):
    config = write(tmp_path, "[run]\npaths = 500\nsteps = 9\nseed = 4\n[book]\nloans = 700\n")
    assert run_cli(str(config), "--paths", "60", "--loans", "300", "--seed", "2", "--quiet") == 0
    assert "300 loans x 60 paths x 9 steps" in capsys.readouterr().out


def test_book_file_and_params_file_relative_to_the_config(tmp_path, capsys):
    model = ltvsim.paths.MertonParams(assets=["BTC", "ETH"], s0=[70_000.0, 2_500.0], sigma=[0.5, 0.7],
                                      jump_rate=[4, 6], jump_mean=-0.05, jump_std=0.05)
    model.save(tmp_path / "market.toml")
    book = ltvsim.LoanBook.synthetic(250, seed=3, prices={"BTC": 70_000.0, "ETH": 2_500.0})
    book.to_csv(tmp_path / "book.csv")
    config = write(tmp_path, '[run]\npaths = 40\nsteps = 5\n[book]\nfile = "book.csv"\n'
                             '[market]\nparams = "market.toml"\n[report]\nquiet = true\nlevel = 0.95\n')
    assert run_cli(str(config), "--out", str(tmp_path / "out")) == 0
    out = capsys.readouterr().out
    assert "250 loans x 40 paths x 5 steps" in out and "VaR 95%" in out
    expected = run_batch(ltvsim.LoanBook.from_file(tmp_path / "book.csv", asset_names=model.assets),
                         load := ltvsim.paths.load_params(tmp_path / "market.toml"), n_paths=40, n_steps=5, dt=1 / 365)
    assert load.model == "merton"
    assert_identical(ltvsim.SimulationResult.load(tmp_path / "out"), expected)


def test_calibrate_from_csv_history(tmp_path, capsys):
    rng = np.random.default_rng(2)
    days = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-07-01"))
    for asset, s0 in (("BTC", 60_000.0), ("ETH", 3_000.0)):
        prices = s0 * np.exp(np.cumsum(rng.normal(0, 0.03, days.size)))
        rows = "\n".join(f"{d},{float(p)!r}" for d, p in zip(days, prices))
        (tmp_path / f"{asset}.csv").write_text("date,close\n" + rows + "\n")
    config = write(tmp_path, '[run]\npaths = 30\nsteps = 5\n[book]\nloans = 200\n'
                             '[market]\ncalibrate = "gbm"\nhistory = { BTC = "BTC.csv", ETH = "ETH.csv" }\n'
                             'start = "2024-02-01"\n')
    assert run_cli(str(config), "--quiet") == 0
    assert "200 loans x 30 paths x 5 steps" in capsys.readouterr().out
    model = build_model(load_config(config)["market"], None)
    history = ltvsim.paths.load_history({"BTC": tmp_path / "BTC.csv", "ETH": tmp_path / "ETH.csv"}, start="2024-02-01")
    assert model == ltvsim.paths.fit_gbm(history)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[run]\npathz = 10\n", "unknown key 'pathz' in [run]; known keys: paths, steps"),
        ("[runs]\npaths = 10\n", "unknown table or key 'runs'"),
        ("[run]\npaths = 'many'\n", "[run] paths = 'many': must be an integer >= 1"),
        ("[run]\npaths = 0\n", "[run] paths = 0: must be >= 1"),
        ("[run]\nliquidation = 'half'\n", "[run] liquidation = 'half': must be one of 'full', 'partial'"),
        ("[run]\nrecord_steps = 1\n", "[run] record_steps = 1: must be true or false"),
        ("[book]\ninitial_ltv = [0.6, 0.4]\n", "[book] initial_ltv = [0.6, 0.4]: must be a range"),
        ('[book]\nfile = "b.csv"\nloans = 5\n', "loans only apply to a synthetic book"),
        ('[market]\nmodel = "gbm"\nassets = ["BTC", "ETH"]\ns0 = [1.0, 1.0]\nsigma = [0.5, -0.1]\n',
         "[market]: sigma[ETH] = -0.1: must be finite and >= 0"),
        ('[market]\nmodel = "gbm"\nassets = ["BTC", "ETH"]\ns0 = 1.0\nsigma = 0.5\nvol = 2\n',
         "[market]: GBMParams got unknown parameter(s) ['vol']"),
        ('[market]\nmodel = "gbm"\nparams = "m.toml"\n', "[market] takes one of model, params or calibrate"),
        ('[market]\ncalibrate = "gbm"\n', "needs history = ..."),
        ("[market]\nsigma = 0.5\n", "unknown key 'sigma' in [market]; known keys: params, calibrate"),
        ('[market]\nstart = "2020-01-01"\n', "[market] needs model = ..., params = ... or calibrate = ..."),
        ("[run\npaths = 1\n", "not valid TOML"),
    ],
)
def test_wrong_key_or_value_is_named_with_the_file(tmp_path, capsys, text, message):
    config = write(tmp_path, text)
    assert run_cli(str(config), "--quiet") == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"ltvsim: error: {config}")
    assert message in captured.err, captured.err
    assert captured.out == "" and "Traceback" not in captured.err


def test_missing_config_file(tmp_path, capsys):
    assert run_cli(str(tmp_path / "nope.toml")) == 2
    assert capsys.readouterr().err == f"ltvsim: error: {tmp_path / 'nope.toml'}: no such config file\n"


def test_config_errors_are_value_errors():
    assert issubclass(ConfigError, ValueError)
