"""Counter-based uniform draws: a pure function of (seed, loan, path, step).

Every backend computes the same 64-bit hash, so a top-up decision never depends on
thread count, chunking, backend or machine. The hash chains SplitMix64's mixing
function (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
OOPSLA 2014) over the key:

    h = mix(mix(mix(mix(seed) ^ loan) ^ path) ^ step),   u = (h >> 11) * 2**-53

where ``mix(x)`` adds the golden-ratio increment and applies the SplitMix64 finaliser.
``u`` lies in [0, 1); a draw "succeeds" with probability ``p`` when ``u < p``.
"""
import numpy as np

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
TO_UNIT = 2.0**-53


def mix64(x):
    """SplitMix64 step on a Python int (the readable reference of the kernels' hash)."""
    z = (x + GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


def loan_key(seed, loan):
    """Hash prefix shared by every draw of one loan."""
    return mix64(mix64(seed & MASK64) ^ loan)


def uniform(seed, loan, path, step):
    """The uniform in [0, 1) drawn for (seed, loan, path, step), with Python ints."""
    h = mix64(mix64(loan_key(seed, loan) ^ path) ^ step)
    return (h >> 11) * TO_UNIT


_U = np.uint64


def mix64_array(x):
    """SplitMix64 step on a uint64 array (wrapping arithmetic)."""
    z = x + _U(GOLDEN)
    z = (z ^ (z >> _U(30))) * _U(MIX1)
    z = (z ^ (z >> _U(27))) * _U(MIX2)
    return z ^ (z >> _U(31))


def uniform_array(seed, loan, path, step):
    """Vectorised :func:`uniform`: ``loan``, ``path`` and ``step`` broadcast together."""
    with np.errstate(over="ignore"):
        seed_key = mix64_array(np.asarray(seed & MASK64, dtype=np.uint64))
        h = mix64_array(seed_key ^ np.asarray(loan, dtype=np.uint64))
        h = mix64_array(h ^ np.asarray(path, dtype=np.uint64))
        h = mix64_array(h ^ np.asarray(step, dtype=np.uint64))
    return (h >> _U(11)).astype(np.float64) * TO_UNIT


#: Step counter of a between-step crossing draw: the step with its top bit set, so
#: the crossing draws are a stream apart from the top-up draws of the same key.
BRIDGE_STEP_BIT = 1 << 63


def bridge_uniform(seed, loan, path, step):
    """The crossing draw for (seed, loan, path, step), in (0, 1): never 0.

    ``u = ((h >> 11) | 1) * 2**-53`` with ``h`` the hash of step ``step | 2**63``: an odd
    multiple of 2**-53, so a probability below 2**-53 never succeeds (which makes it
    exact to skip pairs whose crossing probability is provably that small).
    """
    h = mix64(mix64(loan_key(seed, loan) ^ path) ^ (step | BRIDGE_STEP_BIT))
    return ((h >> 11) | 1) * TO_UNIT


def bridge_uniform_array(seed, loan, path, step):
    """Vectorised :func:`bridge_uniform`: ``loan``, ``path`` and ``step`` broadcast together."""
    with np.errstate(over="ignore"):
        seed_key = mix64_array(np.asarray(seed & MASK64, dtype=np.uint64))
        h = mix64_array(seed_key ^ np.asarray(loan, dtype=np.uint64))
        h = mix64_array(h ^ np.asarray(path, dtype=np.uint64))
        h = mix64_array(h ^ (np.asarray(step, dtype=np.uint64) | _U(BRIDGE_STEP_BIT)))
    return ((h >> _U(11)) | _U(1)).astype(np.float64) * TO_UNIT
