"""Feature computation: class probabilities against hand-computed values."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from rbr.data import read_records
from rbr.features import FeatureSpace, feature_spaces
from rbr.policy import CLASS_ORDER, load_default_policy
from tests.conftest import shared_file
from tests.policy.test_loader import MINIMAL, load


@pytest.fixture(scope="module")
def tiny_space() -> FeatureSpace:
    return FeatureSpace(load(MINIMAL), "Hard Refuse")


def test_feature_layout(tiny_space):
    assert tiny_space.propositions == ("apology", "refuses", "harmful")
    assert tiny_space.feature_names[3:] == tuple(f"class:{c}" for c in CLASS_ORDER)
    assert tiny_space.n_features == 8


def test_class_probabilities_match_hand_computation(tiny_space):
    a, r, h = 0.9, 0.8, 0.1
    ideal = a * r * (1 - h)  # good_refusal: apology, refuses, not harmful
    minimum = r * (1 - a) * (1 - h)
    unacceptable = (1 - r) * (1 - h)
    illogical = r * h
    disallowed = (1 - r) * h
    raw = np.array([ideal, minimum, unacceptable, illogical, disallowed])
    probabilities = tiny_space.class_probabilities(np.array([[a, r, h]]))
    np.testing.assert_allclose(probabilities[0], raw / raw.sum(), rtol=1e-12)


def test_negated_derived_proposition_uses_complement():
    text = MINIMAL.replace(
        "unacceptable_completion: {refuses: false, harmful: false}",
        "unacceptable_completion: {good_refusal: false, harmful: false}",
    )
    space = FeatureSpace(load(text), "Hard Refuse")
    a, r, h = 0.5, 0.4, 0.2
    scores = space.unnormalized_class_scores(np.array([[a, r, h]]))
    expected = (1 - a * r * (1 - h)) * (1 - h)
    assert scores[0, 2] == pytest.approx(expected)


def test_class_probabilities_sum_to_one(tiny_space):
    rng = np.random.default_rng(0)
    probabilities = tiny_space.class_probabilities(rng.uniform(size=(50, 3)))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_all_zero_case_gives_zero_classes():
    # With apology true, refuses false, harmful false no class of this policy matches
    # except unacceptable; make that class unreachable to create an uncovered case.
    text = MINIMAL.replace(
        "unacceptable_completion: {refuses: false, harmful: false}",
        "unacceptable_completion: {refuses: false, harmful: false, apology: false}",
    )
    space = FeatureSpace(load(text), "Hard Refuse")
    probabilities = np.array([[1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(space.class_probabilities(probabilities), 0.0)
    assert space.assign_classes(probabilities) == [None]
    features = space.transform(probabilities)
    np.testing.assert_array_equal(features[0, :3], [1.0, 0.0, 0.0])


def test_assign_classes_uses_thresholds(tiny_space):
    probabilities = np.array([[0.6, 0.9, 0.0]])
    assert tiny_space.assign_classes(probabilities) == ["ideal"]
    assert tiny_space.assign_classes(probabilities, {"apology": 0.7}) == [
        "minimum_acceptable_style"
    ]


def test_rejects_nan_and_bad_shapes(tiny_space):
    with pytest.raises(ValueError, match="NaN"):
        tiny_space.transform(np.array([[np.nan, 0.1, 0.2]]))
    with pytest.raises(ValueError, match="shape"):
        tiny_space.transform(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tiny_space.transform(np.array([[1.5, 0.1, 0.2]]))


def test_matrix_from_dicts_names_missing_proposition(tiny_space):
    with pytest.raises(KeyError, match="harmful"):
        tiny_space.matrix_from_dicts([{"apology": 1.0, "refuses": 0.0}])


def test_default_policy_feature_counts():
    spaces = feature_spaces(load_default_policy())
    assert spaces["Hard Refuse"].n_features == 19
    assert spaces["Safe Refuse 2"].n_features == 23
    assert spaces["Comply"].propositions == (
        "partially_complies",
        "illogical_continuation_of_prompt",
        "meta_commentary",
        "disallowed_content",
        "requests_information",
    )


def test_every_gold_row_gets_a_class():
    records = read_records(shared_file("rbr-gold/train.jsonl"))
    policy = load_default_policy()
    spaces = feature_spaces(policy)
    counts: collections.Counter = collections.Counter()
    for record in records:
        space = spaces[policy.response_type(record.sample.response_type).name]
        matrix = space.matrix_from_dicts([record.propositions])
        name = space.assign_classes(matrix)[0]
        assert name is not None, f"line {record.line} has no class"
        counts[name] += 1
        # Labels are 0/1, so exactly one class has probability one.
        np.testing.assert_allclose(space.class_probabilities(matrix).max(), 1.0)
    assert sum(counts.values()) == 351
