"""``rbr synth``: generate labelled comparison data and SFT data from a model."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from rbr.cli.common import (
    ErrorReportingCommand,
    build_grader,
    grader_options,
    load_policy_or_default,
    policy_option,
    progress_bar,
)
from rbr.evaluation.thresholds import PropositionThresholds
from rbr.graders.base import Grader
from rbr.graders.ratelimit import RequestLimits
from rbr.policy.spec import Policy
from rbr.synth import (
    DEFAULT_FLAWED_LABELS,
    DEFAULT_FLAWED_VARIANTS,
    STATE_FILE_NAME,
    ChatSampler,
    JobResult,
    PromptSet,
    SampleStore,
    Synthesizer,
    TargetSettings,
    plan_jobs,
    read_prompts,
    write_instructions,
    write_outputs,
)

MAX_LISTED = 5
"""Skipped rows and failed targets named one by one before the rest are counted."""


@click.command("synth", cls=ErrorReportingCommand)
@click.argument(
    "prompts_path",
    metavar="PROMPTS",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the output files; created when missing.",
)
@policy_option
@grader_options(default_kind="openai")
@click.option(
    "--generator-base-url",
    default=None,
    help="Server URL of the model that writes completions. Default: --base-url.",
)
@click.option(
    "--generator-model",
    default=None,
    help="Model that writes completions, ideally a helpful-only one. Default: --model.",
)
@click.option(
    "--generator-api-key",
    default=None,
    help="API key of the generator's server. Default: --api-key.",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Sampling temperature of the generator.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Maximum completion length, in tokens.",
)
@click.option(
    "--generator-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Seconds one generation request may take.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Maximum completions sampled per target before it gives up.",
)
@click.option(
    "--variants",
    "variants",
    multiple=True,
    metavar="LABEL=N",
    help="Completions per prompt for LABEL (repeatable). Default: "
    f"{DEFAULT_FLAWED_VARIANTS} for flawed labels, 1 for the others.",
)
@click.option(
    "--flawed-label",
    "flawed_labels",
    multiple=True,
    help="Label that gets random flaws (repeatable). Default: "
    + ", ".join(DEFAULT_FLAWED_LABELS)
    + ".",
)
@click.option(
    "--max-flaws",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Most flaws drawn for one flawed target; each draws 1 to this many.",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    help="Generate only this label (repeatable). Default: every label in the "
    "response type's ordering.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the flaw draws; with the prompt id it fixes each target.",
)
@click.option(
    "--thresholds",
    "thresholds_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Per-proposition thresholds from 'rbr grader eval --thresholds-out'. "
    "Default: 0.5 for every proposition.",
)
@click.option(
    "--allow-grader-mismatch",
    is_flag=True,
    help="Use --thresholds even though they were tuned for another grader.",
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite file of finished work, read to resume. "
    f"Default: OUT/{STATE_FILE_NAME}.",
)
@click.option(
    "--allow-errors",
    is_flag=True,
    help="Write the outputs even when some targets failed on request errors "
    "(they are listed in summary.json).",
)
@click.option(
    "--instructions-only",
    is_flag=True,
    help="Write OUT/instructions.jsonl with every generation request and call "
    "no model.",
)
def synth_command(
    prompts_path: Path,
    out_dir: Path,
    policy_path: Path | None,
    grader_spec: dict[str, Any],
    batch_size: int,
    generator_base_url: str | None,
    generator_model: str | None,
    generator_api_key: str | None,
    temperature: float,
    max_tokens: int,
    generator_timeout: float,
    max_attempts: int,
    variants: tuple[str, ...],
    flawed_labels: tuple[str, ...],
    max_flaws: int,
    labels: tuple[str, ...],
    seed: int,
    thresholds_path: Path | None,
    allow_grader_mismatch: bool,
    state_path: Path | None,
    allow_errors: bool,
    instructions_only: bool,
) -> None:
    """Generate labelled completions for the prompts in PROMPTS (JSONL or Parquet).

    Each row needs 'prompt' (a list of {role, content} messages) and
    'response_type' or 'category'. For every label in the response type's
    ordering, the generator model is asked for a reply with the label's
    proposition values, the reply is graded, and it is kept when the grades
    match or sampled again otherwise. Writes comparisons.jsonl (input of
    'rbr fit --grader labels'), sft.jsonl, attempts.jsonl and summary.json to
    OUT. A stopped run resumes from OUT/synth_state.sqlite.
    """
    policy = load_policy_or_default(policy_path)
    settings = TargetSettings(
        variants=_parse_variants(variants, policy),
        flawed_labels=_check_labels(flawed_labels, policy, "--flawed-label")
        or DEFAULT_FLAWED_LABELS,
        max_flaws=max_flaws,
        labels=frozenset(_check_labels(labels, policy, "--label")) or None,
        seed=seed,
    )
    prompt_set = read_prompts(prompts_path, policy)
    _report_skipped(prompt_set)
    if not prompt_set.prompts:
        raise click.ClickException(f"{prompts_path}: no prompt with a response type")
    jobs = plan_jobs(prompt_set.prompts, policy, settings)
    if instructions_only:
        path = write_instructions(out_dir, jobs)
        click.echo(f"wrote {len(jobs)} generation requests to {path}")
        return

    grader = _build_grader(grader_spec, policy)
    sampler = ChatSampler(
        model=generator_model or grader_spec["model"],
        base_url=generator_base_url or grader_spec["base_url"],
        api_key=generator_api_key or grader_spec["api_key"],
        temperature=temperature,
        max_tokens=max_tokens,
        limits=_generator_limits(grader_spec, generator_timeout),
    )
    thresholds = _load_thresholds(
        thresholds_path, policy, grader, allow_grader_mismatch
    )
    store_path = state_path or out_dir / STATE_FILE_NAME
    with grader, SampleStore(store_path) as store:
        synthesizer = Synthesizer(
            policy,
            sampler,
            grader,
            store,
            max_attempts=max_attempts,
            thresholds=thresholds,
            batch_size=batch_size,
        )
        with progress_bar(len(jobs), "generating") as bar:
            results = synthesizer.run(jobs, progress=lambda _: bar.update(1))
    _stop_on_errors(results, allow_errors, store_path)

    run_settings = {
        "prompts_file": str(prompts_path),
        "max_attempts": max_attempts,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "thresholds": str(thresholds_path) if thresholds_path else None,
        **_target_record(settings),
    }
    metadata = {
        "generator": sampler.identity,
        "grader": grader.identity,
        "settings": run_settings,
        "requests": _request_counts(sampler, grader),
    }
    summary = write_outputs(
        out_dir,
        results,
        prompt_set.skipped,
        policy,
        grader_identity=grader.identity,
        metadata=metadata,
    )
    print_summary(summary)
    click.echo(f"outputs written to {out_dir}")


def _build_grader(grader_spec: dict[str, Any], policy: Policy) -> Grader:
    if grader_spec["grader_kind"] == "labels":
        raise click.UsageError(
            "the labels grader reads stored labels, and new completions have none: "
            "use --grader openai"
        )
    return build_grader(grader_spec, [], policy)


def _generator_limits(grader_spec: dict[str, Any], timeout_s: float) -> RequestLimits:
    """Return the grader's concurrency, rate and retry limits with another timeout."""
    return RequestLimits(
        max_concurrency=grader_spec["max_concurrency"],
        requests_per_minute=grader_spec["rpm"],
        tokens_per_minute=grader_spec["tpm"],
        timeout_s=timeout_s,
        max_retries=grader_spec["max_retries"],
    )


def _target_record(settings: TargetSettings) -> dict[str, Any]:
    return {
        "seed": settings.seed,
        "max_flaws": settings.max_flaws,
        "flawed_labels": list(settings.flawed_labels),
        "variants": dict(settings.variants),
        "labels": sorted(settings.labels) if settings.labels else None,
    }


def _parse_variants(values: Sequence[str], policy: Policy) -> dict[str, int]:
    result = {}
    for value in values:
        label, sep, count = value.partition("=")
        if not sep or not count.strip().isdigit():
            raise click.BadParameter(
                f"{value!r} is not LABEL=N with N a whole number, such as "
                "bad_refusal=2",
                param_hint="--variants",
            )
        _check_labels([label.strip()], policy, "--variants")
        result[label.strip()] = int(count)
    return result


def _check_labels(names: Sequence[str], policy: Policy, option: str) -> tuple[str, ...]:
    unknown = [name for name in names if name not in policy.labels]
    if unknown:
        known = ", ".join(policy.labels)
        raise click.BadParameter(
            f"unknown label {unknown[0]!r} for policy {policy.name!r}; use one of {known}",
            param_hint=option,
        )
    return tuple(names)


def _load_thresholds(
    path: Path | None, policy: Policy, grader: Grader, allow_mismatch: bool
) -> dict[str, float]:
    if path is None:
        return {}
    thresholds = PropositionThresholds.load(path)
    thresholds.check_matches(
        policy=policy,
        grader_identity=grader.identity,
        allow_grader_mismatch=allow_mismatch,
    )
    return dict(thresholds.thresholds)


def _report_skipped(prompt_set: PromptSet) -> None:
    skipped = prompt_set.skipped
    if not skipped:
        return
    click.echo(
        f"skipped {len(skipped)} rows whose category maps to no response type:",
        err=True,
    )
    for row in skipped[:MAX_LISTED]:
        click.echo(f"  line {row.line}: {row.reason}", err=True)
    if len(skipped) > MAX_LISTED:
        click.echo(f"  and {len(skipped) - MAX_LISTED} more", err=True)


def _stop_on_errors(
    results: Sequence[JobResult], allow_errors: bool, store_path: Path
) -> None:
    """Exit with code 1 when targets failed, unless --allow-errors was given."""
    failed = [r for r in results if r.outcome == "error"]
    if not failed:
        return
    click.echo(f"{len(failed)} targets failed on request errors:", err=True)
    for result in failed[:MAX_LISTED]:
        click.echo(f"  {result.job.name}: {result.error}", err=True)
    if len(failed) > MAX_LISTED:
        click.echo(f"  and {len(failed) - MAX_LISTED} more", err=True)
    if allow_errors:
        return
    click.echo(
        "no outputs written. Run the same command again to retry them (finished "
        f"work is kept in {store_path}), or pass --allow-errors to write the "
        "outputs without them",
        err=True,
    )
    sys.exit(1)


def _request_counts(sampler: ChatSampler, grader: Grader) -> dict[str, Any]:
    """Return the request counters of the generator, the grader and the grade cache."""
    counts: dict[str, Any] = {"generator": dataclasses.asdict(sampler.stats)}
    inner = getattr(grader, "inner", None)
    if inner is not None:
        counts["grade_cache"] = _stats_dict(grader)
    counts["grader"] = _stats_dict(inner if inner is not None else grader)
    return counts


def _stats_dict(source: object) -> dict[str, Any] | None:
    stats = getattr(source, "stats", None)
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        return dataclasses.asdict(stats)
    return None


def print_summary(summary: dict[str, Any]) -> None:
    """Print one line of counts per response type and label."""
    header = (
        f"{'response type':<15} {'label':<22} {'prompts':>7} {'targets':>7} "
        f"{'accepted':>8} {'rate':>6} {'attempts':>8} {'gave up':>7} {'errors':>6}"
    )
    click.echo(header)
    for row in summary["by_label"]:
        rate = (
            "-" if row["acceptance_rate"] is None else f"{row['acceptance_rate']:.2f}"
        )
        mean = "-" if row["mean_attempts"] is None else f"{row['mean_attempts']:.2f}"
        click.echo(
            f"{row['response_type']:<15} {row['label']:<22} {row['prompts']:>7} "
            f"{row['targets']:>7} {row['accepted']:>8} {rate:>6} {mean:>8} "
            f"{row['gave_up']:>7} {row['errors']:>6}"
        )
    click.echo(
        f"{summary['accepted']} of {summary['targets']} targets accepted, "
        f"{summary['gave_up']} gave up, {summary['errors']} failed, "
        f"{summary['reused']} finished in an earlier run; "
        f"{summary['skipped_rows']} rows skipped; {summary['sft_rows']} SFT rows"
    )
