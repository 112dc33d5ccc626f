"""Invalid input is refused before any kernel runs, with an error naming the field, the
first offending row (or path, step, asset) and the value."""
import re

import numpy as np
import pytest

import ltvsim
from helpers import BASE_LOAN, book_of, one_loan, path_of

N = 5  # loans in the books below; the bad value goes in row `row`


def book_with(field, value, row=3, **overrides):
    """A valid 5-loan book with ``field[row] = value``."""
    columns = {name: np.full(N, BASE_LOAN[name], dtype=type(BASE_LOAN[name])) for name in BASE_LOAN}
    columns.update(overrides)
    column = np.array(columns[field], dtype=np.float64)
    column[row] = value
    columns[field] = column
    return columns


def error_text(field, row, value):
    """The start of the message: ``field[row] (loan row row) = value``."""
    return re.escape(f"{field}[{row}] (loan row {row}) = {value}")


# ----------------------------------------------------------------------------- the validity table
INVALID = [
    # (field, bad value, shown as, other columns)
    ("collateral", np.nan, "nan", {}),
    ("collateral", np.inf, "inf", {}),
    ("collateral", -1.0, "-1.0", {}),
    ("collateral", 0.0, "0.0", {}),
    ("debt", np.nan, "nan", {}),
    ("debt", np.inf, "inf", {}),
    ("debt", -np.inf, "-inf", {}),
    ("debt", -50.0, "-50.0", {}),
    ("debt", 0.0, "0.0", {}),
    ("rate", np.nan, "nan", {}),
    ("rate", np.inf, "inf", {}),
    ("rate", -0.01, "-0.01", {}),
    ("margin_call_ltv", np.nan, "nan", {}),
    ("margin_call_ltv", 0.0, "0.0", dict(target_ltv=0.0 + 1e-3)),
    ("margin_call_ltv", -0.7, "-0.7", {}),
    ("margin_call_ltv", 0.9, "0.9", {}),  # m > l = 0.8
    ("margin_call_ltv", np.inf, "inf", {}),
    ("liquidation_ltv", np.nan, "nan", {}),
    ("liquidation_ltv", np.inf, "inf", {}),
    ("liquidation_ltv", 0.0, "0.0", {}),
    ("liquidation_ltv", -0.8, "-0.8", {}),
    ("target_ltv", np.nan, "nan", {}),
    ("target_ltv", 0.0, "0.0", {}),
    ("target_ltv", -0.5, "-0.5", {}),
    ("target_ltv", 0.7, "0.7", {}),  # tau == m
    ("target_ltv", 0.75, "0.75", {}),  # tau > m
    ("target_ltv", np.inf, "inf", {}),
    ("fee", np.nan, "nan", {}),
    ("fee", -0.01, "-0.01", {}),
    ("fee", 1.0, "1.0", {}),
    ("fee", 1.5, "1.5", {}),
    ("fee", np.inf, "inf", {}),
    ("topup_prob", np.nan, "nan", {}),
    ("topup_prob", -0.1, "-0.1", {}),
    ("topup_prob", 1.0000001, "1.0000001", {}),
    ("topup_prob", np.inf, "inf", {}),
    ("cure_steps", 1.5, "1.5", {}),
    ("cure_steps", np.nan, "nan", {}),
    ("cure_steps", np.inf, "inf", {}),
    ("cure_steps", -1.0, "-1", {}),
    ("asset", -1.0, "-1", {}),
    ("asset", 0.5, "0.5", {}),
]


@pytest.mark.parametrize("field, value, shown, others", INVALID, ids=[f"{f}={s}" for f, _, s, _ in INVALID])
@pytest.mark.parametrize("row", [0, 3])
def test_invalid_field_names_field_row_and_value(field, value, shown, others, row):
    columns = book_with(field, value, row=row, **others)
    with pytest.raises(ValueError, match=error_text(field, row, shown)) as info:
        ltvsim.LoanBook(**columns)
    assert "must be" in str(info.value)  # and says what is allowed


def test_the_first_bad_row_is_named_and_the_rest_counted():
    columns = book_with("fee", 2.0, row=1)
    columns["fee"][4] = -1.0
    with pytest.raises(ValueError, match=error_text("fee", 1, "2.0") + r".*1 more invalid value"):
        ltvsim.LoanBook(**columns)


def test_valid_edge_values_are_accepted():
    # m == l, tau just below m, fee 0, topup 0 and 1, cure 0, rate 0, whole-number floats.
    book = ltvsim.LoanBook(asset=[0.0, 1.0], collateral=1e-300, debt=1e300, margin_call_ltv=0.8,
                           liquidation_ltv=0.8, target_ltv=np.nextafter(0.8, 0), cure_steps=[0.0, 7.0],
                           fee=0.0, topup_prob=[0.0, 1.0], rate=0.0)
    assert book.cure_steps.dtype == np.int64 and book.cure_steps.tolist() == [0, 7]
    assert book.asset.dtype == np.int64 and book.asset.tolist() == [0, 1]
    assert len(book) == 2


# ----------------------------------------------------------------------------- shapes and dtypes
@pytest.mark.parametrize(
    "overrides, error, pattern",
    [
        (dict(collateral=[1.0, 2.0], debt=[1.0, 2.0, 3.0]), ValueError, r"different lengths.*collateral: 2.*debt: 3"),
        (dict(debt=[[50.0, 50.0]]), ValueError, r"debt must be a scalar or 1-D, got shape \(1, 2\)"),
        (dict(debt=[]), ValueError, r"at least one loan"),
        (dict(debt="50"), TypeError, r"debt must be numeric.*'50'"),
        (dict(debt=b"50"), TypeError, r"debt must be numeric"),
        (dict(debt=["50", "60"]), TypeError, r"debt must hold real numbers"),
        (dict(debt=np.array([50.0, None], dtype=object)), TypeError, r"debt must be numeric.*object"),
        (dict(debt=[True, False]), TypeError, r"debt must hold real numbers, got dtype bool"),
        (dict(debt=[50 + 1j]), TypeError, r"debt must hold real numbers, got dtype complex"),
        (dict(cure_steps=[True]), TypeError, r"cure_steps must hold whole numbers, got dtype bool"),
        (dict(cure_steps="3"), TypeError, r"cure_steps must be numeric"),
        (dict(cure_steps=np.array([2**64 - 1], dtype=np.uint64)), ValueError, r"cure_steps has values beyond int64"),
        (dict(asset=["BTC", "XRP"]), ValueError, r"asset\[1\] \(loan row 1\) = 'XRP': must be one of \['BTC', 'ETH'\]"),
    ],
)
def test_bad_shapes_and_dtypes(overrides, error, pattern):
    with pytest.raises(error, match=pattern):
        ltvsim.LoanBook(**{**BASE_LOAN, **overrides}, asset_names=("BTC", "ETH"))


def test_other_book_arguments():
    with pytest.raises(ValueError, match=r"asset_names must be unique"):
        ltvsim.LoanBook(**BASE_LOAN, asset_names=("BTC", "BTC"))
    with pytest.raises(ValueError, match=r"asset\[0\] \(loan row 0\) = 2: must be < 2 \(the number of asset_names\)"):
        ltvsim.LoanBook(**{**BASE_LOAN, "asset": 2}, asset_names=("BTC", "ETH"))
    with pytest.raises(ValueError, match=r"extra column 'segment' has shape \(3,\), expected \(1,\)"):
        ltvsim.LoanBook(**BASE_LOAN, extra={"segment": [1, 2, 3]})
    with pytest.raises(ValueError, match=r"missing column\(s\) \['debt'\]"):
        ltvsim.LoanBook.from_arrays({k: v for k, v in BASE_LOAN.items() if k != "debt"})
    with pytest.raises(ValueError, match=r"n_loans must be >= 1, got 0"):
        ltvsim.LoanBook.synthetic(0)
    with pytest.raises(TypeError, match=r"n_loans must be an integer"):
        ltvsim.LoanBook.synthetic(10.0)
    with pytest.raises(ValueError, match=r"seed must be >= 0"):
        ltvsim.LoanBook.synthetic(10, seed=-1)
    with pytest.raises(ValueError, match=r"initial_ltv"):
        ltvsim.LoanBook.synthetic(10, initial_ltv=(0.6, 0.4))
    with pytest.raises(ValueError, match=r"btc_share"):
        ltvsim.LoanBook.synthetic(10, btc_share=1.5)


def test_book_arrays_cannot_be_changed_after_validation():
    book = book_of({}, {})
    with pytest.raises(ValueError, match="read-only"):
        book.debt[0] = -1.0
    with pytest.raises(ValueError, match="read-only"):
        book.to_dict()["margin_call_ltv"][1] = 5.0
    assert book.debt.tolist() == [50.0, 50.0]


def test_book_is_insulated_from_later_writes_to_its_inputs():
    # Spec: "No kernel ever reads unvalidated data." A book built from a view of the
    # caller's array must not change when the caller writes through the base array;
    # otherwise a NaN debt reaches the kernels unchecked.
    base = np.array([50.0, 50.0, 50.0])
    book = ltvsim.LoanBook(**{**BASE_LOAN, "debt": base[:2]})
    base[0] = np.nan
    assert book.debt.tolist() == [50.0, 50.0]


def test_price_paths_are_insulated_from_later_writes_to_their_inputs():
    # The same for prices: a negative price written through the base after validation
    # must not reach the kernels.
    base = np.full((1, 3, 2), 100.0)
    paths = ltvsim.PricePaths(base[:, :, :1], dt=1.0)
    base[0, 1, 0] = -1.0
    assert np.asarray(paths.prices).ravel().tolist() == [100.0, 100.0, 100.0]


# ----------------------------------------------------------------------------- prices
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("value, shown", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf"), (0.0, "0.0"), (-5.0, "-5.0")])
def test_bad_prices_name_path_step_asset_and_value(dtype, value, shown):
    prices = np.full((3, 4, 2), 100.0, dtype=dtype)
    prices[2, 3, 1] = value
    prices[2, 3, 0] = 1.0  # a valid neighbour
    pattern = re.escape(f"prices[2, 3, 1] (path 2, step 3, asset 1) = {shown}: must be finite and > 0")
    with pytest.raises(ValueError, match=pattern):
        ltvsim.PricePaths(prices, dt=1 / 365)


@pytest.mark.parametrize(
    "prices, dt, assets, error, pattern",
    [
        (np.ones((2, 3)), 1.0, None, ValueError, r"shape \[n_paths, n_steps \+ 1, n_assets\], got \(2, 3\)"),
        (np.ones((1, 2, 3, 4)), 1.0, None, ValueError, r"got \(1, 2, 3, 4\)"),
        (np.ones((0, 3, 1)), 1.0, None, ValueError, r"at least one path"),
        (np.ones((1, 0, 1)), 1.0, None, ValueError, r"at least one path, one step"),
        (np.full((1, 2, 1), "100"), 1.0, None, TypeError, r"prices must be real numbers"),
        (np.ones((1, 2, 1), dtype=object), 1.0, None, TypeError, r"prices must be real numbers, got dtype object"),
        (np.ones((1, 2, 1), dtype=bool), 1.0, None, TypeError, r"got dtype bool"),
        (np.ones((1, 2, 1)), 0.0, None, ValueError, r"dt must be finite and > 0, got 0.0"),
        (np.ones((1, 2, 1)), -1.0, None, ValueError, r"dt must be finite and > 0, got -1.0"),
        (np.ones((1, 2, 1)), np.nan, None, ValueError, r"dt must be finite and > 0, got nan"),
        (np.ones((1, 2, 1)), np.inf, None, ValueError, r"dt must be finite and > 0, got inf"),
        (np.ones((1, 2, 1)), "1", None, TypeError, r"dt must be a real number"),
        (np.ones((1, 2, 1)), True, None, TypeError, r"dt must be a real number"),
        (np.ones((1, 2, 2)), 1.0, ["BTC"], ValueError, r"assets names 1 assets, prices have 2"),
        (np.ones((1, 2, 2)), 1.0, ["BTC", "BTC"], ValueError, r"assets must be unique"),
    ],
)
def test_bad_price_paths(prices, dt, assets, error, pattern):
    with pytest.raises(error, match=pattern):
        ltvsim.PricePaths(prices, dt=dt, assets=assets)


def test_price_paths_are_read_only():
    paths = ltvsim.PricePaths(np.full((1, 2, 1), 100.0), dt=1.0)
    with pytest.raises(ValueError, match="read-only"):
        paths.prices[0, 0, 0] = np.nan


def test_price_paths_accept_integers_and_keep_float32():
    as_int = ltvsim.PricePaths(np.full((1, 2, 1), 100, dtype=np.int64), dt=1.0)
    assert as_int.prices.dtype == np.float64
    as32 = ltvsim.PricePaths(np.full((1, 2, 1), 100.0, dtype=np.float32), dt=1.0)
    assert as32.prices.dtype == np.float32
    block = as32.kernel_block(0, 1)
    assert block.dtype == np.float64 and block.shape == (1, 2, 1) and block.flags.c_contiguous


# ----------------------------------------------------------------------------- simulate arguments
def paths_2():
    return ltvsim.PricePaths(np.full((2, 3, 2), 100.0), dt=1.0, assets=["BTC", "ETH"])


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(backend="gpu"), ValueError, r"backend must be one of \['auto', 'cython', 'numba', 'numpy'\], got 'gpu'"),
        (dict(backend=None), ValueError, r"backend must be one of .*got None"),
        (dict(liquidation="half"), ValueError, r"liquidation must be one of \('full', 'partial', 'close_factor'\), got 'half'"),
        (dict(liquidation=None), ValueError, r"liquidation must be one of"),
        (dict(seed=-1), ValueError, r"seed must be >= 0, got -1"),
        (dict(seed=2**64), ValueError, r"seed must be < 2\*\*64, got 18446744073709551616"),
        (dict(seed=1.5), TypeError, r"seed must be an integer, got 1.5"),
        (dict(seed=True), TypeError, r"seed must be an integer, got True"),
        (dict(seed="1"), TypeError, r"seed must be an integer"),
        (dict(n_threads=0), ValueError, r"n_threads must be >= 1, got 0"),
        (dict(n_threads=-2), ValueError, r"n_threads must be >= 1, got -2"),
        (dict(n_threads=1.5), TypeError, r"n_threads must be a positive integer or None, got 1.5"),
        (dict(n_threads=True), TypeError, r"n_threads must be a positive integer or None, got True"),
        (dict(n_threads="2"), TypeError, r"n_threads must be a positive integer or None, got '2'"),
        (dict(record_steps=1), TypeError, r"record_steps must be True or False, got 1"),
        (dict(record_steps="yes"), TypeError, r"record_steps must be True or False, got 'yes'"),
        (dict(record_steps=None), TypeError, r"record_steps must be True or False, got None"),
        (dict(path_block=0), ValueError, r"path_block must be >= 1, got 0"),
        (dict(path_block=2.0), TypeError, r"path_block must be an integer, got 2.0"),
    ],
)
def test_bad_simulate_arguments_are_refused_before_any_kernel(no_kernel, backend, kwargs, error, pattern):
    kwargs = {"backend": backend, **kwargs}
    with pytest.raises(error, match=pattern):
        ltvsim.simulate(one_loan(), paths_2(), **kwargs)


def test_wrong_argument_types_are_refused(no_kernel):
    with pytest.raises(TypeError, match=r"book must be a LoanBook, got dict"):
        ltvsim.simulate(dict(BASE_LOAN), paths_2())
    with pytest.raises(TypeError, match=r"paths must be a PricePaths, got ndarray"):
        ltvsim.simulate(one_loan(), np.full((1, 2, 1), 100.0))


def test_asset_beyond_the_paths_is_refused_before_any_kernel(no_kernel, backend):
    book = book_of({}, {"asset": 1}, {"asset": 2}, {"asset": 3})
    with pytest.raises(ValueError, match=re.escape("asset[2] (loan row 2) = 2: must be < 2 (the price paths have 2 asset(s))")):
        ltvsim.simulate(book, paths_2(), backend=backend)


def test_asset_names_that_disagree_are_refused_before_any_kernel(no_kernel, backend):
    book = ltvsim.LoanBook(**{**BASE_LOAN, "asset": ["ETH", "BTC"]}, asset_names=("BTC", "ETH"))
    swapped = ltvsim.PricePaths(np.full((2, 3, 2), 100.0), dt=1.0, assets=["ETH", "BTC"])
    with pytest.raises(ValueError, match=r"asset 1 is 'ETH' in the book but 'BTC' in the price paths"):
        ltvsim.simulate(book, swapped, backend=backend)


def test_asset_name_mismatch_names_the_first_loan_row(no_kernel):
    # Spec: every refusal names the field, the first offending loan row and its value.
    # Both loans mismatch; loan row 0 (asset index 1: 'ETH' in the book, 'BTC' in the
    # paths) is the first, so the message names it.
    book = ltvsim.LoanBook(**{**BASE_LOAN, "asset": ["ETH", "BTC"]}, asset_names=("BTC", "ETH"))
    swapped = ltvsim.PricePaths(np.full((2, 3, 2), 100.0), dt=1.0, assets=["ETH", "BTC"])
    with pytest.raises(ValueError, match=r"asset") as info:
        ltvsim.simulate(book, swapped, backend="numpy")
    assert str(info.value).startswith("asset[0] (loan row 0) = 1: "), str(info.value)


def test_matching_asset_names_are_accepted(backend):
    book = ltvsim.LoanBook(**{**BASE_LOAN, "asset": ["ETH", "BTC"]}, asset_names=("BTC", "ETH"))
    result = ltvsim.simulate(book, paths_2(), backend=backend)
    assert result.assets == ["BTC", "ETH"]
    assert book.asset.tolist() == [1, 0]


def test_valid_arguments_do_reach_the_kernel(monkeypatch, backend):
    # The guard used above really intercepts kernel calls.
    module = ltvsim.backends.load(backend)
    calls = []
    original = module.evaluate_block
    monkeypatch.setattr(module, "evaluate_block", lambda *a: (calls.append(a), original(*a))[1])
    ltvsim.simulate(one_loan(), path_of(100.0, 90.0), backend=backend, seed=2**64 - 1, n_threads=1,
                    record_steps=np.True_, path_block=1)
    assert len(calls) == 1
