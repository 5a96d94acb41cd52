"""A grader that reads human labels stored with the data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from rbr.data.types import Record, Sample
from rbr.graders.base import Grader, GradeResult, Unscored
from rbr.policy.spec import Proposition


class LabelsGrader(Grader):
    """Return stored proposition values (a true label becomes 1.0, false 0.0).

    Samples are matched to labels by their conversation and completion text,
    so the same labels serve any batch that contains those samples. A sample
    or proposition with no stored value is unscored with reason
    ``missing_label``.
    """

    def __init__(
        self,
        labels: Mapping[str, Mapping[str, float]],
        *,
        source_identity: str | None = None,
    ) -> None:
        self._labels = {key: dict(values) for key, values in labels.items()}
        self._source_identity = source_identity

    @classmethod
    def from_records(cls, records: Iterable[Record]) -> LabelsGrader:
        """Build the grader from the ``propositions`` field of data records.

        When every labelled row carries the same ``grader`` field (as rows
        written by ``rbr grade`` do), the stored values are that grader's
        answers and this grader takes over its identity, so weights fitted on
        them match scoring with that grader.
        """
        labels: dict[str, dict[str, float]] = {}
        identities: set[object] = set()
        for record in records:
            if record.propositions:
                labels.setdefault(record.sample.content_key(), {}).update(
                    record.propositions
                )
                identities.add(record.extra.get("grader"))
        source = identities.pop() if len(identities) == 1 else None
        return cls(labels, source_identity=source if isinstance(source, str) else None)

    @property
    def identity(self) -> str:
        return self._source_identity or "labels"

    def grade(
        self, samples: Sequence[Sample], propositions: Sequence[Proposition]
    ) -> GradeResult:
        names = tuple(p.name for p in propositions)
        values = np.full((len(samples), len(names)), np.nan)
        unscored = []
        for i, sample in enumerate(samples):
            stored = self._labels.get(sample.content_key())
            for j, name in enumerate(names):
                if stored is not None and name in stored:
                    values[i, j] = stored[name]
                    continue
                detail = (
                    "the data has no labels for this sample"
                    if stored is None
                    else f"the sample's labels do not include {name!r}"
                )
                unscored.append(
                    Unscored(i, name, "missing_label", detail, None, sample.sample_id)
                )
        return GradeResult(names, values, unscored)
