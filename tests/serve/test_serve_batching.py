"""MicroBatcher: merging, splitting, the bounded queue, failures and shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from rbr.data.types import Message
from rbr.reward.pipeline import RewardRequest
from rbr.reward.rule_based import RewardBreakdown
from rbr.serve.batching import (
    BatcherClosedError,
    MicroBatcher,
    QueueFullError,
    SubmissionTooLargeError,
)

PROMPT = (Message("user", "hello"),)


class RecordingScorer:
    """Score each request with ``float(request_id)``; record every batch."""

    def __init__(self, delay_s: float = 0.0, fail_on: str | None = None) -> None:
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.batches: list[list[str]] = []
        self._lock = threading.Lock()

    def __call__(self, requests: Sequence[RewardRequest]) -> list[RewardBreakdown]:
        ids = [str(r.request_id) for r in requests]
        with self._lock:
            self.batches.append(ids)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_on is not None and self.fail_on in ids:
            raise RuntimeError(f"cannot score {self.fail_on}")
        return [RewardBreakdown(float(i), float(i), 0.0, "Comply") for i in ids]


def requests_for(*ids: int) -> list[RewardRequest]:
    return [RewardRequest(PROMPT, "hi", "Comply", request_id=str(i)) for i in ids]


def totals(results: Sequence[RewardBreakdown]) -> list[float | None]:
    return [r.total for r in results]


def test_concurrent_submissions_are_merged():
    scorer = RecordingScorer(delay_s=0.05)

    async def scenario() -> list[list[RewardBreakdown]]:
        batcher = MicroBatcher(scorer, max_batch_size=64, max_wait_s=0.02)
        results = await asyncio.gather(
            *(batcher.submit(requests_for(i)) for i in range(20))
        )
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert [totals(r) for r in results] == [[float(i)] for i in range(20)]
    assert len(scorer.batches) < 20
    assert sum(len(b) for b in scorer.batches) == 20


def test_large_submission_is_split_in_order():
    scorer = RecordingScorer()

    async def scenario() -> list[RewardBreakdown]:
        batcher = MicroBatcher(scorer, max_batch_size=4, max_wait_s=0)
        result = await batcher.submit(requests_for(*range(10)))
        await batcher.stop()
        return result

    assert totals(asyncio.run(scenario())) == [float(i) for i in range(10)]
    assert [len(b) for b in scorer.batches] == [4, 4, 2]


def test_full_queue_raises_at_once():
    scorer = RecordingScorer(delay_s=0.3)

    async def scenario() -> tuple[float, int]:
        batcher = MicroBatcher(scorer, max_batch_size=1, max_wait_s=0, max_queue=2)
        first = asyncio.ensure_future(batcher.submit(requests_for(0)))
        while batcher.in_flight_items == 0:
            await asyncio.sleep(0.005)
        queued = [
            asyncio.ensure_future(batcher.submit(requests_for(i))) for i in (1, 2)
        ]
        await asyncio.sleep(0)
        started = time.perf_counter()
        with pytest.raises(QueueFullError) as caught:
            await batcher.submit(requests_for(3))
        elapsed = time.perf_counter() - started
        await asyncio.gather(first, *queued)
        await batcher.stop()
        return elapsed, caught.value.retry_after_s

    elapsed, retry_after = asyncio.run(scenario())
    assert elapsed < 0.1
    assert retry_after >= 1


def test_submission_larger_than_queue_is_rejected():
    async def scenario() -> None:
        batcher = MicroBatcher(RecordingScorer(), max_queue=3)
        with pytest.raises(SubmissionTooLargeError, match="at most 3"):
            await batcher.submit(requests_for(1, 2, 3, 4))

    asyncio.run(scenario())


def test_failed_merged_batch_fails_only_its_submission():
    scorer = RecordingScorer(delay_s=0.02, fail_on="13")

    async def scenario() -> list[object]:
        batcher = MicroBatcher(scorer, max_batch_size=64, max_wait_s=0.05)
        outcomes = await asyncio.gather(
            batcher.submit(requests_for(11)),
            batcher.submit(requests_for(12, 13)),
            batcher.submit(requests_for(14)),
            return_exceptions=True,
        )
        await batcher.stop()
        return outcomes

    first, failed, last = asyncio.run(scenario())
    assert isinstance(failed, RuntimeError)
    assert totals(first) == [11.0]
    assert totals(last) == [14.0]
    assert scorer.batches[0] == ["11", "12", "13", "14"]


def test_no_merging_scores_each_submission_whole():
    scorer = RecordingScorer(delay_s=0.02)

    async def scenario() -> None:
        batcher = MicroBatcher(
            scorer, max_batch_size=2, max_wait_s=0.05, merge_submissions=False
        )
        await asyncio.gather(
            batcher.submit(requests_for(1, 2, 3)), batcher.submit(requests_for(4))
        )
        await batcher.stop()

    asyncio.run(scenario())
    assert sorted(scorer.batches) == [["1", "2", "3"], ["4"]]


def test_stop_scores_queued_items_then_refuses():
    scorer = RecordingScorer(delay_s=0.05)

    async def scenario() -> list[RewardBreakdown]:
        batcher = MicroBatcher(scorer, max_batch_size=1, max_wait_s=0)
        pending = [
            asyncio.ensure_future(batcher.submit(requests_for(i))) for i in (1, 2)
        ]
        await asyncio.sleep(0.01)
        await batcher.stop(timeout_s=5)
        with pytest.raises(BatcherClosedError):
            await batcher.submit(requests_for(3))
        return [r for task in pending for r in task.result()]

    assert totals(asyncio.run(scenario())) == [1.0, 2.0]


def test_cancelled_submission_is_not_scored():
    scorer = RecordingScorer(delay_s=0.1)

    async def scenario() -> None:
        batcher = MicroBatcher(scorer, max_batch_size=1, max_wait_s=0)
        first = asyncio.ensure_future(batcher.submit(requests_for(1)))
        while batcher.in_flight_items == 0:
            await asyncio.sleep(0.005)
        dropped = asyncio.ensure_future(batcher.submit(requests_for(2)))
        await asyncio.sleep(0)
        dropped.cancel()
        await first
        await batcher.stop()
        assert batcher.pending_items == 0

    asyncio.run(scenario())
    assert scorer.batches == [["1"]]


def test_empty_submission_returns_at_once():
    async def scenario() -> list[RewardBreakdown]:
        return await MicroBatcher(RecordingScorer()).submit([])

    assert asyncio.run(scenario()) == []


def test_invalid_sizes_raise():
    with pytest.raises(ValueError, match="at least 1"):
        MicroBatcher(RecordingScorer(), max_batch_size=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        MicroBatcher(RecordingScorer(), max_wait_s=-1)


def test_stop_timeout_fails_in_flight_and_queued():
    scorer = RecordingScorer(delay_s=0.3)

    async def scenario() -> list[object]:
        batcher = MicroBatcher(scorer, max_batch_size=1, max_wait_s=0)
        in_flight = asyncio.ensure_future(batcher.submit(requests_for(1)))
        while batcher.in_flight_items == 0:
            await asyncio.sleep(0.005)
        queued = asyncio.ensure_future(batcher.submit(requests_for(2)))
        await asyncio.sleep(0)
        await batcher.stop(timeout_s=0.05)
        return await asyncio.gather(in_flight, queued, return_exceptions=True)

    in_flight, queued = asyncio.run(scenario())
    assert isinstance(in_flight, BatcherClosedError)
    assert isinstance(queued, BatcherClosedError)
