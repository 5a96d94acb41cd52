"""HTTP request machinery shared by the clients of OpenAI-compatible servers.

:func:`run_workers` runs requests with ``max_concurrency`` workers on one
``httpx.AsyncClient``, :func:`post_json` sends one request and turns timeouts
and connection errors into a :class:`RequestFailure`, and
:func:`send_with_retries` retries transient failures with the backoff of
:func:`retry_delay`. The callers classify replies and status codes themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx

from rbr.graders.ratelimit import RateLimiter, RequestLimits, backoff_delay

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RequestFailure:
    """The cause of an attempt without a usable reply, and whether to retry it.

    Attributes:
        cause: Key of the retry counter, such as ``timeout`` or ``rate_limited``.
        reason: Key of the unscored counter. The grader uses ``cause``,
            except ``http_error`` for a 4xx status that is not retried.
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

        await gather_or_cancel([work() for _ in range(size)])


async def gather_or_cancel(coroutines: Sequence[Coroutine[Any, Any, Any]]) -> None:
    """Run coroutines together; on the first failure cancel the rest and re-raise."""
    tasks = [asyncio.create_task(c) for c in coroutines]
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
    :class:`RequestFailure` (cause ``timeout`` or ``connection_error``). A
    connect timeout counts as a connection error, since no server accepted it.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    stats.count_request()
    try:
        return await client.post(url, json=body, headers=headers)
    except httpx.ConnectTimeout:
        detail = f"connection to {url} timed out after {client.timeout.connect} s"
        return _connection_failure(detail)
    except httpx.TimeoutException:
        timeout = client.timeout.read
        detail = f"no reply within {timeout} s from {url}"
        return RequestFailure("timeout", "timeout", detail, retryable=True)
    except httpx.TransportError as error:
        detail = f"connection to {url} failed: {type(error).__name__}: {error}"
        return _connection_failure(detail)


def _connection_failure(detail: str) -> RequestFailure:
    return RequestFailure(
        "connection_error", "connection_error", detail, retryable=True
    )


async def send_with_retries(
    send: Callable[[], Awaitable[T | RequestFailure]],
    *,
    limiter: RateLimiter,
    tokens: int,
    limits: RequestLimits,
    stats: RequestCounter,
    label: str,
    log: logging.Logger,
    stop: asyncio.Event | None = None,
) -> tuple[T | RequestFailure, int]:
    """Call ``send`` until it succeeds, fails for good or runs out of retries.

    Each attempt first waits for the rate limiter. A retryable failure waits
    the delay from :func:`retry_delay`, and is counted and logged with
    ``label``.
    Setting ``stop`` ends that wait early, and ``send`` decides what the
    next attempt does.

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
        delay, capped = retry_delay(attempt, limits, outcome.retry_after)
        stats.count_retry(outcome.cause)
        log.warning(
            "retrying %s (attempt %d of %d) in %.2f s after %s%s: %s",
            label,
            attempt + 1,
            attempts,
            delay,
            outcome.cause,
            "" if capped is None else f" (Retry-After {capped:g} s capped)",
            outcome.detail,
        )
        await _sleep_unless(stop, delay)
        attempt += 1


async def _sleep_unless(stop: asyncio.Event | None, delay: float) -> None:
    """Sleep ``delay`` seconds, or less when ``stop`` is set meanwhile."""
    if stop is None:
        await asyncio.sleep(delay)
        return
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)


def retry_delay(
    attempt: int, limits: RequestLimits, retry_after: float | None
) -> tuple[float, float | None]:
    """Return the wait before retry ``attempt`` and the ``Retry-After`` it capped.

    The wait is the exponential backoff of ``limits``, or the server's
    ``Retry-After`` in seconds when that is longer, but at most
    ``backoff_max_s``, so a server cannot stall a run for an hour. A
    ``Retry-After`` that is NaN, infinite or negative is ignored.

    Returns:
        The wait in seconds, and the requested ``Retry-After`` when it was
        longer than ``backoff_max_s`` (else None).
    """
    delay = backoff_delay(attempt, limits)
    if retry_after is None or not math.isfinite(retry_after) or retry_after <= delay:
        return delay, None
    if retry_after > limits.backoff_max_s:
        return max(delay, limits.backoff_max_s), retry_after
    return retry_after, None


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
