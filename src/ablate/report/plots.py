"""Figures with matplotlib (Agg backend: no display needed): a bar chart of one metric per setting with error bars,
and validation curves per setting from each run's history.csv (mean line, ±1 std band over the pooled runs)."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from ablate.report.runs import read_history
from ablate.report.stats import Row, is_accuracy


def _pyplot() -> Any:
    import matplotlib

    if "inline" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg")  # files only; a notebook keeps its inline backend
    import matplotlib.pyplot as plt

    return plt


def _label(metric: str) -> str:
    return f"{metric} (%)" if is_accuracy(metric) else metric


SIGNIFICANT = ("better", "worse")


def plot_bars(rows: list[Row], metric: str, path: str | Path | None = None) -> Any:
    """Mean per setting with ±1 std error bars (none for n = 1); settings without a completed run are left out.

    Baseline bars are grey and hatched, labelled "(baseline)", with a dashed line at the baseline's mean. The value
    axis starts at 0, so bar lengths compare. Only when some row differs significantly from its baseline on this
    metric (a better/worse verdict) is an accuracy axis zoomed to the range that shows the difference, and the figure
    then says so: a broken-axis mark and "axis starts at X". A gap that is not significant is never magnified.
    """
    plt = _pyplot()
    scale = 100.0 if is_accuracy(metric) else 1.0
    shown = [r for r in rows if r.stats[metric].n > 0]
    means = [r.stats[metric].mean * scale for r in shown]
    stds = [0.0 if r.stats[metric].n < 2 else r.stats[metric].std * scale for r in shown]
    is_base = [r.verdict == "baseline" for r in shown]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(shown) + 1.5), 3.6), layout="constrained")
    bars = ax.bar(range(len(shown)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    for bar, base in zip(bars, is_base, strict=True):
        if base:
            bar.set_color("tab:gray")
            bar.set_hatch("//")
    if sum(is_base) == 1:  # one baseline for all rows: a reference line to read the others against
        ax.axhline(means[is_base.index(True)], color="tab:gray", linestyle="--", linewidth=1)
    labels = [f"{r.setting}{' (baseline)' * b}\n(n={r.stats[metric].n})" for r, b in zip(shown, is_base, strict=True)]
    ax.set_xticks(range(len(shown)), labels, rotation=30, ha="right")
    ax.set_ylabel(_label(metric))
    significant = any(r.verdict in SIGNIFICANT and r.compared == metric for r in shown)
    note = _zoom(ax, means, stds) if means and is_accuracy(metric) and significant else ""
    ax.set_title(f"{metric}: mean ± std{note}")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _zoom(ax: Any, means: list[float], stds: list[float]) -> str:
    """Zoom the (accuracy, %) axis to the bars' range, where accuracies differ, and mark the cut; returns the
    title's note saying where the axis starts ("" when the range reaches 0 anyway)."""
    lo = min(m - s for m, s in zip(means, stds, strict=True))
    hi = max(m + s for m, s in zip(means, stds, strict=True))
    pad = max(hi - lo, 1.0) * 0.3
    bottom = max(0.0, lo - pad)
    ax.set_ylim(bottom, min(100.0, hi + pad))
    if bottom <= 0.0:
        return ""
    # The usual broken-axis mark: two short diagonals across the bottom of the value axis.
    for dy in (0.0, 0.03):
        ax.plot((-0.02, 0.02), (dy - 0.015, dy + 0.015), transform=ax.transAxes, color="k", clip_on=False, lw=1)
    return f"\n(axis starts at {bottom:.4g} %, not 0)"


def curves(row: Row, metric: str) -> tuple[list[float], list[float], list[float]]:
    """epochs, mean and std (0 where one run) of ``metric`` over the completed runs of a row."""
    by_epoch: dict[float, list[float]] = defaultdict(list)
    for run in row.runs:
        if run.status != "completed":
            continue
        for rec in read_history(run):
            value = rec.get(metric, math.nan)
            if not math.isnan(value):
                by_epoch[rec["epoch"]].append(value)
    epochs = sorted(by_epoch)
    means = [statistics.fmean(by_epoch[e]) for e in epochs]
    stds = [statistics.stdev(by_epoch[e]) if len(by_epoch[e]) > 1 else 0.0 for e in epochs]
    return epochs, means, stds


def plot_curves(rows: list[Row], metric: str = "val/acc", path: str | Path | None = None) -> Any:
    """One line per setting: the mean of ``metric`` per epoch, with a ±1 std band over its runs."""
    plt = _pyplot()
    scale = 100.0 if is_accuracy(metric) else 1.0
    fig, ax = plt.subplots(figsize=(6.0, 4.0), layout="constrained")
    drawn = 0
    for row in rows:
        epochs, means, stds = curves(row, metric)
        if not epochs:
            continue
        mean = [m * scale for m in means]
        marker = "o" if len(epochs) <= 30 else None
        (line,) = ax.plot(epochs, mean, marker=marker, markersize=3, label=f"{row.setting} (n={row.n})")
        lo = [m - s * scale for m, s in zip(mean, stds, strict=True)]
        hi = [m + s * scale for m, s in zip(mean, stds, strict=True)]
        ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        drawn += 1
    if not drawn:
        plt.close(fig)
        from ablate.errors import ConfigError

        raise ConfigError(
            f"no history.csv with {metric} in the completed runs; runs write it since the history callback"
        )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(_label(metric))
    ax.set_title(f"{metric}: mean ± std over runs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def _save(fig: Any, path: str | Path | None) -> Any:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150)
        _pyplot().close(fig)
    return fig
