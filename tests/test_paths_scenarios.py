"""Stress scenarios: shocks, built-in and user replays, the BTC production-cost floor."""
import numpy as np
import pytest

from ltvsim.paths import (
    load_history,
    max_drawdown,
    production_cost,
    read_price_csv,
    replay,
    replay_history,
    replays,
    scenario,
    scenario_names,
    shock,
)
from _paths_helpers import DATA, needs_data

FILES = {"BTC": ["btc_usd_daily.csv"],
         "ETH": ["eth_usd_daily.csv", "eth_usd_daily_2025-08-17_to_2025-10-14_bitstamp.csv"],
         "SOL": ["sol_usd_daily.csv"]}


def test_shocks():
    p = shock({"BTC": 80_000.0, "ETH": 3_000.0}, -0.25, n_steps=3)
    np.testing.assert_allclose(p.prices[0, :, 0], [80_000, 60_000, 60_000, 60_000])
    assert p.assets == ("BTC", "ETH") and p.n_paths == 1
    half = scenario("shock_50", [10.0], assets=["ETH"])
    np.testing.assert_allclose(half.prices[0, :, 0], [10.0, 5.0])
    with pytest.raises(ValueError, match="must be a finite fraction > -1"):
        shock([1.0], -1.5)


def test_every_named_scenario_runs():
    s0 = {"BTC": 90_000.0, "ETH": 3_000.0}
    for name in scenario_names():
        p = scenario(name, s0)
        assert p.prices[0, 0, 0] == 90_000.0 and p.prices[0, -1, 0] < 90_000.0, name


@needs_data
@pytest.mark.parametrize("name", sorted(replays()))
def test_replays_reproduce_the_historical_drawdown_exactly(name):
    meta = replays()[name]
    s0 = {a: 1234.5 for a in meta["assets"]}
    path = replay(name, s0)
    for i, asset in enumerate(meta["assets"]):
        for f in FILES[asset]:
            dates, close = read_price_csv(DATA / f)
            keep = (dates >= np.datetime64(meta["start"])) & (dates <= np.datetime64(meta["end"]))
            if keep.sum() == path.n_steps + 1:
                break
        hist = close[keep]
        assert path.n_steps + 1 == hist.size
        assert max_drawdown(path.prices[0, :, i]) == pytest.approx(max_drawdown(hist), rel=1e-13, abs=1e-15)
        np.testing.assert_allclose(path.prices[0, :, i] / 1234.5, hist / hist[0], rtol=1e-13)


def test_replay_windows_are_the_named_events():
    meta = replays()
    assert {"covid_2020", "may_2021", "terra_2022", "ftx_2022", "oct_2025"} <= set(meta)
    p = replay("covid_2020", {"BTC": 1.0})
    assert max_drawdown(p.prices[0, :, 0]) > 0.35  # BTC closes fell ~40% into 12-16 March 2020
    assert "close only" in meta["oct_2025"]["note"] or "close-only" in meta["oct_2025"]["note"]


def test_replay_unknown_asset_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown asset.*SOL.*covid_2020"):
        replay("covid_2020", {"BTC": 1.0, "SOL": 1.0})
    with pytest.raises(KeyError, match="unknown replay"):
        replay("dotcom_2000", {"BTC": 1.0})


def test_replay_from_a_user_csv(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("date,open,close\n2024-01-01,1,100\n2024-01-02,1,80\n2024-01-03,1,90\n2024-01-04,1,60\n")
    p = replay_history({"X": path}, "2024-01-01", "2024-01-04", {"X": 50.0})
    np.testing.assert_allclose(p.prices[0, :, 0], [50, 40, 45, 30])
    assert max_drawdown(p.prices[0, :, 0]) == pytest.approx(0.4)
    gap = tmp_path / "gap.csv"
    gap.write_text("date,close\n2024-01-01,100\n2024-01-03,90\n")
    with pytest.raises(ValueError, match="missing days"):
        replay_history({"X": gap}, "2024-01-01", "2024-01-03")
    with pytest.raises(KeyError, match="unknown asset"):
        replay_history(load_history({"X": path}), "2024-01-01", "2024-01-04", {"Y": 1.0})


def test_btc_production_cost_floor():
    p = production_cost({"BTC": 95_000.0, "ETH": 3_500.0}, n_steps=10)
    assert p.prices[0, -1, 0] == pytest.approx(14_000.0)
    np.testing.assert_allclose(p.prices[0, -1, 1] / 3_500.0, 14_000.0 / 95_000.0)
    logs = np.diff(np.log(p.prices[0, :, 0]))
    np.testing.assert_allclose(logs, logs[0])
    low = production_cost({"BTC": 95_000.0}, floor=13_000.0)
    assert low.prices[0, -1, 0] == pytest.approx(13_000.0)
    flat = production_cost({"BTC": 12_000.0})
    assert flat.prices[0, -1, 0] == 12_000.0
    with pytest.raises(KeyError, match="BTC"):
        production_cost({"ETH": 1.0})
