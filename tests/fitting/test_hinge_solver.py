"""Tests of the exact pairwise hinge solver against independent references."""

from __future__ import annotations

import numpy as np
import pytest
from ranking_reference import (
    RankingData,
    direct_objective,
    make_random_problem,
    pair_offsets,
    reference_optimum,
)

from rbr.fitting.adamw import fit_adamw
from rbr.fitting.pairs import Pairs, build_pairs
from rbr.fitting.solver import solve_pairwise_hinge

CASES = [
    # (seed, l2, with_margins, with_base)
    (0, 1e-3, False, False),
    (1, 1e-1, False, False),
    (2, 3e-4, True, False),
    (3, 1e-2, False, True),
    (4, 1e-3, True, True),
    (5, 1.0, True, True),
]


def pairs_and_offsets(data: RankingData) -> tuple[Pairs, np.ndarray]:
    pairs = build_pairs(data.groups, data.ranks, data.margins)
    offsets = pair_offsets(pairs.better, pairs.worse, pairs.margin, data.base)
    return pairs, offsets


@pytest.mark.parametrize(("seed", "l2", "with_margins", "with_base"), CASES)
def test_solver_matches_scipy_optimum(
    seed: int, l2: float, with_margins: bool, with_base: bool
) -> None:
    data = make_random_problem(seed, with_margins=with_margins, with_base=with_base)
    pairs, offsets = pairs_and_offsets(data)
    lower, upper = reference_optimum(data.X, pairs.better, pairs.worse, offsets, l2)
    assert upper - lower < 1e-7, "the scipy reference itself did not converge"

    solution = solve_pairwise_hinge(data.X, pairs, l2=l2, base=data.base, tol=1e-9)

    assert solution.converged
    assert solution.objective <= upper + 1e-9
    assert solution.objective >= lower - 1e-9
    assert solution.lower_bound <= upper + 1e-9
    assert solution.gap <= 1e-9 * max(1.0, solution.objective)


@pytest.mark.parametrize(("seed", "l2", "with_margins", "with_base"), CASES)
def test_solver_objective_matches_direct_sum(
    seed: int, l2: float, with_margins: bool, with_base: bool
) -> None:
    data = make_random_problem(seed, with_margins=with_margins, with_base=with_base)
    pairs, offsets = pairs_and_offsets(data)

    solution = solve_pairwise_hinge(data.X, pairs, l2=l2, base=data.base)

    direct = direct_objective(
        data.X, pairs.better, pairs.worse, offsets, l2, solution.w
    )
    assert solution.objective == pytest.approx(direct, abs=1e-12)
    assert solution.gap == pytest.approx(
        solution.objective - solution.lower_bound, abs=1e-15
    )


def test_gap_is_truthful_when_stopped_early() -> None:
    data = make_random_problem(7, n_rows=80, with_margins=True, with_base=True)
    pairs, offsets = pairs_and_offsets(data)
    l2 = 1e-2
    lower, upper = reference_optimum(data.X, pairs.better, pairs.worse, offsets, l2)
    assert upper - lower < 1e-7, "the scipy reference itself did not converge"

    for max_iter in (1, 2, 3, 5, 8):
        solution = solve_pairwise_hinge(
            data.X, pairs, l2=l2, base=data.base, tol=1e-12, max_iter=max_iter
        )
        assert solution.n_iter <= max_iter
        # lower <= true optimum, so this bounds objective - optimum from above.
        assert solution.objective - lower <= solution.gap + 1e-9
        assert solution.lower_bound <= upper + 1e-9


def test_lower_bound_below_objective_everywhere() -> None:
    data = make_random_problem(8, with_margins=True, with_base=True)
    pairs, offsets = pairs_and_offsets(data)
    l2 = 1e-2
    solution = solve_pairwise_hinge(data.X, pairs, l2=l2, base=data.base)
    rng = np.random.default_rng(0)

    for _ in range(50):
        w = solution.w + rng.normal(0.0, 0.5, solution.w.shape)
        value = direct_objective(data.X, pairs.better, pairs.worse, offsets, l2, w)
        assert value >= solution.lower_bound - 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_solver_no_worse_than_adamw(seed: int) -> None:
    data = make_random_problem(seed, n_rows=100, with_margins=seed % 2 == 1)
    pairs = build_pairs(data.groups, data.ranks, data.margins)
    l2 = 1e-2

    solution = solve_pairwise_hinge(data.X, pairs, l2=l2, tol=1e-11)
    decoupled = fit_adamw(data.X, pairs, l2=l2)
    coupled = fit_adamw(data.X, pairs, l2=l2, decoupled=False)

    assert solution.objective <= decoupled.objective + 1e-9
    assert solution.objective <= coupled.objective + 1e-9


def test_long_subgradient_run_approaches_solver_optimum() -> None:
    data = make_random_problem(9, n_rows=50, n_features=3)
    pairs, offsets = pairs_and_offsets(data)
    l2 = 0.1
    differences = data.X[pairs.better] - data.X[pairs.worse]
    solution = solve_pairwise_hinge(data.X, pairs, l2=l2, tol=1e-10)

    # Subgradient descent with step 1 / (l2 * t), the standard rate for a
    # strongly convex objective, keeping the best iterate.
    w = np.zeros(data.X.shape[1])
    best = np.inf
    for t in range(1, 20_001):
        active = offsets - differences @ w > 0
        subgradient = l2 * w - differences[active].sum(axis=0) / len(offsets)
        w = w - subgradient / (l2 * t)
        hinge = np.maximum(offsets - differences @ w, 0.0).mean()
        best = min(best, hinge + 0.5 * l2 * float(w @ w))

    assert best >= solution.lower_bound - 1e-12
    assert best - solution.objective < 1e-3


def test_margins_scale_the_solution() -> None:
    # Scaling every margin by k and l2 by 1 / k scales the optimum w by k.
    data = make_random_problem(10, with_margins=True)
    pairs = build_pairs(data.groups, data.ranks, data.margins)
    scaled = Pairs(pairs.better, pairs.worse, 3.0 * pairs.margin)

    plain = solve_pairwise_hinge(data.X, pairs, l2=0.03, tol=1e-10)
    stretched = solve_pairwise_hinge(data.X, scaled, l2=0.01, tol=1e-10)

    np.testing.assert_allclose(stretched.w, 3.0 * plain.w, rtol=1e-4, atol=1e-6)
    assert stretched.objective == pytest.approx(3.0 * plain.objective, rel=1e-7)


def test_base_constant_per_group_changes_nothing() -> None:
    data = make_random_problem(11)
    pairs = build_pairs(data.groups, data.ranks)
    base = np.array([10.0, -3.0, 0.5, 7.0, 1.0, 2.0])[data.groups]

    plain = solve_pairwise_hinge(data.X, pairs, l2=0.01, tol=1e-10)
    shifted = solve_pairwise_hinge(data.X, pairs, l2=0.01, base=base, tol=1e-10)

    np.testing.assert_allclose(shifted.w, plain.w, atol=1e-6)


def test_base_rewards_enter_the_hinge() -> None:
    # A base reward that already ranks every pair by more than the margin
    # leaves nothing to fit, so w = 0 is optimal.
    data = make_random_problem(12)
    pairs = build_pairs(data.groups, data.ranks)
    base = -10.0 * data.ranks.astype(float)

    solution = solve_pairwise_hinge(data.X, pairs, l2=0.01, base=base)

    np.testing.assert_allclose(solution.w, 0.0, atol=1e-12)
    assert solution.objective == pytest.approx(0.0, abs=1e-12)


def test_no_pairs_gives_zero_weights() -> None:
    pairs = build_pairs(np.arange(5), np.zeros(5, dtype=int))

    solution = solve_pairwise_hinge(np.ones((5, 3)), pairs, l2=0.1)

    assert solution.converged
    assert np.array_equal(solution.w, np.zeros(3))
    assert solution.objective == 0.0


def test_float32_features_accepted() -> None:
    data = make_random_problem(13)
    pairs = build_pairs(data.groups, data.ranks)

    single = solve_pairwise_hinge(data.X.astype(np.float32), pairs, l2=0.01)
    double = solve_pairwise_hinge(
        data.X.astype(np.float32).astype(float), pairs, l2=0.01
    )

    assert single.w.dtype == np.float64
    np.testing.assert_array_equal(single.w, double.w)


def test_non_convergence_is_reported() -> None:
    data = make_random_problem(14, n_rows=100)
    pairs = build_pairs(data.groups, data.ranks)

    solution = solve_pairwise_hinge(data.X, pairs, l2=1e-4, tol=1e-12, max_iter=1)

    assert not solution.converged
    assert solution.n_iter == 1
    assert solution.gap > 1e-12


def invalid_calls() -> list[tuple[dict, str]]:
    pairs = build_pairs(np.zeros(4, dtype=int), np.arange(4))
    X = np.random.default_rng(0).random((4, 2))
    outside = Pairs(np.array([0, 4]), np.array([1, 2]), np.ones(2))
    short_margin = Pairs(pairs.better, pairs.worse, np.ones(1))
    nan_X = X.copy()
    nan_X[1, 1] = np.nan
    return [
        ({"X": X[0], "pairs": pairs, "l2": 0.1}, "X must be a 2-D"),
        ({"X": nan_X, "pairs": pairs, "l2": 0.1}, "NaN"),
        ({"X": np.zeros((4, 0)), "pairs": pairs, "l2": 0.1}, "feature column"),
        ({"X": X, "pairs": pairs, "l2": 0.0}, "l2 must be"),
        ({"X": X, "pairs": pairs, "l2": -1.0}, "l2 must be"),
        ({"X": X, "pairs": pairs, "l2": np.nan}, "l2 must be"),
        ({"X": X, "pairs": pairs, "l2": 0.1, "tol": 0.0}, "tol must be"),
        ({"X": X, "pairs": pairs, "l2": 0.1, "max_iter": 0}, "max_iter"),
        ({"X": X, "pairs": pairs, "l2": 0.1, "max_iter": 2.0}, "max_iter"),
        ({"X": X, "pairs": outside, "l2": 0.1}, "outside"),
        ({"X": X, "pairs": short_margin, "l2": 0.1}, "pairs.margin"),
        ({"X": X, "pairs": pairs, "l2": 0.1, "base": np.ones(3)}, "base must be"),
        ({"X": X, "pairs": pairs, "l2": 0.1, "base": np.full(4, np.inf)}, "base"),
    ]


@pytest.mark.parametrize(("kwargs", "message"), invalid_calls())
def test_invalid_input_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        solve_pairwise_hinge(**kwargs)
