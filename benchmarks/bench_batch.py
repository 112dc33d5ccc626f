"""Batch runs at scale: peak memory, time per block, resume after SIGKILL.

    python benchmarks/bench_batch.py --loans 1000000 --paths 2000 --json bench_results/batch-<date>.json

Each measurement runs ``ltvsim run`` (default book and market, ``--out`` checkpointing,
default block size unless ``--block-paths``) in a fresh process and reads its peak RSS
(VmHWM) from ``/proc``:

1. an uninterrupted run: wall time, peak RSS, seconds per block (from the block files),
   checkpoint bytes per block;
2. the same run into a new directory, killed with SIGKILL as soon as ``--kill-after``
   block files exist, then rerun: blocks reused and recomputed, the rerun's overhead
   beyond the blocks it computed, and a check that the resumed result is bit-identical
   to the uninterrupted one.

The issue's bar is 1,000,000 loans x 100,000 paths x 30 steps under 2 GiB; the JSON holds
the measured figures at the size run and their extrapolation (time linear in paths;
memory O(loans + block) plus a few numbers per path). Under pytest, ``test_batch_small``
runs a small size as a smoke test.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

PER_PATH_BYTES = 8 * 14  # per-path result arrays kept in memory (8 money, 4 counts, 2 assets sold)


def ltvsim_command(args, out_dir):
    cmd = [sys.executable, "-m", "ltvsim.cli", "run", "--loans", str(args.loans), "--paths", str(args.paths),
           "--steps", str(args.steps), "--seed", "0", "--quiet", "--keep-blocks", "--out", out_dir]
    if args.block_paths:
        cmd += ["--block-paths", str(args.block_paths)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd


def run_measured(cmd, kill_when=None):
    """Run ``cmd``; return (returncode, wall seconds, peak RSS bytes). ``kill_when()`` is
    polled and the process SIGKILLed when it returns True."""
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _vm_hwm(proc.pid))
        if kill_when is not None and kill_when():
            peak = max(peak, _vm_hwm(proc.pid))
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if proc.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err}")
    return proc.returncode, time.perf_counter() - began, peak


def _vm_hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def block_files(out_dir):
    folder = os.path.join(out_dir, "blocks")
    return sorted(n for n in os.listdir(folder) if n.startswith("block-")) if os.path.isdir(folder) else []


def block_seconds(out_dir):
    seconds = []
    for name in block_files(out_dir):
        with np.load(os.path.join(out_dir, "blocks", name)) as data:
            info = json.loads(str(data["_block"][()]))
        seconds.append(info["paths_seconds"] + info["simulate_seconds"])
    return seconds


def measure_resume_only(args):
    """Kill a run after ``--kill-after`` blocks, rerun it, and report memory and what was
    recomputed; no uninterrupted run (bit-identity is checked by ``measure`` and the
    tests at smaller sizes). For the full bar size, where one run takes half an hour."""
    import ltvsim

    work = tempfile.mkdtemp(prefix="ltvsim-bench-batch-")
    try:
        killed = os.path.join(work, "killed")
        code_k, wall_k, peak_k = run_measured(ltvsim_command(args, killed),
                                              kill_when=lambda: len(block_files(killed)) >= args.kill_after)
        done_before = len(block_files(killed))
        code_r, wall_r, peak_r = run_measured(ltvsim_command(args, killed))
        if code_r != 0:
            raise RuntimeError(f"the resumed run failed with exit code {code_r}")
        summary = json.load(open(os.path.join(killed, "summary.json")))
        batch = summary["meta"]["batch"]
        per_block = block_seconds(killed)
        computed = batch["blocks_computed"]
        recomputed_seconds = sum(per_block[i] for i in computed)
        result = ltvsim.SimulationResult.load(killed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "size": {"loans": args.loans, "paths": args.paths, "steps": args.steps, "block_paths": batch["block_paths"],
                 "n_blocks": batch["n_blocks"], "threads": summary["meta"]["n_threads"],
                 "backend": summary["meta"]["backend"]},
        "kill_and_resume": {
            "killed_after_block_files": done_before, "killed_run_wall_seconds": wall_k,
            "killed_run_peak_rss_gib": peak_k / 2**30,
            "rerun_wall_seconds": wall_r, "rerun_peak_rss_gib": peak_r / 2**30,
            "blocks_resumed": batch["blocks_resumed"], "blocks_computed": len(computed),
            "recomputed_only_unfinished": not set(computed) & set(range(done_before)),
            "seconds_per_computed_block_mean": recomputed_seconds / max(1, len(computed)),
            "rerun_overhead_seconds": wall_r - recomputed_seconds,
            "loan_path_steps_per_second_rerun": args.loans * batch["block_paths"] * len(computed) * args.steps
            / recomputed_seconds,
            "result_paths": int(result.meta["n_paths"]),
            "expected_loss": result.expected_loss().value,
        },
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpu": _cpu(), "usable_cores": len(os.sched_getaffinity(0)),
                    "load_average_at_end": os.getloadavg(), "ltvsim": ltvsim.__version__, "numpy": np.__version__,
                    "date": time.strftime("%Y-%m-%d")},
    }


def measure(args):
    import ltvsim

    work = tempfile.mkdtemp(prefix="ltvsim-bench-batch-")
    try:
        full = os.path.join(work, "full")
        code, wall, peak = run_measured(ltvsim_command(args, full))
        summary = json.load(open(os.path.join(full, "summary.json")))
        batch = summary["meta"]["batch"]
        per_block = block_seconds(full)
        sizes = [os.path.getsize(os.path.join(full, "blocks", n)) for n in block_files(full)]

        killed = os.path.join(work, "killed")
        code_k, wall_k, peak_k = run_measured(ltvsim_command(args, killed),
                                              kill_when=lambda: len(block_files(killed)) >= args.kill_after)
        done_before = len(block_files(killed))
        code_r, wall_r, peak_r = run_measured(ltvsim_command(args, killed))
        resumed = json.load(open(os.path.join(killed, "summary.json")))["meta"]["batch"]
        a, b = ltvsim.SimulationResult.load(full), ltvsim.SimulationResult.load(killed)
        identical = all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
        rerun_blocks = block_seconds(killed)  # the recomputed blocks' files are the rerun's
        recomputed_seconds = sum(rerun_blocks[i] for i in resumed["blocks_computed"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    n_blocks = batch["n_blocks"]
    full_block = max(per_block)
    bar_paths = 100_000
    bar_blocks = -(-bar_paths // batch["block_paths"])
    extra_per_path_bytes = PER_PATH_BYTES * (bar_paths - args.paths)
    return {
        "size": {"loans": args.loans, "paths": args.paths, "steps": args.steps, "block_paths": batch["block_paths"],
                 "n_blocks": n_blocks, "threads": summary["meta"]["n_threads"], "backend": summary["meta"]["backend"]},
        "uninterrupted": {
            "wall_seconds": wall, "peak_rss_bytes": peak, "peak_rss_gib": peak / 2**30,
            "seconds_per_block": per_block, "block_file_bytes": sizes,
            "loan_path_steps_per_second": args.loans * args.paths * args.steps / sum(per_block),
        },
        "kill_and_resume": {
            "killed_after_block_files": done_before, "killed_run_wall_seconds": wall_k,
            "rerun_wall_seconds": wall_r, "rerun_peak_rss_bytes": peak_r,
            "blocks_resumed": resumed["blocks_resumed"], "blocks_computed": resumed["blocks_computed"],
            "recomputed_only_unfinished": not set(resumed["blocks_computed"]) & set(range(done_before)),
            # wall time of the rerun beyond computing its blocks: start-up, book, reading and
            # verifying the reused blocks, merging, writing the result
            "rerun_overhead_seconds": wall_r - recomputed_seconds,
            "bit_identical_to_uninterrupted": identical,
        },
        "extrapolation_to_bar": {
            "bar": "1,000,000 loans x 100,000 paths x 30 steps, peak < 2 GiB, resume recomputes at most the interrupted block",
            "blocks": bar_blocks,
            "estimated_hours": bar_blocks * full_block * (1_000_000 / args.loans) * (30 / args.steps) / 3600,
            "estimated_peak_rss_gib": (peak + extra_per_path_bytes) / 2**30 if args.loans == 1_000_000 else None,
            "note": "time: measured seconds per full block x blocks; memory: measured peak (O(loans + block)) "
                    "plus the per-path result arrays of the extra paths; worst-case loss on resume: one block",
        },
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpu": _cpu(), "usable_cores": len(os.sched_getaffinity(0)),
                    "load_average_at_end": os.getloadavg(), "ltvsim": ltvsim.__version__, "numpy": np.__version__,
                    "date": time.strftime("%Y-%m-%d")},
    }


def _cpu():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loans", type=int, default=1_000_000)
    parser.add_argument("--paths", type=int, default=2_000)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--block-paths", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--kill-after", type=int, default=1, help="block files to wait for before SIGKILL")
    parser.add_argument("--json", default=None)
    parser.add_argument("--resume-only", action="store_true",
                        help="skip the uninterrupted run (for the full bar size)")
    return parser.parse_args(argv)


def test_batch_small():
    report = measure(parse(["--loans", "20000", "--paths", "512", "--block-paths", "128", "--kill-after", "2"]))
    resume = report["kill_and_resume"]
    assert resume["bit_identical_to_uninterrupted"] and resume["recomputed_only_unfinished"]


if __name__ == "__main__":
    args = parse()
    report = measure_resume_only(args) if args.resume_only else measure(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text + "\n")
