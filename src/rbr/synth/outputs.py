"""Output files of synthetic data generation and the run summary.

``comparisons.jsonl``
    One row per accepted completion in the conversation format the fitter
    reads, with the graded probabilities under ``propositions``, so
    ``rbr fit comparisons.jsonl --grader labels`` fits without grading again.
``sft.jsonl``
    The accepted completions of each response type's ideal labels (its first
    ordering tier) as ``{"messages": [...prompt..., assistant reply]}``, the
    conversational format of TRL's ``SFTTrainer``.
``attempts.jsonl``
    Every attempt of every job: the completion, its grades, the thresholded
    target values, the propositions that missed and the job's outcome.
``summary.json``
    Counts per response type and label, and the run's settings.
``instructions.jsonl``
    Written instead of the others by ``--instructions-only``: the generation
    request of every (prompt, target) pair, with no model called.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbr.data.io import atomic_output
from rbr.policy.spec import Policy
from rbr.synth.inputs import SkippedRow
from rbr.synth.runner import JobResult, SynthJob
from rbr.synth.targets import ideal_labels

COMPARISONS_FILE = "comparisons.jsonl"
SFT_FILE = "sft.jsonl"
ATTEMPTS_FILE = "attempts.jsonl"
SUMMARY_FILE = "summary.json"
INSTRUCTIONS_FILE = "instructions.jsonl"
SUMMARY_FORMAT = "rbr-synth-summary"


@dataclass(frozen=True)
class LabelSummary:
    """Counts for one label of one response type.

    Attributes:
        prompts: Distinct prompts with a target of this label.
        targets: Jobs of this label (prompts times variants).
        accepted: Jobs whose completion met the target.
        gave_up: Jobs that used every attempt without meeting it.
        errors: Jobs stopped by a failed request.
        attempts: Completions sampled and graded for finished jobs.
        acceptance_rate: ``accepted / (accepted + gave_up)``; None when no
            job finished.
        mean_attempts: ``attempts / (accepted + gave_up)``; None when no job
            finished.
    """

    response_type: str
    label: str
    prompts: int
    targets: int
    accepted: int
    gave_up: int
    errors: int
    attempts: int
    acceptance_rate: float | None
    mean_attempts: float | None


def comparison_row(result: JobResult, grader_identity: str) -> dict[str, Any]:
    """Return the fitter's input row for an accepted job.

    Raises:
        ValueError: When the job has no accepted attempt.
    """
    attempt = result.accepted_attempt
    if attempt is None or attempt.grades is None:
        raise ValueError(f"job {result.job.name} has no accepted completion")
    job = result.job
    row: dict[str, Any] = {
        "prompt_id": job.prompt.prompt_id,
        "prompt": [m.to_dict() for m in job.prompt.messages],
        "completion": [{"role": "assistant", "content": attempt.completion}],
        "response_type": job.target.response_type,
    }
    if job.prompt.category is not None:
        row["category"] = job.prompt.category
    row["label"] = job.target.label
    row["propositions"] = dict(attempt.grades)
    row["grader"] = grader_identity
    row["target"] = job.target.target_id
    row["flaws"] = list(job.target.flaws)
    row["attempts"] = attempt.number
    return row


def sft_row(result: JobResult) -> dict[str, Any]:
    """Return the accepted completion as a chat-format SFT example."""
    attempt = result.accepted_attempt
    if attempt is None:
        raise ValueError(f"job {result.job.name} has no accepted completion")
    messages = [m.to_dict() for m in result.job.prompt.messages]
    messages.append({"role": "assistant", "content": attempt.completion})
    return {"messages": messages}


def attempt_rows(result: JobResult) -> Iterable[dict[str, Any]]:
    """Yield one row per attempt of a job."""
    job = result.job
    for attempt in result.attempts:
        yield {
            "prompt_id": job.prompt.prompt_id,
            "response_type": job.target.response_type,
            "label": job.target.label,
            "target": job.target.target_id,
            "flaws": list(job.target.flaws),
            "attempt": attempt.number,
            "completion": attempt.completion,
            "finish_reason": attempt.finish_reason,
            "grades": attempt.grades,
            "target_values": job.target.values,
            "graded_values": attempt.values,
            "missed": list(attempt.missed),
            "accepted": attempt.accepted,
            "outcome": result.outcome,
        }


def instruction_row(job: SynthJob) -> dict[str, Any]:
    """Return the generation request of one job, for ``--instructions-only``."""
    return {
        "prompt_id": job.prompt.prompt_id,
        "response_type": job.target.response_type,
        "category": job.prompt.category,
        "label": job.target.label,
        "target": job.target.target_id,
        "flaws": list(job.target.flaws),
        "target_values": job.target.values,
        "messages": job.messages,
    }


def label_summaries(results: Sequence[JobResult]) -> list[LabelSummary]:
    """Count outcomes per (response type, label), in first-seen order."""
    groups: dict[tuple[str, str], list[JobResult]] = {}
    for result in results:
        key = (result.job.target.response_type, result.job.target.label)
        groups.setdefault(key, []).append(result)
    return [_summarize(rtype, label, items) for (rtype, label), items in groups.items()]


def _summarize(response_type: str, label: str, items: list[JobResult]) -> LabelSummary:
    accepted = sum(r.outcome == "accepted" for r in items)
    gave_up = sum(r.outcome == "gave_up" for r in items)
    finished = accepted + gave_up
    attempts = sum(len(r.attempts) for r in items if r.outcome != "error")
    return LabelSummary(
        response_type=response_type,
        label=label,
        prompts=len({r.job.prompt.prompt_id for r in items}),
        targets=len(items),
        accepted=accepted,
        gave_up=gave_up,
        errors=len(items) - finished,
        attempts=attempts,
        acceptance_rate=accepted / finished if finished else None,
        mean_attempts=attempts / finished if finished else None,
    )


def build_summary(
    results: Sequence[JobResult],
    skipped: Sequence[SkippedRow],
    policy: Policy,
    metadata: Mapping[str, Any],
) -> dict[str, Any]:
    """Return the content of ``summary.json``."""
    labels = label_summaries(results)
    errors = [r for r in results if r.outcome == "error"]
    return {
        "format": SUMMARY_FORMAT,
        "version": 1,
        "policy_name": policy.name,
        "policy_hash": policy.content_hash,
        "prompts": len({r.job.prompt.prompt_id for r in results}),
        "skipped_rows": len(skipped),
        "targets": len(results),
        "accepted": sum(s.accepted for s in labels),
        "gave_up": sum(s.gave_up for s in labels),
        "errors": len(errors),
        "reused": sum(r.reused for r in results),
        "sft_rows": sum(1 for r in results if _is_ideal(policy, r)),
        "by_label": [dataclasses.asdict(s) for s in labels],
        "skipped": [dataclasses.asdict(row) for row in skipped],
        "failed": [
            {
                "prompt_id": r.job.prompt.prompt_id,
                "target": r.job.target.target_id,
                "error": r.error,
            }
            for r in errors
        ],
        **metadata,
    }


def write_outputs(
    folder: str | Path,
    results: Sequence[JobResult],
    skipped: Sequence[SkippedRow],
    policy: Policy,
    *,
    grader_identity: str,
    metadata: Mapping[str, Any],
) -> dict[str, Any]:
    """Write the four output files and return the summary.

    Every file is written to a temporary name first and renamed only after
    all four are complete, so an error while writing leaves none of them.
    """
    folder = Path(folder)
    accepted = [r for r in results if r.outcome == "accepted"]
    summary = build_summary(results, skipped, policy, metadata)
    contents = {
        COMPARISONS_FILE: _jsonl(comparison_row(r, grader_identity) for r in accepted),
        SFT_FILE: _jsonl(sft_row(r) for r in accepted if _is_ideal(policy, r)),
        ATTEMPTS_FILE: _jsonl(row for r in results for row in attempt_rows(r)),
        SUMMARY_FILE: json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
    }
    write_files(folder, contents)
    return summary


def write_instructions(folder: str | Path, jobs: Sequence[SynthJob]) -> Path:
    """Write ``instructions.jsonl`` and return its path."""
    path = Path(folder) / INSTRUCTIONS_FILE
    write_files(
        Path(folder), {INSTRUCTIONS_FILE: _jsonl(instruction_row(j) for j in jobs)}
    )
    return path


def write_files(folder: Path, contents: Mapping[str, str]) -> None:
    """Write several text files so that each appears only once all are written."""
    with contextlib.ExitStack() as stack:
        for name, text in contents.items():
            handle = stack.enter_context(atomic_output(folder / name))
            handle.write(text)


def _is_ideal(policy: Policy, result: JobResult) -> bool:
    target = result.job.target
    return result.outcome == "accepted" and target.label in ideal_labels(
        policy, target.response_type
    )


def _jsonl(rows: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
