"""A block's paths sorted by their lowest price, per asset: the layout of near-trigger skipping.

The compiled kernels evaluate a loan only on the paths that can come near its margin
call. A path whose lowest price over the horizon stays above the loan's highest guard
threshold (``GUARD_MARGIN`` above the call price of the debt at the last step) can
never be near: with the block's paths sorted by that lowest price, the paths a loan
must look at are a prefix of the sorted order, found by a binary search. This module
builds the sorted layout once per block, in Python, for both compiled kernels:

* ``order[a, j]``: the block's path (0-based, in block order) at sorted position ``j``
  of asset ``a``; the stable argsort of ``path_min``;
* ``prices[a, t, j]``: the price of asset ``a`` at step ``t`` on path ``order[a, j]``;
* ``path_min[a, j]``: the lowest price of asset ``a`` on that path over every step,
  ascending in ``j``;
* ``floor[a, t, g]``: the lowest price of asset ``a`` at step ``t`` over the sorted
  paths ``[0, min(8 (g + 1), n_paths))``: pass A's shortcut over a loan's active prefix.

The kernels add per-path results in sorted position and scatter them back to block
order through ``order``; see ``_config.ACTIVE_PATH_GROUP`` for the summation order,
which no layout, thread count or path block changes.
"""
from typing import NamedTuple

import numpy as np

from .. import _config

#: Private switch, for tests and benchmarks: "skip" (sorted layout, each loan on its
#: active paths only), "sort" (sorted layout, every loan on every path) or "off" (block
#: order, every path). All three give bit-identical results.
MODE = "skip"
MODES = ("skip", "sort", "off")


class PathOrder(NamedTuple):
    """One block's prices in the layout the compiled kernels read (see module docstring)."""

    order: np.ndarray  # int64 [n_assets, n_paths]
    prices: np.ndarray  # float64 [n_assets, n_steps + 1, n_paths], sorted paths
    path_min: np.ndarray  # float64 [n_assets, n_paths], ascending
    floor: np.ndarray  # float64 [n_assets, n_steps + 1, n_groups]
    skip: bool  # evaluate each loan on its active prefix only


def resolve_mode(mode=None):
    """The mode to use: ``mode``, or the module's :data:`MODE` when None."""
    mode = MODE if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"path order mode must be one of {MODES}, got {mode!r}")
    return mode


def sort_paths(prices, mode=None):
    """The layout of ``prices`` (float64 [n_assets, n_steps + 1, n_paths], C-contiguous).

    ``mode`` (default :data:`MODE`): "skip" and "sort" sort the paths per asset; "off"
    keeps block order. Only "skip" lets the kernels skip paths.
    """
    mode = resolve_mode(mode)
    n_assets, _, n_paths = prices.shape
    path_min = prices.min(axis=1)
    if mode == "off":
        order = np.broadcast_to(np.arange(n_paths, dtype=np.int64), (n_assets, n_paths)).copy()
        sorted_prices = prices
    else:
        order = np.argsort(path_min, axis=1, kind="stable").astype(np.int64, copy=False)
        path_min = np.take_along_axis(path_min, order, axis=1)
        sorted_prices = np.take_along_axis(prices, order[:, None, :], axis=2)
    group = _config.ACTIVE_PATH_GROUP
    ends = np.minimum(np.arange(group - 1, n_paths + group - 1, group), n_paths - 1)
    floor = np.minimum.accumulate(sorted_prices, axis=2)[:, :, ends]
    return PathOrder(
        order=np.ascontiguousarray(order),
        prices=np.ascontiguousarray(sorted_prices),
        path_min=np.ascontiguousarray(path_min),
        floor=np.ascontiguousarray(floor),
        skip=mode == "skip",
    )
