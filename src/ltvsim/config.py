"""Run configuration files for ``ltvsim run CONFIG.toml``.

A config file has four tables, every one optional (``examples/batch.toml`` documents
each key):

* ``[run]``: sizes, seed, block size, backend, threads, liquidation, output, cluster;
* ``[book]``: a synthetic book (``loans``, ``seed``, ``initial_ltv``, ``btc_share``) or a
  ``file`` (CSV or Parquet);
* ``[market]``: the price model, given inline (``model = "gbm"`` and its parameters, as
  :meth:`ltvsim.paths.ModelParams.save` writes them), as a ``params`` file, or
  calibrated on daily price history (``calibrate = "gbm"`` and ``history``);
* ``[report]``: the VaR / ES level and ``quiet``;
* ``[impact]``: market impact of forced sales (:class:`ltvsim.MarketImpact`; present =
  on), and ``[rules]``: lenders' liquidation rules (:class:`ltvsim.LiquidationRules`).

Every key is declared below with its check, so an unknown key or a bad value is
reported with the file, the table and the key. Relative file names in a config are
relative to the config file's directory.
"""
import math
import os

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from . import backends
from .book import LoanBook
from .simulate import LIQUIDATION_MODES


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


class _Bad(Exception):
    """Raised by a check with the text completing "<key> = <value>: ..."."""


# ---- checks (each returns the value, converted, or raises _Bad) ------------------------
def integer(minimum):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"must be an integer >= {minimum}")
        if value < minimum:
            raise _Bad(f"must be >= {minimum}")
        return value

    return check


def positive_number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise _Bad("must be a finite number > 0")
    return float(value)


def fraction(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise _Bad("must be a number in [0, 1]")
    return float(value)


def level(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise _Bad("must be a number in (0, 1), e.g. 0.99")
    return float(value)


def boolean(value):
    if not isinstance(value, bool):
        raise _Bad("must be true or false")
    return value


def text(value):
    if not isinstance(value, str) or not value:
        raise _Bad("must be a non-empty string")
    return value


def one_of(*choices):
    def check(value):
        if value not in choices:
            raise _Bad(f"must be one of {', '.join(repr(c) for c in choices)}")
        return value

    return check


def ltv_range(value):
    if (not isinstance(value, list) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)
            or not 0 < value[0] <= value[1] < float("inf")):
        raise _Bad("must be a range [low, high] with 0 < low <= high, both finite")
    return (float(value[0]), float(value[1]))


def file_path(value):
    return text(value)  # resolved against the config's directory afterwards


def per_asset_amount(value):
    if isinstance(value, bool):
        raise _Bad("must be a number > 0 or a table {BTC = ..., ETH = ...}")
    if isinstance(value, (int, float)) and value > 0:
        return float(value)
    if isinstance(value, dict) and value and all(
            not isinstance(v, bool) and isinstance(v, (int, float)) and v > 0 for v in value.values()):
        return {k: float(v) for k, v in value.items()}
    raise _Bad("must be a number > 0 or a table {BTC = ..., ETH = ...} of numbers > 0")


def nonnegative_number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise _Bad("must be a finite number >= 0")
    return float(value)


def history_sources(value):
    if isinstance(value, str) and value:
        return value
    if (isinstance(value, dict) and value and all(
            isinstance(v, str) or (isinstance(v, list) and v and all(isinstance(p, str) for p in v))
            for v in value.values())):
        return value
    raise _Bad('must be a CSV file name, or a table {BTC = "btc.csv", ETH = ["eth-1.csv", "eth-2.csv"]}')


# ---- the schema: table -> key -> (check, meaning) ---------------------------------------
MODELS = ("gbm", "merton", "garch", "regime", "bootstrap")

SCHEMA = {
    "run": {
        "paths": (integer(1), "Monte Carlo price paths"),
        "steps": (integer(1), "steps after step 0"),
        "dt": (positive_number, "step length in years (1/365 = daily)"),
        "seed": (integer(0), "seed of the paths, the top-up draws and (by default) the synthetic book"),
        "block_paths": (integer(1), "paths per block (the unit checkpointed and sent to a worker)"),
        "liquidation": (one_of(*LIQUIDATION_MODES), "sell all collateral, or just enough to restore the target LTV"),
        "backend": (one_of("auto", *backends.NAMES), "kernel"),
        "threads": (integer(1), "threads of the compiled backends"),
        "record_steps": (boolean, "keep collateral sold and loss per path and step"),
        "antithetic": (boolean, "antithetic pairs of paths"),
        "out": (file_path, "output directory: checkpoint (resume) and result files"),
        "keep_blocks": (boolean, "keep the checkpoint files after the result is written"),
        "scheduler": (text, "dask.distributed scheduler address, e.g. tcp://10.0.0.5:8786"),
        "crossings": (boolean, "also liquidate on crossings between steps (Brownian bridge)"),
    },
    "book": {
        "file": (file_path, "a .csv or .parquet book instead of a synthetic one"),
        "loans": (integer(1), "loans in the synthetic book"),
        "seed": (integer(0), "seed of the synthetic book (default: run.seed)"),
        "initial_ltv": (ltv_range, "range of the synthetic book's uniform initial LTV"),
        "btc_share": (fraction, "share of BTC-backed loans in the synthetic book"),
    },
    "market": {
        "params": (file_path, "a model parameter file (.toml or .json) written by ModelParams.save"),
        "calibrate": (one_of(*MODELS), "fit this model to daily price history"),
        "history": (history_sources, "price CSVs to calibrate on, by asset"),
        "start": (text, "first date of the history used (YYYY-MM-DD)"),
        "end": (text, "last date of the history used (YYYY-MM-DD)"),
        "column": (text, "price column of the CSVs (default close)"),
        "block_length": (integer(1), "bootstrap: mean block length in days"),
        "stationary": (boolean, "bootstrap: stationary (random) block lengths"),
        "model": (one_of(*MODELS), "inline parameters: the model; its parameters follow as keys"),
    },
    "report": {
        "level": (level, "level of the VaR and ES shown"),
        "quiet": (boolean, "print the summary only"),
    },
    "impact": {
        "depth": (per_asset_amount, "notional (quote) that moves the log price by depth_move, by asset"),
        "law": (one_of("sqrt", "linear"), "impact of a round's notional: square-root or linear"),
        "depth_move": (positive_number, "log-price move of selling depth (default 0.02)"),
        "permanent": (fraction, "share of impact that never decays (default 0.5)"),
        "half_life_days": (positive_number, "half-life of the rest, in days (default 1; omit with permanent = 1)"),
        "max_rounds": (integer(1), "liquidation rounds per step (default 10)"),
    },
    "rules": {
        "close_factor": (fraction, "liquidation = close_factor: share of debt one liquidation repays (0.5)"),
        "full_close_health": (fraction, "health factor at or below which all debt may be repaid (0.95)"),
        "min_liquidation": (nonnegative_number, "dust threshold in quote currency (0: off)"),
        "max_sell": (per_asset_amount, "units of collateral sellable per path and step, by asset"),
    },
}

#: Keys whose values are file names (made relative to the config file's directory).
PATH_KEYS = {("run", "out"), ("book", "file"), ("market", "params")}
CALIBRATION_KEYS = {"calibrate", "history", "start", "end", "column", "block_length", "stationary"}
#: Calibration keys that are also parameters of some models (RegimeParams.start,
#: BootstrapParams.block_length and .stationary): with inline ``model = ...`` they are
#: the model's, and the model checks them.
MODEL_PARAMETER_KEYS = CALIBRATION_KEYS - {"calibrate", "history"}


def load_config(path):
    """Read and check a config file.

    Returns
    -------
    dict
        ``{"run": {...}, "book": {...}, "market": {...}, "report": {...}, "path": str}``
        with checked values and file names made absolute; inline model parameters stay
        in ``market`` for :func:`build_model`.

    Raises
    ------
    ConfigError
        Naming the file, the table and the key.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    base = os.path.dirname(os.path.abspath(path))
    unknown = sorted(set(data) - set(SCHEMA))
    if unknown:
        raise ConfigError(f"{path}: unknown table or key {unknown[0]!r}; the tables are {', '.join(f'[{t}]' for t in SCHEMA)}")
    out = {"path": path}
    for table, keys in SCHEMA.items():
        section = data.get(table, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: {table} must be a table ([{table}]), got {section!r}")
        checked = {}
        inline_model = table == "market" and "model" in section
        for key, value in section.items():
            if key not in keys or (inline_model and key in MODEL_PARAMETER_KEYS):
                if inline_model:
                    checked[key] = value  # a model parameter: checked by the model
                    continue
                hint = " (model parameters go with model = \"gbm\" or another model)" if table == "market" else ""
                raise ConfigError(f"{path}: unknown key {key!r} in [{table}]; known keys: {', '.join(keys)}{hint}")
            check, _ = keys[key]
            try:
                value = check(value)
            except _Bad as exc:
                raise ConfigError(f"{path}: [{table}] {key} = {value!r}: {exc}") from None
            if (table, key) in PATH_KEYS:
                value = os.path.join(base, os.path.expanduser(value))
            if table == "market" and key == "history":
                value = _absolute_sources(value, base)
            checked[key] = value
        out[table] = checked
    _check_market_mode(out["market"], path)
    if out["impact"] and "depth" not in out["impact"]:
        raise ConfigError(f"{path}: [impact] needs depth = ... (a number, or a table by asset)")
    if "file" in out["book"]:
        extra = sorted(set(out["book"]) - {"file"})
        if extra:
            raise ConfigError(f"{path}: [book] file = ... reads a book; {', '.join(extra)} only apply to a synthetic book")
    return out


def _absolute_sources(value, base):
    if isinstance(value, str):
        return os.path.join(base, value)
    return {a: os.path.join(base, v) if isinstance(v, str) else [os.path.join(base, p) for p in v] for a, v in value.items()}


def _check_market_mode(market, path):
    modes = [k for k in ("model", "params", "calibrate") if k in market]
    if len(modes) > 1:
        raise ConfigError(f"{path}: [market] takes one of model, params or calibrate, got {', '.join(modes)}")
    if not modes and market:
        raise ConfigError(f"{path}: [market] needs model = ..., params = ... or calibrate = ... (got {', '.join(market)})")
    if "calibrate" in market and "history" not in market:
        raise ConfigError(f"{path}: [market] calibrate = {market['calibrate']!r} needs history = ... (price CSVs)")
    stray = set(market) & CALIBRATION_KEYS - {"calibrate"} if "calibrate" not in market else set()
    if "model" in market:
        stray -= MODEL_PARAMETER_KEYS
    if stray:
        raise ConfigError(f"{path}: [market] {', '.join(sorted(stray))} only apply with calibrate = ...")
    if "calibrate" in market and market["calibrate"] != "bootstrap":
        stray = {"block_length", "stationary"} & set(market)
        if stray:
            raise ConfigError(f"{path}: [market] {', '.join(sorted(stray))} only apply with calibrate = \"bootstrap\"")
    if "params" in market and len(market) > 1:
        raise ConfigError(f"{path}: [market] params = ... reads every parameter from its file; "
                          f"remove {', '.join(sorted(set(market) - {'params'}))}")


def build_model(market, default, source="[market]"):
    """The market model of a checked ``[market]`` table (``default`` when it is empty)."""
    from . import paths as p

    try:
        if not market:
            return default
        if "params" in market:
            return p.load_params(market["params"])
        if "calibrate" in market:
            history = p.load_history(market["history"], start=market.get("start"), end=market.get("end"),
                                     column=market.get("column", "close"))
            if market["calibrate"] == "bootstrap":
                return p.bootstrap_from_history(history, block_length=market.get("block_length", 10),
                                                stationary=market.get("stationary", False))
            fit = {"gbm": p.fit_gbm, "merton": p.fit_merton, "garch": p.fit_garch, "regime": p.fit_regime}
            return fit[market["calibrate"]](history)
        p.params._import_models()
        return p.ModelParams.from_dict(market)
    except (TypeError, ValueError, KeyError, OSError) as exc:
        raise ConfigError(f"{source}: {_text(exc)}") from None


def build_impact(table, source="[impact]"):
    """The :class:`ltvsim.MarketImpact` of a checked ``[impact]`` table (None if empty)."""
    from .cascade import MarketImpact

    if not table:
        return None
    options = {k: table[k] for k in ("law", "depth_move", "permanent", "max_rounds") if k in table}
    if "half_life_days" in table:
        options["half_life"] = table["half_life_days"] / 365.0
    try:
        return MarketImpact(depth=table["depth"], **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None


def build_rules(table, source="[rules]"):
    """The :class:`ltvsim.LiquidationRules` of a checked ``[rules]`` table (None if empty)."""
    from .cascade import LiquidationRules

    if not table:
        return None
    try:
        return LiquidationRules(**table)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None


def build_book(book, model, seed, source="[book]"):
    """The loan book of a checked ``[book]`` table on ``model``'s assets.

    Returns ``(LoanBook, description)``.
    """
    if "file" in book:
        if not os.path.isfile(book["file"]):
            reason = "not a file" if os.path.exists(book["file"]) else "no such file"
            raise FileNotFoundError(f"{source} {book['file']}: {reason}")
        return LoanBook.from_file(book["file"], asset_names=model.assets), os.path.abspath(book["file"])
    prices = {a: float(s) for a, s in zip(model.assets, model.s0)}
    if not {"BTC", "ETH"} <= set(prices):
        raise ValueError(f"a synthetic book holds BTC and ETH loans, but the market's assets are "
                         f"{list(model.assets)}; give a book file ({source} file = ...)")
    n, book_seed = book["loans"], book.get("seed", seed)
    options = {k: book[k] for k in ("initial_ltv", "btc_share") if k in book}
    built = LoanBook.synthetic(n, seed=book_seed, prices=prices, **options)
    shown = "".join(f", {k}={v!r}" for k, v in options.items())
    return built, f"LoanBook.synthetic({n}, seed={book_seed}{shown})"


def _text(exc):
    return exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)


__all__ = ["ConfigError", "SCHEMA", "build_book", "build_impact", "build_model", "build_rules", "load_config"]
