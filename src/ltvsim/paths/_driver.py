"""Runs a model kernel over a range of paths: whole runs, or chunk by chunk (streaming).

The Python side checks and allocates; the kernels (``_fill`` of each model) trust their
inputs and write into the array they are given. A kernel fills paths ``path0 ..
path0 + n - 1`` of a run, each from its own stream (see ``_streams``), so chunking and
thread count never change a number.
"""
import numpy as np

from .. import _config
from .._numba_threads import run_parallel
from .._threads import resolve_threads
from .._validation import check_int, check_positive_float
from ._price_paths import PricePaths
from ._streams import seed_key
from .params import ModelParams

def run_kernel(kernel, n_threads, *args):
    """Call a ``parallel=True`` kernel with ``n_threads`` numba threads."""
    return run_parallel(kernel, resolve_threads(n_threads), *args)


def check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"dtype must be float64 or float32, got {dtype}")
    return dtype


def check_seed(seed):
    seed = check_int("seed", seed, minimum=0)
    if seed >= 2**64:
        raise ValueError(f"seed must be below 2**64, got {seed}")
    return seed


def resolve_s0(s0, default, assets):
    """Starting prices: ``None`` (the parameters' own), a scalar, a sequence or a dict by asset."""
    if s0 is None:
        s0 = default
    elif isinstance(s0, dict):
        unknown = [a for a in s0 if a not in assets]
        if unknown:
            raise KeyError(f"unknown asset(s) {unknown} in s0; the model's assets are {list(assets)}")
        s0 = [s0.get(a, d) for a, d in zip(assets, default)]
    s0 = np.broadcast_to(np.asarray(s0, dtype=np.float64), (len(assets),)).copy()
    bad = ~(np.isfinite(s0) & (s0 > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"s0[{assets[i]}] = {s0[i]!r}: must be finite and > 0")
    return s0


class PathModel(ModelParams):
    """A parameter object that can generate :class:`PricePaths`.

    Subclasses implement ``_prepare(s0, dt)`` (per-run constants for the kernel, as a
    tuple) and ``_fill(out, key, path0, antithetic, prepared, n_threads)``.
    """

    antithetic_ok = True

    def _prepare(self, s0, dt):
        raise NotImplementedError

    def _fill(self, out, key, path0, antithetic, prepared, n_threads):
        raise NotImplementedError

    def bridge_volatility(self):
        """Annual volatility per asset that the paths carry for between-step crossings
        (``PricePaths.volatility``), or None: the crossings then use each path's
        realised volatility. Models whose steps are not Brownian leave it None."""
        return None

    def _check_run(self, n_paths, n_steps, dt, seed, s0, antithetic, dtype):
        n_paths = check_int("n_paths", n_paths, minimum=1)
        n_steps = check_int("n_steps", n_steps, minimum=0)
        dt = check_positive_float("dt", dt)
        seed = check_seed(seed)
        dtype = check_dtype(dtype)
        if antithetic and not self.antithetic_ok:
            raise ValueError(f"antithetic variates are not defined for the {self.model} model")
        s0 = resolve_s0(s0, getattr(self, "s0"), self.assets)
        return n_paths, n_steps, dt, seed, s0, bool(antithetic), dtype

    def paths(self, n_paths, n_steps, dt, *, seed=0, s0=None, antithetic=False, dtype=np.float64, n_threads=None, path_offset=0):
        """Generate ``n_paths`` paths of ``n_steps`` steps of length ``dt`` years.

        Parameters
        ----------
        n_paths, n_steps : int
            Paths, and steps after step 0.
        dt : float
            Step length in years (1/365 daily, 1/(365*24) hourly, 1/(365*3) 8-hourly).
        seed : int
            Path ``p`` (counting from 0, plus ``path_offset``) is a pure function of
            ``(seed, p)``.
        s0 : float, sequence or dict, optional
            Starting prices; default the parameters' ``s0`` (today's price when fitted).
        antithetic : bool
            Pair paths ``2k`` and ``2k + 1`` with opposite Gaussian shocks.
        dtype : float64 or float32
            Storage type of the prices (computation is in float64).
        n_threads : int, optional
            Threads; ``None`` means every usable core. Results do not depend on it.
        path_offset : int
            Index of the first path: ``paths(n, ..., path_offset=k)`` equals paths
            ``k .. k + n - 1`` of a larger run with the same seed.

        Returns
        -------
        PricePaths
        """
        n_paths, n_steps, dt, seed, s0, antithetic, dtype = self._check_run(n_paths, n_steps, dt, seed, s0, antithetic, dtype)
        path_offset = check_int("path_offset", path_offset, minimum=0)
        prepared = self._prepare(s0, dt)
        out = np.empty((n_paths, n_steps + 1, self.n_assets), dtype=dtype)
        self._fill(out, np.uint64(seed_key(np.uint64(seed))), np.int64(path_offset), antithetic, prepared, n_threads)
        out[:, 0, :] = s0  # exactly today's price (the kernels start from exp(log s0))
        return PricePaths(out, dt=dt, assets=self.assets, copy=False, volatility=self.bridge_volatility())

    def stream(self, n_paths, n_steps, dt, *, seed=0, s0=None, antithetic=False, dtype=np.float64, n_threads=None, chunk_paths=None):
        """Yield the paths of :meth:`paths` chunk by chunk, in path order.

        Each chunk is a :class:`PricePaths` of ``chunk_paths`` paths (the last may be
        shorter); concatenated they equal ``paths(n_paths, ...)`` exactly, and only one
        chunk is held at a time. ``chunk_paths`` defaults to whole 1024-path blocks
        filling about ``STREAM_CHUNK_BYTES`` (32 MiB).
        """
        n_paths, n_steps, dt, seed, s0, antithetic, dtype = self._check_run(n_paths, n_steps, dt, seed, s0, antithetic, dtype)
        if chunk_paths is None:
            per_path = (n_steps + 1) * self.n_assets * dtype.itemsize
            blocks = max(1, _config.STREAM_CHUNK_BYTES // (per_path * _config.RNG_PATH_BLOCK))
            chunk_paths = blocks * _config.RNG_PATH_BLOCK
        chunk_paths = check_int("chunk_paths", chunk_paths, minimum=1)
        prepared = self._prepare(s0, dt)
        key = np.uint64(seed_key(np.uint64(seed)))
        return self._chunks(n_paths, n_steps, dt, dtype, antithetic, prepared, key, chunk_paths, n_threads, s0)

    def _chunks(self, n_paths, n_steps, dt, dtype, antithetic, prepared, key, chunk_paths, n_threads, s0):
        for start in range(0, n_paths, chunk_paths):
            n = min(chunk_paths, n_paths - start)
            out = np.empty((n, n_steps + 1, self.n_assets), dtype=dtype)
            self._fill(out, key, np.int64(start), antithetic, prepared, n_threads)
            out[:, 0, :] = s0
            yield PricePaths(out, dt=dt, assets=self.assets, copy=False, volatility=self.bridge_volatility())
            del out
