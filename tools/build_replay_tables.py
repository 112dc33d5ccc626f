"""Rebuild the built-in replay tables in src/ltvsim/data/ from the shared price history.

    python tools/build_replay_tables.py [path/to/shared/data]

Each table holds the daily simple returns ``close[d] / close[d - 1] - 1`` of every asset
with data for the window (written with 17 significant digits, so a replay reproduces the
window's closes relative to its first day to rounding), and ``replays.json`` records each
window's dates, title and sources. See src/ltvsim/data/README.md.
"""
import json
import sys
from pathlib import Path

import numpy as np

from ltvsim.paths.history import read_price_csv

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "ltvsim" / "data"

FILES = {
    "BTC": ["btc_usd_daily.csv"],
    "ETH": ["eth_usd_daily.csv", "eth_usd_daily_2025-08-17_to_2025-10-14_bitstamp.csv"],
    "SOL": ["sol_usd_daily.csv"],
}
SOURCES = {
    "btc_usd_daily.csv": "Coinbase BTC-USD daily closes to 2025-09-24 (mathaszip/BTCprice, no licence stated); "
                         "from 2025-09-25 close-only Bitstamp-derived values (typedcypher/historical-bitcoin-prices, GPL-3.0, "
                         "from the CC BY-SA 4.0 Kaggle dataset by Zielak)",
    "eth_usd_daily.csv": "Yahoo Finance ETH-USD daily closes (Alexshch09/Stocks-prices, no licence stated)",
    "eth_usd_daily_2025-08-17_to_2025-10-14_bitstamp.csv": "Bitstamp ETH/USD daily closes (CryptoDataDownload export in iklobato/trade, no licence stated)",
    "sol_usd_daily.csv": "Yahoo Finance SOL-USD daily closes (Alexshch09/Stocks-prices, no licence stated)",
}
WINDOWS = [
    ("covid_2020", "Covid crash, March 2020", "2020-03-06", "2020-03-20"),
    ("may_2021", "May 2021 sell-off (19 May)", "2021-05-10", "2021-05-24"),
    ("terra_2022", "Terra/LUNA collapse, May 2022", "2022-05-04", "2022-05-18"),
    ("ftx_2022", "FTX collapse, November 2022", "2022-11-05", "2022-11-22"),
    ("oct_2025", "10 October 2025 liquidations", "2025-10-05", "2025-10-14"),
]


def main(shared):
    series = {}
    for asset, files in FILES.items():
        parts = [(read_price_csv(shared / f), f) for f in files]
        series[asset] = parts
    index = {}
    for name, title, start, end in WINDOWS:
        days = np.arange(np.datetime64(start), np.datetime64(end) + 1)
        columns, sources = {}, {}
        for asset, parts in series.items():
            for (dates, close), fname in parts:
                if dates[0] <= days[0] and dates[-1] >= days[-1]:
                    pos = np.searchsorted(dates, days)
                    if np.all(dates[np.minimum(pos, dates.size - 1)] == days):
                        c = close[pos]
                        columns[asset] = c[1:] / c[:-1] - 1.0
                        sources[asset] = SOURCES[fname]
                        break
        path = OUT / f"replay_{name}.csv"
        lines = ["date," + ",".join(columns)]
        for i, d in enumerate(days[1:]):
            lines.append(f"{d}," + ",".join(repr(float(columns[a][i])) for a in columns))
        path.write_text("\n".join(lines) + "\n")
        index[name] = {"title": title, "start": start, "end": end, "file": path.name,
                       "assets": list(columns), "sources": sources,
                       "convention": "row d: close[d] / close[d - 1] - 1 (UTC daily closes); the replay starts from the close of 'start'"}
        if name == "oct_2025":
            index[name]["note"] = ("BTC after 2025-09-24 is close-only and single-source; ETH comes from a separate Bitstamp file; "
                                   "no SOL data covers this window")
        if name == "covid_2020":
            index[name]["note"] = "SOL data starts 2020-04-10, after this window"
    (OUT / "replays.json").write_text(json.dumps(index, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data")
