"""Judge fitted RBR weights on held-out comparison data.

For each response type the rewards of held-out completions are computed three
ways: the base reward alone (the rows' ``base_reward``, or 0 when the rows have
none), base + RBR (the total reward) and the RBR term alone. Two views follow:

* Pairwise ranking accuracy per pair of completion labels: the share of pairs
  whose better-labelled completion gets the strictly higher reward. Ties count
  as errors, as in the fit's own held-out metric.
* Rewards centered on the best-labelled completion: each reward minus the mean
  reward of the best-ranked completions in its group. The group is the prompt
  for a fit with within-prompt pairs, and every held-out row of the response
  type for a fit with cross-prompt pairs (one completion per prompt leaves
  nothing to compare within a prompt). Groups with a single rank are left out,
  because their best completion is not the policy's best.

Held-out rows are either the prompts the fit itself held out, recomputed from
the training data with the fit's seed and validation fraction, or every row of
a separate labelled file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rbr.data.types import Record
from rbr.errors import DataError
from rbr.features.space import FeatureSpace
from rbr.fitting.grading import GradedRecords, TypeBatch
from rbr.fitting.pairs import build_pairs, encode_groups
from rbr.fitting.rbr_fit import label_ranks
from rbr.fitting.weights import RBRWeights
from rbr.policy.spec import Policy
from rbr.reports.html import ReportError

logger = logging.getLogger(__name__)

VARIANTS: dict[str, str] = {
    "base": "base reward alone",
    "total": "base + RBR",
    "rbr": "RBR alone",
}
"""Reward variants: key to the title shown in tables and plots."""

MAX_REPORT_PAIRS = 2_000_000
"""Pairs of one response type above which a uniform sample is scored."""

SPLIT_TOLERANCE = 1e-9


@dataclass
class TypeEvaluation:
    """Held-out rows of one response type with their labels and rewards.

    Attributes:
        response_type: Canonical response type name.
        labels: Completion label of each row (a policy label, or a class name
            when the fit ranked by class).
        ranks: Rank of each row's label, 0 for the best tier.
        groups: Prompt id of each row.
        rewards: Reward of each row per variant key of :data:`VARIANTS`.
        cross_prompt: Whether the fit paired completions across prompts.
        n_unscored: Held-out rows left out because a proposition was unscored.
        fit_accuracy: The fit's own held-out pairwise accuracy, when the rows
            are the fit's held-out prompts.
    """

    response_type: str
    labels: list[str]
    ranks: np.ndarray
    groups: np.ndarray
    rewards: dict[str, np.ndarray]
    cross_prompt: bool
    n_unscored: int = 0
    fit_accuracy: float | None = None

    @property
    def label_order(self) -> list[str]:
        """Labels present in the rows, best rank first, then by name."""
        rank_of = dict(zip(self.labels, self.ranks.tolist()))
        return sorted(rank_of, key=lambda label: (rank_of[label], label))


@dataclass
class FitEvaluation:
    """Held-out evaluation of every fitted response type found in the data.

    Attributes:
        base_from_rows: Whether the rows carry ``base_reward`` values (else 0).
        split: ``"fit"`` for the fit's held-out prompts, ``"file"`` for every
            row of a separate file.
        skipped: Response types not evaluated, with the reason.
    """

    weights: RBRWeights
    types: dict[str, TypeEvaluation]
    base_from_rows: bool
    split: str
    skipped: dict[str, str] = field(default_factory=dict)


def held_out_prompts(
    prompt_ids: Sequence[str], *, validation_fraction: float, seed: int
) -> set[str]:
    """Return the prompt ids a fit with these settings held out.

    This repeats the draw of ``PairwiseHingeRanker``: sorted unique prompt ids,
    a permutation from ``numpy.random.default_rng(seed)``, and the first
    ``ceil(validation_fraction * n_prompts)`` of it. A fraction that would hold
    out every prompt is treated as 0, as ``fit_rbr`` does.
    """
    unique, _ = encode_groups(np.asarray(prompt_ids))
    n_prompts = unique.shape[0]
    n_held_out = math.ceil(validation_fraction * n_prompts)
    if validation_fraction <= 0 or n_held_out >= n_prompts:
        return set()
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(n_prompts)[:n_held_out]
    return {str(unique[i]) for i in chosen}


def evaluate_fit(
    graded: GradedRecords,
    weights: RBRWeights,
    policy: Policy,
    *,
    split: str,
    source: str,
) -> FitEvaluation:
    """Compute the held-out rewards of every fitted response type in ``graded``.

    Args:
        graded: Graded rows: the fit's training data (``split="fit"``) or a
            separate labelled file (``split="file"``).
        weights: The fitted weights, already checked against the policy.
        policy: The policy of the fit.
        split: ``"fit"`` keeps the prompts the fit held out, ``"file"`` keeps
            every row.
        source: File name for error messages.

    Raises:
        DataError: When a row has a missing or unknown label, or only some rows
            of a response type have ``base_reward``.
        ReportError: When no fitted response type has held-out rows.
    """
    if split not in ("fit", "file"):
        raise ValueError(f"split must be 'fit' or 'file', got {split!r}")
    types: dict[str, TypeEvaluation] = {}
    skipped: dict[str, str] = dict(weights.skipped)
    base_present: list[bool] = []
    for name, batch in graded.batches.items():
        if name not in weights.response_types:
            skipped.setdefault(name, "the weights have no entry for it")
            continue
        evaluation = _evaluate_type(
            graded.records, batch, weights, policy, split, source
        )
        if isinstance(evaluation, str):
            skipped[name] = evaluation
            continue
        types[name] = evaluation
        base_present.append(_has_base(graded.records, batch))
    if not types:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "no rows"
        raise ReportError(
            f"{source}: no fitted response type has held-out rows to report on "
            f"({reasons}); pass the data the weights were fitted on, or a labelled "
            "file with --heldout"
        )
    return FitEvaluation(weights, types, any(base_present), split, skipped)


def _evaluate_type(
    records: Sequence[Record],
    batch: TypeBatch,
    weights: RBRWeights,
    policy: Policy,
    split: str,
    source: str,
) -> TypeEvaluation | str:
    entry = weights.for_type(batch.space.response_type)
    label_source = weights.settings.get("label_source", "labels")
    keep = batch.complete()
    rows = batch.indices[keep]
    if rows.size == 0:
        return "every row has unscored propositions"
    labels = _labels(records, rows, batch.space, label_source, source)
    ranks_by_label = label_ranks(policy, batch.space.response_type, label_source)
    _check_labels(records, rows, labels, ranks_by_label, batch.space, source)
    groups = np.array([records[i].prompt_id for i in rows])

    selected = np.ones(rows.size, dtype=bool)
    n_unscored = int((~keep).sum())
    if split == "fit":
        fraction = float(weights.settings.get("validation_fraction", 0.0) or 0.0)
        seed = int(weights.settings.get("random_state", 0) or 0)
        held = held_out_prompts(
            groups.tolist(), validation_fraction=fraction, seed=seed
        )
        if not held:
            return (
                "the fit held out none of its prompts (too few prompts, or "
                "validation fraction 0)"
            )
        selected = np.isin(groups, list(held))
        all_groups = np.array([records[i].prompt_id for i in batch.indices])
        n_unscored = int((~keep & np.isin(all_groups, list(held))).sum())

    features = batch.space.transform(batch.probabilities[keep][selected])
    rbr = features @ entry.as_array()
    base = _base_rewards(records, rows[selected], batch.space.response_type, source)
    return TypeEvaluation(
        response_type=batch.space.response_type,
        labels=[labels[i] for i in np.flatnonzero(selected)],
        ranks=np.array([ranks_by_label[labels[i]] for i in np.flatnonzero(selected)]),
        groups=groups[selected],
        rewards={"base": base, "total": base + rbr, "rbr": rbr},
        cross_prompt=bool(entry.report.get("cross_prompt", False)),
        n_unscored=n_unscored,
        fit_accuracy=entry.report.get("validation_pairwise_accuracy")
        if split == "fit"
        else None,
    )


def _labels(
    records: Sequence[Record],
    rows: np.ndarray,
    space: FeatureSpace,
    label_source: str,
    source: str,
) -> list[str]:
    if label_source != "classes":
        labels = []
        for index in rows:
            record = records[index]
            if record.label is None:
                raise DataError(
                    source,
                    record.line,
                    "row has no 'label'; the weights were fitted on labelled rows, so "
                    "add the completion label this row has",
                )
            labels.append(record.label)
        return labels
    labels = []
    for index in rows:
        record = records[index]
        missing = [p for p in space.propositions if p not in record.propositions]
        if missing:
            raise DataError(
                source,
                record.line,
                "the weights were fitted with --labels classes, which needs stored "
                f"labels for {', '.join(missing)}; add them to 'propositions'",
            )
        name = space.assign_classes(space.matrix_from_dicts([record.propositions]))[0]
        if name is None:
            raise DataError(
                source, record.line, "its proposition labels match no completion class"
            )
        labels.append(name)
    return labels


def _check_labels(
    records: Sequence[Record],
    rows: np.ndarray,
    labels: list[str],
    ranks_by_label: dict[str, int],
    space: FeatureSpace,
    source: str,
) -> None:
    for index, label in zip(rows, labels):
        if label not in ranks_by_label:
            allowed = ", ".join(sorted(ranks_by_label))
            raise DataError(
                source,
                records[index].line,
                f"label {label!r} is not in the ordering of {space.response_type!r}; "
                f"use one of {allowed}",
            )


def _has_base(records: Sequence[Record], batch: TypeBatch) -> bool:
    return any(records[i].base_reward is not None for i in batch.indices)


def _base_rewards(
    records: Sequence[Record], rows: np.ndarray, response_type: str, source: str
) -> np.ndarray:
    values = [records[i].base_reward for i in rows]
    if all(v is None for v in values):
        return np.zeros(len(values))
    for i, value in zip(rows, values):
        if value is None:
            raise DataError(
                source,
                records[i].line,
                f"some {response_type!r} rows have 'base_reward' and this one does "
                "not; give every row a base reward or none",
            )
    return np.array(values, dtype=float)


def centered_rewards(
    groups: np.ndarray, ranks: np.ndarray, rewards: np.ndarray
) -> np.ndarray:
    """Return each reward minus the mean reward of its group's best-ranked rows.

    Rows of groups with fewer than two distinct ranks get NaN.
    """
    result = np.full(rewards.shape[0], np.nan)
    _, codes = encode_groups(groups)
    for code in np.unique(codes):
        members = codes == code
        group_ranks = ranks[members]
        if np.unique(group_ranks).size < 2:
            continue
        best = group_ranks == group_ranks.min()
        center = rewards[members][best].mean()
        result[members] = rewards[members] - center
    return result


def centering_groups(evaluation: TypeEvaluation) -> np.ndarray:
    """Return the group of each row for centering: its prompt, or one group."""
    if evaluation.cross_prompt:
        return np.zeros(evaluation.groups.shape[0], dtype=int)
    return evaluation.groups


def ranking_accuracy(
    evaluation: TypeEvaluation, *, seed: int = 0
) -> list[dict[str, Any]]:
    """Return pairwise ranking accuracy per (better label, worse label) pair.

    Pairs are formed as the fit formed them: within a prompt, or across all
    rows for a cross-prompt fit. The last entry covers all pairs, with
    ``better`` and ``worse`` set to ``"all"``.
    """
    pairs = build_pairs(
        centering_groups(evaluation),
        evaluation.ranks,
        max_pairs=MAX_REPORT_PAIRS,
        random_state=seed,
    )
    labels = np.array(evaluation.labels)
    correct = {
        key: values[pairs.better] > values[pairs.worse]
        for key, values in evaluation.rewards.items()
    }
    order = {label: i for i, label in enumerate(evaluation.label_order)}
    keys = sorted(
        set(zip(labels[pairs.better].tolist(), labels[pairs.worse].tolist())),
        key=lambda pair: (order[pair[0]], order[pair[1]]),
    )
    rows = [
        _accuracy_row(better, worse, mask, correct)
        for better, worse in keys
        for mask in [(labels[pairs.better] == better) & (labels[pairs.worse] == worse)]
    ]
    rows.append(_accuracy_row("all", "all", np.ones(len(pairs), dtype=bool), correct))
    return rows


def _accuracy_row(
    better: str, worse: str, mask: np.ndarray, correct: dict[str, np.ndarray]
) -> dict[str, Any]:
    n_pairs = int(mask.sum())
    row: dict[str, Any] = {"better": better, "worse": worse, "n_pairs": n_pairs}
    for key, values in correct.items():
        accuracy = float(values[mask].mean()) if n_pairs else None
        row[f"accuracy_{key}"] = accuracy
        row[f"error_{key}"] = None if accuracy is None else 1.0 - accuracy
    return row


def split_matches_fit(
    evaluation: TypeEvaluation, overall: dict[str, Any]
) -> bool | None:
    """Return whether the recomputed held-out accuracy equals the fit's own figure.

    None when there is nothing to compare (a separate file, or no pairs).
    """
    if evaluation.fit_accuracy is None or overall["accuracy_total"] is None:
        return None
    difference = abs(overall["accuracy_total"] - evaluation.fit_accuracy)
    return difference <= SPLIT_TOLERANCE
