"""Per-loan probability of liquidation and expected loss, by segment: segments add up
to the book totals, whatever the grouping column."""
import numpy as np
import pytest

import ltvsim
from ltvsim.risk import loan_measures, segment_keys, segment_table
from ltvsim.risk.segments import ADDITIVE

S0 = {"BTC": 80_000.0, "ETH": 3_000.0}


@pytest.fixture(scope="module")
def run():
    rng = np.random.default_rng(7)
    book = ltvsim.LoanBook.synthetic(3000, seed=7, prices=S0, initial_ltv=(0.5, 0.74))
    # A user column (a region code) and a numeric one (a score), carried as extras.
    extra = {**book.extra, "region": rng.choice(["EU", "US", "APAC"], len(book)),
             "score": rng.normal(600, 80, len(book))}
    book = ltvsim.LoanBook(**{k: v for k, v in book.to_dict().items() if k not in book.extra},
                           asset_names=book.asset_names, extra=extra)
    model = ltvsim.paths.GBMParams(assets=("BTC", "ETH"), s0=tuple(S0.values()), mu=(0.0, 0.0),
                                   sigma=(1.5, 1.8), corr=[[1.0, 0.8], [0.8, 1.0]])
    result = ltvsim.run_batch(book, model, n_paths=100, n_steps=10, dt=1 / 365, seed=7)
    assert result.path_loss.sum() > 0
    return book, result


def test_loan_measures(run):
    book, result = run
    per = loan_measures(result)
    np.testing.assert_array_equal(per["prob_liquidation"], result.loan_liquidated / 100)
    np.testing.assert_array_equal(per["expected_loss"], result.loan_loss / 100)
    assert per["expected_loss"].sum() == pytest.approx(result.path_loss.mean(), rel=1e-9)


@pytest.mark.parametrize("by, bins", [
    ("asset", None), ("initial_ltv", None), ("initial_ltv", [0.0, 0.6, 0.65, 2.0]), ("region", None),
    ("score", None), ("score", 4), ("cure_steps", None), ("margin_call_ltv", None),
])
def test_segments_add_up_to_the_book(run, by, bins):
    book, result = run
    table = segment_table(result, book, by, bins=bins)
    c, total = table.columns, table.total
    assert total["n_loans"] == len(book) == c["n_loans"].sum()
    assert total["debt"] == pytest.approx(book.debt.sum(), rel=1e-12)
    assert total["expected_loss"] == pytest.approx(result.loan_loss.sum() / 100, rel=1e-12)
    assert total["expected_loss"] == pytest.approx(result.path_loss.mean(), rel=1e-9)
    assert total["expected_liquidated"] == pytest.approx(result.loan_liquidated.sum() / 100, rel=1e-12)
    for name in ADDITIVE:
        assert c[name].sum() == pytest.approx(total[name], rel=1e-12, abs=1e-9), name
    assert (c["n_loans"] > 0).all()
    np.testing.assert_allclose(c["prob_liquidation"], c["expected_liquidated"] / c["n_loans"])
    rows = table.rows()
    assert rows[-1]["segment"] == "total" and len(rows) == len(table.labels) + 1


def test_segment_labels(run):
    book, result = run
    assert segment_table(result, book, "asset").labels == ["BTC", "ETH"]
    assert segment_table(result, book, "region").labels == ["APAC", "EU", "US"]
    ltv = segment_table(result, book, "initial_ltv")
    assert ltv.labels == ["50%-55%", "55%-60%", "60%-65%", "65%-70%", "70%-75%"]
    assert len(segment_table(result, book, "score").labels) <= 10  # auto-binned
    codes, labels = segment_keys(result, book, "initial_ltv", bins=[0.6, 0.65, 0.7])
    assert labels == ["<65%", ">=65%"]
    assert codes.min() == 0 and codes.max() == 1


def test_initial_ltv_computed_from_prices_when_missing(run):
    book, result = run
    bare = ltvsim.LoanBook(**{k: v for k, v in book.to_dict().items() if k not in book.extra},
                           asset_names=book.asset_names)
    with_column = segment_table(result, book, "initial_ltv")
    computed = segment_table(result, bare, "initial_ltv")  # prices from the run's meta
    assert computed.labels == with_column.labels
    np.testing.assert_array_equal(computed.columns["n_loans"], with_column.columns["n_loans"])
    # A plain dict of columns works too.
    as_dict = segment_table(result, {"debt": book.debt, "asset": book.asset}, "asset")
    np.testing.assert_array_equal(as_dict.columns["expected_loss"], segment_table(result, book, "asset").columns["expected_loss"])


def test_unknown_column(run):
    book, result = run
    with pytest.raises(ValueError, match="no column 'colour'"):
        segment_table(result, book, "colour")
    with pytest.raises(ValueError, match="not numeric"):
        segment_table(result, book, "region", bins=3)
