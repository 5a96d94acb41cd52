"""``rbr report``: HTML reports with embedded plots, PNG files and JSON."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from rbr.cli.common import (
    ErrorReportingGroup,
    build_grader,
    check_output_path,
    grader_options,
    load_policy_or_default,
    policy_option,
    progress_bar,
    read_data,
    weights_option,
)
from rbr.cli.grader_cmd import load_gold
from rbr.data.io import write_jsonl
from rbr.data.xstest_pairs import XSTEST_MODELS, xstest_comparison_rows
from rbr.errors import DataError
from rbr.fitting.grading import grade_records
from rbr.fitting.weights import RBRWeights
from rbr.reports.html import ReportError, ReportFiles, format_number

EXTRA_HINT = 'pip install -e ".[report]"'


@click.group("report", cls=ErrorReportingGroup)
def report_group() -> None:
    """Write reports people read: an HTML page with plots, the PNGs and a JSON file.

    Plots need matplotlib (pip install -e ".[report]").
    """


def _out_options(default_name: str) -> Any:
    def decorate(func: Any) -> Any:
        func = click.option(
            "--name",
            default=default_name,
            show_default=True,
            help="File name stem: writes NAME.html and NAME.json beside the PNGs.",
        )(func)
        return click.option(
            "--out",
            "out_dir",
            required=True,
            type=click.Path(file_okay=False, path_type=Path),
            help="Folder to write the report into (created when missing).",
        )(func)

    return decorate


@report_group.command("fit")
@weights_option(required=True)
@click.option(
    "--data",
    "data_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The file the weights were fitted on: the report uses the prompts the "
    "fit held out (same seed and validation fraction).",
)
@click.option(
    "--heldout",
    "heldout_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A separate labelled comparison file: the report uses all of its rows.",
)
@_out_options("fit-report")
@policy_option
@grader_options
def fit_report_command(
    weights_path: Path,
    data_path: Path | None,
    heldout_path: Path | None,
    out_dir: Path,
    name: str,
    policy_path: Path | None,
    grader_spec: dict[str, Any],
    batch_size: int,
) -> None:
    """Report how fitted weights rank held-out completions.

    Give --data (the fit's own training file, for its held-out prompts) or
    --heldout (a separate labelled file), and the grader the weights were
    fitted with. Per response type the report shows the pairwise ranking
    accuracy per label pair and the weights as a bar chart. It also draws
    histograms of rewards centered on each prompt's best-labelled completion,
    for the base reward alone, base + RBR and RBR alone.
    """
    from rbr.reports.reward_fit import evaluate_fit
    from rbr.reports.reward_fit_report import (
        SUMMARY_COLUMNS,
        build_fit_report,
        summary_rows,
    )

    if (data_path is None) == (heldout_path is None):
        raise click.UsageError(
            "give exactly one of --data (the file the weights were fitted on) and "
            "--heldout (a separate labelled file)"
        )
    source_path = data_path if data_path is not None else heldout_path
    assert source_path is not None
    _require_matplotlib()
    policy = load_policy_or_default(policy_path)
    weights = RBRWeights.load(weights_path)
    records = read_data(source_path, policy)
    grader = build_grader(grader_spec, records, policy)
    weights.check_compatible(policy, grader.identity, source=str(weights_path))
    with grader, progress_bar(len(records), "grading") as bar:
        graded = grade_records(
            records,
            policy,
            grader,
            source=str(source_path),
            batch_size=batch_size,
            progress=bar.update,
        )
    evaluation = evaluate_fit(
        graded,
        weights,
        policy,
        split="fit" if data_path is not None else "file",
        source=str(source_path),
    )
    report = build_fit_report(
        evaluation, weights_path=str(weights_path), data_path=str(source_path)
    )
    files = report.write(out_dir, name)
    print_table(SUMMARY_COLUMNS, summary_rows(report.data["summary"]))
    if not evaluation.base_from_rows:
        click.echo("base reward: 0 for every row (the rows have no base_reward field)")
    for entry in report.data["summary"]:
        if entry["split_matches_fit"] is False:
            click.echo(
                f"warning: {entry['response_type']}: recomputed held-out accuracy "
                "differs from the fit's; check the data, grader and policy",
                err=True,
            )
    _echo_files(files)


@report_group.command("grader")
@click.option(
    "--from-json",
    "json_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Grader evaluation JSON from 'rbr grader eval --json' or from this command.",
)
@click.option(
    "--gold",
    "gold_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Gold file with human 'propositions' labels: grade it now (needed for "
    "reliability curves).",
)
@_out_options("grader-report")
@policy_option
@grader_options
@click.option(
    "--tuning-fraction",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="[--gold] Share of prompts, from 0 to 1, that tunes each threshold.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="[--gold] Seed of the split into tuning and held-out prompts.",
)
def grader_report_command(
    json_path: Path | None,
    gold_path: Path | None,
    out_dir: Path,
    name: str,
    policy_path: Path | None,
    grader_spec: dict[str, Any],
    batch_size: int,
    tuning_fraction: float,
    seed: int,
) -> None:
    """Report per-proposition accuracy, ROC-AUC and reliability curves of a grader.

    Give --from-json (an evaluation already run) or --gold (grade now).
    With --gold, a label for a proposition the policy does not define is an
    error, and an offline grader gets a note when gold rows are among its
    training rows, as in 'rbr grader eval'.
    """
    from rbr.reports.grader_report import (
        PROPOSITION_COLUMNS,
        build_grader_report,
        load_grader_eval,
        proposition_rows,
        run_grader_evaluation,
    )

    if (json_path is None) == (gold_path is None):
        raise click.UsageError(
            "give exactly one of --from-json (an evaluation JSON) and --gold (a gold "
            "file to grade now)"
        )
    _require_matplotlib()
    if json_path is not None:
        data = load_grader_eval(json_path)
        source = str(json_path)
    else:
        assert gold_path is not None
        gold = load_gold(gold_path, policy_path, grader_spec)
        with gold.grader, progress_bar(len(gold.records), "grading") as bar:
            data = run_grader_evaluation(
                gold.records,
                gold.policy,
                gold.grader,
                source=str(gold_path),
                tuning_fraction=tuning_fraction,
                seed=seed,
                batch_size=batch_size,
                progress=bar.update,
            )
        data["grader_training_note"] = gold.note
        source = str(gold_path)
    files = build_grader_report(data, source=source).write(out_dir, name)
    print_table(PROPOSITION_COLUMNS, proposition_rows(data))
    _echo_files(files)


@report_group.command("xstest-data")
@click.option(
    "--xstest-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="XSTest v2 folder with prompts.csv and completions_<model>.csv.",
)
@click.option(
    "--models",
    default=",".join(XSTEST_MODELS),
    show_default=True,
    help="Comma-separated models whose completion files to combine.",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSONL file to write the comparison rows to.",
)
def xstest_data_command(xstest_dir: Path, models: str, out_path: Path) -> None:
    """Write XSTest completions of several models as labelled comparison data.

    Safe prompts get response type Comply and the order full compliance >
    partial refusal > full refusal. Unsafe prompts get Hard Refuse and the
    reverse order. Fit on the result with 'rbr fit OUT --out WEIGHTS.json'.
    """
    check_output_path(out_path, suffixes=(".jsonl",))
    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        raise DataError(
            str(xstest_dir), None, "--models names no model; list at least one"
        )
    rows = xstest_comparison_rows(xstest_dir, models=names)
    count = write_jsonl(out_path, rows)
    click.echo(f"{count} rows from {len(names)} models written to {out_path}")


def _require_matplotlib() -> None:
    # Fail before any grading when the plots cannot be drawn.
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportError(
            f"reports draw their plots with matplotlib, which is not installed; run: "
            f"{EXTRA_HINT}"
        ) from None


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table with one column per entry, numbers right-aligned."""
    cells = [
        [format_number(v) if not isinstance(v, str) else v for v in row] for row in rows
    ]
    widths = [
        max([len(str(c)), *(len(row[i]) for row in cells)])
        for i, c in enumerate(columns)
    ]
    click.echo("  ".join(f"{c:<{w}}" for c, w in zip(columns, widths)))
    for row, raw in zip(cells, rows):
        parts = [
            f"{cell:<{w}}" if isinstance(value, str) else f"{cell:>{w}}"
            for cell, value, w in zip(row, raw, widths)
        ]
        click.echo("  ".join(parts))


def _echo_files(files: ReportFiles) -> None:
    click.echo(f"report written to {files.html}")
    click.echo(
        f"data written to {files.json}, {len(files.figures)} PNG figures beside it"
    )
