"""Deterministic stress paths: instantaneous shocks, historical replays, a BTC floor.

Every scenario returns a one-path :class:`PricePaths` starting from today's prices, so it
runs through :func:`ltvsim.simulate` like any simulated set of paths.

* :func:`shock`: every asset moves by ``size`` (e.g. -0.25, -0.50) at step 1 and stays.
* :func:`replay`: the daily returns of a historical window (built-in: ``covid_2020``,
  ``may_2021``, ``terra_2022``, ``ftx_2022``, ``oct_2025``; see :func:`replays`) applied
  to today's prices, so the path's moves, and hence its drawdown, are the window's.
* :func:`replay_history`: the same from any window of a user's CSV history.
* :func:`production_cost`: BTC falls to its estimated production cost (about $13,000 to
  $15,000, the floor bank strategists pointed to after FTX's collapse in November 2022;
  default $14,000), log-linearly over ``n_steps``; other assets fall in proportion.
"""
import csv
import json
import math
from importlib import resources

import numpy as np

from ._driver import resolve_s0
from ._price_paths import PricePaths
from .history import History, load_history

DAY = 1 / 365
PRODUCTION_COST_RANGE = (13_000.0, 15_000.0)
PRODUCTION_COST = 14_000.0


def _assets_and_s0(s0, assets):
    if isinstance(s0, dict):
        names = tuple(str(a) for a in s0)
        if assets is not None and tuple(assets) != names:
            raise ValueError(f"assets {list(assets)} do not match the keys of s0 {list(names)}")
        values = list(s0.values())
    else:
        values = np.atleast_1d(np.asarray(s0, dtype=np.float64)).tolist()
        names = tuple(assets) if assets is not None else tuple(f"asset{i}" for i in range(len(values)))
        if len(names) != len(values):
            raise ValueError(f"assets names {len(names)} assets, s0 has {len(values)} prices")
    return names, resolve_s0(values, values, names)


def _path(s0, gross, dt, assets):
    """``s0 * cumprod(gross)`` as a one-path PricePaths; ``gross`` is ``[n_steps, n_assets]``."""
    prices = np.empty((1, gross.shape[0] + 1, s0.size))
    prices[0, 0] = s0
    prices[0, 1:] = s0 * np.cumprod(gross, axis=0)
    return PricePaths(prices, dt=dt, assets=assets, copy=False)


def shock(s0, size, *, assets=None, n_steps=1, dt=DAY):
    """Instantaneous move of ``size`` (fraction, e.g. -0.25) at step 1, flat afterwards.

    ``s0`` is a price per asset (or a dict ``{asset: price}``); ``size`` a scalar or one
    per asset, > -1.
    """
    names, s0 = _assets_and_s0(s0, assets)
    size = np.broadcast_to(np.asarray(size, dtype=np.float64), s0.shape)
    bad = ~(np.isfinite(size) & (size > -1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"shock size [{names[i]}] = {size[i]!r}: must be a finite fraction > -1 (e.g. -0.25)")
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    gross = np.ones((n_steps, s0.size))
    gross[0] = 1.0 + size
    return _path(s0, gross, dt, names)


def replays():
    """Metadata of the built-in replay windows: ``{name: {title, start, end, assets, sources, ...}}``."""
    text = resources.files("ltvsim").joinpath("data", "replays.json").read_text(encoding="utf-8")
    return json.loads(text)


def replay_table(name):
    """``(dates, {asset: simple daily returns})`` of a built-in window."""
    index = replays()
    if name not in index:
        raise KeyError(f"unknown replay {name!r}; built-in: {sorted(index)}")
    text = resources.files("ltvsim").joinpath("data", index[name]["file"]).read_text(encoding="utf-8")
    rows = list(csv.reader(text.splitlines()))
    header, body = rows[0], rows[1:]
    dates = np.array([r[0] for r in body], dtype="datetime64[D]")
    return dates, {a: np.array([float(r[i]) for r in body]) for i, a in enumerate(header) if i > 0}


def replay(name, s0, *, assets=None, dt=DAY):
    """Replay a built-in historical window from today's prices ``s0``.

    Parameters
    ----------
    name : str
        One of :func:`replays` (``covid_2020``, ``may_2021``, ``terra_2022``,
        ``ftx_2022``, ``oct_2025``).
    s0 : dict or sequence
        Today's price per asset (``{"BTC": 95_000, "ETH": 3_500}``); every asset must be
        covered by the window (see ``replays()[name]["assets"]``).
    dt : float
        Step length recorded on the paths (the window is daily).
    """
    names, s0 = _assets_and_s0(s0, assets)
    dates, table = replay_table(name)
    missing = [a for a in names if a not in table]
    if missing:
        meta = replays()[name]
        raise KeyError(f"unknown asset(s) {missing} for replay {name!r}: it has data for {meta['assets']}"
                       + (f" ({meta['note']})" if "note" in meta else ""))
    gross = 1.0 + np.column_stack([table[a] for a in names])
    return _path(s0, gross, dt, names)


def replay_history(history, start, end, s0=None, *, dt=DAY):
    """Replay the closes of ``history`` (a :class:`History` or sources for
    :func:`load_history`) between ``start`` and ``end`` from today's prices ``s0``
    (default: the window's own first prices). Missing days inside the window are refused.
    """
    if not isinstance(history, History):
        history = load_history(history)
    window = history.window(start, end)
    if window.report.dropped_returns:
        raise ValueError(f"the window {start} .. {end} has missing days {window.report.dropped_returns}; "
                         "a replay needs every calendar day")
    if s0 is None:
        s0 = dict(zip(window.assets, window.prices[0]))
    if isinstance(s0, dict):
        unknown = [a for a in s0 if a not in window.assets]
        if unknown:
            raise KeyError(f"unknown asset(s) {unknown}; the history has {list(window.assets)}")
        window = window.select(list(s0))
    names, s0 = _assets_and_s0(s0, window.assets if not isinstance(s0, dict) else None)
    gross = window.prices[1:] / window.prices[:-1]
    return _path(s0, gross, dt, names)


def production_cost(s0, *, floor=PRODUCTION_COST, n_steps=1, dt=DAY, betas=None):
    """BTC falls to ``floor`` (its estimated production cost) over ``n_steps`` steps.

    ``s0`` is a dict of today's prices that includes ``"BTC"``; BTC's log price falls in
    equal steps to ``log(floor)``. Other assets move by ``beta`` times BTC's log return
    (``betas``: dict, default 1 for every asset). If BTC is already at or below the
    floor the path is flat.
    """
    if not isinstance(s0, dict) or "BTC" not in s0:
        raise KeyError("production_cost needs s0 as a dict of today's prices including 'BTC'")
    if not (math.isfinite(floor) and floor > 0):
        raise ValueError(f"floor must be a price > 0, got {floor!r}")
    names, prices = _assets_and_s0(s0, None)
    betas = dict(betas or {})
    unknown = [a for a in betas if a not in names]
    if unknown:
        raise KeyError(f"unknown asset(s) {unknown} in betas; s0 has {list(names)}")
    total = min(0.0, math.log(floor / s0["BTC"]))
    beta = np.array([1.0 if a == "BTC" else float(betas.get(a, 1.0)) for a in names])
    step = np.exp(beta * total / n_steps)
    return _path(prices, np.tile(step, (n_steps, 1)), dt, names)


def max_drawdown(prices):
    """Largest fall from a running peak, as a fraction, of a 1-D price series."""
    prices = np.asarray(prices, dtype=np.float64)
    peak = np.maximum.accumulate(prices)
    return float(np.max(1.0 - prices / peak))


def scenario(name, s0, **kwargs):
    """A named scenario: ``shock_25``, ``shock_50``, ``btc_production_cost`` or a replay name."""
    if name == "shock_25":
        return shock(s0, -0.25, **kwargs)
    if name == "shock_50":
        return shock(s0, -0.50, **kwargs)
    if name == "btc_production_cost":
        return production_cost(s0, **kwargs)
    if name in replays():
        return replay(name, s0, **kwargs)
    raise KeyError(f"unknown scenario {name!r}; known: shock_25, shock_50, btc_production_cost, {', '.join(sorted(replays()))}")


def scenario_names():
    return ["shock_25", "shock_50", "btc_production_cost", *sorted(replays())]
