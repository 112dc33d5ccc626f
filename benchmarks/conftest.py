"""Benchmark session extras: a short machine description in the saved JSON."""
import os


def pytest_benchmark_update_machine_info(config, machine_info):
    import numba
    import numpy

    machine_info["usable_cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    machine_info["numba_threads"] = numba.config.NUMBA_NUM_THREADS
    machine_info["numba_threading_layer"] = _layer()
    machine_info["numpy"] = numpy.__version__
    machine_info["numba"] = numba.__version__
    machine_info["load_average_at_start"] = os.getloadavg() if hasattr(os, "getloadavg") else None


def _layer():
    import numba

    try:
        return numba.threading_layer()
    except ValueError:
        return "not chosen yet"
