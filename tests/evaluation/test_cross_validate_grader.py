"""cross_validate_grader with small trainable graders built in the test."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from rbr.data import Record, Sample
from rbr.evaluation import cross_validate_grader, metrics, prompt_folds
from rbr.graders.base import Grader, GradeResult, Unscored
from rbr.policy import Proposition
from tests.evaluation.tiny_gold import (
    PROPOSITIONS,
    TableGrader,
    gold_rows,
    shifted_label,
    tiny_policy,
    to_records,
    true_label,
)

N_ROWS = 48


class BaseRateGrader(Grader):
    """Return, for every sample, the training share of positives per proposition."""

    def __init__(self, rates: dict[str, float]) -> None:
        self.rates = rates

    @classmethod
    def fit(cls, records: Sequence[Record]) -> BaseRateGrader:
        rates = {}
        for name in PROPOSITIONS:
            values = [r.propositions[name] for r in records if name in r.propositions]
            rates[name] = float(np.mean(values))
        return cls(rates)

    @property
    def identity(self) -> str:
        return "base-rate"

    def grade(
        self, samples: Sequence[Sample], propositions: Sequence[Proposition]
    ) -> GradeResult:
        names = tuple(p.name for p in propositions)
        row = [self.rates[name] for name in names]
        return GradeResult(names, np.tile(row, (len(samples), 1)))


class PromptMemoryGrader(Grader):
    """Return the labels of training rows with the same prompt text, else unscored.

    It scores a test row only when a completion to the same prompt was in
    the training rows, so any scored cell reveals a leak across folds.
    """

    def __init__(self, records: Sequence[Record]) -> None:
        self.labels = {r.sample.prompt: r.propositions for r in records}

    @property
    def identity(self) -> str:
        return "prompt-memory"

    def grade(
        self, samples: Sequence[Sample], propositions: Sequence[Proposition]
    ) -> GradeResult:
        names = tuple(p.name for p in propositions)
        values = np.full((len(samples), len(names)), np.nan)
        unscored = []
        for i, sample in enumerate(samples):
            stored = self.labels.get(sample.prompt, {})
            for j, name in enumerate(names):
                if name in stored:
                    values[i, j] = stored[name]
                else:
                    unscored.append(Unscored(i, name, "missing_label"))
        return GradeResult(names, values, unscored)


def test_oracle_grader_is_perfect_and_fit_count():
    records = to_records(gold_rows())
    oracle = TableGrader.from_function(records, true_label, name="oracle")
    training_sizes = []

    def fit(train):
        training_sizes.append(len(train))
        return oracle

    report = cross_validate_grader(
        records, tiny_policy(), fit, n_folds=4, inner_folds=2, random_state=1
    )
    assert len(training_sizes) == 4 * (2 + 1)
    assert report.mode == "cross_validation"
    assert report.grader_identity == "oracle"
    assert report.n_held_out == N_ROWS
    for name in PROPOSITIONS:
        item = report.propositions[name]
        assert item.n == N_ROWS
        assert item.accuracy == 1.0
        assert item.held_out_accuracy == 1.0
    assert report.response_types["Hard Refuse"].held_out_agreement == 1.0
    assert len(report.fold_thresholds) == 4


def test_no_prompt_shared_between_train_and_test():
    records = to_records(gold_rows())
    report = cross_validate_grader(
        records, tiny_policy(), PromptMemoryGrader, n_folds=5, inner_folds=0
    )
    for name in PROPOSITIONS:
        item = report.propositions[name]
        assert item.n == 0
        assert item.unscored == N_ROWS
        assert item.accuracy is None
    assert report.unscored_reasons == {"missing_label": 3 * N_ROWS}
    assert report.macro["n_propositions"] == 0


def test_metrics_pool_out_of_fold_scores():
    records = to_records(gold_rows())
    report = cross_validate_grader(
        records, tiny_policy(), BaseRateGrader.fit, n_folds=5, inner_folds=0
    )
    types = ["Hard Refuse" if r.category == "K-R" else None for r in records]
    folds = prompt_folds(records, types, n_folds=5, random_state=0)
    for name in PROPOSITIONS:
        labels, scores = [], []
        for fold in range(5):
            train = [r for r, f in zip(records, folds, strict=True) if f != fold]
            rate = BaseRateGrader.fit(train).rates[name]
            test = [r for r, f in zip(records, folds, strict=True) if f == fold]
            for record in test:
                if name in record.propositions:
                    labels.append(record.propositions[name])
                    scores.append(rate)
        item = report.propositions[name]
        assert item.n == N_ROWS
        assert item.roc_auc == pytest.approx(metrics.roc_auc(labels, scores))
        predicted = np.array(scores) >= 0.5
        assert item.accuracy == pytest.approx(metrics.accuracy(labels, predicted))
        assert item.threshold == 0.5


def test_thresholds_tuned_out_of_fold():
    records = to_records(gold_rows())
    shifted = TableGrader.from_function(records, shifted_label)
    report = cross_validate_grader(
        records, tiny_policy(), lambda train: shifted, n_folds=3, inner_folds=2
    )
    assert len(report.fold_thresholds) == 3
    for thresholds in report.fold_thresholds:
        assert thresholds == pytest.approx(
            {"apology": 0.3, "refuses": 0.3, "harmful": 0.3}
        )
    for name in PROPOSITIONS:
        item = report.propositions[name]
        assert item.held_out_accuracy == 1.0
        assert item.accuracy == pytest.approx((N_ROWS - item.positives) / N_ROWS)
        # Every training row of each fold is tuned on once: 2 of 3 folds.
        assert item.n_tuning == 2 * N_ROWS
    assert report.thresholds is None
    assert report.to_dict()["fold_thresholds"][0]["harmful"] == pytest.approx(0.3)


def test_prompt_folds_group_prompts():
    records = to_records(gold_rows())
    types = ["Hard Refuse" if r.category == "K-R" else None for r in records]
    folds = prompt_folds(records, types, n_folds=5, random_state=0)
    fold_of_prompt: dict[str, set[int]] = {}
    for record, fold in zip(records, folds, strict=True):
        fold_of_prompt.setdefault(record.prompt_id, set()).add(int(fold))
    assert all(len(f) == 1 for f in fold_of_prompt.values())
    hard_prompts = {r.prompt_id for r in records if r.category == "K-R"}
    per_fold = np.bincount([min(fold_of_prompt[p]) for p in hard_prompts], minlength=5)
    # 40 Hard Refuse prompts dealt in turn to 5 folds.
    assert per_fold.tolist() == [8, 8, 8, 8, 8]
    again = prompt_folds(records, types, n_folds=5, random_state=0)
    np.testing.assert_array_equal(folds, again)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_folds": 1}, "n_folds"),
        ({"n_folds": 100}, "n_folds"),
        ({"inner_folds": 1}, "inner_folds"),
        ({"inner_folds": -2}, "inner_folds"),
    ],
)
def test_invalid_fold_counts(options, message):
    records = to_records(gold_rows())
    with pytest.raises(ValueError, match=message):
        cross_validate_grader(records, tiny_policy(), BaseRateGrader.fit, **options)
