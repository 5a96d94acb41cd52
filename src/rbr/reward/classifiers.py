"""Prompt classifiers that predict a prompt's content-policy category.

Kinds, chosen by the ``classifier`` settings (see :mod:`rbr.reward.config`):

- ``none``: no classifier; every prompt must come with a response type or
  a category.
- ``offline``: the bundled numpy classifier
  (:class:`rbr.reward.prompt_offline.OfflinePromptClassifier`), trained on
  the default policy's categories. Options: ``artifact_path``,
  ``cache_size``.
- ``openai``: an LLM behind an OpenAI-compatible API
  (:class:`rbr.reward.prompt_llm.OpenAIPromptClassifier`). Options:
  ``model`` (required), ``base_url``, ``api_key``, ``endpoint``,
  ``max_tokens``, ``cache_size``, ``category_descriptions``,
  ``max_concurrency``, ``requests_per_minute``, ``tokens_per_minute``,
  ``timeout_s`` and ``max_retries``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rbr.policy.spec import Policy
from rbr.reward.config import RewardConfigError
from rbr.reward.prompt_offline import ClassifierError
from rbr.reward.routing import PromptClassifier

__all__ = [
    "CLASSIFIER_KINDS",
    "ClassifierError",
    "make_prompt_classifier",
]

CLASSIFIER_KINDS = ("none", "offline", "openai")

OFFLINE_OPTIONS = ("artifact_path", "cache_size")
OPENAI_OPTIONS = (
    "model",
    "base_url",
    "api_key",
    "endpoint",
    "max_tokens",
    "cache_size",
    "category_descriptions",
    "max_concurrency",
    "requests_per_minute",
    "tokens_per_minute",
    "timeout_s",
    "max_retries",
)


def make_prompt_classifier(
    spec: Mapping[str, Any], policy: Policy
) -> PromptClassifier | None:
    """Build the classifier named by ``spec['kind']``; None for ``none``.

    Args:
        spec: ``kind`` and that kind's options; it is not modified.
        policy: The categories the classifier must predict.

    Raises:
        RewardConfigError: On an unknown kind or option, or a missing
            required option.
        ClassifierError: When the artifact cannot be loaded or does not fit
            the policy, or the ``openai`` options are invalid.
    """
    options = dict(spec)
    kind = options.pop("kind", "none")
    if kind == "none":
        _check_options(kind, options, ())
        return None
    if kind == "offline":
        _check_options(kind, options, OFFLINE_OPTIONS)
        from rbr.reward.prompt_offline import OfflinePromptClassifier

        return OfflinePromptClassifier.load(
            options.get("artifact_path"),
            policy=policy,
            cache_size=int(options.get("cache_size", 10000)),
        )
    if kind == "openai":
        _check_options(kind, options, OPENAI_OPTIONS)
        if not options.get("model"):
            raise RewardConfigError(
                "classifier.model: missing, and kind 'openai' needs it; set it to "
                "the model name the server serves"
            )
        from rbr.reward.prompt_llm import make_openai_classifier

        return make_openai_classifier(options, policy)
    raise RewardConfigError(
        f"classifier.kind: unknown kind {kind!r}; use one of "
        f"{', '.join(CLASSIFIER_KINDS)}"
    )


def _check_options(kind: str, options: Mapping[str, Any], known: Sequence[str]) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        allowed = ", ".join(known) if known else "none"
        raise RewardConfigError(
            f"classifier.{unknown[0]}: unknown option for kind {kind!r}; options "
            f"of this kind: {allowed}"
        )
