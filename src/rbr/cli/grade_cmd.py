"""``rbr grade``: grade every proposition for every row and store the probabilities."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from rbr.cli.common import (
    build_grader,
    check_output_path,
    fail_if_nothing_scored,
    grader_options,
    load_policy_or_default,
    policy_option,
    progress_bar,
    read_data,
)
from rbr.data.io import write_jsonl
from rbr.data.types import Record
from rbr.fitting.grading import GradedRecords, grade_records
from rbr.graders.base import Grader
from rbr.graders.runtime import GraderStats


@click.command("grade")
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the graded rows (JSONL).",
)
@policy_option
@grader_options
def grade_command(
    data: Path,
    out_path: Path,
    policy_path: Path | None,
    grader_spec: dict,
    batch_size: int,
) -> None:
    """Grade DATA and write each row with its proposition probabilities.

    The output keeps every input field and replaces 'propositions' with the
    grader's probabilities, so 'rbr fit --grader labels' can fit on it without
    grading again. Cells the grader could not score are left out of
    'propositions' and listed under 'unscored'. Rows with no safety response
    type are written unchanged.
    """
    check_output_path(out_path)
    policy = load_policy_or_default(policy_path)
    records = read_data(data, policy)
    grader = build_grader(grader_spec, records, policy)
    with grader, progress_bar(len(records), "grading") as bar:
        graded = grade_records(
            records,
            policy,
            grader,
            source=str(data),
            batch_size=batch_size,
            progress=bar.update,
        )
    n_unscored = sum(len(b.unscored) for b in graded.batches.values())
    fail_if_nothing_scored(
        [u for b in graded.batches.values() for u in b.unscored],
        sum(b.probabilities.size for b in graded.batches.values()),
    )
    count = write_jsonl(out_path, graded_rows(graded, grader.identity))
    click.echo(f"graded {count} rows with {grader.identity} -> {out_path}")
    echo_request_stats(grader)
    if n_unscored:
        click.echo(
            f"warning: {n_unscored} proposition cells unscored (see 'unscored')",
            err=True,
        )


def echo_request_stats(grader: Grader) -> None:
    """Print the request counters of an HTTP grader, behind a cache or not."""
    stats = getattr(getattr(grader, "inner", grader), "stats", None)
    if isinstance(stats, GraderStats):
        from rbr.graders.openai_compat import describe_stats

        click.echo(f"grader requests: {describe_stats(stats)}")


def graded_rows(
    graded: GradedRecords, grader_identity: str
) -> Iterator[dict[str, Any]]:
    """Yield output rows in input order with the grades merged in."""
    values: dict[int, dict[str, float]] = {}
    failures: dict[int, list[dict[str, Any]]] = {}
    for batch in graded.batches.values():
        for k, index in enumerate(batch.indices):
            row = batch.probabilities[k]
            values[int(index)] = {
                name: float(row[j])
                for j, name in enumerate(batch.space.propositions)
                if row[j] == row[j]
            }
        for item in batch.unscored:
            failures.setdefault(item.sample_index, []).append(
                {
                    "proposition": item.proposition,
                    "reason": item.reason,
                    "detail": item.detail,
                    "raw": item.raw,
                }
            )
    for index, record in enumerate(graded.records):
        row = record_to_row(record)
        if index in values:
            row["propositions"] = values[index]
            row["grader"] = grader_identity
        if index in failures:
            row["unscored"] = failures[index]
        yield row


def record_to_row(record: Record) -> dict[str, Any]:
    """Return a record in the conversation format it was read from."""
    row: dict[str, Any] = {
        "prompt_id": record.prompt_id,
        "prompt": [m.to_dict() for m in record.sample.prompt],
        "completion": [{"role": "assistant", "content": record.sample.completion}],
    }
    if record.sample.response_type is not None:
        row["response_type"] = record.sample.response_type
    for key in ("category", "label", "base_reward"):
        value = getattr(record, key)
        if value is not None:
            row[key] = value
    if record.propositions:
        row["propositions"] = dict(record.propositions)
    row.update(record.extra)
    return row
