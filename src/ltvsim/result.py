"""SimulationResult: what one run returns, its risk measures, and its files."""
import json
import os

import numpy as np

from . import _config
from ._estimators import Estimate, expected_shortfall, level_name, mean, value_at_risk

#: Per-path arrays every result holds (``path_collateral_sold`` is [n_paths, n_assets]).
PATH_ARRAYS = tuple(f"path_{name}" for name in _config.MONEY_FIELDS + _config.COUNT_FIELDS) + (
    "path_collateral_sold",
)
LOAN_ARRAYS = ("loan_loss", "loan_margin_calls", "loan_liquidated")
#: Per-path arrays of runs with the coupled kernel (impact, lenders' rules, crossings).
CASCADE_ARRAYS = ("path_cascade_rounds", "path_impact_drawdown", "path_unsold_collateral")
STEP_ARRAYS = ("step_collateral_sold", "step_loss", "step_fees", "step_open_debt", "step_collateral_value")
#: Per-step money arrays [n_paths, n_steps + 1] and their column in ``steps.parquet``.
STEP_MONEY_COLUMNS = {
    "step_loss": "loss",
    "step_fees": "fees",
    "step_open_debt": "open_debt",
    "step_collateral_value": "collateral_value",
}


class SimulationResult:
    """Results of :func:`ltvsim.simulate`: per-path and per-loan arrays plus run metadata.

    Attributes
    ----------
    path_loss, path_fees, path_interest_recovered, path_principal_recovered, path_residual : ndarray [n_paths]
        Realised loss (shortfall), liquidation fees, interest and principal recovered,
        and residual returned to borrowers, summed over loans on each path.
    path_proceeds, path_debt_closed : ndarray [n_paths]
        Sale proceeds and debt closed by liquidations (for the waterfall identities).
    path_unrealised : ndarray [n_paths]
        Mark-to-market shortfall of loans still open after the last step.
    path_margin_calls, path_liquidations, path_full_liquidations, path_topups : ndarray of int64 [n_paths]
        Event counts (``path_liquidations`` counts partial and full liquidation events).
    path_collateral_sold : ndarray [n_paths, n_assets]
        Units of each asset sold by liquidations.
    loan_margin_calls, loan_liquidated : ndarray of int64 [n_loans]
        Number of paths on which the loan got at least one call / liquidation.
    loan_loss : ndarray [n_loans]
        Realised loss of the loan summed over paths.
    step_collateral_sold : ndarray [n_paths, n_steps + 1, n_assets], only with ``record_steps``
    step_loss : ndarray [n_paths, n_steps + 1], only with ``record_steps``
        Realised loss at each step.
    step_fees : ndarray [n_paths, n_steps + 1], only with ``record_steps``
        Liquidation fees earned at each step.
    step_open_debt, step_collateral_value : ndarray [n_paths, n_steps + 1], only with ``record_steps``
        Debt, and collateral at that step's price, of the loans still open after the
        step: the book's aggregate LTV is ``step_open_debt / step_collateral_value``.
    path_cascade_rounds : ndarray of int64 [n_paths], coupled runs only
        Most liquidation rounds in any one step (1: no cascade beyond the first sales).
    path_impact_drawdown : ndarray [n_paths, n_assets], coupled runs only
        Largest fall of each price caused by forced sales: 1 - the lowest impact factor.
    path_unsold_collateral : ndarray [n_paths, n_assets], coupled runs only
        Collateral still waiting to be sold after the last step (per-step sale limit).
    step_impact : ndarray [n_paths, n_steps + 1, n_assets], coupled runs with ``record_steps``
        Impact factor after each step: the price loans saw is the path's price times it.
    meta : dict
        Sizes, asset names, backend, liquidation mode, seed, threads, elapsed seconds.
    """

    def __init__(self, arrays, meta):
        self._arrays = dict(arrays)
        self.meta = dict(meta)

    def __getattr__(self, name):
        arrays = self.__dict__.get("_arrays")
        if arrays is not None and name in arrays:
            return arrays[name]
        if name in STEP_ARRAYS:
            raise AttributeError(f"{name} is only recorded with simulate(..., record_steps=True)")
        if name in CASCADE_ARRAYS or name == "step_impact":
            raise AttributeError(
                f"{name} exists only for runs with impact, rules or crossings (the coupled kernel)"
                + (" and record_steps=True" if name == "step_impact" else "")
            )
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __repr__(self):
        m = self.meta
        return (
            f"SimulationResult(n_loans={m['n_loans']}, n_paths={m['n_paths']}, "
            f"n_steps={m['n_steps']}, backend={m['backend']!r}, liquidation={m['liquidation']!r})"
        )

    @property
    def arrays(self):
        """All result arrays by name."""
        return dict(self._arrays)

    @property
    def assets(self):
        """Asset names, by index."""
        return list(self.meta["assets"])

    # ------------------------------------------------------------------ risk measures
    def expected_loss(self):
        """Mean realised loss per path, with its Monte Carlo standard error.

        Returns
        -------
        Estimate
            ``(value, stderr)``.
        """
        return mean(self.path_loss)

    def var(self, q=0.99):
        """Value at risk of the realised loss at level ``q`` with its standard error.

        The empirical q-quantile of ``path_loss``; the standard error comes from the
        order-statistic confidence interval (see ``ltvsim._estimators``).
        """
        return value_at_risk(self.path_loss, q)

    def es(self, q=0.99):
        """Expected shortfall (conditional VaR) of the realised loss at level ``q``."""
        return expected_shortfall(self.path_loss, q)

    def summary(self, q=0.99):
        """Headline figures as a plain dict (JSON-serialisable).

        Parameters
        ----------
        q : float
            Level of VaR and ES.
        """
        m = self.meta
        el, var, es = self.expected_loss(), self.var(q), self.es(q)
        level = level_name(q)
        work = m["n_loans"] * m["n_paths"] * m["n_steps"]
        elapsed = m.get("elapsed_seconds") or float("nan")
        out = {
            "n_loans": m["n_loans"],
            "n_paths": m["n_paths"],
            "n_steps": m["n_steps"],
            "dt": m["dt"],
            "assets": self.assets,
            "backend": m["backend"],
            "liquidation": m["liquidation"],
            "seed": m["seed"],
            "n_threads": m["n_threads"],
            "expected_loss": el.value,
            "expected_loss_stderr": el.stderr,
            f"var_{level}": var.value,
            f"var_{level}_stderr": var.stderr,
            f"es_{level}": es.value,
            f"es_{level}_stderr": es.stderr,
            "prob_loss": float(np.mean(self.path_loss > 0)),
            "mean_margin_calls": float(self.path_margin_calls.mean()),
            "mean_liquidations": float(self.path_liquidations.mean()),
            "mean_full_liquidations": float(self.path_full_liquidations.mean()),
            "mean_topups": float(self.path_topups.mean()),
            "mean_fees": float(self.path_fees.mean()),
            "mean_unrealised": float(self.path_unrealised.mean()),
            "mean_collateral_sold": {
                name: float(self.path_collateral_sold[:, k].mean()) for k, name in enumerate(self.assets)
            },
            "loans_called_on_any_path": int(np.count_nonzero(self.loan_margin_calls)),
            "loans_liquidated_on_any_path": int(np.count_nonzero(self.loan_liquidated)),
            **self._cascade_summary(),
            "elapsed_seconds": elapsed,
            "loan_path_steps_per_second": work / elapsed if elapsed > 0 else float("nan"),
        }
        return out

    def _cascade_summary(self):
        if "path_cascade_rounds" not in self._arrays:
            return {}
        return {
            "mean_cascade_rounds": float(self.path_cascade_rounds.mean()),
            "max_cascade_rounds": int(self.path_cascade_rounds.max(initial=0)),
            "mean_impact_drawdown": {
                name: float(self.path_impact_drawdown[:, k].mean()) for k, name in enumerate(self.assets)
            },
            "mean_unsold_collateral": {
                name: float(self.path_unsold_collateral[:, k].mean()) for k, name in enumerate(self.assets)
            },
        }

    # ------------------------------------------------------------------ tables and files
    def path_table(self):
        """Per-path results as ``{column: 1-D array}`` (collateral sold split by asset)."""
        table = {"path": np.arange(self.meta["n_paths"])}
        for name in PATH_ARRAYS[:-1]:
            table[name[len("path_"):]] = self._arrays[name]
        for k, asset in enumerate(self.assets):
            table[f"collateral_sold_{asset}"] = self.path_collateral_sold[:, k]
        if "path_cascade_rounds" in self._arrays:
            table["cascade_rounds"] = self.path_cascade_rounds
            for k, asset in enumerate(self.assets):
                table[f"impact_drawdown_{asset}"] = self.path_impact_drawdown[:, k]
                table[f"unsold_collateral_{asset}"] = self.path_unsold_collateral[:, k]
        return table

    def loan_table(self):
        """Per-loan results as ``{column: 1-D array}``."""
        table = {"loan": np.arange(self.meta["n_loans"])}
        for name in LOAN_ARRAYS:
            table[name[len("loan_"):]] = self._arrays[name]
        return table

    def to_frame(self):
        """Per-path results as a pandas DataFrame (one row per path)."""
        import pandas as pd

        return pd.DataFrame(self.path_table()).set_index("path")

    def to_parquet(self, path):
        """Write the per-path results to one Parquet file (needs pyarrow)."""
        _write_parquet(self.path_table(), path)

    def save(self, directory):
        """Write ``paths.parquet``, ``loans.parquet``, ``steps.parquet`` (when recorded)
        and ``summary.json`` into ``directory`` (created if missing).

        Returns
        -------
        dict
            File name to path of everything written.
        """
        os.makedirs(directory, exist_ok=True)
        written = {}
        written["paths.parquet"] = os.path.join(directory, "paths.parquet")
        _write_parquet(self.path_table(), written["paths.parquet"])
        written["loans.parquet"] = os.path.join(directory, "loans.parquet")
        _write_parquet(self.loan_table(), written["loans.parquet"])
        steps_file = os.path.join(directory, "steps.parquet")
        if "step_loss" not in self._arrays and os.path.exists(steps_file):
            os.remove(steps_file)  # an earlier result's: load() must not attach it to this one
        if "step_loss" in self._arrays:
            n_paths, n_steps_1 = self.step_loss.shape
            table = {
                "path": np.repeat(np.arange(n_paths), n_steps_1),
                "step": np.tile(np.arange(n_steps_1), n_paths),
            }
            for name, column in STEP_MONEY_COLUMNS.items():
                if name in self._arrays:
                    table[column] = self._arrays[name].ravel()
            for k, asset in enumerate(self.assets):
                table[f"collateral_sold_{asset}"] = self.step_collateral_sold[:, :, k].ravel()
                if "step_impact" in self._arrays:
                    table[f"impact_{asset}"] = self.step_impact[:, :, k].ravel()
            written["steps.parquet"] = os.path.join(directory, "steps.parquet")
            _write_parquet(table, written["steps.parquet"])
        written["summary.json"] = os.path.join(directory, "summary.json")
        with open(written["summary.json"], "w") as handle:
            json.dump({"summary": _plain(self.summary()), "meta": _plain(self.meta)}, handle, indent=2)
        return written

    @classmethod
    def load(cls, directory):
        """Read back a result written by :meth:`save`."""
        import pyarrow.parquet as pq

        with open(os.path.join(directory, "summary.json")) as handle:
            meta = json.load(handle)["meta"]
        paths = pq.read_table(os.path.join(directory, "paths.parquet"))
        loans = pq.read_table(os.path.join(directory, "loans.parquet"))
        arrays = {}
        for name in PATH_ARRAYS[:-1]:
            arrays[name] = paths.column(name[len("path_"):]).to_numpy()
        arrays["path_collateral_sold"] = np.column_stack(
            [paths.column(f"collateral_sold_{a}").to_numpy() for a in meta["assets"]]
        )
        if "cascade_rounds" in paths.column_names:
            arrays["path_cascade_rounds"] = paths.column("cascade_rounds").to_numpy()
            for name, column in (("path_impact_drawdown", "impact_drawdown"), ("path_unsold_collateral", "unsold_collateral")):
                arrays[name] = np.column_stack([paths.column(f"{column}_{a}").to_numpy() for a in meta["assets"]])
        for name in LOAN_ARRAYS:
            arrays[name] = loans.column(name[len("loan_"):]).to_numpy()
        steps_file = os.path.join(directory, "steps.parquet")
        if os.path.exists(steps_file):
            steps = pq.read_table(steps_file)
            shape = (meta["n_paths"], meta["n_steps"] + 1)
            for name, column in STEP_MONEY_COLUMNS.items():
                if column in steps.column_names:
                    arrays[name] = steps.column(column).to_numpy().reshape(shape)
            arrays["step_collateral_sold"] = np.stack(
                [steps.column(f"collateral_sold_{a}").to_numpy().reshape(shape) for a in meta["assets"]], axis=-1
            )
            if f"impact_{meta['assets'][0]}" in steps.column_names:
                arrays["step_impact"] = np.stack(
                    [steps.column(f"impact_{a}").to_numpy().reshape(shape) for a in meta["assets"]], axis=-1
                )
        return cls(arrays, meta)


def _write_parquet(columns, path):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("writing Parquet needs pyarrow: pip install 'ltvsim[parquet]'") from exc
    pq.write_table(pa.table({k: np.asarray(v) for k, v in columns.items()}), path)


def _plain(value):
    """Convert NumPy scalars inside dicts and lists to JSON-friendly Python values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


__all__ = ["SimulationResult", "Estimate"]
