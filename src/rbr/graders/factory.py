"""Build a grader from a kind name and options, as the CLI does.

Optional graders import their heavy dependencies only when built, so
choosing the labels grader never imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rbr.data.io import read_records
from rbr.data.types import Record
from rbr.errors import GraderError
from rbr.graders.base import Grader
from rbr.graders.labels import LabelsGrader
from rbr.policy.spec import Policy

GRADER_KINDS = ("offline", "labels", "openai", "local")
"""Grader kinds: the bundled offline classifiers, stored labels, an
OpenAI-compatible HTTP server, and a local Hugging Face causal LM."""

LIMIT_OPTIONS = (
    "max_concurrency",
    "requests_per_minute",
    "tokens_per_minute",
    "timeout_s",
    "max_retries",
    "backoff_base_s",
    "backoff_max_s",
)
"""Options of the openai kind that go to :class:`rbr.graders.ratelimit.RequestLimits`."""

KIND_OPTIONS: dict[str, tuple[str, ...]] = {
    "offline": ("artifact_path",),
    "labels": (),
    "openai": (
        "model",
        "base_url",
        "api_key",
        "endpoint",
        "top_logprobs",
        "preamble",
        "layout",
        *LIMIT_OPTIONS,
    ),
    "local": (
        "model_path",
        "device",
        "dtype",
        "batch_size",
        "preamble",
        "layout",
        "use_chat_template",
        "reuse_prefix",
    ),
}
"""The kind-specific options (``GraderOptions.settings`` keys) of each kind."""

SHARED_OPTIONS = ("kind", "cache_path", "use_cache", "few_shot_from", "few_shot_k")
"""Keys of a ``grader`` settings mapping that every kind accepts."""

CACHED_KINDS = ("openai", "local")
"""Kinds whose grades are worth caching (each answer costs a request)."""


@dataclass
class GraderOptions:
    """Options shared by the grader kinds; each kind reads the ones it uses.

    Attributes:
        kind: One of :data:`GRADER_KINDS`.
        records: Rows whose stored ``propositions`` the labels grader returns.
        policy: The policy in use; LLM graders need its propositions for
            the ``shared_definitions`` layout and for few-shot selection.
        cache_path: SQLite grade cache file; None uses the default location.
        use_cache: Wrap graders of :data:`CACHED_KINDS` in the grade cache.
        few_shot_from: Labelled file to draw few-shot examples from.
        few_shot_k: Examples per proposition drawn from ``few_shot_from``.
        settings: Kind-specific options, such as ``base_url`` or ``model``.
    """

    kind: str = "labels"
    records: Sequence[Record] = ()
    policy: Policy | None = None
    cache_path: Path | None = None
    use_cache: bool = True
    few_shot_from: Path | None = None
    few_shot_k: int = 4
    settings: dict[str, Any] = field(default_factory=dict)


def make_grader(options: GraderOptions) -> Grader:
    """Build the grader described by ``options``.

    Raises:
        GraderError: When the kind is unknown or its options are incomplete.
    """
    builders = {
        "offline": _offline,
        "labels": _labels,
        "openai": _openai,
        "local": _local,
    }
    check_grader_settings(options.kind, options.settings)
    grader = builders[options.kind](options)
    if options.use_cache and options.kind in CACHED_KINDS:
        from rbr.graders.cache import CachedGrader

        grader = CachedGrader(grader, options.cache_path)
    return grader


def check_grader_settings(kind: str, settings: Mapping[str, Any]) -> None:
    """Check a grader kind and the names of its kind-specific options.

    Raises:
        GraderError: Naming ``grader.kind`` for an unknown kind, or
            ``grader.<key>``, the kind and its valid options for an unknown
            option.
    """
    if kind not in KIND_OPTIONS:
        raise GraderError(
            f"grader.kind: unknown grader kind {kind!r}; use one of "
            f"{', '.join(GRADER_KINDS)}"
        )
    known = KIND_OPTIONS[kind]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        valid = ", ".join((*SHARED_OPTIONS, *known))
        raise GraderError(
            f"grader.{unknown[0]}: unknown option for grader kind {kind!r}; "
            f"valid options: {valid}"
        )


def _labels(options: GraderOptions) -> Grader:
    return LabelsGrader.from_records(options.records)


def _offline(options: GraderOptions) -> Grader:
    from rbr.graders.offline import OfflineGrader

    return OfflineGrader.load(options.settings.get("artifact_path"))


def _local(options: GraderOptions) -> Grader:
    from rbr.graders.transformers_local import TransformersGrader

    settings = dict(options.settings)
    model_path = settings.pop("model_path", None)
    if not model_path:
        raise GraderError(
            "the local grader needs a model folder: pass --model-path DIR "
            "(a Hugging Face causal LM saved with save_pretrained)"
        )
    definitions = list(options.policy.propositions.values()) if options.policy else None
    return TransformersGrader(
        model_path, definitions=definitions, few_shot=_few_shot(options), **settings
    )


def _few_shot(options: GraderOptions) -> Any:
    if options.few_shot_from is None:
        return None
    if options.policy is None:
        raise GraderError("few-shot selection needs the policy's proposition names")
    from rbr.graders.fewshot import FewShotPool

    records = read_records(options.few_shot_from)
    return FewShotPool(records, list(options.policy.propositions), options.few_shot_k)


def _openai(options: GraderOptions) -> Grader:
    from rbr.graders.openai_compat import OpenAICompatibleGrader
    from rbr.graders.ratelimit import RequestLimits

    settings = dict(options.settings)
    try:
        limits = RequestLimits(
            **{k: settings.pop(k) for k in list(settings) if k in LIMIT_OPTIONS}
        )
    except ValueError as error:
        raise GraderError(f"openai grader: {error}") from None
    definitions = list(options.policy.propositions.values()) if options.policy else None
    return OpenAICompatibleGrader(
        limits=limits,
        definitions=definitions,
        few_shot=_few_shot(options),
        **settings,
    )
