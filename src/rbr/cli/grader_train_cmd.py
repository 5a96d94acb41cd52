"""``rbr grader train``: fit the offline grader on labelled data.

It also contains the checks of labelled gold-format files that ``rbr grader
train`` and ``rbr grader eval`` share.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from pathlib import Path

import click

from rbr.cli.common import load_policy_or_default, policy_option, read_data
from rbr.data.external import load_gptfuzz, load_xstest
from rbr.data.types import Record
from rbr.errors import DataError
from rbr.fitting.grading import resolve_response_type
from rbr.graders.offline.model import OfflineModel
from rbr.policy import Policy


@click.command("train")
@click.option(
    "--data",
    "data_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Labelled rows in the gold format (JSONL or Parquet; any subset "
    "of the policy's propositions may be labelled, as booleans or "
    "probabilities). Repeat for several files.",
)
@click.option(
    "--xstest",
    "xstest_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="XSTest completions_<model>.csv file. The prompts.csv of the same "
    "release must be in the same folder, because it gives each prompt's "
    "safe/unsafe label. Repeat for several models.",
)
@click.option(
    "--gptfuzz",
    "gptfuzz_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="GPTFuzz train.csv file (questions.csv must be in the same folder).",
)
@policy_option
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
    policy_path: Path | None,
    out_path: Path,
) -> None:
    """Train the offline grader and save it as an artifact file.

    Labels produced by an LLM grader ('rbr grade --grader openai') train a
    distilled offline grader. Use the result with '--grader offline
    --artifact OUT'. The trained grader scores the propositions of the
    policy (--policy), and every proposition name and response type in the
    --data files must be the policy's. Progress goes to stderr. Needs the
    'train' extra (scikit-learn, scipy).
    """
    try:
        from rbr.graders.offline.training import train_offline_grader
    except ImportError as error:
        raise click.ClickException(
            f'training needs scikit-learn and scipy: pip install -e ".[train]" ({error})'
        ) from None
    if not (data_paths or xstest_paths or gptfuzz_paths):
        raise click.UsageError("give at least one --data, --xstest or --gptfuzz file")
    policy = load_policy_or_default(policy_path)
    records = _load_training_records(data_paths, xstest_paths, gptfuzz_paths, policy)
    click.echo(f"training on {len(records)} labelled rows")
    try:
        model = train_offline_grader(
            records,
            out=out_path,
            propositions=tuple(policy.propositions),
            progress=_echo_progress,
        )
    except DataError as error:
        sources = ", ".join(
            str(p) for p in (*data_paths, *xstest_paths, *gptfuzz_paths)
        )
        raise DataError(sources, None, error.problem) from None
    click.echo(f"wrote {out_path}")
    _echo_fallbacks(model)


def read_labelled_file(path: Path, policy: Policy) -> list[Record]:
    """Read a gold-format file and check its labels against the policy.

    Raises:
        DataError: When the file has no rows, a row labels a proposition the
            policy does not define, or names an unknown response type or
            category.
    """
    records = read_data(path)
    check_proposition_names(records, policy, source=str(path))
    check_response_types(records, policy, source=str(path))
    return records


def check_proposition_names(
    records: Sequence[Record], policy: Policy, *, source: str
) -> None:
    """Reject a label whose proposition name the policy does not define.

    Without this check a misspelled name would be dropped without notice,
    because training and evaluation look labels up by the policy's names.

    Raises:
        DataError: Naming the line, the unknown name, the closest known
            name and every proposition of the policy.
    """
    for record in records:
        for name in record.propositions:
            if name not in policy.propositions:
                raise DataError(
                    source, record.line, _unknown_name_problem(name, policy)
                )


def _unknown_name_problem(name: str, policy: Policy) -> str:
    known = list(policy.propositions)
    listed = ", ".join(known)
    if name in policy.derived:
        return (
            f"'propositions' labels {name!r}, a derived proposition that the "
            f"policy computes from other propositions; label only these: {listed}"
        )
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"unknown proposition {name!r} in 'propositions'{hint}; this policy has "
        f"{listed}. Correct the name or remove the label"
    )


def check_response_types(
    records: Sequence[Record], policy: Policy, *, source: str
) -> None:
    """Reject a row whose response type or category the policy does not know.

    Rows with neither field pass, because training accepts them and
    evaluation reports them itself.

    Raises:
        DataError: As :func:`rbr.fitting.grading.resolve_response_type`,
            which ``rbr grader eval`` uses for the same check.
    """
    for record in records:
        if record.sample.response_type is None and record.category is None:
            continue
        resolve_response_type(record, policy, source=source)


def _load_training_records(
    data_paths: Sequence[Path],
    xstest_paths: Sequence[Path],
    gptfuzz_paths: Sequence[Path],
    policy: Policy,
) -> list[Record]:
    records: list[Record] = []
    for path in data_paths:
        records.extend(read_labelled_file(path, policy))
    for path in xstest_paths:
        _check_xstest_prompts(path)
        records.extend(_nonempty(path, load_xstest(path)))
    for path in gptfuzz_paths:
        records.extend(_nonempty(path, load_gptfuzz(path)))
    return records


def _check_xstest_prompts(path: Path) -> None:
    """Require ``prompts.csv`` beside an XSTest completions file.

    Without it compliant answers to safe prompts get no disallowed_content
    label, so that proposition would get negative labels only from refusals
    and could learn that complying means disallowed content.
    """
    prompts = path.parent / "prompts.csv"
    if not prompts.exists():
        raise DataError(
            str(path),
            None,
            f"prompts.csv not found in {path.parent}; training needs the XSTest "
            "prompts.csv (the safe/unsafe label of each prompt) in the folder of "
            "each completions file, so copy it there from the same XSTest release",
        )


def _nonempty(path: Path, records: list[Record]) -> list[Record]:
    if not records:
        raise DataError(str(path), None, "no rows found; add at least one row")
    return records


def _echo_progress(message: str) -> None:
    click.echo(message, err=True)


def _echo_fallbacks(model: OfflineModel) -> None:
    """Print the propositions that fall back to a cue rule or a constant probability."""
    cue_rules = sorted(name for name, rule in model.rules.items() if rule.weights)
    constants = sorted(name for name, rule in model.rules.items() if not rule.weights)
    if cue_rules:
        click.echo(f"too few labels to learn, cue rule instead: {', '.join(cue_rules)}")
    if constants:
        rates = ", ".join(
            f"{name} {_sigmoid(model.rules[name].intercept):.3f}" for name in constants
        )
        click.echo(
            "too few labels to learn and no cue rule, constant probability instead: "
            f"{rates}"
        )


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))
