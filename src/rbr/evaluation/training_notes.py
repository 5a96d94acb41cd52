"""One-line notes when a bundled model may be evaluated on its own training data.

The offline grader and the offline prompt classifier store which data sources
they were trained on. An offline grader artifact trained by this version of
rbr also stores content keys of its training rows, so
:func:`training_overlap_note` counts the evaluated rows among them. Without
those keys a note cannot tell whether the evaluated file was among the
training rows, so it names the sources and points to held-out figures instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rbr.data.types import Record
from rbr.graders.base import Grader
from rbr.graders.offline import DEFAULT_ARTIFACT, OfflineGrader
from rbr.graders.offline.training import CONTENT_KEY_DIGITS
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


def training_overlap_note(
    grader: Grader, records: Sequence[Record], *, gold_path: Path, artifact: Path | None
) -> str | None:
    """Return a note when gold rows are training rows of an offline grader, else None.

    An artifact trained by this version of rbr stores the content keys of
    its training rows, so the note counts the gold rows among them. An
    older artifact has no keys, so then only the shipped artifact gets a
    note, which names its training sources.

    Args:
        grader: The grader being evaluated.
        records: The gold rows.
        gold_path: The gold file, named in the note.
        artifact: The --artifact file, or None for the shipped artifact.
    """
    if not isinstance(grader, OfflineGrader):
        return None
    keys = grader.model.metadata.get("content_keys")
    if not isinstance(keys, list):
        shipped = artifact is None or artifact.resolve() == DEFAULT_ARTIFACT.resolve()
        return grader_training_note(grader, shipped=True) if shipped else None
    stored = set(keys)
    overlap = sum(
        r.sample.content_key()[:CONTENT_KEY_DIGITS] in stored for r in records
    )
    if not overlap:
        return None
    return (
        f"{overlap} of the {len(records)} rows of {gold_path} are training rows of "
        f"the offline grader {grader.identity} (same conversation and completion); "
        "on those rows these are training-set numbers. For held-out figures, "
        "train a grader without them ('rbr grader train') and pass it with "
        "--artifact."
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
