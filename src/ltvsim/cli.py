"""The ``ltvsim`` command: parse options, call the library, print a summary.

Nothing here computes a risk figure: the book comes from :class:`ltvsim.LoanBook`, the
paths from the market model (:class:`ltvsim.paths.GBMParams` by default), the run from
:func:`ltvsim.batch.run_batch` (block by block, resumable with ``--out``, on a dask
cluster with ``--scheduler``) and every number printed from
:meth:`ltvsim.SimulationResult.summary`. Settings come from the built-in defaults, then
a config file (:mod:`ltvsim.config`), then the command-line options.
"""
import argparse
import importlib.util
import os
import sys
import time

from . import __version__, backends
from .book import DEFAULT_PRICES
from .simulate import LIQUIDATION_MODES

# The market of the built-in run. Illustrative round figures, not a calibration: BTC and
# ETH near their late-2026 levels, annualised volatilities of the order both have shown
# over the past years (ETH the more volatile), no drift, and a strong positive
# correlation. Fit a model to history (docs/market-models.md) for real work.
DEFAULT_MARKET = {
    "assets": ("BTC", "ETH"),
    "s0": (DEFAULT_PRICES["BTC"], DEFAULT_PRICES["ETH"]),  # USD per coin
    "mu": (0.0, 0.0),  # annual arithmetic drift
    "sigma": (0.60, 0.75),  # annual volatility
    "corr": 0.8,  # correlation of BTC and ETH log returns
    "dt": 1.0 / 365.0,  # daily steps
}

# Sizes of the built-in run: a synthetic book of a million loans, 1,000 paths, 30 days.
DEFAULT_RUN = {"loans": 1_000_000, "paths": 1_000, "steps": 30, "seed": 0}

#: Level of the VaR and ES shown.
LEVEL = 0.99

#: Run settings when neither a config file nor an option sets them (``[run]`` keys).
RUN_DEFAULTS = {
    "dt": DEFAULT_MARKET["dt"],
    "block_paths": None,  # ltvsim._config.BATCH_BLOCK_PATHS
    "liquidation": "full",
    "backend": "auto",
    "threads": None,
    "record_steps": False,
    "antithetic": False,
    "out": None,
    "keep_blocks": False,
    "scheduler": None,
    "crossings": False,
}

#: Command-line option -> (config table, key) it overrides.
OVERRIDES = {
    "paths": ("run", "paths"),
    "steps": ("run", "steps"),
    "seed": ("run", "seed"),
    "backend": ("run", "backend"),
    "threads": ("run", "threads"),
    "liquidation": ("run", "liquidation"),
    "out": ("run", "out"),
    "block_paths": ("run", "block_paths"),
    "keep_blocks": ("run", "keep_blocks"),
    "scheduler": ("run", "scheduler"),
    "record_steps": ("run", "record_steps"),
    "crossings": ("run", "crossings"),
    "impact_depth": ("impact", "depth"),
    "impact_law": ("impact", "law"),
    "max_sell": ("rules", "max_sell"),
    "min_liquidation": ("rules", "min_liquidation"),
    "close_factor": ("rules", "close_factor"),
    "loans": ("book", "loans"),
    "quiet": ("report", "quiet"),
}


def build_parser():
    """The argument parser of ``ltvsim`` (subcommands ``run`` and ``report``)."""
    parser = argparse.ArgumentParser(
        prog="ltvsim",
        description="Monte Carlo risk of crypto-collateralised loan books.",
    )
    parser.add_argument("--version", action="version", version=f"ltvsim {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run",
        help="simulate a loan book on correlated GBM paths of BTC and ETH (or as a config file says)",
        description=(
            "Simulate a loan book on correlated-GBM price paths of BTC and ETH "
            f"(s0 {DEFAULT_MARKET['s0'][0]:,.0f} / {DEFAULT_MARKET['s0'][1]:,.0f} USD, "
            f"volatility {DEFAULT_MARKET['sigma'][0]:.0%} / {DEFAULT_MARKET['sigma'][1]:.0%} a year, "
            f"correlation {DEFAULT_MARKET['corr']}, daily steps) and print the loss "
            "distribution and event counts. With no option: a synthetic book of "
            f"{DEFAULT_RUN['loans']:,} loans, {DEFAULT_RUN['paths']:,} paths, "
            f"{DEFAULT_RUN['steps']} steps. A CONFIG.toml file (see examples/batch.toml) sets "
            "the book, the market model and the run; options given here override it. Paths "
            "are generated and evaluated in blocks; with --out an interrupted run resumes "
            "where it stopped when the same command is run again."
        ),
    )
    run.add_argument("config", nargs="?", metavar="CONFIG.toml", default=None,
                     help="run configuration file (TOML); command-line options override it")
    # Defaults are None so that only options actually given override a config file;
    # the built-in values are in DEFAULT_RUN and RUN_DEFAULTS.
    run.add_argument("--loans", type=int, default=None,
                     help=f"loans in the synthetic book (default {DEFAULT_RUN['loans']}; ignored with --book)")
    run.add_argument("--paths", type=int, default=None,
                     help=f"Monte Carlo price paths (default {DEFAULT_RUN['paths']})")
    run.add_argument("--steps", type=int, default=None,
                     help=f"daily steps after step 0 (default {DEFAULT_RUN['steps']})")
    run.add_argument("--seed", type=int, default=None,
                     help=f"seed of the synthetic book, the paths and the top-up draws (default {DEFAULT_RUN['seed']})")
    run.add_argument("--backend", choices=("auto", *backends.NAMES), default=None,
                     help="kernel to run (default auto: the fastest available); all give the same result")
    run.add_argument("--threads", type=int, default=None,
                     help="threads of the compiled backends (default: OMP_NUM_THREADS or every usable core)")
    run.add_argument("--liquidation", choices=LIQUIDATION_MODES, default=None,
                     help="sell all collateral, just enough to restore the target LTV, or (close_factor) "
                          "repay at most --close-factor of the debt with the fee as bonus, as Aave (default full)")
    run.add_argument("--book", metavar="FILE", default=None,
                     help="read the loan book from a .csv or .parquet file instead of building a synthetic one")
    run.add_argument("--out", metavar="DIR", default=None,
                     help="write paths.parquet, loans.parquet and summary.json (and steps.parquet) into DIR, "
                          "checkpointing each block there: the same command resumes an interrupted run")
    run.add_argument("--block-paths", type=int, default=None, metavar="N",
                     help="paths per block, the unit checkpointed and sent to a worker (default 1024)")
    run.add_argument("--keep-blocks", action="store_true", default=None,
                     help="keep the checkpoint (manifest.json, blocks/) in --out after the result is written")
    run.add_argument("--scheduler", metavar="ADDRESS", default=None,
                     help="run the blocks on the dask.distributed cluster at ADDRESS (e.g. tcp://10.0.0.5:8786); "
                          "needs pip install 'ltvsim[dask]'")
    run.add_argument("--record-steps", action="store_true", default=None,
                     help="also keep, per path and step, collateral sold, loss, fees, and the open book's "
                          "debt and collateral value (written by --out)")
    cascade = run.add_argument_group("cascades and lenders' rules (docs/cascades.md; any of them runs the coupled kernel)")
    cascade.add_argument("--impact-depth", type=_per_asset, default=None, metavar="USD|ASSET=USD,...",
                         help="market impact on: the notional that moves each price by 2%%, e.g. BTC=2e9,ETH=5e8")
    cascade.add_argument("--impact-law", choices=("sqrt", "linear"), default=None,
                         help="impact of a round's sold notional (default sqrt)")
    cascade.add_argument("--crossings", action="store_true", default=None,
                         help="also liquidate loans whose price crossed their liquidation level between two steps")
    cascade.add_argument("--max-sell", type=_per_asset, default=None, metavar="UNITS|ASSET=UNITS,...",
                         help="collateral units liquidations may sell per path and step; the rest waits")
    cascade.add_argument("--min-liquidation", type=float, default=None, metavar="USD",
                         help="dust threshold: a partial sale repaying or leaving less closes the loan in full")
    cascade.add_argument("--close-factor", type=float, default=None, metavar="SHARE",
                         help="with --liquidation close_factor: share of the debt one liquidation repays (0.5)")
    run.add_argument("--quiet", action="store_true", default=None,
                     help="print the summary only: no progress messages or progress bar")
    run.add_argument("--report", action="store_true", default=False,
                     help="also write the risk report (report.html and PNG figures; turns --record-steps on) "
                          "into --report-dir; with --out also write the book as book.parquet there")
    run.add_argument("--report-dir", metavar="DIR", default=None,
                     help="directory of the report (default: OUT/report with --out, else ./ltvsim-report)")
    _add_structure_options(run)

    report = commands.add_parser(
        "report",
        help="write the risk report of a result saved by 'ltvsim run --out'",
        description=(
            "Read the result saved in RESULT_DIR by 'ltvsim run --out RESULT_DIR' (and book.parquet beside it, "
            "written by --report, for the segment views) and write a self-contained report.html, its PNG "
            "figures and risk.json. Needs matplotlib: pip install 'ltvsim[report]'."
        ),
    )
    report.add_argument("result_dir", metavar="RESULT_DIR", help="directory written by ltvsim run --out")
    report.add_argument("--report-dir", metavar="DIR", default=None,
                        help="where to write the report (default RESULT_DIR/report)")
    report.add_argument("--level", type=float, default=LEVEL, help=f"level of VaR and ES (default {LEVEL})")
    _add_structure_options(report)
    return parser


def _add_structure_options(parser):
    """Options of the loss waterfall (default :data:`ltvsim.risk.DEFAULT_STRUCTURE`)."""
    from .risk.waterfall import DEFAULT_STRUCTURE as d

    tranches = ", ".join(f"{name}={size:g}" for name, size in d.tranches)
    group = parser.add_argument_group(
        "loss waterfall of the report",
        f"Default: reserve fund {d.reserve:g} and tranches {tranches} as fractions of the book's initial debt, "
        f"the fund topped up by {d.fee_share:g} of liquidation fees; the senior lender takes the rest.")
    group.add_argument("--reserve", type=float, default=None, metavar="SIZE",
                       help=f"initial reserve fund (default {d.reserve:g})")
    group.add_argument("--fee-share", type=float, default=None, metavar="SHARE",
                       help=f"share of liquidation fees paid into the fund (default {d.fee_share:g})")
    group.add_argument("--tranche", action="append", default=None, metavar="NAME=SIZE",
                       help="a tranche, junior first; repeat for each (replaces the default tranches)")
    group.add_argument("--amounts", action="store_true", default=False,
                       help="sizes are USD amounts instead of fractions of the book's initial debt")


def structure_from_args(args):
    """The :class:`ltvsim.risk.CapitalStructure` the options describe."""
    from .risk.waterfall import DEFAULT_STRUCTURE, CapitalStructure

    d = DEFAULT_STRUCTURE
    tranches = d.tranches
    if args.tranche is not None:
        tranches = []
        for text in args.tranche:
            name, sep, size = text.rpartition("=")
            try:
                value = float(size)
            except ValueError:
                value = None
            if not sep or not name.strip() or value is None:
                raise ValueError(f"--tranche {text!r}: expected NAME=SIZE, e.g. 'first loss=0.005'")
            tranches.append((name.strip(), value))
    return CapitalStructure(
        reserve=d.reserve if args.reserve is None else args.reserve,
        fee_share=d.fee_share if args.fee_share is None else args.fee_share,
        tranches=tranches, basis="amount" if args.amounts else "fraction",
    )


def main(argv=None):
    """Entry point of the ``ltvsim`` console script.

    Returns 0 on success. Bad input (an invalid option value, a missing or malformed
    book file) prints ``ltvsim: error: ...`` on standard error and raises
    ``SystemExit(2)``, as argparse does for a malformed command line.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "report":
            return _report(args)
        return _run(args)
    except (ValueError, TypeError, OSError, ImportError) as exc:
        parser.exit(2, f"ltvsim: error: {_message(exc)}\n")
    except KeyboardInterrupt:
        parser.exit(130, "ltvsim: interrupted\n")


def default_model():
    """The built-in market (:data:`DEFAULT_MARKET`) as a :class:`ltvsim.paths.GBMParams`."""
    from .paths import GBMParams

    m = DEFAULT_MARKET
    return GBMParams(assets=m["assets"], s0=m["s0"], mu=m["mu"], sigma=m["sigma"],
                     corr=[[1.0, m["corr"]], [m["corr"], 1.0]])


def settings(args):
    """Built-in defaults, then the config file (if any), then the options given.

    Returns ``(run, book, market, report)`` dicts (``[run]``, ``[book]``, ``[market]``,
    ``[report]`` keys of :mod:`ltvsim.config`).
    """
    from .config import load_config

    config = load_config(args.config) if args.config is not None else {}
    run = {**RUN_DEFAULTS, "paths": DEFAULT_RUN["paths"], "steps": DEFAULT_RUN["steps"],
           "seed": DEFAULT_RUN["seed"], **config.get("run", {})}
    book = {"loans": DEFAULT_RUN["loans"], **config.get("book", {})}
    report = {"level": LEVEL, "quiet": False, **config.get("report", {})}
    impact, rules = dict(config.get("impact", {})), dict(config.get("rules", {}))
    tables = {"run": run, "book": book, "report": report, "impact": impact, "rules": rules}
    for option, (table, key) in OVERRIDES.items():
        value = getattr(args, option)
        if value is not None:
            tables[table][key] = value
    if args.book is not None:  # a book file on the command line replaces the config's book
        book.clear()
        book["file"] = args.book
    if impact and "depth" not in impact:
        raise ValueError("--impact-law needs --impact-depth (or [impact] depth in the config)")
    run["impact"], run["rules"] = impact, rules
    return run, book, config.get("market", {}), report


def _per_asset(text):
    """``2e9`` or ``BTC=2e9,ETH=5e8`` -> a number or a dict by asset."""
    import argparse

    try:
        if "=" not in text:
            return float(text)
        pairs = [item.split("=", 1) for item in text.split(",") if item]
        return {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number or ASSET=NUMBER,ASSET=NUMBER") from None


def _run(args):
    from .batch import run_batch
    from .config import build_book, build_impact, build_model, build_rules

    run, book_table, market, report = settings(args)
    say = _status(report["quiet"])
    began = time.perf_counter()
    out = run["out"]
    structure = None
    if args.report:
        if importlib.util.find_spec("matplotlib") is None:
            raise ImportError("--report draws with matplotlib: pip install 'ltvsim[report]'")
        structure = structure_from_args(args)  # bad options fail before the run
        run["record_steps"] = True  # the fan chart and collateral sold per step need them

    if out is not None and importlib.util.find_spec("pyarrow") is None:
        # Refuse before a long run, not after it.
        raise ImportError("--out writes Parquet and needs pyarrow: pip install 'ltvsim[parquet]'")
    if out is not None and os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"--out {out}: exists and is not a directory")
    config_name = f"{args.config} " if args.config is not None else ""
    model = build_model(market, default_model(), source=f"{config_name}[market]")

    tick = time.perf_counter()
    if "file" in book_table:
        say(f"reading the loan book from {book_table['file']}")
    else:
        say(f"building a synthetic book of {book_table['loans']:,} loans")
    source = "--book" if args.book is not None else f"{config_name}[book] file ="
    book, book_source = build_book(book_table, model, run["seed"], source=source)
    book_seconds = time.perf_counter() - tick

    client = None
    if run["scheduler"] is not None:
        try:
            from distributed import Client
        except ImportError as exc:
            raise ImportError("--scheduler needs dask.distributed: pip install 'ltvsim[dask]'") from exc
        say(f"connecting to the dask scheduler at {run['scheduler']}")
        client = Client(run["scheduler"], timeout="30s")
    say(f"simulating {len(book):,} loans x {run['paths']:,} {model.model} paths x {run['steps']} steps"
        + (f", checkpointed in {out}" if out is not None else ""))
    run_info = {"book": book_source, "market": model.to_dict()}
    if args.config is not None:
        run_info["config"] = os.path.abspath(args.config)
    try:
        result = run_batch(
            book, model, n_paths=run["paths"], n_steps=run["steps"], dt=run["dt"], seed=run["seed"],
            block_paths=run["block_paths"], liquidation=run["liquidation"], backend=run["backend"],
            n_threads=run["threads"], record_steps=run["record_steps"], antithetic=run["antithetic"],
            out_dir=out, keep_blocks=run["keep_blocks"], progress=not report["quiet"], client=client,
            run_info=run_info, impact=build_impact(run["impact"]), rules=build_rules(run["rules"]),
            crossings=run["crossings"],
        )
    finally:
        if client is not None:
            client.close()
    total_seconds = time.perf_counter() - began
    batch = result.meta.get("batch", {})
    if batch.get("reloaded"):
        say(f"{out} holds the finished result of this very run: shown without recomputing")
    elif batch.get("blocks_resumed"):
        say(f"resumed: {len(batch['blocks_resumed'])} of {batch['n_blocks']} blocks were already done in {out}")
    summary = result.summary(report["level"])
    paths_seconds = batch.get("paths_seconds", float("nan"))
    print(format_summary(summary, result, book_seconds, paths_seconds, total_seconds, level=report["level"]))
    if out is not None:
        written = [name for name in ("paths.parquet", "loans.parquet", "steps.parquet", "summary.json")
                   if os.path.exists(os.path.join(out, name))]
        print(f"results written to {os.path.abspath(out)}: {', '.join(written)}")
    if args.report:
        from .report import save_book, write_report
        from .risk import reference_prices

        tick = time.perf_counter()
        directory = args.report_dir or (os.path.join(out, "report") if out is not None else "ltvsim-report")
        say(f"writing the risk report into {directory}")
        if out is not None:
            save_book(book, out, prices=reference_prices(result))
        files = write_report(result, directory, book=book, structure=structure, level=report["level"])
        print(f"report written to {os.path.abspath(files['report.html'])} "
              f"({time.perf_counter() - tick:.2f} s)")
    return 0


def _report(args):
    """``ltvsim report RESULT_DIR``: the report of a saved result."""
    from .report import report_directory

    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError("the report draws with matplotlib: pip install 'ltvsim[report]'")
    if importlib.util.find_spec("pyarrow") is None:
        raise ImportError("reading a saved result needs pyarrow: pip install 'ltvsim[parquet]'")
    if not os.path.exists(os.path.join(args.result_dir, "summary.json")):
        raise FileNotFoundError(f"{args.result_dir}: no summary.json; expected a directory written by ltvsim run --out")
    level = float(args.level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"--level must be in (0, 1), got {level}")
    tick = time.perf_counter()
    files = report_directory(args.result_dir, args.report_dir, structure=structure_from_args(args), level=level)
    print(f"report written to {os.path.abspath(files['report.html'])} ({time.perf_counter() - tick:.2f} s)")
    return 0


def format_summary(summary, result, book_seconds, paths_seconds, total_seconds, level=LEVEL):
    """The text ``ltvsim run`` prints, from a :meth:`SimulationResult.summary` dict at ``level``."""
    s = summary
    level = f"{round(level * 100, 4):g}"
    el = (s["expected_loss"], s["expected_loss_stderr"])
    var = (s[f"var_{level}"], s[f"var_{level}_stderr"])
    es = (s[f"es_{level}"], s[f"es_{level}_stderr"])
    sold = "  ".join(f"{asset} {units:,.4f}" for asset, units in s["mean_collateral_sold"].items())
    threads = {1: "1 thread", None: "threads of each worker"}.get(s["n_threads"], f"{s['n_threads']} threads")
    lines = [
        f"ltvsim {__version__}: {s['n_loans']:,} loans x {s['n_paths']:,} paths x {s['n_steps']} steps "
        f"(dt = {s['dt']:.6g} years), assets {', '.join(s['assets'])}",
        f"backend {s['backend']} ({threads}), liquidation {s['liquidation']}, seed {s['seed']}",
        "",
        "Realised loss per path (USD, ± Monte Carlo standard error)",
        f"  expected loss          {_pm(el)}",
        f"  VaR {level}%                {_pm(var)}",
        f"  ES {level}%                 {_pm(es)}",
        f"  P(loss > 0)            {s['prob_loss']:.4f}",
        f"  unrealised at horizon  {s['mean_unrealised']:,.2f}  (mean; open loans under water, not in the loss)",
        "",
        "Events per path (mean)",
        f"  margin calls           {s['mean_margin_calls']:,.2f}",
        f"  liquidations           {s['mean_liquidations']:,.2f}  ({s['mean_full_liquidations']:,.2f} in full)",
        f"  top-ups                {s['mean_topups']:,.2f}",
        f"  collateral sold        {sold}",
        f"  fees (USD)             {s['mean_fees']:,.2f}",
        f"  loans called on any path      {s['loans_called_on_any_path']:,}",
        f"  loans liquidated on any path  {s['loans_liquidated_on_any_path']:,}",
    ]
    if "step_collateral_sold" in result.arrays:
        # Mean over paths of each step's sales: where in the horizon the selling falls.
        per_step = result.step_collateral_sold.mean(axis=0)
        busiest = "  ".join(
            f"{asset} {per_step[:, k].max():,.4f} (step {int(per_step[:, k].argmax())})"
            for k, asset in enumerate(s["assets"])
        )
        lines.append(f"  busiest step (mean sold)  {busiest}")
    if "mean_cascade_rounds" in s:
        drawdown = "  ".join(f"{a} {v:.2%}" for a, v in s["mean_impact_drawdown"].items())
        lines.append(f"  cascade rounds         mean {s['mean_cascade_rounds']:.2f}, most {s['max_cascade_rounds']}")
        lines.append(f"  impact drawdown (mean) {drawdown}")
        if any(v > 0 for v in s["mean_unsold_collateral"].values()):
            unsold = "  ".join(f"{a} {v:,.4f}" for a, v in s["mean_unsold_collateral"].items())
            lines.append(f"  unsold at horizon      {unsold}")
    lines += [
        "",
        f"Time: book {book_seconds:.2f} s, paths {paths_seconds:.2f} s, "
        f"simulation {s['elapsed_seconds']:.2f} s (total {total_seconds:.2f} s)",
        f"Throughput: {s['loan_path_steps_per_second'] / 1e6:,.1f} million loan-path-steps per second",
    ]
    return "\n".join(lines)


def _pm(pair):
    value, stderr = pair
    return f"{value:,.2f} ± {stderr:,.2f}"


def _status(quiet):
    """A function printing progress messages on standard error (a no-op when quiet)."""
    if quiet:
        return lambda message: None
    return lambda message: print(f"ltvsim: {message} ...", file=sys.stderr, flush=True)


def _message(exc):
    """One line for the user: the library's message, or the file and reason of an OSError."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
