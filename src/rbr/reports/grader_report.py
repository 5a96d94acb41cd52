"""Grader report: per-proposition accuracy and ROC-AUC bars and reliability curves.

The input is either the JSON that ``rbr grader eval --json`` writes, or a run
of :func:`rbr.evaluation.evaluate_grader` on a gold file. Reliability curves
need every graded probability, which the evaluation JSON does not contain, so
they come from a run. The JSON this report writes is the evaluation JSON plus
a ``reliability`` entry, so it can be rendered again without grading.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rbr.data.types import Record, Sample
from rbr.evaluation.grader_eval import evaluate_grader
from rbr.evaluation.metrics import reliability_curve
from rbr.graders.base import Grader, GradeResult
from rbr.policy.spec import Policy, Proposition
from rbr.reports import plots
from rbr.reports.html import HtmlReport, ReportError

logger = logging.getLogger(__name__)

RELIABILITY_BINS = 10
EVAL_HINT = "write one with 'rbr grader eval --gold FILE --json OUT.json'"
PROPOSITION_COLUMNS = (
    "proposition",
    "cells",
    "positives",
    "accuracy",
    "balanced accuracy",
    "ROC-AUC",
    "threshold",
    "held-out accuracy",
    "unscored",
)


class RecordingGrader(Grader):
    """Pass every call to another grader and keep each probability it returns.

    Attributes:
        cells: ``(sample content key, proposition, probability)`` per graded
            cell, NaN where unscored.
    """

    def __init__(self, inner: Grader) -> None:
        self.inner = inner
        self.cells: list[tuple[str, str, float]] = []

    @property
    def identity(self) -> str:
        return self.inner.identity

    def grade(
        self, samples: Sequence[Sample], propositions: Sequence[Proposition]
    ) -> GradeResult:
        result = self.inner.grade(samples, propositions)
        for row, sample in enumerate(samples):
            key = sample.content_key()
            for column, name in enumerate(result.propositions):
                value = float(result.probabilities[row, column])
                self.cells.append((key, name, value))
        return result

    def close(self) -> None:
        self.inner.close()


def run_grader_evaluation(
    records: Sequence[Record],
    policy: Policy,
    grader: Grader,
    *,
    source: str,
    tuning_fraction: float = 0.5,
    seed: int = 0,
    batch_size: int = 64,
    progress: Any = None,
) -> dict[str, Any]:
    """Evaluate ``grader`` on gold ``records`` and return the report dictionary.

    The dictionary is :meth:`GraderReport.to_dict` plus ``reliability``: per
    proposition, the reliability bins of every scored and labelled cell.
    """
    recorder = RecordingGrader(grader)
    report = evaluate_grader(
        records,
        policy,
        recorder,
        tuning_fraction=tuning_fraction,
        random_state=seed,
        source=source,
        batch_size=batch_size,
        progress=progress,
    )
    data = report.to_dict()
    data["reliability"] = reliability_from_cells(records, recorder.cells)
    return data


def reliability_from_cells(
    records: Sequence[Record],
    cells: Sequence[tuple[str, str, float]],
    *,
    n_bins: int = RELIABILITY_BINS,
) -> dict[str, list[dict[str, float]]]:
    """Return reliability bins per proposition from graded cells and human labels.

    Cells are matched to records by the sample's content key. Unscored and
    unlabelled cells are left out.
    """
    labels_by_key = {r.sample.content_key(): r.propositions for r in records}
    scores: dict[str, list[float]] = {}
    truth: dict[str, list[bool]] = {}
    for key, name, value in cells:
        label = labels_by_key.get(key, {}).get(name)
        if label is None or np.isnan(value):
            continue
        scores.setdefault(name, []).append(value)
        truth.setdefault(name, []).append(label >= 0.5)
    curves = {}
    for name in scores:
        bins = reliability_curve(truth[name], scores[name], n_bins=n_bins)
        curves[name] = [
            {
                "lower": b.lower,
                "upper": b.upper,
                "count": b.count,
                "mean_predicted": b.mean_predicted,
                "observed_frequency": b.observed_frequency,
            }
            for b in bins
        ]
    return curves


def load_grader_eval(path: str | Path) -> dict[str, Any]:
    """Read a grader-evaluation JSON file and check the fields the report uses.

    Raises:
        ReportError: When the file is missing, not JSON, or lacks a field,
            naming the file and how to produce a valid one.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: file not found; {EVAL_HINT}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ReportError(f"{path}: not a JSON file ({error}); {EVAL_HINT}") from None
    if not isinstance(data, dict) or not isinstance(data.get("propositions"), dict):
        raise ReportError(
            f"{path}: missing the 'propositions' object of a grader evaluation; "
            f"{EVAL_HINT}"
        )
    for name, item in data["propositions"].items():
        if (
            not isinstance(item, dict)
            or "accuracy" not in item
            or "roc_auc" not in item
        ):
            raise ReportError(
                f"{path}: propositions.{name} has no 'accuracy' and 'roc_auc'; "
                f"{EVAL_HINT}"
            )
    return data


def build_grader_report(
    data: dict[str, Any], *, source: str, title: str = "Grader report"
) -> HtmlReport:
    """Return the report page for a grader-evaluation dictionary.

    ``report.data`` is ``data`` itself, so the JSON contains every number shown.
    """
    report = HtmlReport(title)
    report.data = data
    gold = data.get("source")
    read_from = "" if gold is None or str(gold) == source else f" Read from {source}."
    report.add_paragraph(
        f"Grader {data.get('grader_identity')} on {gold or source} "
        f"(policy {data.get('policy_name')}). {data.get('n_evaluated')} of "
        f"{data.get('n_records')} rows evaluated, {data.get('n_held_out')} held out "
        f"from threshold tuning.{read_from}"
    )
    if data.get("grader_training_note"):
        report.add_paragraph(f"Note: {data['grader_training_note']}")
    propositions = data["propositions"]
    names = list(propositions)
    report.add_heading("Accuracy and ROC-AUC per proposition")
    report.add_paragraph(
        "Accuracy, balanced accuracy (both at threshold 0.5) and ROC-AUC are "
        "taken over every scored and labelled cell. Held-out accuracy uses the "
        "tuned threshold on prompts not used for tuning. Propositions whose cells are all "
        "of one class have no ROC-AUC, so their bar is missing."
    )
    figure = plots.metric_bar_chart(
        "Grader agreement with human labels",
        names,
        {
            "accuracy": [propositions[n].get("accuracy") for n in names],
            "balanced accuracy": [
                propositions[n].get("balanced_accuracy") for n in names
            ],
            "ROC-AUC": [propositions[n].get("roc_auc") for n in names],
        },
        reference=0.5,
    )
    report.add_figure(figure, "grader-metrics", caption="Per-proposition metrics.")
    report.add_table(PROPOSITION_COLUMNS, proposition_rows(data))
    _add_macro(report, data)
    _add_reliability(report, data)
    _add_class_agreement(report, data)
    return report


def proposition_rows(data: dict[str, Any]) -> list[list[Any]]:
    """Return the per-proposition table rows (also printed by the command line)."""
    rows = []
    for name, item in data["propositions"].items():
        rows.append(
            [
                name,
                item.get("n"),
                item.get("positives"),
                item.get("accuracy"),
                item.get("balanced_accuracy"),
                item.get("roc_auc"),
                item.get("threshold"),
                item.get("held_out_accuracy"),
                item.get("unscored"),
            ]
        )
    return rows


def _add_macro(report: HtmlReport, data: dict[str, Any]) -> None:
    macro = data.get("macro") or {}
    if not macro:
        return
    keys = ("accuracy", "balanced_accuracy", "roc_auc", "held_out_accuracy")
    report.add_table(
        ("propositions", *keys),
        [[macro.get("n_propositions"), *(macro.get(k) for k in keys)]],
        caption="Macro averages over propositions with both classes present",
    )


def _add_reliability(report: HtmlReport, data: dict[str, Any]) -> None:
    report.add_heading("Reliability curves")
    curves = {k: v for k, v in (data.get("reliability") or {}).items() if v}
    if not curves:
        report.add_paragraph(
            "No reliability curves: the evaluation JSON does not contain the graded "
            "probabilities. Run 'rbr report grader --gold FILE' to grade and draw them."
        )
        return
    report.add_paragraph(
        f"Mean predicted P(yes) against the observed share of yes labels in "
        f"{RELIABILITY_BINS} equal-width bins, with empty bins left out. Marker "
        "area grows with the bin's cell count. A calibrated grader lies on the diagonal."
    )
    figure = plots.reliability_grid("Reliability of the grader's probabilities", curves)
    report.add_figure(figure, "grader-reliability", caption="One plot per proposition.")


def _add_class_agreement(report: HtmlReport, data: dict[str, Any]) -> None:
    types = data.get("response_types") or {}
    if not types:
        return
    report.add_heading("Completion class agreement")
    report.add_table(
        ("response type", "rows", "compared", "agreement at 0.5", "held-out at tuned"),
        [
            [
                name,
                item.get("n"),
                item.get("n_compared"),
                item.get("agreement_at_default"),
                item.get("held_out_agreement"),
            ]
            for name, item in types.items()
        ],
        caption="Share of rows whose class from graded propositions equals the class "
        "from human labels",
    )
