"""The loan book: one structure-of-arrays container, validated once, read by every kernel."""
import csv
import os

import numpy as np

from ._validation import as_float_field, as_int_field, check_int, first_bad

#: Field names, in the order of the spec (``shared/spec/MECHANICS.md``).
FIELDS = (
    "asset",
    "collateral",
    "debt",
    "rate",
    "margin_call_ltv",
    "liquidation_ltv",
    "target_ltv",
    "cure_steps",
    "fee",
    "topup_prob",
)
INT_FIELDS = ("asset", "cure_steps")
#: Fields that may be omitted, with the value every loan then gets.
OPTIONAL_FIELDS = {"rate": 0.0, "fee": 0.0, "topup_prob": 0.0}

#: Reference prices (USD) the synthetic book is struck at when none are given. Round
#: figures near BTC and ETH in late 2026; LTVs are scale-free, so only ratios matter.
DEFAULT_PRICES = {"BTC": 80_000.0, "ETH": 3_000.0}


class LoanBook:
    """A book of crypto-collateralised loans, one array per field (structure of arrays).

    Every field is a keyword argument holding one value per loan; a scalar is broadcast
    to every loan. Units and meaning follow the loan mechanics (``docs/mechanics.md``).

    Parameters
    ----------
    asset : int or str, or array of them
        Index of the collateral asset in the price paths (``0 <= asset < n_assets``),
        or asset names resolved through ``asset_names``.
    collateral : float or array
        Units of collateral pledged (> 0).
    debt : float or array
        Debt at step 0 in quote currency, all principal (> 0).
    rate : float or array, default 0
        Annual interest rate, continuously compounded (>= 0).
    margin_call_ltv : float or array
        LTV at which a margin call is issued (``0 < margin_call_ltv <= liquidation_ltv``).
    liquidation_ltv : float or array
        LTV at which the loan is liquidated at once (finite, >= margin_call_ltv).
    target_ltv : float or array
        LTV restored by a top-up or partial liquidation (``0 < target_ltv < margin_call_ltv``).
    cure_steps : int or array
        Steps a called borrower has before liquidation; 0 means no deadline.
    fee : float or array, default 0
        Liquidation penalty as a fraction of the debt closed (``0 <= fee < 1``).
    topup_prob : float or array, default 0
        Probability that a called borrower tops up at the next step (``0 <= p <= 1``).
    asset_names : sequence of str, optional
        Names of the assets by index (e.g. ``("BTC", "ETH")``). When both the book and
        the price paths carry names, :func:`ltvsim.simulate` checks that they agree.
    extra : mapping of str to array, optional
        Further per-loan columns (segments, identifiers) carried along untouched.

    Raises
    ------
    ValueError
        Naming the field, the first offending loan row and its value.

    Examples
    --------
    >>> book = LoanBook(asset=0, collateral=[1.0, 2.0], debt=[40_000, 90_000],
    ...                 margin_call_ltv=0.7, liquidation_ltv=0.8, target_ltv=0.5,
    ...                 cure_steps=3, fee=0.02, rate=0.1)
    >>> len(book)
    2
    """

    def __init__(
        self,
        *,
        asset,
        collateral,
        debt,
        margin_call_ltv,
        liquidation_ltv,
        target_ltv,
        cure_steps,
        rate=0.0,
        fee=0.0,
        topup_prob=0.0,
        asset_names=None,
        extra=None,
    ):
        values = {
            "asset": asset,
            "collateral": collateral,
            "debt": debt,
            "rate": rate,
            "margin_call_ltv": margin_call_ltv,
            "liquidation_ltv": liquidation_ltv,
            "target_ltv": target_ltv,
            "cure_steps": cure_steps,
            "fee": fee,
            "topup_prob": topup_prob,
        }
        asset_values, asset_names = _resolve_asset_names(values.pop("asset"), asset_names)
        values["asset"] = asset_values
        n_loans = _common_length(values)
        arrays = {}
        for name in FIELDS:
            convert = as_int_field if name in INT_FIELDS else as_float_field
            arrays[name] = convert(name, values[name], n_loans)
        _check_ranges(arrays)
        if asset_names is not None:
            first_bad(
                "asset",
                arrays["asset"],
                arrays["asset"] < len(asset_names),
                f"< {len(asset_names)} (the number of asset_names)",
            )
        for array in arrays.values():
            array.setflags(write=False)
        self._arrays = arrays
        self.asset_names = asset_names
        self.extra = {}
        for key, column in (extra or {}).items():
            column = np.array(column, copy=True)
            if column.shape != (n_loans,):
                raise ValueError(f"extra column {key!r} has shape {column.shape}, expected ({n_loans},)")
            column.setflags(write=False)
            self.extra[str(key)] = column

    # Field access: book.debt, book.asset, ...
    def __getattr__(self, name):
        arrays = self.__dict__.get("_arrays")
        if arrays is not None and name in arrays:
            return arrays[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def __len__(self):
        return self._arrays["debt"].shape[0]

    @property
    def n_loans(self):
        """Number of loans in the book."""
        return len(self)

    def __repr__(self):
        names = f", assets={list(self.asset_names)}" if self.asset_names else ""
        return f"LoanBook(n_loans={len(self)}{names})"

    def initial_ltv(self, prices):
        """LTV of each loan at the given step-0 price of each asset.

        Parameters
        ----------
        prices : sequence of float
            Price of each asset by index.

        Returns
        -------
        ndarray of float64, shape (n_loans,)
        """
        prices = np.asarray(prices, dtype=np.float64)
        return self.debt / (self.collateral * prices[self.asset])

    def to_dict(self):
        """Return ``{field: array}`` for every field and extra column (arrays are read-only views)."""
        out = {name: self._arrays[name] for name in FIELDS}
        out.update(self.extra)
        return out

    def subset(self, index):
        """Return a new book of the loans selected by ``index`` (slice, mask or row numbers)."""
        columns = {name: np.asarray(array[index]) for name, array in self._arrays.items()}
        extra = {name: np.asarray(array[index]) for name, array in self.extra.items()}
        return LoanBook(**columns, asset_names=self.asset_names, extra=extra)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(cls, columns, *, asset_names=None):
        """Build a book from a mapping of column name to array.

        Columns named like the fields fill them (``rate``, ``fee`` and ``topup_prob``
        may be missing); any other column is kept in :attr:`extra`.
        """
        columns = dict(columns)
        missing = [name for name in FIELDS if name not in columns and name not in OPTIONAL_FIELDS]
        if missing:
            raise ValueError(f"missing column(s) {missing}; a book needs {list(FIELDS)}")
        fields = {name: columns.pop(name) for name in FIELDS if name in columns}
        return cls(**fields, asset_names=asset_names, extra=columns)

    @classmethod
    def from_frame(cls, frame, *, asset_names=None):
        """Build a book from a pandas DataFrame (or anything with ``columns`` and ``[]``)."""
        return cls.from_arrays({str(c): np.asarray(frame[c]) for c in frame.columns}, asset_names=asset_names)

    @classmethod
    def from_csv(cls, path, *, asset_names=None):
        """Read a book from a CSV file with a header row naming the fields.

        ``asset`` may hold indices or names (``BTC``); other numeric columns must parse
        as numbers, and an unparsable cell is reported with its line number.
        """
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise ValueError(f"{path}: empty file, expected a header row") from None
            rows = [row for row in reader if row]
        for line, row in enumerate(rows, start=2):
            if len(row) != len(header):
                raise ValueError(f"{path}, line {line}: {len(row)} cells, header has {len(header)}")
        columns = {}
        for k, name in enumerate(header):
            cells = [row[k].strip() for row in rows]
            columns[name] = _parse_column(path, name, cells)
        return cls.from_arrays(columns, asset_names=asset_names)

    @classmethod
    def from_parquet(cls, path, *, asset_names=None):
        """Read a book from a Parquet file (needs the optional ``pyarrow`` dependency)."""
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("reading Parquet needs pyarrow: pip install 'ltvsim[parquet]'") from exc
        table = pq.read_table(path)
        columns = {name: table.column(name).to_numpy() for name in table.column_names}
        return cls.from_arrays(columns, asset_names=asset_names)

    @classmethod
    def from_file(cls, path, *, asset_names=None):
        """Read a book from a ``.csv`` or ``.parquet`` file, chosen by its suffix."""
        suffix = os.path.splitext(str(path))[1].lower()
        if suffix == ".csv":
            return cls.from_csv(path, asset_names=asset_names)
        if suffix in (".parquet", ".pq"):
            return cls.from_parquet(path, asset_names=asset_names)
        raise ValueError(f"{path}: unknown book format {suffix!r}; use .csv or .parquet")

    def to_csv(self, path):
        """Write the book (fields, then extra columns) as CSV with asset indices."""
        columns = self.to_dict()
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(list(columns))
            for row in zip(*(np.asarray(c).tolist() for c in columns.values())):
                writer.writerow([repr(v) if isinstance(v, float) else v for v in row])

    @classmethod
    def synthetic(
        cls,
        n_loans,
        seed=0,
        *,
        prices=None,
        initial_ltv=(0.40, 0.60),
        btc_share=0.65,
    ):
        """A realistic CeFi-style book of BTC- and ETH-backed dollar loans.

        Defaults and the public terms they reflect (see ``docs/mechanics.md``):

        * collateral: BTC with probability ``btc_share`` (0.65), else ETH;
        * initial LTV uniform over ``initial_ltv`` (40-60%); Ledn originates at 50%;
        * margin call at 70% LTV and liquidation at 80% (Ledn's and BlockFi's published
          thresholds), with a quarter of loans on a 65% / 75% product and a quarter on
          75% / 85%, so that the book does not trip at a single price;
        * target LTV after a top-up or partial sale uniform 50-60% (Ledn asks for 50%);
        * cure period 1, 2 or 3 daily steps (BlockFi gave 72 hours);
        * liquidation penalty uniform 2-5% of the debt closed (Aave v3's liquidation
          bonus on BTC and ETH is 5%);
        * interest uniform 8-14% a year (CeFi BTC loan APRs 2023-2025);
        * loan size log-normal, median $25,000 (an assumption: no public distribution);
        * top-up propensity uniform 20-80% per call (an assumption: lenders do not
          publish it).

        Parameters
        ----------
        n_loans : int
            Number of loans (>= 1).
        seed : int
            Seed of the book's random draws; the same seed gives the same book.
        prices : mapping of str to float, optional
            Step-0 price of ``"BTC"`` and ``"ETH"`` the LTVs are struck at; defaults to
            :data:`DEFAULT_PRICES`. Use the step-0 prices of the paths you simulate.
        initial_ltv : (float, float)
            Range of the uniform initial LTV. A range reaching the call level gives a
            stressed book with loans already near or inside their call band.
        btc_share : float
            Share of loans backed by BTC (the rest by ETH).

        Returns
        -------
        LoanBook
            With ``asset_names == ("BTC", "ETH")`` and an ``initial_ltv`` extra column.
        """
        n_loans = check_int("n_loans", n_loans, minimum=1)
        seed = check_int("seed", seed, minimum=0)
        low, high = (float(v) for v in initial_ltv)
        if not 0 < low <= high:
            raise ValueError(f"initial_ltv must be a range 0 < low <= high, got {initial_ltv!r}")
        if not 0 <= btc_share <= 1:
            raise ValueError(f"btc_share must be in [0, 1], got {btc_share!r}")
        prices = dict(DEFAULT_PRICES if prices is None else prices)
        missing = {"BTC", "ETH"} - set(prices)
        if missing:
            raise ValueError(f"prices lacks {sorted(missing)}")
        rng = np.random.default_rng([seed, 0x4C4F414E])  # "LOAN": a stream of its own
        asset = (rng.random(n_loans) >= btc_share).astype(np.int64)
        product = rng.choice(3, size=n_loans, p=[0.5, 0.25, 0.25])
        margin_call_ltv = np.array([0.70, 0.65, 0.75])[product]
        liquidation_ltv = np.array([0.80, 0.75, 0.85])[product]
        ltv0 = rng.uniform(low, high, n_loans)
        debt = np.round(np.exp(rng.normal(np.log(25_000.0), 1.0, n_loans)), 2)
        debt = np.maximum(debt, 100.0)
        price0 = np.array([prices["BTC"], prices["ETH"]], dtype=np.float64)[asset]
        collateral = debt / (ltv0 * price0)
        return cls(
            asset=asset,
            collateral=collateral,
            debt=debt,
            rate=rng.uniform(0.08, 0.14, n_loans),
            margin_call_ltv=margin_call_ltv,
            liquidation_ltv=liquidation_ltv,
            target_ltv=np.minimum(rng.uniform(0.50, 0.60, n_loans), margin_call_ltv - 0.05),
            cure_steps=rng.integers(1, 4, n_loans),
            fee=rng.uniform(0.02, 0.05, n_loans),
            topup_prob=rng.uniform(0.2, 0.8, n_loans),
            asset_names=("BTC", "ETH"),
            extra={"initial_ltv": ltv0},
        )


def _resolve_asset_names(asset, asset_names):
    """Map asset names to indices; return (asset values, names tuple or None)."""
    if asset_names is not None:
        asset_names = tuple(str(a) for a in asset_names)
        if len(set(asset_names)) != len(asset_names):
            raise ValueError(f"asset_names must be unique, got {asset_names}")
    array = np.asarray(asset)
    if array.dtype.kind not in "USO":
        return asset, asset_names
    labels = [str(a) for a in array.reshape(-1)]
    if asset_names is None:
        asset_names = tuple(sorted(set(labels)))
    lookup = {name: k for k, name in enumerate(asset_names)}
    for row, label in enumerate(labels):
        if label not in lookup:
            raise ValueError(f"asset[{row}] (loan row {row}) = {label!r}: must be one of {list(asset_names)}")
    indices = np.array([lookup[label] for label in labels], dtype=np.int64)
    return indices.reshape(array.shape), asset_names


def _common_length(values):
    lengths = {}
    for name, value in values.items():
        if isinstance(value, (str, bytes)):
            continue
        shape = np.shape(value)
        if len(shape) == 1:
            lengths[name] = shape[0]
    if not lengths:
        return 1
    distinct = set(lengths.values())
    if len(distinct) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in lengths.items())
        raise ValueError(f"fields have different lengths ({detail}); give one value per loan or a scalar")
    n_loans = distinct.pop()
    if n_loans == 0:
        raise ValueError("a book needs at least one loan (all fields are empty)")
    return n_loans


def _check_ranges(a):
    """Apply the spec's validity table."""
    finite = np.isfinite
    first_bad("asset", a["asset"], a["asset"] >= 0, ">= 0 (an index into the price paths' assets)")
    first_bad("collateral", a["collateral"], finite(a["collateral"]) & (a["collateral"] > 0), "finite and > 0")
    first_bad("debt", a["debt"], finite(a["debt"]) & (a["debt"] > 0), "finite and > 0")
    first_bad("rate", a["rate"], finite(a["rate"]) & (a["rate"] >= 0), "finite and >= 0")
    m, l, tau = a["margin_call_ltv"], a["liquidation_ltv"], a["target_ltv"]
    first_bad("liquidation_ltv", l, finite(l) & (l > 0), "finite and > 0")
    first_bad("margin_call_ltv", m, finite(m) & (m > 0), "finite and > 0")
    first_bad("margin_call_ltv", m, m <= l, "<= liquidation_ltv of the same loan")
    first_bad("target_ltv", tau, finite(tau) & (tau > 0), "finite and > 0")
    first_bad("target_ltv", tau, tau < m, "< margin_call_ltv of the same loan")
    first_bad("cure_steps", a["cure_steps"], a["cure_steps"] >= 0, ">= 0 (0 = no deadline)")
    first_bad("fee", a["fee"], finite(a["fee"]) & (a["fee"] >= 0) & (a["fee"] < 1), "in [0, 1)")
    p = a["topup_prob"]
    first_bad("topup_prob", p, finite(p) & (p >= 0) & (p <= 1), "in [0, 1]")


def _parse_column(path, name, cells):
    try:
        return np.array([int(c) for c in cells], dtype=np.int64)
    except ValueError:
        pass
    try:
        return np.array([float(c) for c in cells], dtype=np.float64)
    except ValueError:
        pass
    if name == "asset" or name not in FIELDS:
        return np.array(cells, dtype=object if name != "asset" else str)
    for line, cell in enumerate(cells, start=2):
        try:
            float(cell)
        except ValueError:
            raise ValueError(f"{path}, line {line}: {name} = {cell!r} is not a number") from None
    raise AssertionError("unreachable")  # pragma: no cover
