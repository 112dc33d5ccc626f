"""simulate(): check inputs, cut paths into blocks, run a backend, assemble the result."""
import time

import numpy as np

from . import _config, backends
from ._threads import resolve_threads
from ._validation import check_int, first_bad
from .backends._args import KernelLoans, new_block_outputs
from .backends._coupled_args import new_coupled_outputs
from .cascade import check_option_types, coupled_options, needs_coupled_kernel
from .book import LoanBook
from .paths import PricePaths
from .result import SimulationResult

LIQUIDATION_MODES = ("full", "partial", "close_factor")
#: Per-path figures of the coupled kernel (only in results of runs that used it).
CASCADE_PATH_ARRAYS = ("path_cascade_rounds", "path_impact_drawdown", "path_unsold_collateral")


def simulate(
    book,
    paths,
    *,
    backend="auto",
    liquidation="full",
    seed=0,
    n_threads=None,
    record_steps=False,
    path_block=None,
    path_offset=0,
    progress=False,
    impact=None,
    rules=None,
    crossings=False,
):
    """Run every loan of ``book`` on every path of ``paths``.

    Parameters
    ----------
    book : LoanBook
    paths : PricePaths
    backend : {"auto", "cython", "numba", "numpy"}
        ``"auto"`` picks the fastest one available. All give the same counts, and money
        equal to 1e-9 relative (the two compiled ones agree to the last bit).
    liquidation : {"full", "partial", "close_factor"}
        Sell all collateral at liquidation, just enough to restore the target LTV, or
        (Aave-style) repay at most ``rules.close_factor`` of the debt with a bonus.
    seed : int
        Seed of the counter-based top-up draws (>= 0, < 2**64).
    n_threads : int, optional
        Threads for the compiled backends; default ``OMP_NUM_THREADS`` or all usable
        cores. Results do not depend on it.
    record_steps : bool
        Also keep, per path and step: collateral sold, realised loss, liquidation fees,
        and the debt and collateral value of the loans still open after the step (the
        book's aggregate LTV is their ratio).
    path_block : int, optional
        Paths per kernel call (default: sized to stay in cache). Results do not depend
        on it.
    path_offset : int
        Global index of ``paths``' first path. The top-up draws are keyed by global
        path index, so evaluating a long run in chunks of paths, each with its offset,
        gives exactly the result of one call on all paths.
    progress : bool
        Show a progress bar over path blocks on standard error.
    impact : MarketImpact, optional
        Forced sales move the price of their path: liquidations repeat in rounds within
        a step (the deleveraging cascade) and sell at the average impacted price. None:
        prices are exogenous (the core behaviour, exactly).
    rules : LiquidationRules, optional
        Close factor and bonus, dust threshold, per-step sale limit.
    crossings : bool
        Also liquidate loans whose price crossed their liquidation level between two
        steps and came back, drawn with the Brownian-bridge probability under
        ``paths.volatility`` (or each path's realised volatility).

    With any of ``impact``, ``rules`` (a dust threshold or a sale limit), ``crossings``
    or ``liquidation="close_factor"`` the run uses the coupled kernel (steps outermost;
    ``docs/cascades.md``); the result then also holds ``path_cascade_rounds``,
    ``path_impact_drawdown``, ``path_unsold_collateral`` and, with ``record_steps``,
    ``step_impact``.

    Returns
    -------
    SimulationResult

    Raises
    ------
    TypeError, ValueError
        For any invalid input, before a kernel runs.
    """
    if not isinstance(book, LoanBook):
        raise TypeError(f"book must be a LoanBook, got {type(book).__name__}")
    if not isinstance(paths, PricePaths):
        raise TypeError(f"paths must be a PricePaths, got {type(paths).__name__}")
    if liquidation not in LIQUIDATION_MODES:
        raise ValueError(f"liquidation must be one of {LIQUIDATION_MODES}, got {liquidation!r}")
    seed = check_int("seed", seed, minimum=0)
    if seed >= 2**64:
        raise ValueError(f"seed must be < 2**64, got {seed}")
    n_threads = resolve_threads(n_threads)
    if not isinstance(record_steps, (bool, np.bool_)):
        raise TypeError(f"record_steps must be True or False, got {record_steps!r}")
    check_assets(book, paths)
    check_option_types(impact, rules, crossings)
    coupled = needs_coupled_kernel(liquidation, impact, rules, crossings)
    asset_names = paths.assets or book.asset_names
    options = (coupled_options(liquidation, impact, rules, crossings, paths.n_assets, asset_names, paths.dt)
               if coupled else None)
    backend_name = backends.resolve(backend)
    kernel = backends.load_coupled(backend_name) if coupled else backends.load(backend_name)
    if path_block is None:
        path_block = default_path_block(paths.n_steps, paths.n_assets)
    path_block = check_int("path_block", path_block, minimum=1)
    path_offset = check_int("path_offset", path_offset, minimum=0)

    loans = kernel_loans(book, paths.dt)
    n_loans, n_paths, n_steps, n_assets = len(book), paths.n_paths, paths.n_steps, paths.n_assets
    loan_outputs = (np.zeros(n_loans), np.zeros(n_loans, dtype=np.int64), np.zeros(n_loans, dtype=np.int64))
    path_money = np.empty((_config.N_MONEY, n_paths))
    path_counts = np.empty((_config.N_COUNTS, n_paths), dtype=np.int64)
    path_sold = np.empty((n_assets, n_paths))
    step_sold = np.empty((n_paths, n_steps + 1, n_assets)) if record_steps else None
    step_loss = np.empty((n_paths, n_steps + 1)) if record_steps else None
    step_fees = np.empty((n_paths, n_steps + 1)) if record_steps else None
    step_open_debt = np.empty((n_paths, n_steps + 1)) if record_steps else None
    step_collateral_value = np.empty((n_paths, n_steps + 1)) if record_steps else None
    if coupled:
        cascade_rounds = np.empty(n_paths, dtype=np.int64)
        impact_drawdown = np.empty((n_paths, n_assets))
        unsold = np.empty((n_paths, n_assets))
        step_impact = np.empty((n_paths, n_steps + 1, n_assets)) if record_steps else None

    starts = range(0, n_paths, path_block)
    bar = _progress_bar(len(starts), progress)
    began = time.perf_counter()
    try:
        for start in starts:
            stop = min(start + path_block, n_paths)
            block = paths.kernel_block(start, stop)
            out = new_block_outputs(stop - start, n_steps, n_assets, record_steps, loan_outputs)
            if coupled:
                block_options = options
                if options.bridge:
                    block_options = options._replace(bridge_variance=paths.step_variance(start, stop))
                cascade = new_coupled_outputs(out, stop - start, n_steps, n_assets, record_steps)
                kernel.evaluate_coupled(block, loans, block_options, seed, path_offset + start, n_threads, cascade)
                cascade_rounds[start:stop] = cascade.path_rounds
                impact_drawdown[start:stop] = cascade.path_drawdown.T
                unsold[start:stop] = cascade.path_unsold.T
                if record_steps:
                    step_impact[start:stop] = cascade.step_impact.transpose(2, 0, 1)
            else:
                kernel.evaluate_block(
                    block, loans, seed, path_offset + start, liquidation == "partial", n_threads, out
                )
            path_money[:, start:stop] = out.path_money
            path_counts[:, start:stop] = out.path_counts
            path_sold[:, start:stop] = out.path_sold
            if record_steps:
                step_sold[start:stop] = out.step_sold.transpose(2, 0, 1)
                step_loss[start:stop] = out.step_loss.T
                step_fees[start:stop] = out.step_fees.T
                step_open_debt[start:stop] = out.step_open_debt.T
                step_collateral_value[start:stop] = out.step_collateral_value.T
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - began

    arrays = {f"path_{name}": path_money[k] for k, name in enumerate(_config.MONEY_FIELDS)}
    arrays.update({f"path_{name}": path_counts[k] for k, name in enumerate(_config.COUNT_FIELDS)})
    arrays["path_collateral_sold"] = np.ascontiguousarray(path_sold.T)
    arrays["loan_loss"], arrays["loan_margin_calls"], arrays["loan_liquidated"] = loan_outputs
    if record_steps:
        arrays["step_collateral_sold"] = step_sold
        arrays["step_loss"] = step_loss
        arrays["step_fees"] = step_fees
        arrays["step_open_debt"] = step_open_debt
        arrays["step_collateral_value"] = step_collateral_value
    if coupled:
        arrays["path_cascade_rounds"] = cascade_rounds
        arrays["path_impact_drawdown"] = impact_drawdown
        arrays["path_unsold_collateral"] = unsold
        if record_steps:
            arrays["step_impact"] = step_impact
    meta = {
        "n_loans": n_loans,
        "n_paths": n_paths,
        "n_steps": n_steps,
        "n_assets": n_assets,
        "dt": paths.dt,
        "assets": list(paths.assets or book.asset_names or [f"asset{k}" for k in range(n_assets)]),
        "backend": backend_name,
        "liquidation": liquidation,
        "seed": seed,
        "path_offset": path_offset,
        "n_threads": n_threads,
        "elapsed_seconds": elapsed,
        "kernel": "coupled" if coupled else "core",
        "impact": None if impact is None else impact_meta(impact),
        "rules": None if rules is None else rules_meta(rules),
        "crossings": bool(crossings),
    }
    return SimulationResult(arrays, meta)


def impact_meta(impact):
    """A JSON-friendly description of a :class:`MarketImpact` (result meta, run identity)."""
    return {k: _listify(getattr(impact, k)) for k in ("depth", "law", "depth_move", "permanent", "half_life", "max_rounds")}


def rules_meta(rules):
    """A JSON-friendly description of a :class:`LiquidationRules`."""
    return {k: _listify(getattr(rules, k)) for k in ("close_factor", "full_close_health", "min_liquidation", "max_sell")}


def _listify(value):
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [float(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def kernel_loans(book, dt):
    """The book's arrays as kernels take them, with ``growth = exp(rate * dt)``."""
    return KernelLoans(
        asset=np.ascontiguousarray(book.asset, dtype=np.int64),
        collateral=np.ascontiguousarray(book.collateral),
        debt=np.ascontiguousarray(book.debt),
        growth=np.exp(book.rate * dt),
        margin_call_ltv=np.ascontiguousarray(book.margin_call_ltv),
        liquidation_ltv=np.ascontiguousarray(book.liquidation_ltv),
        target_ltv=np.ascontiguousarray(book.target_ltv),
        cure_steps=np.ascontiguousarray(book.cure_steps, dtype=np.int64),
        fee=np.ascontiguousarray(book.fee),
        topup_prob=np.ascontiguousarray(book.topup_prob),
    )


def check_assets(book, paths):
    """Every loan's asset must exist in the paths, under the same name when both are named."""
    first_bad(
        "asset",
        book.asset,
        book.asset < paths.n_assets,
        f"< {paths.n_assets} (the price paths have {paths.n_assets} asset(s))",
    )
    if book.asset_names is not None and paths.assets is not None:
        same = np.array(
            [k < len(book.asset_names) and book.asset_names[k] == name for k, name in enumerate(paths.assets)]
        )
        mismatched = np.flatnonzero(~same[book.asset])
        if mismatched.size:
            row = int(mismatched[0])
            index = int(book.asset[row])
            raise ValueError(
                f"asset[{row}] (loan row {row}) = {index}: asset {index} is "
                f"{book.asset_names[index]!r} in the book but {paths.assets[index]!r} in the "
                f"price paths ({mismatched.size} loan(s) affected); reorder one to match"
            )


def default_path_block(n_steps, n_assets):
    """Paths per block so that one block of prices stays in a core's cache."""
    per_path = (n_steps + 1) * n_assets * 8
    block = _config.PATH_BLOCK_BYTES // per_path
    block = max(_config.MIN_PATH_BLOCK, min(_config.MAX_PATH_BLOCK, block))
    return block - block % 8 if block >= 16 else block


def _progress_bar(n_blocks, enabled):
    if not enabled or n_blocks < 2:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=n_blocks, unit="block", desc="ltvsim", leave=False)
