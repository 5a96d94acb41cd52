"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from rbr.data.io import read_records
from rbr.data.types import Record
from rbr.graders.base import Grader
from rbr.graders.factory import GRADER_KINDS, GraderOptions, make_grader
from rbr.policy import Policy, load_default_policy, load_policy


def policy_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--policy FILE`` (default: the policy that ships with rbr)."""
    return click.option(
        "--policy",
        "policy_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Policy YAML file (this project's format or the published one). "
        "Default: the built-in safety policy.",
    )(func)


def grader_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options that choose and configure a grader."""
    options = [
        click.option(
            "--grader",
            "grader_kind",
            type=click.Choice(GRADER_KINDS),
            default="labels",
            show_default=True,
            help="Grader: 'labels' returns the 'propositions' stored in each row.",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=64,
            show_default=True,
            help="Completions per grader call.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def load_policy_or_default(path: Path | None) -> Policy:
    return load_default_policy() if path is None else load_policy(path)


def read_data(path: Path) -> list[Record]:
    records = read_records(path)
    if not records:
        raise click.ClickException(f"{path}: no rows found")
    return records


def build_grader(kind: str, records: Sequence[Record]) -> Grader:
    return make_grader(GraderOptions(kind=kind, records=records))


def progress_bar(total: int, description: str) -> tqdm:
    """Return a progress bar on stderr that hides itself when not a terminal."""
    return tqdm(
        total=total,
        desc=description,
        unit="row",
        leave=False,
        dynamic_ncols=True,
        disable=None,
    )


def fail_on_exception(func: Callable[..., Any]) -> Callable[..., Any]:
    """Re-raise file errors as click errors with the path."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OSError as error:
            raise click.ClickException(
                f"{error.filename or ''}: {error.strerror}"
            ) from None

    return wrapper
