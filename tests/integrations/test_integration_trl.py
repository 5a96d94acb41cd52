"""The TRL reward functions, called the way TRL 1.16 calls them."""

from __future__ import annotations

import asyncio
import pickle
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest

from rbr.data import read_records
from rbr.integrations.convert import IntegrationError
from rbr.integrations.trl_reward import AsyncRBRRewardFunction, RBRRewardFunction
from rbr.reward.pipeline import RewardPipeline, RewardRequest
from rbr.reward.routing import RoutingError
from tests.conftest import shared_file


class MetricSpy:
    """Stands in for TRL's ``log_metric`` and ``log_extra`` hooks."""

    def __init__(self) -> None:
        self.metrics: dict[str, list[float]] = defaultdict(list)
        self.columns: dict[str, list[object]] = {}

    def log_metric(self, name: str, value: float) -> None:
        self.metrics[name].append(value)

    def log_extra(self, column: str, values: list[object]) -> None:
        self.columns[column] = values


def batch(records, *, conversational: bool = True):
    """TRL keyword arguments for the given records, one completion each."""
    prompts = []
    completions = []
    for record in records:
        messages = [m.to_dict() for m in record.sample.prompt]
        if conversational:
            prompts.append(messages)
            completions.append(
                [{"role": "assistant", "content": record.sample.completion}]
            )
        else:
            prompts.append(messages[-1]["content"])
            completions.append(record.sample.completion)
    return {
        "prompts": prompts,
        "completions": completions,
        "completion_ids": [[1, 2]] * len(records),
        "response_type": [r.sample.response_type for r in records],
        "category": [r.category for r in records],
        "trainer_state": SimpleNamespace(global_step=7),
    }


def single_turn(records):
    return [r for r in records if len(r.sample.prompt) == 1]


def pipeline_totals(pipeline, records):
    requests = [
        RewardRequest(
            r.sample.prompt, r.sample.completion, r.sample.response_type, r.category
        )
        for r in records
    ]
    return [b.total for b in pipeline.score(requests)]


def test_totals_match_pipeline(offline_pipeline, example_records):
    reward = RBRRewardFunction(offline_pipeline)
    rewards = reward(**batch(example_records))
    assert rewards == pytest.approx(pipeline_totals(offline_pipeline, example_records))
    assert all(isinstance(value, float) for value in rewards)


def test_standard_and_conversational_agree(offline_pipeline, example_records):
    records = single_turn(example_records)
    assert records
    reward = RBRRewardFunction(offline_pipeline)
    standard = reward(**batch(records, conversational=False))
    conversational = reward(**batch(records))
    assert standard == pytest.approx(conversational)


def test_messages_column_replaces_string_prompts(offline_pipeline, example_records):
    reward = RBRRewardFunction(offline_pipeline, messages_column="messages")
    kwargs = batch(example_records)
    kwargs["messages"] = kwargs["prompts"]
    kwargs["prompts"] = ["<rendered chat template>"] * len(example_records)
    assert reward(**kwargs) == pytest.approx(
        pipeline_totals(offline_pipeline, example_records)
    )


def test_rbr_only_gives_none_without_type(offline_pipeline, example_records):
    records = example_records[:6]
    kwargs = batch(records)
    kwargs["response_type"] = [None, None] + kwargs["response_type"][2:]
    kwargs["category"] = [None, None] + kwargs["category"][2:]
    terms = RBRRewardFunction(offline_pipeline, rbr_only=True, unlabelled="no_rbr")(
        **kwargs
    )
    totals = RBRRewardFunction(offline_pipeline, unlabelled="no_rbr")(**kwargs)
    assert terms[:2] == [None, None]
    assert totals[:2] == [0.0, 0.0]
    assert all(t is not None for t in terms[2:])
    # Without a base reward model the total is the RBR term.
    assert terms[2:] == pytest.approx(totals[2:])


def test_unlabelled_route_needs_classifier(offline_pipeline, example_records):
    kwargs = batch(example_records[:2])
    kwargs["response_type"] = [None, "Comply"]
    kwargs["category"] = [None, None]
    with pytest.raises(RoutingError, match="prompt 0 has neither"):
        RBRRewardFunction(offline_pipeline)(**kwargs)


def test_unknown_unlabelled_mode_rejected(offline_pipeline):
    with pytest.raises(IntegrationError, match="unknown unlabelled mode 'skip'"):
        RBRRewardFunction(offline_pipeline, unlabelled="skip")


def test_base_reward_added_and_centered(offline_pipeline, example_records):
    class LengthBase:
        def score(self, samples):
            return np.array([len(s.completion) / 100 for s in samples])

    records = example_records[:8]
    with_base = RewardPipeline(
        offline_pipeline.reward,
        base_reward=LengthBase(),
        base_normalization="center",
    )
    totals = RBRRewardFunction(with_base)(**batch(records))
    terms = RBRRewardFunction(with_base, rbr_only=True)(**batch(records))
    base = np.array([len(r.sample.completion) / 100 for r in records])
    ids = np.array([r.prompt_id for r in records])
    for prompt_id in set(ids):
        base[ids == prompt_id] -= base[ids == prompt_id].mean()
    np.testing.assert_allclose(np.array(totals) - np.array(terms), base)


def test_metrics_logged_through_trl_hooks(offline_pipeline, example_records):
    spy = MetricSpy()
    reward = RBRRewardFunction(offline_pipeline)
    rewards = reward(
        **batch(example_records), log_metric=spy.log_metric, log_extra=spy.log_extra
    )
    assert spy.metrics["rbr/total"] == pytest.approx([np.mean(rewards)])
    assert spy.metrics["rbr/applied_fraction"] == [1.0]
    assert spy.metrics["rbr/unscored_fraction"] == [0.0]
    assert spy.metrics["rbr/base"] == [0.0]
    assert spy.metrics["rbr/rbr_term"] == pytest.approx([np.mean(rewards)])
    class_sum = sum(
        spy.metrics[f"rbr/class/{c}"][0]
        for c in (
            "ideal",
            "minimum_acceptable_style",
            "unacceptable_completion",
            "illogical_completion",
            "disallowed_completion",
        )
    )
    assert class_sum == pytest.approx(1.0)
    assert 0.0 <= spy.metrics["rbr/prop/disallowed_content"][0] <= 1.0
    assert "rbr/hard_refuse/rbr_term" in spy.metrics
    assert "rbr/safe_refuse_2/class/ideal" in spy.metrics
    assert reward.last_metrics["total"] == spy.metrics["rbr/total"][0]


def test_completion_columns_logged(offline_pipeline, example_records):
    spy = MetricSpy()
    reward = RBRRewardFunction(offline_pipeline, name="safety")
    reward(**batch(example_records[:5]), log_extra=spy.log_extra)
    assert set(spy.columns) == {"safety_response_type", "safety_class", "safety_term"}
    assert spy.columns["safety_response_type"] == [
        r.sample.response_type for r in example_records[:5]
    ]
    assert all(len(v) == 5 for v in spy.columns.values())


def test_metrics_kept_without_hooks(offline_pipeline, example_records):
    reward = RBRRewardFunction(offline_pipeline, log_propositions=None)
    reward(**batch(example_records))
    assert "total" in reward.last_metrics
    # None logs every graded proposition.
    assert "prop/apology" in reward.last_metrics
    assert "prop/prescribes_dosage" in reward.last_metrics


def test_async_matches_sync(offline_pipeline, example_records):
    kwargs = batch(example_records)
    sync = RBRRewardFunction(offline_pipeline)(**kwargs)
    spy = MetricSpy()
    result = asyncio.run(
        AsyncRBRRewardFunction(offline_pipeline)(**kwargs, log_metric=spy.log_metric)
    )
    assert result == pytest.approx(sync)
    assert spy.metrics["rbr/total"] == pytest.approx([np.mean(sync)])


def test_unscored_completion_gives_none(labels_pipeline, example_records):
    kwargs = batch(example_records[:2])
    kwargs["completions"][1] = [{"role": "assistant", "content": "never graded"}]
    spy = MetricSpy()
    rewards = RBRRewardFunction(labels_pipeline)(**kwargs, log_metric=spy.log_metric)
    assert rewards[0] is not None
    assert rewards[1] is None
    assert spy.metrics["rbr/unscored_fraction"] == [0.5]


def test_settings_path_builds_and_pickles(settings_file, example_records):
    kwargs = batch(example_records[:6])
    with RBRRewardFunction(settings_file) as reward:
        expected = reward(**kwargs)
        copy = pickle.loads(pickle.dumps(reward))
    try:
        assert copy(**kwargs) == pytest.approx(expected)
        assert copy.__name__ == "rbr"
    finally:
        copy.close()


def test_pipeline_instance_not_picklable(offline_pipeline):
    with pytest.raises(TypeError, match="build it from reward settings"):
        pickle.dumps(RBRRewardFunction(offline_pipeline))


def test_column_length_mismatch(offline_pipeline, example_records):
    kwargs = batch(example_records[:3])
    kwargs["response_type"] = kwargs["response_type"][:2]
    with pytest.raises(IntegrationError, match="'response_type' has 2 values for 3"):
        RBRRewardFunction(offline_pipeline)(**kwargs)


def test_missing_messages_column(offline_pipeline, example_records):
    reward = RBRRewardFunction(offline_pipeline, messages_column="messages")
    with pytest.raises(IntegrationError, match="column 'messages' is missing"):
        reward(**batch(example_records[:2]))


def test_gold_prompts_routed_by_columns(offline_pipeline):
    records = read_records(shared_file("rbr-gold/train.jsonl"))
    spy = MetricSpy()
    rewards = RBRRewardFunction(offline_pipeline)(
        **batch(records), log_metric=spy.log_metric, log_extra=spy.log_extra
    )
    assert len(rewards) == len(records)
    assert all(value is not None for value in rewards)
    assert spy.metrics["rbr/applied_fraction"] == [1.0]
    assert spy.columns["rbr_response_type"] == [r.sample.response_type for r in records]
