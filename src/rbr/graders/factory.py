"""Build a grader from a kind name and options, as the CLI does.

Optional graders import their heavy dependencies only when built, so
choosing the labels grader never imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    builder = builders.get(options.kind)
    if builder is None:
        raise GraderError(
            f"unknown grader kind {options.kind!r}; use one of {', '.join(GRADER_KINDS)}"
        )
    grader = builder(options)
    if options.use_cache and options.kind in CACHED_KINDS:
        from rbr.graders.cache import CachedGrader

        grader = CachedGrader(grader, options.cache_path)
    return grader


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
    limit_keys = {
        "max_concurrency",
        "requests_per_minute",
        "tokens_per_minute",
        "timeout_s",
        "max_retries",
    }
    limits = RequestLimits(
        **{k: settings.pop(k) for k in list(settings) if k in limit_keys}
    )
    definitions = list(options.policy.propositions.values()) if options.policy else None
    return OpenAICompatibleGrader(
        limits=limits,
        definitions=definitions,
        few_shot=_few_shot(options),
        **settings,
    )
