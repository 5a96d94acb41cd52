"""Tests of the OpenAI-compatible grader against a scripted HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import socket
import time

import numpy as np
import pytest
from fake_openai_server import (
    BAD_JSON,
    DEFAULT_P_YES,
    DISCONNECT,
    MISSING_FIELD,
    NO_YES_NO,
    SERVER_ERROR,
    Action,
    FakeOpenAIServer,
    rate_limited,
    timeout,
)

from rbr.data.types import Message, Record, Sample
from rbr.errors import GraderError
from rbr.graders.base import Unscored
from rbr.graders.fewshot import FewShotPool
from rbr.graders.openai_compat import (
    OpenAICompatibleGrader,
    RequestFailure,
    ServerUnreachableError,
    connection_failure_limit,
    describe_stats,
    invalid_logprob,
    retry_delay,
    send_with_retries,
)
from rbr.graders.prompts import CHAT_SYSTEM_MESSAGE, build_prefix
from rbr.graders.ratelimit import (
    RateLimiter,
    RequestLimits,
    TokenBucket,
    backoff_delay,
    estimate_tokens,
    parse_retry_after,
)
from rbr.graders.replies import (
    MalformedReplyError,
    normalize_token,
    parse_chat_reply,
    parse_completion_reply,
    yes_probability,
)
from rbr.graders.runtime import GraderStats, StatsCounter
from rbr.policy.spec import Proposition

PROPOSITIONS = [
    # Each instruction names its proposition: the fake server finds the
    # proposition of a request by looking for its name in the prompt.
    Proposition(name="apology", instruction="apology: does the reply say sorry?"),
    Proposition(
        name="judgement", instruction="judgement: does the reply judge the user?"
    ),
    Proposition(
        name="disclaimer", instruction="disclaimer: does the reply add a warning?"
    ),
]
NAMES = [p.name for p in PROPOSITIONS]
FAST = RequestLimits(
    max_concurrency=4,
    timeout_s=0.5,
    max_retries=2,
    backoff_base_s=0.01,
    # Computed delays stay at 0.01 and 0.02 s with two retries. The higher
    # maximum lets the scripted Retry-After of 0.3 s through uncapped.
    backoff_max_s=0.5,
)
SLOW_REPLY_S = 1.5


def make_samples(count: int) -> list[Sample]:
    return [
        Sample(
            prompt=(Message("user", f"Request number {i}, please help."),),
            completion=f"Here is the reply for sample-{i}.",
            sample_id=f"s{i}",
        )
        for i in range(count)
    ]


def make_grader(server: FakeOpenAIServer, **options: object) -> OpenAICompatibleGrader:
    settings: dict[str, object] = {
        "model": "test-model",
        "base_url": server.url,
        "api_key": "test-key",
        "limits": FAST,
    }
    settings.update(options)
    return OpenAICompatibleGrader(**settings)  # type: ignore[arg-type]


@pytest.fixture
def server() -> FakeOpenAIServer:
    with FakeOpenAIServer(NAMES) as running:
        yield running


def test_chat_endpoint_exact_mass_ratio(server: FakeOpenAIServer) -> None:
    samples = make_samples(3)
    result = make_grader(server).grade(samples, PROPOSITIONS)
    assert result.propositions == tuple(NAMES)
    assert result.unscored == []
    for value in result.probabilities.flat:
        assert value == pytest.approx(DEFAULT_P_YES, abs=1e-12)
    assert len(server.requests) == 9


def test_chat_request_body_and_shared_prefix(server: FakeOpenAIServer) -> None:
    samples = make_samples(2)
    make_grader(server, top_logprobs=7).grade(samples, PROPOSITIONS)
    for request in server.requests:
        body = request.body
        assert request.path == "/v1/chat/completions"
        assert body["model"] == "test-model"
        assert body["max_tokens"] == 1
        assert body["temperature"] == 0
        assert body["logprobs"] is True
        assert body["top_logprobs"] == 7
        assert body["messages"][0] == {"role": "system", "content": CHAT_SYSTEM_MESSAGE}
        assert request.headers["authorization"] == "Bearer test-key"
        sample = samples[int(request.key[0])]
        user_text = body["messages"][1]["content"]
        assert user_text.startswith(build_prefix(sample))
        assert user_text.rstrip().endswith("Answer:")


def test_completions_endpoint_exact_mass_ratio(server: FakeOpenAIServer) -> None:
    result = make_grader(server, endpoint="completions", top_logprobs=5).grade(
        make_samples(2), PROPOSITIONS
    )
    assert result.unscored == []
    for value in result.probabilities.flat:
        assert value == pytest.approx(DEFAULT_P_YES, abs=1e-12)
    for request in server.requests:
        assert request.path == "/v1/completions"
        assert request.body["logprobs"] == 5
        assert request.body["max_tokens"] == 1
        assert "messages" not in request.body
        assert request.body["prompt"].startswith("You are grading")


def test_probability_from_custom_tokens() -> None:
    tops = {
        ("0", "apology"): [("no", math.log(0.9)), ("Yes.", math.log(0.05))],
        ("0", "judgement"): [("YES", math.log(0.4)), ("Sure", math.log(0.5))],
    }
    names = ["apology", "judgement"]
    with FakeOpenAIServer(names, top_for=lambda key: tops[key]) as server:
        result = make_grader(server).grade(make_samples(1), PROPOSITIONS[:2])
    assert result.probabilities[0, 0] == pytest.approx(0.05 / 0.95, abs=1e-12)
    assert result.probabilities[0, 1] == pytest.approx(1.0)


SCRIPT = {
    ("0", "apology"): [rate_limited("0.3"), SERVER_ERROR],
    ("0", "judgement"): [timeout(SLOW_REPLY_S)],
    ("1", "apology"): [BAD_JSON, MISSING_FIELD],
    ("1", "judgement"): [NO_YES_NO],
    ("2", "apology"): [SERVER_ERROR] * 3,
    ("2", "judgement"): [timeout(SLOW_REPLY_S)] * 3,
    ("3", "apology"): [BAD_JSON] * 3,
}


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def scripted_run() -> tuple:
    """Grade 4 samples x 3 propositions once against SCRIPT; yield what happened."""
    handler = ListHandler()
    log = logging.getLogger("rbr.graders.openai_compat")
    log.addHandler(handler)
    try:
        with FakeOpenAIServer(NAMES, script=SCRIPT) as server:
            grader = make_grader(server)
            result = grader.grade(make_samples(4), PROPOSITIONS)
    finally:
        log.removeHandler(handler)
    yield server, grader, result, handler.records


def test_scripted_failures_probabilities(scripted_run: tuple) -> None:
    result = scripted_run[2]
    values = result.probabilities
    answered = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 2), (3, 1), (3, 2)]
    for i, j in answered:
        assert values[i, j] == pytest.approx(DEFAULT_P_YES, abs=1e-12), (i, j)
    for i, j in [(1, 1), (2, 0), (2, 1), (3, 0)]:
        assert math.isnan(values[i, j]), (i, j)


def test_scripted_failures_unscored_reasons(scripted_run: tuple) -> None:
    result = scripted_run[2]
    found = {(u.sample_index, u.proposition): u for u in result.unscored}
    assert set(found) == {
        (1, "judgement"),
        (2, "apology"),
        (2, "judgement"),
        (3, "apology"),
    }
    assert found[(1, "judgement")].reason == "no_yes_no_token"
    assert "Maybe" in (found[(1, "judgement")].raw or "")
    assert found[(2, "apology")].reason == "server_error"
    assert "500" in found[(2, "apology")].detail
    assert found[(2, "judgement")].reason == "timeout"
    assert found[(3, "apology")].reason == "malformed_reply"
    assert found[(3, "apology")].sample_id == "s3"
    assert result.reasons() == {
        "no_yes_no_token": 1,
        "server_error": 1,
        "timeout": 1,
        "malformed_reply": 1,
    }


def test_scripted_failures_retry_counts(scripted_run: tuple) -> None:
    server, grader, result, _ = scripted_run
    assert server.count(("0", "apology")) == 3
    assert server.count(("0", "judgement")) == 2
    assert server.count(("1", "apology")) == 3
    assert server.count(("1", "judgement")) == 1
    assert server.count(("2", "apology")) == 3
    assert server.count(("2", "judgement")) == 3
    assert server.count(("3", "apology")) == 3
    stats = grader.stats
    assert stats.requests_sent == len(server.requests) == 23
    assert stats.retries == {
        "rate_limited": 1,
        "server_error": 3,
        "timeout": 3,
        "malformed_reply": 4,
    }
    assert stats.unscored == result.reasons()


def test_retry_after_is_honoured(scripted_run: tuple) -> None:
    server = scripted_run[0]
    times = [r.received_at for r in server.requests if r.key == ("0", "apology")]
    assert times[1] - times[0] >= 0.29


def test_retries_logged_with_ids(scripted_run: tuple) -> None:
    records = scripted_run[3]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    errors = [r.getMessage() for r in records if r.levelno == logging.ERROR]
    assert len(warnings) == 11
    assert any(
        "sample s0" in m
        and "apology" in m
        and "attempt 2 of 3" in m
        and "rate_limited" in m
        for m in warnings
    )
    assert len(errors) == 4
    assert any("sample s2" in m and "timeout" in m for m in errors)


def test_unauthorized_fails_fast() -> None:
    with FakeOpenAIServer(NAMES, api_key="right-key") as server:
        grader = make_grader(server, api_key="wrong-key")
        with pytest.raises(GraderError, match="Check the API key"):
            grader.grade(make_samples(10), PROPOSITIONS)
        assert len(server.requests) <= FAST.max_concurrency


def test_not_found_names_base_url(server: FakeOpenAIServer) -> None:
    grader = make_grader(server, base_url=server.url.removesuffix("/v1"))
    with pytest.raises(GraderError, match="ends in /v1"):
        grader.grade(make_samples(1), PROPOSITIONS)


def test_bad_request_before_success_raises() -> None:
    script = {("0", "apology"): [Action("status", status=400)]}
    limits = RequestLimits(max_concurrency=1, timeout_s=2.0)
    with FakeOpenAIServer(NAMES, script=script) as server:
        with pytest.raises(GraderError, match="supports logprobs"):
            make_grader(server, limits=limits).grade(make_samples(1), PROPOSITIONS)
        assert len(server.requests) == 1


def test_bad_request_after_success_unscored() -> None:
    script = {("1", "apology"): [Action("status", status=400)]}
    limits = RequestLimits(max_concurrency=1, timeout_s=2.0)
    with FakeOpenAIServer(NAMES, script=script) as server:
        result = make_grader(server, limits=limits).grade(make_samples(2), PROPOSITIONS)
        assert server.count(("1", "apology")) == 1
    assert [(u.sample_index, u.proposition, u.reason) for u in result.unscored] == [
        (1, "apology", "http_error")
    ]


def test_missing_base_url_names_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(GraderError, match=r"base_url \(--base-url\).*OPENAI_BASE_URL"):
        OpenAICompatibleGrader(model="m")


def test_missing_model_names_option() -> None:
    with pytest.raises(GraderError, match=r"--model"):
        OpenAICompatibleGrader(model=None, base_url="http://127.0.0.1:9/v1")


def test_openai_without_key_names_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(GraderError, match=r"api_key \(--api-key\).*OPENAI_API_KEY"):
        OpenAICompatibleGrader(model="m", base_url="https://api.openai.com/v1")


def test_environment_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAIServer(NAMES, api_key="env-key") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "env-key")
        grader = OpenAICompatibleGrader(model="m", limits=FAST)
        result = grader.grade(make_samples(1), PROPOSITIONS)
    assert result.unscored == []
    assert grader.base_url == server.url


def test_grade_inside_running_loop(server: FakeOpenAIServer) -> None:
    grader = make_grader(server)

    async def call_sync_grade() -> object:
        return grader.grade(make_samples(2), PROPOSITIONS)

    result = asyncio.run(call_sync_grade())
    assert result.unscored == []
    assert result.probabilities.shape == (2, 3)


def test_agrade_native(server: FakeOpenAIServer) -> None:
    result = asyncio.run(make_grader(server).agrade(make_samples(2), PROPOSITIONS))
    assert result.probabilities[1, 2] == pytest.approx(DEFAULT_P_YES)


def test_result_callback_once_per_cell() -> None:
    script = {("0", "judgement"): [NO_YES_NO]}
    seen: list[tuple[int, str, object]] = []
    with FakeOpenAIServer(NAMES, script=script) as server:
        make_grader(server).grade(
            make_samples(2),
            PROPOSITIONS,
            on_result=lambda i, n, v: seen.append((i, n, v)),
        )
    assert sorted((i, n) for i, n, _ in seen) == sorted(
        (i, n) for i in range(2) for n in NAMES
    )
    outcome = {(i, n): v for i, n, v in seen}
    assert isinstance(outcome[(0, "judgement")], Unscored)
    assert outcome[(1, "apology")] == pytest.approx(DEFAULT_P_YES)


def test_identity_covers_settings(server: FakeOpenAIServer) -> None:
    base = make_grader(server)
    assert make_grader(server).identity == base.identity
    variants = [
        make_grader(server, model="other-model"),
        make_grader(server, endpoint="completions"),
        make_grader(server, preamble="Grade strictly."),
        make_grader(server, base_url=server.url + "/other"),
        make_grader(server, top_logprobs=5),
        make_grader(server, layout="shared_definitions", definitions=PROPOSITIONS),
    ]
    identities = {grader.identity for grader in variants}
    assert len(identities) == len(variants)
    assert base.identity not in identities
    assert base.prompt_template_hash in base.identity
    assert "test-key" not in base.identity


def test_shared_definitions_layout(server: FakeOpenAIServer) -> None:
    grader = make_grader(server, layout="shared_definitions", definitions=PROPOSITIONS)
    result = grader.grade(make_samples(2), PROPOSITIONS[1:])
    assert result.unscored == []
    assert result.probabilities.shape == (2, 2)
    texts = [r.body["messages"][1]["content"] for r in server.requests]
    definitions_end = texts[0].index("## Conversation")
    for text in texts:
        assert text[:definitions_end] == texts[0][:definitions_end]
        for proposition in PROPOSITIONS:
            assert proposition.instruction in text[:definitions_end]


def test_shared_definitions_rejects_unknown(server: FakeOpenAIServer) -> None:
    grader = make_grader(
        server, layout="shared_definitions", definitions=PROPOSITIONS[:1]
    )
    with pytest.raises(GraderError, match="not among the shared definitions"):
        grader.grade(make_samples(1), PROPOSITIONS)
    assert server.requests == []


def test_few_shot_pool_excludes_graded_sample(server: FakeOpenAIServer) -> None:
    samples = make_samples(3)
    records = [
        Record(sample=s, prompt_id=str(i), propositions={"apology": float(i % 2)})
        for i, s in enumerate(samples)
    ]
    pool = FewShotPool(records, ["apology"], k=2)
    grader = make_grader(server, few_shot=pool)
    grader.grade(samples, PROPOSITIONS[:1])
    for request in server.requests:
        own = samples[int(request.key[0])]
        text = request.body["messages"][1]["content"]
        assert text.count(own.completion) == 1
        assert "Example 1" in text


def test_token_bucket_paces_after_burst() -> None:
    bucket = TokenBucket(per_minute=120)

    async def drain_then_wait() -> tuple[float, float]:
        started = time.monotonic()
        await bucket.acquire(120)
        burst = time.monotonic() - started
        await bucket.acquire(2)
        return burst, time.monotonic() - started

    burst, total = asyncio.run(drain_then_wait())
    assert burst < 0.2
    assert total >= 0.9


def test_token_bucket_caps_oversized_amount() -> None:
    bucket = TokenBucket(per_minute=600)
    started = time.monotonic()
    asyncio.run(bucket.acquire(10_000))
    assert time.monotonic() - started < 0.2


def test_rate_limited_grader_counts_tokens(server: FakeOpenAIServer) -> None:
    limits = RequestLimits(
        max_concurrency=2,
        requests_per_minute=6000,
        tokens_per_minute=60_000,
        timeout_s=2.0,
    )
    result = make_grader(server, limits=limits).grade(make_samples(2), PROPOSITIONS)
    assert result.unscored == []
    assert len(server.requests) == 6


def test_estimate_tokens_four_chars() -> None:
    assert estimate_tokens("a" * 400) == 101
    assert estimate_tokens("abc", max_tokens=0) == 1
    assert estimate_tokens("") == 1


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-3") == 0.0
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == pytest.approx(30.0)


def test_backoff_doubles_with_jitter() -> None:
    limits = RequestLimits(backoff_base_s=1.0, backoff_max_s=8.0)
    rng = random.Random(0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 8.0)]:
        delay = backoff_delay(attempt, limits, rng=rng)
        assert ceiling / 2 <= delay <= ceiling


def test_limits_reject_invalid_values() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        RequestLimits(max_concurrency=0)
    with pytest.raises(ValueError, match="requests_per_minute"):
        RequestLimits(requests_per_minute=0)
    with pytest.raises(ValueError, match="timeout_s"):
        RequestLimits(timeout_s=0)
    with pytest.raises(ValueError, match="backoff"):
        RequestLimits(backoff_base_s=5, backoff_max_s=1)


@pytest.mark.parametrize(
    ("token", "word"),
    [
        (" Yes", "yes"),
        ("YES.", "yes"),
        ("\u2581yes", "yes"),
        ("No!", "no"),
        ("nope", "nope"),
    ],
)
def test_normalize_token_variants(token: str, word: str) -> None:
    assert normalize_token(token) == word


def test_yes_probability_sums_variants() -> None:
    top = [("Yes", math.log(0.2)), (" yes", math.log(0.1)), ("no", math.log(0.3))]
    assert yes_probability(top) == pytest.approx(0.3 / 0.6)
    assert yes_probability([("Maybe", 0.0)]) is None
    assert yes_probability([("no", -1.0)]) == 0.0


def test_chat_reply_adds_sampled_token() -> None:
    body = {
        "choices": [
            {
                "message": {"content": "yes"},
                "logprobs": {
                    "content": [
                        {
                            "token": "yes",
                            "logprob": math.log(0.6),
                            "top_logprobs": [{"token": "no", "logprob": math.log(0.2)}],
                        }
                    ]
                },
            }
        ]
    }
    first = parse_chat_reply(body)
    assert first.reply == "yes"
    assert yes_probability(first.top) == pytest.approx(0.75)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"choices": []},
        {"choices": [{"message": {"content": "yes"}}]},
        {"choices": [{"message": {}, "logprobs": {"content": []}}]},
        {"choices": [{"message": {}, "logprobs": {"content": [{"top_logprobs": 3}]}}]},
        {
            "choices": [
                {
                    "message": {},
                    "logprobs": {
                        "content": [
                            {"top_logprobs": [{"token": "yes", "logprob": "x"}]}
                        ]
                    },
                }
            ]
        },
    ],
)
def test_chat_reply_malformed(body: dict) -> None:
    with pytest.raises(MalformedReplyError):
        parse_chat_reply(body)


def test_completion_reply_malformed() -> None:
    with pytest.raises(MalformedReplyError, match="top_logprobs"):
        parse_completion_reply(
            {"choices": [{"text": "x", "logprobs": {"top_logprobs": []}}]}
        )


def free_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_dead_port_fails_fast() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    grader = OpenAICompatibleGrader(model="m", base_url=url, limits=FAST)
    seen: list[tuple[int, str, object]] = []
    started = time.monotonic()
    with pytest.raises(ServerUnreachableError) as raised:
        grader.grade(
            make_samples(10),
            PROPOSITIONS,
            on_result=lambda i, n, v: seen.append((i, n, v)),
        )
    elapsed = time.monotonic() - started
    message = str(raised.value)
    assert elapsed < 3.0
    assert f"could not connect to {url}" in message
    assert "Start the server" in message
    assert "--base-url" in message
    assert len(seen) == 30
    assert all(isinstance(v, Unscored) for _, _, v in seen)
    assert {v.reason for _, _, v in seen} == {"connection_error"}
    limit = connection_failure_limit(FAST)
    attempts = FAST.max_retries + 1
    # The first wave of cells runs every attempt, later cells are not sent.
    assert grader.stats.requests_sent <= (limit + FAST.max_concurrency) * attempts
    assert grader.stats.unscored == {"connection_error": 30}


@pytest.mark.parametrize(
    ("concurrency", "limit"), [(1, 2), (2, 2), (4, 4), (8, 8), (64, 8)]
)
def test_connection_failure_limit_values(concurrency: int, limit: int) -> None:
    limits = RequestLimits(max_concurrency=concurrency)
    assert connection_failure_limit(limits) == limit


def test_scattered_connection_errors_keep_going() -> None:
    # Three failing cells never reach the limit of four in a row.
    script = {
        ("0", "apology"): [DISCONNECT] * 3,
        ("2", "judgement"): [DISCONNECT] * 3,
        ("3", "disclaimer"): [DISCONNECT] * 3,
    }
    with FakeOpenAIServer(NAMES, script=script) as server:
        grader = make_grader(server)
        result = grader.grade(make_samples(5), PROPOSITIONS)
        assert len(server.requests) == 12 + 3 * 3
    assert connection_failure_limit(FAST) == 4
    assert result.reasons() == {"connection_error": 3}
    assert grader.stats.retries == {"connection_error": 6}
    failed = next(u for u in result.unscored if u.sample_index == 0)
    assert server.url in failed.detail
    assert "after 3 attempts" in failed.detail
    assert int((~np.isnan(result.probabilities)).sum()) == 12


def test_outage_mid_run_stops_sending() -> None:
    samples = make_samples(12)
    script = {(str(i), name): [DISCONNECT] * 3 for i in range(2, 12) for name in NAMES}
    seen: dict[tuple[int, str], object] = {}
    limits = RequestLimits(
        max_concurrency=1, timeout_s=2.0, max_retries=2, backoff_base_s=0.01
    )
    with FakeOpenAIServer(NAMES, script=script) as server:
        grader = make_grader(server, limits=limits)
        with pytest.raises(ServerUnreachableError, match="2 cells in a row"):
            grader.grade(
                samples,
                PROPOSITIONS,
                on_result=lambda i, n, v: seen.__setitem__((i, n), v),
            )
        sent = len(server.requests)
    assert sent == 6 + 2 * 3
    assert len(seen) == 36
    for i in range(2):
        for name in NAMES:
            assert seen[(i, name)] == pytest.approx(DEFAULT_P_YES)
    not_sent = [v for v in seen.values() if isinstance(v, Unscored)]
    assert len(not_sent) == 30
    assert all(u.reason == "connection_error" for u in not_sent)
    assert sum("not sent" in u.detail for u in not_sent) == 28


def test_silent_server_stops_after_timeouts() -> None:
    script = {(str(i), name): [timeout(1.0)] * 2 for i in range(6) for name in NAMES}
    limits = RequestLimits(
        max_concurrency=2, timeout_s=0.2, max_retries=1, backoff_base_s=0.01
    )
    with FakeOpenAIServer(NAMES, script=script) as server:
        grader = make_grader(server, limits=limits)
        started = time.monotonic()
        with pytest.raises(ServerUnreachableError) as raised:
            grader.grade(make_samples(6), PROPOSITIONS)
        elapsed = time.monotonic() - started
        sent = len(server.requests)
    message = str(raised.value)
    assert f"no answer from {server.url}" in message
    assert "raise --timeout" in message
    assert elapsed < 3.0
    # Two cells of two attempts each, and perhaps one more wave in flight.
    assert sent <= 8
    assert grader.stats.unscored["timeout"] >= 2


def test_connect_timeout_counts_as_connection_error() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers: list[socket.socket] = []
    try:
        # Fill the accept queue of a listener that never accepts, so that
        # further connection attempts time out.
        for _ in range(4):
            filler = socket.socket()
            filler.settimeout(0.3)
            try:
                filler.connect(listener.getsockname())
            except OSError:
                filler.close()
                break
            fillers.append(filler)
        else:
            pytest.skip("this system accepts connections beyond a full backlog")
        port = listener.getsockname()[1]
        limits = RequestLimits(
            max_concurrency=2, timeout_s=0.2, max_retries=1, backoff_base_s=0.01
        )
        grader = OpenAICompatibleGrader(
            model="m", base_url=f"http://127.0.0.1:{port}/v1", limits=limits
        )
        with pytest.raises(ServerUnreachableError, match="timed out"):
            grader.grade(make_samples(2), PROPOSITIONS)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    # Both cells of the first wave retried once; a third cell may have
    # started before the call stopped.
    assert grader.stats.retries["connection_error"] >= 2
    assert grader.stats.unscored == {"connection_error": 6}


@pytest.mark.parametrize(
    ("header", "capped"),
    [
        ("3600", True),
        ("1e400", False),
        ("inf", False),
        ("nan", False),
        ("-5", False),
        (email.utils.formatdate(time.time() + 86_400, usegmt=True), True),
    ],
)
def test_retry_after_capped_or_ignored(
    header: str, capped: bool, caplog: pytest.LogCaptureFixture
) -> None:
    script = {("0", "apology"): [rate_limited(header)]}
    limits = RequestLimits(
        max_concurrency=2,
        timeout_s=2.0,
        max_retries=1,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
    )
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="rbr.graders.openai_compat"),
        FakeOpenAIServer(NAMES, script=script) as server,
    ):
        result = make_grader(server, limits=limits).grade(make_samples(1), PROPOSITIONS)
        assert server.count(("0", "apology")) == 2
    assert time.monotonic() - started < 2.0
    assert result.unscored == []
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.msg]
    assert len(retries) == 1
    assert ("capped" in retries[0]) is capped


def test_retry_delay_bounds() -> None:
    limits = RequestLimits(backoff_base_s=0.1, backoff_max_s=2.0)
    assert retry_delay(1, limits, 3600.0) == (2.0, 3600.0)
    assert retry_delay(1, limits, 1.5) == (1.5, None)
    for ignored in (None, math.inf, math.nan, -5.0, 0.0):
        delay, capped = retry_delay(1, limits, ignored)
        assert 0.05 <= delay <= 0.1
        assert capped is None


BAD_TOPS = {
    "plus_infinity": [(" Yes", math.inf), (" no", math.log(0.5))],
    "positive": [(" Yes", 0.5), (" no", math.log(0.5))],
    "nan": [(" Yes", math.log(0.5)), (" no", math.nan)],
}


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
@pytest.mark.parametrize("case", sorted(BAD_TOPS))
def test_invalid_logprobs_unscored(case: str, endpoint: str) -> None:
    script = {("0", "apology"): [Action(top=BAD_TOPS[case])] * 3}
    with FakeOpenAIServer(NAMES, script=script) as server:
        grader = make_grader(server, endpoint=endpoint, top_logprobs=5)
        result = grader.grade(make_samples(2), PROPOSITIONS)
        assert server.count(("0", "apology")) == 3
    assert len(result.unscored) == 1
    failed = result.unscored[0]
    assert (failed.sample_index, failed.proposition) == (0, "apology")
    assert failed.reason == "malformed_reply"
    assert failed.raw is not None
    assert '"choices"' in failed.raw
    assert math.isnan(result.probabilities[0, 0])
    assert int(np.isnan(result.probabilities).sum()) == 1
    assert grader.stats.retries == {"malformed_reply": 2}


def test_edge_logprobs_accepted() -> None:
    tops = {
        ("0", "apology"): [(" Yes", 5e-7), (" no", math.log(0.5))],
        ("0", "judgement"): [(" Yes", -math.inf), (" no", math.log(0.5))],
    }
    names = ["apology", "judgement"]
    with FakeOpenAIServer(names, top_for=lambda key: tops[key]) as server:
        result = make_grader(server).grade(make_samples(1), PROPOSITIONS[:2])
    assert result.unscored == []
    assert result.probabilities[0, 0] == pytest.approx(1 / 1.5, abs=1e-6)
    assert result.probabilities[0, 1] == 0.0


def test_invalid_logprob_finds_first() -> None:
    assert invalid_logprob([("yes", -0.1), ("no", -math.inf)]) is None
    assert invalid_logprob([("yes", 1e-6)]) is None
    assert invalid_logprob([("yes", -0.1), ("no", 2e-6)]) == ("no", 2e-6)
    assert invalid_logprob([("no", math.inf)]) == ("no", math.inf)
    token, value = invalid_logprob([("yes", math.nan)])
    assert token == "yes"
    assert math.isnan(value)


SUMMARY_SCRIPT = {
    ("0", "apology"): [rate_limited("0"), SERVER_ERROR],
    ("0", "judgement"): [rate_limited()] * 3,
    ("1", "apology"): [SERVER_ERROR] * 3,
}


def test_summary_counts_by_reason(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="rbr.graders.openai_compat"),
        FakeOpenAIServer(NAMES, script=SUMMARY_SCRIPT) as server,
    ):
        grader = make_grader(server)
        first = grader.grade(make_samples(2), PROPOSITIONS)
        second = grader.grade(make_samples(2), PROPOSITIONS)
    assert first.reasons() == {"rate_limited": 1, "server_error": 1}
    assert second.unscored == []
    stats = grader.stats
    assert stats.requests_sent == 12 + 6
    assert stats.retries == {"rate_limited": 3, "server_error": 3}
    assert stats.unscored == {"rate_limited": 1, "server_error": 1}
    summaries = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO and r.msg.startswith("graded")
    ]
    assert len(summaries) == 2
    assert summaries[0].endswith(
        "12 requests sent, 6 retries (rate_limited 3, server_error 3), "
        "2 cells unscored (rate_limited 1, server_error 1)"
    )
    assert summaries[1].endswith("6 requests sent, 0 retries, 0 cells unscored")
    assert server.url in summaries[0]


def test_describe_stats_line() -> None:
    stats = GraderStats(5, {"timeout": 1}, {})
    assert describe_stats(stats) == (
        "5 requests sent, 1 retries (timeout 1), 0 cells unscored"
    )


def test_stop_event_ends_retry_wait() -> None:
    limits = RequestLimits(max_retries=1, backoff_base_s=10.0, backoff_max_s=10.0)
    failure = RequestFailure("connection_error", "connection_error", "refused", True)
    calls: list[float] = []

    async def send() -> RequestFailure:
        calls.append(time.monotonic())
        return failure

    async def run() -> tuple[object, int]:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        return await send_with_retries(
            send,
            limiter=RateLimiter(requests_per_minute=None, tokens_per_minute=None),
            tokens=1,
            limits=limits,
            stats=StatsCounter(),
            label="test request",
            log=logging.getLogger("test"),
            stop=stop,
        )

    outcome, attempts = asyncio.run(run())
    assert outcome is failure
    assert attempts == 2
    assert calls[1] - calls[0] < 1.0
