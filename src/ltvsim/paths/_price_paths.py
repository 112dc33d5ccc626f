"""PricePaths: validated Monte Carlo price paths, the input every kernel reads."""
import numpy as np

from .._validation import check_positive_float, first_bad


class PricePaths:
    """Simulated prices of one or more assets, ``[n_paths, n_steps + 1, n_assets]``.

    Parameters
    ----------
    prices : array_like
        Positive, finite prices in quote currency per unit of asset; step 0 is the
        starting price. float64, or float32 to halve memory (kernels read blocks of it
        converted to float64, so results are those of the float32 values).
    dt : float
        Length of one step in years (daily: 1/365).
    assets : sequence of str, optional
        Names of the assets along the last axis (e.g. ``("BTC", "ETH")``).
    copy : bool, default True
        Keep a private copy, so later writes to ``prices`` cannot reach validated
        data. ``copy=False`` takes ``prices`` over without copying (the generators do
        this with arrays nobody else holds) and makes it read-only: only pass arrays
        that nothing else will write to.

    Raises
    ------
    ValueError
        Naming the first offending (path, step, asset) and its value.

    Examples
    --------
    >>> import numpy as np
    >>> paths = PricePaths(np.full((2, 31, 1), 100.0), dt=1 / 365, assets=["BTC"])
    >>> paths.n_paths, paths.n_steps, paths.n_assets
    (2, 30, 1)
    """

    def __init__(self, prices, dt, assets=None, *, copy=True):
        prices = np.array(prices, copy=True) if copy else np.asarray(prices)
        if prices.dtype.kind not in "fiu" or prices.dtype.kind == "b":
            raise TypeError(f"prices must be real numbers, got dtype {prices.dtype}")
        if prices.dtype not in (np.float32, np.float64):
            prices = prices.astype(np.float64)
        if prices.ndim != 3:
            raise ValueError(
                f"prices must have shape [n_paths, n_steps + 1, n_assets], got {prices.shape}"
                " (for one asset use prices[..., None])"
            )
        if min(prices.shape) < 1:
            raise ValueError(f"prices needs at least one path, one step and one asset, got shape {prices.shape}")
        first_bad(
            "prices",
            prices,
            np.isfinite(prices) & (prices > 0),
            "finite and > 0",
            index_names=("path", "step", "asset"),
        )
        self.prices = prices
        self.prices.setflags(write=False)
        self.dt = check_positive_float("dt", dt)
        if assets is not None:
            assets = tuple(str(a) for a in assets)
            if len(assets) != prices.shape[2]:
                raise ValueError(f"assets names {len(assets)} assets, prices have {prices.shape[2]}")
            if len(set(assets)) != len(assets):
                raise ValueError(f"assets must be unique, got {assets}")
        self.assets = assets

    @property
    def n_paths(self):
        """Number of paths."""
        return self.prices.shape[0]

    @property
    def n_steps(self):
        """Number of steps after step 0."""
        return self.prices.shape[1] - 1

    @property
    def n_assets(self):
        """Number of assets."""
        return self.prices.shape[2]

    def __repr__(self):
        names = f", assets={list(self.assets)}" if self.assets else ""
        return (
            f"PricePaths(n_paths={self.n_paths}, n_steps={self.n_steps}, "
            f"n_assets={self.n_assets}, dt={self.dt:g}{names})"
        )

    def kernel_block(self, start, stop):
        """Prices of paths ``start:stop`` as float64 ``[n_assets, n_steps + 1, n_paths]``.

        The layout kernels read: one asset and step is contiguous over paths, so the
        inner loop over paths vectorises.
        """
        block = self.prices[start:stop]
        return np.ascontiguousarray(block.transpose(2, 1, 0), dtype=np.float64)
