"""``rbr grader``: commands that measure graders against human labels."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from rbr.cli.common import (
    ErrorReportingGroup,
    build_grader,
    grader_options,
    load_policy_or_default,
    policy_option,
    progress_bar,
)
from rbr.cli.grader_train_cmd import read_labelled_file, train_command
from rbr.data.io import atomic_output
from rbr.data.types import Record
from rbr.evaluation.grader_eval import evaluate_grader
from rbr.evaluation.report import GraderReport
from rbr.evaluation.training_notes import training_overlap_note
from rbr.features.space import feature_spaces
from rbr.graders.base import Grader
from rbr.policy import Policy


@click.group("grader", cls=ErrorReportingGroup)
def grader_group() -> None:
    """Measure graders against human-labelled data and train the offline grader."""


@grader_group.command("eval")
@click.option(
    "--gold",
    "gold_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Gold file (JSONL or Parquet) whose 'propositions' field contains human "
    "true/false labels.",
)
@policy_option
@grader_options
@click.option(
    "--tuning-fraction",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Share of prompts, from 0 to 1, used to tune each proposition's threshold. "
    "The other prompts measure it. 0 keeps every threshold at 0.5.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the random split of prompts into tuning and held-out sets.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the full report (every metric and count) to this JSON file.",
)
@click.option(
    "--thresholds-out",
    "thresholds_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the tuned per-proposition thresholds (probabilities from 0 to 1) "
    "to this JSON file.",
)
def eval_command(
    gold_path: Path,
    policy_path: Path | None,
    grader_spec: dict[str, Any],
    batch_size: int,
    tuning_fraction: float,
    seed: int,
    json_path: Path | None,
    thresholds_path: Path | None,
) -> None:
    """Grade a gold file and compare the grader with its human labels.

    Prints per-proposition accuracy, balanced accuracy, F1 and ROC-AUC at
    threshold 0.5, the tuned threshold and its accuracy on held-out prompts,
    then per response type how often the completion class from graded
    propositions equals the class from human labels.

    With --few-shot-from set to the gold file itself, a gold item is never
    shown as its own example, because examples equal to the graded
    conversation and completion are skipped.

    An offline grader whose artifact lists its training rows gets a note
    when gold rows are among them. An older artifact without that list gets
    one only when it is the shipped artifact.
    """
    gold = load_gold(gold_path, policy_path, grader_spec)
    policy, records, grader, note = gold.policy, gold.records, gold.grader, gold.note
    with grader, progress_bar(len(records), "grading") as bar:
        report = evaluate_grader(
            records,
            policy,
            grader,
            tuning_fraction=tuning_fraction,
            random_state=seed,
            source=str(gold_path),
            batch_size=batch_size,
            progress=bar.update,
        )
    skipped = propositions_not_evaluated(report, policy)
    print_report(report)
    for name, reason in skipped.items():
        click.echo(f"not evaluated: {name} ({reason})")
    extra = {"grader_training_note": note, "propositions_not_evaluated": skipped}
    _write_outputs(report, extra, json_path, thresholds_path)


@dataclass(frozen=True)
class GoldGrading:
    """A gold file read for grading, with its grader and training-data note."""

    policy: Policy
    records: list[Record]
    grader: Grader
    note: str | None


def load_gold(
    gold_path: Path, policy_path: Path | None, grader_spec: dict[str, Any]
) -> GoldGrading:
    """Read a gold file, build the grader and print its training-data note, if any."""
    policy = load_policy_or_default(policy_path)
    records = read_labelled_file(gold_path, policy)
    grader = build_grader(grader_spec, records, policy)
    note = training_overlap_note(
        grader, records, gold_path=gold_path, artifact=grader_spec["artifact"]
    )
    if note:
        click.echo(f"note: {note}", err=True)
    return GoldGrading(policy, list(records), grader, note)


def propositions_not_evaluated(report: GraderReport, policy: Policy) -> dict[str, str]:
    """Return, for each policy proposition missing from ``report``, the reason."""
    required = {
        name for space in feature_spaces(policy).values() for name in space.propositions
    }
    reasons = {}
    for name in policy.propositions:
        if name in report.propositions:
            continue
        if name in required:
            reasons[name] = "no gold row has a response type that requires it"
        else:
            reasons[name] = (
                "no response type of the policy requires it, so no row is graded on it"
            )
    return reasons


def _write_outputs(
    report: GraderReport,
    extra: dict[str, Any],
    json_path: Path | None,
    thresholds_path: Path | None,
) -> None:
    """Write the requested files, each through a temporary file.

    ``extra`` holds fields added to the report's JSON. Both texts are built
    before anything is written, and the files are renamed into place only
    after both were written, so an error leaves neither file behind.
    """
    outputs: list[tuple[Path, str]] = []
    if json_path is not None:
        data = {**report.to_dict(), **extra}
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        outputs.append((json_path, text))
    if thresholds_path is not None and report.thresholds is not None:
        outputs.append((thresholds_path, report.thresholds.to_json()))
    with contextlib.ExitStack() as stack:
        for path, text in outputs:
            stack.enter_context(atomic_output(path)).write(text)
    for path, _ in outputs:
        click.echo(f"written: {path}")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_report(report: GraderReport) -> None:
    """Print the per-proposition table, the macro line and class agreement."""
    width = max([len("proposition"), *(len(name) for name in report.propositions)])
    click.echo(
        f"{'proposition':<{width}} {'n':>5} {'pos':>5} {'acc':>6} {'balacc':>6} "
        f"{'F1':>6} {'AUC':>6} {'thresh':>6} {'ho acc':>6} {'unscored':>8}"
    )
    for name, item in report.propositions.items():
        click.echo(
            f"{name:<{width}} {item.n:>5} {item.positives:>5} {_fmt(item.accuracy):>6} "
            f"{_fmt(item.balanced_accuracy):>6} {_fmt(item.f1):>6} "
            f"{_fmt(item.roc_auc):>6} {_fmt(item.threshold):>6} "
            f"{_fmt(item.held_out_accuracy):>6} {item.unscored:>8}"
        )
    macro = report.macro
    label = f"macro ({macro['n_propositions']} propositions)"
    click.echo(
        f"{label:<{width + 12}} {_fmt(macro['accuracy']):>6} "
        f"{_fmt(macro['balanced_accuracy']):>6} {_fmt(macro['f1']):>6} "
        f"{_fmt(macro['roc_auc']):>6} {'':>6} {_fmt(macro['held_out_accuracy']):>6}"
    )
    click.echo(
        "threshold 0.5 for acc, balacc and F1; 'ho acc' is the accuracy at the tuned "
        f"threshold on {report.n_held_out} held-out rows of {report.n_evaluated}"
    )
    if report.unscored_reasons:
        reasons = ", ".join(f"{k}: {v}" for k, v in report.unscored_reasons.items())
        click.echo(f"unscored cells by reason: {reasons}")
    click.echo("")
    _print_class_agreement(report)


def _print_class_agreement(report: GraderReport) -> None:
    click.echo(
        f"{'response type':<15} {'rows':>5} {'compared':>8} {'agree@0.5':>9} "
        f"{'ho@0.5':>7} {'ho@tuned':>8}"
    )
    for name, item in report.response_types.items():
        click.echo(
            f"{name:<15} {item.n:>5} {item.n_compared:>8} "
            f"{_fmt(item.agreement_at_default):>9} "
            f"{_fmt(item.held_out_agreement_at_default):>7} "
            f"{_fmt(item.held_out_agreement):>8}"
        )
    click.echo(
        "class agreement: share of compared rows whose class from graded propositions "
        "equals the class from human labels ('ho': held-out rows)"
    )


grader_group.add_command(train_command)
