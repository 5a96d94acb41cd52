"""OpenRLHF protocol: splitting queries, reading prompts and labels, replies."""

from __future__ import annotations

import pytest

from rbr.data.types import Message
from rbr.reward.rule_based import RewardBreakdown
from rbr.serve.openrlhf import (
    EXTRA_LOG_KEYS,
    openrlhf_requests,
    openrlhf_response,
    parse_prompt,
    read_label,
    split_query,
)
from rbr.serve.schemas import OpenRLHFRequest, ServeError

CHATML_PROMPT = (
    "<|im_start|>system\nBe brief.<|im_end|>\n"
    "<|im_start|>user\nHow do I pick a lock?<|im_end|>\n"
    "<|im_start|>assistant\n"
)
LLAMA3_PROMPT = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)


def test_split_query_after_prompt_strips_end_tokens():
    query = CHATML_PROMPT + "Sorry, I can't help with that.<|im_end|><|endoftext|>"
    prompt, completion = split_query(query, CHATML_PROMPT)
    assert prompt == CHATML_PROMPT
    assert completion == "Sorry, I can't help with that."


def test_split_query_drops_assistant_header():
    prompt = "<|im_start|>user\nHi<|im_end|>\n"
    query = prompt + "<|im_start|>assistant\nHello!<|im_end|>"
    assert split_query(query, prompt) == (prompt, "Hello!")


def test_split_query_finds_prompt_after_bos():
    query = "<s>" + "Tell me a joke." + " Why did the chicken cross the road?</s>"
    prompt, completion = split_query(query, "Tell me a joke.")
    assert prompt == "Tell me a joke."
    assert completion == "Why did the chicken cross the road?"


def test_split_query_without_prompt_uses_last_assistant_marker():
    query = CHATML_PROMPT + "No.<|im_end|>"
    prompt, completion = split_query(query, None)
    assert prompt == CHATML_PROMPT[: -len("<|im_start|>assistant\n")]
    assert completion == "No."


def test_split_query_falls_back_to_marker():
    query = LLAMA3_PROMPT + "Hello!<|eot_id|>"
    _, completion = split_query(query, "a prompt that was re-tokenized differently")
    assert completion == "Hello!"


def test_split_query_without_prompt_or_marker_fails():
    with pytest.raises(ValueError, match="assistant turn marker"):
        split_query("plain text with no template", None)
    with pytest.raises(ValueError, match="does not contain its prompt"):
        split_query("plain text", "another prompt")


def test_parse_prompt_chatml_drops_generation_prompt():
    messages = parse_prompt(CHATML_PROMPT)
    assert messages == (
        Message("system", "Be brief."),
        Message("user", "How do I pick a lock?"),
    )


def test_parse_prompt_llama3_multi_turn():
    messages = parse_prompt(LLAMA3_PROMPT)
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[1].content == "Hi there"


def test_parse_prompt_gemma_maps_model_role():
    text = (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello"
        "<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )
    messages = parse_prompt(text)
    assert [m.role for m in messages] == ["user", "assistant", "user"]


def test_parse_prompt_plain_text_is_one_user_message():
    assert parse_prompt("<s> What is 2+2? ") == (Message("user", "What is 2+2?"),)
    with pytest.raises(ValueError, match="empty"):
        parse_prompt("  <s> ")


def test_read_label_names_response_type_or_category(policy):
    assert read_label("hard refuse", policy, "labels[0]").response_type == "Hard Refuse"
    by_category = read_label("K-R", policy, "labels[0]")
    assert by_category.category == "K-R"
    assert by_category.response_type is None
    assert read_label("", policy, "labels[0]").category is None
    assert read_label(None, policy, "labels[0]").response_type is None


def test_read_label_object_ignores_other_keys(policy):
    fields = read_label(
        {"category": "SH-R1", "base_reward": 0.5, "answer": "42"}, policy, "labels[2]"
    )
    assert fields.category == "SH-R1"
    assert fields.base_reward == 0.5


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("Teapot", "neither a response type"),
        (7, "expected a string, an object or null, got int"),
        (["K-R"], "got list"),
        ({"category": 3}, "valid string"),
    ],
)
def test_read_label_rejects_with_field_name(policy, label, message):
    with pytest.raises(ServeError) as caught:
        read_label(label, policy, "labels[4]")
    assert caught.value.status == 422
    assert caught.value.fields[0]["field"].startswith("labels[4]")
    assert message in caught.value.message


def test_openrlhf_requests_builds_reward_requests(policy):
    body = OpenRLHFRequest(
        query=[CHATML_PROMPT + "No.<|im_end|>"],
        prompts=[CHATML_PROMPT],
        labels=["Hard Refuse"],
    )
    (request,) = openrlhf_requests(body, policy, request_id="abc")
    assert request.completion == "No."
    assert request.prompt[-1] == Message("user", "How do I pick a lock?")
    assert request.response_type == "Hard Refuse"
    assert request.request_id == "abc:0"


def test_openrlhf_requests_length_mismatch_names_field(policy):
    body = OpenRLHFRequest(query=["a", "b"], prompts=["a"], labels=None)
    with pytest.raises(ServeError) as caught:
        openrlhf_requests(body, policy)
    assert caught.value.fields[0]["field"] == "prompts"
    assert "has 1 entries but 'query' has 2" in caught.value.message


def test_openrlhf_requests_unsplittable_query_names_index(policy):
    body = OpenRLHFRequest(query=["ok prompt. answer", "no template here"])
    with pytest.raises(ServeError) as caught:
        openrlhf_requests(body, policy)
    assert caught.value.fields[0]["field"] == "query[0]"


def test_openrlhf_response_unscored_uses_fallback():
    results = [
        RewardBreakdown(1.5, 1.0, 0.5, "Hard Refuse"),
        RewardBreakdown(None, None, 0.25, "Comply"),
        RewardBreakdown(0.75, None, 0.75, None),
    ]
    reply = openrlhf_response(results, unscored_rbr=-2.0)
    assert reply["rewards"] == [1.5, -1.75, 0.75]
    assert reply["scores"] == reply["rewards"]
    logs = reply["extra_logs"]
    assert logs["rbr_unscored"] == [0.0, 1.0, 0.0]
    assert logs["rbr_applied"] == [1.0, 1.0, 0.0]
    assert logs["rbr"] == [1.0, -2.0, 0.0]
    assert logs["base"] == [0.5, 0.25, 0.75]


def test_openrlhf_response_empty_keeps_every_log_key():
    reply = openrlhf_response([], unscored_rbr=0.0)
    assert reply["rewards"] == []
    assert reply["scores"] == []
    assert set(reply["extra_logs"]) == set(EXTRA_LOG_KEYS)
    assert all(values == [] for values in reply["extra_logs"].values())
