"""``rbr quickstart``: grade, fit and score the bundled example data end to end."""

from __future__ import annotations

import json
from pathlib import Path

import click

from rbr.cli.common import (
    DEFAULT_GRADER,
    build_grader,
    default_grader_spec,
    progress_bar,
)
from rbr.cli.fit_cmd import fit_report, print_class_order_warnings, print_fit_summary
from rbr.cli.score_cmd import _rows, score_records
from rbr.data.io import atomic_output, read_records, write_jsonl
from rbr.examples import example_path
from rbr.fitting.grading import grade_records
from rbr.fitting.rbr_fit import FitSettings, fit_rbr
from rbr.graders.factory import GRADER_KINDS
from rbr.policy import load_default_policy
from rbr.reward import RuleBasedReward


@click.command("quickstart")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("rbr-quickstart"),
    show_default=True,
    help="Folder for the weights, fit report and scored rows.",
)
@click.option(
    "--grader",
    "grader_kind",
    type=click.Choice(GRADER_KINDS),
    default=DEFAULT_GRADER,
    show_default=True,
    help="Grader that answers the propositions.",
)
def quickstart_command(out_dir: Path, grader_kind: str) -> None:
    """Grade, fit and score the example conversations that ship with rbr.

    Uses the built-in safety policy. Writes weights.json, fit_report.json and
    scores.jsonl into the output folder and prints the fit summary and the
    mean reward per response type and completion label.
    """
    data = example_path()
    policy = load_default_policy()
    records = read_records(data)
    click.echo(f"policy {policy.name!r}; {len(records)} example rows from {data.name}")
    grader = build_grader(default_grader_spec(grader_kind), records, policy)
    with grader:
        with progress_bar(len(records), "grading") as bar:
            graded = grade_records(
                records, policy, grader, source=str(data), progress=bar.update
            )
        # The defaults of 'rbr fit', so its output matches this summary.
        settings = FitSettings()
        weights = fit_rbr(graded, policy, grader.identity, settings, source=str(data))
        reward = RuleBasedReward(policy, weights, grader)
        results = score_records(reward, records, str(data), batch_size=64)
    weights.save(out_dir / "weights.json")
    with atomic_output(out_dir / "fit_report.json") as handle:
        json.dump(fit_report(weights, policy), handle, indent=2)
    write_jsonl(out_dir / "scores.jsonl", _rows(records, results))
    click.echo("")
    print_fit_summary(weights)
    print_class_order_warnings(weights, policy)
    click.echo("")
    _print_label_means(records, results)
    click.echo(f"\nwrote {out_dir}/weights.json, fit_report.json and scores.jsonl")


def _print_label_means(records, results) -> None:
    sums: dict[tuple[str, str], list[float]] = {}
    for record, result in zip(records, results):
        if result.total is None or result.response_type is None:
            continue
        key = (result.response_type, record.label or "-")
        sums.setdefault(key, []).append(result.total)
    click.echo(f"{'response type':<15} {'label':<22} {'n':>3} {'mean reward':>12}")
    for (response_type, label), values in sorted(
        sums.items(), key=lambda item: (item[0][0], -sum(item[1]) / len(item[1]))
    ):
        mean = sum(values) / len(values)
        click.echo(f"{response_type:<15} {label:<22} {len(values):>3} {mean:>12.3f}")
