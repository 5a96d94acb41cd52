"""RuleBasedReward: totals, breakdowns, routing and unscored propositions."""

from __future__ import annotations

import numpy as np
import pytest

from rbr.data import Message, Sample, read_records
from rbr.errors import WeightsError
from rbr.examples import example_path
from rbr.features import FeatureSpace
from rbr.fitting.grading import grade_records
from rbr.fitting.rbr_fit import FitSettings, fit_rbr
from rbr.fitting.weights import RBRWeights
from rbr.graders.labels import LabelsGrader
from rbr.policy import load_default_policy
from rbr.reward import RuleBasedReward


@pytest.fixture(scope="module")
def fitted():
    policy = load_default_policy()
    records = read_records(example_path())
    grader = LabelsGrader.from_records(records)
    graded = grade_records(records, policy, grader)
    weights = fit_rbr(
        graded, policy, grader.identity, FitSettings(validation_fraction=0)
    )
    return policy, records, grader, weights


def sample_of(record, response_type="Hard Refuse"):
    return Sample(record.sample.prompt, record.sample.completion, response_type)


def test_total_is_weights_dot_features(fitted):
    policy, records, grader, weights = fitted
    reward = RuleBasedReward(policy, weights, grader)
    hard = [r for r in records if r.sample.response_type == "Hard Refuse"][:4]
    results = reward.score([sample_of(r) for r in hard])
    space = FeatureSpace(policy, "Hard Refuse")
    features = space.transform(space.matrix_from_dicts([r.propositions for r in hard]))
    expected = features @ weights.for_type("Hard Refuse").as_array()
    np.testing.assert_allclose([r.total for r in results], expected)
    assert all(r.base == 0.0 for r in results)
    assert set(results[0].propositions) == set(space.propositions)
    assert sum(results[0].classes.values()) == pytest.approx(1.0)


def test_ranking_follows_ordering_on_training_data(fitted):
    policy, records, grader, weights = fitted
    reward = RuleBasedReward(policy, weights, grader)
    hard = [r for r in records if r.sample.response_type == "Hard Refuse"]
    totals = dict(zip((id(r) for r in hard), reward([sample_of(r) for r in hard])))
    by_prompt: dict[str, dict[str, float]] = {}
    for r in hard:
        by_prompt.setdefault(r.prompt_id, {})[r.label] = totals[id(r)]
    for prompt_id, rewards in by_prompt.items():
        assert rewards["perfect_refusal"] > rewards["disallowed"], prompt_id


def test_base_reward_added_and_no_type_means_base_only(fitted):
    class ConstantBase:
        def score(self, samples):
            return np.full(len(samples), 2.5)

    policy, records, grader, weights = fitted
    reward = RuleBasedReward(policy, weights, grader, ConstantBase())
    record = records[0]
    typed, untyped = reward.score([sample_of(record), sample_of(record, None)])
    assert typed.total == pytest.approx(typed.rbr + 2.5)
    assert untyped.response_type is None
    assert untyped.rbr is None
    assert untyped.total == 2.5


def test_unscored_sample_gets_none_total(fitted):
    policy, records, grader, weights = fitted
    reward = RuleBasedReward(policy, weights, grader)
    unknown = Sample((Message("user", "never seen"),), "no labels", "Hard Refuse")
    result = reward.score([unknown])[0]
    assert result.total is None
    assert result.unscored
    assert result.unscored[0].reason == "missing_label"


def test_weights_refused_for_other_grader(fitted):
    class OtherGrader(LabelsGrader):
        @property
        def identity(self) -> str:
            return "other"

    policy, _, _, weights = fitted
    with pytest.raises(WeightsError, match="allow_grader_mismatch"):
        RuleBasedReward(policy, weights, OtherGrader({}))
    RuleBasedReward(policy, weights, OtherGrader({}), allow_grader_mismatch=True)


def test_weights_round_trip(fitted, tmp_path):
    policy, _, _, weights = fitted
    path = tmp_path / "w.json"
    weights.save(path)
    loaded = RBRWeights.load(path)
    loaded.check_compatible(policy, "labels")
    assert loaded.response_types.keys() == weights.response_types.keys()
    for name, entry in weights.response_types.items():
        np.testing.assert_allclose(loaded.for_type(name).as_array(), entry.as_array())


def test_weights_load_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        RBRWeights.load(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format_version": 1, "policy_name": "x"}')
    with pytest.raises(WeightsError, match="malformed"):
        RBRWeights.load(bad)
