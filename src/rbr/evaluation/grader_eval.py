"""Measure a grader against human proposition labels (a gold set).

Every record with a safety response type is graded on the propositions its
response type needs, and each graded probability is compared with the human
label in the record's ``propositions`` field. Two modes:

* :func:`evaluate_grader` grades once. Per-proposition thresholds are tuned
  on a tuning split of the prompts and measured on the other prompts.
* :func:`cross_validate_grader` is for graders trained on labelled data:
  folds grouped by prompt, one grader trained per fold, metrics on the pooled
  out-of-fold probabilities.

Unscored cells (NaN from the grader) and unlabelled cells (no human label)
are left out of every metric and counted per proposition, never filled in.

Samples reach the grader with their conversation and completion text
unchanged, so :meth:`rbr.data.Sample.content_key` is the same as in the gold
file. A grader that draws few-shot examples from labelled records uses that
key to skip the graded item itself, so no item is its own example.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rbr.data.types import Record
from rbr.errors import DataError
from rbr.evaluation import metrics
from rbr.evaluation.metrics import DEFAULT_THRESHOLD
from rbr.evaluation.report import (
    GraderReport,
    PropositionReport,
    ResponseTypeReport,
    build_proposition_report,
    build_response_type_report,
    macro_averages,
)
from rbr.evaluation.thresholds import PropositionThresholds
from rbr.features.space import FeatureSpace, feature_spaces
from rbr.fitting.grading import GradedRecords, grade_records, resolve_response_type
from rbr.graders.base import Grader
from rbr.policy.spec import Policy

logger = logging.getLogger(__name__)

FitFunction = Callable[[Sequence[Record]], Grader]
"""Trains a grader on labelled records: ``fit_fn(train_records) -> Grader``."""

ProgressCallback = Callable[[int], None]


@dataclass
class _GoldTable:
    """Grader probabilities and human labels per response type.

    ``scores[t]`` and ``labels[t]`` have shape ``(len(rows[t]),
    len(spaces[t].propositions))``, NaN where unscored or unlabelled.
    ``reasons`` maps ``(record index, proposition)`` to the unscored reason.
    """

    records: list[Record]
    response_types: list[str | None]
    proposition_order: tuple[str, ...]
    spaces: dict[str, FeatureSpace]
    rows: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    reasons: dict[tuple[int, str], str] = field(default_factory=dict)


def evaluate_grader(
    records: Sequence[Record],
    policy: Policy,
    grader: Grader,
    *,
    tuning_fraction: float = 0.5,
    random_state: int = 0,
    source: str = "<memory>",
    batch_size: int = 64,
    progress: ProgressCallback | None = None,
) -> GraderReport:
    """Grade gold records once and compare the probabilities with human labels.

    Prompts are split per response type, seeded by ``random_state``: a
    ``tuning_fraction`` share of them tunes each proposition's threshold (the
    one maximising accuracy), and the rest measure it. With 0 nothing is
    tuned and every threshold stays 0.5. With 1 every prompt tunes and no
    held-out metric is reported.

    Raises:
        DataError: When a row has an invalid response type or a label that is
            not true or false, or no row has a safety response type and labels.
        ValueError: When ``tuning_fraction`` is outside [0, 1].
    """
    if not 0.0 <= tuning_fraction <= 1.0:
        raise ValueError(f"tuning_fraction must lie in [0, 1], got {tuning_fraction}")
    records = list(records)
    table = _empty_table(records, policy, source)
    graded = grade_records(
        records, policy, grader, source=source, batch_size=batch_size, progress=progress
    )
    _fill_scores(table, graded, np.arange(len(records)))
    tuning = split_prompts(
        records,
        table.response_types,
        fraction=tuning_fraction,
        random_state=random_state,
    )
    thresholds, counts = _tune_thresholds(table, tuning)
    if tuning_fraction == 1.0:
        logger.warning(
            "tuning_fraction is 1: no held-out prompts, held-out metrics are empty"
        )
    settings = {"tuning_fraction": tuning_fraction, "random_state": random_state}
    method = (
        f"maximum accuracy on {tuning_fraction:.0%} of prompts "
        f"(split per response type, seed {random_state})"
    )
    tuned = PropositionThresholds(
        thresholds=thresholds,
        grader_identity=grader.identity,
        policy_name=policy.name,
        policy_hash=policy.content_hash,
        source=source,
        method=method,
        n_tuning_cells=counts,
    )
    return _report(
        table,
        policy,
        mode="holdout",
        grader_identity=grader.identity,
        source=source,
        settings=settings,
        group_thresholds=[thresholds],
        group_of_record=np.zeros(len(records), dtype=int),
        held_out=~tuning,
        tuning_counts=counts,
        thresholds=tuned,
    )


def cross_validate_grader(
    records: Sequence[Record],
    policy: Policy,
    fit_fn: FitFunction,
    *,
    n_folds: int = 5,
    inner_folds: int = 3,
    random_state: int = 0,
    source: str = "<memory>",
    batch_size: int = 64,
) -> GraderReport:
    """Cross-validate a trained grader: train on other folds, grade each fold.

    Folds group records by :attr:`rbr.data.Record.prompt_id` (split per
    response type, seeded by ``random_state``), so completions to one prompt
    never straddle training and test. ``fit_fn`` receives every record
    outside the test fold, and its grader grades the test fold. Metrics
    pool the out-of-fold probabilities of all folds.

    A fold's thresholds never see its test rows or in-sample scores. The
    fold's training rows are split again into ``inner_folds`` prompt-grouped
    folds, and a grader is trained per inner fold. The thresholds maximise
    accuracy on the pooled inner out-of-fold probabilities. Inner graders see
    less data than the fold's grader, so their probabilities, and the
    thresholds tuned on them, can differ somewhat from the fold grader's.
    This costs ``n_folds * (inner_folds + 1)`` calls to ``fit_fn``. With
    ``inner_folds=0`` nothing is tuned, every threshold is 0.5 and ``fit_fn``
    runs ``n_folds`` times.

    Raises:
        ValueError: When ``n_folds`` is below 2 or above the number of prompts,
            or ``inner_folds`` is 1 or negative.
        DataError: As for :func:`evaluate_grader`.
    """
    if inner_folds < 0 or inner_folds == 1:
        raise ValueError(
            f"inner_folds must be 0 (no tuning) or at least 2, got {inner_folds}"
        )
    records = list(records)
    table = _empty_table(records, policy, source)
    folds = prompt_folds(
        records, table.response_types, n_folds=n_folds, random_state=random_state
    )
    group_thresholds = []
    tuning_counts: dict[str, int] = {}
    identities = []
    for fold in range(n_folds):
        train = np.flatnonzero(folds != fold)
        test = np.flatnonzero(folds == fold)
        logger.info(
            "fold %d/%d: %d training rows, %d test rows",
            fold + 1,
            n_folds,
            train.size,
            test.size,
        )
        thresholds, counts = _inner_thresholds(
            [records[i] for i in train],
            policy,
            fit_fn,
            inner_folds=inner_folds,
            random_state=random_state,
            source=source,
            batch_size=batch_size,
        )
        group_thresholds.append(thresholds)
        for name, count in counts.items():
            tuning_counts[name] = tuning_counts.get(name, 0) + count
        identities.append(
            _fit_and_fill(
                table,
                records,
                test,
                fit_fn,
                policy,
                train=train,
                source=source,
                batch_size=batch_size,
            )
        )
    settings = {
        "n_folds": n_folds,
        "inner_folds": inner_folds,
        "random_state": random_state,
        "fold_grader_identities": identities,
    }
    return _report(
        table,
        policy,
        mode="cross_validation",
        grader_identity=_common_identity(identities),
        source=source,
        settings=settings,
        group_thresholds=group_thresholds,
        group_of_record=folds,
        held_out=np.ones(len(records), dtype=bool),
        tuning_counts=tuning_counts,
        thresholds=None,
    )


def split_prompts(
    records: Sequence[Record],
    response_types: Sequence[str | None],
    *,
    fraction: float,
    random_state: int,
) -> np.ndarray:
    """Return a boolean mask of records whose prompt falls in the tuning split.

    Prompts (by ``prompt_id``) are shuffled per response type with a seeded
    generator, and the first ``fraction * count`` of each (rounded half up) go to
    tuning.
    """
    rng = np.random.default_rng(random_state)
    chosen: set[str] = set()
    for prompts in _prompts_by_type(records, response_types).values():
        shuffled = rng.permutation(np.array(prompts, dtype=object))
        count = int(np.floor(fraction * len(prompts) + 0.5))
        chosen.update(shuffled[:count].tolist())
    return np.array([r.prompt_id in chosen for r in records], dtype=bool)


def prompt_folds(
    records: Sequence[Record],
    response_types: Sequence[str | None],
    *,
    n_folds: int,
    random_state: int,
) -> np.ndarray:
    """Return each record's fold number, keeping a prompt's records in one fold.

    Prompts are shuffled per response type with a seeded generator and dealt
    to the folds in turn, so every fold gets a similar mix of response types.

    Raises:
        ValueError: When ``n_folds`` is below 2 or above the number of prompts.
    """
    groups = _prompts_by_type(records, response_types)
    n_prompts = sum(len(prompts) for prompts in groups.values())
    if not 2 <= n_folds <= n_prompts:
        raise ValueError(
            f"n_folds must be between 2 and the number of prompts ({n_prompts}), "
            f"got {n_folds}"
        )
    rng = np.random.default_rng(random_state)
    fold_of_prompt: dict[str, int] = {}
    dealt = 0
    for prompts in groups.values():
        for prompt_id in rng.permutation(np.array(prompts, dtype=object)).tolist():
            fold_of_prompt[prompt_id] = dealt % n_folds
            dealt += 1
    return np.array([fold_of_prompt[r.prompt_id] for r in records], dtype=int)


def _prompts_by_type(
    records: Sequence[Record], response_types: Sequence[str | None]
) -> dict[str, list[str]]:
    """Return sorted prompt ids per response type (of each prompt's first record)."""
    type_of_prompt: dict[str, str] = {}
    for record, name in zip(records, response_types, strict=True):
        type_of_prompt.setdefault(record.prompt_id, name or "")
    groups: dict[str, list[str]] = {}
    for prompt_id, name in type_of_prompt.items():
        groups.setdefault(name, []).append(prompt_id)
    return {name: sorted(groups[name]) for name in sorted(groups)}


def _empty_table(records: list[Record], policy: Policy, source: str) -> _GoldTable:
    """Resolve response types and read the human labels. Scores start as NaN."""
    types = [resolve_response_type(r, policy, source=source) for r in records]
    spaces = feature_spaces(policy)
    table = _GoldTable(records, types, tuple(policy.propositions), {}, {}, {}, {})
    for name, space in spaces.items():
        rows = np.array([i for i, t in enumerate(types) if t == name], dtype=int)
        if rows.size == 0:
            continue
        table.spaces[name] = space
        table.rows[name] = rows
        table.scores[name] = np.full((rows.size, len(space.propositions)), np.nan)
        table.labels[name] = _human_labels([records[i] for i in rows], space, source)
    if not table.rows:
        raise DataError(source, None, "no row has a safety response type to evaluate")
    if all(np.isnan(labels).all() for labels in table.labels.values()):
        raise DataError(
            source,
            None,
            "no row has human labels in 'propositions' for the propositions its "
            "response type needs; a gold file labels each proposition true or false",
        )
    return table


def _human_labels(
    records: list[Record], space: FeatureSpace, source: str
) -> np.ndarray:
    labels = np.full((len(records), len(space.propositions)), np.nan)
    for i, record in enumerate(records):
        for j, name in enumerate(space.propositions):
            value = record.propositions.get(name)
            if value is None:
                continue
            if value not in (0.0, 1.0):
                raise DataError(
                    source,
                    record.line,
                    f"field 'propositions.{name}' is {value}, but gold labels must be "
                    "true or false; remove the value or label it by hand",
                )
            labels[i, j] = value
    return labels


def _fill_scores(
    table: _GoldTable, graded: GradedRecords, positions: np.ndarray
) -> None:
    """Copy graded probabilities into the table.

    ``positions[i]`` is the table index of row ``i`` of the graded records.
    """
    for name, batch in graded.batches.items():
        where = {int(r): k for k, r in enumerate(table.rows[name])}
        targets = [where[int(positions[i])] for i in batch.indices]
        table.scores[name][targets] = batch.probabilities
        for item in batch.unscored:
            table.reasons[(int(positions[item.sample_index]), item.proposition)] = (
                item.reason
            )


def _tune_thresholds(
    table: _GoldTable, row_mask: np.ndarray
) -> tuple[dict[str, float], dict[str, int]]:
    """Tune each proposition's threshold on the cells of rows in ``row_mask``.

    A proposition with no scored and labelled cell there keeps 0.5.
    """
    thresholds: dict[str, float] = {}
    counts: dict[str, int] = {}
    for name, (rows, scores, labels) in _cells(table).items():
        keep = row_mask[rows] & ~np.isnan(scores) & ~np.isnan(labels)
        counts[name] = int(keep.sum())
        if counts[name] == 0:
            thresholds[name] = DEFAULT_THRESHOLD
            continue
        choice = metrics.best_threshold(labels[keep], scores[keep])
        thresholds[name] = choice.threshold
    return thresholds, counts


def _cells(table: _GoldTable) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Return ``(record indices, scores, labels)`` per proposition, policy order."""
    parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for name, space in table.spaces.items():
        for j, proposition in enumerate(space.propositions):
            part = (
                table.rows[name],
                table.scores[name][:, j],
                table.labels[name][:, j],
            )
            parts.setdefault(proposition, []).append(part)
    result = {}
    for proposition in [p for p in table.proposition_order if p in parts]:
        rows, scores, labels = zip(*parts[proposition], strict=True)
        result[proposition] = (
            np.concatenate(rows),
            np.concatenate(scores),
            np.concatenate(labels),
        )
    return result


def _inner_thresholds(
    records: list[Record],
    policy: Policy,
    fit_fn: FitFunction,
    *,
    inner_folds: int,
    random_state: int,
    source: str,
    batch_size: int,
) -> tuple[dict[str, float], dict[str, int]]:
    """Tune thresholds on inner out-of-fold probabilities of ``records``."""
    table = _empty_table(records, policy, source)
    if inner_folds == 0:
        return {name: DEFAULT_THRESHOLD for name in _cells(table)}, {}
    folds = prompt_folds(
        records, table.response_types, n_folds=inner_folds, random_state=random_state
    )
    for fold in range(inner_folds):
        test = np.flatnonzero(folds == fold)
        _fit_and_fill(
            table,
            records,
            test,
            fit_fn,
            policy,
            train=np.flatnonzero(folds != fold),
            source=source,
            batch_size=batch_size,
        )
    return _tune_thresholds(table, np.ones(len(records), dtype=bool))


def _fit_and_fill(
    table: _GoldTable,
    records: list[Record],
    test: np.ndarray,
    fit_fn: FitFunction,
    policy: Policy,
    *,
    train: np.ndarray,
    source: str,
    batch_size: int,
) -> str:
    """Train on ``train`` rows, grade ``test`` rows into the table.

    Returns:
        The identity of the trained grader.
    """
    grader = fit_fn([records[i] for i in train])
    with grader:
        graded = grade_records(
            [records[i] for i in test],
            policy,
            grader,
            source=source,
            batch_size=batch_size,
        )
        identity = grader.identity
    _fill_scores(table, graded, test)
    return identity


def _common_identity(identities: Sequence[str]) -> str:
    if len(set(identities)) == 1:
        return identities[0]
    return (
        f"{identities[0]} (and {len(set(identities)) - 1} other identities over folds)"
    )


def _report(
    table: _GoldTable,
    policy: Policy,
    *,
    mode: str,
    grader_identity: str,
    source: str,
    settings: dict[str, Any],
    group_thresholds: list[dict[str, float]],
    group_of_record: np.ndarray,
    held_out: np.ndarray,
    tuning_counts: Mapping[str, int],
    thresholds: PropositionThresholds | None,
) -> GraderReport:
    propositions = _proposition_reports(
        table, group_thresholds, group_of_record, held_out, tuning_counts
    )
    response_types: dict[str, ResponseTypeReport] = {}
    for name, space in table.spaces.items():
        rows = table.rows[name]
        response_types[name] = build_response_type_report(
            space,
            table.scores[name],
            table.labels[name],
            held_out=held_out[rows],
            threshold_group=group_of_record[rows],
            group_thresholds=group_thresholds,
        )
    evaluated = np.array([t is not None for t in table.response_types], dtype=bool)
    return GraderReport(
        mode=mode,
        grader_identity=grader_identity,
        policy_name=policy.name,
        policy_hash=policy.content_hash,
        source=source,
        settings=settings,
        n_records=len(table.records),
        n_evaluated=int(evaluated.sum()),
        n_held_out=int((evaluated & held_out).sum()),
        propositions=propositions,
        response_types=response_types,
        macro=macro_averages(propositions),
        unscored_reasons=_count_reasons(table.reasons.values()),
        thresholds=thresholds,
        fold_thresholds=group_thresholds if mode == "cross_validation" else [],
    )


def _proposition_reports(
    table: _GoldTable,
    group_thresholds: list[dict[str, float]],
    group_of_record: np.ndarray,
    held_out: np.ndarray,
    tuning_counts: Mapping[str, int],
) -> dict[str, PropositionReport]:
    reports = {}
    for name, (rows, scores, labels) in _cells(table).items():
        per_group = np.array([t.get(name, DEFAULT_THRESHOLD) for t in group_thresholds])
        reasons = [
            reason
            for (row, proposition), reason in table.reasons.items()
            if proposition == name
        ]
        reports[name] = build_proposition_report(
            name,
            scores,
            labels,
            cell_thresholds=per_group[group_of_record[rows]],
            held_out=held_out[rows],
            unscored_reasons=_count_reasons(reasons),
            threshold=float(per_group.mean()),
            n_tuning=int(tuning_counts.get(name, 0)),
        )
    return reports


def _count_reasons(reasons: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items()))
