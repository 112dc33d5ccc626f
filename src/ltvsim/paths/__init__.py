"""Price paths: the validated container, the market models that fill it, calibration on
daily history, stress scenarios and reproducible streams.

Models (each a parameter object with ``paths(...)`` and ``stream(...)``):
:class:`GBMParams`, :class:`MertonParams`, :class:`GARCHParams`, :class:`RegimeParams`,
:class:`BootstrapParams`. Fits: :func:`fit_gbm`, :func:`fit_merton`, :func:`fit_garch`,
:func:`fit_regime`, :func:`bootstrap_from_history` on a :class:`History` from
:func:`load_history`. Scenarios: :func:`shock`, :func:`replay`, :func:`replay_history`,
:func:`production_cost`, :func:`scenario`.
"""
from ._price_paths import PricePaths
from .bootstrap import BootstrapParams
from .calibrate import bootstrap_from_history, fit_garch, fit_gbm, fit_merton, fit_regime
from .garch import GARCHParams
from .gbm import GBMParams, gbm
from .history import History, load_history, read_price_csv
from .merton import MertonParams
from .params import ModelParams, load_params
from .regime import RegimeParams
from .scenarios import (
    max_drawdown,
    production_cost,
    replay,
    replay_history,
    replays,
    scenario,
    scenario_names,
    shock,
)

__all__ = [
    "BootstrapParams",
    "GARCHParams",
    "GBMParams",
    "History",
    "MertonParams",
    "ModelParams",
    "PricePaths",
    "RegimeParams",
    "bootstrap_from_history",
    "fit_garch",
    "fit_gbm",
    "fit_merton",
    "fit_regime",
    "gbm",
    "load_history",
    "load_params",
    "max_drawdown",
    "production_cost",
    "read_price_csv",
    "replay",
    "replay_history",
    "replays",
    "scenario",
    "scenario_names",
    "shock",
]
