"""The ``ltvsim`` command: parse options, call the library, print a summary.

Nothing here computes a risk figure: the book comes from :class:`ltvsim.LoanBook`, the
paths from :func:`ltvsim.paths.gbm`, the run from :func:`ltvsim.simulate` and every
number printed from :meth:`ltvsim.SimulationResult.summary`.
"""
import argparse
import importlib.util
import os
import sys
import time

from . import __version__, backends
from .book import DEFAULT_PRICES, LoanBook
from .paths import gbm
from .simulate import LIQUIDATION_MODES, simulate

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


def build_parser():
    """The argument parser of ``ltvsim`` (``run`` is its one subcommand)."""
    parser = argparse.ArgumentParser(
        prog="ltvsim",
        description="Monte Carlo risk of crypto-collateralised loan books.",
    )
    parser.add_argument("--version", action="version", version=f"ltvsim {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run",
        help="simulate a loan book on correlated GBM paths of BTC and ETH",
        description=(
            "Simulate a loan book on correlated-GBM price paths of BTC and ETH "
            f"(s0 {DEFAULT_MARKET['s0'][0]:,.0f} / {DEFAULT_MARKET['s0'][1]:,.0f} USD, "
            f"volatility {DEFAULT_MARKET['sigma'][0]:.0%} / {DEFAULT_MARKET['sigma'][1]:.0%} a year, "
            f"correlation {DEFAULT_MARKET['corr']}, daily steps) and print the loss "
            "distribution and event counts. With no option: a synthetic book of "
            f"{DEFAULT_RUN['loans']:,} loans, {DEFAULT_RUN['paths']:,} paths, "
            f"{DEFAULT_RUN['steps']} steps."
        ),
    )
    run.add_argument("--loans", type=int, default=DEFAULT_RUN["loans"],
                     help="loans in the synthetic book (default %(default)s; ignored with --book)")
    run.add_argument("--paths", type=int, default=DEFAULT_RUN["paths"],
                     help="Monte Carlo price paths (default %(default)s)")
    run.add_argument("--steps", type=int, default=DEFAULT_RUN["steps"],
                     help="daily steps after step 0 (default %(default)s)")
    run.add_argument("--seed", type=int, default=DEFAULT_RUN["seed"],
                     help="seed of the synthetic book, the paths and the top-up draws (default %(default)s)")
    run.add_argument("--backend", choices=("auto", *backends.NAMES), default="auto",
                     help="kernel to run (default %(default)s: the fastest available); all give the same result")
    run.add_argument("--threads", type=int, default=None,
                     help="threads of the compiled backends (default: OMP_NUM_THREADS or every usable core)")
    run.add_argument("--liquidation", choices=LIQUIDATION_MODES, default="full",
                     help="sell all collateral, or just enough to restore the target LTV (default %(default)s)")
    run.add_argument("--book", metavar="FILE", default=None,
                     help="read the loan book from a .csv or .parquet file instead of building a synthetic one")
    run.add_argument("--out", metavar="DIR", default=None,
                     help="write paths.parquet, loans.parquet and summary.json (and steps.parquet) into DIR")
    run.add_argument("--record-steps", action="store_true",
                     help="also keep collateral sold and loss per path and step (written by --out)")
    run.add_argument("--quiet", action="store_true",
                     help="print the summary only: no progress messages or progress bar")
    return parser


def main(argv=None):
    """Entry point of the ``ltvsim`` console script.

    Returns 0 on success. Bad input (an invalid option value, a missing or malformed
    book file) prints ``ltvsim: error: ...`` on standard error and raises
    ``SystemExit(2)``, as argparse does for a malformed command line.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, TypeError, OSError, ImportError) as exc:
        parser.exit(2, f"ltvsim: error: {_message(exc)}\n")
    except KeyboardInterrupt:
        parser.exit(130, "ltvsim: interrupted\n")


def _run(args):
    say = _status(args.quiet)
    began = time.perf_counter()
    market = DEFAULT_MARKET
    prices_0 = dict(zip(market["assets"], market["s0"]))

    if args.out is not None and importlib.util.find_spec("pyarrow") is None:
        # Refuse before a long run, not after it.
        raise ImportError("--out writes Parquet and needs pyarrow: pip install 'ltvsim[parquet]'")
    if args.out is not None and os.path.exists(args.out) and not os.path.isdir(args.out):
        raise FileExistsError(f"--out {args.out}: exists and is not a directory")

    tick = time.perf_counter()
    if args.book is not None:
        if not os.path.isfile(args.book):
            reason = "not a file" if os.path.exists(args.book) else "no such file"
            raise FileNotFoundError(f"--book {args.book}: {reason}")
        say(f"reading the loan book from {args.book}")
        book = LoanBook.from_file(args.book, asset_names=market["assets"])
        source = os.path.abspath(args.book)
    else:
        say(f"building a synthetic book of {args.loans:,} loans")
        book = LoanBook.synthetic(args.loans, seed=args.seed, prices=prices_0)
        source = f"LoanBook.synthetic({args.loans}, seed={args.seed})"
    book_seconds = time.perf_counter() - tick

    tick = time.perf_counter()
    say(f"generating {args.paths:,} GBM paths of {args.steps} daily steps")
    paths = gbm(
        market["s0"],
        market["mu"],
        market["sigma"],
        corr=[[1.0, market["corr"]], [market["corr"], 1.0]],
        n_paths=args.paths,
        n_steps=args.steps,
        dt=market["dt"],
        seed=args.seed,
        assets=market["assets"],
        n_threads=args.threads,
    )
    paths_seconds = time.perf_counter() - tick

    say(f"simulating {len(book):,} loans x {paths.n_paths:,} paths x {paths.n_steps} steps")
    result = simulate(
        book,
        paths,
        backend=args.backend,
        liquidation=args.liquidation,
        seed=args.seed,
        n_threads=args.threads,
        record_steps=args.record_steps,
        progress=not args.quiet,
    )
    total_seconds = time.perf_counter() - began
    result.meta["run"] = {
        "book": source,
        "market": {"model": "gbm", **{k: list(v) if isinstance(v, tuple) else v for k, v in market.items()}},
    }
    summary = result.summary(LEVEL)

    print(format_summary(summary, result, book_seconds, paths_seconds, total_seconds))
    if args.out is not None:
        written = result.save(args.out)
        print(f"results written to {os.path.abspath(args.out)}: {', '.join(written)}")
    return 0


def format_summary(summary, result, book_seconds, paths_seconds, total_seconds):
    """The text ``ltvsim run`` prints, from a :meth:`SimulationResult.summary` dict."""
    s = summary
    level = f"{round(LEVEL * 100, 4):g}"
    el = (s["expected_loss"], s["expected_loss_stderr"])
    var = (s[f"var_{level}"], s[f"var_{level}_stderr"])
    es = (s[f"es_{level}"], s[f"es_{level}_stderr"])
    sold = "  ".join(f"{asset} {units:,.4f}" for asset, units in s["mean_collateral_sold"].items())
    threads = "1 thread" if s["n_threads"] == 1 else f"{s['n_threads']} threads"
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
