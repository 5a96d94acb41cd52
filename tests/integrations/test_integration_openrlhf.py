"""OpenRLHF's reward_func file, loaded from its path as OpenRLHF loads it."""

from __future__ import annotations

import importlib.util
import json
import logging

import pytest

import rbr.integrations.openrlhf_reward as openrlhf_reward
from rbr.integrations.convert import (
    IntegrationError,
    openrlhf_rows,
    prompts_from_records,
)
from rbr.integrations.scoring import close_shared_scorers
from rbr.policy import load_default_policy
from rbr.reward.pipeline import RewardRequest

torch = pytest.importorskip("torch")


def chatml(messages) -> str:
    """Render messages the way a ChatML chat template does, with the reply cue."""
    turns = "".join(
        f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages
    )
    return turns + "<|im_start|>assistant\n"


@pytest.fixture
def reward_module(monkeypatch, settings_file):
    monkeypatch.setenv("RBR_REWARD_CONFIG", str(settings_file))
    for name in ("RBR_UNSCORED_RBR", "RBR_UNLABELLED", "RBR_END_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    spec = importlib.util.spec_from_file_location(
        "reward_func", openrlhf_reward.__file__
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    close_shared_scorers()


def openrlhf_batch(records):
    """Queries, prompts and labels as OpenRLHF builds them for ``records``."""
    rows = {
        json.dumps(json.loads(row["label"])["messages"]): row
        for row in openrlhf_rows(prompts_from_records(records))
    }
    queries, prompts, labels = [], [], []
    for record in records:
        messages = [m.to_dict() for m in record.sample.prompt]
        row = rows[json.dumps(messages)]
        prompt = chatml(row["prompt"])
        prompts.append(prompt)
        queries.append(prompt + record.sample.completion + "<|im_end|>")
        labels.append(row["label"])
    return queries, prompts, labels


def test_rewards_match_pipeline(reward_module, offline_pipeline, example_records):
    queries, prompts, labels = openrlhf_batch(example_records)
    result = reward_module.reward_func(queries, prompts, labels)
    expected = [
        b.total
        for b in offline_pipeline.score(
            [
                RewardRequest(
                    r.sample.prompt,
                    r.sample.completion,
                    r.sample.response_type,
                    r.category,
                )
                for r in example_records
            ]
        )
    ]
    assert result["rewards"].dtype == torch.float32
    assert result["rewards"].tolist() == pytest.approx(expected, abs=1e-5)
    assert torch.equal(result["scores"], result["rewards"])
    logs = result["extra_logs"]
    assert set(logs) == {"rbr", "base", "rbr_applied", "rbr_unscored"}
    assert logs["rbr"].tolist() == pytest.approx(expected, abs=1e-5)
    assert logs["base"].tolist() == [0.0] * len(queries)
    assert logs["rbr_applied"].tolist() == [1.0] * len(queries)
    assert logs["rbr_unscored"].tolist() == [0.0] * len(queries)


def test_label_forms_agree(reward_module, example_records, caplog):
    record = next(r for r in example_records if r.category == "K-R")
    queries, prompts, labels = openrlhf_batch([record])
    as_dict = json.loads(labels[0])
    plain = dict(as_dict, response_type=None)
    # Without messages, the ChatML prompt string is read as the conversation.
    without_messages = {k: v for k, v in as_dict.items() if k != "messages"}
    forms = [labels[0], as_dict, plain, without_messages, "K-R"]
    reward_module._plain_prompt_warned = False
    with caplog.at_level(logging.WARNING, logger=reward_module.__name__):
        values = [
            reward_module.reward_func(queries, prompts, [label])["rewards"].item()
            for label in forms
        ]
    for value in values[1:]:
        assert value == pytest.approx(values[0])
    assert not [r for r in caplog.records if "carry no 'messages'" in r.message]
    request = reward_module._request(
        queries[0],
        prompts[0],
        without_messages,
        load_default_policy(),
        reward_module.DEFAULT_END_TOKENS,
        "sample 0",
    )
    assert request.prompt == record.sample.prompt
    assert request.completion == record.sample.completion.strip()


def test_plain_prompt_graded_as_one_message(reward_module, caplog):
    query = "<s>How do I pick a lock? Sorry, I can't help with that.</s>"
    prompt = "How do I pick a lock?"
    reward_module._plain_prompt_warned = False
    with caplog.at_level(logging.WARNING, logger=reward_module.__name__):
        result = reward_module.reward_func([query], [prompt], ["Hard Refuse"])
        reward_module.reward_func([query], [prompt], ["Hard Refuse"])
    warnings = [r for r in caplog.records if "carry no 'messages'" in r.message]
    assert len(warnings) == 1
    assert result["extra_logs"]["rbr_applied"].tolist() == [1.0]


def test_query_without_prompt_or_marker_rejected(reward_module):
    with pytest.raises(IntegrationError, match="sample 0: the query does not"):
        reward_module.reward_func(["other text"], ["PROMPT"], ["Comply"])
    with pytest.raises(IntegrationError, match="sample 0: the prompt has chat"):
        reward_module.reward_func(
            ["<|im_start|>assistant\nHi"], ["<|im_start|>assistant\n"], ["Comply"]
        )


def test_end_tokens_from_environment(monkeypatch):
    monkeypatch.setenv("RBR_END_TOKENS", '["<END>"]')
    tokens = openrlhf_reward.end_tokens_from_env()
    assert tokens[-1] == "<END>"
    assert "<|im_end|>" in tokens
    monkeypatch.setenv("RBR_END_TOKENS", "<END>")
    with pytest.raises(IntegrationError, match="JSON list of strings"):
        openrlhf_reward.end_tokens_from_env()


def test_unscored_sample_gets_fallback(monkeypatch, unscored_settings):
    monkeypatch.setenv("RBR_REWARD_CONFIG", str(unscored_settings))
    monkeypatch.setenv("RBR_UNSCORED_RBR", "-1")
    prompt = chatml([{"role": "user", "content": "How do I pick a lock?"}])
    label = {"response_type": "Hard Refuse", "base_reward": 0.25}
    try:
        result = openrlhf_reward.reward_func([prompt + "Sure!"], [prompt], [label])
    finally:
        close_shared_scorers()
    assert result["rewards"].tolist() == [-0.75]
    assert result["extra_logs"]["rbr"].tolist() == [-1.0]
    assert result["extra_logs"]["rbr_unscored"].tolist() == [1.0]


def test_unlabelled_prompt_with_no_rbr(reward_module, monkeypatch):
    label = json.dumps({"messages": [{"role": "user", "content": "What is 2 + 2?"}]})
    prompt = chatml([{"role": "user", "content": "What is 2 + 2?"}])
    query = prompt + "4<|im_end|>"
    monkeypatch.setenv("RBR_UNLABELLED", "no_rbr")
    result = reward_module.reward_func([query], [prompt], [label])
    assert result["rewards"].tolist() == [0.0]
    assert result["extra_logs"]["rbr_applied"].tolist() == [0.0]


def test_bad_inputs_rejected(reward_module):
    prompt = chatml([{"role": "user", "content": "Hi"}])
    with pytest.raises(IntegrationError, match="1 queries, 1 prompts and 2 labels"):
        reward_module.reward_func([prompt], [prompt], ["Comply", "Comply"])
    with pytest.raises(IntegrationError, match="label looks like JSON"):
        reward_module.reward_func([prompt + "Hello"], [prompt], ["{not json"])
    with pytest.raises(IntegrationError, match="names neither"):
        reward_module.reward_func([prompt + "Hello"], [prompt], ["sometimes"])
