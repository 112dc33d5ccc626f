"""The ``ltvsim`` command, run in-process: what it prints equals a direct ``simulate``
call on the same inputs, its files read back identical, bad input exits 2 cleanly."""
import json
import os
import subprocess
import sys

import pytest

import ltvsim
from helpers import assert_identical
from ltvsim import cli

SMALL = ["--loans", "2000", "--paths", "50", "--steps", "10"]


def run_cli(*argv):
    """``main(["run", *argv])``; returns its exit code (0, or the SystemExit code)."""
    try:
        return cli.main(["run", *argv])
    except SystemExit as exc:
        return exc.code


def default_paths(n_paths, n_steps, seed):
    m = cli.DEFAULT_MARKET
    return ltvsim.paths.gbm(
        m["s0"], m["mu"], m["sigma"], corr=[[1.0, m["corr"]], [m["corr"], 1.0]],
        n_paths=n_paths, n_steps=n_steps, dt=m["dt"], seed=seed, assets=m["assets"],
    )


def synthetic_book(n_loans, seed, **kwargs):
    prices = dict(zip(cli.DEFAULT_MARKET["assets"], cli.DEFAULT_MARKET["s0"]))
    return ltvsim.LoanBook.synthetic(n_loans, seed=seed, prices=prices, **kwargs)


def line(text, label):
    """The one printed line that starts (after indentation) with ``label``."""
    found = [row.strip() for row in text.splitlines() if row.strip().startswith(label)]
    assert len(found) == 1, f"{label!r} in {text!r}"
    return found[0]


def pm(value, stderr):
    return f"{value:,.2f} ± {stderr:,.2f}"


def assert_summary_printed(text, result):
    """Every headline of ``result.summary()`` appears, formatted, on its line of ``text``."""
    s = result.summary(0.99)
    assert f"{s['n_loans']:,} loans x {s['n_paths']:,} paths x {s['n_steps']} steps" in text
    assert line(text, "expected loss").endswith(pm(s["expected_loss"], s["expected_loss_stderr"]))
    assert line(text, "VaR 99%").endswith(pm(s["var_99"], s["var_99_stderr"]))
    assert line(text, "ES 99%").endswith(pm(s["es_99"], s["es_99_stderr"]))
    assert line(text, "P(loss > 0)").endswith(f"{s['prob_loss']:.4f}")
    assert f"{s['mean_unrealised']:,.2f}" in line(text, "unrealised at horizon")
    assert line(text, "margin calls").endswith(f"{s['mean_margin_calls']:,.2f}")
    assert line(text, "liquidations").startswith(f"liquidations           {s['mean_liquidations']:,.2f}")
    assert f"({s['mean_full_liquidations']:,.2f} in full)" in line(text, "liquidations")
    assert line(text, "top-ups").endswith(f"{s['mean_topups']:,.2f}")
    sold = line(text, "collateral sold")
    for asset, units in s["mean_collateral_sold"].items():
        assert f"{asset} {units:,.4f}" in sold
    assert line(text, "fees (USD)").endswith(f"{s['mean_fees']:,.2f}")
    assert line(text, "loans called on any path").endswith(f"{s['loans_called_on_any_path']:,}")
    assert line(text, "loans liquidated on any path").endswith(f"{s['loans_liquidated_on_any_path']:,}")
    assert line(text, "Time: book").count(" s") >= 4
    assert "million loan-path-steps per second" in line(text, "Throughput:")


def test_run_prints_the_summary_of_the_same_simulation(backend, capsys):
    assert run_cli(*SMALL, "--seed", "3", "--backend", backend, "--threads", "2", "--quiet") == 0
    out, err = capsys.readouterr()
    assert err == ""  # --quiet: no progress messages
    book = synthetic_book(2000, seed=3)
    expected = ltvsim.simulate(book, default_paths(50, 10, seed=3), backend=backend, seed=3)
    assert f"backend {backend} (2 threads), liquidation full, seed 3" in out
    assert_summary_printed(out, expected)
    # The small run is not trivial: calls, liquidations and top-ups happen.
    s = expected.summary()
    assert s["mean_margin_calls"] > 0 and s["mean_liquidations"] > 0 and s["mean_topups"] > 0


def test_no_option_runs_the_built_in_default(monkeypatch, capsys):
    # The built-in sizes, shrunk: `ltvsim run` alone must use DEFAULT_RUN and DEFAULT_MARKET.
    monkeypatch.setitem(cli.DEFAULT_RUN, "loans", 1500)
    monkeypatch.setitem(cli.DEFAULT_RUN, "paths", 40)
    monkeypatch.setitem(cli.DEFAULT_RUN, "steps", 8)
    assert run_cli() == 0
    out, err = capsys.readouterr()
    assert "building a synthetic book of 1,500 loans" in err
    expected = ltvsim.simulate(synthetic_book(1500, seed=0), default_paths(40, 8, seed=0), seed=0)
    assert_summary_printed(out, expected)


def test_default_market_is_the_documented_one():
    m = cli.DEFAULT_MARKET
    assert m["assets"] == ("BTC", "ETH")
    assert m["s0"] == (80_000.0, 3_000.0)
    assert m["sigma"] == (0.60, 0.75) and m["mu"] == (0.0, 0.0) and m["corr"] == 0.8
    assert m["dt"] == 1 / 365
    assert cli.DEFAULT_RUN == {"loans": 1_000_000, "paths": 1_000, "steps": 30, "seed": 0}


def test_out_writes_files_that_load_back_identical(tmp_path, capsys):
    out_dir = tmp_path / "run"
    argv = [*SMALL, "--seed", "5", "--liquidation", "partial", "--record-steps", "--quiet"]
    assert run_cli(*argv, "--out", str(out_dir)) == 0
    out = capsys.readouterr().out
    assert f"results written to {out_dir}" in out
    assert "busiest step (mean sold)" in out
    assert sorted(os.listdir(out_dir)) == ["loans.parquet", "paths.parquet", "steps.parquet", "summary.json"]

    expected = ltvsim.simulate(
        synthetic_book(2000, seed=5), default_paths(50, 10, seed=5),
        seed=5, liquidation="partial", record_steps=True,
    )
    back = ltvsim.SimulationResult.load(out_dir)
    assert_identical(back, expected)
    saved = json.loads((out_dir / "summary.json").read_text())
    got, want = saved["summary"], expected.summary()
    for key in want:
        if key not in ("elapsed_seconds", "loan_path_steps_per_second", "n_threads"):
            assert got[key] == want[key], key
    assert saved["meta"]["run"]["market"]["sigma"] == [0.60, 0.75]
    assert back.summary()["expected_loss"] == want["expected_loss"]


def test_book_from_a_csv_file(tmp_path, capsys):
    # A stressed book (some loans start beyond their liquidation LTV, some beyond 100%)
    # so that the loss figures are not all zero.
    book = synthetic_book(300, seed=7, initial_ltv=(0.6, 1.1))
    path = tmp_path / "book.csv"
    book.to_csv(path)
    assert run_cli("--book", str(path), "--loans", "5", "--paths", "30", "--steps", "5", "--quiet") == 0
    out = capsys.readouterr().out
    assert "300 loans x 30 paths x 5 steps" in out  # --loans is ignored
    expected = ltvsim.simulate(book, default_paths(30, 5, seed=0), seed=0)
    assert expected.summary()["expected_loss"] > 0
    assert_summary_printed(out, expected)


def test_missing_book_file_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    assert run_cli("--book", str(missing), "--quiet") == 2
    err = capsys.readouterr().err
    assert err == f"ltvsim: error: --book {missing}: no such file\n"


def test_out_without_pyarrow_is_refused_before_the_run(monkeypatch, tmp_path, capsys):
    real_find_spec = cli.importlib.util.find_spec
    monkeypatch.setattr(
        cli.importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real_find_spec(name, *a)
    )
    assert run_cli(*SMALL, "--out", str(tmp_path / "run")) == 2
    captured = capsys.readouterr()
    assert "ltvsim: error: --out writes Parquet and needs pyarrow" in captured.err
    assert "building" not in captured.err and captured.out == ""
    assert not (tmp_path / "run").exists()


def test_out_onto_a_file_is_refused_before_the_run(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("")
    assert run_cli(*SMALL, "--quiet", "--out", str(target)) == 2
    assert capsys.readouterr().err == f"ltvsim: error: --out {target}: exists and is not a directory\n"


def test_malformed_book_file_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text(
        "asset,collateral,debt,margin_call_ltv,liquidation_ltv,target_ltv,cure_steps\n"
        "BTC,1,50000,0.7,0.8,0.5,2\n"
        "BTC,1,-5,0.7,0.8,0.5,2\n"
    )
    assert run_cli("--book", str(path), "--quiet") == 2
    err = capsys.readouterr().err
    assert err.startswith("ltvsim: error: debt[1] (loan row 1) = -5.0: must be finite and > 0")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--paths", "0"], "n_paths must be >= 1, got 0"),
        (["--loans", "0"], "n_loans must be >= 1, got 0"),
        (["--threads", "0"], "n_threads must be >= 1, got 0"),
        (["--seed", "-1"], "seed must be >= 0, got -1"),
    ],
)
def test_bad_values_exit_2_with_the_library_message(argv, message, capsys):
    assert run_cli(*SMALL, *argv, "--quiet") == 2
    captured = capsys.readouterr()
    assert captured.err == f"ltvsim: error: {message}\n"
    assert captured.out == ""


def test_malformed_command_line_exits_2(capsys):
    assert run_cli("--backend", "fortran") == 2
    assert "invalid choice: 'fortran'" in capsys.readouterr().err
    assert run_cli("--paths", "many") == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err


def test_version_in_process(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"ltvsim {ltvsim.__version__}\n"


def test_installed_console_script_reports_its_version():
    bindir = os.path.dirname(sys.executable)
    script = os.path.join(bindir, "ltvsim.exe" if os.name == "nt" else "ltvsim")
    assert os.path.exists(script), f"console script not installed next to {sys.executable}"
    done = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ltvsim {ltvsim.__version__}"
