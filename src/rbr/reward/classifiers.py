"""Prompt classifiers that predict a prompt's content-policy category."""

from __future__ import annotations

from typing import Any

from rbr.errors import RbrError
from rbr.policy.spec import Policy
from rbr.reward.routing import PromptClassifier

CLASSIFIER_KINDS = ("none",)


def make_prompt_classifier(
    spec: dict[str, Any], policy: Policy
) -> PromptClassifier | None:
    """Build the classifier named by ``spec['kind']``; None for ``none``."""
    kind = spec.pop("kind", "none")
    if kind == "none":
        return None
    raise RbrError(
        f"unknown prompt classifier kind {kind!r}; use one of "
        f"{', '.join(CLASSIFIER_KINDS)}"
    )
