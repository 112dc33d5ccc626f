"""Books in and out of CSV, DataFrames and Parquet; results saved, loaded and summarised."""
import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ltvsim
from helpers import BASE_LOAN, assert_identical
from ltvsim.book import FIELDS


def assert_same_book(a, b):
    assert len(a) == len(b)
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)  # exact: no digits lost
    assert a.asset_names == b.asset_names
    assert set(a.extra) == set(b.extra)
    for name in a.extra:
        np.testing.assert_array_equal(a.extra[name], b.extra[name], err_msg=name)


@pytest.fixture
def book():
    return ltvsim.LoanBook.synthetic(40, seed=11)


# ----------------------------------------------------------------------------- CSV
def test_csv_round_trip_is_exact(tmp_path, book):
    path = tmp_path / "book.csv"
    book.to_csv(path)
    header = path.read_text().splitlines()[0].split(",")
    assert header == list(FIELDS) + ["initial_ltv"]
    back = ltvsim.LoanBook.from_csv(path, asset_names=book.asset_names)
    assert_same_book(back, book)
    # from_file picks the reader by suffix.
    assert_same_book(ltvsim.LoanBook.from_file(str(path), asset_names=book.asset_names), book)


def test_csv_round_trip_of_awkward_numbers(tmp_path):
    book = ltvsim.LoanBook(
        asset=[0, 1, 0], collateral=[1e-300, 0.1 + 0.2, 3.0], debt=[1e300, 1 / 3, 100.0],
        margin_call_ltv=[0.7, 1 / 7, 0.5], liquidation_ltv=[0.8, 1 / 7, 0.5],
        target_ltv=[np.nextafter(0.7, 0), 0.1, 0.25], cure_steps=[0, 2**40, 3],
        rate=[0.0, 5e-324, 0.1], fee=[0.0, np.nextafter(1.0, 0), 0.02], topup_prob=[0.0, 1.0, 0.5],
        extra={"segment": np.array(["retail", "vip", "retail"], dtype=object), "client": [7, 8, 9]},
    )
    path = tmp_path / "awkward.csv"
    book.to_csv(path)
    back = ltvsim.LoanBook.from_csv(path)
    assert_same_book(back, book)


def test_csv_with_asset_names_as_strings(tmp_path):
    path = tmp_path / "named.csv"
    path.write_text(
        "asset,collateral,debt,margin_call_ltv,liquidation_ltv,target_ltv,cure_steps\n"
        "ETH, 10.0, 15000, 0.7, 0.8, 0.5, 2\n"
        "BTC,0.5,20000,0.7,0.8,0.5,2\n"
        "\n"
        "ETH,2,3000.5,0.65,0.75,0.5,1\n"
    )
    book = ltvsim.LoanBook.from_csv(path, asset_names=("BTC", "ETH"))
    assert book.asset.tolist() == [1, 0, 1]
    assert book.asset_names == ("BTC", "ETH")
    assert book.debt.tolist() == [15000.0, 20000.0, 3000.5]
    assert book.cure_steps.tolist() == [2, 2, 1]
    # Optional fields take their defaults.
    assert book.rate.tolist() == [0.0] * 3 and book.fee.tolist() == [0.0] * 3
    assert book.topup_prob.tolist() == [0.0] * 3
    # Without asset_names the names found are sorted.
    assert ltvsim.LoanBook.from_csv(path).asset_names == ("BTC", "ETH")


def test_csv_names_resolved_differently_from_the_paths_are_refused(tmp_path):
    # A file of ETH loans only, read without asset_names, numbers ETH as asset 0. Against
    # BTC/ETH paths that must be an error, not ETH loans priced off BTC.
    path = tmp_path / "eth.csv"
    path.write_text(
        "asset,collateral,debt,margin_call_ltv,liquidation_ltv,target_ltv,cure_steps\n"
        "ETH,10,15000,0.7,0.8,0.5,2\n"
    )
    paths = ltvsim.PricePaths(np.full((1, 2, 2), 3000.0), dt=1 / 365, assets=["BTC", "ETH"])
    with pytest.raises(ValueError, match=r"'ETH' in the book but 'BTC' in the price paths"):
        ltvsim.simulate(ltvsim.LoanBook.from_csv(path), paths)
    book = ltvsim.LoanBook.from_csv(path, asset_names=paths.assets)
    assert book.asset.tolist() == [1]
    ltvsim.simulate(book, paths)


@pytest.mark.parametrize(
    "body, pattern",
    [
        ("", r"empty file, expected a header row"),
        ("asset,collateral,debt,margin_call_ltv,liquidation_ltv,target_ltv,cure_steps\n0,1,50,0.7,0.8,0.5\n",
         r"line 2: 6 cells, header has 7"),
        ("asset,collateral,debt,margin_call_ltv,liquidation_ltv,target_ltv,cure_steps\n0,1,50,0.7,0.8,0.5,1\n"
         "0,1,abc,0.7,0.8,0.5,1\n", r"line 3: debt = 'abc' is not a number"),
        ("asset,collateral,debt,margin_call_ltv,liquidation_ltv,target_ltv,cure_steps\n0,1,50,0.7,0.8,0.5,1\n"
         "0,1,50,0.7,0.8,0.5,\n", r"line 3: cure_steps = '' is not a number"),
        ("asset,collateral,debt,margin_call_ltv,liquidation_ltv,target_ltv,cure_steps\n0,1,50,0.7,0.8,0.5,1\n"
         "0,1,nan,0.7,0.8,0.5,1\n", r"debt\[1\] \(loan row 1\) = nan"),
        ("asset,collateral,debt,margin_call_ltv,liquidation_ltv,target_ltv\n0,1,50,0.7,0.8,0.5\n",
         r"missing column\(s\) \['cure_steps'\]"),
    ],
)
def test_bad_csv_files(tmp_path, body, pattern):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(ValueError, match=pattern):
        ltvsim.LoanBook.from_csv(path)


def test_unknown_file_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"unknown book format '.xlsx'"):
        ltvsim.LoanBook.from_file(tmp_path / "book.xlsx")


# ----------------------------------------------------------------------------- frames, Parquet
def test_from_frame_keeps_fields_and_extra_columns(book):
    frame = pd.DataFrame({**book.to_dict(), "segment": ["a", "b"] * 20})
    back = ltvsim.LoanBook.from_frame(frame, asset_names=book.asset_names)
    assert list(back.extra) == ["initial_ltv", "segment"]
    assert back.extra["segment"].tolist() == ["a", "b"] * 20
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(back, name), getattr(book, name))


def test_from_frame_with_asset_names():
    frame = pd.DataFrame({**{k: [v, v] for k, v in BASE_LOAN.items()}, "asset": ["ETH", "BTC"]})
    book = ltvsim.LoanBook.from_frame(frame, asset_names=["BTC", "ETH"])
    assert book.asset.tolist() == [1, 0]


def test_frame_with_a_bad_value_names_the_row():
    frame = pd.DataFrame({k: [v] * 4 for k, v in BASE_LOAN.items()})
    frame.loc[2, "target_ltv"] = 0.9
    with pytest.raises(ValueError, match=r"target_ltv\[2\] \(loan row 2\) = 0.9"):
        ltvsim.LoanBook.from_frame(frame)


def test_parquet_round_trip(tmp_path, book):
    path = tmp_path / "book.parquet"
    columns = book.to_dict()
    columns = {**columns, "asset": np.array(book.asset_names)[book.asset]}  # names, not indices
    pq.write_table(pa.table(columns), path)
    back = ltvsim.LoanBook.from_parquet(path, asset_names=book.asset_names)
    assert_same_book(back, book)
    assert_same_book(ltvsim.LoanBook.from_file(path, asset_names=book.asset_names), book)


# ----------------------------------------------------------------------------- results
@pytest.fixture(scope="module")
def results():
    book = ltvsim.LoanBook.synthetic(300, seed=2, initial_ltv=(0.5, 0.75))
    paths = ltvsim.paths.gbm([80_000.0, 3_000.0], 0.0, [0.9, 1.1], n_paths=120, n_steps=10, dt=1 / 12,
                             seed=4, assets=["BTC", "ETH"])
    with_steps = ltvsim.simulate(book, paths, backend="numpy", record_steps=True, liquidation="partial", seed=3)
    without = ltvsim.simulate(book, paths, backend="numpy")
    assert with_steps.path_loss.max() > 0 and without.path_loss.max() > 0  # something to estimate
    return with_steps, without


@pytest.mark.parametrize("recorded", [True, False])
def test_save_and_load_round_trip(tmp_path, results, recorded):
    result = results[0] if recorded else results[1]
    written = result.save(tmp_path / "run")
    expected_files = {"paths.parquet", "loans.parquet", "summary.json"} | ({"steps.parquet"} if recorded else set())
    assert set(written) == expected_files
    assert {p.name for p in (tmp_path / "run").iterdir()} == expected_files
    back = ltvsim.SimulationResult.load(tmp_path / "run")
    assert_identical(back, result)
    assert back.meta == result.meta
    assert back.expected_loss() == result.expected_loss()
    for q in (0.9, 0.99):
        assert back.var(q) == result.var(q)
        assert back.es(q) == result.es(q)
    assert back.summary() == result.summary()


def test_to_frame_and_to_parquet(tmp_path, results):
    result = results[0]
    frame = result.to_frame()
    n_paths = result.meta["n_paths"]
    money_and_counts = [
        "loss", "fees", "interest_recovered", "principal_recovered", "residual", "proceeds", "debt_closed",
        "unrealised", "margin_calls", "liquidations", "full_liquidations", "topups",
    ]
    assert frame.shape == (n_paths, len(money_and_counts) + 2)
    assert list(frame.columns) == money_and_counts + ["collateral_sold_BTC", "collateral_sold_ETH"]
    assert frame.index.name == "path" and frame.index.tolist() == list(range(n_paths))
    np.testing.assert_array_equal(frame["loss"].to_numpy(), result.path_loss)
    np.testing.assert_array_equal(frame["collateral_sold_ETH"].to_numpy(), result.path_collateral_sold[:, 1])
    assert frame["topups"].dtype == np.int64
    result.to_parquet(tmp_path / "paths.parquet")
    table = pq.read_table(tmp_path / "paths.parquet")
    assert table.num_rows == n_paths
    np.testing.assert_array_equal(table.column("residual").to_numpy(), result.path_residual)


def test_summary_is_json_and_consistent(results):
    result = results[0]
    summary = result.summary()
    text = json.dumps(summary, allow_nan=False)  # strict JSON: no NaN or numpy scalars
    assert json.loads(text) == summary
    assert summary["expected_loss"] == result.expected_loss().value
    assert summary["var_99"] == result.var(0.99).value
    assert summary["es_99_stderr"] == result.es(0.99).stderr
    assert summary["n_loans"] == 300 and summary["n_paths"] == 120 and summary["n_steps"] == 10
    assert summary["assets"] == ["BTC", "ETH"]
    assert summary["liquidation"] == "partial" and summary["backend"] == "numpy" and summary["seed"] == 3
    assert summary["mean_topups"] == result.path_topups.mean()
    assert set(summary["mean_collateral_sold"]) == {"BTC", "ETH"}
    assert summary["loans_called_on_any_path"] == np.count_nonzero(result.loan_margin_calls)
    assert math.isclose(summary["prob_loss"], np.mean(result.path_loss > 0))
    other = result.summary(q=0.975)
    assert "var_97.5" in other and "es_97.5_stderr" in other
    json.dumps(other, allow_nan=False)


def test_arrays_and_meta(results):
    result = results[0]
    arrays = result.arrays
    arrays["path_loss"] = None  # a copy of the mapping: the result is untouched
    assert result.path_loss is not None
    n_paths, n_loans = result.meta["n_paths"], result.meta["n_loans"]
    for name, array in result.arrays.items():
        if name.startswith("path_"):
            assert array.shape[0] == n_paths, name
        elif name.startswith("loan_"):
            assert array.shape == (n_loans,), name
    assert result.step_collateral_sold.shape == (n_paths, 11, 2)
    assert result.step_loss.shape == (n_paths, 11)
    assert "SimulationResult(n_loans=300" in repr(result)
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        result.nonsense
