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
exponential backoff on 429 (honouring ``Retry-After`` up to ``backoff_max_s``),
5xx, timeouts, connection errors and malformed replies. A cell that never gets
a usable reply becomes an :class:`~rbr.graders.base.Unscored` entry whose
reason is ``rate_limited``, ``server_error``, ``timeout``,
``connection_error``, ``malformed_reply``, ``no_yes_no_token`` or
``http_error`` (any other 4xx status). Errors that would fail every request
(401, 403, 404, and a 400 before any request succeeded) raise
:class:`~rbr.errors.GraderError` at once. When several cells in a row fail to
connect or time out even after their retries, the call stops sending and
raises :class:`ServerUnreachableError` (see :func:`connection_failure_limit`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import numpy as np

from rbr.data.types import Sample
from rbr.errors import GraderError
from rbr.graders.base import Grader, GradeResult, Unscored
from rbr.graders.http import (
    RequestCounter,
    RequestFailure,
    post_json,
    retry_delay,
    run_workers,
    send_with_retries,
    server_message,
)
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

__all__ = [
    "CONNECTION_FAILURE_LIMIT",
    "ENDPOINTS",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "LOGPROB_TOLERANCE",
    "Endpoint",
    "OpenAICompatibleGrader",
    "RequestCounter",
    "RequestFailure",
    "ResultCallback",
    "ServerUnreachableError",
    "connection_failure_limit",
    "describe_stats",
    "invalid_logprob",
    "post_json",
    "resolve_connection",
    "retry_delay",
    "run_workers",
    "send_with_retries",
    "server_message",
]

logger = logging.getLogger(__name__)

ENV_BASE_URL = "OPENAI_BASE_URL"
ENV_API_KEY = "OPENAI_API_KEY"
ENDPOINTS: dict[str, str] = {"chat": "/chat/completions", "completions": "/completions"}

CONNECTION_FAILURE_LIMIT = 8
"""Largest number of cells in a row that may fail to connect or time out before a
call stops.

See :func:`connection_failure_limit` for the limit a grader actually uses.
"""

LOGPROB_TOLERANCE = 1e-6
"""Largest positive log probability accepted, which allows rounding errors near 0."""

Endpoint = Literal["chat", "completions"]
ResultCallback = Callable[[int, str, "float | Unscored"], None]
"""Called with (sample index, proposition name, probability or Unscored) per cell."""


class ServerUnreachableError(GraderError):
    """The server failed to connect or to reply for several cells in a row."""


UNREACHABLE_CAUSES = frozenset({"connection_error", "timeout"})
"""Final failure causes that count towards stopping a call, because neither
brought a reply."""


def connection_failure_limit(limits: RequestLimits) -> int:
    """Return how many cells in a row may fail to connect or time out before a stop.

    A cell counts when every attempt, retries included, failed to connect or
    timed out.
    The limit is ``max_concurrency`` capped at
    :data:`CONNECTION_FAILURE_LIMIT` and at least 2. When the server is down,
    the first ``max_concurrency`` cells fail together, so the call stops
    after one retry schedule. One failing cell alone never stops a call.
    """
    return min(CONNECTION_FAILURE_LIMIT, max(2, limits.max_concurrency))


class _ConnectionWatch:
    """Count cells in a row whose final outcome was a connection error or timeout.

    Any other final outcome, such as a reply or an HTTP error status, resets
    the count, so scattered failures in a healthy run do not stop it. All
    calls happen on one event loop thread.
    """

    def __init__(self, limit: int, base_url: str) -> None:
        self.limit = limit
        self.failures_in_row = 0
        self.last_detail = ""
        self.timeouts_in_row = 0
        self.stop = asyncio.Event()
        self.not_sent = RequestFailure(
            "connection_error",
            "connection_error",
            f"not sent: could not connect to {base_url}, so the call stopped",
            retryable=False,
        )

    @property
    def stopped(self) -> bool:
        return self.failures_in_row >= self.limit

    def observe(self, outcome: object) -> None:
        """Count a cell's final outcome, unless the call has already stopped."""
        if self.stopped or outcome is self.not_sent:
            return
        if isinstance(outcome, RequestFailure) and outcome.cause in UNREACHABLE_CAUSES:
            self.failures_in_row += 1
            self.timeouts_in_row += outcome.cause == "timeout"
            self.last_detail = outcome.detail
            if self.stopped:
                self.stop.set()
        else:
            self.failures_in_row = 0
            self.timeouts_in_row = 0


class _CallCounter:
    """Counters of one grade call that also update the grader's own counters."""

    def __init__(self, shared: StatsCounter) -> None:
        self.shared = shared
        self.call = StatsCounter()

    def count_request(self) -> None:
        self.shared.count_request()
        self.call.count_request()

    def count_retry(self, cause: str) -> None:
        self.shared.count_retry(cause)
        self.call.count_retry(cause)

    def count_unscored(self, reason: str) -> None:
        self.shared.count_unscored(reason)
        self.call.count_unscored(reason)


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
            ServerUnreachableError: When :func:`connection_failure_limit`
                cells in a row could not connect or timed out. Before it is
                raised, the cells not yet sent are reported to ``on_result``
                as unscored.
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
        watch = _ConnectionWatch(connection_failure_limit(self.limits), self.base_url)
        counter = _CallCounter(self._stats)
        try:
            await self._run_workers(cells, record, watch, counter)
        finally:
            logger.info(
                "graded %d samples x %d propositions at %s: %s",
                len(samples),
                len(names),
                self.base_url,
                describe_stats(counter.call.snapshot()),
            )
        if watch.stopped:
            raise ServerUnreachableError(self._unreachable_message(watch))
        unscored.sort(key=lambda u: (u.sample_index, columns[u.proposition]))
        return GradeResult(names, values, unscored)

    def _unreachable_message(self, watch: _ConnectionWatch) -> str:
        attempts = self.limits.max_retries + 1
        if watch.timeouts_in_row:
            return (
                f"no answer from {self.base_url}: {watch.failures_in_row} cells in a "
                f"row timed out or failed to connect after {attempts} "
                f"attempt{'s' * (attempts > 1)} each ({watch.timeouts_in_row} timed "
                f"out; last error: {watch.last_detail}), so the remaining cells were "
                "not sent. Check that the server is up and serving this model, or "
                "raise --timeout"
            )
        return (
            f"could not connect to {self.base_url}: {watch.failures_in_row} cells in "
            f"a row failed to connect after {attempts} attempt{'s' * (attempts > 1)} "
            f"each (last error: {watch.last_detail}), so the remaining cells were "
            "not sent. Start the server, or fix the base URL (--base-url or "
            f"${ENV_BASE_URL})"
        )

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
        self,
        cells: Iterator[_Cell],
        record: Callable[[_Cell, float | Unscored], None],
        watch: _ConnectionWatch,
        counter: _CallCounter,
    ) -> None:
        """Grade ``cells`` with ``max_concurrency`` workers sharing one client."""

        async def grade(client: httpx.AsyncClient, cell: _Cell) -> None:
            record(cell, await self._grade_cell(client, cell, watch, counter))

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
        self,
        client: httpx.AsyncClient,
        cell: _Cell,
        watch: _ConnectionWatch,
        counter: _CallCounter,
    ) -> float | Unscored:
        """Send one cell's request, retry transient failures and return the grade.

        Once ``watch`` has stopped the call, no request is sent, and a cell
        waiting to retry gives up at its next attempt.
        """
        if watch.stopped:
            return self._unscored(cell, watch.not_sent, 0, counter)
        body = self._request_body(cell.text)

        async def send() -> float | RequestFailure:
            if watch.stopped:
                return watch.not_sent
            return await self._send(client, body, counter)

        outcome, attempts = await send_with_retries(
            send,
            limiter=self._limiter,
            tokens=estimate_tokens(CHAT_SYSTEM_MESSAGE + cell.text),
            limits=self.limits,
            stats=counter,
            label=f"sample {cell.label} proposition {cell.proposition.name}",
            log=logger,
            stop=watch.stop,
        )
        watch.observe(outcome)
        if outcome is watch.not_sent:
            return self._unscored(cell, outcome, 0, counter)
        if isinstance(outcome, RequestFailure):
            return self._unscored(cell, outcome, attempts, counter)
        return outcome

    def _unscored(
        self,
        cell: _Cell,
        failure: RequestFailure,
        attempts: int,
        counter: _CallCounter,
    ) -> Unscored:
        """Count and log an unscored cell. With ``attempts`` 0 it is only counted."""
        counter.count_unscored(failure.reason)
        detail = failure.detail
        if attempts > 0:
            detail += f" (after {attempts} attempt{'s' * (attempts > 1)})"
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
        self, client: httpx.AsyncClient, body: dict[str, Any], counter: _CallCounter
    ) -> float | RequestFailure:
        """Send one request and return P(yes) or why there is none.

        Raises:
            GraderError: On a status that means every request will fail.
        """
        url = self.base_url + ENDPOINTS[self.endpoint]
        response = await post_json(
            client, url, body, api_key=self._api_key, stats=counter
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
                "rate_limited", "rate_limited", detail, True, message, wait
            )
        if status >= 500:
            return RequestFailure("server_error", "server_error", detail, True, message)
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
            return _malformed(f"unreadable reply: {error}", response)
        invalid = invalid_logprob(first.top)
        if invalid is not None:
            token, logprob = invalid
            detail = (
                f"invalid log probability {logprob!r} for token {token!r}: a log "
                f"probability must be a number no greater than 0 (or -inf)"
            )
            return _malformed(detail, response)
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
        # Valid log probabilities always give a value in [0, 1]. This check
        # keeps any NaN out of the results, where it would look unscored but
        # have no Unscored entry.
        if not 0.0 <= probability <= 1.0:
            return _malformed(f"P(yes) is {probability!r}, not in [0, 1]", response)
        return probability

    def close(self) -> None:
        """Nothing to release: each grade call opens and closes its own client."""


def invalid_logprob(top: Iterable[tuple[str, float]]) -> tuple[str, float] | None:
    """Return the first (token, logprob) pair with an invalid logprob, if any.

    NaN, +inf and values above :data:`LOGPROB_TOLERANCE` are invalid, because
    they would turn P(yes) into NaN or make one token's probability exceed 1.
    -inf is log(0) and stays valid.
    """
    for token, logprob in top:
        if math.isnan(logprob) or logprob > LOGPROB_TOLERANCE:
            return token, logprob
    return None


def _malformed(detail: str, response: httpx.Response) -> RequestFailure:
    """Return a retryable failure that keeps the start of the reply body."""
    raw = response.text[:2000]
    return RequestFailure("malformed_reply", "malformed_reply", detail, True, raw)


def describe_stats(stats: GraderStats) -> str:
    """Return request, retry and unscored counters as one line of text."""
    retries = sum(stats.retries.values())
    unscored = sum(stats.unscored.values())
    return (
        f"{stats.requests_sent} requests sent, {retries} retries"
        f"{_by_reason(stats.retries)}, {unscored} cells unscored"
        f"{_by_reason(stats.unscored)}"
    )


def _by_reason(counts: dict[str, int]) -> str:
    if not counts:
        return ""
    parts = ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items()))
    return f" ({parts})"
