"""Stage 1 of offline grader training: logistic regressions over feature views.

Needs scikit-learn and scipy. A view is one logistic regression over a
scaled subset of the feature blocks. Stage 1 blends the logits of the views
per proposition. The blend is linear, so the final model stores it as one
weight matrix over all blocks and inference cost does not grow with the
number of views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rbr.graders.offline.features import BLOCKS
from rbr.graders.offline.training_data import TrainingMatrix, group_folds, labelled_rows

FEATURE_BLOCKS: tuple[str, ...] = (*BLOCKS, "dense")
"""All feature blocks, in the column order of the stage-1 weights."""


@dataclass(frozen=True, slots=True)
class View:
    """One stage-1 logistic regression over a scaled subset of feature blocks.

    Attributes:
        name: Label for logs and metadata.
        scales: Factor per block; blocks left out are not used by this view.
            A smaller factor regularizes that block more strongly.
        c: Inverse L2 regularization strength.
        naive_bayes: Whether to scale each feature by its naive-Bayes log-count
            ratio for the proposition before the fit (NB-LR), which helps
            linear text classifiers on small data.
    """

    name: str
    scales: dict[str, float]
    c: float
    naive_bayes: bool = False


DEFAULT_VIEWS: tuple[View, ...] = (
    View("word", {"word": 1.0}, 4.0),
    View("char", {"char": 1.0}, 4.0),
    View("cues", {"dense": 1.0}, 0.1),
    View("ngrams", {"word": 1.0, "char": 1.0, "user": 0.5}, 4.0),
    View("opening", {"opening": 1.0}, 4.0),
)
"""Views of the default model: word and character n-grams alone, the dense
cue features alone, all n-gram blocks of the whole completion together, and
the n-grams of the completion's opening alone. (The dense block is kept
out of the n-gram view because mixing it in slows liblinear tenfold.)"""


@dataclass(slots=True)
class ViewFits:
    """Per-view weights over all blocks (view factors folded in).

    Attributes:
        weights: Shape ``(views, features, learned)``.
        intercepts: Shape ``(views, learned)``.
    """

    weights: np.ndarray
    intercepts: np.ndarray

    def blend(self, mixture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return weights and intercepts mixed per proposition.

        Args:
            mixture: Shape ``(learned, views)``; row ``j`` gives the weight of
                each view's logit for proposition ``j``.
        """
        weights = np.einsum("vfk,kv->fk", self.weights, mixture)
        intercepts = np.einsum("vk,kv->k", self.intercepts, mixture)
        return weights, intercepts


def fit_views(
    matrix: TrainingMatrix,
    learned: Sequence[str],
    rows: np.ndarray,
    views: Sequence[View],
) -> ViewFits:
    """Fit every view for every learned proposition on ``rows``."""
    offsets = np.cumsum([0] + [matrix.blocks[b].shape[1] for b in FEATURE_BLOCKS])
    weights = np.zeros((len(views), offsets[-1], len(learned)))
    intercepts = np.zeros((len(views), len(learned)))
    for v, view in enumerate(views):
        features = matrix.features(view.scales)
        for j, name in enumerate(learned):
            k = matrix.propositions.index(name)
            if view.naive_bayes:
                ratio = naive_bayes_ratio(matrix, k, rows, features)
                coef, intercepts[v, j] = fit_logistic(
                    matrix, k, rows, features @ sparse_diagonal(ratio), view.c
                )
                coef = coef * ratio
            else:
                coef, intercepts[v, j] = fit_logistic(matrix, k, rows, features, view.c)
            start = 0
            for index, block in enumerate(FEATURE_BLOCKS):
                scale = view.scales.get(block, 0.0)
                if not scale:
                    continue
                width = offsets[index + 1] - offsets[index]
                weights[v, offsets[index] : offsets[index + 1], j] = (
                    coef[start : start + width] * scale
                )
                start += width
    return ViewFits(weights, intercepts)


def naive_bayes_ratio(
    matrix: TrainingMatrix, k: int, rows: np.ndarray, features: object
) -> np.ndarray:
    """Return the log-count ratio of each feature between positives and negatives."""
    rows = np.intersect1d(rows, labelled_rows(matrix, k))
    labels = matrix.labels[rows, k]
    x = abs(features[rows])  # type: ignore[index]
    positive = np.asarray(x.T @ labels).ravel() + 1.0
    negative = np.asarray(x.T @ (1.0 - labels)).ravel() + 1.0
    return np.abs(np.log((positive / positive.sum()) / (negative / negative.sum())))


def sparse_diagonal(values: np.ndarray) -> object:
    from scipy import sparse

    return sparse.diags(values, format="csr")


def fit_logistic(
    matrix: TrainingMatrix, k: int, rows: np.ndarray, features: object, c: float
) -> tuple[np.ndarray, float]:
    """Fit one weighted, class-balanced logistic regression on labelled ``rows``.

    A probability label ``p`` becomes a positive copy of the row with weight
    ``p`` and a negative copy with weight ``1 - p``.
    """
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    rows = np.intersect1d(rows, labelled_rows(matrix, k))
    labels = matrix.labels[rows, k]
    source_weights = matrix.weights[rows, k]
    x_rows = features[rows]  # type: ignore[index]
    stack = sparse.vstack if sparse.issparse(x_rows) else np.vstack
    x = stack([x_rows, x_rows])
    y = np.concatenate([np.ones(len(rows)), np.zeros(len(rows))])
    w = np.concatenate([labels * source_weights, (1.0 - labels) * source_weights])
    keep = w > 0
    x, y, w = x[keep], y[keep], w[keep]
    positive_total = w[y == 1].sum()
    negative_total = w[y == 0].sum()
    if positive_total == 0 or negative_total == 0:
        return np.zeros(x.shape[1]), 8.0 if positive_total > 0 else -8.0
    w = np.where(y == 1, w / positive_total, w / negative_total) * (len(rows) / 2.0)
    model = LogisticRegression(C=c, solver="liblinear", max_iter=1000)
    model.fit(x, y, sample_weight=w)
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def out_of_fold_view_logits(
    matrix: TrainingMatrix,
    learned: Sequence[str],
    views: Sequence[View],
    folds: int,
) -> np.ndarray:
    """Return out-of-fold logits of every view, shape ``(rows, learned, views)``."""
    logits = np.zeros((matrix.n_rows, len(learned), len(views)))
    full = matrix.features({b: 1.0 for b in FEATURE_BLOCKS})
    for train_rows, test_rows in group_folds(matrix.groups, folds):
        fits = fit_views(matrix, learned, train_rows, views)
        for v in range(len(views)):
            logits[test_rows, :, v] = (
                full[test_rows] @ fits.weights[v] + fits.intercepts[v]
            )
    return np.clip(logits, -10.0, 10.0)


def candidate_mixtures(n_views: int) -> np.ndarray:
    """Return the blends considered per proposition: the uniform mean, then each view."""
    return np.vstack([np.full(n_views, 1.0 / n_views), np.eye(n_views)])


def select_mixture(
    matrix: TrainingMatrix, learned: Sequence[str], view_logits: np.ndarray
) -> np.ndarray:
    """Pick, per proposition, the candidate blend with the best out-of-fold AUC.

    Ties keep the earlier candidate, so the uniform mean wins unless a
    single view is strictly better.
    """
    candidates = candidate_mixtures(view_logits.shape[2])
    mixture = np.zeros((len(learned), view_logits.shape[2]))
    for j, name in enumerate(learned):
        k = matrix.propositions.index(name)
        rows = labelled_rows(matrix, k)
        positive = matrix.labels[rows, k] >= 0.5
        scores = [
            weighted_auc(view_logits[rows, j] @ c, positive, matrix.weights[rows, k])
            for c in candidates
        ]
        mixture[j] = candidates[int(np.argmax(scores))]
    return mixture


def weighted_auc(
    scores: np.ndarray, positive: np.ndarray, weights: np.ndarray
) -> float:
    """Return the weighted ROC AUC (ties count half); 0.5 with one class only."""
    if positive.all() or not positive.any():
        return 0.5
    order = np.argsort(scores, kind="mergesort")
    scores, positive, weights = scores[order], positive[order], weights[order]
    _, starts = np.unique(scores, return_index=True)
    bounds = np.append(starts, len(scores))
    negative_below = 0.0
    total = 0.0
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        pos = weights[start:end][positive[start:end]].sum()
        neg = weights[start:end][~positive[start:end]].sum()
        total += pos * (negative_below + 0.5 * neg)
        negative_below += neg
    return total / (weights[positive].sum() * weights[~positive].sum())
