"""Per-loan risk and its aggregation by segment of the book.

Per loan (from a :class:`~ltvsim.SimulationResult`, over ``n_paths`` paths):

* probability of liquidation ``loan_liquidated / n_paths`` (share of paths with at
  least one liquidation of the loan; likewise for margin calls);
* expected loss ``loan_loss / n_paths``.

A segment view groups loans by a column of the book (``"asset"``, ``"initial_ltv"``
bucketed, or any field or extra column) and adds up, per segment, the loans, their
initial debt, their expected loss and their expected number of liquidated loans (sum of
the per-loan probabilities). These are sums over the loans of each segment, so the
segments add up to the book totals (up to floating-point summation order).
"""
from dataclasses import dataclass

import numpy as np

from .measures import reference_prices

#: Width of the initial-LTV buckets when none are given.
LTV_BUCKET_WIDTH = 0.05
#: A numeric column with more distinct values than this is cut into equal-width bins.
MAX_CATEGORIES = 50
AUTO_BINS = 10
#: Columns a segment table adds up over loans (the others are ratios of them).
ADDITIVE = ("n_loans", "debt", "expected_loss", "expected_liquidated", "expected_called")


def loan_measures(result):
    """Per-loan figures: ``{"prob_liquidation", "prob_margin_call", "expected_loss"}``
    as arrays [n_loans]."""
    n = float(result.meta["n_paths"])
    return {
        "prob_liquidation": result.loan_liquidated / n,
        "prob_margin_call": result.loan_margin_calls / n,
        "expected_loss": result.loan_loss / n,
    }


@dataclass
class SegmentTable:
    """Figures per segment, one entry per segment in each column, plus the book total.

    Columns: ``n_loans``, ``debt`` (initial), ``expected_loss`` (per path),
    ``expected_liquidated`` (expected loans liquidated per path),
    ``expected_called``, ``prob_liquidation`` and ``prob_margin_call`` (mean of the
    per-loan probabilities), ``loss_rate`` (expected loss / debt).
    """

    by: str
    labels: list
    columns: dict
    total: dict

    def rows(self):
        """One dict per segment (``segment`` first), then the ``total`` row."""
        out = [{"segment": label, **{k: v[i] for k, v in self.columns.items()}}
               for i, label in enumerate(self.labels)]
        return out + [{"segment": "total", **self.total}]

    def to_frame(self):
        """The segments (without the total) as a pandas DataFrame indexed by segment."""
        import pandas as pd

        return pd.DataFrame(self.columns, index=pd.Index(self.labels, name=self.by))


def _book_columns(book):
    if isinstance(book, dict):
        return dict(book), None
    columns = book.to_dict()
    return columns, getattr(book, "asset_names", None)


def segment_keys(result, book, by, bins=None, prices=None):
    """``(codes [n_loans] int, labels)`` of each loan's segment.

    ``by="asset"`` groups by collateral asset (named after the result's assets);
    ``by="initial_ltv"`` uses the book's ``initial_ltv`` column, or computes it at
    ``prices`` (default: the run's step-0 prices) and cuts it into ``bins`` (default
    5-point buckets); any other column is grouped by value, or cut into ``bins`` (edges,
    or a number of equal-width bins) when given or when it has more than
    ``MAX_CATEGORIES`` distinct numeric values.
    """
    columns, _ = _book_columns(book)
    n_loans = result.meta["n_loans"]
    if by == "initial_ltv" and "initial_ltv" not in columns:
        if prices is None:
            prices = reference_prices(result)
        if prices is None:
            raise ValueError("the book has no initial_ltv column and the result records no step-0 prices: pass prices")
        p = np.asarray([prices[a] for a in result.assets] if isinstance(prices, dict) else prices, dtype=np.float64)
        values = np.asarray(columns["debt"], dtype=np.float64) / (
            np.asarray(columns["collateral"], dtype=np.float64) * p[np.asarray(columns["asset"])])
    elif by in columns:
        values = np.asarray(columns[by])
    else:
        raise ValueError(f"the book has no column {by!r}; it has {sorted(columns)}")
    if values.shape != (n_loans,):
        raise ValueError(f"column {by!r} has shape {values.shape}, the result has {n_loans} loans")

    if by == "asset" and bins is None:
        codes = values.astype(np.int64)
        labels = list(result.assets)
        return codes, labels
    numeric = np.issubdtype(values.dtype, np.number) and not np.issubdtype(values.dtype, np.bool_)
    if by == "initial_ltv" and bins is None:
        w = LTV_BUCKET_WIDTH
        lo = np.round(np.floor(values.min() / w + 1e-9) * w, 12)
        hi = np.round(np.ceil(values.max() / w - 1e-9) * w, 12)
        # Rounded: k * w + lo would put edges a hair above 0.3, 0.6, ... and round LTVs
        # (which real books cluster on) into the bucket below.
        bins = np.round(np.arange(0, round((hi - lo) / w) + 1) * w + lo, 12)
        if bins.size < 2:
            bins = np.array([lo, lo + w])
    if bins is None and numeric and np.unique(values).size > MAX_CATEGORIES:
        bins = AUTO_BINS
    if bins is None:
        uniques, codes = np.unique(values, return_inverse=True)
        return codes.astype(np.int64), [_plain(u) for u in uniques]
    if not numeric:
        raise ValueError(f"column {by!r} is not numeric and cannot be cut into bins")
    x = values.astype(np.float64)
    if np.isscalar(bins):
        bins = np.linspace(x.min(), x.max(), int(bins) + 1)
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins must be increasing edges (at least two), got {bins!r}")
    # Right-open intervals [e_i, e_{i+1}); the last one is closed; values outside the
    # edges get the first or last bin, labelled with "<" / ">=" so nothing is dropped.
    codes = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)
    pct = by.endswith("ltv")
    fmt = (lambda v: f"{v * 100:g}%") if pct else (lambda v: f"{v:g}")
    labels = [f"{fmt(edges[i])}-{fmt(edges[i + 1])}" for i in range(edges.size - 1)]
    if x.min() < edges[0]:
        labels[0] = f"<{fmt(edges[1])}"
    if x.max() > edges[-1]:
        labels[-1] = f">={fmt(edges[-2])}"
    return codes.astype(np.int64), labels


def segment_table(result, book, by="asset", bins=None, prices=None, drop_empty=True):
    """Per-loan probability of liquidation and expected loss, aggregated by segment.

    Parameters
    ----------
    result : SimulationResult
    book : LoanBook or dict of column -> array [n_loans]
        The book the result was run on (segments are not stored in the result).
    by : str
        ``"asset"``, ``"initial_ltv"`` or any column of the book.
    bins : int or sequence of float, optional
        Cut a numeric column into bins (see :func:`segment_keys`).
    prices : sequence or dict, optional
        Step-0 prices for ``initial_ltv`` when the book has no such column.

    Returns
    -------
    SegmentTable
        The additive columns (``n_loans``, ``debt``, ``expected_loss``,
        ``expected_liquidated``, ``expected_called``) sum to ``total``.
    """
    codes, labels = segment_keys(result, book, by, bins, prices)
    columns, _ = _book_columns(book)
    per_loan = loan_measures(result)
    n_seg = len(labels)
    debt = np.asarray(columns["debt"], dtype=np.float64)

    def by_segment(weights):
        return np.bincount(codes, weights=weights, minlength=n_seg)

    cols = {
        "n_loans": np.bincount(codes, minlength=n_seg).astype(np.int64),
        "debt": by_segment(debt),
        "expected_loss": by_segment(per_loan["expected_loss"]),
        "expected_liquidated": by_segment(per_loan["prob_liquidation"]),
        "expected_called": by_segment(per_loan["prob_margin_call"]),
    }
    total = {
        "n_loans": int(codes.size),
        "debt": float(debt.sum()),
        "expected_loss": float(per_loan["expected_loss"].sum()),
        "expected_liquidated": float(per_loan["prob_liquidation"].sum()),
        "expected_called": float(per_loan["prob_margin_call"].sum()),
    }
    keep = cols["n_loans"] > 0 if drop_empty else np.ones(n_seg, dtype=bool)
    cols = {k: v[keep] for k, v in cols.items()}
    labels = [label for label, k in zip(labels, keep) if k]
    for c in (cols, total):
        n = np.maximum(np.asarray(c["n_loans"], dtype=np.float64), 1.0)
        c["prob_liquidation"] = c["expected_liquidated"] / n
        c["prob_margin_call"] = c["expected_called"] / n
        c["loss_rate"] = c["expected_loss"] / np.where(np.asarray(c["debt"]) > 0, c["debt"], 1.0)
    total = {k: (int(v) if k == "n_loans" else float(v)) for k, v in total.items()}
    return SegmentTable(by=by, labels=labels, columns=cols, total=total)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
