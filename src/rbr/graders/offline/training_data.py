"""Feature and label matrices for training the offline grader.

Needs scipy. Kept apart from :mod:`rbr.graders.offline.training` so that the
cross-validation in ``benchmarks/eval_offline_grader.py`` can reuse the
same matrices and folds.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rbr.data.types import Record
from rbr.graders.offline.features import (
    BLOCKS,
    Vocabulary,
    block_terms,
    dense_row,
    prepare,
)

if TYPE_CHECKING:
    from rbr.graders.offline.training import TrainingOptions

REFERENCE_SOURCE = "reference"
"""Source name of rows without ``extra["source"]`` (hand-labelled gold rows)."""


@dataclass(slots=True)
class TrainingMatrix:
    """Features, labels and weights of the training rows.

    Attributes:
        propositions: Label columns.
        blocks: Feature matrix (CSR) of each block: the sparse blocks by
            name, then ``"dense"`` (standardized).
        labels: Label per row and proposition, NaN where unlabelled.
        weights: Source weight per row and proposition (0 where unlabelled).
        groups: Prompt identifier per row, for grouped folds.
        sources: Data source per row.
        response_types: Response-type column index per row.
    """

    propositions: tuple[str, ...]
    vocabularies: dict[str, Vocabulary]
    dense_mean: np.ndarray
    dense_std: np.ndarray
    blocks: dict[str, Any]
    labels: np.ndarray
    weights: np.ndarray
    groups: np.ndarray
    sources: np.ndarray
    response_types: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.labels.shape[0])

    def features(self, scales: dict[str, float]) -> Any:
        """Return the CSR matrix of the blocks with a nonzero scale, scaled."""
        from scipy import sparse

        order = (*BLOCKS, "dense")
        parts = [self.blocks[b] * scales[b] for b in order if scales.get(b)]
        return sparse.hstack(parts, format="csr")

    def source_counts(self, k: int) -> dict[str, int]:
        """Count the rows labelling proposition ``k`` per source."""
        rows = labelled_rows(self, k)
        return dict(Counter(str(s) for s in self.sources[rows]))

    def source_totals(self) -> dict[str, int]:
        """Count the rows per source."""
        return dict(Counter(str(s) for s in self.sources))


def labelled_rows(matrix: TrainingMatrix, k: int) -> np.ndarray:
    """Return the indices of rows that label proposition column ``k``."""
    return np.flatnonzero(~np.isnan(matrix.labels[:, k]))


def build_matrix(
    records: Sequence[Record], propositions: Sequence[str], options: TrainingOptions
) -> TrainingMatrix:
    """Extract features, labels and source weights from training records."""
    from scipy import sparse

    texts = [prepare(r.sample) for r in records]
    terms = [block_terms(t) for t in texts]
    sources = np.array([str(r.extra.get("source", REFERENCE_SOURCE)) for r in records])
    statistics_rows = _statistics_rows(sources, options.feature_statistics)
    vocabularies = {
        block: fit_vocabulary(
            [t[block] for t in terms],
            sources,
            min_df=options.min_df,
            max_terms=options.max_terms[block],
            external_fraction=options.external_vocabulary_fraction,
            idf_rows=statistics_rows,
        )
        for block in BLOCKS
    }
    blocks = {b: _sparse_block(vocabularies[b], [t[b] for t in terms]) for b in BLOCKS}
    dense = np.vstack([dense_row(t) for t in texts])
    mean = dense[statistics_rows].mean(axis=0)
    std = dense[statistics_rows].std(axis=0)
    std[std < 1e-9] = 1.0
    blocks["dense"] = sparse.csr_matrix((dense - mean) / std)
    labels = _labels(records, propositions)
    external_weights = [
        options.external_weights.get(name, options.external_weight)
        for name in propositions
    ]
    return TrainingMatrix(
        propositions=tuple(propositions),
        vocabularies=vocabularies,
        dense_mean=mean,
        dense_std=std,
        blocks=blocks,
        labels=labels,
        weights=_source_weights(labels, sources, external_weights),
        groups=np.array([r.prompt_id for r in records]),
        sources=sources,
        response_types=np.array([t.response_type for t in texts], dtype=np.int64),
    )


def fit_vocabulary(
    documents: list[list[str]],
    sources: np.ndarray,
    *,
    min_df: int,
    max_terms: int,
    external_fraction: float,
    idf_rows: np.ndarray | None = None,
) -> Vocabulary:
    """Fit a vocabulary with a term budget per data source.

    The rows without a named source keep up to ``max_terms`` of their most
    frequent terms, and each named source adds up to ``external_fraction``
    times that. One shared budget would fill with the terms of the largest
    source (thousands of jailbreak answers) and push out the gold rows'
    terms.

    Args:
        documents: Terms of each training row.
        sources: Data source of each row.
        min_df: Minimum number of rows of one source that contain a kept
            term.
        max_terms: Maximum number of terms taken from the rows without a
            named source.
        external_fraction: Maximum number of terms taken from each named
            source, as a fraction of ``max_terms``.
        idf_rows: Rows whose document frequencies give the IDF weights;
            None uses every row.
    """
    selected: set[str] = set()
    for source in sorted(set(sources.tolist())):
        budget = (
            max_terms if source == REFERENCE_SOURCE else external_fraction * max_terms
        )
        if budget < 1:
            continue
        subset = [documents[i] for i in np.flatnonzero(sources == source)]
        fitted = Vocabulary.fit(subset, min_df=min_df, max_terms=int(budget))
        selected.update(fitted.terms)
    rows = range(len(documents)) if idf_rows is None else idf_rows
    return Vocabulary.fit(
        [documents[i] for i in rows], min_df=0, max_terms=len(selected), only=selected
    )


def _statistics_rows(sources: np.ndarray, mode: str) -> np.ndarray:
    """Return the rows that IDF weights and dense standardization are fitted on.

    ``"reference"`` selects the rows without a named source (every row when
    there are none), ``"all"`` every row.
    """
    if mode == "all":
        return np.arange(len(sources))
    reference = np.flatnonzero(sources == REFERENCE_SOURCE)
    return reference if len(reference) else np.arange(len(sources))


def _sparse_block(vocabulary: Vocabulary, documents: list[list[str]]) -> Any:
    from scipy import sparse

    indptr = [0]
    columns: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for document in documents:
        c, v = vocabulary.transform(document)
        columns.append(c)
        values.append(v)
        indptr.append(indptr[-1] + len(c))
    return sparse.csr_matrix(
        (
            np.concatenate(values) if values else np.zeros(0),
            np.concatenate(columns) if columns else np.zeros(0, dtype=np.int64),
            np.asarray(indptr),
        ),
        shape=(len(documents), len(vocabulary)),
    )


def _labels(records: Sequence[Record], propositions: Sequence[str]) -> np.ndarray:
    labels = np.full((len(records), len(propositions)), np.nan)
    for i, record in enumerate(records):
        for k, name in enumerate(propositions):
            value = record.propositions.get(name)
            if value is not None:
                labels[i, k] = float(value)
    return labels


def _source_weights(
    labels: np.ndarray, sources: np.ndarray, external_weights: Sequence[float]
) -> np.ndarray:
    """Return per-row weights that cap each named source's total weight.

    For proposition column ``k``, each named source weighs at most
    ``external_weights[k]`` times the number of reference rows labelling it.
    """
    weights = np.where(np.isnan(labels), 0.0, 1.0)
    for k in range(labels.shape[1]):
        labelled = ~np.isnan(labels[:, k])
        reference = np.sum(labelled & (sources == REFERENCE_SOURCE))
        if reference == 0:
            continue
        for source in set(sources[labelled]) - {REFERENCE_SOURCE}:
            rows = labelled & (sources == source)
            cap = external_weights[k] * reference / rows.sum()
            weights[rows, k] = min(1.0, cap)
    return weights


def group_folds(
    groups: np.ndarray, folds: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(train, test)`` row indices of folds that keep each group together.

    Groups are assigned to folds by a hash of the group name, so the split
    does not depend on row order and needs no random seed.
    """
    fold_of_group = {
        group: int(hashlib.sha256(str(group).encode()).hexdigest()[:8], 16) % folds
        for group in set(groups.tolist())
    }
    assignment = np.array([fold_of_group[g] for g in groups.tolist()])
    for fold in range(folds):
        test = np.flatnonzero(assignment == fold)
        if len(test) and len(test) < len(groups):
            yield np.flatnonzero(assignment != fold), test
