"""Training of the offline grader from partially labelled records.

Needs scikit-learn and scipy (the ``train`` extra). Each record may label any
subset of the propositions, as a boolean or a probability. A proposition is
fitted only on the rows that label it. A probability ``p`` counts as a
positive with weight ``p`` plus a negative with weight ``1 - p``.

Rows whose ``extra["source"]`` names a data source (the external loaders set
``xstest`` or ``gptfuzz``) are reweighted so that each source weighs, per
proposition, at most ``external_weight`` times the rows without a source
(the hand-labelled gold rows), or the proposition's own factor from
``external_weights``. Classes are then balanced, so a rare proposition is
not drowned by its negatives. IDF weights and the dense standardization are
fitted on the rows without a source, so the external rows do not reshape
the features of the gold propositions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rbr.data.types import Record
from rbr.errors import DataError, GraderError
from rbr.graders.offline.features import BLOCKS, RESPONSE_TYPES, Vocabulary
from rbr.graders.offline.model import OfflineModel, Rule
from rbr.graders.offline.rules import DEFAULT_RULES, PROPOSITIONS, prior_rule
from rbr.graders.offline.stage1 import (
    DEFAULT_VIEWS,
    FEATURE_BLOCKS,
    View,
    ViewFits,
    candidate_mixtures,
    fit_logistic,
    fit_views,
    out_of_fold_view_logits,
    select_mixture,
)
from rbr.graders.offline.training_data import (
    TrainingMatrix,
    build_matrix,
    group_folds,
    labelled_rows,
)

logger = logging.getLogger(__name__)

FEATURE_STATISTICS: tuple[str, ...] = ("reference", "all")
"""Values of ``TrainingOptions.feature_statistics``."""

CONTENT_KEY_DIGITS = 16
"""Hex digits kept of each training row's :meth:`Sample.content_key`.

64 bits: among a million training rows and a million other rows, a false
match has a probability below 1e-7."""

ProgressCallback = Callable[[str], None]
"""Callback that receives one line of training progress."""


class TrainingOptionsError(GraderError, ValueError):
    """A training option of the offline grader has an invalid value."""


@dataclass(frozen=True, slots=True)
class TrainingOptions:
    """Settings of :func:`train_offline_model`. Defaults are fixed a priori.

    Attributes:
        views: Stage-1 regressions whose logits are blended.
        select_views: Whether each proposition uses the blend (the mean of
            all views, or one view alone) with the best out-of-fold AUC on
            the training data. When False, every proposition uses the mean.
        stack: Whether to fit the stage-2 (stacking) regressions.
        stack_c: Inverse L2 regularization strength of stage 2.
        min_positives: Fewest labelled positive rows (label >= 0.5) for a
            proposition to be learned; below it a rule answers.
        folds: Inner cross-validation folds, grouped by prompt, used for the
            stage-2 inputs and the decision thresholds.
        external_weight: Largest total weight of each named data source per
            proposition, relative to the rows without a source. At 1 no
            external source outweighs the gold rows, whose propositions the
            grader answers.
        min_df: Fewest training documents a term must occur in.
        max_terms: Most terms per sparse block taken from the rows without
            a named source.
        external_vocabulary_fraction: Most terms per sparse block taken from
            each named source, as a fraction of ``max_terms``.
        feature_statistics: Rows that IDF weights and the dense
            standardization are fitted on: ``"reference"`` for the rows
            without a named source (every row when there are none), or
            ``"all"``.
        external_weights: ``external_weight`` of single propositions,
            overriding the default. fully_complies gets 3 because the refusal
            decision reads it and the XSTest rows are the cleanest refusal
            labels available (3 was chosen over 1 by the XSTest transfer
            evaluation).
    """

    views: tuple[View, ...] = DEFAULT_VIEWS
    select_views: bool = False
    stack: bool = False
    stack_c: float = 0.5
    min_positives: int = 10
    folds: int = 5
    external_weight: float = 1.0
    min_df: int = 2
    external_vocabulary_fraction: float = 0.25
    feature_statistics: str = "reference"
    external_weights: dict[str, float] = field(
        default_factory=lambda: {"fully_complies": 3.0}
    )
    max_terms: dict[str, int] = field(
        default_factory=lambda: {
            "word": 20000,
            "char": 40000,
            "user": 5000,
            "opening": 10000,
        }
    )

    def __post_init__(self) -> None:
        if self.feature_statistics not in FEATURE_STATISTICS:
            raise TrainingOptionsError(
                f"feature_statistics is {self.feature_statistics!r}; "
                f"use one of {', '.join(FEATURE_STATISTICS)}"
            )


def train_offline_model(
    records: Sequence[Record],
    *,
    propositions: Sequence[str] = PROPOSITIONS,
    options: TrainingOptions | None = None,
    progress: ProgressCallback | None = None,
) -> OfflineModel:
    """Fit an offline grader on records with full or partial proposition labels.

    Args:
        records: Training rows. Unlabelled propositions are left out of the
            fit of that proposition.
        propositions: Names the model answers, in column order.
        options: Training settings; None uses the defaults.
        progress: Receives progress lines: the feature extraction, each
            proposition's labels and method, and each fitted view, with
            elapsed times. None logs them at INFO level.

    Returns:
        The fitted model, with parameters rounded to the float32 values the
        artifact file stores, so saving and loading changes no output.

    Raises:
        DataError: When ``records`` is empty or labels no proposition.
    """
    options = options or TrainingOptions()
    report = progress or _log_progress
    started = time.perf_counter()
    if not records:
        raise DataError("training data", None, "no training records; pass at least one")
    matrix = build_matrix(records, propositions, options)
    report(f"features of {matrix.n_rows} rows built in {_seconds(started)}")
    learned, rules = _choose_methods(matrix, options)
    _report_methods(matrix, learned, rules, options, report)
    if not learned:
        raise DataError(
            "training data",
            None,
            f"no proposition has {options.min_positives} labelled positive and "
            f"{options.min_positives} labelled negative rows; add labelled rows "
            "(or, in Python, lower TrainingOptions.min_positives)",
        )
    view_logits = _out_of_fold_logits(matrix, learned, options, report, started)
    if options.select_views:
        mixture = select_mixture(matrix, learned, view_logits)
    else:
        mixture = np.tile(candidate_mixtures(len(options.views))[0], (len(learned), 1))
    fits = _final_fits(matrix, learned, options, report, started)
    weights, intercepts = fits.blend(mixture)
    out_of_fold = np.einsum("nkv,kv->nk", view_logits, mixture)
    stack = (
        _fit_stage2(matrix, learned, out_of_fold, options) if options.stack else None
    )
    probabilities = _out_of_fold_probabilities(matrix, learned, out_of_fold, options)
    thresholds = _thresholds(matrix, learned, rules, probabilities)
    report(f"thresholds tuned; training took {_seconds(started)}")
    model = _assemble(matrix, learned, rules, weights, intercepts, stack, thresholds)
    model.metadata = _metadata(matrix, learned, rules, options, mixture)
    model.metadata["content_keys"] = training_content_keys(records)
    return model


def training_content_keys(records: Sequence[Record]) -> list[str]:
    """Return the sorted, distinct content keys of the training rows.

    Each key is the first :data:`CONTENT_KEY_DIGITS` hex digits of
    :meth:`Sample.content_key` (a SHA-256 of the conversation and completion
    text), so an evaluation can tell which of its rows were training rows.
    """
    return sorted({r.sample.content_key()[:CONTENT_KEY_DIGITS] for r in records})


def train_offline_grader(
    records: Sequence[Record],
    *,
    out: str | Path,
    propositions: Sequence[str] = PROPOSITIONS,
    options: TrainingOptions | None = None,
    progress: ProgressCallback | None = None,
) -> OfflineModel:
    """Fit an offline grader and save it to ``out`` as an ``.npz`` artifact.

    Load the file with ``OfflineGrader.load(out)``. The arguments are those
    of :func:`train_offline_model`.

    Raises:
        DataError: When the records cannot train a model (see
            :func:`train_offline_model`).
    """
    model = train_offline_model(
        records, propositions=propositions, options=options, progress=progress
    )
    digest = model.save(out)
    logger.info("saved offline grader to %s (sha256 %s)", out, digest[:12])
    return model


def _choose_methods(
    matrix: TrainingMatrix, options: TrainingOptions
) -> tuple[list[str], dict[str, Rule]]:
    learned: list[str] = []
    rules: dict[str, Rule] = {}
    for k, name in enumerate(matrix.propositions):
        rows = labelled_rows(matrix, k)
        labels = matrix.labels[rows, k]
        positives = float(np.sum(labels >= 0.5))
        negatives = float(np.sum(labels < 0.5))
        if min(positives, negatives) >= options.min_positives:
            learned.append(name)
        else:
            rules[name] = DEFAULT_RULES.get(name) or prior_rule(positives, len(rows))
    return learned, rules


def _report_methods(
    matrix: TrainingMatrix,
    learned: Sequence[str],
    rules: dict[str, Rule],
    options: TrainingOptions,
    report: ProgressCallback,
) -> None:
    """Report each proposition's labelled rows, positives and method."""
    for k, name in enumerate(matrix.propositions):
        rows = labelled_rows(matrix, k)
        positives = int(np.sum(matrix.labels[rows, k] >= 0.5))
        if name in learned:
            method = "logistic regression"
        else:
            kind = "cue rule" if rules[name].weights else "constant probability"
            method = (
                f"{kind} (fewer than {options.min_positives} positive or negative "
                "labels)"
            )
        report(f"{name}: {len(rows)} labelled rows, {positives} positive: {method}")


def _out_of_fold_logits(
    matrix: TrainingMatrix,
    learned: Sequence[str],
    options: TrainingOptions,
    report: ProgressCallback,
    started: float,
) -> np.ndarray:
    """Return out-of-fold logits of every view, reporting each view when done.

    Fitting one view at a time gives the same logits as fitting all views
    together, because each view's regressions are independent.
    """
    parts = []
    count = len(options.views)
    for v, view in enumerate(options.views):
        view_started = time.perf_counter()
        parts.append(out_of_fold_view_logits(matrix, learned, (view,), options.folds))
        report(
            f"out-of-fold predictions for the thresholds ({options.folds} folds "
            f"by prompt), view {view.name!r} ({v + 1}/{count}) of "
            f"{len(learned)} propositions: {_seconds(view_started)}, "
            f"{_seconds(started)} in all"
        )
    return np.concatenate(parts, axis=2)


def _final_fits(
    matrix: TrainingMatrix,
    learned: Sequence[str],
    options: TrainingOptions,
    report: ProgressCallback,
    started: float,
) -> ViewFits:
    """Fit every view on all rows, reporting each view when done."""
    count = len(options.views)
    width = sum(matrix.blocks[b].shape[1] for b in FEATURE_BLOCKS)
    fits = ViewFits(
        np.zeros((count, width, len(learned))), np.zeros((count, len(learned)))
    )
    for v, view in enumerate(options.views):
        view_started = time.perf_counter()
        part = fit_views(matrix, learned, np.arange(matrix.n_rows), (view,))
        fits.weights[v] = part.weights[0]
        fits.intercepts[v] = part.intercepts[0]
        report(
            f"final fit on all {matrix.n_rows} rows, view {view.name!r} "
            f"({v + 1}/{count}): {_seconds(view_started)}, {_seconds(started)} in all"
        )
    return fits


def _seconds(since: float) -> str:
    return f"{time.perf_counter() - since:.1f} s"


def _log_progress(message: str) -> None:
    logger.info("%s", message)


def _stack_inputs(matrix: TrainingMatrix, logits: np.ndarray) -> np.ndarray:
    one_hot = np.zeros((matrix.n_rows, len(RESPONSE_TYPES) + 1))
    one_hot[np.arange(matrix.n_rows), matrix.response_types] = 1.0
    return np.hstack([logits, one_hot])


def _fit_stage2(
    matrix: TrainingMatrix,
    learned: Sequence[str],
    logits: np.ndarray,
    options: TrainingOptions,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    inputs = _stack_inputs(matrix, logits)
    rows = np.arange(matrix.n_rows) if rows is None else rows
    weights = np.zeros((inputs.shape[1], len(learned)))
    intercepts = np.zeros(len(learned))
    for j, name in enumerate(learned):
        k = matrix.propositions.index(name)
        coef, intercept = fit_logistic(matrix, k, rows, inputs, options.stack_c)
        weights[:, j] = coef
        intercepts[j] = intercept
    return weights, intercepts


def _out_of_fold_probabilities(
    matrix: TrainingMatrix,
    learned: Sequence[str],
    logits: np.ndarray,
    options: TrainingOptions,
) -> np.ndarray:
    """Return out-of-fold P(yes) of the final stage, for threshold tuning."""
    if not options.stack:
        return _sigmoid(logits)
    inputs = _stack_inputs(matrix, logits)
    result = np.zeros_like(logits)
    for train_rows, test_rows in group_folds(matrix.groups, options.folds):
        weights, intercepts = _fit_stage2(matrix, learned, logits, options, train_rows)
        result[test_rows] = _sigmoid(inputs[test_rows] @ weights + intercepts)
    return result


def _thresholds(
    matrix: TrainingMatrix,
    learned: Sequence[str],
    rules: dict[str, Rule],
    probabilities: np.ndarray,
) -> np.ndarray:
    thresholds = np.full(len(matrix.propositions), 0.5)
    for j, name in enumerate(learned):
        k = matrix.propositions.index(name)
        rows = labelled_rows(matrix, k)
        thresholds[k] = best_threshold(
            probabilities[rows, j],
            matrix.labels[rows, k] >= 0.5,
            matrix.weights[rows, k],
        )
    return thresholds


def best_threshold(
    scores: np.ndarray, positive: np.ndarray, weights: np.ndarray
) -> float:
    """Return the threshold maximizing weighted balanced accuracy (0.5 if undefined).

    A score at or above the threshold predicts yes. The threshold is the
    midpoint between the two neighbouring distinct scores.
    """
    if positive.all() or not positive.any():
        return 0.5
    order = np.argsort(scores)
    sorted_scores = scores[order]
    pos_w = np.where(positive[order], weights[order], 0.0)
    neg_w = np.where(positive[order], 0.0, weights[order])
    # Predicting yes for order[i:] misses the positives before i.
    true_negative = np.concatenate([[0.0], np.cumsum(neg_w)]) / neg_w.sum()
    false_negative = np.concatenate([[0.0], np.cumsum(pos_w)]) / pos_w.sum()
    balanced = 0.5 * (true_negative + 1.0 - false_negative)
    distinct = np.concatenate([[True], sorted_scores[1:] > sorted_scores[:-1], [True]])
    balanced = np.where(distinct, balanced, -1.0)
    best = int(np.argmax(balanced))
    if best == 0:
        return float(sorted_scores[0]) / 2.0
    if best == len(scores):
        return float((sorted_scores[-1] + 1.0) / 2.0)
    return float((sorted_scores[best - 1] + sorted_scores[best]) / 2.0)


def _assemble(
    matrix: TrainingMatrix,
    learned: Sequence[str],
    rules: dict[str, Rule],
    weights: np.ndarray,
    intercepts: np.ndarray,
    stack: tuple[np.ndarray, np.ndarray] | None,
    thresholds: np.ndarray,
) -> OfflineModel:
    n_sparse = sum(len(matrix.vocabularies[b]) for b in BLOCKS)
    vocabularies = {
        b: Vocabulary(v.terms, _float32(v.idf)) for b, v in matrix.vocabularies.items()
    }
    return OfflineModel(
        propositions=matrix.propositions,
        learned=tuple(learned),
        rules=rules,
        vocabularies=vocabularies,
        dense_mean=_float32(matrix.dense_mean),
        dense_std=_float32(matrix.dense_std),
        sparse_weights=weights[:n_sparse].astype(np.float32),
        dense_weights=_float32(weights[n_sparse:]),
        intercepts=_float32(intercepts),
        stack_weights=_float32(stack[0]) if stack else None,
        stack_intercepts=_float32(stack[1]) if stack else None,
        thresholds=_float32(thresholds),
    )


def _metadata(
    matrix: TrainingMatrix,
    learned: Sequence[str],
    rules: dict[str, Rule],
    options: TrainingOptions,
    mixture: np.ndarray,
) -> dict[str, object]:
    per_proposition: dict[str, dict[str, object]] = {}
    for k, name in enumerate(matrix.propositions):
        rows = labelled_rows(matrix, k)
        labels = matrix.labels[rows, k]
        per_proposition[name] = {
            "method": "logistic" if name in learned else "rule",
            "labelled": int(len(rows)),
            "positives": int(np.sum(labels >= 0.5)),
            "labelled_by_source": matrix.source_counts(k),
        }
        if name in learned:
            blend = mixture[list(learned).index(name)]
            per_proposition[name]["views"] = {
                view.name: round(float(w), 4)
                for view, w in zip(options.views, blend, strict=True)
                if w
            }
    return {
        "propositions": per_proposition,
        "training_rows": matrix.n_rows,
        "sources": matrix.source_totals(),
        "options": asdict(options),
    }


def _float32(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
