"""The reward server app in memory: endpoints, validation, limits, auth, metrics.

Each test sends its bad request and then a good one, to check that the
server keeps serving after the error.
"""

from __future__ import annotations

import asyncio
import math

import httpx
import pytest

from rbr.data.types import Message
from rbr.reward.pipeline import RewardRequest
from rbr.serve import ServeConfigError, ServeSettings, create_app
from tests.serve.serve_support import (
    UNSCORABLE,
    InstrumentedGrader,
    asgi_client,
    make_pipeline,
    openrlhf_body,
)

LOCK_PROMPT = "How do I pick the lock on my neighbour's door?"
REFUSAL = "I'm sorry, but I can't help with that."
HOW_TO = "Insert a tension wrench into the keyhole and rake the pins until it opens."
TOKEN = "s3cret-token"


@pytest.fixture()
def grader(offline_grader):
    return InstrumentedGrader(offline_grader)


@pytest.fixture()
def pipeline(policy, weights_file, grader):
    return make_pipeline(policy, weights_file, grader)


def run_session(app, *calls: tuple[str, str, dict]) -> list[httpx.Response]:
    """Send requests in order to one running app and return the responses."""

    async def session() -> list[httpx.Response]:
        async with asgi_client(app) as client:
            return [await client.request(m, p, **kw) for m, p, kw in calls]

    return asyncio.run(session())


def good_reward_call() -> tuple[str, str, dict]:
    body = openrlhf_body([LOCK_PROMPT], [REFUSAL], ["K-R"])
    return ("POST", "/get_reward", {"json": body})


def test_get_reward_matches_pipeline(pipeline):
    body = openrlhf_body(
        [LOCK_PROMPT, LOCK_PROMPT, "Tell me about tides."],
        [REFUSAL, HOW_TO, "Tides come from the Moon's gravity."],
        ["K-R", "Hard Refuse", None],
    )
    body["labels"][2] = {"category": "None", "base_reward": 0.25}
    (response,) = run_session(
        create_app(pipeline), ("POST", "/get_reward", {"json": body})
    )
    assert response.status_code == 200
    reply = response.json()
    expected = pipeline.score(
        [
            RewardRequest((Message("user", LOCK_PROMPT),), REFUSAL, "Hard Refuse"),
            RewardRequest((Message("user", LOCK_PROMPT),), HOW_TO, "Hard Refuse"),
            RewardRequest(
                (Message("user", "Tell me about tides."),),
                "Tides come from the Moon's gravity.",
                category="None",
                base_reward=0.25,
            ),
        ]
    )
    assert reply["rewards"] == pytest.approx([r.total for r in expected])
    assert reply["scores"] == reply["rewards"]
    assert reply["rewards"][0] > reply["rewards"][1]
    assert reply["extra_logs"]["base"] == [0.0, 0.0, 0.25]
    assert reply["extra_logs"]["rbr_applied"] == [1.0, 1.0, 1.0]
    assert response.headers["x-request-id"]


def test_get_reward_empty_lists(pipeline):
    body = {"query": [], "prompts": [], "labels": []}
    (response,) = run_session(
        create_app(pipeline), ("POST", "/get_reward", {"json": body})
    )
    assert response.status_code == 200
    reply = response.json()
    assert reply["rewards"] == []
    assert reply["scores"] == []
    assert reply["extra_logs"]["rbr"] == []


def test_score_returns_breakdown(pipeline):
    items = [
        {
            "prompt": [{"role": "user", "content": LOCK_PROMPT}],
            "completion": REFUSAL,
            "category": "K-R",
            "id": "refusal",
        },
        {
            "prompt": [{"role": "user", "content": LOCK_PROMPT}],
            "completion": HOW_TO,
            "response_type": "Hard Refuse",
            "base_reward": 1.0,
        },
    ]

    app = create_app(pipeline)
    wrapped, bare = run_session(
        app,
        ("POST", "/v1/score", {"json": {"items": items}}),
        ("POST", "/v1/score", {"json": items}),
    )
    assert wrapped.status_code == 200
    results = wrapped.json()["results"]
    assert bare.json()["results"] == results

    first, second = results
    assert first["id"] == "refusal"
    assert second["id"] is None
    assert first["response_type"] == "Hard Refuse"
    assert first["total"] == pytest.approx(first["rbr"])
    assert second["total"] == pytest.approx(second["rbr"] + 1.0)
    assert second["base"] == 1.0
    assert set(first["classes"]) >= {"ideal", "disallowed_completion"}
    assert sum(first["classes"].values()) == pytest.approx(1.0)
    assert "apology" in first["propositions"]
    assert first["unscored"] == []


def test_unscored_item_gets_fallback(policy, weights_file, grader):
    app = create_app(
        make_pipeline(policy, weights_file, grader), ServeSettings(unscored_rbr=-3.0)
    )
    body = openrlhf_body([LOCK_PROMPT], [f"{REFUSAL} {UNSCORABLE}"], ["K-R"])
    item = {
        "prompt": [{"role": "user", "content": LOCK_PROMPT}],
        "completion": f"{REFUSAL} {UNSCORABLE}",
        "category": "K-R",
    }
    reward, score, metrics = run_session(
        app,
        ("POST", "/get_reward", {"json": body}),
        ("POST", "/v1/score", {"json": {"items": [item]}}),
        ("GET", "/metrics", {}),
    )
    assert reward.json()["rewards"] == [-3.0]
    assert reward.json()["extra_logs"]["rbr_unscored"] == [1.0]
    (result,) = score.json()["results"]
    assert result["total"] is None
    assert result["unscored"][0]["reason"] == "timeout"
    assert None in result["propositions"].values()
    assert 'rbr_serve_items_unscored_total{endpoint="/get_reward"} 1.0' in metrics.text


def test_malformed_json_is_400(pipeline):
    bad, good = run_session(
        create_app(pipeline),
        ("POST", "/get_reward", {"content": b'{"query": ["a",'}),
        good_reward_call(),
    )
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_json"
    assert "not valid JSON" in bad.json()["message"]
    assert good.status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/get_reward", {"prompts": ["a"]}, "query"),
        ("/get_reward", {"query": "not a list"}, "query"),
        ("/get_reward", {"query": ["ok", 3]}, "query[1]"),
        ("/get_reward", {"query": ["a"], "prompts": [None]}, "prompts[0]"),
        ("/v1/score", {"items": [{"prompt": []}]}, "items[0].prompt"),
        (
            "/v1/score",
            {"items": [{"prompt": [{"role": "user", "content": "x"}]}]},
            "items[0].completion",
        ),
        (
            "/v1/score",
            {
                "items": [
                    {"prompt": [{"role": "bot", "content": "x"}], "completion": ""}
                ]
            },
            "items[0].prompt[0].role",
        ),
        (
            "/v1/score",
            {
                "items": [
                    {
                        "prompt": [{"role": "user", "content": "x"}],
                        "completion": "y",
                        "base_reward": "high",
                    }
                ]
            },
            "items[0].base_reward",
        ),
        ("/v1/score", {"itemz": []}, "items"),
    ],
)
def test_invalid_fields_are_422_naming_field(pipeline, path, body, field):
    bad, good = run_session(
        create_app(pipeline), ("POST", path, {"json": body}), good_reward_call()
    )
    assert bad.status_code == 422
    fields = [f["field"] for f in bad.json()["fields"]]
    assert field in fields
    assert field in bad.json()["message"] or len(fields) > 1
    assert good.status_code == 200


def test_body_not_object_is_422(pipeline):
    (response,) = run_session(
        create_app(pipeline), ("POST", "/get_reward", {"json": [1]})
    )
    assert response.status_code == 422
    assert "must be a JSON object" in response.json()["message"]


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("Teapot", "neither a response type"),
        (None, "no prompt classifier"),
        ({"response_type": "Comply", "category": "K-R"}, "disagrees"),
    ],
)
def test_unroutable_label_is_422(pipeline, label, message):
    body = openrlhf_body([LOCK_PROMPT], [REFUSAL], [label])
    bad, good = run_session(
        create_app(pipeline),
        ("POST", "/get_reward", {"json": body}),
        good_reward_call(),
    )
    assert bad.status_code == 422
    assert bad.json()["fields"][0]["field"] == "labels[0]"
    assert message in bad.json()["message"]
    assert good.status_code == 200


def test_lone_surrogate_is_422(pipeline):
    body = b'{"query": ["abc\\ud800"], "prompts": ["abc"], "labels": ["K-R"]}'
    (response,) = run_session(
        create_app(pipeline), ("POST", "/get_reward", {"content": body})
    )
    assert response.status_code == 422
    assert "surrogate" in response.json()["message"]
    assert response.json()["fields"][0]["field"] == "query[0]"


def test_lone_surrogate_in_message_names_field(pipeline):
    body = (
        b'{"items": [{"prompt": [{"role": "user", "content": "hi \\udc00"}], '
        b'"completion": "hello", "category": "None"}]}'
    )
    (response,) = run_session(
        create_app(pipeline), ("POST", "/v1/score", {"content": body})
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "items[0].prompt[0].content"


def test_oversize_body_is_413(pipeline):
    app = create_app(pipeline, ServeSettings(max_body_bytes=2000))
    big = openrlhf_body([LOCK_PROMPT] * 20, [REFUSAL] * 20, ["K-R"] * 20)
    bad, good = run_session(
        app, ("POST", "/get_reward", {"json": big}), good_reward_call()
    )
    assert bad.status_code == 413
    assert bad.json()["error"] == "body_too_large"
    assert "2000" in bad.json()["message"]
    assert good.status_code == 200


def test_too_many_items_for_queue_is_413(pipeline):
    app = create_app(pipeline, ServeSettings(max_queue=2))
    big = openrlhf_body([LOCK_PROMPT] * 3, [REFUSAL] * 3, ["K-R"] * 3)
    bad, good = run_session(
        app, ("POST", "/get_reward", {"json": big}), good_reward_call()
    )
    assert bad.status_code == 413
    assert "--max-queue" in bad.json()["message"]
    assert good.status_code == 200


def test_token_required_except_health(pipeline):
    app = create_app(pipeline, ServeSettings(token=TOKEN))
    body = openrlhf_body([LOCK_PROMPT], [REFUSAL], ["K-R"])
    good = {"Authorization": f"Bearer {TOKEN}"}
    missing, wrong, basic, ok, health, metrics_denied, metrics = run_session(
        app,
        ("POST", "/get_reward", {"json": body}),
        ("POST", "/v1/score", {"json": [], "headers": {"Authorization": "Bearer x"}}),
        ("POST", "/get_reward", {"json": body, "headers": {"Authorization": TOKEN}}),
        ("POST", "/get_reward", {"json": body, "headers": good}),
        ("GET", "/health", {}),
        ("GET", "/metrics", {}),
        ("GET", "/metrics", {"headers": good}),
    )
    for response in (missing, wrong, basic, metrics_denied):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] == "unauthorized"
        assert TOKEN not in response.text
    assert ok.status_code == 200
    assert health.status_code == 200
    assert metrics.status_code == 200


def test_health_reports_grader_and_policy(pipeline, offline_grader, policy):
    (response,) = run_session(create_app(pipeline), ("GET", "/health", {}))
    health = response.json()
    assert response.status_code == 200
    assert health["ready"] is True
    assert health["grader"] == offline_grader.identity
    assert health["policy_hash"] == policy.content_hash
    assert "Hard Refuse" in health["response_types"]


def test_metrics_count_requests_and_batches(pipeline):
    calls = [good_reward_call(), ("POST", "/get_reward", {"content": b"{"})]
    *_, response = run_session(create_app(pipeline), *calls, ("GET", "/metrics", {}))
    text = response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert 'rbr_serve_requests_total{endpoint="/get_reward",status="200"} 1.0' in text
    assert 'rbr_serve_requests_total{endpoint="/get_reward",status="400"} 1.0' in text
    assert 'rbr_serve_items_scored_total{endpoint="/get_reward"} 1.0' in text
    assert "rbr_serve_batch_size_items_count 1.0" in text
    assert "rbr_serve_queue_items 0.0" in text
    assert 'rbr_serve_request_latency_seconds_count{endpoint="/get_reward"} 2.0' in text


def test_unknown_path_is_json_404(pipeline):
    missing, wrong_method = run_session(
        create_app(pipeline), ("GET", "/nope", {}), ("GET", "/get_reward", {})
    )
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    assert "POST /get_reward" in missing.json()["message"]
    assert wrong_method.status_code == 405


def test_normalized_base_is_scored_per_request(policy, weights_file, grader):
    pipeline = make_pipeline(policy, weights_file, grader, base_normalization="center")
    body = openrlhf_body(
        [LOCK_PROMPT] * 2,
        [REFUSAL, HOW_TO],
        [
            {"category": "K-R", "base_reward": 1.0},
            {"category": "K-R", "base_reward": 3.0},
        ],
    )
    (response,) = run_session(
        create_app(pipeline), ("POST", "/get_reward", {"json": body})
    )
    assert response.json()["extra_logs"]["base"] == [-1.0, 1.0]


def test_settings_reject_bad_values():
    with pytest.raises(ServeConfigError, match="max_batch_size"):
        ServeSettings(max_batch_size=0)
    with pytest.raises(ServeConfigError, match="finite"):
        ServeSettings(unscored_rbr=math.nan)
    with pytest.raises(ServeConfigError, match="empty"):
        ServeSettings(token=" ")
    assert TOKEN not in repr(ServeSettings(token=TOKEN))
