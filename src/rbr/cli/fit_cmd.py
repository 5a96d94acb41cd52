"""``rbr fit``: fit RBR weights from labelled comparison data."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import click

from rbr.cli.common import (
    build_grader,
    check_output_path,
    grader_options,
    load_policy_or_default,
    policy_option,
    progress_bar,
    read_data,
)
from rbr.data.io import atomic_output, json_safe
from rbr.fitting.class_order import class_order_warnings
from rbr.fitting.grading import grade_records
from rbr.fitting.rbr_fit import LABEL_SOURCES, FitSettings, fit_rbr
from rbr.fitting.weights import RBRWeights
from rbr.policy.spec import Policy


@click.command("fit")
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the weights JSON.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the fit report (per response type metrics and weights) as JSON.",
)
@policy_option
@grader_options
@click.option(
    "--labels",
    "label_source",
    type=click.Choice(LABEL_SOURCES),
    default="labels",
    show_default=True,
    help="Rank rows by their 'label' field and the policy's orderings, or by the "
    "completion class of their stored proposition labels.",
)
@click.option(
    "--cross-prompt/--within-prompt",
    default=None,
    help="Pair completions across prompts of a response type, or only within a prompt. "
    "Default: across prompts when there are no base rewards and most prompts have "
    "fewer than two distinct ranks.",
)
@click.option("--l2", type=click.FloatRange(min=0), default=None, help="L2 strength.")
@click.option(
    "--margin",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Default hinge margin between ranked pairs.",
)
@click.option(
    "--validation-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.2,
    show_default=True,
    help="Share of prompts held out to measure the fit.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the train/validation split.",
)
def fit_command(
    data: Path,
    out_path: Path,
    report_path: Path | None,
    policy_path: Path | None,
    grader_spec: dict,
    batch_size: int,
    label_source: str,
    cross_prompt: bool | None,
    l2: float | None,
    margin: float,
    validation_fraction: float,
    seed: int,
) -> None:
    """Grade DATA (JSONL or Parquet), fit one weight vector per response type, save it."""
    check_output_path(out_path, suffixes=(".json",))
    if report_path is not None:
        check_output_path(report_path, suffixes=(".json",))
    policy = load_policy_or_default(policy_path)
    records = read_data(data, policy)
    grader = build_grader(grader_spec, records, policy)
    settings = FitSettings(
        label_source=label_source,  # type: ignore[arg-type]
        cross_prompt=cross_prompt,
        l2=l2,
        margin=margin,
        validation_fraction=validation_fraction,
        random_state=seed,
    )
    with grader, progress_bar(len(records), "grading") as bar:
        graded = grade_records(
            records,
            policy,
            grader,
            source=str(data),
            batch_size=batch_size,
            progress=bar.update,
        )
    weights = fit_rbr(graded, policy, grader.identity, settings, source=str(data))
    # Both files appear together or not at all.
    with contextlib.ExitStack() as stack:
        weights.dump(stack.enter_context(atomic_output(out_path)))
        if report_path is not None:
            report = stack.enter_context(atomic_output(report_path))
            json.dump(json_safe(fit_report(weights, policy)), report, indent=2)
    print_fit_summary(weights)
    print_class_order_warnings(weights, policy)
    click.echo(f"weights written to {out_path}")


def fit_report(weights: RBRWeights, policy: Policy) -> dict[str, Any]:
    """Return the JSON report of a fit: settings, per response type metrics and
    the response types whose class weights contradict the policy's class order.
    """
    return {
        "policy_name": weights.policy_name,
        "policy_hash": weights.policy_hash,
        "grader_identity": weights.grader_identity,
        "settings": weights.settings,
        "skipped": weights.skipped,
        "class_order_warnings": class_order_warnings(weights, policy),
        "response_types": {
            name: e.report for name, e in weights.response_types.items()
        },
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _gap(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def print_fit_summary(weights: RBRWeights) -> None:
    """Print one line of fit metrics per response type."""
    header = (
        f"{'response type':<15} {'rows':>5} {'prompts':>7} {'pairs':>8} {'heldout':>8} "
        f"{'train':>7} {'heldout':>7} {'pair acc':>8} {'top1':>6} {'gap':>8}"
    )
    click.echo(header)
    click.echo(
        f"{'':<15} {'':>5} {'':>7} {'train':>8} {'pairs':>8} {'loss':>7} "
        f"{'loss':>7} {'heldout':>8} {'':>6} {'':>8}"
    )
    for name, entry in weights.response_types.items():
        r = entry.report
        click.echo(
            f"{name:<15} {r['n_rows']:>5} {r['n_prompts']:>7} {r['n_train_pairs']:>8} "
            f"{r['n_validation_pairs']:>8} {_fmt(r['train_loss']):>7} "
            f"{_fmt(r['validation_loss']):>7} {_fmt(r['validation_pairwise_accuracy']):>8} "
            f"{_fmt(r['validation_top1'], 2):>6} {_gap(r['optimality_gap']):>8}"
        )
    for name, reason in weights.skipped.items():
        click.echo(f"{name:<15} not fitted: {reason}")
    click.echo(
        "pair acc: share of held-out pairs ranked in the policy's order; top1: share "
        "of held-out prompts whose best completion gets the highest reward; gap: "
        "certified distance of the training objective from its optimum"
    )


def print_class_order_warnings(weights: RBRWeights, policy: Policy) -> None:
    """Print a warning per response type whose class weights are out of order
    and whose held-out ranking is imperfect or unmeasured.

    Class weights alone do not set a reward, because proposition weights add
    to them, so an out-of-order pair with every held-out pair ranked right is
    only recorded in the fit report, not printed.
    """
    for name, message in class_order_warnings(weights, policy).items():
        accuracy = weights.response_types[name].report.get(
            "validation_pairwise_accuracy"
        )
        if accuracy is not None and accuracy >= 1.0:
            continue
        measured = "unmeasured" if accuracy is None else f"{accuracy:.3f}"
        click.echo(
            f"warning: {name} (held-out pair accuracy {measured}): {message}",
            err=True,
        )
