"""Measure graders against human-labelled gold sets and tune decision thresholds."""

from rbr.evaluation.grader_eval import (
    FitFunction,
    cross_validate_grader,
    evaluate_grader,
    prompt_folds,
    split_prompts,
)
from rbr.evaluation.metrics import (
    ConfusionCounts,
    ReliabilityBin,
    ThresholdChoice,
    accuracy,
    balanced_accuracy,
    best_threshold,
    confusion_counts,
    f1_score,
    reliability_curve,
    roc_auc,
)
from rbr.evaluation.report import GraderReport, PropositionReport, ResponseTypeReport
from rbr.evaluation.thresholds import PropositionThresholds, ThresholdsError

__all__ = [
    "ConfusionCounts",
    "FitFunction",
    "GraderReport",
    "PropositionReport",
    "PropositionThresholds",
    "ReliabilityBin",
    "ResponseTypeReport",
    "ThresholdChoice",
    "ThresholdsError",
    "accuracy",
    "balanced_accuracy",
    "best_threshold",
    "confusion_counts",
    "cross_validate_grader",
    "evaluate_grader",
    "f1_score",
    "prompt_folds",
    "reliability_curve",
    "roc_auc",
    "split_prompts",
]
