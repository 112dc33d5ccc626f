"""Builders of tiny books and paths, and the comparisons every test file shares."""
import numpy as np

import ltvsim
from ltvsim import _config

MONEY_ARRAYS = tuple(f"path_{name}" for name in _config.MONEY_FIELDS)
COUNT_ARRAYS = tuple(f"path_{name}" for name in _config.COUNT_FIELDS)
LOAN_COUNT_ARRAYS = ("loan_margin_calls", "loan_liquidated")
FLOAT_ARRAYS = MONEY_ARRAYS + ("path_collateral_sold", "loan_loss")
STEP_ARRAYS = ("step_collateral_sold", "step_loss", "step_fees", "step_open_debt", "step_collateral_value")

#: Terms of the hand-computed loan: 1 unit of collateral, 50 of debt, so LTV = 50 / S;
#: call at 0.7 (S < 71.43), liquidation at 0.8 (S <= 62.5), target 0.5 (S = 100).
BASE_LOAN = dict(
    asset=0,
    collateral=1.0,
    debt=50.0,
    margin_call_ltv=0.7,
    liquidation_ltv=0.8,
    target_ltv=0.5,
    cure_steps=3,
    rate=0.0,
    fee=0.0,
    topup_prob=0.0,
)


def one_loan(**overrides):
    """A one-loan book: :data:`BASE_LOAN` with ``overrides``."""
    return ltvsim.LoanBook(**{**BASE_LOAN, **overrides})


def book_of(*loans):
    """A book with one row per mapping in ``loans`` (each filled in from :data:`BASE_LOAN`)."""
    rows = [{**BASE_LOAN, **loan} for loan in loans]
    return ltvsim.LoanBook(**{name: np.array([row[name] for row in rows]) for name in BASE_LOAN})


def path_of(*prices, dt=1.0):
    """One path of one asset with the given price at steps 0, 1, ..."""
    return ltvsim.PricePaths(np.asarray(prices, dtype=np.float64).reshape(1, -1, 1), dt=dt)


def paths_of(rows, dt=1.0):
    """Paths of one asset: ``rows[p][t]`` is the price on path p at step t."""
    return ltvsim.PricePaths(np.asarray(rows, dtype=np.float64)[:, :, None], dt=dt)


def money_scale(book, paths):
    """An absolute tolerance scale for money: the largest any per-path sum can be."""
    growth = np.exp(book.rate * paths.dt) ** max(paths.n_steps, 1)
    total_debt = float(np.sum(book.debt * growth))
    total_value = float(np.sum(book.collateral * np.asarray(paths.prices, dtype=np.float64).max()))
    return max(total_debt, total_value)


def assert_same_result(actual, expected, *, rtol=_config.BACKEND_RTOL, atol=0.0, steps=False, label=""):
    """Counts exactly equal, money to ``rtol`` (+ ``atol``). ``actual`` and ``expected``
    are SimulationResults or dicts of arrays (e.g. from ``naive.simulate_naive``)."""
    a = actual.arrays if hasattr(actual, "arrays") else actual
    e = expected.arrays if hasattr(expected, "arrays") else expected
    for name in COUNT_ARRAYS + LOAN_COUNT_ARRAYS:
        assert a[name].dtype == np.int64, f"{label}{name} has dtype {a[name].dtype}"
        np.testing.assert_array_equal(a[name], e[name], err_msg=f"{label}{name}")
    names = FLOAT_ARRAYS + (STEP_ARRAYS if steps else ())
    for name in names:
        assert a[name].shape == e[name].shape, f"{label}{name}: shape {a[name].shape} != {e[name].shape}"
        np.testing.assert_allclose(a[name], e[name], rtol=rtol, atol=atol, err_msg=f"{label}{name}")


def assert_identical(a, b, *, label=""):
    """Every array of two results equal to the last bit (same names, shapes, dtypes)."""
    a_arrays = a.arrays if hasattr(a, "arrays") else a
    b_arrays = b.arrays if hasattr(b, "arrays") else b
    assert set(a_arrays) == set(b_arrays), f"{label}{sorted(set(a_arrays) ^ set(b_arrays))}"
    for name in a_arrays:
        assert a_arrays[name].dtype == b_arrays[name].dtype, f"{label}{name} dtype"
        assert a_arrays[name].shape == b_arrays[name].shape, f"{label}{name} shape"
        # array_equal, not allclose: bit-identical (NaN never occurs in results)
        assert np.array_equal(a_arrays[name], b_arrays[name]), f"{label}{name} differs: {_first_diff(a_arrays[name], b_arrays[name])}"


def _first_diff(x, y):
    diff = np.argwhere(x != y)
    if diff.size == 0:
        return "no difference"
    index = tuple(diff[0])
    return f"first at {index}: {x[index]!r} vs {y[index]!r} ({len(diff)} cells differ)"
