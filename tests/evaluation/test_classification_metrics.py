"""Binary metrics against hand-computed values and against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from rbr.evaluation import metrics

LABELS = np.array([1, 1, 1, 0, 0, 0, 0, 1])
PREDICTIONS = np.array([1, 0, 1, 0, 1, 0, 0, 1])


def test_confusion_counts_by_hand():
    counts = metrics.confusion_counts(LABELS, PREDICTIONS)
    assert counts.tp == 3
    assert counts.fn == 1
    assert counts.fp == 1
    assert counts.tn == 3
    assert counts.n == 8
    assert counts.to_dict() == {"tp": 3, "fp": 1, "tn": 3, "fn": 1}


def test_accuracy_and_f1_by_hand():
    assert metrics.accuracy(LABELS, PREDICTIONS) == pytest.approx(6 / 8)
    assert metrics.f1_score(LABELS, PREDICTIONS) == pytest.approx(6 / 8)


def test_balanced_accuracy_by_hand():
    labels = [1, 0, 0, 0, 0]
    predictions = [1, 1, 0, 0, 0]
    # Recall of positives 1/1, of negatives 3/4.
    assert metrics.balanced_accuracy(labels, predictions) == pytest.approx(0.875)
    assert metrics.accuracy(labels, predictions) == pytest.approx(0.8)


def test_balanced_accuracy_one_class_is_its_recall():
    assert metrics.balanced_accuracy([0, 0, 0, 0], [0, 1, 0, 0]) == pytest.approx(0.75)


def test_f1_undefined_without_positives():
    assert metrics.f1_score([0, 0, 0], [0, 0, 0]) is None
    assert metrics.f1_score([0, 0, 0], [0, 1, 0]) == 0.0


def test_roc_auc_by_hand_with_tie():
    # Pairs (positive, negative): 0.8>0.1, 0.8>0.4, 0.4=0.4 (half), 0.4>0.1.
    auc = metrics.roc_auc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1])
    assert auc == pytest.approx(3.5 / 4)


def test_roc_auc_none_with_one_class():
    assert metrics.roc_auc([1, 1, 1], [0.2, 0.5, 0.9]) is None
    assert metrics.roc_auc([0, 0], [0.2, 0.5]) is None


def test_average_ranks_ties():
    ranks = metrics.average_ranks([0.3, 0.1, 0.3, 0.2, 0.3])
    np.testing.assert_allclose(ranks, [4.0, 1.0, 4.0, 2.0, 4.0])


def test_inputs_rejected():
    with pytest.raises(ValueError, match="0 or 1"):
        metrics.accuracy([0, 2], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        metrics.roc_auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="empty"):
        metrics.accuracy([], [])
    with pytest.raises(ValueError, match="3 values"):
        metrics.confusion_counts([0, 1, 1], [0, 1])


@pytest.fixture(scope="module")
def sklearn_metrics():
    return pytest.importorskip(
        "sklearn.metrics", reason="scikit-learn (test extra) checks these metrics"
    )


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn(sklearn_metrics, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=200)
    # One decimal makes many ties, inside and across the classes.
    scores = np.round(np.clip(0.3 * labels + rng.normal(0.35, 0.25, 200), 0, 1), 1)
    predictions = scores >= 0.5

    assert metrics.roc_auc(labels, scores) == pytest.approx(
        sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12
    )
    assert metrics.accuracy(labels, predictions) == pytest.approx(
        sklearn_metrics.accuracy_score(labels, predictions), abs=1e-12
    )
    assert metrics.balanced_accuracy(labels, predictions) == pytest.approx(
        sklearn_metrics.balanced_accuracy_score(labels, predictions), abs=1e-12
    )
    assert metrics.f1_score(labels, predictions) == pytest.approx(
        sklearn_metrics.f1_score(labels, predictions), abs=1e-12
    )
    tn, fp, fn, tp = sklearn_metrics.confusion_matrix(labels, predictions).ravel()
    counts = metrics.confusion_counts(labels, predictions)
    assert (counts.tn, counts.fp, counts.fn, counts.tp) == (tn, fp, fn, tp)


def test_average_ranks_match_scipy():
    stats = pytest.importorskip("scipy.stats", reason="scipy (test extra) checks ranks")
    values = np.random.default_rng(7).integers(0, 10, size=100).astype(float)
    np.testing.assert_allclose(metrics.average_ranks(values), stats.rankdata(values))


def test_best_threshold_known_case():
    choice = metrics.best_threshold([0, 0, 1, 1, 1, 1], [0.1, 0.2, 0.35, 0.6, 0.7, 0.9])
    assert choice.threshold == pytest.approx(0.275)
    assert choice.accuracy == 1.0
    # Midpoints 0.15, 0.275, 0.475, 0.65, 0.8, plus 0.5.
    assert choice.n_candidates == 6


def test_best_threshold_tie_prefers_half():
    # 0.5 and the midpoint 0.625 both separate the classes perfectly.
    choice = metrics.best_threshold([0, 0, 0, 1, 1], [0.1, 0.3, 0.45, 0.8, 0.9])
    assert choice.threshold == 0.5
    assert choice.accuracy == 1.0


def test_best_threshold_equal_distance_prefers_lower():
    # 0.25 and 0.75 both give accuracy 0.75 and lie 0.25 from 0.5.
    choice = metrics.best_threshold([0, 1, 0, 1], [0.1, 0.4, 0.6, 0.9])
    assert choice.threshold == 0.25
    assert choice.accuracy == 0.75


def test_best_threshold_is_maximum_over_candidates():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=60)
    scores = np.round(rng.random(60), 2)
    choice = metrics.best_threshold(labels, scores)
    brute = max(
        np.mean((scores >= t) == labels) for t in metrics.candidate_thresholds(scores)
    )
    assert choice.accuracy == pytest.approx(brute)
    assert np.mean((scores >= choice.threshold) == labels) == pytest.approx(brute)
    assert metrics.best_threshold(labels[::-1], scores[::-1]) == choice


def test_accuracy_at_thresholds_counts_equal_as_positive():
    accuracies = metrics.accuracy_at_thresholds([0, 1], [0.5, 0.5], [0.5, 0.6])
    np.testing.assert_allclose(accuracies, [0.5, 0.5])
    accuracies = metrics.accuracy_at_thresholds([1, 1], [0.5, 0.7], [0.5, 0.6])
    np.testing.assert_allclose(accuracies, [1.0, 0.5])


def test_reliability_curve_by_hand():
    bins = metrics.reliability_curve(
        [0, 1, 0, 1, 1], [0.05, 0.15, 0.12, 0.95, 1.0], n_bins=10
    )
    assert [(b.lower, b.count) for b in bins] == [(0.0, 1), (0.1, 2), (0.9, 2)]
    assert bins[1].mean_predicted == pytest.approx(0.135)
    assert bins[1].observed_frequency == pytest.approx(0.5)
    assert bins[2].upper == 1.0
    assert bins[2].mean_predicted == pytest.approx(0.975)
    assert bins[2].observed_frequency == 1.0
    assert bins[0].to_dict()["observed_frequency"] == 0.0


def test_reliability_curve_rejects_bad_input():
    with pytest.raises(ValueError, match="n_bins"):
        metrics.reliability_curve([0], [0.5], n_bins=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.reliability_curve([0], [1.5])
