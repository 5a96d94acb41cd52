"""Gather reward requests from many threads into shared pipeline calls.

verl's per-sample reward managers and OpenRLHF's single-turn executor call
the reward once per sample, from a pool of threads. Graded one at a time, an
LLM grader would pay a full request round trip per sample with nothing in
flight beside it. :class:`BatchingScorer` lets the first waiting caller score
everything that arrived meanwhile in one :meth:`RewardPipeline.score` call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from rbr.reward.pipeline import RewardPipeline, RewardRequest
from rbr.reward.routing import UNLABELLED_MODES, UnlabelledMode
from rbr.reward.rule_based import RewardBreakdown

logger = logging.getLogger(__name__)


@dataclass
class _Job:
    requests: list[RewardRequest]
    done: threading.Event = field(default_factory=threading.Event)
    results: list[RewardBreakdown] | None = None
    error: BaseException | None = None


class BatchingScorer:
    """Score requests from concurrent callers in shared batches.

    The first caller to find no batch in progress becomes the leader. It
    waits ``wait_s`` for other callers, then scores every queued request,
    at most ``max_batch`` per pipeline call but never splitting one caller's
    requests. It hands each caller its results and repeats until the queue
    is empty. When a shared call raises, the leader scores each caller's
    requests alone, so an error reaches only the caller that caused it.

    A pipeline that normalizes base rewards per prompt (``base_normalization``
    other than ``none``) normalizes within one call, so merging callers would
    change the result. With such a pipeline each caller's requests are
    scored alone, still one call at a time.

    Args:
        pipeline: The reward pipeline; only the leader calls it, so it is
            never called from two threads at once through this scorer.
        unlabelled: Passed to :meth:`RewardPipeline.score` with every batch.
        wait_s: Seconds the leader waits for more callers before the first
            batch.
        max_batch: Requests per pipeline call, when callers bring fewer each.
    """

    def __init__(
        self,
        pipeline: RewardPipeline,
        *,
        unlabelled: UnlabelledMode = "classify",
        wait_s: float = 0.01,
        max_batch: int = 256,
    ) -> None:
        if unlabelled not in UNLABELLED_MODES:
            raise ValueError(
                f"unknown unlabelled mode {unlabelled!r}; use one of "
                f"{', '.join(UNLABELLED_MODES)}"
            )
        if wait_s < 0:
            raise ValueError(f"wait_s must be 0 or more, got {wait_s}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be 1 or more, got {max_batch}")
        self.pipeline = pipeline
        self.unlabelled: UnlabelledMode = unlabelled
        self.wait_s = wait_s
        self.max_batch = max_batch
        self.merge = getattr(pipeline, "base_normalization", "none") == "none"
        """Whether requests of different callers share pipeline calls."""
        self._lock = threading.Lock()
        self._queue: list[_Job] = []
        self._leading = False
        self.calls = 0
        """Pipeline calls made so far, shared and retried ones included."""

    def score(self, requests: Sequence[RewardRequest]) -> list[RewardBreakdown]:
        """Score ``requests``, possibly together with other callers' requests.

        Raises:
            Whatever :meth:`RewardPipeline.score` raises for these requests.
        """
        job = _Job(list(requests))
        if not job.requests:
            return []
        with self._lock:
            self._queue.append(job)
            lead = not self._leading
            self._leading = True
        if lead:
            self._lead()
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.results is not None
        return job.results

    def _lead(self) -> None:
        if self.wait_s:
            time.sleep(self.wait_s)
        batch: list[_Job] = []
        try:
            while True:
                with self._lock:
                    batch = self._take()
                    if not batch:
                        self._leading = False
                        return
                self._run(batch)
        except BaseException as error:
            # Never leave a caller waiting: fail what is taken or queued.
            with self._lock:
                pending = batch + self._queue
                self._queue.clear()
                self._leading = False
            for job in pending:
                if not job.done.is_set():
                    job.error = error
                    job.done.set()
            raise

    def _take(self) -> list[_Job]:
        batch: list[_Job] = []
        size = 0
        while self._queue:
            count = len(self._queue[0].requests)
            if batch and (not self.merge or size + count > self.max_batch):
                break
            batch.append(self._queue.pop(0))
            size += count
        return batch

    def _run(self, batch: list[_Job]) -> None:
        requests = [r for job in batch for r in job.requests]
        self.calls += 1
        try:
            results = self.pipeline.score(requests, unlabelled=self.unlabelled)
        except Exception as error:
            if len(batch) == 1:
                batch[0].error = error
                batch[0].done.set()
                return
            logger.warning(
                "scoring %d requests of %d callers together failed (%s); "
                "scoring each caller alone",
                len(requests),
                len(batch),
                error,
            )
            for job in batch:
                self._run([job])
            return
        start = 0
        for job in batch:
            job.results = results[start : start + len(job.requests)]
            start += len(job.requests)
            job.done.set()
