"""Support for graders that send requests from an asyncio event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine built by ``factory`` to completion from synchronous code.

    Uses ``asyncio.run`` when this thread has no running event loop, and a
    fresh thread with its own loop when it has one (inside Jupyter or an
    async caller), since a running loop cannot be blocked on.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())  # type: ignore[arg-type]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class GraderStats:
    """Counters of one grader since it was built.

    Attributes:
        requests_sent: HTTP requests sent, retries included.
        retries: Retries by cause: ``rate_limited``, ``server_error``,
            ``timeout``, ``connection_error`` or ``malformed_reply``.
        unscored: Cells left unscored by reason.
    """

    requests_sent: int
    retries: dict[str, int]
    unscored: dict[str, int]


class StatsCounter:
    """Thread-safe counters behind :attr:`OpenAICompatibleGrader.stats`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = 0
        self._retries: dict[str, int] = {}
        self._unscored: dict[str, int] = {}

    def count_request(self) -> None:
        with self._lock:
            self._requests += 1

    def count_retry(self, cause: str) -> None:
        with self._lock:
            self._retries[cause] = self._retries.get(cause, 0) + 1

    def count_unscored(self, reason: str) -> None:
        with self._lock:
            self._unscored[reason] = self._unscored.get(reason, 0) + 1

    def snapshot(self) -> GraderStats:
        with self._lock:
            return GraderStats(
                self._requests, dict(self._retries), dict(self._unscored)
            )
