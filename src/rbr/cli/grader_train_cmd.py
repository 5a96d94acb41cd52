"""``rbr grader train``: fit the offline grader on labelled data."""

from __future__ import annotations

from pathlib import Path

import click

from rbr.data.external import load_gptfuzz, load_xstest
from rbr.data.io import read_records
from rbr.data.types import Record
from rbr.errors import DataError


@click.command("train")
@click.option(
    "--data",
    "data_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Labelled rows in the gold format (JSONL or Parquet; any subset "
    "of propositions may be labelled, as booleans or probabilities). "
    "Repeat for several files.",
)
@click.option(
    "--xstest",
    "xstest_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="XSTest completions_<model>.csv file (prompts.csv must sit "
    "beside it). Repeat for several models.",
)
@click.option(
    "--gptfuzz",
    "gptfuzz_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="GPTFuzz train.csv file (questions.csv must sit beside it).",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the trained grader (.npz).",
)
def train_command(
    data_paths: tuple[Path, ...],
    xstest_paths: tuple[Path, ...],
    gptfuzz_paths: tuple[Path, ...],
    out_path: Path,
) -> None:
    """Train the offline grader and save it as an artifact file.

    Labels produced by an LLM grader ('rbr grade --grader openai') train a
    distilled offline grader. Use the result with '--grader offline
    --artifact OUT'. Needs the 'train' extra (scikit-learn, scipy).
    """
    try:
        from rbr.graders.offline.training import train_offline_grader
    except ImportError as error:
        raise click.ClickException(
            f'training needs scikit-learn and scipy: pip install -e ".[train]" ({error})'
        ) from None
    records: list[Record] = []
    for path in data_paths:
        records.extend(read_records(path))
    for path in xstest_paths:
        records.extend(load_xstest(path))
    for path in gptfuzz_paths:
        records.extend(load_gptfuzz(path))
    if not records:
        raise click.UsageError("give at least one --data, --xstest or --gptfuzz file")
    click.echo(f"training on {len(records)} labelled rows")
    try:
        model = train_offline_grader(records, out=out_path)
    except DataError as error:
        sources = ", ".join(
            str(p) for p in (*data_paths, *xstest_paths, *gptfuzz_paths)
        )
        raise DataError(sources, None, error.problem) from None
    per_proposition = model.metadata.get("propositions", {})
    rules = sorted(n for n, e in per_proposition.items() if e.get("method") == "rule")
    click.echo(f"wrote {out_path}")
    if rules:
        click.echo(f"too few labels to learn, rule-based instead: {', '.join(rules)}")
