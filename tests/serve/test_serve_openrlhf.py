"""OpenRLHF protocol of rbr serve: requests from queries and labels, replies."""

from __future__ import annotations

import pytest

from rbr.data.types import Message
from rbr.integrations.openrlhf_text import EXTRA_LOG_KEYS
from rbr.reward.rule_based import RewardBreakdown
from rbr.serve.openrlhf import openrlhf_requests, openrlhf_response, read_label
from rbr.serve.schemas import OpenRLHFRequest, ServeError
from tests.integrations.test_integration_openrlhf_text import CHATML_PROMPT


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
