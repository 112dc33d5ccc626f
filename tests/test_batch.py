"""The streaming engine (``ltvsim.batch``): block-wise runs equal one ``simulate`` call,
streamed runs are bit-identical to each other, checkpoints resume, corrupt blocks are
redone, foreign inputs are refused."""
import json
import os
import warnings

import numpy as np
import pytest

import ltvsim
from helpers import assert_identical
from ltvsim import _config
from ltvsim.batch import BlockFileWarning, merge_results, run_batch
from _paths_helpers import models

DT = 1 / 365
PRICES = {"BTC": 60_000.0, "ETH": 3_000.0}
MODELS = models()
# A wild market (250-300% volatility) so that daily gaps through the liquidation level,
# hence losses and loan_loss sums over several blocks, are common.
GBM = ltvsim.paths.GBMParams(assets=["BTC", "ETH"], s0=list(PRICES.values()), sigma=[2.5, 3.0],
                             corr=[[1.0, 0.7], [0.7, 1.0]])
BOOK = ltvsim.LoanBook.synthetic(1500, seed=4, prices=PRICES, initial_ltv=(0.55, 0.8))
RUN = dict(n_paths=300, n_steps=12, dt=DT, seed=9)


def single_call(book, model, *, n_paths, n_steps, dt, seed, antithetic=False, **kwargs):
    """The reference: every path generated at once and evaluated by one simulate call."""
    paths = model.paths(n_paths, n_steps, dt, seed=seed, antithetic=antithetic)
    return ltvsim.simulate(book, paths, seed=seed, **kwargs)


def assert_matches_single_call(streamed, single, backend="cython"):
    """Per-path arrays and counts exactly; loan_loss to 1e-12 (block sums, see batch.py).

    The NumPy reference sums a path's money over vectorised loan x path tiles whose
    shape follows the number of paths per call, so its money figures agree to
    BACKEND_RTOL (as between backends); its counts still agree exactly."""
    assert set(streamed.arrays) == set(single.arrays)
    for name, want in single.arrays.items():
        got = streamed.arrays[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        if backend == "numpy" and got.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=_config.BACKEND_RTOL, atol=1e-6, err_msg=name)
        elif name == "loan_loss":
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_streamed_run_equals_one_simulate_call(backend):
    streamed = run_batch(BOOK, GBM, **RUN, block_paths=64, backend=backend, n_threads=2)
    single = single_call(BOOK, GBM, **RUN, backend=backend)
    assert_matches_single_call(streamed, single, backend)
    assert streamed.meta["batch"]["n_blocks"] == 5 and streamed.meta["n_paths"] == 300
    assert np.count_nonzero(streamed.loan_loss) > 1000  # the 1e-12 claim is not vacuous
    if backend != "numpy":
        assert streamed.summary()["expected_loss"] == single.summary()["expected_loss"]


def test_one_block_is_bit_identical_to_simulate():
    streamed = run_batch(BOOK, GBM, **RUN, block_paths=1000)
    assert_identical(streamed, single_call(BOOK, GBM, **RUN))


@pytest.mark.parametrize("name", ["merton", "garch", "regime", "bootstrap"])
def test_every_market_model_streams(name):
    model = MODELS[name]
    run = dict(RUN, n_paths=130)
    assert_matches_single_call(run_batch(BOOK, model, **run, block_paths=48), single_call(BOOK, model, **run))


def test_partial_liquidation_record_steps_and_antithetic_stream():
    run = dict(RUN, n_paths=150, antithetic=True)
    options = dict(liquidation="partial", record_steps=True)
    streamed = run_batch(BOOK, GBM, **run, block_paths=37, **options)  # odd size: pairs straddle blocks
    assert_matches_single_call(streamed, single_call(BOOK, GBM, **run, **options))
    assert streamed.step_loss.shape == (150, 13)


def test_streamed_runs_are_bit_identical_whatever_threads_backend_or_inner_blocks():
    a = run_batch(BOOK, GBM, **RUN, block_paths=64, n_threads=1, backend="cython")
    b = run_batch(BOOK, GBM, **RUN, block_paths=64, n_threads=2, backend="numba", path_block=8)
    assert_identical(a, b)
    # Another block size changes only the rounding of loan_loss.
    c = run_batch(BOOK, GBM, **RUN, block_paths=100)
    assert_matches_single_call(c, a)


def test_merge_results_of_manual_blocks_equals_run_batch():
    blocks = []
    for start in range(0, 300, 64):
        n = min(64, 300 - start)
        paths = GBM.paths(n, 12, DT, seed=9, path_offset=start)
        blocks.append(ltvsim.simulate(BOOK, paths, seed=9, path_offset=start))
    assert_identical(merge_results(blocks), run_batch(BOOK, GBM, **RUN, block_paths=64))
    with pytest.raises(ValueError, match="consecutive paths"):
        merge_results([blocks[0], blocks[2]])


def test_progress_bar_and_callback(capsys, monkeypatch):
    import functools

    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", functools.partial(tqdm.auto.tqdm, mininterval=0, miniters=1))
    seen = []
    run_batch(BOOK, GBM, **RUN, block_paths=100, progress=True, on_block=lambda i, computed: seen.append((i, computed)))
    assert seen == [(0, True), (1, True), (2, True)]
    err = capsys.readouterr().err
    assert "path/s" in err and "blocks 3/3" in err


def test_invalid_inputs_are_refused_before_any_block():
    with pytest.raises(TypeError, match="book must be a LoanBook"):
        run_batch("book", GBM, **RUN)
    with pytest.raises(TypeError, match="model must be a market model"):
        run_batch(BOOK, {"model": "gbm"}, **RUN)
    with pytest.raises(ValueError, match="block_paths must be >= 1, got 0"):
        run_batch(BOOK, GBM, **RUN, block_paths=0)
    with pytest.raises(ValueError, match="liquidation must be one of"):
        run_batch(BOOK, GBM, **RUN, liquidation="some")
    other = ltvsim.paths.GBMParams(assets=["SOL", "ETH"], s0=[100.0, 3000.0], sigma=0.5)
    with pytest.raises(ValueError, match="'BTC' in the book but 'SOL' in the price paths"):
        run_batch(BOOK, other, **RUN)


# ---------------------------------------------------------------------- checkpoints
def checkpointed(out_dir, **overrides):
    return run_batch(BOOK, GBM, **{**RUN, "block_paths": 50, "out_dir": out_dir, "keep_blocks": True, **overrides})


def block_files(out_dir):
    return sorted(os.listdir(out_dir / "blocks"))


def test_out_dir_writes_result_manifest_and_blocks(tmp_path):
    result = checkpointed(tmp_path)
    assert_identical(result, run_batch(BOOK, GBM, **RUN, block_paths=50))
    assert block_files(tmp_path) == [f"block-{i:06d}.npz" for i in range(6)]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["identity"]["seed"] == 9 and manifest["identity"]["block_paths"] == 50
    assert manifest["identity"]["ltvsim"] == ltvsim.__version__ and len(manifest["identity"]["book_sha256"]) == 64
    assert_identical(ltvsim.SimulationResult.load(tmp_path), result)


def test_interrupted_run_resumes_without_recomputing(tmp_path):
    class Stop(Exception):
        pass

    def crash_after_three(index, computed):
        if index == 2:
            raise Stop

    with pytest.raises(Stop):
        checkpointed(tmp_path, on_block=crash_after_three)
    assert block_files(tmp_path) == [f"block-{i:06d}.npz" for i in range(3)]
    mtimes = {name: os.stat(tmp_path / "blocks" / name).st_mtime_ns for name in block_files(tmp_path)}
    resumed = checkpointed(tmp_path)
    assert resumed.meta["batch"]["blocks_resumed"] == [0, 1, 2]
    assert resumed.meta["batch"]["blocks_computed"] == [3, 4, 5]
    assert {n: os.stat(tmp_path / "blocks" / n).st_mtime_ns for n in mtimes} == mtimes
    assert_identical(resumed, run_batch(BOOK, GBM, **RUN, block_paths=50))


def test_corrupt_truncated_and_foreign_block_files_are_redone(tmp_path):
    reference = checkpointed(tmp_path)
    blocks = tmp_path / "blocks"
    data = bytearray((blocks / "block-000001.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern inside the compressed data
    (blocks / "block-000001.npz").write_bytes(bytes(data))
    whole = (blocks / "block-000003.npz").read_bytes()
    (blocks / "block-000003.npz").write_bytes(whole[: len(whole) // 3])  # a partial write
    (blocks / "block-000004.npz").write_bytes((blocks / "block-000000.npz").read_bytes())  # wrong block
    (blocks / ".block-000005.tmp999.npz").write_bytes(b"half a file")  # a killed writer's temporary
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = checkpointed(tmp_path)
    assert again.meta["batch"]["blocks_computed"] == [1, 3, 4]
    messages = [str(w.message) for w in caught if issubclass(w.category, BlockFileWarning)]
    assert len(messages) == 3 and "block-000004.npz: holds block 0" in messages[2]
    assert_identical(again, reference)
    assert block_files(tmp_path) == [f"block-{i:06d}.npz" for i in range(6)]  # temporary gone


@pytest.mark.parametrize(
    "change, key",
    [
        (dict(seed=10), "seed"),
        (dict(n_paths=301), "n_paths"),
        (dict(block_paths=60), "block_paths"),
        (dict(liquidation="partial"), "liquidation"),
        (dict(backend="numpy"), "arithmetic"),
        (dict(model=MODELS["merton"]), "model"),
        (dict(book=BOOK.subset(slice(0, 1499))), "book_sha256"),
    ],
)
def test_different_inputs_into_the_same_directory_are_refused(tmp_path, change, key):
    with pytest.raises(StopIteration):  # leave a half-done run behind
        checkpointed(tmp_path, on_block=lambda i, c: next(iter(())) if i == 1 else None)
    before = {n: (tmp_path / "blocks" / n).read_bytes() for n in block_files(tmp_path)}
    args = {**RUN, "block_paths": 50, "out_dir": tmp_path}
    book, model = change.pop("book", BOOK), change.pop("model", GBM)
    with pytest.raises(ValueError, match=rf"holds a run with different inputs \(.*{key}: .*refusing to mix"):
        run_batch(book, model, **{**args, **change})
    assert {n: (tmp_path / "blocks" / n).read_bytes() for n in block_files(tmp_path)} == before


def test_finished_run_cleans_up_and_reloads(tmp_path):
    first = run_batch(BOOK, GBM, **RUN, block_paths=50, out_dir=tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["loans.parquet", "paths.parquet", "summary.json"]
    again = run_batch(BOOK, GBM, **RUN, block_paths=50, out_dir=tmp_path)
    assert again.meta["batch"]["reloaded"] and again.meta["batch"]["blocks_computed"] == []
    assert_identical(again, first)
    with pytest.raises(ValueError, match=r"seed: 9 there, 8 now"):
        run_batch(BOOK, GBM, **{**RUN, "seed": 8}, block_paths=50, out_dir=tmp_path)


def test_a_directory_of_other_results_is_refused(tmp_path):
    single_call(BOOK, GBM, **RUN).save(tmp_path)
    with pytest.raises(ValueError, match="not written by a batch run"):
        run_batch(BOOK, GBM, **RUN, out_dir=tmp_path)


def test_default_block_size_is_the_configured_one():
    assert _config.BATCH_BLOCK_PATHS % _config.RNG_PATH_BLOCK == 0
    result = run_batch(BOOK, GBM, **{**RUN, "n_paths": 20})
    assert result.meta["batch"]["block_paths"] == _config.BATCH_BLOCK_PATHS
