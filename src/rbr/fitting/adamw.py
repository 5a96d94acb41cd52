"""Full-batch AdamW on the pairwise hinge loss, the baseline for the exact solver.

This is the way the published RBR weights were fitted: zero initial weights,
learning rate 1e-2, 1,000 full-batch steps. It exists to compare objective
values and run times against :func:`rbr.fitting.solver.solve_pairwise_hinge`.
It has no stopping test and gives no optimality bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rbr.fitting.pairs import Pairs
from rbr.fitting.solver import PairwiseHingeProblem


@dataclass(frozen=True)
class AdamWResult:
    """Result of :func:`fit_adamw`.

    Attributes:
        w: Weights after the last step.
        objective: Objective F(w) of the exact solver at ``w``: mean hinge plus
            ``(l2 / 2) * ||w||^2``.
        n_steps: Steps taken.
    """

    w: npt.NDArray[np.float64]
    objective: float
    n_steps: int


def fit_adamw(
    X: npt.ArrayLike,
    pairs: Pairs,
    *,
    l2: float,
    base: npt.ArrayLike | None = None,
    lr: float = 1e-2,
    n_steps: int = 1000,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    decoupled: bool = True,
) -> AdamWResult:
    """Run full-batch AdamW from zero weights on the pairwise hinge objective.

    Args:
        X: Feature matrix (n rows by d features).
        pairs: Pairs from :func:`rbr.fitting.pairs.build_pairs`.
        l2: L2 strength of the objective, also used as the weight decay.
        base: Optional base reward per row.
        lr: Learning rate.
        n_steps: Number of full-batch steps.
        betas: Adam's decay rates for the first and second moment estimates.
        eps: Added to the root of the second moment estimate.
        decoupled: True applies the decay ``w -= lr * l2 * w`` outside the
            adaptive step, as ``torch.optim.AdamW`` does. False adds
            ``l2 * w`` to the gradient instead, which is Adam on the exact
            objective.

    Returns:
        The final weights and their objective value.

    Raises:
        ValueError: If an argument is invalid.
    """
    problem = PairwiseHingeProblem(X, pairs, l2=l2, base=base)
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    beta1, beta2 = betas
    w = np.zeros(problem.X.shape[1])
    first_moment = np.zeros_like(w)
    second_moment = np.zeros_like(w)
    for step in range(1, n_steps + 1):
        gradient = _hinge_subgradient(problem, w)
        if decoupled:
            w *= 1.0 - lr * problem.l2
        else:
            gradient += problem.l2 * w
        first_moment = beta1 * first_moment + (1.0 - beta1) * gradient
        second_moment = beta2 * second_moment + (1.0 - beta2) * gradient**2
        first_unbiased = first_moment / (1.0 - beta1**step)
        second_unbiased = second_moment / (1.0 - beta2**step)
        w -= lr * first_unbiased / (np.sqrt(second_unbiased) + eps)
    return AdamWResult(w=w, objective=problem.objective(w), n_steps=n_steps)


def _hinge_subgradient(problem: PairwiseHingeProblem, w: np.ndarray) -> np.ndarray:
    """Return a subgradient of the mean hinge (without the L2 term) at ``w``."""
    if problem.n_pairs == 0:
        return np.zeros_like(w)
    active = (problem.residuals(w) > 0.0).astype(np.float64)
    return -problem.weighted_difference_mean(active)
