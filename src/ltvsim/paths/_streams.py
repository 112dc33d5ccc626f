"""Reproducible random streams for the path generators, compiled with numba.

Design note
-----------
Every path owns one stream, keyed by ``(seed, block, lane)`` where ``block = p //
RNG_PATH_BLOCK`` and ``lane = p % RNG_PATH_BLOCK``. The key is hashed with SplitMix64
(the same mixing function as :mod:`ltvsim._rng`) and the hash seeds a xoshiro256++
generator (Blackman and Vigna, "Scrambled linear pseudorandom number generators", ACM
TOMS 2021), whose four state words are the next four SplitMix64 outputs, as its authors
recommend. A path's draws therefore depend on nothing but the seed and the path's index:
not on the run's size, its chunking, the thread count or the machine, and any block can
be generated without those before it. Steps are drawn in order, so a path of 30 steps is
the first 30 steps of the same path with 60.

With antithetic variates, lanes ``2k`` and ``2k + 1`` share the stream of lane ``2k``;
the models negate the Gaussian shocks of the odd lane and keep every other draw (jump
times, regime switches, Student-t scales, bootstrap picks), so a pair stays in step.

Normals come from the 256-layer ziggurat of Marsaglia and Tsang ("The ziggurat method for
generating random variables", J. Stat. Soft. 2000) in the 64-bit form NumPy uses (8 bits
of layer, 1 of sign, 52 of abscissa); the tables are built here at import. Gammas use
Marsaglia and Tsang's squeeze method (ACM TOMS 2000).

The functions are tiny and meant to be inlined into the model kernels, which own the
loops; ``state`` is a ``uint64[4]`` scratch array per path.
"""
import math

import numpy as np
from numba import njit

from .. import _config

_U = np.uint64
_GOLDEN = _U(0x9E3779B97F4A7C15)
_MIX1 = _U(0xBF58476D1CE4E5B9)
_MIX2 = _U(0x94D049BB133111EB)
_TO_UNIT = 2.0**-53
_BLOCK = _config.RNG_PATH_BLOCK
_MAX_JUMPS = _config.MAX_JUMPS_PER_STEP

_jit = dict(cache=True, nogil=True, error_model="numpy", fastmath=False)


def _ziggurat_tables():
    """Layer abscissae ``x_i * 2**-52`` (wi), acceptance bounds (ki) and ``f(x_i)`` (fi)."""
    n = 256
    r = 3.6541528853610088  # right edge of the base layer
    v = 0.00492867323399  # area of every layer
    m1 = 2.0**52
    ki = np.zeros(n, dtype=np.uint64)
    wi = np.zeros(n)
    fi = np.zeros(n)
    dn = tn = r
    q = v / math.exp(-0.5 * dn * dn)
    ki[0] = np.uint64((dn / q) * m1)
    ki[1] = 0
    wi[0] = q / m1
    wi[n - 1] = dn / m1
    fi[0] = 1.0
    fi[n - 1] = math.exp(-0.5 * dn * dn)
    for i in range(n - 2, 0, -1):
        dn = math.sqrt(-2.0 * math.log(v / dn + math.exp(-0.5 * dn * dn)))
        ki[i + 1] = np.uint64((dn / tn) * m1)
        tn = dn
        fi[i] = math.exp(-0.5 * dn * dn)
        wi[i] = dn / m1
    return r, ki, wi, fi


_ZIG_R, _KI, _WI, _FI = _ziggurat_tables()
_ZIG_INV_R = 1.0 / _ZIG_R


@njit(**_jit)
def mix64(x):
    """SplitMix64 output function of ``x + golden`` (see :func:`ltvsim._rng.mix64`)."""
    z = x + _GOLDEN
    z = (z ^ (z >> _U(30))) * _MIX1
    z = (z ^ (z >> _U(27))) * _MIX2
    return z ^ (z >> _U(31))


@njit(**_jit)
def seed_key(seed):
    """Hash of the run's seed (a non-negative int below 2**64)."""
    return mix64(_U(seed))


@njit(**_jit)
def seed_path(key, path, antithetic, state):
    """Seed ``state`` (OUT, ``uint64[4]``) for global path index ``path``.

    Returns the sign of the path's Gaussian shocks: -1.0 for the odd member of an
    antithetic pair, else 1.0.
    """
    block = path // _BLOCK
    lane = path % _BLOCK
    sign = 1.0
    if antithetic:
        if lane % 2 == 1:
            sign = -1.0
        lane -= lane % 2
    k = mix64(mix64(key ^ _U(block)) ^ _U(lane))
    for j in range(4):
        k = k + _GOLDEN
        z = (k ^ (k >> _U(30))) * _MIX1
        z = (z ^ (z >> _U(27))) * _MIX2
        state[j] = z ^ (z >> _U(31))
    return sign


@njit(**_jit)
def _rotl(x, k):
    return (x << _U(k)) | (x >> _U(64 - k))


@njit(**_jit)
def next_u64(state):
    """xoshiro256++: next 64-bit output; advances ``state`` in place."""
    s0 = state[0]
    s1 = state[1]
    s2 = state[2]
    s3 = state[3]
    result = _rotl(s0 + s3, 23) + s0
    t = s1 << _U(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    state[0] = s0
    state[1] = s1
    state[2] = s2
    state[3] = s3
    return result


@njit(**_jit)
def uniform(state):
    """Uniform double in [0, 1) with 53 random bits."""
    return np.float64(next_u64(state) >> _U(11)) * _TO_UNIT


@njit(**_jit)
def normal(state):
    """Standard normal (ziggurat)."""
    while True:
        r = next_u64(state)
        idx = np.intp(r & _U(0xFF))
        r = r >> _U(8)
        negative = (r & _U(1)) != _U(0)
        rabs = (r >> _U(1)) & _U(0x000FFFFFFFFFFFFF)
        x = np.float64(rabs) * _WI[idx]
        if negative:
            x = -x
        if rabs < _KI[idx]:
            return x
        if idx == 0:
            while True:
                xx = -_ZIG_INV_R * math.log1p(-uniform(state))
                yy = -math.log1p(-uniform(state))
                if yy + yy > xx * xx:
                    if ((rabs >> _U(8)) & _U(1)) != _U(0):
                        return -(_ZIG_R + xx)
                    return _ZIG_R + xx
        else:
            if (_FI[idx - 1] - _FI[idx]) * uniform(state) + _FI[idx] < math.exp(-0.5 * x * x):
                return x


@njit(**_jit)
def gamma(state, shape):
    """Gamma(shape, 1) for ``shape >= 1`` (Marsaglia-Tsang squeeze)."""
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = normal(state)
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        u = uniform(state)
        x2 = x * x
        if u < 1.0 - 0.0331 * x2 * x2:
            return d * v
        if math.log(u) < 0.5 * x2 + d * (1.0 - v + math.log(v)):
            return d * v


@njit(**_jit)
def poisson_inverse(u, lam, p0):
    """Poisson(lam) count for uniform ``u`` by inversion; ``p0 = exp(-lam)``.

    Intended for the small per-step intensities of jump models (at most ``MAX_JUMPS_PER_STEP`` jumps).
    """
    k = 0
    p = p0
    cdf = p0
    while u >= cdf and k < _MAX_JUMPS:
        k += 1
        p *= lam / k
        cdf += p
    return k


@njit(**_jit)
def _fill_normals(key, path, antithetic, out):
    state = np.empty(4, dtype=np.uint64)
    sign = seed_path(key, path, antithetic, state)
    for i in range(out.shape[0]):
        out[i] = sign * normal(state)


@njit(**_jit)
def _fill_uniforms(key, path, antithetic, out):
    state = np.empty(4, dtype=np.uint64)
    seed_path(key, path, antithetic, state)
    for i in range(out.shape[0]):
        out[i] = uniform(state)


def path_normals(seed, path, n, *, antithetic=False):
    """The first ``n`` Gaussian shocks of path ``path``'s stream (for tests and references).

    GBM paths consume exactly these, asset by asset within each step.
    """
    out = np.empty(n)
    _fill_normals(np.uint64(seed_key(np.uint64(seed))), np.int64(path), bool(antithetic), out)
    return out


def path_uniforms(seed, path, n):
    """The first ``n`` uniforms of path ``path``'s stream (for tests)."""
    out = np.empty(n)
    _fill_uniforms(np.uint64(seed_key(np.uint64(seed))), np.int64(path), False, out)
    return out
