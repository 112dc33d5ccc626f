"""The one place that decides how many threads a kernel uses."""
import numbers
import os


def usable_cores():
    """Cores this process may run on (honours CPU affinity where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_threads(n_threads=None):
    """Return the thread count for a kernel call.

    Parameters
    ----------
    n_threads : int or None
        ``None`` means ``OMP_NUM_THREADS`` when set, else every usable core.

    Returns
    -------
    int
        A count >= 1.
    """
    if n_threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
        if env.isdigit() and int(env) > 0:
            return int(env)
        return usable_cores()
    if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral):
        raise TypeError(f"n_threads must be a positive integer or None, got {n_threads!r}")
    n_threads = int(n_threads)
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    return n_threads
