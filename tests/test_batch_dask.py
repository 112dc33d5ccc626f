"""Blocks as tasks on a dask.distributed cluster: two worker processes on loopback give
the local result bit for bit, through the API and ``ltvsim run --scheduler``, also when
a worker is killed mid-run."""
import os
import signal

import pytest

import ltvsim
from helpers import assert_identical
from ltvsim import cli
from ltvsim.batch import run_batch

distributed = pytest.importorskip(
    "distributed", reason="dask.distributed is not installed (pip install 'ltvsim[dask]'; the test extra has it)"
)
dask = pytest.importorskip("dask")

PRICES = {"BTC": 60_000.0, "ETH": 3_000.0}
MODEL = ltvsim.paths.GBMParams(assets=["BTC", "ETH"], s0=list(PRICES.values()), sigma=[1.5, 2.0],
                               corr=[[1.0, 0.7], [0.7, 1.0]])
BOOK = ltvsim.LoanBook.synthetic(20_000, seed=6, prices=PRICES, initial_ltv=(0.5, 0.8))
RUN = dict(n_paths=640, n_steps=20, dt=1 / 365, seed=5, block_paths=32, backend="cython", n_threads=1)


@pytest.fixture(scope="module")
def client():
    # libgomp (OpenMP) is not fork-safe: the workers are fresh spawned processes.
    with dask.config.set({"distributed.worker.multiprocessing-method": "spawn",
                          "distributed.scheduler.allowed-failures": 5}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address=None)
        with cluster, distributed.Client(cluster) as c:
            yield c


@pytest.fixture(scope="module")
def local():
    return run_batch(BOOK, MODEL, **RUN)


def test_cluster_run_is_bit_identical_to_the_local_run(client, local, tmp_path):
    on_cluster = run_batch(BOOK, MODEL, **RUN, client=client, out_dir=tmp_path, keep_blocks=True)
    assert_identical(on_cluster, local)
    assert on_cluster.meta["batch"]["scheduler"] == client.scheduler.address
    assert on_cluster.meta["batch"]["blocks_computed"] == list(range(20))
    # Its checkpoint is the local run's: a local rerun reuses every block.
    again = run_batch(BOOK, MODEL, **RUN, out_dir=tmp_path)
    assert again.meta["batch"]["blocks_resumed"] == list(range(20))
    assert_identical(again, local)


def test_cli_scheduler_option(client, tmp_path, capsys):
    argv = ["run", "--loans", "3000", "--paths", "96", "--steps", "10", "--seed", "2", "--block-paths", "32",
            "--backend", "cython", "--quiet"]
    assert cli.main([*argv, "--scheduler", client.scheduler.address, "--out", str(tmp_path / "a")]) == 0
    assert cli.main([*argv, "--out", str(tmp_path / "b")]) == 0  # local
    capsys.readouterr()
    assert_identical(ltvsim.SimulationResult.load(tmp_path / "a"), ltvsim.SimulationResult.load(tmp_path / "b"))
    meta = ltvsim.SimulationResult.load(tmp_path / "a").meta
    assert meta["batch"]["scheduler"] == client.scheduler.address


def test_killing_a_worker_mid_run_still_gives_the_local_result(client, local):
    killed = []

    def kill_a_busy_worker(index, computed):
        if index == 3 and not killed:
            pids = client.run(os.getpid)
            busy = [w for w, keys in client.processing().items() if keys] or list(pids)
            os.kill(pids[busy[0]], signal.SIGKILL)
            killed.append(pids[busy[0]])

    result = run_batch(BOOK, MODEL, **RUN, client=client, on_block=kill_a_busy_worker)
    assert killed, "no worker was killed"
    assert_identical(result, local)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it
    assert killed[0] not in client.run(os.getpid).values()
