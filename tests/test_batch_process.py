"""The streaming engine in real processes: peak memory stays flat as paths grow, and a
run killed with SIGKILL resumes where it stopped, bit-identical, recomputing nothing."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import ltvsim
from helpers import assert_identical
from ltvsim import cli
from ltvsim.batch import run_batch

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="peak RSS and SIGKILL as on Linux")

PEAK_RSS = textwrap.dedent(
    """
    import resource, sys
    import ltvsim
    from ltvsim.paths import GBMParams

    n_paths = int(sys.argv[1])
    model = GBMParams(assets=["BTC", "ETH"], s0=[80_000.0, 3_000.0], sigma=[0.6, 0.75], corr=[[1, 0.8], [0.8, 1]])
    book = ltvsim.LoanBook.synthetic(1_000, seed=1, prices={"BTC": 80_000.0, "ETH": 3_000.0})
    result = ltvsim.run_batch(book, model, n_paths=n_paths, n_steps=180, dt=1 / 365, seed=2,
                              block_paths=256, backend="cython", n_threads=1)
    assert result.meta["n_paths"] == n_paths
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
    """
)


def peak_rss_kib(n_paths):
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, str(n_paths)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def test_peak_memory_is_flat_as_paths_grow():
    # 180 daily steps make the prices the memory that would grow: held at once, 16,000
    # paths of 181 steps x 2 assets take 46 MB (35 MB more than 4,000 paths); streamed in
    # blocks of 256 paths, one block takes 0.7 MB and only a few numbers per path stay.
    small, large = peak_rss_kib(4_000), peak_rss_kib(16_000)
    grown_mib = (large - small) / 1024
    assert grown_mib < 8, f"peak RSS grew by {grown_mib:.1f} MiB from 4,000 to 16,000 paths ({small} -> {large} KiB)"


def command(out_dir):
    return [
        sys.executable, "-m", "ltvsim.cli", "run", "--loans", "50000", "--paths", "1536", "--steps", "30",
        "--seed", "3", "--block-paths", "64", "--threads", "1", "--backend", "cython", "--quiet",
        "--keep-blocks", "--out", str(out_dir),
    ]


def test_killed_run_resumes_bit_identical_without_recomputing(tmp_path):
    out_dir = tmp_path / "run"
    blocks = out_dir / "blocks"
    proc = subprocess.Popen(command(out_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if blocks.is_dir() and len([n for n in os.listdir(blocks) if n.startswith("block-")]) >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    before = {n: os.stat(blocks / n).st_mtime_ns for n in os.listdir(blocks) if n.startswith("block-")}
    assert 3 <= len(before) < 24 and not (out_dir / "summary.json").exists()

    done = subprocess.run(command(out_dir), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    batch = json.loads((out_dir / "summary.json").read_text())["meta"]["batch"]
    reused = {f"block-{i:06d}.npz" for i in batch["blocks_resumed"]}
    assert reused == set(before), "every finished block is reused"
    assert {f"block-{i:06d}.npz" for i in batch["blocks_computed"]}.isdisjoint(before)
    assert {n: os.stat(blocks / n).st_mtime_ns for n in before} == before, "finished blocks were not rewritten"

    book = ltvsim.LoanBook.synthetic(50_000, seed=3, prices=dict(zip(cli.DEFAULT_MARKET["assets"], cli.DEFAULT_MARKET["s0"])))
    uninterrupted = run_batch(book, cli.default_model(), n_paths=1536, n_steps=30, dt=1 / 365, seed=3, block_paths=64)
    assert_identical(ltvsim.SimulationResult.load(out_dir), uninterrupted)
