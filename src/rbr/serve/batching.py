"""Micro-batching: merge concurrent scoring requests into grader batches.

Handlers submit their items to one :class:`MicroBatcher`. A single worker
task takes up to ``max_batch_size`` queued items at a time. It waits at most
``max_wait_s`` for a batch to fill, counted from the oldest item's arrival or
from the end of the previous batch, whichever is later. It then scores the
batch in a worker thread while the event loop keeps accepting requests.
The queue is bounded in items: a submission that does not fit fails at once
with :class:`QueueFullError`, so callers never wait on a queue that cannot
take them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rbr.errors import RbrError
from rbr.reward.pipeline import RewardRequest
from rbr.reward.rule_based import RewardBreakdown

logger = logging.getLogger(__name__)

ScoreFunction = Callable[[Sequence[RewardRequest]], list[RewardBreakdown]]
"""Scores a batch, returning one breakdown per request in order."""

BatchObserver = Callable[[int, float], None]
"""Called after each batch with its item count and its scoring time (s)."""


class QueueFullError(RbrError):
    """The queue has no room for a submission.

    Attributes:
        retry_after_s: Estimated seconds until the queue has drained.
    """

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SubmissionTooLargeError(RbrError):
    """A submission has more items than the whole queue can hold."""


class BatcherClosedError(RbrError):
    """The batcher is shutting down and takes no new submissions."""


@dataclass(eq=False)
class _Job:
    requests: Sequence[RewardRequest]
    future: asyncio.Future[list[RewardBreakdown]]
    results: list[RewardBreakdown | None]
    remaining: int
    enqueued_at: float


@dataclass(eq=False)
class _Slice:
    """Items ``start:stop`` of one job; a job larger than a batch is split."""

    job: _Job
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    def requests(self) -> Sequence[RewardRequest]:
        return self.job.requests[self.start : self.stop]


class MicroBatcher:
    """Queue scoring requests and run them through ``score`` in batches.

    Args:
        score: Scores one batch; called in a worker thread, one batch at a
            time.
        max_batch_size: Maximum items per call of ``score``. A submission that
            is larger is split over several batches, unless
            ``merge_submissions`` is False.
        max_wait_s: Maximum time a batch waits to fill, counted from its
            oldest item's arrival or the end of the previous batch, whichever
            is later.
        max_queue: Maximum items waiting to be scored, in-flight items
            excluded.
        merge_submissions: Merge items of different submissions into one
            batch. When False, every submission is scored alone and whole,
            as when the base reward is normalized per prompt within a call.
        on_batch: Called after each batch with its size and duration.

    Raises:
        ValueError: When a size or time is not positive.
    """

    def __init__(
        self,
        score: ScoreFunction,
        *,
        max_batch_size: int = 64,
        max_wait_s: float = 0.005,
        max_queue: int = 16384,
        merge_submissions: bool = True,
        on_batch: BatchObserver | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1:
            raise ValueError(
                f"max_batch_size ({max_batch_size}) and max_queue ({max_queue}) "
                "must be at least 1"
            )
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be 0 or more, got {max_wait_s}")
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.merge_submissions = merge_submissions
        self._score = score
        self._on_batch = on_batch
        self._queue: deque[_Slice] = deque()
        self._pending = 0
        self._in_flight = 0
        self._mean_batch_s = 0.0
        self._batch_done_at = 0.0
        self._closing = False
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def pending_items(self) -> int:
        """Items queued and not yet taken into a batch."""
        return self._pending

    @property
    def in_flight_items(self) -> int:
        """Items of the batch being scored now."""
        return self._in_flight

    @property
    def closing(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._closing

    def retry_after_s(self) -> int:
        """Estimate the seconds until the queued items are scored (at least 1)."""
        batches = self._pending / self.max_batch_size + 1
        return max(1, math.ceil(batches * self._mean_batch_s))

    async def submit(self, requests: Sequence[RewardRequest]) -> list[RewardBreakdown]:
        """Queue ``requests`` and wait for their breakdowns, in order.

        Raises:
            QueueFullError: When the queue has no room for them now.
            SubmissionTooLargeError: When they exceed ``max_queue`` on their own.
            BatcherClosedError: When the batcher is shutting down.
            Exception: Whatever ``score`` raised for their batch.
        """
        if self._closing:
            raise BatcherClosedError("the server is shutting down")
        n = len(requests)
        if n == 0:
            return []
        if n > self.max_queue:
            raise SubmissionTooLargeError(
                f"the request has {n} items but the queue has room for at most "
                f"{self.max_queue}; send fewer items per request or raise --max-queue"
            )
        if self._pending + n > self.max_queue:
            raise QueueFullError(
                f"the queue is full ({self._pending} of {self.max_queue} items "
                f"waiting, {n} more requested); retry later",
                self.retry_after_s(),
            )
        loop = asyncio.get_running_loop()
        event = self._start(loop)
        job = _Job(requests, loop.create_future(), [None] * n, n, loop.time())
        self._queue.append(_Slice(job, 0, n))
        self._pending += n
        event.set()
        return await job.future

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Refuse new submissions, score what is queued, then stop the worker.

        Submissions still queued after ``timeout_s`` fail with
        :class:`BatcherClosedError`.
        """
        self._closing = True
        worker = self._worker
        if worker is None:
            return
        if self._arrived is not None:
            self._arrived.set()
        done, _ = await asyncio.wait({worker}, timeout=timeout_s)
        if not done:
            logger.warning(
                "scoring did not finish within %.0f s of shutdown; dropping %d "
                "queued items",
                timeout_s,
                self._pending,
            )
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        self._fail_queued(BatcherClosedError("the server shut down before scoring"))
        self._worker = None

    def _start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        if self._arrived is None or self._worker is None or self._worker.done():
            self._arrived = asyncio.Event()
            self._worker = loop.create_task(self._run(), name="rbr-micro-batcher")
        return self._arrived

    async def _run(self) -> None:
        assert self._arrived is not None
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            batch: list[_Slice] = []
            try:
                await self._wait_to_fill()
                batch = self._take_batch()
                if batch:
                    await self._score_batch(batch)
            except asyncio.CancelledError:
                for part in batch:
                    self._fail(part.job, BatcherClosedError("the server shut down"))
                raise
            except Exception as error:
                # A bug here must not stop the worker: every later request
                # would then wait forever.
                logger.exception("micro-batcher failed on a batch; continuing")
                for part in batch:
                    self._fail(part.job, error)

    async def _wait_to_fill(self) -> None:
        if not self.merge_submissions or self._arrived is None:
            return
        loop = asyncio.get_running_loop()
        # Counting from the end of the previous batch too lets the clients
        # that just got their results join. Counting only from the oldest
        # arrival would let closed-loop clients split into two half-full
        # batches that alternate for good.
        start = max(self._queue[0].job.enqueued_at, self._batch_done_at)
        deadline = start + self.max_wait_s
        while self._pending < self.max_batch_size and not self._closing:
            timeout = deadline - loop.time()
            if timeout <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except asyncio.TimeoutError:
                return

    def _take_batch(self) -> list[_Slice]:
        batch: list[_Slice] = []
        size = 0
        while self._queue and size < self.max_batch_size:
            part = self._queue[0]
            if part.job.future.done():
                # Its client went away (the future was cancelled) or an
                # earlier slice of the job failed.
                self._queue.popleft()
                self._pending -= part.size
                continue
            if not self.merge_submissions:
                if batch:
                    break
                self._queue.popleft()
                self._pending -= part.size
                return [part]
            room = self.max_batch_size - size
            if part.size <= room:
                self._queue.popleft()
                portion = part
            else:
                portion = _Slice(part.job, part.start, part.start + room)
                part.start += room
            batch.append(portion)
            size += portion.size
            self._pending -= portion.size
        return batch

    async def _score_batch(self, batch: list[_Slice]) -> None:
        requests = [r for part in batch for r in part.requests()]
        self._in_flight = len(requests)
        try:
            results = await self._timed_score(requests)
        except Exception as error:
            if len({id(part.job) for part in batch}) == 1:
                self._fail(batch[0].job, error)
                return
            logger.warning(
                "a merged batch of %d items failed (%s); scoring its %d requests "
                "one by one",
                len(requests),
                error,
                len(batch),
            )
            for part in batch:
                await self._score_alone(part)
            return
        finally:
            self._in_flight = 0
            self._batch_done_at = asyncio.get_running_loop().time()
        offset = 0
        for part in batch:
            self._deliver(part, results[offset : offset + part.size])
            offset += part.size

    async def _score_alone(self, part: _Slice) -> None:
        if part.job.future.done():
            return
        self._in_flight = part.size
        try:
            results = await self._timed_score(list(part.requests()))
        except Exception as error:
            self._fail(part.job, error)
        else:
            self._deliver(part, results)
        finally:
            self._in_flight = 0

    async def _timed_score(
        self, requests: Sequence[RewardRequest]
    ) -> list[RewardBreakdown]:
        started = time.perf_counter()
        results = await asyncio.to_thread(self._score, requests)
        elapsed = time.perf_counter() - started
        if len(results) != len(requests):
            raise RuntimeError(
                f"scoring returned {len(results)} results for {len(requests)} items"
            )
        self._mean_batch_s = (
            elapsed
            if self._mean_batch_s == 0
            else 0.8 * self._mean_batch_s + 0.2 * elapsed
        )
        if self._on_batch is not None:
            self._on_batch(len(requests), elapsed)
        return results

    def _deliver(self, part: _Slice, results: Sequence[RewardBreakdown]) -> None:
        job = part.job
        if job.future.done():
            return
        job.results[part.start : part.stop] = results
        job.remaining -= part.size
        if job.remaining == 0:
            job.future.set_result([r for r in job.results if r is not None])

    def _fail(self, job: _Job, error: Exception) -> None:
        if not job.future.done():
            job.future.set_exception(error)

    def _fail_queued(self, error: Exception) -> None:
        while self._queue:
            part = self._queue.popleft()
            self._fail(part.job, error)
        self._pending = 0
