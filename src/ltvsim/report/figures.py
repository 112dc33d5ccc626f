"""The report's figures, drawn with matplotlib's Agg backend (no display, no network).

Each function takes the numbers it draws (computed by :mod:`ltvsim.risk` from the
result) and returns PNG bytes; :mod:`ltvsim.report.html` writes them to files and embeds
them in the page.
"""
import io

import numpy as np

#: Quantiles over paths drawn as bands of the LTV fan chart (outermost first).
FAN_QUANTILES = ((0.01, 0.99), (0.05, 0.95), (0.25, 0.75))
#: The high quantile of collateral sold per step.
SOLD_QUANTILE = 0.99
DPI = 100


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _integer_steps(ax):
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _png(fig):
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def loss_distribution(path_loss, var, es, level_label):
    """Histogram of the realised loss per path with VaR and ES marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    x = np.asarray(path_loss, dtype=np.float64)
    positive = x[x > 0]
    n = x.size
    if positive.size:
        ax.hist(positive, bins=min(60, max(10, int(np.sqrt(positive.size)) * 2)), color="#4c72b0", alpha=0.85)
        ax.set_xlabel("realised loss per path (USD), paths with a loss")
    else:
        ax.text(0.5, 0.5, "no path has a realised loss", transform=ax.transAxes, ha="center", va="center")
        ax.set_xlabel("realised loss per path (USD)")
    ax.set_ylabel("paths")
    for value, label, style in ((var, f"VaR {level_label}%", "--"), (es, f"ES {level_label}%", ":")):
        ax.axvline(value, color="#c44e52", linestyle=style, linewidth=1.5, label=f"{label} = {value:,.0f}")
    ax.set_title(f"Loss distribution over {n:,} paths; {n - positive.size:,} with no loss")
    ax.legend(loc="upper right", frameon=False)
    ax.grid(alpha=0.3)
    return _png(fig)


def ltv_fan(ltv):
    """Fan chart of the book's aggregate LTV per step: quantile bands over paths and the median.

    ``ltv`` is [n_paths, n_steps + 1]; NaN where no loan is open.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    steps = np.arange(ltv.shape[1])
    qs = sorted({q for pair in FAN_QUANTILES for q in pair} | {0.5})
    with np.errstate(all="ignore"):
        levels = dict(zip(qs, np.nanquantile(ltv, qs, axis=0)))
    shades = ("#c6dbef", "#9ecae1", "#6baed6")
    for (lo, hi), shade in zip(FAN_QUANTILES, shades):
        ax.fill_between(steps, levels[lo] * 100, levels[hi] * 100, color=shade,
                        label=f"{lo:.0%}-{hi:.0%} of paths", linewidth=0)
    ax.plot(steps, levels[0.5] * 100, color="#08519c", linewidth=1.8, label="median")
    _integer_steps(ax)
    ax.set_xlabel("step")
    ax.set_ylabel("aggregate LTV of open loans (%)")
    ax.set_title("Book LTV over time: open debt / collateral value, quantiles over paths")
    ax.legend(loc="best", frameon=True, framealpha=0.8, fontsize="small")
    ax.grid(alpha=0.3)
    return _png(fig)


def collateral_sold(step_sold, assets, q=SOLD_QUANTILE):
    """Collateral sold per step, one panel per asset: mean over paths and the q-quantile.

    ``step_sold`` is [n_paths, n_steps + 1, n_assets] in units.
    """
    plt = _pyplot()
    n_assets = len(assets)
    fig, axes = plt.subplots(1, n_assets, figsize=(4.2 * n_assets, 3.6), squeeze=False)
    steps = np.arange(step_sold.shape[1])
    for k, asset in enumerate(assets):
        ax = axes[0, k]
        sold = step_sold[:, :, k]
        ax.bar(steps, sold.mean(axis=0), color="#4c72b0", label="mean")
        ax.plot(steps, np.quantile(sold, q, axis=0), color="#c44e52", marker=".", linewidth=1.2,
                label=f"{q:.0%} quantile")
        ax.set_title(f"{asset} sold per step")
        _integer_steps(ax)
        ax.set_xlabel("step")
        ax.set_ylabel(f"{asset} (units)")
        ax.legend(frameon=False, fontsize="small")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def liquidation_by_segment(labels, prob_liquidation, prob_margin_call, n_loans, title):
    """Bars of the mean per-loan probability of liquidation (and of a margin call) per segment."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    x = np.arange(len(labels))
    ax.bar(x - 0.2, np.asarray(prob_margin_call) * 100, width=0.4, color="#dd8452", label="margin call")
    ax.bar(x + 0.2, np.asarray(prob_liquidation) * 100, width=0.4, color="#c44e52", label="liquidation")
    ax.set_xticks(x, [f"{label}\n{n:,} loans" for label, n in zip(labels, n_loans)], fontsize="small")
    ax.set_ylabel("probability over the horizon (%)")
    ax.set_title(title)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)
