"""The risk report: one self-contained HTML page plus its PNG figures.

Every number on the page is computed here from one :class:`~ltvsim.SimulationResult`
through the public API (``result.summary()``, :mod:`ltvsim.risk`), and formatted the
way ``ltvsim run`` prints it (money ``1,234.56``, ``value ± stderr``, probabilities to
four decimals). The figures are written as PNG files beside ``report.html`` and also
embedded in it as ``data:`` URIs, so the page opens offline, alone or with its files;
it references no network resource and runs no script. ``risk.json`` holds the same
numbers for machines.
"""
import base64
import datetime
import html
import json
import math
import os
import time

import numpy as np

from ..risk import measures as m
from ..risk.segments import segment_table
from ..risk.waterfall import DEFAULT_STRUCTURE, result_waterfall
from . import figures

REPORT_FILE = "report.html"
JSON_FILE = "risk.json"
#: Figure file names, in page order.
FIGURES = {
    "loss_distribution": "loss_distribution.png",
    "ltv_fan": "ltv_fan.png",
    "collateral_sold": "collateral_sold.png",
    "liquidation_by_ltv": "liquidation_by_ltv.png",
}


# ------------------------------------------------------------------ formatting (as the CLI)
def money(x):
    return f"{x:,.2f}"


def pm(value, stderr):
    """``value ± stderr`` as ``ltvsim run`` prints it."""
    return f"{value:,.2f} ± {stderr:,.2f}"


def prob(p):
    return f"{p:.4f}"


def units(x):
    return f"{x:,.4f}"


def interval(measure, form=money):
    if math.isnan(measure.low):
        return "n/a"
    return f"[{form(measure.low)}, {form(measure.high)}]"


# ------------------------------------------------------------------ numbers
def compute(result, book=None, structure=DEFAULT_STRUCTURE, level=0.99, confidence=m.CONFIDENCE,
            prices=None, total_debt=None):
    """Every number of the report, as a dict (``Measure`` values stay tuples).

    Parameters
    ----------
    result : SimulationResult
    book : LoanBook, optional
        The book the result was run on: needed for segment views and for tranche sizes
        given as fractions of the initial debt (or pass ``total_debt``).
    structure : CapitalStructure
        Reserve fund and tranches (default :data:`ltvsim.risk.DEFAULT_STRUCTURE`).
    level : float
        Level of VaR and ES.
    confidence : float
        Confidence of the intervals.
    prices : sequence or dict, optional
        Reference prices for collateral notional (default: the run's step-0 prices).
    total_debt : float, optional
        The book's initial debt (default: from ``book``).
    """
    if prices is None:
        prices = m.reference_prices(result)
    if total_debt is None and book is not None:
        total_debt = float(np.sum(book.debt))
    levels = sorted({0.95, float(level)})
    out = {
        "level": float(level),
        "confidence": float(confidence),
        "summary": result.summary(level),
        "loss": m.risk_measures(result.path_loss, levels, confidence),
        "prob_loss": m.probability(result.path_loss > 0, confidence),
        "liquidations_at_risk": m.liquidations_at_risk(result, level, prices, confidence),
        "margin_calls": m.risk_measures(result.path_margin_calls, level, confidence),
        "prices": None if prices is None else [float(p) for p in m._prices(result, prices)],
        "total_debt": total_debt,
        "structure": structure.to_dict(),
    }
    if structure.basis == "amount" or total_debt is not None:
        wf = result_waterfall(result, structure, total_debt)
        out["waterfall_per_step"] = wf.per_step
        out["tranches"] = m.tranche_table(wf, level, confidence)
    else:
        out["tranches"] = None
    out["segments"] = {}
    if book is not None:
        for by in ("asset", "initial_ltv"):
            try:
                out["segments"][by] = segment_table(result, book, by, prices=prices)
            except ValueError:
                pass
    return out


def _figures(result, numbers):
    level = m.level_name(numbers["level"])
    made = {}
    loss = numbers["loss"]
    made["loss_distribution"] = figures.loss_distribution(
        result.path_loss, loss[f"var_{level}"].value, loss[f"es_{level}"].value, level)
    arrays = result.arrays
    if "step_open_debt" in arrays and "step_collateral_value" in arrays:
        value = arrays["step_collateral_value"]
        with np.errstate(divide="ignore", invalid="ignore"):
            ltv = np.where(value > 0, arrays["step_open_debt"] / value, np.nan)
        made["ltv_fan"] = figures.ltv_fan(ltv)
    if "step_collateral_sold" in arrays:
        made["collateral_sold"] = figures.collateral_sold(arrays["step_collateral_sold"], result.assets)
    seg = numbers["segments"].get("initial_ltv")
    if seg is not None:
        c = seg.columns
        made["liquidation_by_ltv"] = figures.liquidation_by_segment(
            seg.labels, c["prob_liquidation"], c["prob_margin_call"], c["n_loans"],
            "Per-loan probability of a call / liquidation by initial LTV")
    return made


# ------------------------------------------------------------------ page
CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 64em; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #bbb; }
tr.total td { font-weight: bold; border-top: 2px solid #bbb; }
img { max-width: 100%; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; }
"""


def _table(header, rows, classes=None):
    parts = ["<table><thead><tr>", "".join(f"<th>{html.escape(str(h))}</th>" for h in header), "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        parts.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def _headline(s, level):
    lv = m.level_name(level)
    rows = [
        ("expected loss (USD)", pm(s["expected_loss"], s["expected_loss_stderr"])),
        (f"VaR {lv}% (USD)", pm(s[f"var_{lv}"], s[f"var_{lv}_stderr"])),
        (f"ES {lv}% (USD)", pm(s[f"es_{lv}"], s[f"es_{lv}_stderr"])),
        ("P(loss > 0)", prob(s["prob_loss"])),
        ("unrealised at horizon (USD, mean)", money(s["mean_unrealised"])),
        ("margin calls per path", money(s["mean_margin_calls"])),
        ("liquidations per path", f"{money(s['mean_liquidations'])} ({money(s['mean_full_liquidations'])} in full)"),
        ("top-ups per path", money(s["mean_topups"])),
        ("fees per path (USD)", money(s["mean_fees"])),
    ]
    rows += [(f"{asset} sold per path (units)", units(v)) for asset, v in s["mean_collateral_sold"].items()]
    rows += [
        ("loans called on any path", f"{s['loans_called_on_any_path']:,}"),
        ("loans liquidated on any path", f"{s['loans_liquidated_on_any_path']:,}"),
    ]
    return _table(("figure", "value ± standard error"), rows)


def _measure_rows(label, measures, form=money):
    return [(f"{label} {name.replace('_', ' ').replace('var', 'VaR').replace('es', 'ES')}"
             + ("%" if name != "mean" else ""), form(v.value), form(v.stderr), interval(v, form))
            for name, v in measures.items()]


def render(result, numbers, images, book_note=None):
    """The HTML page as a string. ``images`` maps figure name to PNG bytes."""
    from .. import __version__

    s = numbers["summary"]
    level = numbers["level"]
    lv = m.level_name(level)
    conf = f"{numbers['confidence']:.0%}"
    meta = result.meta
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>ltvsim risk report: {s['n_loans']:,} loans x {s['n_paths']:,} paths</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Loan book risk report</h1>",
        f"<p>{s['n_loans']:,} loans x {s['n_paths']:,} paths x {s['n_steps']} steps "
        f"(dt = {s['dt']:.6g} years), assets {html.escape(', '.join(s['assets']))}; "
        f"backend {html.escape(str(s['backend']))}, liquidation {html.escape(str(s['liquidation']))}, "
        f"seed {s['seed']}. ltvsim {__version__}, report written "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}.</p>",
        "<h2>Headline figures</h2>",
        "<p class='note'>From <code>SimulationResult.summary()</code>: means over paths, "
        "± the Monte Carlo standard error.</p>",
        _headline(s, level),
    ]

    # Loss distribution.
    loss = numbers["loss"]
    rows = _measure_rows("loss", loss)
    pl = numbers["prob_loss"]
    rows.append(("P(loss > 0)", prob(pl.value), prob(pl.stderr), interval(pl, prob)))
    out += [
        "<h2>Realised loss per path</h2>",
        _table(("measure", "value (USD)", "standard error", f"{conf} interval"), rows),
        _img(images, "loss_distribution", "loss distribution"),
        "<h3>Margin calls per path</h3>",
        _table(("measure", "calls", "standard error", f"{conf} interval"),
               _measure_rows("margin calls", numbers["margin_calls"])),
    ]

    # Waterfall.
    out.append("<h2>Who absorbs the loss: reserve fund, tranches, senior lender</h2>")
    st = numbers["structure"]
    basis = "of the book's initial debt" if st["basis"] == "fraction" else "(USD)"
    sizes = ", ".join(f"{html.escape(n)} {_size(v, st['basis'])}" for n, v in st["tranches"])
    out.append(
        f"<p class='note'>Structure: reserve fund {_size(st['reserve'], st['basis'])} {basis}, topped up by "
        f"{st['fee_share']:.0%} of liquidation fees as earned; tranches (junior first): {sizes or 'none'}; "
        "then the senior lender. Fees earned at a step are credited to the fund before that step's "
        "losses are absorbed; tranches are not replenished.</p>")
    if numbers["tranches"] is None:
        out.append("<p>Not available: tranche sizes are fractions of the book's debt and the book was not "
                   "given (write it with <code>ltvsim run --out DIR --report</code>, or give sizes as amounts).</p>")
    else:
        if not numbers.get("waterfall_per_step", True):
            out.append("<p class='note'>The result has no per-step losses (run with record_steps): "
                       "each path's total loss is absorbed at once and the fund gets no fee income.</p>")
        rows = []
        for r in numbers["tranches"]:
            a = r["attach_probability"]
            rows.append((
                r["name"], "unbounded" if math.isinf(r["capacity"]) else money(r["capacity"]),
                f"{prob(a.value)} ± {prob(a.stderr)}", interval(a, prob),
                "-" if math.isnan(r["mean_first_step"]) else f"{r['mean_first_step']:.1f}",
                pm(r["mean"].value, r["mean"].stderr),
                pm(r[f"var_{lv}"].value, r[f"var_{lv}"].stderr),
                pm(r[f"es_{lv}"].value, r[f"es_{lv}"].stderr),
            ))
        out.append(_table(("part", "size (USD)", "P(attach)", f"{conf} interval", "mean first step",
                           "expected loss", f"VaR {lv}%", f"ES {lv}%"), rows))

    # Collateral.
    lar = numbers["liquidations_at_risk"]
    rows = []
    for asset in result.assets:
        r = lar[asset]
        rows.append((f"{asset} (units)", units(r["units"].value), units(r["units"].stderr),
                     interval(r["units"], units)))
        if "notional" in r:
            rows.append((f"{asset} (USD at step-0 price)", money(r["notional"].value),
                         money(r["notional"].stderr), interval(r["notional"])))
    if "notional" in lar["total"]:
        t = lar["total"]["notional"]
        rows.append(("total (USD at step-0 prices)", money(t.value), money(t.stderr), interval(t)))
    t = lar["total"]["proceeds"]
    rows.append(("total (USD at sale prices)", money(t.value), money(t.stderr), interval(t)))
    out += [
        "<h2>Collateral the book sells</h2>",
        f"<p class='note'>Liquidations at risk: collateral sold over the horizon at the {lv}% quantile over "
        "paths (the total is the quantile of each path's total, not a sum of quantiles).</p>",
        _table(("collateral sold", f"{lv}% quantile", "standard error", f"{conf} interval"), rows),
        _img(images, "collateral_sold", "collateral sold per step"),
    ]
    if "collateral_sold" not in images:
        out.append("<p class='note'>Collateral sold per step needs a run with record_steps.</p>")

    out += ["<h2>Book LTV over time</h2>", _img(images, "ltv_fan", "aggregate LTV fan chart")]
    if "ltv_fan" not in images:
        out.append("<p class='note'>Needs per-step open debt and collateral value "
                   "(a run with record_steps).</p>")

    # Segments.
    out.append("<h2>Segments</h2>")
    if not numbers["segments"]:
        out.append(f"<p>{html.escape(book_note or 'No loan book given: segment views need the book.')}</p>")
    for by, seg in numbers["segments"].items():
        rows, classes = [], []
        for row in seg.rows():
            rows.append((row["segment"], f"{row['n_loans']:,}", money(row["debt"]), money(row["expected_loss"]),
                         f"{row['loss_rate'] * 1e4:.3f}", prob(row["prob_margin_call"]),
                         prob(row["prob_liquidation"]), money(row["expected_liquidated"])))
            classes.append("total" if row["segment"] == "total" else "")
        title = {"asset": "By collateral asset", "initial_ltv": "By initial LTV"}.get(by, f"By {by}")
        out += [f"<h3>{html.escape(title)}</h3>",
                _table((by, "loans", "initial debt (USD)", "expected loss (USD)", "loss rate (bp)",
                        "P(call) per loan", "P(liquidation) per loan", "loans liquidated per path"),
                       rows, classes)]
    out.append(_img(images, "liquidation_by_ltv", "liquidation probability by initial LTV"))

    out += [
        "<h2>Method</h2>",
        "<ul class='note'>",
        "<li>Mean: sample mean over paths, standard error s/&radic;n, normal interval.</li>",
        "<li>VaR: the empirical quantile x<sub>(&lceil;qn&rceil;)</sub>; interval between the order "
        "statistics at ranks nq &#8723; z&radic;(nq(1-q)) (distribution-free); the standard error is "
        "that 95% interval's width / (2 x 1.96).</li>",
        "<li>ES: VaR + mean((x - VaR)<sup>+</sup>)/(1-q); standard error sd((x - VaR)<sup>+</sup>)/((1-q)&radic;n); "
        "normal interval.</li>",
        "<li>Probabilities: share of paths; binomial standard error &radic;(p(1-p)/n); Wilson score interval.</li>",
        "<li>Per loan: P(liquidation) = paths with at least one liquidation of the loan / paths; expected "
        "loss = the loan's loss summed over paths / paths. Segment rows add up to the total row.</li>",
        f"<li>Only about n(1-q) = {s['n_paths'] * (1 - level):,.0f} paths inform the {lv}% tail: "
        "use more paths for tail figures you rely on.</li>",
        "</ul>",
        "</body></html>",
    ]
    return "\n".join(out)


def _size(value, basis):
    return f"{value:.2%}" if basis == "fraction" else money(value)


def _img(images, name, alt):
    if name not in images:
        return ""
    data = base64.b64encode(images[name]).decode("ascii")
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def write_report(result, directory, book=None, structure=DEFAULT_STRUCTURE, level=0.99,
                 confidence=m.CONFIDENCE, prices=None, total_debt=None, book_note=None):
    """Write ``report.html``, its PNG figures and ``risk.json`` into ``directory``.

    Parameters are those of :func:`compute`. Figures that need data the result does not
    hold (per-step arrays, the book) are left out, and the page says why.

    Returns
    -------
    dict
        File name to path of everything written, plus ``"seconds"``.
    """
    began = time.perf_counter()
    numbers = compute(result, book, structure, level, confidence, prices, total_debt)
    images = _figures(result, numbers)
    os.makedirs(directory, exist_ok=True)
    written = {}
    for name, png in images.items():
        path = os.path.join(directory, FIGURES[name])
        with open(path, "wb") as handle:
            handle.write(png)
        written[FIGURES[name]] = path
    page = render(result, numbers, images, book_note)
    written[REPORT_FILE] = os.path.join(directory, REPORT_FILE)
    with open(written[REPORT_FILE], "w", encoding="utf-8") as handle:
        handle.write(page)
    written[JSON_FILE] = os.path.join(directory, JSON_FILE)
    with open(written[JSON_FILE], "w") as handle:
        json.dump(to_json(numbers), handle, indent=2, allow_nan=True)
    written["seconds"] = time.perf_counter() - began
    return written


def to_json(numbers):
    """The report's numbers as plain JSON values (a ``Measure`` becomes a dict)."""
    def plain(v):
        if isinstance(v, m.Measure):
            return {"value": v.value, "stderr": v.stderr, "low": v.low, "high": v.high}
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, np.generic):
            return v.item()
        if hasattr(v, "rows"):  # SegmentTable
            return plain(v.rows())
        return v

    return plain(numbers)
