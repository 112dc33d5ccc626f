"""Daily price histories from CSV: strict reading, alignment of assets, gap reporting.

A file needs a header with ``date`` (ISO ``YYYY-MM-DD``) and the price column (``close``
by default); other columns are ignored. Dates must be strictly increasing; a price must be
a finite number > 0. Any breach raises an error naming the file, the line and the value.
Several files for one asset (e.g. two sources for different periods) are joined in order.

Assets are aligned on the dates they all have. Log returns are only taken between
consecutive calendar days; a return that would span missing days is dropped, and every
gap, dropped date and dropped return is listed in :attr:`History.report`.
"""
import csv
import math
from pathlib import Path

import numpy as np

ONE_DAY = np.timedelta64(1, "D")


def read_price_csv(path, column="close"):
    """Read ``(dates, prices)`` from one CSV file; ``dates`` is ``datetime64[D]``.

    Raises
    ------
    ValueError
        Missing column, unparseable date, missing/NaN/non-positive price, unsorted or
        duplicate dates, naming the file and line.
    """
    path = Path(path)
    dates, prices = [], []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: empty file (expected a header with 'date' and '{column}')") from None
        for need in ("date", column):
            if need not in header:
                raise ValueError(f"{path}: no '{need}' column in header {header}")
        i_date, i_price = header.index("date"), header.index(column)
        previous = None
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            where = f"{path}, line {line}"
            if len(row) <= max(i_date, i_price):
                raise ValueError(f"{where}: expected at least {max(i_date, i_price) + 1} columns, got {row}")
            text = row[i_date].strip()
            try:
                day = np.datetime64(text[:10], "D")
                if len(text) > 10 and text[10] not in " T":
                    raise ValueError
            except ValueError:
                raise ValueError(f"{where}: date {text!r} is not ISO YYYY-MM-DD") from None
            cell = row[i_price].strip()
            try:
                price = float(cell)
            except ValueError:
                price = math.nan
            if not (math.isfinite(price) and price > 0):
                raise ValueError(
                    f"{where} ({day}): {column} = {cell!r} is not a finite price > 0;"
                    " fix or delete the row (a deleted day is reported as a gap)"
                )
            if previous is not None and day <= previous:
                what = "duplicate" if day == previous else "unsorted"
                raise ValueError(
                    f"{where}: {what} date {day} after {previous}; dates must be strictly increasing"
                    " (sort the file and remove duplicates)"
                )
            dates.append(day)
            prices.append(price)
            previous = day
    if not dates:
        raise ValueError(f"{path}: no data rows")
    return np.array(dates, dtype="datetime64[D]"), np.array(prices)


def _gaps(dates):
    """``[(first missing day, last missing day), ...]`` inside a sorted date array."""
    if dates.size < 2:
        return []
    step = np.diff(dates)
    where = np.flatnonzero(step > ONE_DAY)
    return [(dates[i] + ONE_DAY, dates[i + 1] - ONE_DAY) for i in where]


class GapReport:
    """What alignment and gap handling did to a history."""

    def __init__(self, coverage, gaps, dropped_by_alignment, dropped_returns):
        #: asset -> (first date, last date, rows)
        self.coverage = coverage
        #: asset -> [(first missing, last missing), ...] inside that asset's own range
        self.gaps = gaps
        #: asset -> number of its dates absent from another asset (dropped when aligning)
        self.dropped_by_alignment = dropped_by_alignment
        #: [(from date, to date), ...]: returns not taken because days are missing between
        self.dropped_returns = dropped_returns

    @property
    def n_missing_days(self):
        return {a: int(sum((b - f).astype(int) + 1 for f, b in g)) for a, g in self.gaps.items()}

    def __str__(self):
        lines = ["history report:"]
        for a, (first, last, rows) in self.coverage.items():
            lines.append(f"  {a}: {rows} rows {first} .. {last}; {len(self.gaps[a])} gap(s), "
                         f"{self.n_missing_days[a]} missing day(s); {self.dropped_by_alignment[a]} date(s) dropped when aligning")
            for f, b in self.gaps[a][:10]:
                lines.append(f"      missing {f} .. {b}")
            if len(self.gaps[a]) > 10:
                lines.append(f"      ... {len(self.gaps[a]) - 10} more")
        lines.append(f"  returns spanning missing days, not used: {len(self.dropped_returns)}")
        for f, b in self.dropped_returns[:10]:
            lines.append(f"      {f} -> {b}")
        return "\n".join(lines)


class History:
    """Aligned daily prices of one or more assets.

    Attributes
    ----------
    dates : ndarray of datetime64[D]
        Common dates, strictly increasing.
    prices : ndarray, ``[n_days, n_assets]``
    assets : tuple of str
    report : GapReport
    """

    def __init__(self, dates, prices, assets, report=None):
        dates = np.asarray(dates, dtype="datetime64[D]")
        prices = np.asarray(prices, dtype=np.float64)
        if prices.ndim == 1:
            prices = prices[:, None]
        assets = (assets,) if isinstance(assets, str) else tuple(assets)
        if prices.shape != (dates.size, len(assets)):
            raise ValueError(f"prices must be [{dates.size} dates, {len(assets)} assets], got {prices.shape}")
        if dates.size and np.any(np.diff(dates) <= np.timedelta64(0, "D")):
            i = int(np.flatnonzero(np.diff(dates) <= np.timedelta64(0, "D"))[0])
            raise ValueError(f"dates must be strictly increasing: {dates[i]} then {dates[i + 1]} (row {i + 1})")
        bad = ~(np.isfinite(prices) & (prices > 0))
        if bad.any():
            d, a = np.argwhere(bad)[0]
            raise ValueError(f"price of {assets[a]} on {dates[d]} = {prices[d, a]!r}: must be finite and > 0")
        self.dates, self.prices, self.assets = dates, prices, assets
        if report is None:
            gaps = {a: _gaps(dates) for a in assets}
            report = GapReport({a: (dates[0], dates[-1], dates.size) for a in assets}, gaps,
                               {a: 0 for a in assets}, [])
        self.report = report
        self.report.dropped_returns = _gaps_as_returns(dates)

    @property
    def n_days(self):
        return self.dates.size

    @property
    def last(self):
        """Latest price of each asset (``{asset: price}``): today's price for a fit."""
        return dict(zip(self.assets, self.prices[-1]))

    def window(self, start=None, end=None):
        """The days from ``start`` to ``end`` inclusive (ISO strings or datetime64)."""
        keep = np.ones(self.n_days, dtype=bool)
        if start is not None:
            keep &= self.dates >= np.datetime64(start, "D")
        if end is not None:
            keep &= self.dates <= np.datetime64(end, "D")
        if keep.sum() < 2:
            raise ValueError(f"window {start} .. {end} holds {int(keep.sum())} day(s) of data; need at least 2")
        sub = History.__new__(History)
        sub.dates, sub.prices, sub.assets = self.dates[keep], self.prices[keep], self.assets
        sub.report = GapReport(
            {a: (sub.dates[0], sub.dates[-1], sub.dates.size) for a in self.assets},
            {a: [(f, b) for f, b in g if f >= sub.dates[0] and b <= sub.dates[-1]] for a, g in self.report.gaps.items()},
            self.report.dropped_by_alignment, _gaps_as_returns(sub.dates))
        return sub

    def select(self, assets):
        """The same history restricted to ``assets`` (in that order)."""
        assets = (assets,) if isinstance(assets, str) else tuple(assets)
        unknown = [a for a in assets if a not in self.assets]
        if unknown:
            raise KeyError(f"unknown asset(s) {unknown}; the history has {list(self.assets)}")
        idx = [self.assets.index(a) for a in assets]
        return History(self.dates, self.prices[:, idx], assets)

    def log_returns(self):
        """``(dates, returns)``: log returns between consecutive calendar days only.

        ``dates[i]`` is the day the return ends on; returns across gaps are left out.
        """
        step = np.diff(self.dates)
        keep = step == ONE_DAY
        r = np.diff(np.log(self.prices), axis=0)
        return self.dates[1:][keep], r[keep]

    def __repr__(self):
        return f"History(assets={list(self.assets)}, {self.n_days} days {self.dates[0]} .. {self.dates[-1]})"


def _gaps_as_returns(dates):
    step = np.diff(dates)
    where = np.flatnonzero(step > ONE_DAY)
    return [(dates[i], dates[i + 1]) for i in where]


def load_history(sources, *, start=None, end=None, column="close"):
    """Read and align daily price CSVs.

    Parameters
    ----------
    sources : dict
        ``{asset: path}`` or ``{asset: [path, path, ...]}`` (files of one asset are joined
        in the order given and must not overlap). A single path is read as one asset
        named after the file.
    start, end : str or datetime64, optional
        Keep only these dates (inclusive).
    column : str
        Price column (default ``close``).

    Returns
    -------
    History
        Aligned on the dates every asset has; see ``History.report`` for gaps.
    """
    if isinstance(sources, (str, Path)):
        sources = {Path(sources).stem: sources}
    if not isinstance(sources, dict) or not sources:
        raise TypeError("sources must be a non-empty dict {asset: path or [paths]}")
    series = {}
    for asset, paths in sources.items():
        if isinstance(paths, (str, Path)):
            paths = [paths]
        parts = [read_price_csv(p, column) for p in paths]
        for (d0, _), (d1, _), p1 in zip(parts, parts[1:], paths[1:]):
            if d1[0] <= d0[-1]:
                raise ValueError(f"{asset}: {p1} starts on {d1[0]}, not after the previous file's last date {d0[-1]}")
        dates = np.concatenate([d for d, _ in parts])
        prices = np.concatenate([p for _, p in parts])
        if start is not None or end is not None:
            keep = np.ones(dates.size, dtype=bool)
            if start is not None:
                keep &= dates >= np.datetime64(start, "D")
            if end is not None:
                keep &= dates <= np.datetime64(end, "D")
            dates, prices = dates[keep], prices[keep]
            if dates.size == 0:
                raise ValueError(f"{asset}: no data between {start} and {end}")
        series[str(asset)] = (dates, prices)
    common = None
    for dates, _ in series.values():
        common = dates if common is None else np.intersect1d(common, dates, assume_unique=True)
    if common.size < 2:
        spans = {a: (str(d[0]), str(d[-1])) for a, (d, _) in series.items()}
        raise ValueError(f"the assets share {common.size} date(s); need at least 2. Their ranges: {spans}")
    assets = tuple(series)
    prices = np.column_stack([p[np.searchsorted(d, common)] for d, p in series.values()])
    report = GapReport(
        {a: (d[0], d[-1], d.size) for a, (d, _) in series.items()},
        {a: _gaps(d) for a, (d, _) in series.items()},
        {a: int(d.size - common.size) for a, (d, _) in series.items()},
        [],
    )
    return History(common, prices, assets, report)
