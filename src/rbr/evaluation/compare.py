"""Side-by-side comparison of two result files, and interval bar charts.

:func:`compare_results` reads two JSON results of the same kind (written by
``rbr evaluate`` or ``rbr xstest``) and pairs every estimate they share. The
interval of a difference is an approximation: both results store only their
own percentile intervals, so the difference's interval combines the two
half-widths in quadrature, as if the results were independent samples. Two
models answering the same prompts are usually positively correlated, and
then this interval is wider than a paired bootstrap would give.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbr.errors import RbrError
from rbr.evaluation.bootstrap import Estimate

logger = logging.getLogger(__name__)

COMPARISON_FORMAT = "rbr-comparison"
PROVENANCE_KEYS = ("grader_identity", "policy_name", "policy_hash", "thresholds")
"""Result keys that should match for a like-for-like comparison. The data
files differ by design (two models' completions)."""


NO_CHART_TEXT = "No chart: matplotlib is not installed (pip install matplotlib)."
"""Paragraph a report shows in place of a chart when matplotlib is missing."""


class ComparisonError(RbrError):
    """Two result files cannot be compared."""


@dataclass(frozen=True)
class ComparisonRow:
    """One estimate in both results and their difference (second minus first).

    Attributes:
        section: Part of the result, such as ``overall`` or ``by_category``.
        group: Group within the section (a category, a model, ``all``).
        metric: Metric key.
        first: The estimate in the first result, None when it is absent.
        second: The estimate in the second result, None when it is absent.
    """

    section: str
    group: str
    metric: str
    first: Estimate | None
    second: Estimate | None

    @property
    def difference(self) -> float | None:
        if self.first is None or self.second is None:
            return None
        if self.first.value is None or self.second.value is None:
            return None
        return self.second.value - self.first.value

    def difference_interval(self) -> tuple[float | None, float | None]:
        """Return the approximate interval of :attr:`difference` (see module notes)."""
        delta = self.difference
        first, second = self.first, self.second
        if delta is None or first is None or second is None:
            return None, None
        if None in (first.ci_low, first.ci_high, second.ci_low, second.ci_high):
            return None, None
        assert first.value is not None and second.value is not None
        down = math.hypot(first.ci_high - first.value, second.value - second.ci_low)
        up = math.hypot(first.value - first.ci_low, second.ci_high - second.value)
        return delta - down, delta + up

    def to_dict(self) -> dict[str, Any]:
        low, high = self.difference_interval()
        return {
            "section": self.section,
            "group": self.group,
            "metric": self.metric,
            "first": None if self.first is None else self.first.to_dict(),
            "second": None if self.second is None else self.second.to_dict(),
            "difference": self.difference,
            "difference_ci_low": low,
            "difference_ci_high": high,
            "interval_excludes_zero": None
            if low is None or high is None
            else bool(low > 0 or high < 0),
        }


@dataclass
class Comparison:
    """Every shared estimate of two results, and how their provenance differs."""

    first_path: str
    second_path: str
    result_format: str
    rows: list[ComparisonRow]
    provenance_differences: dict[str, tuple[Any, Any]]
    metric_titles: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": COMPARISON_FORMAT,
            "version": 1,
            "compared_format": self.result_format,
            "first": self.first_path,
            "second": self.second_path,
            "difference": "second minus first",
            "difference_interval": "approximate: the two half-widths combined in "
            "quadrature, as for independent results",
            "provenance_differences": {
                key: {"first": a, "second": b}
                for key, (a, b) in self.provenance_differences.items()
            },
            "rows": [row.to_dict() for row in self.rows],
        }


def load_result(path: str | Path) -> dict[str, Any]:
    """Read a result JSON written by ``rbr evaluate`` or ``rbr xstest``.

    Raises:
        ComparisonError: When the file is missing, not JSON or not a result.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ComparisonError(f"{path}: result file not found") from None
    except json.JSONDecodeError as error:
        raise ComparisonError(
            f"{path}: invalid JSON at line {error.lineno}: {error.msg}"
        ) from None
    if not isinstance(data, dict) or data.get("format") not in _FLATTENERS:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ComparisonError(
            f"{path}: key 'format' is {found!r}, expected one of "
            f"{sorted(_FLATTENERS)}; pass the JSON written by 'rbr evaluate' or "
            "'rbr xstest'"
        )
    return data


def compare_results(first_path: str | Path, second_path: str | Path) -> Comparison:
    """Pair every estimate of two result files of the same kind.

    Raises:
        ComparisonError: When a file is invalid or the two kinds differ.
    """
    first = load_result(first_path)
    second = load_result(second_path)
    if first["format"] != second["format"]:
        raise ComparisonError(
            f"{first_path} is a {first['format']!r} result but {second_path} is a "
            f"{second['format']!r} result; compare results of the same command"
        )
    flatten = _FLATTENERS[first["format"]]
    first_rows = flatten(first)
    second_rows = flatten(second)
    single = _single_models(first, second)
    if single is not None:
        # One model per file, as when comparing two models: pair them.
        label = f"{single[0]} vs {single[1]}"
        first_rows = _rename_group(first_rows, single[0], label)
        second_rows = _rename_group(second_rows, single[1], label)
    keys = list(first_rows) + [k for k in second_rows if k not in first_rows]
    rows = [
        ComparisonRow(*key, first_rows.get(key), second_rows.get(key)) for key in keys
    ]
    differences = {
        key: (first.get(key), second.get(key))
        for key in PROVENANCE_KEYS
        if first.get(key) != second.get(key)
    }
    titles = {**second.get("metric_titles", {}), **first.get("metric_titles", {})}
    return Comparison(
        str(first_path), str(second_path), first["format"], rows, differences, titles
    )


Key = tuple[str, str, str]


def _flatten_safety(data: Mapping[str, Any]) -> dict[Key, Estimate]:
    rows: dict[Key, Estimate] = {}
    for metric, value in data.get("overall", {}).items():
        rows[("overall", "all", metric)] = Estimate.from_dict(value)
    for section in ("by_response_type", "by_category"):
        for group, metrics in data.get(section, {}).items():
            for metric, value in metrics.items():
                rows[(section, group, metric)] = Estimate.from_dict(value)
    return rows


def _flatten_xstest(data: Mapping[str, Any]) -> dict[Key, Estimate]:
    rows: dict[Key, Estimate] = {}
    for model, result in data.get("models", {}).items():
        for metric, value in result.get("overall", {}).items():
            rows[("overall", model, metric)] = Estimate.from_dict(value)
        for metric, value in result.get("agreement", {}).get("estimates", {}).items():
            rows[("agreement", model, metric)] = Estimate.from_dict(value)
        for xstest_type, metrics in result.get("by_type", {}).items():
            for metric, value in metrics.items():
                rows[(f"by_type:{model}", xstest_type, metric)] = Estimate.from_dict(
                    value
                )
    return rows


def _single_models(
    first: Mapping[str, Any], second: Mapping[str, Any]
) -> tuple[str, str] | None:
    """Return the model names of two XSTest results with one model each."""
    first_models = list(first.get("models", {}))
    second_models = list(second.get("models", {}))
    if len(first_models) != 1 or len(second_models) != 1:
        return None
    if first_models == second_models:
        return None
    return first_models[0], second_models[0]


def _rename_group(
    rows: dict[Key, Estimate], model: str, label: str
) -> dict[Key, Estimate]:
    renamed = {}
    for (section, group, metric), value in rows.items():
        if section == f"by_type:{model}":
            section = f"by_type:{label}"
        if group == model:
            group = label
        renamed[(section, group, metric)] = value
    return renamed


_FLATTENERS = {
    "rbr-safety-evaluation": _flatten_safety,
    "rbr-xstest-evaluation": _flatten_xstest,
}


def interval_bar_chart(
    labels: Sequence[str],
    series: Mapping[str, Sequence[Estimate]],
    *,
    title: str,
    ylabel: str = "rate",
) -> Any | None:
    """Draw grouped bars of estimates with their intervals as error bars.

    Args:
        labels: One label per bar group (a metric or a type).
        series: Series name to one estimate per label; each series is one
            bar colour. An undefined estimate draws no bar.
        title: Figure title.
        ylabel: Y axis label.

    Returns:
        A matplotlib figure, or None when matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed, so the report has no chart")
        return None
    width = 0.8 / max(len(series), 1)
    figure = Figure(figsize=(max(6.0, 0.9 * len(labels) * max(len(series), 1)), 4.0))
    axes = figure.add_subplot()
    for k, (name, estimates) in enumerate(series.items()):
        xs, heights, below, above = [], [], [], []
        for i, estimate in enumerate(estimates):
            if estimate.value is None:
                continue
            xs.append(i + (k - (len(series) - 1) / 2) * width)
            heights.append(estimate.value)
            low = estimate.ci_low if estimate.ci_low is not None else estimate.value
            high = estimate.ci_high if estimate.ci_high is not None else estimate.value
            below.append(max(estimate.value - low, 0.0))
            above.append(max(high - estimate.value, 0.0))
        axes.bar(xs, heights, width, yerr=[below, above], capsize=3, label=name)
    axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    return figure
