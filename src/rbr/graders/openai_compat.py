"""An LLM grader over OpenAI-compatible HTTP APIs (OpenAI, vLLM, SGLang, llama.cpp).

One request per (sample, proposition) requests a single token at temperature
0 with the top log probabilities of that token, and the grade is
P(yes) = mass(yes) / (mass(yes) + mass(no)) over the yes and no variants among
them (see :mod:`rbr.graders.replies`). Prompts come from
:class:`rbr.graders.prompts.PromptRenderer`, so every request for one sample
starts with the same text and a server with prefix caching prefills that
prefix once.

Requests run on an asyncio event loop with ``max_concurrency`` workers,
client-side request and token rate limits, per-request timeouts and retries with
exponential backoff on 429 (honouring ``Retry-After``), 5xx, timeouts,
connection errors and malformed replies. A cell that never gets a usable
reply becomes an :class:`~rbr.graders.base.Unscored` entry. Errors that would
fail every request (401, 403, 404, and a 400 before any request succeeded)
raise :class:`~rbr.errors.GraderError` at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import httpx
import numpy as np

from rbr.data.types import Sample
from rbr.errors import GraderError
from rbr.graders.base import Grader, GradeResult, Unscored
from rbr.graders.prompts import (
    CHAT_SYSTEM_MESSAGE,
    DEFAULT_PREAMBLE,
    ExampleSource,
    Layout,
    PromptRenderer,
)
from rbr.graders.ratelimit import (
    RateLimiter,
    RequestLimits,
    backoff_delay,
    estimate_tokens,
    parse_retry_after,
)
from rbr.graders.replies import (
    FirstToken,
    MalformedReplyError,
    parse_chat_reply,
    parse_completion_reply,
    yes_probability,
)
from rbr.graders.runtime import GraderStats, StatsCounter, run_sync
from rbr.policy.spec import Proposition

logger = logging.getLogger(__name__)

T = TypeVar("T")

ENV_BASE_URL = "OPENAI_BASE_URL"
ENV_API_KEY = "OPENAI_API_KEY"
ENDPOINTS: dict[str, str] = {"chat": "/chat/completions", "completions": "/completions"}

Endpoint = Literal["chat", "completions"]
ResultCallback = Callable[[int, str, "float | Unscored"], None]
"""Called with (sample index, proposition name, probability or Unscored) per cell."""


@dataclass(frozen=True, slots=True)
class RequestFailure:
    """The cause of an attempt without a usable reply, and whether to retry it.

    Attributes:
        cause: Key of the retry counter, such as ``timeout`` or ``rate_limited``.
        reason: Key of the unscored counter, coarser than ``cause``.
        detail: Message for logs, naming the URL or the reply.
        retryable: Whether another attempt may succeed.
        raw: Reply text or server message kept with an unscored entry.
        retry_after: Seconds the server asked to wait (``Retry-After``).
    """

    cause: str
    reason: str
    detail: str
    retryable: bool
    raw: str | None = None
    retry_after: float | None = None


class RequestCounter(Protocol):
    """Counters that :func:`post_json` and :func:`send_with_retries` update."""

    def count_request(self) -> None: ...

    def count_retry(self, cause: str) -> None: ...


@dataclass(frozen=True, slots=True)
class _Cell:
    sample_index: int
    sample: Sample
    proposition: Proposition
    text: str

    @property
    def label(self) -> str:
        return self.sample.sample_id or f"#{self.sample_index}"


def resolve_connection(
    base_url: str | None, api_key: str | None
) -> tuple[str, str | None]:
    """Return the base URL and API key from the options or the environment.

    Raises:
        GraderError: When no base URL is given, or OpenAI's API has no key.
    """
    url = base_url or os.environ.get(ENV_BASE_URL)
    if not url:
        raise GraderError(
            f"no API base URL: pass base_url (--base-url) or set {ENV_BASE_URL}, "
            "for example https://api.openai.com/v1 or http://127.0.0.1:8000/v1"
        )
    key = api_key or os.environ.get(ENV_API_KEY) or None
    host = httpx.URL(url).host
    if key is None and (host == "openai.com" or host.endswith(".openai.com")):
        raise GraderError(
            f"no API key for {url}: pass api_key (--api-key) or set {ENV_API_KEY}"
        )
    return url.rstrip("/"), key


class OpenAICompatibleGrader(Grader):
    """Grade propositions with an LLM behind an OpenAI-compatible HTTP API.

    Args:
        model: Model name sent in every request.
        base_url: API root, usually ending in ``/v1``; defaults to
            ``$OPENAI_BASE_URL``.
        api_key: Bearer token; defaults to ``$OPENAI_API_KEY``. Local servers
            started without a key need none.
        endpoint: ``chat`` (``/chat/completions``, a fixed system message and
            one user message) or ``completions`` (``/completions``, the raw
            prompt text).
        limits: Concurrency, rate limits, timeout and retries.
        top_logprobs: Alternatives requested for the first token. OpenAI
            allows at most 20 for chat and 5 for completions.
        preamble: General grading instructions at the start of every prompt.
        layout: Prompt layout, see :mod:`rbr.graders.prompts`.
        definitions: Every proposition of the policy, required by the
            ``shared_definitions`` layout.
        few_shot: Examples chosen per sample from a labelled set (see
            :class:`rbr.graders.fewshot.FewShotPool`); None shows each
            proposition's own examples.

    Raises:
        GraderError: On a missing base URL, model or required API key, or an
            invalid option.
    """

    def __init__(
        self,
        *,
        model: str | None,
        base_url: str | None = None,
        api_key: str | None = None,
        endpoint: Endpoint = "chat",
        limits: RequestLimits | None = None,
        top_logprobs: int = 20,
        preamble: str = DEFAULT_PREAMBLE,
        layout: Layout = "conversation_first",
        definitions: Sequence[Proposition] | None = None,
        few_shot: ExampleSource | None = None,
    ) -> None:
        if not model:
            raise GraderError(
                "no model name: pass model (--model), such as gpt-4o-mini"
            )
        if endpoint not in ENDPOINTS:
            raise GraderError(
                f"unknown endpoint {endpoint!r}: use 'chat' or 'completions'"
            )
        if top_logprobs < 1:
            raise GraderError(f"top_logprobs must be 1 or more, got {top_logprobs}")
        self.base_url, self._api_key = resolve_connection(base_url, api_key)
        self.model = model
        self.endpoint = endpoint
        self.limits = limits or RequestLimits()
        self.top_logprobs = top_logprobs
        try:
            self.renderer = PromptRenderer(
                layout=layout,
                preamble=preamble,
                definitions=definitions,
                few_shot=few_shot,
            )
        except ValueError as error:
            raise GraderError(str(error)) from None
        self.prompt_template_hash = self.renderer.template_hash
        self._limiter = RateLimiter(
            requests_per_minute=self.limits.requests_per_minute,
            tokens_per_minute=self.limits.tokens_per_minute,
        )
        self._stats = StatsCounter()
        self._any_success = False

    @property
    def identity(self) -> str:
        settings = {
            "base_url": self.base_url,
            "model": self.model,
            "endpoint": self.endpoint,
            "top_logprobs": self.top_logprobs,
            "prompt_template": self.prompt_template_hash,
            "prompt": self.renderer.fingerprint(),
        }
        return "openai-compatible:" + json.dumps(settings, sort_keys=True)

    @property
    def stats(self) -> GraderStats:
        """A snapshot of the request, retry and unscored counters."""
        return self._stats.snapshot()

    def grade(
        self,
        samples: Sequence[Sample],
        propositions: Sequence[Proposition],
        *,
        on_result: ResultCallback | None = None,
    ) -> GradeResult:
        """Grade every proposition for every sample; see :meth:`agrade`."""
        return run_sync(lambda: self.agrade(samples, propositions, on_result=on_result))

    async def agrade(
        self,
        samples: Sequence[Sample],
        propositions: Sequence[Proposition],
        *,
        on_result: ResultCallback | None = None,
    ) -> GradeResult:
        """Grade every proposition for every sample.

        Args:
            samples: Completions to grade.
            propositions: Propositions to ask about each completion.
            on_result: Called on the event loop's thread as soon as each cell
                is finished, scored or not, so callers can store it at once.

        Raises:
            GraderError: On a reply that means every request will fail (bad
                key, unknown model or URL, rejected request format).
        """
        try:
            self.renderer.check_propositions(propositions)
        except ValueError as error:
            raise GraderError(str(error)) from None
        names = tuple(p.name for p in propositions)
        values = np.full((len(samples), len(names)), np.nan)
        unscored: list[Unscored] = []
        columns = {name: j for j, name in enumerate(names)}

        def record(cell: _Cell, outcome: float | Unscored) -> None:
            if isinstance(outcome, Unscored):
                unscored.append(outcome)
            else:
                values[cell.sample_index, columns[cell.proposition.name]] = outcome
            if on_result is not None:
                on_result(cell.sample_index, cell.proposition.name, outcome)

        cells = self._cells(samples, propositions)
        await self._run_workers(cells, record)
        unscored.sort(key=lambda u: (u.sample_index, columns[u.proposition]))
        return GradeResult(names, values, unscored)

    def _cells(
        self, samples: Sequence[Sample], propositions: Sequence[Proposition]
    ) -> Iterator[_Cell]:
        """Yield cells sample by sample, so one sample's requests go out together."""
        for index, sample in enumerate(samples):
            prefix = self.renderer.prefix(sample)
            for proposition in propositions:
                text = prefix + self.renderer.suffix(sample, proposition)
                yield _Cell(index, sample, proposition, text)

    async def _run_workers(
        self, cells: Iterator[_Cell], record: Callable[[_Cell, float | Unscored], None]
    ) -> None:
        """Grade ``cells`` with ``max_concurrency`` workers sharing one client."""

        async def grade(client: httpx.AsyncClient, cell: _Cell) -> None:
            record(cell, await self._grade_cell(client, cell))

        await run_workers(cells, grade, self.limits)

    def _request_body(self, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": 1, "temperature": 0}
        if self.endpoint == "chat":
            body["messages"] = [
                {"role": "system", "content": CHAT_SYSTEM_MESSAGE},
                {"role": "user", "content": text},
            ]
            body["logprobs"] = True
            body["top_logprobs"] = self.top_logprobs
        else:
            body["prompt"] = text
            body["logprobs"] = self.top_logprobs
        return body

    async def _grade_cell(
        self, client: httpx.AsyncClient, cell: _Cell
    ) -> float | Unscored:
        """Send one cell's request, retry transient failures and return the grade."""
        body = self._request_body(cell.text)
        outcome, attempts = await send_with_retries(
            lambda: self._send(client, body),
            limiter=self._limiter,
            tokens=estimate_tokens(CHAT_SYSTEM_MESSAGE + cell.text),
            limits=self.limits,
            stats=self._stats,
            label=f"sample {cell.label} proposition {cell.proposition.name}",
            log=logger,
        )
        if isinstance(outcome, RequestFailure):
            return self._unscored(cell, outcome, attempts)
        return outcome

    def _unscored(
        self, cell: _Cell, failure: RequestFailure, attempts: int
    ) -> Unscored:
        self._stats.count_unscored(failure.reason)
        detail = f"{failure.detail} (after {attempts} attempt{'s' * (attempts > 1)})"
        logger.error(
            "sample %s proposition %s unscored (%s): %s",
            cell.label,
            cell.proposition.name,
            failure.reason,
            detail,
        )
        return Unscored(
            cell.sample_index,
            cell.proposition.name,
            failure.reason,
            detail,
            failure.raw,
            cell.sample.sample_id,
        )

    async def _send(
        self, client: httpx.AsyncClient, body: dict[str, Any]
    ) -> float | RequestFailure:
        """Send one request and return P(yes) or why there is none.

        Raises:
            GraderError: On a status that means every request will fail.
        """
        url = self.base_url + ENDPOINTS[self.endpoint]
        response = await post_json(
            client, url, body, api_key=self._api_key, stats=self._stats
        )
        if isinstance(response, RequestFailure):
            return response
        if response.status_code >= 300:
            return self._status_failure(response, url)
        return self._read_reply(response)

    def _status_failure(self, response: httpx.Response, url: str) -> RequestFailure:
        """Classify an error status, raising GraderError when retrying cannot help."""
        status = response.status_code
        message = server_message(response)
        detail = f"HTTP {status} from {url}: {message}"
        if status == 429:
            wait = parse_retry_after(response.headers.get("retry-after"))
            return RequestFailure(
                "rate_limited", "http_error", detail, True, message, wait
            )
        if status >= 500:
            return RequestFailure("server_error", "http_error", detail, True, message)
        if status == 408:
            return RequestFailure("timeout", "timeout", detail, True, message)
        if status in (401, 403):
            raise GraderError(
                f"{detail}. Check the API key (--api-key or ${ENV_API_KEY}) and its "
                "access to the model"
            )
        if status == 404:
            raise GraderError(
                f"{detail}. Check the base URL (it usually ends in /v1), the "
                f"endpoint ({self.endpoint!r}) and the model name ({self.model!r})"
            )
        if not self._any_success:
            raise GraderError(
                f"{detail}. The server rejected the first request, so it would likely "
                "reject them all: check that it supports logprobs with "
                f"top_logprobs={self.top_logprobs} on the {self.endpoint!r} endpoint"
            )
        return RequestFailure("client_error", "http_error", detail, False, message)

    def _read_reply(self, response: httpx.Response) -> float | RequestFailure:
        try:
            body = response.json()
            first: FirstToken = (
                parse_chat_reply(body)
                if self.endpoint == "chat"
                else parse_completion_reply(body)
            )
        except (ValueError, MalformedReplyError) as error:
            detail = f"unreadable reply: {error}"
            raw = response.text[:2000]
            return RequestFailure(
                "malformed_reply", "malformed_reply", detail, True, raw
            )
        self._any_success = True
        probability = yes_probability(first.top)
        if probability is None:
            detail = (
                f"no yes or no token among the top {len(first.top)} first tokens; "
                f"the reply was {first.reply!r}"
            )
            return RequestFailure(
                "no_yes_no_token", "no_yes_no_token", detail, False, first.describe()
            )
        return probability

    def close(self) -> None:
        """Nothing to release: each grade call opens and closes its own client."""


async def run_workers(
    items: Iterable[T],
    handle: Callable[[httpx.AsyncClient, T], Awaitable[None]],
    limits: RequestLimits,
) -> None:
    """Run ``handle`` on every item with ``max_concurrency`` workers.

    The workers share one HTTP client, with the request timeout of
    ``limits``. When one worker raises, the others are cancelled and the
    error is raised here.
    """
    queue = iter(items)
    size = limits.max_concurrency
    pool = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    timeout = httpx.Timeout(limits.timeout_s)
    async with httpx.AsyncClient(limits=pool, timeout=timeout) as client:

        async def work() -> None:
            for item in queue:
                await handle(client, item)

        tasks = [asyncio.create_task(work()) for _ in range(size)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    *,
    api_key: str | None,
    stats: RequestCounter,
) -> httpx.Response | RequestFailure:
    """POST ``body`` and return the response, whatever its status.

    A timeout or connection error is returned as a retryable
    :class:`RequestFailure` (cause ``timeout`` or ``connection_error``).
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    stats.count_request()
    try:
        return await client.post(url, json=body, headers=headers)
    except httpx.TimeoutException:
        timeout = client.timeout.read
        detail = f"no reply within {timeout} s from {url}"
        return RequestFailure("timeout", "timeout", detail, retryable=True)
    except httpx.TransportError as error:
        detail = f"connection to {url} failed: {type(error).__name__}: {error}"
        return RequestFailure("connection_error", "http_error", detail, retryable=True)


async def send_with_retries(
    send: Callable[[], Awaitable[T | RequestFailure]],
    *,
    limiter: RateLimiter,
    tokens: int,
    limits: RequestLimits,
    stats: RequestCounter,
    label: str,
    log: logging.Logger,
) -> tuple[T | RequestFailure, int]:
    """Call ``send`` until it succeeds, fails for good or runs out of retries.

    Each attempt first waits for the rate limiter. A retryable failure waits
    the exponential backoff of ``limits``, or the server's ``Retry-After``
    when that is longer, and is counted and logged with ``label``.

    Returns:
        The last outcome and the number of attempts made.
    """
    attempts = limits.max_retries + 1
    attempt = 1
    while True:
        await limiter.acquire(tokens)
        outcome = await send()
        if not isinstance(outcome, RequestFailure):
            return outcome, attempt
        if not outcome.retryable or attempt >= attempts:
            return outcome, attempt
        delay = max(backoff_delay(attempt, limits), outcome.retry_after or 0.0)
        stats.count_retry(outcome.cause)
        log.warning(
            "retrying %s (attempt %d of %d) in %.2f s after %s: %s",
            label,
            attempt + 1,
            attempts,
            delay,
            outcome.cause,
            outcome.detail,
        )
        await asyncio.sleep(delay)
        attempt += 1


def server_message(response: httpx.Response) -> str:
    """Return the server's error message from an OpenAI-style error body, shortened."""
    try:
        body = response.json()
        message = (
            body["error"]["message"] if isinstance(body.get("error"), dict) else body
        )
    except (ValueError, AttributeError, KeyError, TypeError):
        message = response.text
    text = message if isinstance(message, str) else json.dumps(message)
    return text.strip()[:500] or response.reason_phrase
