"""Tests of the full-batch AdamW baseline."""

from __future__ import annotations

import numpy as np
import pytest
from ranking_reference import make_random_problem, make_tiered_data

from rbr.fitting.adamw import fit_adamw
from rbr.fitting.pairs import build_pairs
from rbr.fitting.solver import solve_pairwise_hinge


def test_zero_steps_keeps_zero_weights() -> None:
    data = make_random_problem(0, with_margins=True)
    pairs = build_pairs(data.groups, data.ranks, data.margins)

    result = fit_adamw(data.X, pairs, l2=0.1, n_steps=0)

    assert np.array_equal(result.w, np.zeros(data.X.shape[1]))
    assert result.objective == pytest.approx(float(np.mean(pairs.margin)))


def test_first_step_moves_each_weight_by_lr() -> None:
    # With zero moments, Adam's first bias-corrected step is -lr * g / (|g| + eps).
    data = make_random_problem(1)
    pairs = build_pairs(data.groups, data.ranks)
    differences = data.X[pairs.better] - data.X[pairs.worse]
    gradient = -differences.mean(axis=0)  # every hinge is active at w = 0

    result = fit_adamw(data.X, pairs, l2=0.1, lr=0.01, n_steps=1)

    expected = -0.01 * gradient / (np.abs(gradient) + 1e-8)
    np.testing.assert_allclose(result.w, expected, rtol=1e-12)


def test_decoupled_decay_shrinks_weights() -> None:
    data = make_random_problem(2)
    pairs = build_pairs(data.groups, data.ranks)

    weak = fit_adamw(data.X, pairs, l2=1e-6, n_steps=300)
    strong = fit_adamw(data.X, pairs, l2=20.0, n_steps=300)

    assert np.linalg.norm(strong.w) < np.linalg.norm(weak.w)


def test_adam_on_exact_objective_nears_optimum() -> None:
    data = make_tiered_data(3, n_prompts=30)
    pairs = build_pairs(data.groups, data.ranks)
    optimum = solve_pairwise_hinge(data.X, pairs, l2=0.01, tol=1e-10)

    result = fit_adamw(data.X, pairs, l2=0.01, decoupled=False)

    assert result.objective >= optimum.lower_bound
    assert result.objective - optimum.objective < 0.01
    assert result.n_steps == 1000


def test_negative_steps_rejected() -> None:
    data = make_random_problem(4)
    pairs = build_pairs(data.groups, data.ranks)

    with pytest.raises(ValueError, match="n_steps"):
        fit_adamw(data.X, pairs, l2=0.1, n_steps=-1)
