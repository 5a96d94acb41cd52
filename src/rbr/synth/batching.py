"""Grading of single completions in batches, on one worker thread.

Jobs submit one completion at a time. A background task takes the waiting
completions that share the first one's propositions, up to ``batch_size``,
and grades them in one grader call on a worker thread. At most one grader
call is in flight, so the grader's own concurrency limit holds for the run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from rbr.data.types import Sample
from rbr.graders.base import Grader, GradeResult
from rbr.policy.spec import Policy, Proposition

GradeFunction = Callable[[Sample, Sequence[str]], "asyncio.Future[GradeResult]"]


@dataclass
class _Request:
    sample: Sample
    propositions: tuple[str, ...]
    future: asyncio.Future[GradeResult]


@contextlib.asynccontextmanager
async def batch_grader(
    grader: Grader, policy: Policy, batch_size: int
) -> AsyncIterator[GradeFunction]:
    """Yield a function that grades one sample, batching waiting samples.

    One task takes the waiting requests that share the first one's
    propositions, up to ``batch_size``, and grades them in one call on a
    worker thread.
    """
    loop = asyncio.get_running_loop()
    queue: list[_Request] = []
    wake = asyncio.Event()
    executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="rbr-synth-grader"
    )

    def submit(sample: Sample, names: Sequence[str]) -> asyncio.Future[GradeResult]:
        future: asyncio.Future[GradeResult] = loop.create_future()
        queue.append(_Request(sample, tuple(names), future))
        wake.set()
        return future

    async def serve() -> None:
        while True:
            await wake.wait()
            wake.clear()
            while queue:
                batch = _take_batch(queue, batch_size)
                propositions = [policy.propositions[n] for n in batch[0].propositions]
                await _grade_batch(loop, executor, grader, batch, propositions)

    server = asyncio.create_task(serve())
    try:
        yield submit
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        executor.shutdown(wait=False, cancel_futures=True)


def _take_batch(queue: list[_Request], batch_size: int) -> list[_Request]:
    """Remove up to ``batch_size`` requests with the first one's propositions."""
    first = queue[0].propositions
    batch = [request for request in queue if request.propositions == first][:batch_size]
    for request in batch:
        queue.remove(request)
    return batch


async def _grade_batch(
    loop: asyncio.AbstractEventLoop,
    executor: concurrent.futures.Executor,
    grader: Grader,
    batch: list[_Request],
    propositions: list[Proposition],
) -> None:
    samples = [request.sample for request in batch]
    try:
        result = await loop.run_in_executor(
            executor, grader.grade, samples, propositions
        )
    except Exception as error:  # handed to every waiting job, which re-raises it
        for request in batch:
            if not request.future.done():
                request.future.set_exception(error)
        return
    for index, request in enumerate(batch):
        if request.future.done():
            continue
        unscored = [u for u in result.unscored if u.sample_index == index]
        row = result.probabilities[index : index + 1]
        request.future.set_result(GradeResult(result.propositions, row, unscored))
