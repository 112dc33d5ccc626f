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
    volatility : float or array_like, optional
        Annualised volatility of the log price that generated the paths, for the
        between-step crossing option of :func:`ltvsim.simulate`: one value, one per
        asset, or one per path, step and asset (``[n_paths, n_steps, n_assets]``, entry
        ``t`` for the step from ``t`` to ``t + 1``). Finite and >= 0. When absent the
        crossings use each path's realised volatility (see
        :meth:`step_variance`). The built-in generators set it where the model has one.

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

    def __init__(self, prices, dt, assets=None, *, copy=True, volatility=None):
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
        self.volatility = None if volatility is None else self._check_volatility(volatility)

    def _check_volatility(self, volatility):
        n_paths, n_steps, n_assets = self.n_paths, self.n_steps, self.n_assets
        vol = np.array(volatility, dtype=np.float64, copy=True)
        if vol.ndim == 0:
            vol = np.full(n_assets, float(vol))
        if vol.shape not in ((n_assets,), (n_paths, n_steps, n_assets)):
            raise ValueError(
                f"volatility must be a number, one per asset ({n_assets},) or one per path, step "
                f"and asset {(n_paths, n_steps, n_assets)}, got shape {vol.shape}"
            )
        names = ("asset",) if vol.ndim == 1 else ("path", "step", "asset")
        first_bad("volatility", vol, np.isfinite(vol) & (vol >= 0), "finite and >= 0", index_names=names)
        vol.setflags(write=False)
        return vol

    def step_variance(self, start=0, stop=None):
        """Variance of the log-price move of each step, ``[n_assets, n_steps + 1, n_paths]``
        for paths ``start:stop`` (entry ``t`` for the step ending at ``t``; entry 0 is 0).

        ``volatility**2 * dt`` when the paths carry a volatility; otherwise each path's
        realised variance per step, the mean of its squared log returns over all steps
        (zero-mean estimate: over a day the drift is negligible against the noise).
        """
        stop = self.n_paths if stop is None else stop
        n = stop - start
        out = np.zeros((self.n_assets, self.n_steps + 1, n))
        if self.volatility is None:
            log_prices = np.log(np.asarray(self.prices[start:stop], dtype=np.float64))
            realised = np.mean(np.diff(log_prices, axis=1) ** 2, axis=1)  # [n, n_assets]
            out[:, 1:, :] = realised.T[:, None, :]
        elif self.volatility.ndim == 1:
            out[:, 1:, :] = (self.volatility**2 * self.dt)[:, None, None]
        else:
            out[:, 1:, :] = (self.volatility[start:stop] ** 2 * self.dt).transpose(2, 1, 0)
        return out

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
