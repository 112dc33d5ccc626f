"""The risk report: renders from a small run, every figure is a real PNG, the page holds
the same numbers as ``summary()`` and loads nothing from the network; a result read back
from ``ltvsim run --out`` gives the same measures and the same page."""
import json
import os
import re
import struct

import numpy as np
import pytest

import ltvsim
from ltvsim import cli
from ltvsim.report import FIGURES, compute, load_book, write_report
from ltvsim.report.html import to_json
from ltvsim.risk import CapitalStructure

pytest.importorskip("matplotlib")

SMALL = ["--loans", "3000", "--paths", "60", "--steps", "8", "--seed", "3", "--quiet"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def cli_main(*argv):
    try:
        return cli.main(list(argv))
    except SystemExit as exc:
        return exc.code


def assert_png(path):
    """A valid, non-empty PNG: signature, an IHDR chunk with a positive size, an IEND."""
    with open(path, "rb") as handle:
        data = handle.read()
    assert len(data) > 2000, path
    assert data[:8] == PNG_SIGNATURE, path
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100
    assert data.endswith(b"IEND\xaeB`\x82")


def assert_offline(page):
    """No external resource: every src/href is a data: URI or a fragment; no scripts."""
    for url in re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', page, flags=re.I):
        assert url.startswith("data:") or url.startswith("#"), url
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()


def pm(value, stderr):
    return f"{value:,.2f} ± {stderr:,.2f}"


def assert_summary_on_page(page, s):
    """Every headline of summary() is on the page, formatted as ``ltvsim run`` prints it."""
    for text in (
        pm(s["expected_loss"], s["expected_loss_stderr"]),
        pm(s["var_99"], s["var_99_stderr"]),
        pm(s["es_99"], s["es_99_stderr"]),
        f"{s['prob_loss']:.4f}",
        f"{s['mean_unrealised']:,.2f}",
        f"{s['mean_margin_calls']:,.2f}",
        f"{s['mean_liquidations']:,.2f} ({s['mean_full_liquidations']:,.2f} in full)",
        f"{s['mean_topups']:,.2f}",
        f"{s['mean_fees']:,.2f}",
        f"{s['loans_called_on_any_path']:,}",
        f"{s['loans_liquidated_on_any_path']:,}",
        f"{s['n_loans']:,} loans x {s['n_paths']:,} paths x {s['n_steps']} steps",
    ):
        assert text in page, text
    for units in s["mean_collateral_sold"].values():
        assert f"{units:,.4f}" in page


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert cli_main("run", *SMALL, "--out", str(out), "--report") == 0
    return out


def test_run_report_writes_page_and_figures(cli_run):
    report = cli_run / "report"
    for name in FIGURES.values():
        assert_png(report / name)
    page = (report / "report.html").read_text(encoding="utf-8")
    assert_offline(page)
    # The page is self-contained: every figure is embedded too.
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    result = ltvsim.SimulationResult.load(str(cli_run))
    assert "step_loss" in result.arrays  # --report turned record_steps on
    assert_summary_on_page(page, result.summary())
    book = load_book(str(cli_run), asset_names=result.assets)
    assert len(book) == 3000 and "initial_ltv" in book.extra


def test_report_command_reproduces_the_run_report(cli_run, tmp_path):
    """Reading back everything ``ltvsim run --out`` wrote gives the same measures."""
    assert cli_main("report", str(cli_run), "--report-dir", str(tmp_path)) == 0
    first = json.loads((cli_run / "report" / "risk.json").read_text())
    again = json.loads((tmp_path / "risk.json").read_text())
    assert first == again
    for name in FIGURES.values():
        assert_png(tmp_path / name)


def test_saved_and_loaded_result_give_the_same_measures(tmp_path):
    s0 = {"BTC": 80_000.0, "ETH": 3_000.0}
    book = ltvsim.LoanBook.synthetic(2000, seed=11, prices=s0, initial_ltv=(0.55, 0.74))
    model = ltvsim.paths.GBMParams(assets=("BTC", "ETH"), s0=tuple(s0.values()), mu=(0.0, 0.0),
                                   sigma=(1.4, 1.6), corr=[[1.0, 0.8], [0.8, 1.0]])
    result = ltvsim.run_batch(book, model, n_paths=80, n_steps=8, dt=1 / 365, seed=11, record_steps=True)
    assert result.path_loss.max() > 0
    result.save(str(tmp_path))
    ltvsim.report.save_book(book, str(tmp_path))
    loaded = ltvsim.SimulationResult.load(str(tmp_path))
    assert set(loaded.arrays) == set(result.arrays)
    for name, array in result.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[name], array, err_msg=name)
    structure = CapitalStructure(reserve=1e-4, fee_share=0.2, tranches=[("a", 1e-4), ("b", 1e-3)])
    direct = to_json(compute(result, book, structure))
    back = to_json(compute(loaded, load_book(str(tmp_path), loaded.assets), structure))
    assert json.dumps(direct, sort_keys=True) == json.dumps(back, sort_keys=True)


def test_api_report_holds_summary_numbers_at_another_level(tmp_path):
    s0 = {"BTC": 80_000.0, "ETH": 3_000.0}
    paths = ltvsim.paths.gbm(list(s0.values()), 0.0, [1.5, 1.8], corr=[[1, 0.8], [0.8, 1]],
                             n_paths=50, n_steps=6, dt=1 / 365, seed=2, assets=list(s0))
    book = ltvsim.LoanBook.synthetic(1000, seed=2, prices=s0, initial_ltv=(0.6, 0.74))
    result = ltvsim.simulate(book, paths, record_steps=True, seed=2)
    files = write_report(result, str(tmp_path), book=book, level=0.95, prices=s0)
    page = open(files["report.html"], encoding="utf-8").read()
    s = result.summary(0.95)
    assert pm(s["var_95"], s["var_95_stderr"]) in page
    assert pm(s["es_95"], s["es_95_stderr"]) in page
    assert_offline(page)
    assert len([f for f in files if f.endswith(".png")]) == len(FIGURES)


def test_report_without_steps_or_book(tmp_path):
    """What the result cannot support is left out and the page says why."""
    s0 = {"BTC": 80_000.0, "ETH": 3_000.0}
    paths = ltvsim.paths.gbm(list(s0.values()), 0.0, [0.6, 0.75], corr=[[1, 0.8], [0.8, 1]],
                             n_paths=30, n_steps=5, dt=1 / 365, seed=1, assets=list(s0))
    book = ltvsim.LoanBook.synthetic(500, seed=1, prices=s0)
    result = ltvsim.simulate(book, paths, seed=1)
    files = write_report(result, str(tmp_path))
    assert sorted(f for f in files if f.endswith(".png")) == ["loss_distribution.png"]
    assert_png(files["loss_distribution.png"])
    page = open(files["report.html"], encoding="utf-8").read()
    assert "segment views need the book" in page
    assert "Not available" in page  # fractional tranches without the book's debt
    assert_summary_on_page(page, result.summary())
    # Amounts need no book.
    files = write_report(result, str(tmp_path / "amounts"),
                         structure=CapitalStructure(reserve=10.0, tranches=[("x", 5.0)], basis="amount"))
    assert "Not available" not in open(files["report.html"], encoding="utf-8").read()


def test_report_command_errors(tmp_path, capsys):
    assert cli_main("report", str(tmp_path)) == 2
    assert "no summary.json" in capsys.readouterr().err
    assert cli_main("run", *SMALL, "--report", "--tranche", "oops") == 2
    assert "NAME=SIZE" in capsys.readouterr().err
    assert cli_main("run", *SMALL, "--report", "--fee-share", "2") == 2
    assert "fee_share" in capsys.readouterr().err


def test_report_without_out_goes_to_report_dir(tmp_path, capsys):
    assert cli_main("run", *SMALL, "--report", "--report-dir", str(tmp_path / "rep"),
                    "--tranche", "junior=0.001", "--amounts", "--reserve", "0") == 0
    assert "report written to" in capsys.readouterr().out
    page = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    assert "junior" in page
    assert not os.path.exists(tmp_path / "rep" / "book.parquet")
