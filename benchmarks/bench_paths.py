"""Path generation speed and memory.

    pytest benchmarks/bench_paths.py --benchmark-enable --benchmark-json bench_results/paths-<date>.json

Groups:
* ``gbm-vs-numpy-<size>``: correlated 2-asset GBM paths against
  ``numpy.random.Generator.standard_normal`` for the same number of draws (the normals
  alone, no paths: what a vectorised NumPy script pays before it even starts).
* ``models-per-path-step``: every model on the same grid, 2 assets.
* the peak RSS (VmHWM) of a streamed run of 1,000,000 two-asset paths of 365 daily
  steps (5.4 GiB if held at once), measured in a fresh process.
The last test computes the bars (GBM >= 0.5x NumPy; richer models <= 3x GBM; streamed
peak < 1 GiB) from the timings of this run and records the ratios, and whether each bar
is met, in the JSON; it asserts nothing about speed.
"""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ltvsim.paths import BootstrapParams, GARCHParams, GBMParams, MertonParams, RegimeParams

DT = 1 / 365
CORR = [[1.0, 0.75], [0.75, 1.0]]
RESULTS = {}

SIZES = {"10k-paths-x-100-steps": (10_000, 100), "100k-paths-x-100-steps": (100_000, 100)}
MODELS = {
    "gbm": GBMParams(assets=["BTC", "ETH"], s0=[90_000.0, 3_000.0], mu=0.0, sigma=[0.6, 0.8], corr=CORR),
    "merton": MertonParams(assets=["BTC", "ETH"], s0=[90_000.0, 3_000.0], sigma=[0.5, 0.7], corr=CORR,
                           jump_rate=[5, 8], jump_mean=-0.04, jump_std=0.05, common_rate=4,
                           common_mean=[-0.1, -0.14], common_std=[0.04, 0.06]),
    "garch": GARCHParams(assets=["BTC", "ETH"], s0=[90_000.0, 3_000.0], omega=[1.1e-5, 4.2e-5],
                         alpha=[0.06, 0.08], beta=[0.93, 0.9], nu=3.5, corr=CORR),
    "regime": RegimeParams(assets=["BTC", "ETH"], s0=[90_000.0, 3_000.0], mu=[[0.3, 0.3], [-1.0, -1.5]],
                           sigma=[[0.4, 0.5], [1.1, 1.4]], corr=[CORR, [[1, 0.9], [0.9, 1]]],
                           rate_to_stress=3, rate_to_calm=15),
    "bootstrap": BootstrapParams(assets=["BTC", "ETH"], s0=[90_000.0, 3_000.0],
                                 returns=np.random.default_rng(0).standard_normal((2500, 2)) * 0.03, block_length=10),
}
MODEL_GRID = (50_000, 100)


def _warm():
    for m in MODELS.values():
        m.paths(64, 4, DT)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("impl", ["numpy_standard_normal", "ltvsim_gbm"])
def test_gbm_vs_numpy(benchmark, impl, size):
    n_paths, n_steps = SIZES[size]
    draws = n_paths * n_steps * 2
    benchmark.group = f"gbm-vs-numpy-{size}"
    benchmark.extra_info["draws"] = draws
    if impl == "numpy_standard_normal":
        rng = np.random.default_rng(1)
        benchmark.pedantic(rng.standard_normal, args=(draws,), rounds=7, warmup_rounds=1)
    else:
        _warm()
        model = MODELS["gbm"]
        benchmark.pedantic(model.paths, args=(n_paths, n_steps, DT), rounds=7, warmup_rounds=1)
    RESULTS[(impl, size)] = benchmark.stats.stats.median
    benchmark.extra_info["ns_per_draw"] = benchmark.stats.stats.median / draws * 1e9


@pytest.mark.parametrize("model", list(MODELS))
def test_models_per_path_step(benchmark, model):
    _warm()
    n_paths, n_steps = MODEL_GRID
    benchmark.group = "models-per-path-step"
    benchmark.pedantic(MODELS[model].paths, args=(n_paths, n_steps, DT), rounds=5, warmup_rounds=1)
    RESULTS[("model", model)] = benchmark.stats.stats.median
    benchmark.extra_info["ns_per_path_step"] = benchmark.stats.stats.median / (n_paths * n_steps) * 1e9


STREAM_SCRIPT = textwrap.dedent("""
    import json, resource, time
    import numpy as np

    def peak_kib():
        # VmHWM is this process's own high-water mark (ru_maxrss can carry the parent's
        # peak across fork + exec on Linux)
        try:
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    from ltvsim.paths import GBMParams
    m = GBMParams(assets=["BTC", "ETH"], s0=[90_000.0, 3_000.0], sigma=[0.6, 0.8],
                    corr=[[1, 0.75], [0.75, 1]])
    m.paths(8, 2, 1 / 365)
    base = peak_kib()
    t = time.perf_counter()
    n, worst = 0, np.inf
    for chunk in m.stream(1_000_000, 365, 1 / 365, seed=1):
        n += chunk.n_paths
        worst = min(worst, float(chunk.prices[:, -1, 0].min()))
    elapsed = time.perf_counter() - t
    peak = peak_kib()
    print(json.dumps({"paths": n, "peak_rss_kib": peak, "rss_before_run_kib": base, "seconds": elapsed,
                      "full_array_gib": 1_000_000 * 366 * 2 * 8 / 2**30}))
""")


def test_streamed_million_paths_peak_memory(benchmark):
    benchmark.group = "stream-1M-paths-memory"
    out = {}

    def run():
        proc = subprocess.run([sys.executable, "-c", STREAM_SCRIPT], capture_output=True, text=True, check=True)
        out.update(json.loads(proc.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(out)
    RESULTS["stream"] = out
    assert out["paths"] == 1_000_000


def test_bars(benchmark):
    benchmark.group = "bars"
    ratios = {}
    for size in SIZES:
        if ("ltvsim_gbm", size) in RESULTS and ("numpy_standard_normal", size) in RESULTS:
            ratios[f"gbm_throughput_vs_numpy_{size}"] = RESULTS[("numpy_standard_normal", size)] / RESULTS[("ltvsim_gbm", size)]
    for name in MODELS:
        if ("model", name) in RESULTS and name != "gbm":
            ratios[f"{name}_cost_vs_gbm_per_path_step"] = RESULTS[("model", name)] / RESULTS[("model", "gbm")]
    if "stream" in RESULTS:
        ratios["stream_1M_peak_rss_gib"] = RESULTS["stream"]["peak_rss_kib"] / 2**20
    # The bars are recorded, not asserted: a benchmark measures, it does not pass or fail.
    met = {}
    for k, v in ratios.items():
        if k.startswith("gbm_throughput"):
            met[f"bar_met_{k}"] = v >= 0.5
        elif k.endswith("vs_gbm_per_path_step"):
            met[f"bar_met_{k}"] = v <= 3.0
        elif k == "stream_1M_peak_rss_gib":
            met[f"bar_met_{k}"] = v < 1.0
    benchmark.extra_info.update(ratios)
    benchmark.extra_info.update(met)
    benchmark.pedantic(lambda: None, rounds=1)
    print(json.dumps({**ratios, **met}, indent=2))
