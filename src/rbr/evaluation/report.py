"""Report types of grader evaluation and the functions that fill them.

The functions here take arrays of grader probabilities and human labels that
:mod:`rbr.evaluation.grader_eval` has already collected, so they do no
grading themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rbr.evaluation import metrics
from rbr.evaluation.metrics import DEFAULT_THRESHOLD, ConfusionCounts
from rbr.evaluation.thresholds import PropositionThresholds
from rbr.features.space import FeatureSpace
from rbr.policy.spec import CLASS_ORDER

NO_CLASS = "none"
"""Class name used in confusion tables for rows that match no completion class."""


@dataclass(frozen=True)
class PropositionReport:
    """Agreement of one proposition's grader probabilities with human labels.

    Cells are (record, proposition) pairs of records whose response type
    needs the proposition. ``n`` counts the cells that are both scored and
    labelled, and only those enter the metrics. A cell can be both unscored and
    unlabelled. Metrics without ``held_out`` use every counted cell at
    threshold 0.5. Metrics with ``held_out`` use the cells of prompts not used
    to tune the threshold (in cross-validation: every cell, out of fold).
    Undefined metrics are None, such as ROC-AUC with one class present.

    Attributes:
        threshold: Tuned threshold (in cross-validation, the mean over folds).
        n_tuning: Cells the threshold was tuned on (summed over folds).
    """

    name: str
    n: int
    positives: int
    unscored: int
    unlabelled: int
    unscored_reasons: dict[str, int]
    accuracy: float | None
    balanced_accuracy: float | None
    f1: float | None
    roc_auc: float | None
    confusion: ConfusionCounts | None
    threshold: float
    n_tuning: int
    held_out_n: int
    held_out_accuracy: float | None
    held_out_balanced_accuracy: float | None
    held_out_accuracy_at_default: float | None
    held_out_confusion: ConfusionCounts | None

    @property
    def has_both_classes(self) -> bool:
        """Whether the counted cells include at least one positive and one negative."""
        return 0 < self.positives < self.n

    def to_dict(self) -> dict[str, Any]:
        data = {key: getattr(self, key) for key in self.__dataclass_fields__}
        for key in ("confusion", "held_out_confusion"):
            value = data[key]
            data[key] = None if value is None else value.to_dict()
        return data


@dataclass(frozen=True)
class ResponseTypeReport:
    """Agreement of completion classes from graded and from human propositions.

    A row is compared when every proposition its response type needs is both
    scored and labelled. Confusion tables map the human class to the graded
    class to a count, with ``"none"`` for rows that match no class.

    Attributes:
        n_human_no_class: Compared rows whose human labels match no class.
        agreement_at_default: Share of compared rows with equal classes, at
            threshold 0.5.
        held_out_agreement: The same on held-out rows at the tuned thresholds.
        class_confusion: Held-out rows at the tuned thresholds.
        class_confusion_at_default: Every compared row at threshold 0.5.
    """

    name: str
    n: int
    n_compared: int
    n_unscored: int
    n_unlabelled: int
    n_human_no_class: int
    agreement_at_default: float | None
    held_out_n: int
    held_out_agreement_at_default: float | None
    held_out_agreement: float | None
    class_confusion: dict[str, dict[str, int]]
    class_confusion_at_default: dict[str, dict[str, int]]

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.__dataclass_fields__}


@dataclass(frozen=True)
class GraderReport:
    """Result of :func:`evaluate_grader` or :func:`cross_validate_grader`.

    Attributes:
        mode: ``"holdout"`` or ``"cross_validation"``.
        settings: Split settings, such as ``tuning_fraction`` and ``random_state``.
        n_records: Rows in the input.
        n_evaluated: Rows with a safety response type (the rows graded).
        n_held_out: Evaluated rows whose prompts were not used for tuning.
        macro: Means over the propositions with at least one positive and one
            negative counted cell (``n_propositions`` of them), each mean
            taken over the propositions where that metric is defined.
        thresholds: The tuned thresholds (holdout mode only).
        fold_thresholds: Thresholds of each fold (cross-validation only).
    """

    mode: str
    grader_identity: str
    policy_name: str
    policy_hash: str
    source: str
    settings: dict[str, Any]
    n_records: int
    n_evaluated: int
    n_held_out: int
    propositions: dict[str, PropositionReport]
    response_types: dict[str, ResponseTypeReport]
    macro: dict[str, Any]
    unscored_reasons: dict[str, int]
    thresholds: PropositionThresholds | None = None
    fold_thresholds: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "grader_identity": self.grader_identity,
            "policy_name": self.policy_name,
            "policy_hash": self.policy_hash,
            "source": self.source,
            "settings": dict(self.settings),
            "n_records": self.n_records,
            "n_evaluated": self.n_evaluated,
            "n_held_out": self.n_held_out,
            "macro": dict(self.macro),
            "unscored_reasons": dict(self.unscored_reasons),
            "propositions": {k: v.to_dict() for k, v in self.propositions.items()},
            "response_types": {k: v.to_dict() for k, v in self.response_types.items()},
            "thresholds": None
            if self.thresholds is None
            else self.thresholds.to_dict(),
            "fold_thresholds": [dict(item) for item in self.fold_thresholds],
        }


def build_proposition_report(
    name: str,
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    cell_thresholds: np.ndarray,
    held_out: np.ndarray,
    unscored_reasons: Mapping[str, int],
    threshold: float,
    n_tuning: int,
) -> PropositionReport:
    """Compute one proposition's metrics from its cells.

    Args:
        name: Proposition name.
        scores: Grader probability per cell, NaN where unscored.
        labels: Human label (0 or 1) per cell, NaN where unlabelled.
        cell_thresholds: Tuned threshold that applies to each cell.
        held_out: Whether each cell's prompt was kept out of tuning.
        unscored_reasons: Count of unscored cells per reason.
        threshold: Tuned threshold to report.
        n_tuning: Cells the threshold was tuned on.
    """
    counted = ~np.isnan(scores) & ~np.isnan(labels)
    truth = labels[counted] == 1.0
    default = _binary_metrics(truth, scores[counted] >= DEFAULT_THRESHOLD)
    auc = metrics.roc_auc(truth, scores[counted]) if truth.size else None
    held_cells = counted & held_out
    held_truth = labels[held_cells] == 1.0
    held_scores = scores[held_cells]
    tuned = _binary_metrics(held_truth, held_scores >= cell_thresholds[held_cells])
    held_default = _binary_metrics(held_truth, held_scores >= DEFAULT_THRESHOLD)
    return PropositionReport(
        name=name,
        n=int(counted.sum()),
        positives=int(truth.sum()),
        unscored=int(np.isnan(scores).sum()),
        unlabelled=int(np.isnan(labels).sum()),
        unscored_reasons=dict(sorted(unscored_reasons.items())),
        accuracy=default["accuracy"],
        balanced_accuracy=default["balanced_accuracy"],
        f1=default["f1"],
        roc_auc=auc,
        confusion=default["confusion"],
        threshold=threshold,
        n_tuning=n_tuning,
        held_out_n=int(held_cells.sum()),
        held_out_accuracy=tuned["accuracy"],
        held_out_balanced_accuracy=tuned["balanced_accuracy"],
        held_out_accuracy_at_default=held_default["accuracy"],
        held_out_confusion=tuned["confusion"],
    )


def _binary_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    if truth.size == 0:
        return dict.fromkeys(("accuracy", "balanced_accuracy", "f1", "confusion"))
    return {
        "accuracy": metrics.accuracy(truth, predicted),
        "balanced_accuracy": metrics.balanced_accuracy(truth, predicted),
        "f1": metrics.f1_score(truth, predicted),
        "confusion": metrics.confusion_counts(truth, predicted),
    }


def build_response_type_report(
    space: FeatureSpace,
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    held_out: np.ndarray,
    threshold_group: np.ndarray,
    group_thresholds: Sequence[Mapping[str, float]],
) -> ResponseTypeReport:
    """Compare completion classes from graded and from human propositions.

    Args:
        space: The response type's feature layout.
        scores: ``(n, len(space.propositions))`` probabilities, NaN unscored.
        labels: Human labels of the same shape, NaN unlabelled.
        held_out: Whether each row's prompt was kept out of tuning.
        threshold_group: Index into ``group_thresholds`` for each row.
        group_thresholds: Tuned thresholds per group (one per fold, or one).
    """
    scored = ~np.isnan(scores).any(axis=1)
    labelled = ~np.isnan(labels).any(axis=1)
    compared = np.flatnonzero(scored & labelled)
    human = _class_names(space.assign_classes(labels[compared]))
    at_default = _class_names(space.assign_classes(scores[compared]))
    tuned = list(at_default)
    for group, thresholds in enumerate(group_thresholds):
        members = np.flatnonzero(threshold_group[compared] == group)
        if members.size:
            classes = space.assign_classes(scores[compared[members]], thresholds)
            for k, value in zip(members, _class_names(classes), strict=True):
                tuned[k] = value
    held_rows = held_out[compared]
    return ResponseTypeReport(
        name=space.response_type,
        n=int(scores.shape[0]),
        n_compared=int(compared.size),
        n_unscored=int((~scored).sum()),
        n_unlabelled=int((~labelled).sum()),
        n_human_no_class=human.count(NO_CLASS),
        agreement_at_default=_agreement(
            human, at_default, np.ones(compared.size, bool)
        ),
        held_out_n=int(held_rows.sum()),
        held_out_agreement_at_default=_agreement(human, at_default, held_rows),
        held_out_agreement=_agreement(human, tuned, held_rows),
        class_confusion=_class_confusion(human, tuned, held_rows),
        class_confusion_at_default=_class_confusion(
            human, at_default, np.ones(compared.size, bool)
        ),
    )


def _class_names(classes: Sequence[str | None]) -> list[str]:
    return [NO_CLASS if value is None else value for value in classes]


def _agreement(human: list[str], graded: list[str], mask: np.ndarray) -> float | None:
    pairs = [(h, g) for h, g, keep in zip(human, graded, mask, strict=True) if keep]
    if not pairs:
        return None
    return sum(h == g for h, g in pairs) / len(pairs)


def _class_confusion(
    human: list[str], graded: list[str], mask: np.ndarray
) -> dict[str, dict[str, int]]:
    names = (*CLASS_ORDER, NO_CLASS)
    table = {h: dict.fromkeys(names, 0) for h in names}
    for h, g, keep in zip(human, graded, mask, strict=True):
        if keep:
            table[h][g] += 1
    return table


MACRO_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "f1",
    "roc_auc",
    "held_out_accuracy",
    "held_out_balanced_accuracy",
    "held_out_accuracy_at_default",
)


def macro_averages(reports: Mapping[str, PropositionReport]) -> dict[str, Any]:
    """Average metrics over propositions with at least one positive and one negative.

    Each metric's mean skips the propositions where that metric is None.
    """
    included = [r for r in reports.values() if r.has_both_classes]
    result: dict[str, Any] = {
        "n_propositions": len(included),
        "propositions": [r.name for r in included],
    }
    for key in MACRO_METRICS:
        values = [getattr(r, key) for r in included if getattr(r, key) is not None]
        result[key] = float(np.mean(values)) if values else None
    return result
