"""A chat-completions client that samples replies from an OpenAI-compatible server.

It shares the grader's request settings (:class:`~rbr.graders.ratelimit.RequestLimits`),
rate limiter, backoff and ``Retry-After`` handling. Retries cover 429, 5xx,
408, timeouts, connection errors and malformed replies. Statuses that would
fail every request (401, 403, 404, and a 400 before any request succeeded)
raise :class:`~rbr.synth.targets.SynthError` at once. Any other failure is
returned as a :class:`RequestFailure`, so one bad prompt does not end a run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from rbr.errors import GraderError
from rbr.graders.http import (
    RequestFailure,
    post_json,
    send_with_retries,
    server_message,
)
from rbr.graders.openai_compat import ENV_API_KEY, resolve_connection
from rbr.graders.ratelimit import (
    RateLimiter,
    RequestLimits,
    estimate_tokens,
    parse_retry_after,
)
from rbr.synth.targets import SynthError

logger = logging.getLogger(__name__)

T = TypeVar("T")

CHAT_PATH = "/chat/completions"


@dataclass(frozen=True, slots=True)
class ChatReply:
    """A sampled reply and why generation stopped (``stop``, ``length``, ...)."""

    text: str
    finish_reason: str | None


@dataclass(frozen=True, slots=True)
class SamplerStats:
    """Request counters of a sampler: sent, retried by reason, failed by reason."""

    requests_sent: int
    retries: dict[str, int]
    failures: dict[str, int]


class _Counters:
    """Thread-safe counters behind :attr:`ChatSampler.stats`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = 0
        self._retries: dict[str, int] = {}
        self._failures: dict[str, int] = {}

    def count_request(self) -> None:
        with self._lock:
            self._requests += 1

    def count_retry(self, reason: str) -> None:
        with self._lock:
            self._retries[reason] = self._retries.get(reason, 0) + 1

    def count_failure(self, reason: str) -> None:
        with self._lock:
            self._failures[reason] = self._failures.get(reason, 0) + 1

    def snapshot(self) -> SamplerStats:
        with self._lock:
            return SamplerStats(
                self._requests, dict(self._retries), dict(self._failures)
            )


class ChatSampler:
    """Sample replies from a chat model behind an OpenAI-compatible HTTP API.

    Args:
        model: Model name sent in every request.
        base_url: API root, usually ending in ``/v1``; defaults to
            ``$OPENAI_BASE_URL``.
        api_key: Bearer token; defaults to ``$OPENAI_API_KEY``.
        temperature: Sampling temperature.
        max_tokens: Maximum reply length, in tokens.
        limits: Concurrency, rate limits, timeout and retries.

    Raises:
        SynthError: On a missing model or base URL, a missing OpenAI key, or
            an invalid option.
    """

    def __init__(
        self,
        *,
        model: str | None,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float = 1.0,
        max_tokens: int = 1024,
        limits: RequestLimits | None = None,
    ) -> None:
        if not model:
            raise SynthError(
                "no generator model name: pass --generator-model or --model"
            )
        if temperature < 0:
            raise SynthError(f"temperature must be 0 or more, got {temperature}")
        if max_tokens < 1:
            raise SynthError(f"max_tokens must be 1 or more, got {max_tokens}")
        try:
            self.base_url, self._api_key = resolve_connection(base_url, api_key)
        except GraderError as error:
            raise SynthError(f"generator: {error}") from None
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.limits = limits or RequestLimits()
        self._limiter = RateLimiter(
            requests_per_minute=self.limits.requests_per_minute,
            tokens_per_minute=self.limits.tokens_per_minute,
        )
        self._counters = _Counters()
        self._any_success = False

    @property
    def identity(self) -> str:
        """A stable string naming the server, model and sampling settings."""
        settings = {
            "base_url": self.base_url,
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        return "chat-sampler:" + json.dumps(settings, sort_keys=True)

    @property
    def stats(self) -> SamplerStats:
        """A snapshot of the request, retry and failure counters."""
        return self._counters.snapshot()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[httpx.AsyncClient]:
        """Open an HTTP client with one connection per concurrent request."""
        size = self.limits.max_concurrency
        pool = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        timeout = httpx.Timeout(self.limits.timeout_s)
        async with httpx.AsyncClient(limits=pool, timeout=timeout) as client:
            yield client

    async def sample(
        self,
        client: httpx.AsyncClient,
        messages: Sequence[dict[str, str]],
        *,
        describe: str = "generation request",
    ) -> ChatReply | RequestFailure:
        """Sample one reply to ``messages``, retrying transient failures.

        Raises:
            SynthError: On a status that means every request will fail.
        """
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        text = "".join(m["content"] for m in messages)
        outcome, _ = await send_with_retries(
            lambda: self._send(client, body),
            limiter=self._limiter,
            tokens=estimate_tokens(text, max_tokens=self.max_tokens),
            limits=self.limits,
            stats=self._counters,
            label=describe,
            log=logger,
        )
        if isinstance(outcome, RequestFailure):
            self._counters.count_failure(outcome.cause)
            logger.error("%s failed (%s): %s", describe, outcome.cause, outcome.detail)
        return outcome

    async def _send(
        self, client: httpx.AsyncClient, body: dict[str, Any]
    ) -> ChatReply | RequestFailure:
        url = self.base_url + CHAT_PATH
        response = await post_json(
            client, url, body, api_key=self._api_key, stats=self._counters
        )
        if isinstance(response, RequestFailure):
            return response
        if response.status_code >= 300:
            return self._status_failure(response, url)
        return self._read_reply(response, url)

    def _status_failure(self, response: httpx.Response, url: str) -> RequestFailure:
        """Classify an error status, raising SynthError when retrying cannot help."""
        status = response.status_code
        detail = f"HTTP {status} from {url}: {server_message(response)}"
        if status == 429:
            wait = parse_retry_after(response.headers.get("retry-after"))
            return RequestFailure(
                "rate_limited", "rate_limited", detail, True, retry_after=wait
            )
        if status >= 500:
            return RequestFailure("server_error", "server_error", detail, True)
        if status == 408:
            return RequestFailure("timeout", "timeout", detail, True)
        if status in (401, 403):
            raise SynthError(
                f"generator: {detail}. Check the API key (--generator-api-key, "
                f"--api-key or ${ENV_API_KEY}) and its access to the model"
            )
        if status == 404:
            raise SynthError(
                f"generator: {detail}. Check the base URL (it usually ends in /v1) "
                f"and the model name ({self.model!r})"
            )
        if not self._any_success:
            raise SynthError(
                f"generator: {detail}. The server rejected the first request, so it "
                "would likely reject them all: check that it serves chat completions "
                f"for model {self.model!r} and accepts max_tokens={self.max_tokens}"
            )
        return RequestFailure("client_error", "client_error", detail, False)

    def _read_reply(
        self, response: httpx.Response, url: str
    ) -> ChatReply | RequestFailure:
        try:
            choice = response.json()["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            detail = f"unreadable chat completion from {url}: {response.text[:300]!r}"
            return RequestFailure("malformed_reply", "malformed_reply", detail, True)
        if not isinstance(content, str):
            detail = f"chat completion from {url} has no text content: {content!r}"
            return RequestFailure("malformed_reply", "malformed_reply", detail, True)
        self._any_success = True
        finish_reason = choice.get("finish_reason")
        return ChatReply(
            content, finish_reason if isinstance(finish_reason, str) else None
        )
