"""Base reward models: a tiny local reward model and a real HTTP endpoint."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rbr.data.types import Message, Sample
from rbr.graders.ratelimit import RequestLimits
from rbr.reward.base_models import (
    BaseRewardError,
    HttpReward,
    format_plain,
    make_base_reward,
    render_prompt,
    render_text,
)
from rbr.reward.config import RewardConfigError

SAMPLES = [
    Sample((Message("user", "How do I bake bread?"),), "Mix flour and water."),
    Sample(
        (
            Message("system", "You are a helpful assistant."),
            Message("user", "Tell me a joke about cats, a long one please."),
        ),
        "Why did the cat sit on the computer? To keep an eye on the mouse.",
    ),
    Sample(
        (
            Message("user", "I feel awful today."),
            Message("assistant", "I'm sorry to hear that. What happened?"),
            Message("user", "Everything went wrong at work."),
        ),
        "That sounds hard.",
    ),
]


def test_plain_format_layout():
    text = format_plain(SAMPLES[2].prompt, "That sounds hard.")
    assert text == (
        "User: I feel awful today.\n\n"
        "Assistant: I'm sorry to hear that. What happened?\n\n"
        "User: Everything went wrong at work.\n\n"
        "Assistant: That sounds hard."
    )
    assert render_text(SAMPLES[2]) == text
    assert render_prompt(SAMPLES[2].prompt).endswith("work.\n\nAssistant:")


# ---------------------------------------------------------------- factory


def test_factory_none_and_unknown_kind():
    assert make_base_reward({"kind": "none"}) is None
    assert make_base_reward({}) is None
    with pytest.raises(RewardConfigError, match="base_reward.kind.*'magic'.*local"):
        make_base_reward({"kind": "magic"})


def test_factory_reports_missing_and_unknown_options():
    with pytest.raises(RewardConfigError, match="base_reward.url: missing"):
        make_base_reward({"kind": "http"})
    with pytest.raises(RewardConfigError, match="base_reward.model_path: missing"):
        make_base_reward({"kind": "local"})
    with pytest.raises(RewardConfigError, match="base_reward.model: unknown option"):
        make_base_reward({"kind": "http", "url": "http://127.0.0.1:1/", "model": "x"})
    with pytest.raises(RewardConfigError, match="base_reward.url: unknown option"):
        make_base_reward({"kind": "none", "url": "http://127.0.0.1:1/"})


def test_factory_leaves_spec_unchanged():
    spec = {"kind": "none"}
    make_base_reward(spec)
    assert spec == {"kind": "none"}


# ---------------------------------------------------------------- HTTP


class RewardServer:
    """A reward endpoint on 127.0.0.1 that replies by a scripted function.

    ``reply(body, attempt)`` returns ``(status, payload)``; a payload of type
    bytes is sent as is, anything else as JSON. Every request body is kept.
    """

    def __init__(self, reply: Callable[[dict[str, Any], int], tuple[int, Any]]):
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Keep test output quiet."""

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                server.bodies.append(body)
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                status, payload = reply(body, len(server.bodies))
                data = payload if isinstance(payload, bytes) else json.dumps(payload)
                data = data if isinstance(data, bytes) else data.encode()
                # The client may have stopped waiting, as the timeout test intends.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/get_reward"

    def __enter__(self) -> RewardServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def fast_backoff(limits: RequestLimits, **changes: Any) -> RequestLimits:
    """Return ``limits`` with retry delays of about 10 ms."""
    return replace(limits, backoff_base_s=0.01, backoff_max_s=0.02, **changes)


def length_rewards(body: dict[str, Any], attempt: int) -> tuple[int, Any]:
    """Reward each query by its length in characters."""
    return 200, {"rewards": [float(len(q)) for q in body["query"]]}


@pytest.fixture
def server() -> Iterator[RewardServer]:
    with RewardServer(length_rewards) as running:
        yield running


def test_http_openrlhf_payload_and_batches(server):
    with HttpReward(url=server.url, batch_size=2, api_key="secret") as reward:
        scores = reward.score(SAMPLES)
    expected = [len(render_text(s)) for s in SAMPLES]
    np.testing.assert_array_equal(scores, expected)
    assert [len(b["query"]) for b in server.bodies] == [2, 1]
    assert server.bodies[0]["query"][0] == render_text(SAMPLES[0])
    assert server.bodies[0]["prompts"][0] == "User: How do I bake bread?\n\nAssistant:"
    assert server.headers[0]["authorization"] == "Bearer secret"


def test_http_messages_payload():
    def reply(body, attempt):
        return 200, {"scores": [len(m) for m in body["messages"]]}

    with RewardServer(reply) as running:
        with HttpReward(
            url=running.url, payload="messages", response_key="scores"
        ) as reward:
            scores = reward.score(SAMPLES)
        body = running.bodies[0]
    np.testing.assert_array_equal(scores, [2, 3, 4])
    assert body["messages"][0][-1] == {
        "role": "assistant",
        "content": "Mix flour and water.",
    }


def test_http_accepts_one_element_lists():
    def reply(body, attempt):
        return 200, {"rewards": [[0.5] for _ in body["query"]]}

    with RewardServer(reply) as running, HttpReward(url=running.url) as reward:
        scores = reward.score(SAMPLES[:2])
    np.testing.assert_array_equal(scores, [0.5, 0.5])


def test_http_retries_server_errors():
    def reply(body, attempt):
        if attempt < 3:
            return 503, {"error": "warming up"}
        return length_rewards(body, attempt)

    with RewardServer(reply) as running:
        with HttpReward(url=running.url, max_retries=2) as reward:
            reward.limits = fast_backoff(reward.limits)
            scores = reward.score(SAMPLES[:1])
        attempts = len(running.bodies)
    assert attempts == 3
    assert scores[0] == len(render_text(SAMPLES[0]))


def test_http_gives_up_naming_url():
    def reply(body, attempt):
        return 500, {"error": "broken"}

    with RewardServer(reply) as running, HttpReward(url=running.url) as reward:
        reward.limits = fast_backoff(reward.limits, max_retries=1)
        with pytest.raises(BaseRewardError, match=f"{running.url}.*2 attempts.*500"):
            reward.score(SAMPLES[:1])


def test_http_client_error_is_not_retried():
    def reply(body, attempt):
        return 404, {"detail": "Not Found"}

    with RewardServer(reply) as running:
        with (
            HttpReward(url=running.url) as reward,
            pytest.raises(BaseRewardError, match="HTTP 404.*check the URL"),
        ):
            reward.score(SAMPLES[:1])
        assert len(running.bodies) == 1


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"values": [1.0]}, "without a list under 'rewards'"),
        ({"rewards": [1.0, 2.0]}, "returned 2 scores for 1 items"),
        ({"rewards": ["high"]}, "not a number"),
    ],
)
def test_http_bad_replies(payload, message):
    with (
        RewardServer(lambda body, attempt: (200, payload)) as running,
        HttpReward(url=running.url) as reward,
        pytest.raises(BaseRewardError, match=message),
    ):
        reward.score(SAMPLES[:1])


def test_http_timeout_names_url():
    def reply(body, attempt):
        time.sleep(0.5)
        return length_rewards(body, attempt)

    with RewardServer(reply) as running:
        reward = HttpReward(url=running.url, timeout_s=0.1, max_retries=0)
        with reward, pytest.raises(BaseRewardError, match="no reply within"):
            reward.score(SAMPLES[:1])


def test_http_connection_refused():
    with RewardServer(length_rewards) as running:
        url = running.url
    reward = HttpReward(url=url, max_retries=0)
    with reward, pytest.raises(BaseRewardError, match=f"{url}.*connection failed"):
        reward.score(SAMPLES[:1])


def test_http_factory_builds_endpoint(server):
    reward = make_base_reward({"kind": "http", "url": server.url, "batch_size": 1})
    assert isinstance(reward, HttpReward)
    with reward:
        assert len(reward.score(SAMPLES)) == 3
    assert len(server.bodies) == 3


# ---------------------------------------------------------------- local model

LOCAL_EXTRA = "the local reward model needs torch and transformers: rbr[local]"


def save_reward_model(
    folder: Path, *, chat_template: str | None = None, num_labels: int = 1
) -> Path:
    """Save a tiny random Llama reward model and its tokenizer to ``folder``."""
    torch = pytest.importorskip("torch", reason=LOCAL_EXTRA)
    transformers = pytest.importorskip("transformers", reason=LOCAL_EXTRA)
    from tests.graders.tiny_models import tiny_config, train_tokenizer, wrap_tokenizer

    tokenizer = wrap_tokenizer(train_tokenizer(), chat_template=chat_template)
    config = tiny_config("llama", len(tokenizer))
    config.num_labels = num_labels
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def direct_scores(folder: Path, texts: list[str], *, special: bool) -> list[float]:
    """Score each text alone, without padding, by a plain forward pass."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    scores = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=special, return_tensors="pt")
        with torch.no_grad():
            scores.append(float(model(**ids).logits[0, 0]))
    return scores


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory) -> Path:
    return save_reward_model(tmp_path_factory.mktemp("plain_rm"))


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory) -> Path:
    from tests.graders.tiny_models import CHAT_TEMPLATE

    return save_reward_model(
        tmp_path_factory.mktemp("chat_rm"), chat_template=CHAT_TEMPLATE
    )


def test_local_plain_scores_match_forward(plain_model):
    reward = make_base_reward(
        {"kind": "local", "model_path": str(plain_model), "batch_size": 2}
    )
    scores = reward.score(SAMPLES)
    texts = [format_plain(s.prompt, s.completion) for s in SAMPLES]
    expected = direct_scores(plain_model, texts, special=True)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert len(set(np.round(scores, 4))) == 3


def test_local_chat_template_scores_match_forward(chat_model):
    from rbr.reward.base_local import LocalReward

    reward = LocalReward(chat_model, device="cpu", batch_size=3)
    scores = reward.score(SAMPLES)
    texts = [render_text(s, reward.tokenizer) for s in SAMPLES]
    assert texts[0].startswith("<|user|>\nHow do I bake bread?<|end|>\n<|assistant|>")
    expected = direct_scores(chat_model, texts, special=False)
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_local_truncates_from_left(plain_model):
    from rbr.reward.base_local import LocalReward

    reward = LocalReward(plain_model, device="cpu", max_length=12)
    long_sample = SAMPLES[1]
    ids = reward.encode(long_sample)
    full = reward.tokenizer(format_plain(long_sample.prompt, long_sample.completion))
    assert len(full.input_ids) > 12
    assert ids == list(full.input_ids[-12:])
    import torch

    with torch.no_grad():
        expected = float(reward.model(input_ids=torch.tensor([ids])).logits[0, 0])
    assert reward.score([long_sample])[0] == pytest.approx(expected, abs=1e-5)


def test_local_rejects_several_outputs(tmp_path):
    from rbr.reward.base_local import LocalReward

    folder = save_reward_model(tmp_path / "two", num_labels=2)
    with pytest.raises(BaseRewardError, match="2 outputs.*num_labels=1"):
        LocalReward(folder, device="cpu")


def test_local_missing_folder(tmp_path):
    pytest.importorskip("torch", reason=LOCAL_EXTRA)
    from rbr.reward.base_local import LocalReward

    with pytest.raises(BaseRewardError, match="not found or without config.json"):
        LocalReward(tmp_path / "absent")


def test_local_closed_model_raises(plain_model):
    from rbr.reward.base_local import LocalReward

    reward = LocalReward(plain_model, device="cpu")
    reward.close()
    with pytest.raises(BaseRewardError, match="was closed"):
        reward.score(SAMPLES[:1])


def test_http_chat_template_from_tokenizer(chat_model, server):
    with HttpReward(url=server.url, tokenizer_path=chat_model) as reward:
        reward.score(SAMPLES[:1])
    body = server.bodies[0]
    assert body["query"][0] == (
        "<|user|>\nHow do I bake bread?<|end|>\n"
        "<|assistant|>\nMix flour and water.<|end|>\n"
    )
    assert (
        body["prompts"][0] == "<|user|>\nHow do I bake bread?<|end|>\n<|assistant|>\n"
    )


def test_http_non_finite_score_names_url_and_sample():
    def reply(body, attempt):
        return 200, b'{"rewards": [0.5, NaN]}'

    samples = [replace(SAMPLES[0], sample_id="a"), replace(SAMPLES[1], sample_id="b")]
    with (
        RewardServer(reply) as running,
        HttpReward(url=running.url) as reward,
        pytest.raises(BaseRewardError) as caught,
    ):
        reward.score(samples)
    message = str(caught.value)
    assert running.url in message
    assert "sample 'b'" in message
    assert "nan" in message
