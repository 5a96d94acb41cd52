"""The accept/resample loop of synthetic data generation.

Every job (one prompt and one target) samples a completion with the
behavior instructions, grades it, and accepts it when every targeted
proposition, thresholded, has its target value. Otherwise it samples again,
up to ``max_attempts`` completions, and then gives up. Every attempt and
outcome goes to the :class:`~rbr.synth.store.SampleStore` as soon as it is
known, and jobs the store has finished are not sampled again.

Jobs run on one asyncio event loop with ``max_concurrency`` workers that
share one HTTP client. Grading runs in one worker thread that takes
completions waiting to be graded in batches of one response type, so
at most one grader call is in flight and it may grade several completions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import httpx

from rbr.data.types import Sample
from rbr.features.space import FeatureSpace
from rbr.graders.base import Grader
from rbr.graders.http import gather_or_cancel
from rbr.graders.runtime import run_sync
from rbr.policy.spec import Policy
from rbr.synth.batching import GradeFunction, batch_grader
from rbr.synth.client import ChatSampler, RequestFailure
from rbr.synth.inputs import SynthPrompt
from rbr.synth.instructions import behavior_instructions, generation_messages
from rbr.synth.store import SampleStore, job_key
from rbr.synth.targets import (
    GenerationTarget,
    TargetSettings,
    ordered_labels,
    plan_targets,
)

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
"""Probability at or above which a proposition counts as true, unless tuned."""

Outcome = Literal["accepted", "gave_up", "error"]
ProgressCallback = Callable[["JobResult"], None]


@dataclass(frozen=True)
class SynthJob:
    """One prompt and one target, with the generation request for them.

    Attributes:
        prompt: The prompt to answer.
        target: The proposition values the completion must have.
        instructions: The behavior instructions (system message).
        propositions: Simple propositions to grade each completion on: those
            the response type's features use plus every one its labels can
            target, in policy order.
    """

    prompt: SynthPrompt
    target: GenerationTarget
    instructions: str
    propositions: tuple[str, ...]

    @property
    def messages(self) -> list[dict[str, str]]:
        """The chat messages of the generation request."""
        return generation_messages(self.prompt.messages, self.instructions)

    @property
    def name(self) -> str:
        """The prompt id and target id, for logs."""
        return f"{self.prompt.prompt_id}/{self.target.target_id}"


@dataclass(frozen=True)
class Attempt:
    """One sampled completion and how it compared with the target.

    Attributes:
        number: 1-based attempt number within the job.
        completion: The sampled text.
        finish_reason: Why the server stopped generating (``length`` means
            the reply was cut at max_tokens).
        grades: P(yes) per graded proposition; None when grading failed.
        values: Thresholded truth value of each targeted proposition.
        missed: Targeted propositions whose value differs from the target.
        accepted: Whether every targeted proposition has its target value.
    """

    number: int
    completion: str
    finish_reason: str | None
    grades: dict[str, float] | None
    values: dict[str, bool]
    missed: tuple[str, ...]
    accepted: bool


@dataclass
class JobResult:
    """The attempts and outcome of one job.

    Attributes:
        outcome: ``accepted``, ``gave_up`` (every attempt missed the target)
            or ``error`` (a request failed for good; a rerun retries it).
        error: What failed, for ``error``.
        reused: Whether an earlier run had already finished the job, so this
            run sent no request for it.
    """

    job: SynthJob
    attempts: list[Attempt]
    outcome: Outcome
    error: str | None = None
    reused: bool = False

    @property
    def accepted_attempt(self) -> Attempt | None:
        """The accepted attempt, if any."""
        return next((a for a in self.attempts if a.accepted), None)


def graded_propositions(policy: Policy, response_type: str) -> tuple[str, ...]:
    """Return the simple propositions graded for completions of ``response_type``.

    These are the ones its features use, which include every possible flaw
    (flaws come from the ``ideal`` class), and every one its labels target.
    """
    needed = set(FeatureSpace(policy, response_type).propositions)
    for label in ordered_labels(policy, response_type):
        needed |= _simple_closure(policy, policy.labels[label].targets)
    return tuple(name for name in policy.propositions if name in needed)


def plan_jobs(
    prompts: Sequence[SynthPrompt],
    policy: Policy,
    settings: TargetSettings | None = None,
) -> list[SynthJob]:
    """Return every job of every prompt: one per generation target."""
    graded: dict[str, tuple[str, ...]] = {}
    jobs = []
    for prompt in prompts:
        rtype = prompt.response_type
        if rtype not in graded:
            graded[rtype] = graded_propositions(policy, rtype)
        for target in plan_targets(policy, rtype, prompt.prompt_id, settings):
            instructions = behavior_instructions(policy, target)
            jobs.append(SynthJob(prompt, target, instructions, graded[rtype]))
    return jobs


def judge(
    policy: Policy,
    target: GenerationTarget,
    grades: Mapping[str, float],
    thresholds: Mapping[str, float] | None = None,
) -> tuple[dict[str, bool], tuple[str, ...]]:
    """Return each targeted proposition's thresholded value and the ones that missed.

    A derived proposition is true when all its conditions hold.
    """
    cuts = thresholds or {}
    binary = {
        name: probability >= cuts.get(name, DEFAULT_THRESHOLD)
        for name, probability in grades.items()
    }
    values = {name: _holds(policy, name, binary) for name in target.values}
    missed = tuple(
        name for name, wanted in target.values.items() if values[name] != wanted
    )
    return values, missed


class Synthesizer:
    """Run generation jobs with resampling, grading and a resumable store.

    Args:
        policy: The policy the targets come from.
        sampler: Client of the model that writes completions.
        grader: Grader of the completions; wrap it in
            :class:`~rbr.graders.cache.CachedGrader` so regrading after a
            restart costs no request.
        store: Where attempts and outcomes are kept between runs.
        max_attempts: Completions sampled per job before it gives up.
        thresholds: Per-proposition decision thresholds (default 0.5).
        batch_size: Maximum number of completions per grader call.
    """

    def __init__(
        self,
        policy: Policy,
        sampler: ChatSampler,
        grader: Grader,
        store: SampleStore,
        *,
        max_attempts: int = 4,
        thresholds: Mapping[str, float] | None = None,
        batch_size: int = 16,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be 1 or more, got {max_attempts}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be 1 or more, got {batch_size}")
        self.policy = policy
        self.sampler = sampler
        self.grader = grader
        self.store = store
        self.max_attempts = max_attempts
        self.thresholds = dict(thresholds or {})
        self.batch_size = batch_size

    def run(
        self, jobs: Sequence[SynthJob], *, progress: ProgressCallback | None = None
    ) -> list[JobResult]:
        """Run every job and return the results in job order; see :meth:`arun`."""
        return run_sync(lambda: self.arun(jobs, progress=progress))

    async def arun(
        self, jobs: Sequence[SynthJob], *, progress: ProgressCallback | None = None
    ) -> list[JobResult]:
        """Run every job and return the results in job order.

        Args:
            jobs: Jobs from :func:`plan_jobs`.
            progress: Called on the event loop's thread after each job.

        Raises:
            SynthError: When the generator rejects requests in a way that
                would fail every request (bad key, unknown model or URL).
            GraderError: When the grader fails the same way.
        """
        results: list[JobResult | None] = [None] * len(jobs)
        pending = iter(enumerate(jobs))
        async with (
            self.sampler.session() as client,
            batch_grader(self.grader, self.policy, self.batch_size) as grade,
        ):

            async def work() -> None:
                for index, job in pending:
                    result = await self._run_job(client, grade, job)
                    results[index] = result
                    if progress is not None:
                        progress(result)

            workers = self.sampler.limits.max_concurrency
            await gather_or_cancel([work() for _ in range(workers)])
        return [result for result in results if result is not None]

    def job_settings(self, job: SynthJob) -> dict[str, object]:
        """Return what identifies a job's work in the store."""
        return {
            "prompt_id": job.prompt.prompt_id,
            "prompt": [[m.role, m.content] for m in job.prompt.messages],
            "response_type": job.target.response_type,
            "target": job.target.target_id,
            "values": job.target.values,
            "instructions": job.instructions,
            "propositions": list(job.propositions),
            "thresholds": {
                name: self.thresholds.get(name, DEFAULT_THRESHOLD)
                for name in job.propositions
            },
            "generator": self.sampler.identity,
            "grader": self.grader.identity,
        }

    async def _run_job(
        self, client: httpx.AsyncClient, grade: GradeFunction, job: SynthJob
    ) -> JobResult:
        settings = self.job_settings(job)
        key = job_key(settings)
        self.store.register(
            key, job.prompt.prompt_id, job.target.target_id, json.dumps(settings)
        )
        stored = self.store.load(key)
        attempts: list[Attempt] = []
        for item in stored.attempts:
            if item.grades is None:
                attempt, error = await self._grade_attempt(
                    grade, job, key, item.attempt, item.completion, item.finish_reason
                )
                if error is not None:
                    return JobResult(job, [*attempts, attempt], "error", error)
            else:
                attempt = self._attempt(
                    job, item.attempt, item.completion, item.finish_reason, item.grades
                )
            attempts.append(attempt)
        finished = self._finish_stored(key, job, attempts, stored.outcome)
        if finished is not None:
            return finished
        return await self._sample_until_done(client, grade, job, key, attempts)

    def _finish_stored(
        self, key: str, job: SynthJob, attempts: list[Attempt], outcome: str | None
    ) -> JobResult | None:
        """Return the result when the stored attempts already settle the job."""
        if any(a.accepted for a in attempts):
            if outcome != "accepted":
                self.store.finish(key, "accepted", len(attempts))
            return JobResult(job, attempts, "accepted", reused=outcome == "accepted")
        if len(attempts) >= self.max_attempts:
            if outcome != "gave_up":
                self.store.finish(key, "gave_up", len(attempts))
            return JobResult(job, attempts, "gave_up", reused=outcome == "gave_up")
        return None

    async def _sample_until_done(
        self,
        client: httpx.AsyncClient,
        grade: GradeFunction,
        job: SynthJob,
        key: str,
        attempts: list[Attempt],
    ) -> JobResult:
        while len(attempts) < self.max_attempts:
            number = len(attempts) + 1
            describe = f"generation for {job.name} (attempt {number})"
            reply = await self.sampler.sample(client, job.messages, describe=describe)
            if isinstance(reply, RequestFailure):
                return JobResult(
                    job, attempts, "error", f"generation failed: {reply.detail}"
                )
            self.store.add_attempt(key, number, reply.text, reply.finish_reason)
            attempt, error = await self._grade_attempt(
                grade, job, key, number, reply.text, reply.finish_reason
            )
            if error is not None:
                return JobResult(job, [*attempts, attempt], "error", error)
            attempts.append(attempt)
            if attempt.accepted:
                self.store.finish(key, "accepted", number)
                return JobResult(job, attempts, "accepted")
            logger.info(
                "%s attempt %d missed %s", job.name, number, ", ".join(attempt.missed)
            )
        self.store.finish(key, "gave_up", len(attempts))
        return JobResult(job, attempts, "gave_up")

    async def _grade_attempt(
        self,
        grade: GradeFunction,
        job: SynthJob,
        key: str,
        number: int,
        text: str,
        finish_reason: str | None,
    ) -> tuple[Attempt, str | None]:
        """Grade one completion and store its grades.

        Returns:
            The judged attempt and None, or, when some propositions were left
            unscored, the ungraded attempt and what went wrong.
        """
        sample = Sample(
            job.prompt.messages, text, job.target.response_type, f"{job.name}@{number}"
        )
        result = await grade(sample, job.propositions)
        if result.unscored:
            reasons = ", ".join(f"{u.proposition}: {u.reason}" for u in result.unscored)
            ungraded = Attempt(number, text, finish_reason, None, {}, (), False)
            return ungraded, f"grading left propositions unscored ({reasons})"
        grades = result.row(0)
        self.store.set_grades(key, number, grades)
        return self._attempt(job, number, text, finish_reason, grades), None

    def _attempt(
        self,
        job: SynthJob,
        number: int,
        text: str,
        finish_reason: str | None,
        grades: dict[str, float],
    ) -> Attempt:
        # Stored grades come back in key order; outputs list them in policy order.
        ordered = {name: grades[name] for name in job.propositions if name in grades}
        values, missed = judge(self.policy, job.target, ordered, self.thresholds)
        return Attempt(number, text, finish_reason, ordered, values, missed, not missed)


def _simple_closure(policy: Policy, requires: Mapping[str, bool]) -> set[str]:
    """Return the simple propositions a conjunction depends on, through derived ones."""
    names: set[str] = set()
    stack = list(requires)
    while stack:
        name = stack.pop()
        if name in policy.derived:
            stack.extend(policy.derived[name].requires)
        else:
            names.add(name)
    return names


def _holds(policy: Policy, name: str, binary: Mapping[str, bool]) -> bool:
    if name in policy.derived:
        return all(
            _holds(policy, ref, binary) == wanted
            for ref, wanted in policy.derived[name].requires.items()
        )
    return binary[name]
