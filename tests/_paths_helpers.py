"""Shared fixtures for the paths tests: model parameter sets and the shared data folder."""
from pathlib import Path

import numpy as np
import pytest

from ltvsim.paths import BootstrapParams, GARCHParams, GBMParams, MertonParams, RegimeParams

DATA = Path(__file__).parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared price data not found at {DATA} (tests read it from there)")

CORR = [[1.0, 0.7], [0.7, 1.0]]


def models():
    """One parameter set per model, two assets."""
    rng = np.random.default_rng(5)
    return {
        "gbm": GBMParams(assets=["BTC", "ETH"], s0=[60_000.0, 3_000.0], mu=[0.1, 0.05], sigma=[0.6, 0.8], corr=CORR),
        "merton": MertonParams(assets=["BTC", "ETH"], s0=[60_000.0, 3_000.0], mu=0.0, sigma=[0.5, 0.7], corr=CORR,
                               jump_rate=[4, 6], jump_mean=-0.04, jump_std=0.05, common_rate=3,
                               common_mean=[-0.1, -0.14], common_std=[0.04, 0.06]),
        "garch": GARCHParams(assets=["BTC", "ETH"], s0=[60_000.0, 3_000.0], omega=[1.5e-5, 3e-5], alpha=[0.08, 0.1],
                             beta=[0.9, 0.87], nu=5.0, corr=CORR),
        "regime": RegimeParams(assets=["BTC", "ETH"], s0=[60_000.0, 3_000.0], mu=[[0.3, 0.3], [-1.0, -1.5]],
                               sigma=[[0.4, 0.5], [1.1, 1.4]], corr=[CORR, [[1, 0.9], [0.9, 1]]],
                               rate_to_stress=3, rate_to_calm=15),
        "bootstrap": BootstrapParams(assets=["BTC", "ETH"], s0=[60_000.0, 3_000.0],
                                     returns=rng.standard_normal((400, 2)) * 0.03, block_length=7),
    }
