"""Binary classification metrics in plain numpy.

Labels are arrays of 0 and 1 (or booleans). Scores are probabilities of the
positive class. A score counts as a positive prediction when it is at least
the threshold, the same rule :meth:`rbr.features.space.FeatureSpace.assign_classes`
applies. Unscored cells (NaN) must be removed before calling these functions:
they raise on NaN instead of guessing a value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

DEFAULT_THRESHOLD = 0.5
"""Threshold used when none was tuned: P(yes) >= 0.5 counts as yes."""


@dataclass(frozen=True, slots=True)
class ConfusionCounts:
    """Counts of a binary confusion matrix.

    Attributes:
        tp: Positive labels predicted positive.
        fp: Negative labels predicted positive.
        tn: Negative labels predicted negative.
        fn: Positive labels predicted negative.
    """

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def n(self) -> int:
        """Total number of cells."""
        return self.tp + self.fp + self.tn + self.fn

    def to_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    """Result of :func:`best_threshold`.

    Attributes:
        threshold: The chosen threshold.
        accuracy: Accuracy on the given scores at that threshold.
        n_candidates: Number of distinct thresholds tried.
    """

    threshold: float
    accuracy: float
    n_candidates: int


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    """One bin of a reliability curve.

    Attributes:
        lower: Lower edge of the bin (inclusive).
        upper: Upper edge of the bin (exclusive, except 1.0 for the last bin).
        count: Number of scores in the bin.
        mean_predicted: Mean score in the bin.
        observed_frequency: Share of positive labels in the bin.
    """

    lower: float
    upper: float
    count: int
    mean_predicted: float
    observed_frequency: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "lower": self.lower,
            "upper": self.upper,
            "count": self.count,
            "mean_predicted": self.mean_predicted,
            "observed_frequency": self.observed_frequency,
        }


def as_labels(labels: ArrayLike) -> np.ndarray:
    """Return ``labels`` as a 1-D boolean array.

    Raises:
        ValueError: When the array is not 1-D or contains values other than 0 and 1.
    """
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {array.shape}")
    if array.dtype == bool:
        return array
    numeric = array.astype(float)
    invalid = ~np.isin(numeric, (0.0, 1.0))
    if invalid.any():
        first = numeric[np.flatnonzero(invalid)[0]]
        raise ValueError(f"labels must be 0 or 1, got {first!r}")
    return numeric == 1.0


def as_scores(scores: ArrayLike, *, size: int | None = None) -> np.ndarray:
    """Return ``scores`` as a 1-D float array of finite values.

    Raises:
        ValueError: When the array is not 1-D, has the wrong length or contains
            NaN or infinite values.
    """
    array = np.asarray(scores, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"scores must be a 1-D array, got shape {array.shape}")
    if size is not None and array.size != size:
        raise ValueError(f"scores have {array.size} values but labels have {size}")
    if not np.isfinite(array).all():
        raise ValueError(
            "scores contain NaN or infinite values. Remove unscored cells first."
        )
    return array


def _pair(labels: ArrayLike, predictions: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    truth = as_labels(labels)
    predicted = as_labels(predictions)
    if truth.size != predicted.size:
        raise ValueError(
            f"labels have {truth.size} values but predictions have {predicted.size}"
        )
    if truth.size == 0:
        raise ValueError("labels are empty, but metrics need at least one value")
    return truth, predicted


def predict(scores: ArrayLike, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Return the boolean predictions ``score >= threshold``."""
    return as_scores(scores) >= threshold


def confusion_counts(labels: ArrayLike, predictions: ArrayLike) -> ConfusionCounts:
    """Count true and false positives and negatives."""
    truth, predicted = _pair(labels, predictions)
    return ConfusionCounts(
        tp=int(np.sum(truth & predicted)),
        fp=int(np.sum(~truth & predicted)),
        tn=int(np.sum(~truth & ~predicted)),
        fn=int(np.sum(truth & ~predicted)),
    )


def accuracy(labels: ArrayLike, predictions: ArrayLike) -> float:
    """Return the share of predictions equal to the labels."""
    truth, predicted = _pair(labels, predictions)
    return float(np.mean(truth == predicted))


def balanced_accuracy(labels: ArrayLike, predictions: ArrayLike) -> float:
    """Return the mean recall over the classes present in ``labels``.

    With both classes present this is (TPR + TNR) / 2. With one class
    present it is that class's recall, as in scikit-learn 1.x.
    """
    counts = confusion_counts(labels, predictions)
    recalls = []
    if counts.tp + counts.fn:
        recalls.append(counts.tp / (counts.tp + counts.fn))
    if counts.tn + counts.fp:
        recalls.append(counts.tn / (counts.tn + counts.fp))
    return float(np.mean(recalls))


def f1_score(labels: ArrayLike, predictions: ArrayLike) -> float | None:
    """Return the F1 score of the positive class.

    Returns:
        2 TP / (2 TP + FP + FN), or None when there are no positive labels and
        no positive predictions, where F1 is undefined (scikit-learn returns
        0.0 there and warns).
    """
    counts = confusion_counts(labels, predictions)
    denominator = 2 * counts.tp + counts.fp + counts.fn
    if denominator == 0:
        return None
    return 2 * counts.tp / denominator


def average_ranks(values: ArrayLike) -> np.ndarray:
    """Return 1-based ranks of ``values``, giving tied values their mean rank."""
    array = np.asarray(values, dtype=float)
    order = np.argsort(array, kind="mergesort")
    ordered = array[order]
    # Each run of equal values spans positions [start, end) in sorted order.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], array.size]
    run_ranks = (starts + ends + 1) / 2.0
    ranks = np.empty(array.size)
    ranks[order] = np.repeat(run_ranks, ends - starts)
    return ranks


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """Return the area under the ROC curve, or None when only one class is present.

    Computed as the Mann-Whitney U statistic from average ranks, so a tie
    between a positive and a negative score counts one half.
    """
    truth = as_labels(labels)
    values = as_scores(scores, size=truth.size)
    n_positive = int(truth.sum())
    n_negative = truth.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return None
    ranks = average_ranks(values)
    u_statistic = ranks[truth].sum() - n_positive * (n_positive + 1) / 2.0
    return float(u_statistic / (n_positive * n_negative))


def candidate_thresholds(scores: ArrayLike) -> np.ndarray:
    """Return the midpoints between sorted unique scores, plus 0.5, sorted."""
    unique = np.unique(as_scores(scores))
    midpoints = (unique[:-1] + unique[1:]) / 2.0
    return np.unique(np.r_[midpoints, DEFAULT_THRESHOLD])


def accuracy_at_thresholds(
    labels: ArrayLike, scores: ArrayLike, thresholds: ArrayLike
) -> np.ndarray:
    """Return the accuracy of ``score >= t`` for every threshold ``t``."""
    truth = as_labels(labels)
    values = as_scores(scores, size=truth.size)
    if truth.size == 0:
        raise ValueError("labels are empty, but metrics need at least one value")
    cuts = np.asarray(thresholds, dtype=float)
    positive_scores = np.sort(values[truth])
    negative_scores = np.sort(values[~truth])
    # searchsorted(..., "left") counts the scores strictly below each cut.
    true_negatives = np.searchsorted(negative_scores, cuts, side="left")
    false_negatives = np.searchsorted(positive_scores, cuts, side="left")
    true_positives = positive_scores.size - false_negatives
    return (true_positives + true_negatives) / truth.size


def best_threshold(labels: ArrayLike, scores: ArrayLike) -> ThresholdChoice:
    """Pick the threshold that maximises accuracy of ``score >= threshold``.

    Candidates are the midpoints between consecutive sorted unique scores,
    plus 0.5. Among equally accurate candidates the one closest to 0.5 wins,
    and of two equally close the lower one, so the choice is deterministic.

    Raises:
        ValueError: When ``labels`` is empty or the inputs are invalid.
    """
    candidates = candidate_thresholds(scores)
    accuracies = accuracy_at_thresholds(labels, scores, candidates)
    # lexsort sorts by the last key first: accuracy (descending), then
    # distance to 0.5, then the threshold itself.
    order = np.lexsort(
        (candidates, np.abs(candidates - DEFAULT_THRESHOLD), -accuracies)
    )
    best = order[0]
    return ThresholdChoice(
        threshold=float(candidates[best]),
        accuracy=float(accuracies[best]),
        n_candidates=int(candidates.size),
    )


def reliability_curve(
    labels: ArrayLike, scores: ArrayLike, *, n_bins: int = 10
) -> list[ReliabilityBin]:
    """Return the mean score and observed positive rate per score bin.

    Bins split [0, 1] into ``n_bins`` equal intervals. A score of exactly 1.0
    falls in the last bin. Empty bins are left out.

    Raises:
        ValueError: When ``n_bins`` is below 1 or a score lies outside [0, 1].
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    truth = as_labels(labels)
    values = as_scores(scores, size=truth.size)
    if ((values < 0) | (values > 1)).any():
        raise ValueError("scores must be probabilities in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_of = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, n_bins - 1)
    bins = []
    for index in range(n_bins):
        members = bin_of == index
        count = int(members.sum())
        if count == 0:
            continue
        bins.append(
            ReliabilityBin(
                lower=float(edges[index]),
                upper=float(edges[index + 1]),
                count=count,
                mean_predicted=float(values[members].mean()),
                observed_frequency=float(truth[members].mean()),
            )
        )
    return bins
