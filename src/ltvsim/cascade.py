"""Market impact and lenders' liquidation rules: the options of the coupled kernel.

:class:`MarketImpact` makes forced sales move the price the other loans of the same path
see (the deleveraging cascade); :class:`LiquidationRules` adds the rules of real
lenders (Aave-style close factor and bonus, a dust threshold, a per-step sale limit).
``docs/cascades.md`` explains both, with their public sources.
"""
from dataclasses import dataclass

import numpy as np

from ._validation import describe
from .backends._coupled_args import (
    MODE_CLOSE_FACTOR,
    MODE_FULL,
    MODE_PARTIAL,
    CoupledOptions,
)

IMPACT_LAWS = ("sqrt", "linear")


def _per_asset(name, value, n_assets, asset_names, *, low, high=np.inf, low_open=False, allow_inf=False):
    """A per-asset float array from a number, a sequence or a {asset name: value} dict."""
    if isinstance(value, dict):
        if asset_names is None:
            raise ValueError(f"{name} is given by asset name, but neither the book nor the paths name their assets")
        unknown = sorted(set(value) - set(asset_names))
        if unknown:
            raise ValueError(f"{name} names unknown asset(s) {unknown}; the assets are {list(asset_names)}")
        missing = [a for a in asset_names if a not in value]
        if missing:
            raise ValueError(f"{name} has no value for asset(s) {missing}")
        value = [value[a] for a in asset_names]
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, one number per asset or a dict by asset name, got {describe(value)}") from None
    if array.ndim == 0:
        array = np.full(n_assets, float(array))
    if array.shape != (n_assets,):
        raise ValueError(f"{name} must be a number or one value per asset ({n_assets}), got shape {array.shape}")
    for k, v in enumerate(array):
        ok = (v > low if low_open else v >= low) and v <= high and (np.isfinite(v) or (allow_inf and v == np.inf))
        if not ok:
            label = asset_names[k] if asset_names else k
            bound = f"{'>' if low_open else '>='} {low}" + ("" if high == np.inf else f" and <= {high}")
            raise ValueError(f"{name}[{label!r}] (asset {k}) = {float(v)!r}: must be {'' if allow_inf else 'finite and '}{bound}")
    return np.ascontiguousarray(array)


@dataclass(frozen=True)
class MarketImpact:
    """How forced sales move the price of each asset on a path.

    Parameters
    ----------
    depth : float, sequence or dict
        Per asset (one value for all, one per asset, or ``{name: value}``): the
        quote-currency notional that, sold at once, lowers the log price by
        ``depth_move`` (the "2% market depth" that exchanges and market-data vendors
        report). ``inf`` means no impact for that asset.
    law : {"sqrt", "linear"}
        Impact of a round's sold notional ``N``: ``depth_move * sqrt(N / depth)`` (the
        square-root law of meta-orders) or ``depth_move * N / depth``.
    depth_move : float or per asset
        Log-price move of selling ``depth`` (default 0.02).
    permanent : float or per asset
        Share of each round's impact that never decays (default 0.5).
    half_life : float or None
        Half-life, in years like ``dt``, of the rest (``1 / 365``: one day). ``None``:
        the rest never recovers either.
    max_rounds : int
        Most liquidation rounds per step and path (default 10).
    """

    depth: object
    law: str = "sqrt"
    depth_move: object = 0.02
    permanent: object = 0.5
    half_life: object = 1 / 365
    max_rounds: int = 10

    def __post_init__(self):
        if self.law not in IMPACT_LAWS:
            raise ValueError(f"law must be one of {IMPACT_LAWS}, got {self.law!r}")
        if self.half_life is not None and not (
            isinstance(self.half_life, (int, float, np.floating, np.integer)) and np.isfinite(self.half_life) and self.half_life > 0
        ):
            raise ValueError(f"half_life must be a finite number of years > 0 or None, got {describe(self.half_life)}")
        if isinstance(self.max_rounds, bool) or not isinstance(self.max_rounds, (int, np.integer)) or self.max_rounds < 1:
            raise ValueError(f"max_rounds must be an integer >= 1, got {describe(self.max_rounds)}")


@dataclass(frozen=True)
class LiquidationRules:
    """Rules of real lenders on top of the spec's liquidation.

    Parameters
    ----------
    close_factor : float
        With ``simulate(..., liquidation="close_factor")``: share of the debt one
        liquidation may repay (Aave v3: 0.5). The collateral sold is the debt repaid
        times ``1 + fee`` (the loan's ``fee`` is read as the liquidation bonus, paid in
        collateral) at the price before the sale.
    full_close_health : float
        Health factor (``liquidation_ltv / LTV``) at or below which the whole debt may
        be repaid at once (Aave v3: 0.95).
    min_liquidation : float
        Dust threshold in quote currency: a partial or close-factor liquidation that
        would repay less than this, or leave less debt than this, closes the loan in
        full instead (Aave v3.3 leaves no position under $1,000). 0: off.
    max_sell : None, float, sequence or dict
        Units of each asset that liquidations may sell per path and step (auction
        throughput, as MakerDAO's ``hole``/``Hole`` limits). Orders beyond it are filled
        pro rata; the rest waits for the next step. ``None``: no limit.
    """

    close_factor: float = 0.5
    full_close_health: float = 0.95
    min_liquidation: float = 0.0
    max_sell: object = None

    def __post_init__(self):
        for name, low, high in (("close_factor", 0.0, 1.0), ("full_close_health", 0.0, 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not (low < value <= high):
                raise ValueError(f"{name} must be a number in ({low}, {high}], got {describe(value)}")
        value = self.min_liquidation
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not (np.isfinite(value) and value >= 0):
            raise ValueError(f"min_liquidation must be a finite number >= 0, got {describe(value)}")


def needs_coupled_kernel(liquidation, impact, rules, crossings):
    """Whether a run needs the coupled kernel rather than the core one (``rules`` may be a
    :class:`LiquidationRules` or its description as a dict)."""
    if impact is not None or crossings or liquidation == "close_factor":
        return True
    if rules is None:
        return False
    if isinstance(rules, dict):
        return rules.get("min_liquidation", 0.0) > 0 or rules.get("max_sell") is not None
    return rules.min_liquidation > 0 or rules.max_sell is not None


def check_option_types(impact, rules, crossings):
    """Refuse options of the wrong type (before anything else looks at them)."""
    if impact is not None and not isinstance(impact, MarketImpact):
        raise TypeError(f"impact must be a MarketImpact or None, got {type(impact).__name__}")
    if rules is not None and not isinstance(rules, LiquidationRules):
        raise TypeError(f"rules must be a LiquidationRules or None, got {type(rules).__name__}")
    if not isinstance(crossings, (bool, np.bool_)):
        raise TypeError(f"crossings must be True or False, got {crossings!r}")


def coupled_options(liquidation, impact, rules, crossings, n_assets, asset_names, dt):
    """The kernels' :class:`CoupledOptions` (crossing variances filled per block later)."""
    check_option_types(impact, rules, crossings)
    rules = rules or LiquidationRules()
    mode = {"full": MODE_FULL, "partial": MODE_PARTIAL, "close_factor": MODE_CLOSE_FACTOR}[liquidation]
    if impact is None:
        depth = np.full(n_assets, np.inf)
        depth_move, permanent, decay = np.full(n_assets, 0.02), np.ones(n_assets), np.ones(n_assets)
        sqrt_law, max_rounds = np.ones(n_assets, dtype=np.int64), 1
    else:
        depth = _per_asset("depth", impact.depth, n_assets, asset_names, low=0.0, low_open=True, allow_inf=True)
        depth_move = _per_asset("depth_move", impact.depth_move, n_assets, asset_names, low=0.0, low_open=True)
        permanent = _per_asset("permanent", impact.permanent, n_assets, asset_names, low=0.0, high=1.0)
        decay_one = 1.0 if impact.half_life is None else 0.5 ** (dt / float(impact.half_life))
        decay = np.full(n_assets, decay_one)
        sqrt_law = np.full(n_assets, int(impact.law == "sqrt"), dtype=np.int64)
        max_rounds = int(impact.max_rounds)
    max_sell = (np.full(n_assets, np.inf) if rules.max_sell is None else
                _per_asset("max_sell", rules.max_sell, n_assets, asset_names, low=0.0, low_open=True, allow_inf=True))
    return CoupledOptions(
        mode=mode,
        close_factor=float(rules.close_factor),
        full_close_ltv=1.0 / float(rules.full_close_health),
        min_liquidation=float(rules.min_liquidation),
        max_sell=max_sell,
        depth=depth,
        depth_move=depth_move,
        sqrt_law=sqrt_law,
        permanent=permanent,
        decay=decay,
        max_rounds=max_rounds,
        bridge=bool(crossings),
        bridge_variance=np.zeros((0, 0, 0)),
    )


__all__ = ["MarketImpact", "LiquidationRules"]
