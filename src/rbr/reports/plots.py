"""Matplotlib figures for the reports, drawn with the Agg backend.

Figures are built as ``matplotlib.figure.Figure`` objects with an Agg canvas,
never through ``pyplot``, so no window opens, no global figure list grows and
the user's own pyplot backend is left alone. matplotlib is imported on first
use, so the base install of rbr works without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rbr.reports.html import ReportError

INSTALL_HINT = 'pip install -e ".[report]"'
VARIANT_COLORS = {"base": "#8c8c8c", "total": "#1f77b4", "rbr": "#d62728"}
METRIC_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")


def new_figure(width: float, height: float) -> Any:
    """Return an empty matplotlib Figure of ``width`` x ``height`` inches on Agg.

    No layout engine is set, because constrained layout doubled the time to
    render a grid of 15 plots. Callers space their axes with
    ``subplots_adjust``, and the PNG is cropped to its content when saved.

    Raises:
        ReportError: When matplotlib is not installed, naming the extra to install.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ReportError(
            f"reports draw their plots with matplotlib, which is not installed; "
            f"run: {INSTALL_HINT}"
        ) from None
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def histogram_edges(values: Sequence[np.ndarray], bins: int = 30) -> np.ndarray:
    """Return ``bins + 1`` shared bin edges covering every array in ``values``.

    When all values are equal the edges span one unit around that value.
    """
    present = [v for v in values if v.size]
    if not present:
        return np.linspace(-0.5, 0.5, bins + 1)
    low = float(min(v.min() for v in present))
    high = float(max(v.max() for v in present))
    if math.isclose(low, high, abs_tol=1e-12):
        low, high = low - 0.5, high + 0.5
    # Pad the range so values at its ends, such as the best completion's 0,
    # do not sit on the plot's border.
    padding = 0.04 * (high - low)
    return np.linspace(low - padding, high + padding, bins + 1)


def centered_histogram_grid(
    title: str,
    variants: Mapping[str, str],
    histograms: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> Any:
    """Draw one histogram per (label, variant): labels as rows, variants as columns.

    Args:
        title: Figure title.
        variants: Variant key to column title, such as ``{"total": "base + RBR"}``.
        histograms: ``histograms[label][variant]`` contains ``counts`` per bin,
            bin ``edges`` and ``n``. Labels are drawn in the given order.
    """
    labels = list(histograms)
    n_rows = max(len(labels), 1)
    figure = new_figure(3.3 * len(variants), 1.45 * n_rows + 0.8)
    axes = np.atleast_2d(figure.subplots(n_rows, len(variants), squeeze=False))
    for row, label in enumerate(labels):
        for column, (key, name) in enumerate(variants.items()):
            ax = axes[row, column]
            item = histograms[label][key]
            color = VARIANT_COLORS.get(key, "#1f77b4")
            ax.stairs(item["counts"], item["edges"], fill=True, color=color)
            ax.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
            ax.tick_params(labelsize=7)
            if row == 0:
                ax.set_title(name, fontsize=9)
            if column == 0:
                ax.set_ylabel(f"{label}\n(n={item['n']})", fontsize=8)
            if row == n_rows - 1:
                ax.set_xlabel("reward minus best completion's", fontsize=8)
    figure.subplots_adjust(
        hspace=0.35, wspace=0.22, top=1 - 0.55 / figure.get_figheight()
    )
    figure.suptitle(title, fontsize=11)
    return figure


def weights_bar_chart(
    title: str, feature_names: Sequence[str], coef: Sequence[float]
) -> Any:
    """Draw the fitted weights as horizontal bars, one per feature."""
    figure = new_figure(7.0, 0.24 * len(feature_names) + 1.2)
    ax = figure.subplots()
    positions = np.arange(len(feature_names))
    colors = ["#2ca02c" if value >= 0 else "#d62728" for value in coef]
    ax.barh(positions, coef, color=colors)
    ax.set_yticks(positions, labels=list(feature_names), fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("weight", fontsize=9)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    return figure


def metric_bar_chart(
    title: str,
    names: Sequence[str],
    metrics: Mapping[str, Sequence[float | None]],
    *,
    reference: float | None = None,
) -> Any:
    """Draw grouped horizontal bars: one group per name, one bar per metric.

    Missing values (None) leave a gap. ``reference`` draws a dashed vertical line.
    """
    n_metrics = max(len(metrics), 1)
    figure = new_figure(7.5, 0.32 * len(names) * max(n_metrics / 2, 1) + 1.4)
    ax = figure.subplots()
    positions = np.arange(len(names))
    height = 0.8 / n_metrics
    for index, (metric, values) in enumerate(metrics.items()):
        numbers = [np.nan if v is None else float(v) for v in values]
        offset = (index - (n_metrics - 1) / 2) * height
        color = METRIC_COLORS[index % len(METRIC_COLORS)]
        ax.barh(positions + offset, numbers, height=height, label=metric, color=color)
    ax.set_yticks(positions, labels=list(names), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.0)
    if reference is not None:
        ax.axvline(reference, color="black", linewidth=0.8, linestyle="--")
    ax.margins(y=0.01)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=n_metrics)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=11, pad=24)
    return figure


def reliability_grid(
    title: str, curves: Mapping[str, Sequence[Mapping[str, float]]], columns: int = 5
) -> Any:
    """Draw one reliability curve per proposition in a grid of small plots.

    Args:
        title: Figure title.
        curves: Proposition name to its bins, each a mapping with
            ``mean_predicted``, ``observed_frequency`` and ``count``.
        columns: Plots per row.
    """
    names = list(curves)
    columns = max(1, min(columns, len(names)))
    n_rows = max(1, math.ceil(len(names) / columns))
    figure = new_figure(2.3 * columns, 2.2 * n_rows + 0.6)
    axes = np.atleast_2d(figure.subplots(n_rows, columns, squeeze=False))
    for index, ax in enumerate(axes.flat):
        if index >= len(names):
            ax.set_axis_off()
            continue
        bins = curves[names[index]]
        predicted = [b["mean_predicted"] for b in bins]
        observed = [b["observed_frequency"] for b in bins]
        sizes = [
            12 + 60 * math.sqrt(b["count"] / max(1, _max_count(bins))) for b in bins
        ]
        ax.plot([0, 1], [0, 1], color="#8c8c8c", linewidth=0.8, linestyle="--")
        ax.plot(predicted, observed, color="#1f77b4", linewidth=1.2)
        ax.scatter(predicted, observed, s=sizes, color="#1f77b4", zorder=3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
        ax.set_title(names[index], fontsize=7)
        if index % columns == 0:
            ax.set_ylabel("observed share of yes", fontsize=7)
        if index + columns >= len(names):
            ax.set_xlabel("mean predicted P(yes)", fontsize=7)
    figure.subplots_adjust(
        hspace=0.35, wspace=0.3, top=1 - 0.5 / figure.get_figheight()
    )
    figure.suptitle(title, fontsize=11)
    return figure


def _max_count(bins: Sequence[Mapping[str, float]]) -> float:
    return max((b["count"] for b in bins), default=1)
