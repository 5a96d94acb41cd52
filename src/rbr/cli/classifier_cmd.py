"""``rbr classify``: predict each prompt's content-policy category."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import click

from rbr.cli.common import (
    ErrorReportingCommand,
    check_output_path,
    load_policy_or_default,
    openai_client_options,
    policy_option,
)
from rbr.data.io import iter_rows, write_jsonl
from rbr.data.types import Message, messages_from_mapping, prompt_hash
from rbr.errors import DataError
from rbr.evaluation.training_notes import classifier_training_note
from rbr.policy.spec import Policy, normalize_name
from rbr.reward.classifiers import CLASSIFIER_KINDS, make_prompt_classifier


@click.command("classify", cls=ErrorReportingCommand)
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--classifier",
    "kind",
    type=click.Choice([k for k in CLASSIFIER_KINDS if k != "none"]),
    default="offline",
    show_default=True,
    help="The bundled offline classifier, or an LLM behind an OpenAI-compatible API.",
)
@click.option(
    "--artifact",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Offline classifier artifact (.npz). Default: the one shipped with rbr.",
)
@openai_client_options("[openai]")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write each row with 'predicted_category' and "
    "'predicted_response_type' to this JSONL file.",
)
@policy_option
def classify_command(
    data: Path,
    kind: str,
    artifact: Path | None,
    model: str | None,
    base_url: str | None,
    api_key: str | None,
    max_concurrency: int,
    out_path: Path | None,
    policy_path: Path | None,
) -> None:
    """Classify the prompt of every row of DATA (JSONL or Parquet).

    Each row needs a 'prompt': a string or a list of {role, content}
    messages ending with the user turn. When rows also have a 'category',
    the accuracy of the predicted category and of the response type it maps
    to is printed, counting each distinct prompt once.
    """
    if out_path is not None:
        check_output_path(out_path)
    policy = load_policy_or_default(policy_path)
    rows = [(line, row, _prompt_of(data, line, row)) for line, row in iter_rows(data)]
    if not rows:
        raise DataError(str(data), None, "no rows found; add at least one row")
    classifier = make_prompt_classifier(
        _classifier_spec(kind, artifact, model, base_url, api_key, max_concurrency),
        policy,
    )
    predicted = classifier.classify([prompt for _, _, prompt in rows])
    click.echo(f"classified {len(rows)} rows with {classifier.identity}")
    if _report(rows, predicted, policy):
        note = classifier_training_note(classifier)
        if note:
            click.echo(f"note: {note}", err=True)
    if out_path is not None:
        output = (
            {
                **row,
                "predicted_category": category,
                "predicted_response_type": _response_type(policy, category),
            }
            for (_, row, _), category in zip(rows, predicted)
        )
        count = write_jsonl(out_path, output)
        click.echo(f"wrote {count} rows -> {out_path}")


def _classifier_spec(
    kind: str,
    artifact: Path | None,
    model: str | None,
    base_url: str | None,
    api_key: str | None,
    max_concurrency: int,
) -> dict[str, Any]:
    if kind == "offline":
        return {"kind": kind, "artifact_path": artifact}
    return {
        "kind": kind,
        "model": model,
        "base_url": base_url,
        "api_key": api_key,
        "max_concurrency": max_concurrency,
    }


def _prompt_of(path: Path, line: int, row: dict[str, Any]) -> tuple[Message, ...]:
    value = row.get("prompt")
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    try:
        prompt = messages_from_mapping(value)
    except ValueError as error:
        raise DataError(str(path), line, f"field 'prompt': {error}") from None
    if not prompt or prompt[-1].role != "user":
        raise DataError(
            str(path), line, "field 'prompt' must end with the user turn to classify"
        )
    return prompt


def _response_type(policy: Policy, category: str | None) -> str | None:
    if category is None:
        return None
    mapped = policy.response_type_for_category(category)
    return None if mapped is None else policy.response_type(mapped).name


def _report(
    rows: list[tuple[int, dict[str, Any], tuple[Message, ...]]],
    predicted: list[str | None],
    policy: Policy,
) -> bool:
    """Print accuracy over distinct prompts that carry a known 'category'.

    Returns:
        Whether any accuracy was printed.
    """
    known = {normalize_name(name) for name in policy.content_policy}
    pairs: dict[str, tuple[str, str | None]] = {}
    for (_, row, prompt), guess in zip(rows, predicted):
        truth = row.get("category")
        if isinstance(truth, str) and normalize_name(truth) in known:
            pairs[prompt_hash(prompt)] = (truth, guess)
    unanswered = sum(guess is None for guess in predicted)
    if unanswered:
        click.echo(f"warning: {unanswered} rows got no category", err=True)
    if not pairs:
        return False

    category_hits = sum(
        guess is not None and normalize_name(truth) == normalize_name(guess)
        for truth, guess in pairs.values()
    )
    type_hits = sum(
        _response_type(policy, truth) == _response_type(policy, guess)
        for truth, guess in pairs.values()
        if guess is not None
    )
    n = len(pairs)

    click.echo(f"category accuracy: {category_hits / n:.3f} ({category_hits}/{n})")
    click.echo(f"response type accuracy: {type_hits / n:.3f} ({type_hits}/{n})")
    misses = Counter(
        f"{_response_type(policy, truth)} -> {_response_type(policy, guess)}"
        for truth, guess in pairs.values()
        if _response_type(policy, truth) != _response_type(policy, guess)
    )
    for route, count in misses.most_common():
        click.echo(f"  routed {route}: {count}")
    return True
