"""Batch runs at any scale: paths generated and evaluated block by block, checkpointed,
resumable, and optionally spread over a ``dask.distributed`` cluster.

Design note
-----------
A run of ``n_paths`` paths is cut into blocks of ``block_paths`` paths. Block ``i``
covers global paths ``start = i * block_paths`` to ``stop``; it is generated alone with
``model.paths(..., path_offset=start)`` (every path has its own random stream) and
evaluated with ``simulate(..., path_offset=start)`` (top-up draws are keyed by global
path index). A block's result is therefore a pure function of the run's inputs and the
block's index: not of where, when, or in which process it was computed.

Blocks are merged strictly in block order: per-path arrays are concatenated, per-loan
counts are added, and per-loan loss sums are added as ``total += block_loan_loss``, block
after block. That order is the definition of a streamed run's result, so

* a streamed run is bit-identical to any other streamed run of the same inputs and
  block size: resumed or not, local or on a cluster, with any thread count;
* it equals one :func:`ltvsim.simulate` call on all paths exactly for every per-path
  array and every count, and to 1e-12 relative for ``loan_loss`` (one call adds path
  after path into each loan's total; the stream adds block sums, a different rounding);
  with a single block it is bit-identical. (This holds for the compiled backends. The
  NumPy reference sums a path's money over loan x path tiles shaped by the number of
  paths per call, so there money figures agree to ``BACKEND_RTOL`` as between backends;
  counts stay exact and two streamed NumPy runs with the same blocks stay identical.)

Memory is O(loans + block): one block of prices and of kernel outputs at a time, the
running per-loan sums, and the per-path results (a few numbers per path). With
``record_steps`` the per-path-and-step arrays are kept too, O(paths x steps).

Resume. With ``out_dir``, ``manifest.json`` records what defines the result (hashes of the
book's arrays and of the model's parameters, sizes, seed, block size, liquidation mode,
arithmetic family of the backend, package version) and each finished block is written to
``blocks/block-NNNNNN.npz`` under a temporary name, then renamed (``os.replace``), with a
SHA-256 of its arrays inside. Rerunning with the same inputs verifies and reuses every
complete block and computes only the rest; a truncated or corrupted block fails its
checksum and is recomputed; different inputs are refused, never mixed. The merged
result is written with :meth:`SimulationResult.save` (``summary.json`` keeps the
manifest), after which the checkpoint files are removed unless ``keep_blocks``; a rerun
of a finished run reloads its result.
"""
import hashlib
import json
import os
import shutil
import time
import warnings
import zipfile
import zlib
from typing import NamedTuple

import numpy as np

from . import _config, backends
from ._threads import resolve_threads
from ._validation import check_int, check_positive_float
from .book import FIELDS, LoanBook
from .paths.params import ModelParams
from .result import CASCADE_ARRAYS, LOAN_ARRAYS, PATH_ARRAYS, STEP_ARRAYS, SimulationResult
from .cascade import check_option_types, coupled_options, needs_coupled_kernel
from .simulate import LIQUIDATION_MODES, check_assets, impact_meta, rules_meta, simulate

#: Version of the checkpoint layout (manifest and block files).
FORMAT = 1
MANIFEST = "manifest.json"
BLOCKS = "blocks"
RESULT_FILES = ("paths.parquet", "loans.parquet", "steps.parquet", "summary.json")


class BlockFileWarning(RuntimeWarning):
    """A checkpointed block could not be used (truncated, corrupted, foreign) and is
    computed again."""


class BlockSpec(NamedTuple):
    """What every block of a run shares, besides the book and the model (sent to tasks)."""

    n_steps: int
    dt: float
    seed: int
    antithetic: bool
    liquidation: str
    backend: str
    n_threads: object  # int or None (a cluster worker then uses its own cores)
    record_steps: bool
    path_block: object  # int or None: paths per kernel call inside simulate()
    impact: object = None  # MarketImpact or None
    rules: object = None  # LiquidationRules or None
    crossings: bool = False


# ---------------------------------------------------------------------- one block
def evaluate_block(book, model, spec, start, stop, progress=False):
    """Generate paths ``start .. stop - 1`` of the run and evaluate ``book`` on them.

    This is the task a cluster worker runs. Returns ``{"arrays": {...}, "paths_seconds":
    float, "simulate_seconds": float}``, where ``arrays`` are the block's
    :class:`SimulationResult` arrays (per-path arrays for its paths, per-loan sums over
    them).
    """
    tick = time.perf_counter()
    paths = model.paths(
        stop - start, spec.n_steps, spec.dt, seed=spec.seed, antithetic=spec.antithetic,
        n_threads=spec.n_threads, path_offset=start,
    )
    paths_seconds = time.perf_counter() - tick
    result = simulate(
        book, paths, backend=spec.backend, liquidation=spec.liquidation, seed=spec.seed,
        n_threads=spec.n_threads, record_steps=spec.record_steps, path_block=spec.path_block,
        path_offset=start, progress=progress, impact=spec.impact, rules=spec.rules, crossings=spec.crossings,
    )
    del paths
    return {
        "arrays": result.arrays,
        "paths_seconds": paths_seconds,
        "simulate_seconds": float(result.meta["elapsed_seconds"]),
    }


# ---------------------------------------------------------------------- merging
def result_names(record_steps, coupled, loans=True):
    """Names of the arrays of a block's result (per-loan ones too when ``loans``)."""
    names = PATH_ARRAYS + (CASCADE_ARRAYS if coupled else ())
    if record_steps:
        names += STEP_ARRAYS + (("step_impact",) if coupled else ())
    return names + (LOAN_ARRAYS if loans else ())



class Merger:
    """Merges block results in block order, holding O(loans) running sums.

    ``add`` must be called with blocks 0, 1, 2, ... in order: per-path arrays are kept
    (and concatenated by :meth:`arrays`), per-loan counts are added, and ``loan_loss``
    is accumulated as ``total += block`` in that order (see the module's design note).
    """

    def __init__(self, n_loans, record_steps, coupled=False):
        self.loan = {
            "loan_loss": np.zeros(n_loans),
            "loan_margin_calls": np.zeros(n_loans, dtype=np.int64),
            "loan_liquidated": np.zeros(n_loans, dtype=np.int64),
        }
        self.names = result_names(record_steps, coupled, loans=False)
        self.parts = {name: [] for name in self.names}
        self.n_blocks = 0

    def add(self, arrays):
        """Merge the next block's arrays (a dict with every path and loan array)."""
        for name in LOAN_ARRAYS:
            self.loan[name] += arrays[name]
        for name in self.names:
            self.parts[name].append(np.array(arrays[name]))  # a copy: detach from a file
        self.n_blocks += 1

    def arrays(self):
        """The merged arrays, named as in :class:`SimulationResult`."""
        out = {name: np.concatenate(parts) for name, parts in self.parts.items()}
        out.update(self.loan)
        return out


def merge_results(results):
    """Merge :class:`SimulationResult` objects of consecutive path blocks, in order.

    The results must cover consecutive paths of one run (each from ``simulate(...,
    path_offset=start)``) on the same book. Per-path arrays are concatenated, per-loan
    counts added and ``loan_loss`` accumulated block by block in the order given (the
    rule :func:`run_batch` follows). ``meta`` is that of the first result with
    ``n_paths`` and ``elapsed_seconds`` summed.
    """
    results = list(results)
    if not results:
        raise ValueError("merge_results needs at least one result")
    first = results[0].meta
    offset = first.get("path_offset", 0)
    merger = Merger(first["n_loans"], "step_loss" in results[0].arrays, "path_cascade_rounds" in results[0].arrays)
    for k, r in enumerate(results):
        m = r.meta
        if m["n_loans"] != first["n_loans"] or m["n_steps"] != first["n_steps"]:
            raise ValueError(f"result {k} has {m['n_loans']} loans x {m['n_steps']} steps, "
                             f"result 0 has {first['n_loans']} x {first['n_steps']}")
        if m.get("path_offset", 0) != offset:
            raise ValueError(f"result {k} starts at path {m.get('path_offset', 0)}, expected {offset} "
                             "(results must cover consecutive paths, in order)")
        offset += m["n_paths"]
        merger.add(r.arrays)
    meta = dict(first)
    meta["n_paths"] = sum(r.meta["n_paths"] for r in results)
    meta["elapsed_seconds"] = sum(r.meta.get("elapsed_seconds") or 0.0 for r in results)
    return SimulationResult(merger.arrays(), meta)


# ---------------------------------------------------------------------- hashes
def _sha256_arrays(arrays):
    """SHA-256 of named arrays: names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.reshape(-1).view(np.uint8) if a.size else b"")
    return h.hexdigest()


def book_sha256(book):
    """Hash of everything in a book that can change a result (its fields and asset names)."""
    h = _sha256_arrays({name: getattr(book, name) for name in FIELDS})
    return hashlib.sha256(f"{h}|{json.dumps(list(book.asset_names or []))}".encode()).hexdigest()


def model_sha256(model):
    """Hash of a model's parameters (its :meth:`~ltvsim.paths.ModelParams.to_dict`)."""
    return hashlib.sha256(json.dumps(model.to_dict(), sort_keys=True).encode()).hexdigest()


def _version():
    from . import __version__

    return __version__


# ---------------------------------------------------------------------- checkpoints
class CheckpointStore:
    """The checkpoint files of one run in ``directory`` (see the module's design note)."""

    def __init__(self, directory, identity, manifest):
        self.directory = os.fspath(directory)
        self.blocks = os.path.join(self.directory, BLOCKS)
        self.identity = identity
        self.manifest = manifest
        self.run_key = manifest["run_key"]
        # Runs with impact, rules or crossings hold the coupled kernel's arrays too.
        self.coupled = needs_coupled_kernel(
            identity["liquidation"], identity.get("impact"), identity.get("rules"), identity.get("crossings", False)
        )

    # ---- opening -------------------------------------------------------------------
    def completed_result(self):
        """The saved result when this very run already finished here, else ``None``.

        Raises ValueError when the directory holds another run's files.
        """
        manifest_file = os.path.join(self.directory, MANIFEST)
        if os.path.exists(manifest_file):
            try:
                with open(manifest_file) as handle:
                    found = json.load(handle)
            except (OSError, ValueError) as exc:
                raise ValueError(f"{manifest_file}: unreadable ({exc}); delete {self.directory} to start afresh") from None
            self._check_same(found.get("identity"), manifest_file)
            return None
        summary_file = os.path.join(self.directory, "summary.json")
        if os.path.exists(summary_file):
            try:
                with open(summary_file) as handle:
                    meta = json.load(handle).get("meta", {})
            except (OSError, ValueError):
                meta = {}
            batch = meta.get("batch") or {}
            self._check_same(batch.get("identity"), summary_file)
            try:
                result = SimulationResult.load(self.directory)
            except Exception as exc:  # noqa: BLE001 - any unreadable file: recompute, do not guess
                warnings.warn(f"{self.directory}: the saved result does not load ({exc}); running again",
                              BlockFileWarning, stacklevel=3)
                return None
            return result
        return None

    def _check_same(self, found, where):
        if not isinstance(found, dict):
            raise ValueError(
                f"{where} was not written by a batch run of this kind; refusing to mix results. "
                f"Use another output directory, or delete {self.directory}"
            )
        differ = [key for key in sorted(set(found) | set(self.identity)) if found.get(key) != self.identity.get(key)]
        if differ:
            detail = "; ".join(f"{key}: {found.get(key)!r} there, {self.identity.get(key)!r} now" for key in differ)
            raise ValueError(
                f"{self.directory} holds a run with different inputs ({detail}); refusing to mix "
                f"results. Use another output directory, or delete {self.directory} to start afresh"
            )

    def open(self):
        """Create the directory and manifest (or keep the matching one); drop stale temporaries."""
        os.makedirs(self.blocks, exist_ok=True)
        manifest_file = os.path.join(self.directory, MANIFEST)
        if not os.path.exists(manifest_file):
            _atomic_write_bytes(manifest_file, (json.dumps(self.manifest, indent=2) + "\n").encode())
        for name in os.listdir(self.blocks):
            if name.startswith(".") and ".tmp" in name:
                try:
                    os.remove(os.path.join(self.blocks, name))
                except OSError:  # pragma: no cover - removed by someone else meanwhile
                    pass

    # ---- blocks --------------------------------------------------------------------
    def block_file(self, index):
        return os.path.join(self.blocks, f"block-{index:06d}.npz")

    def exists(self, index):
        return os.path.exists(self.block_file(index))

    def load(self, index, start, stop, n_loans, record_steps):
        """The block's saved result, or ``None`` (with a :class:`BlockFileWarning` when a
        file is there but unusable)."""
        path = self.block_file(index)
        if not os.path.exists(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                info = json.loads(str(data["_block"][()]))
                arrays = {name: data[name] for name in data.files if name != "_block"}
            problem = self._problem(info, arrays, index, start, stop, n_loans, record_steps)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            problem = f"unreadable ({type(exc).__name__}: {exc})"
        if problem:
            warnings.warn(f"{path}: {problem}; computing block {index} again", BlockFileWarning, stacklevel=3)
            return None
        return {"arrays": arrays, "paths_seconds": info["paths_seconds"], "simulate_seconds": info["simulate_seconds"]}

    def _problem(self, info, arrays, index, start, stop, n_loans, record_steps):
        if info.get("run_key") != self.run_key:
            return "belongs to another run"
        if (info.get("index"), info.get("start"), info.get("stop")) != (index, start, stop):
            return f"holds block {info.get('index')} (paths {info.get('start')}..{info.get('stop')})"
        expected = set(result_names(record_steps, self.coupled))
        if set(arrays) != expected:
            return f"has arrays {sorted(arrays)}, expected {sorted(expected)}"
        if _sha256_arrays(arrays) != info.get("sha256"):
            return "checksum mismatch (corrupted)"
        for name in LOAN_ARRAYS:
            if arrays[name].shape != (n_loans,):
                return f"{name} has shape {arrays[name].shape}, expected ({n_loans},)"
        for name in PATH_ARRAYS:
            if arrays[name].shape[0] != stop - start:
                return f"{name} has {arrays[name].shape[0]} paths, expected {stop - start}"
        return None

    def save(self, index, start, stop, block):
        """Write one block atomically: a temporary file in the same directory, then rename."""
        arrays = block["arrays"]
        info = {
            "run_key": self.run_key,
            "index": index,
            "start": start,
            "stop": stop,
            "sha256": _sha256_arrays(arrays),
            "paths_seconds": block["paths_seconds"],
            "simulate_seconds": block["simulate_seconds"],
        }
        final = self.block_file(index)
        temporary = os.path.join(self.blocks, f".block-{index:06d}.tmp{os.getpid()}.npz")
        with open(temporary, "wb") as handle:
            np.savez_compressed(handle, _block=np.array(json.dumps(info)), **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)

    def finish(self, keep_blocks):
        """After the merged result is saved: drop the checkpoint unless asked to keep it."""
        if keep_blocks:
            return
        os.remove(os.path.join(self.directory, MANIFEST))  # first: from now on summary.json rules
        shutil.rmtree(self.blocks, ignore_errors=True)


def _atomic_write_bytes(path, data):
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


# ---------------------------------------------------------------------- the run
def run_batch(
    book,
    model,
    *,
    n_paths,
    n_steps,
    dt,
    seed=0,
    block_paths=None,
    liquidation="full",
    backend="auto",
    n_threads=None,
    record_steps=False,
    antithetic=False,
    path_block=None,
    out_dir=None,
    keep_blocks=False,
    progress=False,
    client=None,
    max_in_flight=None,
    on_block=None,
    run_info=None,
    impact=None,
    rules=None,
    crossings=False,
):
    """Run ``book`` on ``n_paths`` paths of ``model``, block by block, in bounded memory.

    Parameters
    ----------
    book : LoanBook
    model : ltvsim.paths.ModelParams
        A market model (``GBMParams``, ``MertonParams``, ...); its ``paths`` method
        generates each block. Its assets must match the book's.
    n_paths, n_steps : int
        Paths of the run, and steps after step 0.
    dt : float
        Step length in years.
    seed : int
        Seed of the paths and of the top-up draws.
    block_paths : int, optional
        Paths per block (default ``BATCH_BLOCK_PATHS``, 1024): the unit generated,
        evaluated, checkpointed and sent to a worker. Memory grows with it; the result
        does not depend on it except for the rounding of ``loan_loss`` (see the module
        note).
    liquidation, backend, n_threads, record_steps, path_block
        As in :func:`ltvsim.simulate`. ``backend`` is resolved here, so cluster workers
        run the very backend named in the result. With a cluster, ``n_threads=None``
        lets each worker use its own cores.
    antithetic : bool
        Antithetic pairs of paths (see the model's ``paths``).
    out_dir : str or path, optional
        Checkpoint and result directory (needs pyarrow for the result files). A rerun
        into the same directory resumes; different inputs are refused.
    keep_blocks : bool
        Keep ``manifest.json`` and ``blocks/`` after the result is saved (default: remove
        them; the result files remain).
    progress : bool
        Show a progress bar (blocks done, paths per second, time left) on standard error.
    client : dask.distributed.Client, optional
        Run the blocks as tasks on this cluster: the book is scattered to every worker
        once, results come back and are merged (and checkpointed) here, in block order.
        ``None`` (default) runs locally.
    max_in_flight : int, optional
        With a client: blocks submitted or waiting to be merged at once (default twice
        the cluster's threads, at least 2). Bounds the client's memory.
    on_block : callable, optional
        Called as ``on_block(index, computed)`` after block ``index`` is merged;
        ``computed`` is False for a block reused from ``out_dir``.
    run_info : dict, optional
        JSON-serialisable description stored as ``meta["run"]`` (e.g. the book source).
    impact, rules, crossings
        Market impact, lenders' rules and between-step crossings, as in
        :func:`ltvsim.simulate` (part of the run's identity: a resume with other
        options is refused).

    Returns
    -------
    SimulationResult
        With ``meta["batch"]``: block size and count, the blocks computed and the blocks
        reused by this call, the manifest identity, seconds spent generating paths and
        the wall time.
    """
    if not isinstance(book, LoanBook):
        raise TypeError(f"book must be a LoanBook, got {type(book).__name__}")
    if not isinstance(model, ModelParams) or not hasattr(model, "paths"):
        raise TypeError(f"model must be a market model (ltvsim.paths GBMParams, ...), got {type(model).__name__}")
    n_paths = check_int("n_paths", n_paths, minimum=1)
    n_steps = check_int("n_steps", n_steps, minimum=1)
    dt = check_positive_float("dt", dt)
    seed = check_int("seed", seed, minimum=0)
    if seed >= 2**64:
        raise ValueError(f"seed must be < 2**64, got {seed}")
    block_paths = check_int("block_paths", _config.BATCH_BLOCK_PATHS if block_paths is None else block_paths, minimum=1)
    if liquidation not in LIQUIDATION_MODES:
        raise ValueError(f"liquidation must be one of {LIQUIDATION_MODES}, got {liquidation!r}")
    if not isinstance(record_steps, (bool, np.bool_)) or not isinstance(antithetic, (bool, np.bool_)):
        raise TypeError(f"record_steps and antithetic must be True or False, got {record_steps!r}, {antithetic!r}")
    if n_threads is not None or client is None:
        n_threads = resolve_threads(n_threads)
    if path_block is not None:
        path_block = check_int("path_block", path_block, minimum=1)
    backend_name = backends.resolve(backend)
    backends.load(backend_name)
    # Fail on mismatched assets and bad options now, not in the first block (or on a worker).
    probe = model.paths(1, 0, dt, seed=seed, n_threads=1)
    check_assets(book, probe)
    check_option_types(impact, rules, crossings)
    coupled = needs_coupled_kernel(liquidation, impact, rules, crossings)
    if coupled:
        coupled_options(liquidation, impact, rules, crossings, probe.n_assets, probe.assets or book.asset_names, dt)
        backends.load_coupled(backend_name)
    if out_dir is not None:
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise ImportError("out_dir writes Parquet result files and needs pyarrow: pip install 'ltvsim[parquet]'")
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise FileExistsError(f"{out_dir}: exists and is not a directory")

    began = time.perf_counter()
    spec = BlockSpec(n_steps, dt, seed, bool(antithetic), liquidation, backend_name, n_threads,
                     bool(record_steps), path_block, impact, rules, bool(crossings))
    identity = {
        "format": FORMAT,
        "ltvsim": _version(),
        "book_sha256": book_sha256(book),
        "n_loans": len(book),
        "model": model.model,
        "model_sha256": model_sha256(model),
        "n_paths": n_paths,
        "n_steps": n_steps,
        "dt": dt,
        "seed": seed,
        "antithetic": bool(antithetic),
        "liquidation": liquidation,
        "record_steps": bool(record_steps),
        "block_paths": block_paths,
        "impact": None if impact is None else impact_meta(impact),
        "rules": None if rules is None else rules_meta(rules),
        "crossings": bool(crossings),
        # Compiled backends agree bit for bit; the NumPy reference to 1e-9.
        "arithmetic": "numpy" if backend_name == "numpy" else "compiled",
    }
    run_key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    starts = list(range(0, n_paths, block_paths))
    bounds = [(s, min(s + block_paths, n_paths)) for s in starts]

    store = None
    if out_dir is not None:
        manifest = {
            "run_key": run_key,
            "identity": identity,
            "model": model.to_dict(),
            "n_blocks": len(bounds),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        store = CheckpointStore(out_dir, identity, manifest)
        done = store.completed_result()
        if done is not None:
            done.meta.setdefault("batch", {})["reloaded"] = True
            done.meta["batch"]["blocks_computed"] = []
            return done
        store.open()

    merger = Merger(len(book), record_steps, coupled)
    stats = {"computed": [], "resumed": [], "paths_seconds": 0.0, "simulate_seconds": 0.0}
    bar = _progress_bar(bounds, store, progress)

    def merge(index, block, computed):
        merger.add(block["arrays"])
        stats["computed" if computed else "resumed"].append(index)
        stats["paths_seconds"] += block["paths_seconds"]
        stats["simulate_seconds"] += block["simulate_seconds"]
        if bar is not None:
            bar.set_postfix_str(f"blocks {merger.n_blocks}/{len(bounds)}", refresh=False)
            if index not in bar.counted:
                bar.update(bounds[index][1] - bounds[index][0])
        if on_block is not None:
            on_block(index, computed)

    try:
        if client is None:
            _run_local(book, model, spec, bounds, store, merge, inner_progress=progress and len(bounds) == 1)
        else:
            _run_dask(client, book, model, spec, bounds, store, merge, run_key, max_in_flight)
    finally:
        if bar is not None:
            bar.close()

    meta = {
        "n_loans": len(book),
        "n_paths": n_paths,
        "n_steps": n_steps,
        "n_assets": model.n_assets,
        "dt": dt,
        "assets": list(model.assets),
        "backend": backend_name,
        "liquidation": liquidation,
        "kernel": "coupled" if coupled else "core",
        "impact": identity["impact"],
        "rules": identity["rules"],
        "crossings": bool(crossings),
        "seed": seed,
        "path_offset": 0,
        "n_threads": n_threads,
        # Kernel seconds summed over blocks (worker-seconds on a cluster), including
        # those of reused blocks, so throughput figures do not depend on resuming.
        "elapsed_seconds": stats["simulate_seconds"],
        "batch": {
            "block_paths": block_paths,
            "n_blocks": len(bounds),
            "blocks_computed": stats["computed"],
            "blocks_resumed": stats["resumed"],
            "paths_seconds": stats["paths_seconds"],
            "wall_seconds": time.perf_counter() - began,
            "scheduler": _scheduler_address(client),
            "run_key": run_key,
            "identity": identity,
            "model": model.to_dict(),
        },
    }
    if run_info is not None:
        meta["run"] = run_info
    result = SimulationResult(merger.arrays(), meta)
    if store is not None:
        for name in RESULT_FILES:  # a stale steps.parquet must not outlive a rerun
            if os.path.exists(os.path.join(store.directory, name)):
                os.remove(os.path.join(store.directory, name))
        result.save(store.directory)
        store.finish(keep_blocks)
    return result


def _run_local(book, model, spec, bounds, store, merge, inner_progress):
    for index, (start, stop) in enumerate(bounds):
        block = None
        if store is not None:
            block = store.load(index, start, stop, len(book), spec.record_steps)
        if block is not None:
            merge(index, block, computed=False)
            continue
        block = evaluate_block(book, model, spec, start, stop, progress=inner_progress)
        if store is not None:
            store.save(index, start, stop, block)
        merge(index, block, computed=True)
        del block


def _run_dask(client, book, model, spec, bounds, store, merge, run_key, max_in_flight):
    """Blocks as tasks on a dask.distributed cluster; merged here in block order."""
    from distributed import as_completed

    n_loans = len(book)
    reusable = set()
    if store is not None:
        # Verify what is on disk first, so that only missing blocks are sent out.
        for index, (start, stop) in enumerate(bounds):
            if store.exists(index) and store.load(index, start, stop, n_loans, spec.record_steps) is not None:
                reusable.add(index)
    todo = [i for i in range(len(bounds)) if i not in reusable]
    if max_in_flight is None:
        threads = sum(client.nthreads().values()) or 1
        max_in_flight = max(2, 2 * threads)
    max_in_flight = check_int("max_in_flight", max_in_flight, minimum=1)

    book_future = client.scatter(book, broadcast=True)
    pending = as_completed()
    index_of = {}
    finished = {}  # index -> block result waiting for earlier blocks
    queue = iter(todo)

    def submit_more():
        while len(index_of) + len(finished) < max_in_flight:
            index = next(queue, None)
            if index is None:
                return
            start, stop = bounds[index]
            future = client.submit(
                evaluate_block, book_future, model, spec, start, stop,
                key=f"ltvsim-block-{run_key[:16]}-{index}",
            )
            index_of[future.key] = index
            pending.add(future)

    try:
        submit_more()
        for index, (start, stop) in enumerate(bounds):
            if index in reusable:
                block = store.load(index, start, stop, n_loans, spec.record_steps)
                if block is not None:
                    merge(index, block, computed=False)
                    continue
                # Changed under our feet since the check: compute it here.
                block = evaluate_block(book, model, spec, start, stop)
                store.save(index, start, stop, block)
                merge(index, block, computed=True)
                continue
            while index not in finished:
                future = next(pending)
                done_index = index_of.pop(future.key)
                block = future.result()
                future.release()
                if store is not None:
                    s, e = bounds[done_index]
                    store.save(done_index, s, e, block)
                finished[done_index] = block
                submit_more()
            merge(index, finished.pop(index), computed=True)
            submit_more()
    finally:
        for future in list(pending.futures):
            future.cancel()
        book_future.release()


def _scheduler_address(client):
    if client is None:
        return None
    try:
        return client.scheduler.address
    except AttributeError:  # pragma: no cover
        return str(client)


def _progress_bar(bounds, store, enabled):
    """A bar over paths (rate in paths/s, time left) showing blocks done; ``None`` when
    off or for a single block (``simulate`` then shows its own)."""
    if not enabled or len(bounds) < 2:
        return None
    from tqdm.auto import tqdm

    # Blocks already on disk count as done from the start (a rerun's rate and time left
    # are those of the blocks it computes).
    counted = {i for i in range(len(bounds)) if store is not None and store.exists(i)}
    bar = tqdm(total=bounds[-1][1], initial=sum(bounds[i][1] - bounds[i][0] for i in counted), unit="path",
               unit_scale=True, desc="ltvsim", leave=False, postfix=f"blocks {len(counted)}/{len(bounds)}")
    bar.counted = counted
    return bar


__all__ = ["BlockFileWarning", "Merger", "evaluate_block", "merge_results", "run_batch"]
