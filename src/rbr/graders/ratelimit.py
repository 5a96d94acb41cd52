"""Request limits, rate limiting and retry delays for HTTP graders."""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import threading
import time
from dataclasses import dataclass

CHARS_PER_TOKEN = 4.0
"""Characters per token used to estimate prompt size for the tokens-per-minute limit.

About four characters of English text make one token in the tokenizers of
GPT-style models (OpenAI's published rule of thumb). The estimate is only
used for client-side pacing: the server's own count decides its limits.
"""


def estimate_tokens(text: str, *, max_tokens: int = 1) -> int:
    """Estimate the tokens a request consumes: prompt characters / 4, plus output.

    Args:
        text: Every piece of text sent in the request.
        max_tokens: Tokens the request may generate, which servers also count.
    """
    return math.ceil(len(text) / CHARS_PER_TOKEN) + max_tokens


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Concurrency, rate, timeout and retry settings for an HTTP grader.

    Attributes:
        max_concurrency: Requests in flight at once.
        requests_per_minute: Client-side request rate limit; None for none.
        tokens_per_minute: Client-side limit on estimated tokens per minute
            (see :func:`estimate_tokens`); None for none.
        timeout_s: Seconds one HTTP request may take, connection included.
        max_retries: Retries after the first attempt of one request.
        backoff_base_s: Delay before the first retry; it doubles every retry.
        backoff_max_s: Largest delay between retries, a server's
            ``Retry-After`` included.
    """

    max_concurrency: int = 8
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    timeout_s: float = 60.0
    max_retries: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError(
                f"max_concurrency must be 1 or more, got {self.max_concurrency}"
            )
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, got {value}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {self.max_retries}")
        if self.backoff_base_s < 0 or self.backoff_max_s < self.backoff_base_s:
            raise ValueError(
                "backoff delays must satisfy 0 <= backoff_base_s <= backoff_max_s, got "
                f"{self.backoff_base_s} and {self.backoff_max_s}"
            )


def backoff_delay(
    attempt: int, limits: RequestLimits, *, rng: random.Random | None = None
) -> float:
    """Return the delay in seconds before retry number ``attempt`` (1-based).

    The delay doubles with every attempt up to ``backoff_max_s``, and a random
    half of it is dropped ("equal jitter") so that clients that failed
    together do not retry together.
    """
    rng = rng or random
    ceiling = min(limits.backoff_max_s, limits.backoff_base_s * 2 ** (attempt - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Return the wait a ``Retry-After`` header requests, in seconds, or None.

    The header contains either a number of seconds or an HTTP date.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


class TokenBucket:
    """A thread-safe token bucket refilled at ``per_minute / 60`` per second.

    The bucket contains at most one minute's allowance, so a client may send a
    burst of that size after an idle minute, as the server-side limits of
    OpenAI-compatible APIs allow. The state lives outside any event loop,
    so the limit holds across several ``grade`` calls and threads.
    """

    def __init__(self, per_minute: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._level = self.capacity
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    def _take_or_wait(self, amount: float) -> float:
        """Take ``amount`` and return 0, or return the seconds until it is there."""
        amount = min(amount, self.capacity)
        with self._lock:
            now = time.monotonic()
            self._level = min(
                self.capacity, self._level + (now - self._updated) * self.rate
            )
            self._updated = now
            if self._level >= amount:
                self._level -= amount
                return 0.0
            return (amount - self._level) / self.rate

    async def acquire(self, amount: float = 1.0) -> None:
        """Wait until ``amount`` is available, then take it.

        An amount larger than the bucket is capped at its capacity, so one
        oversized request waits for a full bucket instead of forever.
        """
        while True:
            wait = self._take_or_wait(amount)
            if wait <= 0:
                return
            await asyncio.sleep(wait)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits combined."""

    def __init__(
        self, *, requests_per_minute: float | None, tokens_per_minute: float | None
    ) -> None:
        self._requests = (
            TokenBucket(requests_per_minute) if requests_per_minute else None
        )
        self._tokens = TokenBucket(tokens_per_minute) if tokens_per_minute else None

    async def acquire(self, tokens: int) -> None:
        """Wait until one more request of ``tokens`` estimated tokens may be sent."""
        if self._requests is not None:
            await self._requests.acquire(1.0)
        if self._tokens is not None:
            await self._tokens.acquire(float(tokens))
