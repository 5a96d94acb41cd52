"""The generation client against scripted servers on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest

from rbr.graders.ratelimit import RequestLimits
from rbr.policy import load_default_policy
from rbr.synth import ChatReply, ChatSampler, RequestFailure, SynthError
from tests.graders.fake_openai_server import BAD_JSON, Action, FakeOpenAIServer
from tests.synth.synth_server import BehaviorServer, Script

FAST = RequestLimits(max_retries=2, backoff_base_s=0.01, backoff_max_s=0.02)
MESSAGES = [
    {"role": "system", "content": "- apology (yes): Apologize."},
    {"role": "user", "content": "sample-t: hello"},
]


def sample_once(sampler: ChatSampler) -> ChatReply | RequestFailure:
    async def run() -> ChatReply | RequestFailure:
        async with sampler.session() as client:
            return await sampler.sample(client, MESSAGES)

    return asyncio.run(run())


def sample_twice(sampler: ChatSampler) -> list[ChatReply | RequestFailure]:
    async def run() -> list[ChatReply | RequestFailure]:
        async with sampler.session() as client:
            return [await sampler.sample(client, MESSAGES) for _ in range(2)]

    return asyncio.run(run())


def test_reply_follows_instructions():
    with BehaviorServer(load_default_policy()) as server:
        sampler = ChatSampler(model="m", base_url=server.url, temperature=0.7)
        reply = sample_once(sampler)
        body = server.requests("generate")[0].body
    assert reply == ChatReply("I'm sorry.", "stop")
    assert body["temperature"] == 0.7
    assert body["max_tokens"] == 1024
    assert body["messages"] == MESSAGES
    assert sampler.stats.requests_sent == 1


def test_server_error_is_retried():
    script = Script(fail_first={"t": 1})
    with BehaviorServer(load_default_policy(), script=script) as server:
        sampler = ChatSampler(model="m", base_url=server.url, limits=FAST)
        reply = sample_once(sampler)
    assert isinstance(reply, ChatReply)
    assert sampler.stats.requests_sent == 2
    assert sampler.stats.retries == {"server_error": 1}


def test_retries_run_out():
    script = Script(fail_first={"t": 10})
    with BehaviorServer(load_default_policy(), script=script) as server:
        sampler = ChatSampler(model="m", base_url=server.url, limits=FAST)
        reply = sample_once(sampler)
    assert isinstance(reply, RequestFailure)
    assert reply.reason == "server_error"
    assert "HTTP 500" in reply.detail
    assert sampler.stats.requests_sent == 3
    assert sampler.stats.failures == {"server_error": 1}


def test_rejected_key_stops_the_run():
    script = Script(reject_after=0)
    with BehaviorServer(load_default_policy(), script=script) as server:
        sampler = ChatSampler(model="m", base_url=server.url, limits=FAST)
        with pytest.raises(SynthError, match="HTTP 401.*Check the API key"):
            sample_once(sampler)


def test_unknown_path_stops_the_run():
    with BehaviorServer(load_default_policy()) as server:
        url = server.url.replace("/v1", "/v2")
        sampler = ChatSampler(model="m", base_url=url, limits=FAST)
        with pytest.raises(SynthError, match="HTTP 404.*base URL"):
            sample_once(sampler)


def test_malformed_reply_is_retried():
    with FakeOpenAIServer([], script={("t", ""): [BAD_JSON]}) as server:
        sampler = ChatSampler(model="m", base_url=server.url, limits=FAST)
        reply = sample_once(sampler)
    assert isinstance(reply, ChatReply)
    assert sampler.stats.retries == {"malformed_reply": 1}


def test_bad_request_after_success_fails_one_item():
    bad = Action("status", status=400)
    with FakeOpenAIServer([], script={("t", ""): [Action(), bad]}) as server:
        sampler = ChatSampler(model="m", base_url=server.url, limits=FAST)
        first, second = sample_twice(sampler)
    assert isinstance(first, ChatReply)
    assert isinstance(second, RequestFailure)
    assert second.reason == "client_error"
    assert not second.retryable


def test_bad_first_request_stops_the_run():
    bad = Action("status", status=400)
    with FakeOpenAIServer([], script={("t", ""): [bad]}) as server:
        sampler = ChatSampler(model="m", base_url=server.url, limits=FAST)
        with pytest.raises(SynthError, match="rejected the first request"):
            sample_once(sampler)


def test_identity_names_sampling_settings():
    sampler = ChatSampler(
        model="helpful", base_url="http://127.0.0.1:9/v1", max_tokens=64
    )
    assert '"model": "helpful"' in sampler.identity
    assert '"max_tokens": 64' in sampler.identity
    assert '"temperature": 1.0' in sampler.identity


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": None}, "no generator model name"),
        ({"model": "m", "temperature": -1}, "temperature must be 0 or more"),
        ({"model": "m", "max_tokens": 0}, "max_tokens must be 1 or more"),
    ],
)
def test_invalid_options(options, message):
    with pytest.raises(SynthError, match=message):
        ChatSampler(base_url="http://127.0.0.1:9/v1", **options)
