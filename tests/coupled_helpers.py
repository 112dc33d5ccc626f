"""Run a backend's coupled kernel directly (no simulate()) and compare with the naive one."""
import numpy as np

from ltvsim import _config as cfg
from ltvsim import backends
from ltvsim.backends._args import new_block_outputs
from ltvsim.backends._coupled_args import (
    MODE_FULL,
    CoupledOptions,
    new_coupled_outputs,
)
from ltvsim.simulate import kernel_loans

def make_options(n_assets, n_steps, n_paths, *, mode=MODE_FULL, close_factor=0.5, full_close_ltv=1 / 0.95,
                 min_liquidation=0.0, max_sell=None, depth=None, depth_move=0.02, sqrt_law=1,
                 permanent=0.5, decay=0.5, max_rounds=10, bridge_variance=None):
    """CoupledOptions with every per-asset value broadcast (``depth=None``: no impact)."""
    def per_asset(value, dtype=np.float64):
        return np.ascontiguousarray(np.broadcast_to(np.asarray(value, dtype=dtype), (n_assets,)))

    bridge = bridge_variance is not None
    variance = (np.ascontiguousarray(np.broadcast_to(bridge_variance, (n_assets, n_steps + 1, n_paths)), dtype=np.float64)
                if bridge else np.zeros((0, 0, 0)))
    return CoupledOptions(
        mode=mode, close_factor=float(close_factor), full_close_ltv=float(full_close_ltv),
        min_liquidation=float(min_liquidation),
        max_sell=per_asset(np.inf if max_sell is None else max_sell),
        depth=per_asset(np.inf if depth is None else depth), depth_move=per_asset(depth_move),
        sqrt_law=per_asset(sqrt_law, np.int64), permanent=per_asset(permanent), decay=per_asset(decay),
        max_rounds=int(max_rounds), bridge=bridge, bridge_variance=variance,
    )


def slice_options(options, start, stop):
    """The options of paths [start, stop) (only the crossing variances depend on paths)."""
    if not options.bridge:
        return options
    return options._replace(bridge_variance=np.ascontiguousarray(options.bridge_variance[:, :, start:stop]))


def run_coupled(backend, book, paths, options, *, seed=0, n_threads=1, path_block=None, record_steps=True):
    """The backend's ``evaluate_coupled`` over all paths, as the naive reference's dict."""
    module = backends.load_coupled(backend)
    n_loans, n_paths, n_steps, n_assets = len(book), paths.n_paths, paths.n_steps, paths.n_assets
    loans = kernel_loans(book, paths.dt)
    loan_outputs = (np.zeros(n_loans), np.zeros(n_loans, dtype=np.int64), np.zeros(n_loans, dtype=np.int64))
    result = {f"path_{n}": np.zeros(n_paths) for n in cfg.MONEY_FIELDS}
    result.update({f"path_{n}": np.zeros(n_paths, dtype=np.int64) for n in cfg.COUNT_FIELDS})
    result["path_collateral_sold"] = np.zeros((n_paths, n_assets))
    result["path_cascade_rounds"] = np.zeros(n_paths, dtype=np.int64)
    result["path_impact_drawdown"] = np.zeros((n_paths, n_assets))
    result["path_unsold_collateral"] = np.zeros((n_paths, n_assets))
    for name in ("step_loss", "step_fees", "step_open_debt", "step_collateral_value"):
        result[name] = np.zeros((n_paths, n_steps + 1))
    result["step_collateral_sold"] = np.zeros((n_paths, n_steps + 1, n_assets))
    result["step_impact"] = np.zeros((n_paths, n_steps + 1, n_assets))
    path_block = path_block or n_paths
    for start in range(0, n_paths, path_block):
        stop = min(start + path_block, n_paths)
        block = paths.kernel_block(start, stop)
        core = new_block_outputs(stop - start, n_steps, n_assets, record_steps, loan_outputs)
        out = new_coupled_outputs(core, stop - start, n_steps, n_assets, record_steps)
        module.evaluate_coupled(block, loans, slice_options(options, start, stop), seed, start, n_threads, out)
        for k, name in enumerate(cfg.MONEY_FIELDS):
            result[f"path_{name}"][start:stop] = core.path_money[k]
        for k, name in enumerate(cfg.COUNT_FIELDS):
            result[f"path_{name}"][start:stop] = core.path_counts[k]
        result["path_collateral_sold"][start:stop] = core.path_sold.T
        result["path_cascade_rounds"][start:stop] = out.path_rounds
        result["path_impact_drawdown"][start:stop] = out.path_drawdown.T
        result["path_unsold_collateral"][start:stop] = out.path_unsold.T
        if record_steps:
            result["step_loss"][start:stop] = core.step_loss.T
            result["step_fees"][start:stop] = core.step_fees.T
            result["step_open_debt"][start:stop] = core.step_open_debt.T
            result["step_collateral_value"][start:stop] = core.step_collateral_value.T
            result["step_collateral_sold"][start:stop] = core.step_sold.transpose(2, 0, 1)
            result["step_impact"][start:stop] = out.step_impact.transpose(2, 0, 1)
    result["loan_loss"], result["loan_margin_calls"], result["loan_liquidated"] = loan_outputs
    return result


def assert_same(actual, expected, *, exact=True, keys=None):
    """Every array of ``expected`` (or ``keys``) equal in ``actual``: bit for bit, or to 1e-9."""
    for key in keys or expected:
        if key == "loan_first_liquidation" or key not in actual:
            continue
        a, e = np.asarray(actual[key]), np.asarray(expected[key])
        if exact or a.dtype.kind == "i":
            np.testing.assert_array_equal(a, e, err_msg=key)
        else:
            np.testing.assert_allclose(a, e, rtol=cfg.BACKEND_RTOL, atol=1e-9 * max(1.0, float(np.abs(e).max(initial=0))), err_msg=key)
