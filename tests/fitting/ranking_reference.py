"""Data makers and reference computations shared by the fitting tests.

The references here share no code with rbr.fitting: pairs come from a double
loop and the optimum from scipy's L-BFGS-B on the dual of the hinge problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RankingData:
    """Inputs of one pairwise ranking problem."""

    X: np.ndarray
    groups: np.ndarray
    ranks: np.ndarray
    margins: np.ndarray | None = None
    base: np.ndarray | None = None


def brute_force_pairs(groups: np.ndarray, ranks: np.ndarray) -> set[tuple[int, int]]:
    """Return every (better, worse) pair within a group by a double loop."""
    n_rows = len(groups)
    return {
        (a, b)
        for a in range(n_rows)
        for b in range(n_rows)
        if groups[a] == groups[b] and ranks[a] < ranks[b]
    }


def pair_offsets(
    better: np.ndarray,
    worse: np.ndarray,
    margins: np.ndarray,
    base: np.ndarray | None,
) -> np.ndarray:
    """Return ``c_p = m_p - (r_a - r_b)``, the hinge threshold of each pair."""
    offsets = np.asarray(margins, dtype=float).copy()
    if base is not None:
        offsets -= base[better] - base[worse]
    return offsets


def direct_objective(
    X: np.ndarray,
    better: np.ndarray,
    worse: np.ndarray,
    offsets: np.ndarray,
    l2: float,
    w: np.ndarray,
) -> float:
    """Return mean hinge plus L2 term, computed pair by pair."""
    hinges = [
        max(0.0, offsets[p] - float(w @ (X[better[p]] - X[worse[p]])))
        for p in range(len(better))
    ]
    return float(np.mean(hinges)) + 0.5 * l2 * float(w @ w)


def reference_optimum(
    X: np.ndarray,
    better: np.ndarray,
    worse: np.ndarray,
    offsets: np.ndarray,
    l2: float,
) -> tuple[float, float]:
    """Return a (lower, upper) bracket on the optimal objective.

    The lower end is the dual value that scipy's L-BFGS-B reaches on the
    box-constrained dual. The upper end is the primal objective at the weights
    that this dual point implies.
    """
    from scipy.optimize import minimize

    differences = X[better] - X[worse]
    n_pairs = len(offsets)

    def negative_dual(alpha: np.ndarray) -> tuple[float, np.ndarray]:
        v = differences.T @ alpha / n_pairs
        value = alpha @ offsets / n_pairs - v @ v / (2 * l2)
        gradient = offsets / n_pairs - differences @ v / (n_pairs * l2)
        return -value, -gradient

    result = minimize(
        negative_dual,
        np.full(n_pairs, 0.5),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, 1.0)] * n_pairs,
        options={"maxiter": 100_000, "ftol": 1e-15, "gtol": 1e-12},
    )
    w = differences.T @ result.x / (n_pairs * l2)
    upper = direct_objective(X, better, worse, offsets, l2, w)
    return -float(result.fun), upper


def make_random_problem(
    seed: int,
    *,
    n_rows: int = 60,
    n_features: int = 5,
    n_groups: int = 6,
    n_ranks: int = 4,
    with_margins: bool = False,
    with_base: bool = False,
) -> RankingData:
    """Return a small unstructured problem with uniform features."""
    rng = np.random.default_rng(seed)
    return RankingData(
        X=rng.random((n_rows, n_features)),
        groups=rng.integers(0, n_groups, n_rows),
        ranks=rng.integers(0, n_ranks, n_rows),
        margins=rng.uniform(0.2, 2.0, n_rows) if with_margins else None,
        base=rng.normal(0.0, 1.0, n_rows) if with_base else None,
    )


def make_tiered_data(
    seed: int,
    *,
    n_prompts: int = 80,
    tier_sizes: tuple[int, ...] = (2, 3, 3),
    n_features: int = 6,
    noise: float = 0.15,
) -> RankingData:
    """Return prompts whose completions fall in rank tiers a weight can separate.

    Each rank tier has its own feature profile in [0, 1], blurred by noise,
    so a good weight vector ranks most but not all pairs correctly.
    """
    rng = np.random.default_rng(seed)
    n_tiers = len(tier_sizes)
    profiles = np.linspace(0.9, 0.1, n_tiers)[:, None] * rng.uniform(
        0.5, 1.0, n_features
    )
    ranks = np.tile(np.repeat(np.arange(n_tiers), tier_sizes), n_prompts)
    groups = np.repeat(np.arange(n_prompts), sum(tier_sizes))
    X = profiles[ranks] + rng.normal(0.0, noise, (ranks.shape[0], n_features))
    return RankingData(X=np.clip(X, 0.0, 1.0), groups=groups, ranks=ranks)
