"""Training and cross-validation of the offline prompt classifier.

Needs scikit-learn and scipy (the ``train`` extra). Training rows are
:class:`LabelledPrompt` items: a prompt, its content-policy category and the
name of its data source. Rows of the ``gold`` source weigh 1; rows of any
other source weigh ``external_weight`` each. Classes are then balanced, so
rare categories (9 self-harm ideation prompts in the gold set) are not
drowned by common ones.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rbr.data.types import Message, prompt_hash
from rbr.errors import DataError
from rbr.graders.offline.features import Vocabulary
from rbr.policy.spec import Policy
from rbr.reward.prompt_offline import BLOCK_SCALES, BLOCKS, PromptModel, prompt_terms

logger = logging.getLogger(__name__)

GOLD_SOURCE = "gold"


@dataclass(frozen=True, slots=True)
class LabelledPrompt:
    """A prompt with a known content-policy category.

    Attributes:
        prompt: The conversation, ending with the user turn.
        category: The prompt's category under the policy.
        source: Data set name; ``"gold"`` marks the hand-labelled rows that
            cross-validation scores.
    """

    prompt: tuple[Message, ...]
    category: str
    source: str = GOLD_SOURCE


@dataclass(frozen=True, slots=True)
class PromptTrainingOptions:
    """Settings of :func:`train_prompt_model`, fixed before any evaluation.

    Attributes:
        c: Inverse L2 regularization strength of the logistic regression
            (the value the offline grader uses for its n-gram views).
        external_weight: Weight of each row from a source other than gold.
        min_df: Minimum number of training prompts a term must occur in.
        max_terms: Maximum number of terms kept per block, the most
            frequent first.
    """

    c: float = 4.0
    external_weight: float = 0.5
    min_df: int = 2
    max_terms: dict[str, int] = field(
        default_factory=lambda: {"word": 6000, "char": 15000, "context": 4000}
    )


def train_prompt_model(
    items: Sequence[LabelledPrompt],
    options: PromptTrainingOptions | None = None,
    *,
    metadata: dict[str, Any] | None = None,
) -> PromptModel:
    """Fit a prompt classifier on labelled prompts.

    Args:
        items: Training prompts; at least two categories must occur.
        options: Training settings; None uses the defaults.
        metadata: Extra facts stored in the model (data sources, metrics).

    Returns:
        The model, with parameters rounded to the float32 values that the
        artifact stores, so saving and loading changes no prediction.

    Raises:
        DataError: When fewer than two categories occur.
    """
    from sklearn.linear_model import LogisticRegression

    options = options or PromptTrainingOptions()
    categories = sorted({item.category for item in items})
    if len(categories) < 2:
        raise DataError(
            "<memory>",
            None,
            f"prompt classifier training needs at least two categories, got "
            f"{categories}; add labelled prompts of other categories",
        )
    terms = [prompt_terms(item.prompt) for item in items]
    vocabularies = {
        block: Vocabulary.fit(
            (t[block] for t in terms),
            min_df=options.min_df,
            max_terms=options.max_terms[block],
        )
        for block in BLOCKS
    }
    matrix = feature_matrix(vocabularies, terms)
    labels = np.array([categories.index(item.category) for item in items])
    weights = np.array(
        [1.0 if i.source == GOLD_SOURCE else options.external_weight for i in items]
    )
    regression = LogisticRegression(C=options.c, class_weight="balanced", max_iter=5000)
    regression.fit(matrix, labels, sample_weight=weights)
    coef, intercept = _multiclass_parameters(regression, len(categories))
    info = {
        "options": asdict(options),
        "counts": _counts(items),
        "terms": {block: len(vocabularies[block]) for block in BLOCKS},
    }
    info.update(metadata or {})
    return PromptModel(
        categories=tuple(categories),
        vocabularies=vocabularies,
        weights=coef.T.astype(np.float32),
        intercepts=intercept.astype(np.float32).astype(np.float64),
        metadata=info,
    )


def feature_matrix(
    vocabularies: dict[str, Vocabulary], terms: Sequence[dict[str, list[str]]]
) -> Any:
    """Return the scaled TF-IDF rows of ``terms`` as a SciPy CSR matrix."""
    from scipy.sparse import csr_matrix

    rows: list[int] = []
    columns: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for i, document in enumerate(terms):
        offset = 0
        for block in BLOCKS:
            vocabulary = vocabularies[block]
            cols, vals = vocabulary.transform(document[block])
            rows.extend([i] * len(cols))
            columns.append(cols + offset)
            values.append(vals * BLOCK_SCALES[block])
            offset += len(vocabulary)
    width = sum(len(vocabularies[b]) for b in BLOCKS)
    return csr_matrix(
        (np.concatenate(values), (np.asarray(rows), np.concatenate(columns))),
        shape=(len(terms), width),
    )


def _multiclass_parameters(regression: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return weights ``(categories, features)`` and intercepts of a fitted model.

    scikit-learn stores one row for two classes (the logit of the second);
    it becomes the rows ``[0, w]``, which give the same softmax.
    """
    coef = np.asarray(regression.coef_, dtype=np.float64)
    intercept = np.asarray(regression.intercept_, dtype=np.float64)
    if n == 2 and coef.shape[0] == 1:
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    return coef, intercept


def _counts(items: Sequence[LabelledPrompt]) -> dict[str, dict[str, int]]:
    by_source: dict[str, Counter[str]] = {}
    for item in items:
        by_source.setdefault(item.source, Counter())[item.category] += 1
    return {source: dict(sorted(c.items())) for source, c in sorted(by_source.items())}


@dataclass(frozen=True, slots=True)
class CrossValidation:
    """Grouped cross-validated accuracy on the gold prompts.

    Attributes:
        category_accuracy: Share of gold prompts whose predicted category is
            right, one value per repetition.
        response_type_accuracy: Share whose predicted category maps to the
            right response type, one value per repetition.
        category_recall: Per category, recall over all repetitions.
        response_type_confusion: ``{true: {predicted: count}}`` over all
            repetitions, by response type.
        folds: Folds per repetition.
    """

    category_accuracy: list[float]
    response_type_accuracy: list[float]
    category_recall: dict[str, float]
    response_type_confusion: dict[str, dict[str, int]]
    folds: int

    def summary(self) -> dict[str, Any]:
        """Return the means, deviations and tables as JSON-ready values."""
        return {
            "folds": self.folds,
            "repetitions": len(self.category_accuracy),
            "category_accuracy_mean": round(float(np.mean(self.category_accuracy)), 4),
            "category_accuracy_std": round(float(np.std(self.category_accuracy)), 4),
            "response_type_accuracy_mean": round(
                float(np.mean(self.response_type_accuracy)), 4
            ),
            "response_type_accuracy_std": round(
                float(np.std(self.response_type_accuracy)), 4
            ),
            "category_recall": {
                k: round(v, 4) for k, v in self.category_recall.items()
            },
            "response_type_confusion": self.response_type_confusion,
        }


def cross_validate(
    items: Sequence[LabelledPrompt],
    policy: Policy,
    options: PromptTrainingOptions | None = None,
    *,
    folds: int = 5,
    seeds: Sequence[int] = (0, 1, 2),
    source: str = GOLD_SOURCE,
) -> CrossValidation:
    """Score the classifier on held-out prompts of one source, grouped by prompt.

    The prompts of ``source`` are split into ``folds`` folds, stratified by
    category, with every copy of a prompt in one fold. Each fold is
    predicted by a model trained on the other folds plus every row of the
    other sources whose prompt is not in the held-out fold. This repeats
    once per seed.

    Raises:
        DataError: When ``source`` has fewer prompts than folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    scored = [i for i, item in enumerate(items) if item.source == source]
    if len(scored) < folds:
        raise DataError(
            "<memory>",
            None,
            f"{len(scored)} prompts of source {source!r} cannot fill {folds} folds",
        )
    labels = np.array([items[i].category for i in scored])
    groups = [prompt_hash(items[i].prompt) for i in scored]
    hashes = [prompt_hash(item.prompt) for item in items]
    truth_types = [_type(policy, c) for c in labels]
    category_scores, type_scores = [], []
    hits: Counter[str] = Counter()
    confusion: dict[str, Counter[str]] = {}
    for seed in seeds:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        predicted = np.empty(len(scored), dtype=object)
        for train, test in splitter.split(np.zeros(len(scored)), labels, groups):
            held_out = {groups[k] for k in test}
            train_scored = {scored[k] for k in train}
            training = [
                item
                for i, item in enumerate(items)
                if hashes[i] not in held_out
                and (item.source != source or i in train_scored)
            ]
            model = train_prompt_model(training, options)
            predicted[test] = model.predict([items[scored[k]].prompt for k in test])
        types = [_type(policy, c) for c in predicted]
        category_scores.append(float(np.mean(predicted == labels)))
        type_scores.append(float(np.mean([a == b for a, b in zip(types, truth_types)])))
        hits.update(c for c, p in zip(labels, predicted) if c == p)
        for truth, guess in zip(truth_types, types):
            confusion.setdefault(truth, Counter())[guess] += 1
    totals = Counter(labels.tolist())
    recall = {c: hits[c] / (totals[c] * len(seeds)) for c in sorted(totals)}
    return CrossValidation(
        category_scores,
        type_scores,
        recall,
        {t: dict(sorted(c.items())) for t, c in sorted(confusion.items())},
        folds,
    )


def _type(policy: Policy, category: str) -> str:
    mapped = policy.response_type_for_category(category)
    return "(no RBR)" if mapped is None else policy.response_type(mapped).name
