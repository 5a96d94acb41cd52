"""One-line notes when a bundled model may be evaluated on its own training data.

The offline grader and the offline prompt classifier store which data sources
they were trained on, but not the training rows themselves. So these notes
cannot tell whether the evaluated file was among them; they name the
sources and point to held-out figures instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rbr.graders.base import Grader
from rbr.graders.offline import OfflineGrader
from rbr.reward.prompt_offline import OfflinePromptClassifier

SOURCE_TITLES = {
    "reference": "hand-labelled gold rows",
    "xstest": "XSTest rows",
    "gptfuzz": "GPTFuzz rows",
}
"""Readable names of the data sources an offline grader artifact records."""


def grader_training_note(grader: Grader, *, shipped: bool) -> str | None:
    """Return a note naming an offline grader's training sources, else None.

    Args:
        grader: The grader being evaluated; only :class:`OfflineGrader` gets a note.
        shipped: Whether it runs the artifact that ships with rbr, whose gold
            rows are ``rbr-gold/train.jsonl``.
    """
    if not isinstance(grader, OfflineGrader):
        return None
    sources = grader.model.metadata.get("sources")
    if not isinstance(sources, Mapping) or not sources:
        return None
    counted = ", ".join(
        f"{count} {SOURCE_TITLES.get(str(name), f'{name} rows')}"
        for name, count in sources.items()
    )
    origin = " (for the shipped artifact, the gold rows are rbr-gold/train.jsonl)"
    return (
        f"the offline grader {grader.identity} was trained on {counted}"
        f"{origin if shipped else ''}; on those rows these are training-set "
        "numbers. For held-out figures see docs/offline-grader.md, or train a "
        "grader without this file ('rbr grader train') and pass it with --artifact."
    )


def classifier_training_note(classifier: Any) -> str | None:
    """Return a note naming an offline prompt classifier's training files, else None.

    The note quotes the cross-validated accuracy stored in the artifact,
    when there is one, as the figure to expect on new prompts.
    """
    if not isinstance(classifier, OfflinePromptClassifier):
        return None
    metadata = classifier.model.metadata
    sources = metadata.get("sources")
    if not isinstance(sources, Mapping) or not sources:
        return None
    files = "; ".join(str(value) for value in sources.values())
    note = (
        f"the prompt classifier {classifier.identity} was trained on {files}. "
        "On prompts from those files the accuracy is measured on training data"
    )
    validation = metadata.get("cross_validation")
    if isinstance(validation, Mapping) and "category_accuracy_mean" in validation:
        note += (
            f"; its {validation.get('folds', '?')}-fold cross-validated accuracy "
            f"is {float(validation['category_accuracy_mean']):.3f} (category) and "
            f"{float(validation.get('response_type_accuracy_mean', float('nan'))):.3f}"
            " (response type)"
        )
    return note + "."
