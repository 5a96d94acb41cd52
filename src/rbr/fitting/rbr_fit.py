"""Fit one RBR weight vector per response type from labelled comparison data."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rbr.data.types import Record
from rbr.errors import DataError
from rbr.features.space import FeatureSpace
from rbr.fitting.estimator import PairwiseHingeRanker
from rbr.fitting.grading import (
    GradedRecords,
    TypeBatch,
    proposition_summary,
    reason_summary,
)
from rbr.fitting.weights import RBRWeights, ResponseTypeWeights
from rbr.policy.spec import CLASS_ORDER, Policy

logger = logging.getLogger(__name__)

LabelSource = Literal["labels", "classes"]
LABEL_SOURCES = ("labels", "classes")


@dataclass(frozen=True)
class FitSettings:
    """Hyperparameters of an RBR fit, applied to every response type.

    Attributes:
        label_source: ``"labels"`` ranks rows by their ``label`` field using the
            policy's orderings; ``"classes"`` ranks rows by the completion
            class of their stored human proposition labels.
        cross_prompt: Pair completions across prompts of one response type.
            None chooses it when there are no base rewards and most prompts
            have fewer than two distinct ranks.
        l2: L2 regularisation strength; None keeps the ranker's default.
    """

    label_source: LabelSource = "labels"
    cross_prompt: bool | None = None
    l2: float | None = None
    margin: float = 1.0
    validation_fraction: float = 0.2
    max_pairs: int | None = 2_000_000
    random_state: int = 0

    def __post_init__(self) -> None:
        if self.label_source not in LABEL_SOURCES:
            raise ValueError(
                f"label_source must be one of {LABEL_SOURCES}, got {self.label_source!r}"
            )


def label_ranks(
    policy: Policy, response_type: str, label_source: LabelSource
) -> dict[str, int]:
    """Return the rank (0 = best) of each label valid for ``response_type``."""
    if label_source == "classes":
        return {name: i for i, name in enumerate(CLASS_ORDER)}
    spec = policy.response_type(response_type)
    if not spec.ordering:
        return {name: i for i, name in enumerate(CLASS_ORDER)}
    return {
        label: tier for tier, labels in enumerate(spec.ordering) for label in labels
    }


def _row_labels(
    records: Sequence[Record], batch: TypeBatch, settings: FitSettings, source: str
) -> list[str]:
    labels = []
    for index in batch.indices:
        record = records[index]
        if settings.label_source == "labels":
            if record.label is None:
                raise DataError(
                    source,
                    record.line,
                    "row has no 'label'; add a completion label, or fit with "
                    "label_source='classes' (CLI: --labels classes) to rank by the class "
                    "of the stored proposition labels",
                )
            labels.append(record.label)
            continue
        labels.append(_human_class(record, batch.space, source))
    return labels


def _human_class(record: Record, space: FeatureSpace, source: str) -> str:
    missing = [p for p in space.propositions if p not in record.propositions]
    if missing:
        raise DataError(
            source,
            record.line,
            f"ranking by class needs stored labels for {', '.join(missing)}",
        )
    values = space.matrix_from_dicts([record.propositions])
    name = space.assign_classes(values)[0]
    if name is None:
        raise DataError(
            source, record.line, "its proposition labels match no completion class"
        )
    return name


def fit_rbr(
    graded: GradedRecords,
    policy: Policy,
    grader_identity: str,
    settings: FitSettings | None = None,
    *,
    source: str = "<memory>",
) -> RBRWeights:
    """Fit a ranker per response type and return the weights with fit reports.

    Rows with an unscored proposition are left out of the fit; their count is
    in each response type's report and logged.

    Raises:
        DataError: When a row has an unknown or missing label, or base rewards
            are given for some rows of a response type but not others.
    """
    settings = settings or FitSettings()
    fitted: dict[str, ResponseTypeWeights] = {}
    skipped: dict[str, str] = {}
    for name, batch in graded.batches.items():
        entry = _fit_type(graded.records, batch, policy, settings, source)
        if isinstance(entry, str):
            logger.warning("not fitting %s: %s", name, entry)
            skipped[name] = entry
        else:
            fitted[name] = entry
    if not fitted:
        problems = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise DataError(
            source,
            None,
            f"nothing to fit ({problems or 'no rows with a safety response type'})",
        )
    return RBRWeights(
        policy_name=policy.name,
        policy_hash=policy.content_hash,
        grader_identity=grader_identity,
        response_types=fitted,
        settings=dict(vars(settings)),
        skipped=skipped,
    )


def _unscored_fix(batch: TypeBatch) -> str:
    if any(item.reason == "missing_label" for item in batch.unscored):
        return (
            "add these keys to every row's 'propositions' (check their spelling), "
            "or grade with a model grader"
        )
    return "check the grader"


def _fit_type(
    records: Sequence[Record],
    batch: TypeBatch,
    policy: Policy,
    settings: FitSettings,
    source: str,
) -> ResponseTypeWeights | str:
    """Fit one response type, or return why it cannot be fitted."""
    space = batch.space
    labels = _row_labels(records, batch, settings, source)
    ranks_by_label = _checked_ranks(records, batch, labels, policy, settings, source)

    keep = batch.complete()
    if not keep.all():
        logger.warning(
            "%s: leaving out %d of %d rows with unscored propositions",
            space.response_type,
            int((~keep).sum()),
            keep.size,
        )
    if not keep.any():
        return (
            f"every one of its {keep.size} rows has unscored propositions "
            f"({reason_summary(batch.unscored)}; unscored: "
            f"{proposition_summary(batch.unscored)}); {_unscored_fix(batch)}"
        )

    rows = batch.indices[keep]
    X = space.transform(batch.probabilities[keep])
    kept_labels = [labels[i] for i in np.flatnonzero(keep)]
    ranks = np.array([ranks_by_label[label] for label in kept_labels])
    margins = np.array(
        [_margin(policy, label, settings.margin) for label in kept_labels]
    )
    groups = np.array([records[i].prompt_id for i in rows])
    base = _base_rewards(records, rows, space.response_type, source)

    if np.unique(ranks).size < 2:
        return (
            f"all {ranks.size} usable rows have the same rank, so there is no pair to "
            "learn from; add completions of other labels"
        )

    cross = _choose_cross_prompt(settings.cross_prompt, groups, ranks, base)
    ranker = _make_ranker(settings, cross, groups, space.response_type)
    ranker.fit(X, groups=groups, ranks=ranks, margins=margins, base_rewards=base)
    report = _report(ranker, space, kept_labels, groups, int((~keep).sum()), cross)
    return ResponseTypeWeights(
        response_type=space.response_type,
        feature_names=list(space.feature_names),
        coef=[float(x) for x in ranker.coef_],
        report=report,
    )


def _checked_ranks(
    records: Sequence[Record],
    batch: TypeBatch,
    labels: list[str],
    policy: Policy,
    settings: FitSettings,
    source: str,
) -> dict[str, int]:
    """Return the label ranks of the response type, raising on a row's unknown label."""
    response_type = batch.space.response_type
    ranks_by_label = label_ranks(policy, response_type, settings.label_source)
    for index, label in zip(batch.indices, labels):
        if label not in ranks_by_label:
            allowed = ", ".join(sorted(ranks_by_label))
            raise DataError(
                source,
                records[index].line,
                f"label {label!r} is not in the ordering of {response_type!r}; "
                f"use one of {allowed}",
            )
    return ranks_by_label


def _make_ranker(
    settings: FitSettings, cross_prompt: bool, groups: np.ndarray, response_type: str
) -> PairwiseHingeRanker:
    validation_fraction = _usable_validation_fraction(
        settings.validation_fraction, groups, response_type
    )
    params: dict[str, Any] = {
        "margin": settings.margin,
        "validation_fraction": validation_fraction,
        "cross_prompt": cross_prompt,
        "max_pairs": settings.max_pairs,
        "random_state": settings.random_state,
    }
    if settings.l2 is not None:
        params["l2"] = settings.l2
    return PairwiseHingeRanker(**params)


def _usable_validation_fraction(
    fraction: float, groups: np.ndarray, response_type: str
) -> float:
    """Return ``fraction``, or 0 when holding it out would leave no prompt to train on."""
    n_prompts = len(set(groups.tolist()))
    if fraction > 0 and math.ceil(fraction * n_prompts) >= n_prompts:
        logger.warning(
            "%s has %d prompt(s), too few to hold any out; fitting on all of them "
            "with no held-out metrics",
            response_type,
            n_prompts,
        )
        return 0.0
    return fraction


def _margin(policy: Policy, label: str, default: float) -> float:
    spec = policy.labels.get(label)
    if spec is not None and spec.margin is not None:
        return spec.margin
    return default


def _base_rewards(
    records: Sequence[Record], rows: np.ndarray, response_type: str, source: str
) -> np.ndarray | None:
    values = [records[i].base_reward for i in rows]
    present = [v is not None for v in values]
    if not any(present):
        return None
    if not all(present):
        first = next(records[i] for i, ok in zip(rows, present) if not ok)
        raise DataError(
            source,
            first.line,
            f"some {response_type!r} rows have 'base_reward' and this one does not; "
            "give every row a base reward or none",
        )
    return np.array(values, dtype=float)


def _choose_cross_prompt(
    requested: bool | None,
    groups: np.ndarray,
    ranks: np.ndarray,
    base: np.ndarray | None,
) -> bool:
    if requested is not None:
        return requested
    if base is not None:
        return False
    distinct: dict[str, set[int]] = {}
    for group, rank in zip(groups, ranks):
        distinct.setdefault(group, set()).add(int(rank))
    comparable = sum(1 for ranks_seen in distinct.values() if len(ranks_seen) >= 2)
    return comparable < 0.5 * len(distinct)


def _report(
    ranker: PairwiseHingeRanker,
    space: FeatureSpace,
    labels: list[str],
    groups: np.ndarray,
    n_unscored: int,
    cross_prompt: bool,
) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return {
        "n_rows": len(labels),
        "n_rows_unscored": n_unscored,
        "n_prompts": int(len(set(groups.tolist()))),
        "label_counts": dict(sorted(counts.items())),
        "cross_prompt": cross_prompt,
        "l2": ranker.l2,
        "n_train_pairs": ranker.n_train_pairs_,
        "n_validation_pairs": ranker.n_validation_pairs_,
        "train_loss": ranker.train_loss_,
        "validation_loss": ranker.validation_loss_,
        "validation_pairwise_accuracy": ranker.validation_pairwise_accuracy_,
        "validation_top1": ranker.validation_top1_,
        "optimality_gap": ranker.optimality_gap_,
        "converged": bool(ranker.converged_),
        "n_iter": int(ranker.n_iter_),
        "weights": dict(zip(space.feature_names, (float(x) for x in ranker.coef_))),
    }
