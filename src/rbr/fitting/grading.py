"""Grade data records and group them by response type."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from rbr.data.types import Record, Sample
from rbr.errors import DataError
from rbr.features.space import FeatureSpace, feature_spaces
from rbr.graders.base import Grader, Unscored
from rbr.policy.spec import Policy

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int], None]


def resolve_response_type(record: Record, policy: Policy, *, source: str) -> str | None:
    """Return the canonical response type of a record, or None when it has no RBR.

    The ``response_type`` field wins; otherwise ``category`` is mapped through
    the policy's content-policy map.

    Raises:
        DataError: When the row names an unknown response type or category,
            or has neither field.
    """
    name = record.sample.response_type
    if name is not None:
        try:
            resolved = policy.response_type(name).name
        except KeyError as error:
            raise DataError(source, record.line, str(error.args[0])) from None
        _check_category_agrees(record, policy, resolved, source)
        return resolved
    if record.category is not None:
        try:
            mapped = policy.response_type_for_category(record.category)
        except KeyError as error:
            raise DataError(source, record.line, str(error.args[0])) from None
        return None if mapped is None else policy.response_type(mapped).name
    raise DataError(
        source,
        record.line,
        "row has neither 'response_type' nor 'category'; add one so the policy "
        "knows how the prompt should be answered",
    )


@dataclass
class TypeBatch:
    """Graded rows of one response type.

    Attributes:
        space: The response type's feature layout.
        indices: Positions of the rows in the original record list.
        probabilities: ``(n, len(space.propositions))`` proposition probabilities,
            NaN where unscored.
    """

    space: FeatureSpace
    indices: np.ndarray
    probabilities: np.ndarray
    unscored: list[Unscored] = field(default_factory=list)

    def complete(self) -> np.ndarray:
        """Return a mask of rows with every needed proposition scored."""
        return ~np.isnan(self.probabilities).any(axis=1)


@dataclass
class GradedRecords:
    """Records grouped by response type with their proposition probabilities."""

    records: list[Record]
    response_types: list[str | None]
    batches: dict[str, TypeBatch]


def grade_records(
    records: Sequence[Record],
    policy: Policy,
    grader: Grader,
    *,
    source: str = "<memory>",
    batch_size: int = 64,
    progress: ProgressCallback | None = None,
) -> GradedRecords:
    """Grade every record that has a safety response type.

    Each response type's rows are graded on the propositions its features
    need. ``progress`` is called with the number of rows finished after each
    batch.
    """
    spaces = feature_spaces(policy)
    types = [resolve_response_type(r, policy, source=source) for r in records]
    batches: dict[str, TypeBatch] = {}
    for name, space in spaces.items():
        positions = np.array([i for i, t in enumerate(types) if t == name], dtype=int)
        if positions.size == 0:
            continue
        propositions = [policy.propositions[p] for p in space.propositions]
        blocks = []
        unscored: list[Unscored] = []
        for start in range(0, positions.size, batch_size):
            chunk = positions[start : start + batch_size]
            samples = [_with_type(records[i].sample, name) for i in chunk]
            result = grader.grade(samples, propositions)
            blocks.append(result.probabilities)
            for item in result.unscored:
                unscored.append(_shift(item, int(chunk[item.sample_index])))
            if progress is not None:
                progress(len(chunk))
        batches[name] = TypeBatch(space, positions, np.vstack(blocks), unscored)
        if unscored:
            logger.warning(
                "%d propositions unscored for %s rows (%s): %s",
                len(unscored),
                name,
                reason_summary(unscored),
                proposition_summary(unscored),
            )
    return GradedRecords(list(records), types, batches)


def _check_category_agrees(
    record: Record, policy: Policy, response_type: str, source: str
) -> None:
    if record.category is None:
        return
    try:
        mapped = policy.response_type_for_category(record.category)
    except KeyError:
        return
    if mapped is not None and policy.response_type(mapped).name != response_type:
        raise DataError(
            source,
            record.line,
            f"response_type {response_type!r} disagrees with category "
            f"{record.category!r}, which the policy maps to {mapped!r}; fix one of them",
        )


def _with_type(sample: Sample, response_type: str) -> Sample:
    if sample.response_type == response_type:
        return sample
    return Sample(sample.prompt, sample.completion, response_type, sample.sample_id)


def _shift(item: Unscored, index: int) -> Unscored:
    return Unscored(
        index, item.proposition, item.reason, item.detail, item.raw, item.sample_id
    )


def reason_summary(unscored: Sequence[Unscored]) -> str:
    """Return unscored counts by reason as ``"reason: n, ..."``."""
    counts: dict[str, int] = {}
    for item in unscored:
        counts[item.reason] = counts.get(item.reason, 0) + 1
    return ", ".join(f"{reason}: {count}" for reason, count in sorted(counts.items()))


def proposition_summary(unscored: Sequence[Unscored], *, limit: int = 5) -> str:
    """Return the unscored propositions, most frequent first, as ``"name (n), ..."``.

    Lists at most ``limit`` names and counts the rest.
    """
    counts: dict[str, int] = {}
    for item in unscored:
        counts[item.proposition] = counts.get(item.proposition, 0) + 1
    ranked = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    listed = ", ".join(f"{name} ({count})" for name, count in ranked[:limit])
    rest = len(ranked) - limit
    return listed if rest <= 0 else f"{listed} and {rest} more"
