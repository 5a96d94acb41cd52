"""``rbr score``: score completions with fitted RBR weights."""

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
from rbr.cli.grade_cmd import record_to_row
from rbr.data.io import write_jsonl
from rbr.data.types import Record, Sample
from rbr.fitting.grading import resolve_response_type
from rbr.fitting.weights import RBRWeights
from rbr.reward import RewardBreakdown, RuleBasedReward


@click.command("score")
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--weights",
    "weights_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Weights JSON written by 'rbr fit'.",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the scored rows (JSONL).",
)
@policy_option
@grader_options
@click.option(
    "--allow-grader-mismatch",
    is_flag=True,
    help="Accept weights fitted with a different grader.",
)
def score_command(
    data: Path,
    weights_path: Path,
    out_path: Path,
    policy_path: Path | None,
    grader_spec: dict,
    batch_size: int,
    allow_grader_mismatch: bool,
) -> None:
    """Score every row of DATA; write each row with its reward and breakdown."""
    check_output_path(out_path)
    policy = load_policy_or_default(policy_path)
    weights = RBRWeights.load(weights_path)
    records = read_data(data, policy)
    grader = build_grader(grader_spec, records, policy)
    with grader:
        reward = RuleBasedReward(
            policy, weights, grader, allow_grader_mismatch=allow_grader_mismatch
        )
        results = score_records(reward, records, str(data), batch_size)
    typed = [r for r in results if r.response_type is not None]
    fail_if_nothing_scored(
        [u for r in typed for u in r.unscored],
        sum(len(r.propositions) for r in typed),
    )
    count = write_jsonl(out_path, _rows(records, results))
    n_missing = sum(
        1 for r in results if r.total is None and r.response_type is not None
    )
    click.echo(f"scored {count} rows -> {out_path}")
    if n_missing:
        click.echo(
            f"warning: {n_missing} rows could not be scored (unscored propositions; "
            "see 'reward.unscored' in the output)",
            err=True,
        )


def score_records(
    reward: RuleBasedReward, records: list[Record], source: str, batch_size: int
) -> list[RewardBreakdown]:
    """Score records in batches with a progress bar."""
    samples = [_typed_sample(r, reward, source) for r in records]
    results: list[RewardBreakdown] = []
    base = [r.base_reward if r.base_reward is not None else 0.0 for r in records]
    with progress_bar(len(samples), "scoring") as bar:
        for start in range(0, len(samples), batch_size):
            stop = start + batch_size
            results.extend(reward.score(samples[start:stop], base[start:stop]))
            bar.update(len(samples[start:stop]))
    return results


def _typed_sample(record: Record, reward: RuleBasedReward, source: str) -> Sample:
    response_type = resolve_response_type(record, reward.policy, source=source)
    sample = record.sample
    return Sample(sample.prompt, sample.completion, response_type, sample.sample_id)


def _rows(
    records: list[Record], results: list[RewardBreakdown]
) -> Iterator[dict[str, Any]]:
    for record, result in zip(records, results):
        row = record_to_row(record)
        row["reward"] = result.to_dict()
        yield row
