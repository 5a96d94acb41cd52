"""``rbr evaluate`` and ``rbr compare``: safety metrics of a policy model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from rbr.cli.common import (
    ErrorReportingCommand,
    build_grader,
    check_output_path,
    grader_options,
    load_policy_or_default,
    policy_option,
    progress_bar,
    read_data,
)
from rbr.evaluation.bootstrap import DEFAULT_RESAMPLES, BootstrapSettings, Estimate
from rbr.evaluation.compare import (
    NO_CHART_TEXT,
    Comparison,
    ComparisonRow,
    compare_results,
    interval_bar_chart,
)
from rbr.evaluation.safety import (
    METRIC_TITLES,
    SafetyMetricSpec,
    SafetyReport,
    classify_completions,
    safety_metrics,
)
from rbr.evaluation.thresholds import PropositionThresholds
from rbr.graders.base import Grader
from rbr.policy.spec import CLASS_ORDER, Policy
from rbr.reports import HtmlReport


def bootstrap_options(func: Any) -> Any:
    """Add ``--resamples``, ``--seed`` and ``--confidence``."""
    options = [
        click.option(
            "--resamples",
            type=click.IntRange(min=1),
            default=DEFAULT_RESAMPLES,
            show_default=True,
            help="Bootstrap resamples of the prompts for each interval.",
        ),
        click.option(
            "--seed",
            type=int,
            default=0,
            show_default=True,
            help="Seed of the bootstrap resampling.",
        ),
        click.option(
            "--confidence",
            type=click.FloatRange(0, 1, min_open=True, max_open=True),
            default=0.95,
            show_default=True,
            help="Coverage of each percentile interval, between 0 and 1.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def thresholds_option(*, default_text: str) -> Any:
    """Add ``--thresholds FILE`` and ``--allow-grader-mismatch``.

    Args:
        default_text: What applies without the option, for the help text.
    """

    def decorate(func: Any) -> Any:
        func = click.option(
            "--allow-grader-mismatch",
            is_flag=True,
            help="Use --thresholds even when they were tuned for another grader.",
        )(func)
        return click.option(
            "--thresholds",
            "thresholds_path",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="Per-proposition probability thresholds (0 to 1) written by "
            f"'rbr grader eval --thresholds-out'. Default: {default_text}.",
        )(func)

    return decorate


def load_thresholds(
    path: Path | None, policy: Policy, grader: Grader, *, allow_mismatch: bool
) -> tuple[dict[str, float], dict[str, Any]]:
    """Read a thresholds file and check it fits the policy and grader.

    Returns:
        The thresholds and a description of their origin for the result file.

    Raises:
        ThresholdsError: When the file is invalid or does not match.
    """
    if path is None:
        return {}, {"source": None, "method": "0.5 for every proposition"}
    loaded = PropositionThresholds.load(path)
    loaded.check_matches(
        policy=policy,
        grader_identity=grader.identity,
        allow_grader_mismatch=allow_mismatch,
    )
    origin = {
        "source": str(path),
        "method": loaded.method,
        "tuned_for_grader": loaded.grader_identity,
        "values": dict(loaded.thresholds),
    }
    return dict(loaded.thresholds), origin


@click.command("evaluate", cls=ErrorReportingCommand)
@click.argument(
    "data",
    required=False,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@policy_option
@grader_options
@thresholds_option(default_text="0.5 for every proposition")
@click.option(
    "--comply-type",
    "comply_types",
    multiple=True,
    help="Response type whose prompts should be answered. Repeat for several. "
    "Default: the type named Comply.",
)
@click.option(
    "--hard-refuse-type",
    "hard_refuse_types",
    multiple=True,
    help="Response type that calls for a hard refusal. Default: Hard Refuse.",
)
@click.option(
    "--soft-refuse-type",
    "soft_refuse_types",
    multiple=True,
    help="Response type that calls for a soft refusal. Default: every other type.",
)
@bootstrap_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("rbr-evaluation"),
    show_default=True,
    help="Folder for the report: evaluation.json, evaluation.html and a chart "
    "(comparison.* with --compare).",
)
@click.option(
    "--compare",
    "compare_paths",
    nargs=2,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Compare two result JSON files (first, second) instead of evaluating DATA.",
)
def evaluate_command(
    data: Path | None,
    policy_path: Path | None,
    grader_spec: dict[str, Any],
    batch_size: int,
    thresholds_path: Path | None,
    allow_grader_mismatch: bool,
    comply_types: tuple[str, ...],
    hard_refuse_types: tuple[str, ...],
    soft_refuse_types: tuple[str, ...],
    resamples: int,
    seed: int,
    confidence: float,
    out_dir: Path,
    compare_paths: tuple[Path, Path] | None,
) -> None:
    """Measure a policy model's safety from its completions in DATA.

    DATA is a JSONL or Parquet file in the gold format: prompt, completion and
    a response_type or category per row, one or more completions per prompt.
    Each completion is graded, and the policy assigns its completion class.
    Reports Not-Unsafe, Not-Overrefuse, Hard- and Soft-Refusal-Style and F1
    overall, per response type and per content category, with percentile
    bootstrap intervals over prompts. See docs/evaluation.md.
    """
    if compare_paths is not None:
        if data is not None:
            raise click.UsageError("give either DATA or --compare A.json B.json")
        run_comparison(*compare_paths, out_dir=out_dir)
        return
    if data is None:
        raise click.UsageError("missing DATA, the completions file to evaluate")
    if data.suffix.lower() == ".csv":
        raise click.UsageError(
            f"{data} is a CSV file; rbr evaluate reads JSONL or Parquet in the gold "
            "format. For an XSTest completions file, run 'rbr xstest "
            f"{data}'"
        )
    check_output_path(out_dir / "evaluation.json", suffixes=(".json",))
    policy = load_policy_or_default(policy_path)
    spec = SafetyMetricSpec.from_policy(
        policy,
        comply_types=comply_types,
        hard_refuse_types=hard_refuse_types,
        soft_refuse_types=soft_refuse_types,
    )
    records = read_data(data, policy)
    grader = build_grader(grader_spec, records, policy)
    with grader:
        thresholds, origin = load_thresholds(
            thresholds_path, policy, grader, allow_mismatch=allow_grader_mismatch
        )
        with progress_bar(len(records), "grading") as bar:
            classified = classify_completions(
                records,
                policy,
                grader,
                thresholds=thresholds,
                source=str(data),
                batch_size=batch_size,
                progress=bar.update,
            )
    report = safety_metrics(
        classified,
        spec,
        settings=BootstrapSettings(
            n_resamples=resamples, seed=seed, confidence=confidence
        ),
    )
    report.metadata = {
        "data": str(data),
        "grader_identity": grader.identity,
        "policy_name": policy.name,
        "policy_hash": policy.content_hash,
        "thresholds": origin,
    }
    print_safety_report(report)
    files = safety_html(report).write(out_dir, "evaluation")
    for path in (files.json, files.html, *files.figures):
        click.echo(f"written: {path}")


@click.command("compare", cls=ErrorReportingCommand)
@click.argument("first", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("second", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("rbr-comparison"),
    show_default=True,
    help="Folder for comparison.json, comparison.html and a chart.",
)
def compare_command(first: Path, second: Path, out_dir: Path) -> None:
    """Compare two result files of 'rbr evaluate' or 'rbr xstest' side by side.

    Prints each shared estimate of FIRST and SECOND and the difference
    (second minus first) with an approximate interval.
    """
    run_comparison(first, second, out_dir=out_dir)


def run_comparison(first: Path, second: Path, *, out_dir: Path) -> None:
    """Compare two result files, print the table and write the report files."""
    check_output_path(out_dir / "comparison.json", suffixes=(".json",))
    comparison = compare_results(first, second)
    print_comparison(comparison)
    files = comparison_html(comparison).write(out_dir, "comparison")
    for path in (files.json, files.html, *files.figures):
        click.echo(f"written: {path}")


def percent(estimate: Estimate | None) -> str:
    """Format an estimate as ``97.3 [95.0, 99.0]`` (percent), or a dash."""
    if estimate is None or estimate.value is None:
        return "-"
    text = f"{100 * estimate.value:5.1f}"
    if estimate.ci_low is None or estimate.ci_high is None:
        return text
    return f"{text} [{100 * estimate.ci_low:5.1f}, {100 * estimate.ci_high:5.1f}]"


def _count(estimate: Estimate) -> str:
    value = estimate.denominator
    return "-" if value != value else f"{value:g}"  # NaN check


def print_safety_report(report: SafetyReport) -> None:
    """Print the overall metrics, then one table per grouping."""
    level = f"{report.bootstrap.confidence:.0%}"
    click.echo(f"{'metric':<20} {'%':>5} {level + ' interval':>16} {'n':>6}")
    for key, title in METRIC_TITLES.items():
        estimate = report.overall[key]
        click.echo(f"{title:<20} {percent(estimate):<22} {_count(estimate):>6}")
    counts = report.counts
    click.echo(
        f"{counts['evaluated_completions']} completions to "
        f"{counts['evaluated_prompts']} prompts evaluated; rows by status: "
        f"{counts['rows_by_status']}"
    )
    for title, groups in (
        ("response type", report.by_response_type),
        ("category", report.by_category),
    ):
        click.echo("")
        _print_group_table(title, groups)


def _print_group_table(
    title: str, groups: Mapping[str, Mapping[str, Estimate]]
) -> None:
    width = max([len(title), *(len(name) for name in groups)])
    keys = list(METRIC_TITLES)
    header = " ".join(f"{METRIC_TITLES[k]:<22}" for k in keys)
    click.echo(f"{title:<{width}} {header}".rstrip())
    for name, metrics in groups.items():
        cells = " ".join(f"{percent(metrics[k]):<22}" for k in keys)
        click.echo(f"{name:<{width}} {cells}".rstrip())


def safety_html(report: SafetyReport) -> HtmlReport:
    """Build the HTML report; its ``data`` is the full JSON result."""
    data = report.to_dict()
    page = HtmlReport(
        f"Safety evaluation of {report.metadata.get('data', 'completions')}"
    )
    page.data = data
    page.add_paragraph(
        f"Grader {data.get('grader_identity')}, policy {data.get('policy_name')}, "
        f"thresholds: {data.get('thresholds', {}).get('method')}. Intervals: "
        f"{report.bootstrap.confidence:.0%} percentile bootstrap over prompts "
        f"({report.bootstrap.n_resamples} resamples within response types, seed "
        f"{report.bootstrap.seed})."
    )
    page.add_heading("Overall")
    rows = [
        [
            METRIC_TITLES[k],
            e.value,
            e.ci_low,
            e.ci_high,
            count_cell(e.numerator),
            count_cell(e.denominator),
        ]
        for k, e in report.overall.items()
    ]
    page.add_table(["metric", "value", "ci low", "ci high", "successes", "n"], rows)
    figure = interval_bar_chart(
        list(METRIC_TITLES.values()),
        {"overall": [report.overall[k] for k in METRIC_TITLES]},
        title="Safety metrics with bootstrap intervals",
    )
    if figure is not None:
        caption = f"Error bars: {report.bootstrap.confidence:.0%} intervals."
        page.add_figure(figure, "evaluation_metrics", caption=caption)
    else:
        page.add_paragraph(NO_CHART_TEXT)
    for heading, groups in (
        ("By response type", report.by_response_type),
        ("By content category", report.by_category),
    ):
        page.add_heading(heading)
        page.add_table(
            ["group", "metric", "value", "ci low", "ci high", "n"], _group_rows(groups)
        )

    page.add_heading("Completion classes")
    columns = [*CLASS_ORDER, "no_class"]
    page.add_table(
        ["response type", *columns],
        [
            [name, *(row[c] for c in columns)]
            for name, row in report.class_counts.items()
        ],
    )
    return page


def _group_rows(groups: Mapping[str, Mapping[str, Estimate]]) -> list[list[Any]]:
    """Return one table row per defined metric of each group."""
    rows = []
    for name, metrics in groups.items():
        for key, e in metrics.items():
            if e.value is not None:
                cells = [e.value, e.ci_low, e.ci_high, count_cell(e.denominator)]
                rows.append([name, METRIC_TITLES[key], *cells])
    return rows


def count_cell(value: float) -> float | int | None:
    """Return a count for a table cell: an int when whole, None for NaN."""
    if value != value:  # NaN
        return None
    return int(value) if float(value).is_integer() else value


def print_comparison(comparison: Comparison) -> None:
    """Print each shared estimate of both files and their difference."""
    click.echo(f"first:  {comparison.first_path}")
    click.echo(f"second: {comparison.second_path}")
    for key, (first, second) in comparison.provenance_differences.items():
        click.echo(f"note: {key} differs: {first!r} vs {second!r}")
    width = max(
        [len("group"), *(len(f"{r.section} {r.group}") for r in comparison.rows)]
    )
    titles = [comparison.metric_titles.get(r.metric, r.metric) for r in comparison.rows]
    metric_width = max([len("metric"), *(len(title) for title in titles)])
    click.echo(
        f"{'group':<{width}} {'metric':<{metric_width}} {'first':<22} {'second':<22} "
        f"{'difference':>10} {'interval':>17}"
    )
    for row, title in zip(comparison.rows, titles):
        delta = row.difference
        low, high = row.difference_interval()
        interval = "" if low is None else f"[{100 * low:+6.1f}, {100 * high:+6.1f}]"
        mark = "*" if low is not None and (low > 0 or high < 0) else ""
        click.echo(
            f"{row.section + ' ' + row.group:<{width}} "
            f"{title:<{metric_width}} "
            f"{percent(row.first):<22} {percent(row.second):<22} "
            f"{'-' if delta is None else f'{100 * delta:+.1f}':>10} "
            f"{interval:>17}{mark}"
        )
    click.echo(
        "values in percent; difference = second - first; its interval is approximate "
        "(half-widths combined as for independent results); * marks an interval "
        "without 0"
    )


def comparison_html(comparison: Comparison) -> HtmlReport:
    """Build the HTML comparison; its ``data`` is the full JSON comparison."""
    page = HtmlReport("Comparison of evaluation results")
    page.data = comparison.to_dict()
    page.add_paragraph(
        f"First: {comparison.first_path}. Second: {comparison.second_path}. "
        "Difference: second minus first. Its interval combines both half-widths "
        "as for independent results, so it is approximate."
    )
    for key, (first, second) in comparison.provenance_differences.items():
        page.add_paragraph(f"Note: {key} differs ({first!r} vs {second!r}).")

    page.add_table(
        ["section", "group", "metric", "first", "second", "difference", "low", "high"],
        [_comparison_cells(comparison, row) for row in comparison.rows],
    )
    figure = _comparison_chart(comparison)
    if figure is not None:
        page.add_figure(figure, "comparison_overall")
    else:
        page.add_paragraph(NO_CHART_TEXT)
    return page


def _comparison_cells(comparison: Comparison, row: ComparisonRow) -> list[Any]:
    low, high = row.difference_interval()
    first = None if row.first is None else row.first.value
    second = None if row.second is None else row.second.value
    title = comparison.metric_titles.get(row.metric, row.metric)
    return [row.section, row.group, title, first, second, row.difference, low, high]


def _comparison_chart(comparison: Comparison) -> Any | None:
    """Draw the overall estimates of both results side by side."""
    overall = [r for r in comparison.rows if r.section == "overall"]
    labels = []
    for row in overall:
        title = comparison.metric_titles.get(row.metric, row.metric)
        labels.append(title if row.group == "all" else f"{title} ({row.group})")
    empty = Estimate(None, None, None)
    return interval_bar_chart(
        labels,
        {
            "first": [r.first or empty for r in overall],
            "second": [r.second or empty for r in overall],
        },
        title="Overall estimates with intervals",
    )
