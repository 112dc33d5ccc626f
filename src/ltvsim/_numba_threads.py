"""Calling a numba ``parallel=True`` kernel with a given number of threads, safely."""
import contextlib
import threading

import numba

_workqueue_lock = threading.Lock()


def _threading_layer():
    """numba's threading layer, or None before the first parallel call chose one."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


def run_parallel(kernel, n_threads, *args):
    """Call ``kernel(*args)`` on ``n_threads`` numba threads (capped at numba's pool).

    numba's thread count is per calling thread, so concurrent Python threads do not
    interfere. Its ``workqueue`` layer (used only when neither OpenMP nor TBB is
    available) is not re-entrant: calls are serialised there, and on the very first
    call, before numba has chosen a layer.
    """
    n_threads = max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS))
    serialise = _threading_layer() in (None, "workqueue")
    with _workqueue_lock if serialise else contextlib.nullcontext():
        numba.set_num_threads(n_threads)
        return kernel(*args)
