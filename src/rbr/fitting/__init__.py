"""Fitting RBR weights: pairs, the convex hinge solver, the ranker and fit reports."""

from rbr.fitting.estimator import ConvergenceWarning, PairwiseHingeRanker
from rbr.fitting.grading import GradedRecords, grade_records
from rbr.fitting.pairs import Pairs, build_pairs
from rbr.fitting.rbr_fit import FitSettings, fit_rbr, label_ranks
from rbr.fitting.solver import HingeSolution, solve_pairwise_hinge
from rbr.fitting.weights import RBRWeights, ResponseTypeWeights

__all__ = [
    "ConvergenceWarning",
    "FitSettings",
    "GradedRecords",
    "HingeSolution",
    "PairwiseHingeRanker",
    "Pairs",
    "RBRWeights",
    "ResponseTypeWeights",
    "build_pairs",
    "fit_rbr",
    "grade_records",
    "label_ranks",
    "solve_pairwise_hinge",
]
