"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import difflib
import functools
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from rbr.data.io import read_records
from rbr.data.types import Record
from rbr.errors import DataError, GraderError, OutputError, RbrError
from rbr.graders.base import Grader, Unscored
from rbr.graders.factory import GRADER_KINDS, GraderOptions, make_grader
from rbr.policy import Policy, load_default_policy, load_policy

DEFAULT_GRADER = "offline"
"""Grader used when a command gets no --grader option."""


def _invoke_reporting_errors(
    invoke: Callable[[click.Context], Any], ctx: click.Context
) -> Any:
    """Run a click invocation, turning rbr and file errors into one line and exit 2."""
    try:
        return invoke(ctx)
    except RbrError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    except OSError as error:
        target = f"{error.filename}: " if error.filename else ""
        click.echo(f"error: {target}{error.strerror or error}", err=True)
        sys.exit(2)


class ErrorReportingGroup(click.Group):
    """A command group that prints rbr errors as one line and exits with code 2.

    Subgroups use it too, so they behave the same when invoked on their own,
    as in tests.
    """

    def invoke(self, ctx: click.Context) -> Any:
        return _invoke_reporting_errors(super().invoke, ctx)


class ErrorReportingCommand(click.Command):
    """A command that prints rbr errors as one line and exits with code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        return _invoke_reporting_errors(super().invoke, ctx)


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


def weights_option(*, required: bool) -> Callable[[Callable[..., Any]], Any]:
    """Add ``--weights FILE``, the weights JSON of ``rbr fit``, as ``weights_path``."""
    return click.option(
        "--weights",
        "weights_path",
        required=required,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="Weights JSON written by 'rbr fit'.",
    )


def allow_grader_mismatch_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the ``--allow-grader-mismatch`` flag for weights from another grader."""
    return click.option(
        "--allow-grader-mismatch",
        is_flag=True,
        help="Accept weights fitted with a different grader.",
    )(func)


def openai_client_options(
    tag: str,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Return a decorator adding the options of an OpenAI-compatible client.

    They are ``--base-url``, ``--model``, ``--api-key`` and
    ``--max-concurrency``, each help text led by ``tag``.
    """
    options = [
        click.option(
            "--base-url",
            default=None,
            help=f"{tag} Server URL ending in /v1. Default: $OPENAI_BASE_URL.",
        ),
        click.option("--model", default=None, help=f"{tag} Model name on the server."),
        click.option(
            "--api-key",
            default=None,
            help=f"{tag} API key. Default: $OPENAI_API_KEY.",
        ),
        click.option(
            "--max-concurrency",
            type=click.IntRange(min=1),
            default=8,
            show_default=True,
            help=f"{tag} Requests in flight at once.",
        ),
    ]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


GRADER_OPTION_NAMES = (
    "grader_kind",
    "base_url",
    "model",
    "api_key",
    "endpoint",
    "prompt_layout",
    "max_concurrency",
    "rpm",
    "tpm",
    "timeout",
    "max_retries",
    "few_shot_from",
    "few_shot_k",
    "cache_path",
    "no_cache",
    "artifact",
    "model_path",
    "device",
    "dtype",
    "local_batch_size",
)


def grader_options(
    func: Callable[..., Any] | None = None, *, default_kind: str | None = None
) -> Any:
    """Add the options that choose and configure a grader.

    Use as ``@grader_options`` or ``@grader_options(default_kind="openai")``.
    The decorated command receives them bundled as one ``grader_spec``
    mapping, to pass to :func:`build_grader`.
    """
    if func is None:
        return lambda f: _add_grader_options(f, default_kind or DEFAULT_GRADER)
    return _add_grader_options(func, default_kind or DEFAULT_GRADER)


def _add_grader_options(
    func: Callable[..., Any], default_kind: str
) -> Callable[..., Any]:

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        spec = {name: kwargs.pop(name) for name in GRADER_OPTION_NAMES}
        return func(*args, grader_spec=spec, **kwargs)

    options = [
        click.option(
            "--grader",
            "grader_kind",
            type=click.Choice(GRADER_KINDS),
            default=default_kind,
            show_default=True,
            help="Grader: 'offline' runs the bundled classifiers on the CPU; "
            "'labels' returns the 'propositions' stored in each row; 'openai' asks "
            "an OpenAI-compatible server (OpenAI, vLLM, SGLang, llama.cpp); 'local' "
            "runs a Hugging Face causal LM from a folder.",
        ),
        click.option(
            "--artifact",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="[offline] Trained grader file from 'rbr grader train'. "
            "Default: the artifact shipped with rbr.",
        ),
        click.option(
            "--model-path",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            default=None,
            help="[local] Folder of a causal LM saved with save_pretrained.",
        ),
        click.option(
            "--device",
            type=click.Choice(["auto", "cpu", "cuda"]),
            default="auto",
            show_default=True,
            help="[local] Device.",
        ),
        click.option(
            "--dtype",
            type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
            default="auto",
            show_default=True,
            help="[local] Weight and activation dtype.",
        ),
        click.option(
            "--local-batch-size",
            type=click.IntRange(min=1),
            default=8,
            show_default=True,
            help="[local] Proposition prompts per forward pass.",
        ),
        openai_client_options("[openai]"),
        click.option(
            "--endpoint",
            type=click.Choice(["chat", "completions"]),
            default="chat",
            show_default=True,
            help="[openai] Chat or completions endpoint.",
        ),
        click.option(
            "--prompt-layout",
            type=click.Choice(["conversation_first", "shared_definitions"]),
            default="conversation_first",
            show_default=True,
            help="[openai, local] Prompt layout: conversation first then one "
            "proposition; or every definition first (least prefill with a "
            "prefix-caching server, most tokens sent).",
        ),
        click.option(
            "--rpm",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="[openai] Requests-per-minute limit.",
        ),
        click.option(
            "--tpm",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="[openai] Estimated tokens-per-minute limit.",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=60.0,
            show_default=True,
            help="[openai] Seconds one request may take.",
        ),
        click.option(
            "--max-retries",
            type=click.IntRange(min=0),
            default=5,
            show_default=True,
            help="[openai] Retries on 429, 5xx, timeouts and malformed replies.",
        ),
        click.option(
            "--few-shot-from",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="[openai, local] Labelled file (gold format) to draw few-shot "
            "examples from, instead of the policy's own examples.",
        ),
        click.option(
            "--few-shot-k",
            type=click.IntRange(min=0),
            default=4,
            show_default=True,
            help="[openai, local] Few-shot examples per proposition, balanced yes/no.",
        ),
        click.option(
            "--cache-path",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Grade cache (SQLite). Default: $RBR_CACHE_DIR/grades.sqlite "
            "or ~/.cache/rbr/grades.sqlite.",
        ),
        click.option(
            "--no-cache", is_flag=True, help="Do not read or write the grade cache."
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
        wrapper = option(wrapper)
    return wrapper


def default_grader_spec(kind: str) -> dict[str, Any]:
    """Return the grader options a command line without grader flags produces."""
    return {
        "grader_kind": kind,
        "base_url": None,
        "model": None,
        "api_key": None,
        "endpoint": "chat",
        "prompt_layout": "conversation_first",
        "max_concurrency": 8,
        "rpm": None,
        "tpm": None,
        "timeout": 60.0,
        "max_retries": 5,
        "few_shot_from": None,
        "few_shot_k": 4,
        "cache_path": None,
        "no_cache": False,
        "artifact": None,
        "model_path": None,
        "device": "auto",
        "dtype": "auto",
        "local_batch_size": 8,
    }


def build_grader(
    spec: dict[str, Any], records: Sequence[Record], policy: Policy
) -> Grader:
    """Build the grader chosen on the command line."""
    settings: dict[str, Any] = {}
    if spec["grader_kind"] == "offline":
        settings = {"artifact_path": spec["artifact"]}
    elif spec["grader_kind"] == "local":
        settings = {
            "model_path": spec["model_path"],
            "device": spec["device"],
            "dtype": spec["dtype"],
            "batch_size": spec["local_batch_size"],
            "layout": spec["prompt_layout"],
        }
    elif spec["grader_kind"] == "openai":
        settings = {
            "base_url": spec["base_url"],
            "model": spec["model"],
            "api_key": spec["api_key"],
            "endpoint": spec["endpoint"],
            "layout": spec["prompt_layout"],
            "max_concurrency": spec["max_concurrency"],
            "requests_per_minute": spec["rpm"],
            "tokens_per_minute": spec["tpm"],
            "timeout_s": spec["timeout"],
            "max_retries": spec["max_retries"],
        }
    options = GraderOptions(
        kind=spec["grader_kind"],
        records=records,
        policy=policy,
        cache_path=spec["cache_path"],
        use_cache=not spec["no_cache"],
        few_shot_from=spec["few_shot_from"],
        few_shot_k=spec["few_shot_k"],
        settings=settings,
    )
    return make_grader(options)


def load_policy_or_default(path: Path | None) -> Policy:
    return load_default_policy() if path is None else load_policy(path)


def read_data(path: Path, policy: Policy | None = None) -> list[Record]:
    """Read a data file, rejecting an empty one and warning about unknown labels.

    Raises:
        DataError: When the file is empty or a row is invalid.
    """
    records = read_records(path)
    if not records:
        raise DataError(str(path), None, "no rows found; add at least one row")
    if policy is not None:
        _warn_unknown_propositions(path, records, policy)
    return records


def _warn_unknown_propositions(
    path: Path, records: Sequence[Record], policy: Policy
) -> None:
    known = list(policy.propositions)
    unknown: dict[str, tuple[int, int]] = {}
    for record in records:
        for name in record.propositions:
            if name not in policy.propositions:
                first_line, count = unknown.get(name, (record.line or 0, 0))
                unknown[name] = (first_line, count + 1)
    if unknown:
        listed = "; ".join(
            f"{name!r} in {count} rows (first on line {line}){_suggestion(name, known)}"
            for name, (line, count) in unknown.items()
        )
        click.echo(
            f"warning: {path}: ignoring propositions the policy does not define: "
            f"{listed}",
            err=True,
        )


def _suggestion(name: str, known: Sequence[str]) -> str:
    """Return ``", did you mean 'x'?"`` for the closest policy proposition, or ''."""
    matches = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    return f", did you mean {matches[0]!r}?" if matches else ""


def fail_if_nothing_scored(unscored: Sequence[Unscored], n_cells: int) -> None:
    """Raise one clear error when the grader scored none of ``n_cells``.

    This is the usual sign of an unreachable server or a wrong model name,
    and writing a file of empty grades would only move the failure later.

    Raises:
        GraderError: With the first failure's reason and detail.
    """
    if n_cells == 0 or len(unscored) < n_cells:
        return
    first = unscored[0]
    raise GraderError(
        f"the grader scored none of the {n_cells} propositions it was asked; first "
        f"failure ({first.reason}): {first.detail}"
    )


def check_output_path(path: Path, *, suffixes: tuple[str, ...] = (".jsonl",)) -> None:
    """Fail before any work when ``path`` cannot be written.

    Writes a probe file into the nearest existing folder above ``path`` but
    creates no folder, so a command that fails later leaves nothing behind.
    The writers create missing parent folders once the output is ready.

    Raises:
        OutputError: Naming the path, the cause and the fix.
    """
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputError(
            f"{path}: this output is written as {'/'.join(suffixes)}; "
            f"use a file name ending in {suffixes[0]}"
        )
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name")
    existing = _nearest_existing_folder(path)
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".rbr-probe-"):
            pass
    except OSError as error:
        raise OutputError(
            f"{path}: cannot write there ({error.strerror or error}); choose a "
            "writable folder"
        ) from None


def _nearest_existing_folder(path: Path) -> Path:
    """Return the closest existing folder above ``path``.

    Raises:
        OutputError: When that ancestor is a file, so no folder can be created.
    """
    current = path.parent.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    if not current.is_dir():
        raise OutputError(
            f"{path}: cannot write there ({current} is a file, not a folder); "
            "choose a writable folder"
        )
    return current


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
