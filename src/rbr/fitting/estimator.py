"""A scikit-learn style ranker that fits RBR weights with the exact hinge solver.

One ranker fits one weight vector, so callers fit one per response type. The
reward of completion ``i`` is ``base_rewards[i] + coef_ . X[i]``, and fitting
minimizes the mean pairwise hinge loss over pairs of completions to the same
prompt plus ``(l2 / 2) * ||coef_||^2``. Prompts, not pairs, are split into
training and validation sets, so held-out metrics measure ranking on unseen
prompts.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt

from rbr.errors import NotFittedError
from rbr.fitting.pairs import (
    Pairs,
    RandomState,
    as_random_generator,
    build_pairs,
    encode_groups,
    validate_margins,
    validate_ranks,
)
from rbr.fitting.solver import (
    DEFAULT_MAX_ITER,
    DEFAULT_TOL,
    solve_pairwise_hinge,
)

logger = logging.getLogger(__name__)

# The L2 term keeps the optimum unique and the Newton system well conditioned,
# and it bounds the weights: with features in [0, 1], each |coef_j| <= 1 / l2 at
# the optimum, and ||coef_|| <= sqrt(2 / l2) with margin 1 and no base rewards.
# It is kept weak because stronger values cost held-out ranking quality. On the
# synthetic data of benchmarks/bench_fit.py (23 features, 17 completions in 5
# tiers per prompt, 350 training prompts), held-out top-1 was 0.84 at 1e-5,
# 0.81 at 1e-4 and 0.64 at 1e-3. With only 15 training prompts it was still
# 0.80 at 1e-4. AdamW's decoupled weight decay (0.05 in the published recipe) is a
# different penalty and does not translate to a value here.
DEFAULT_L2 = 1e-4
DEFAULT_VALIDATION_FRACTION = 0.05

_PARAM_NAMES = (
    "l2",
    "margin",
    "validation_fraction",
    "cross_prompt",
    "max_pairs",
    "tol",
    "max_iter",
    "random_state",
)


class ConvergenceWarning(UserWarning):
    """The hinge solver stopped before its certified gap reached ``tol``."""


class PairwiseHingeRanker:
    """Linear reward fitted so that better-ranked completions score higher.

    Args:
        l2: Strength of the ``(l2 / 2) * ||coef_||^2`` term; must be > 0. The
            default, 1e-4, is weak on purpose (see ``DEFAULT_L2``).
        margin: Margin each pair must clear when ``fit`` gets no margins.
        validation_fraction: Share of prompts held out, in [0, 1). With 0
            the validation attributes are None.
        cross_prompt: Form pairs across all prompts of the training split
            (and, separately, of the validation split) instead of within each
            prompt. Data with one completion per prompt needs this. Only
            allowed without base rewards.
        max_pairs: Upper limit on the pairs of each split; more are sampled
            down uniformly. None keeps all pairs.
        tol: Certified optimality gap at which the solver stops, relative to
            ``max(1, objective)``.
        max_iter: Maximum number of Newton steps of the solver.
        random_state: Seed or Generator for the split and the pair sampling.

    Attributes:
        coef_: Fitted weights, one per feature column.
        n_features_in_: Number of feature columns seen in ``fit``.
        objective_: Training objective: mean hinge plus the L2 term.
        train_loss_: Mean hinge loss over training pairs, without the L2 term.
        optimality_gap_: Certified bound on ``objective_`` minus the optimum.
        n_iter_: Newton steps taken.
        converged_: Whether the gap reached ``tol``.
        n_train_pairs_: Number of training pairs.
        n_validation_pairs_: Number of held-out pairs.
        validation_groups_: Sorted ids of the held-out prompts.
        validation_loss_: Mean hinge loss over held-out pairs, or None.
        validation_pairwise_accuracy_: Share of held-out pairs whose better
            completion gets the strictly higher reward (ties count as errors),
            or None.
        validation_top1_: Share of held-out prompts with at least two ranks
            whose best-ranked completion gets the strictly highest reward, or
            None when no such prompt exists.
    """

    def __init__(
        self,
        *,
        l2: float = DEFAULT_L2,
        margin: float = 1.0,
        validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
        cross_prompt: bool = False,
        max_pairs: int | None = None,
        tol: float = DEFAULT_TOL,
        max_iter: int = DEFAULT_MAX_ITER,
        random_state: RandomState = None,
    ) -> None:
        self.l2 = l2
        self.margin = margin
        self.validation_fraction = validation_fraction
        self.cross_prompt = cross_prompt
        self.max_pairs = max_pairs
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the constructor arguments by name, as scikit-learn expects."""
        return {name: getattr(self, name) for name in _PARAM_NAMES}

    def set_params(self, **params: Any) -> PairwiseHingeRanker:
        """Set constructor arguments by name and return self.

        Raises:
            ValueError: If a name is not a constructor argument.
        """
        for name, value in params.items():
            if name not in _PARAM_NAMES:
                raise ValueError(
                    f"invalid parameter {name!r} for PairwiseHingeRanker; valid "
                    f"parameters are {', '.join(_PARAM_NAMES)}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        changed = [
            f"{name}={value!r}"
            for name, value in self.get_params().items()
            if not _same_value(value, _DEFAULTS[name])
        ]
        return f"PairwiseHingeRanker({', '.join(changed)})"

    def fit(
        self,
        X: npt.ArrayLike,
        *,
        groups: npt.ArrayLike,
        ranks: npt.ArrayLike,
        margins: npt.ArrayLike | None = None,
        base_rewards: npt.ArrayLike | None = None,
    ) -> PairwiseHingeRanker:
        """Fit the weights on graded completions and return self.

        Args:
            X: Features, one row per completion.
            groups: Prompt id of each completion.
            ranks: Integer rank of each completion, 0 for the best tier; lower
                is better, and equal ranks form no pair.
            margins: Margin of each completion, applied to the pairs it wins.
                None uses the ``margin`` parameter for every completion.
            base_rewards: Reward of each completion before the RBR term, for
                example a reward model's score. None means zero.

        Returns:
            The fitted ranker.

        Raises:
            ValueError: If a parameter or an input is invalid, or the training
                prompts yield no pair.
        """
        self._validate_params()
        data = _FitData.from_inputs(self, X, groups, ranks, margins, base_rewards)
        rng = as_random_generator(self.random_state)
        is_validation = self._split(data.codes, data.n_groups, rng)
        self.validation_groups_ = data.unique_groups[
            np.unique(data.codes[is_validation])
        ]
        train_rows = np.flatnonzero(~is_validation)
        validation_rows = np.flatnonzero(is_validation)

        train_pairs = self._pairs_for(data, train_rows, rng)
        if len(train_pairs) == 0:
            raise ValueError(
                "the training prompts yield no pairs: every prompt has one rank "
                "only. Give completions of different ranks to the same prompt, "
                "or set cross_prompt=True for data with one completion per prompt"
            )
        self._fit_train(data, train_rows, train_pairs)
        self._score_validation(data, validation_rows, rng)
        logger.info(
            "Fitted %s features on %s training pairs (gap %.3g); "
            "%s validation pairs, pairwise accuracy %s",
            self.n_features_in_,
            self.n_train_pairs_,
            self.optimality_gap_,
            self.n_validation_pairs_,
            self.validation_pairwise_accuracy_,
        )
        return self

    def decision_function(
        self, X: npt.ArrayLike, base_rewards: npt.ArrayLike | None = None
    ) -> np.ndarray:
        """Return the reward ``base_rewards + X @ coef_`` of each row.

        Raises:
            NotFittedError: If ``fit`` has not been called.
            ValueError: If ``X`` or ``base_rewards`` has the wrong shape.
        """
        if not hasattr(self, "coef_"):
            raise NotFittedError(
                "this PairwiseHingeRanker is not fitted yet; call "
                "fit(X, groups=..., ranks=...) before decision_function"
            )
        features = _validate_features(X)
        if features.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {features.shape[1]} features, but the ranker was fitted "
                f"with {self.n_features_in_}"
            )
        rewards = features @ self.coef_
        if base_rewards is not None:
            rewards += _validate_base_rewards(base_rewards, features.shape[0])
        return rewards

    def _validate_params(self) -> None:
        _check_number("l2", self.l2, low=0.0, low_inclusive=False)
        _check_number("margin", self.margin, low=0.0, low_inclusive=True)
        _check_number("tol", self.tol, low=0.0, low_inclusive=False)
        fraction = self.validation_fraction
        _check_number("validation_fraction", fraction, low=0.0, low_inclusive=True)
        if fraction >= 1.0:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {fraction!r}, because "
                "some prompts must remain for training"
            )
        if not isinstance(self.cross_prompt, (bool, np.bool_)):
            raise ValueError(f"cross_prompt must be a bool, got {self.cross_prompt!r}")
        _check_count("max_iter", self.max_iter, allow_none=False)
        _check_count("max_pairs", self.max_pairs, allow_none=True)

    def _split(
        self, codes: np.ndarray, n_groups: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Return a row mask of the held-out prompts, drawn by prompt."""
        n_validation = math.ceil(self.validation_fraction * n_groups)
        if n_validation >= n_groups:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} holds out "
                f"{n_validation} of {n_groups} prompts, leaving none to train on; "
                "lower it or set it to 0"
            )
        held_out = np.zeros(n_groups, dtype=bool)
        held_out[rng.permutation(n_groups)[:n_validation]] = True
        return held_out[codes]

    def _pairs_for(
        self, data: _FitData, rows: np.ndarray, rng: np.random.Generator
    ) -> Pairs:
        """Build pairs among ``rows``, as indices into ``rows``."""
        group_ids = np.zeros(rows.shape[0]) if self.cross_prompt else data.codes[rows]
        return build_pairs(
            group_ids,
            data.ranks[rows],
            data.margins[rows],
            max_pairs=self.max_pairs,
            random_state=rng,
        )

    def _fit_train(self, data: _FitData, rows: np.ndarray, pairs: Pairs) -> None:
        base = None if data.base is None else data.base[rows]
        features = data.X[rows]
        solution = solve_pairwise_hinge(
            features, pairs, l2=self.l2, base=base, tol=self.tol, max_iter=self.max_iter
        )
        self.coef_ = solution.w
        self.n_features_in_ = data.X.shape[1]
        self.objective_ = solution.objective
        self.train_loss_ = solution.objective - 0.5 * self.l2 * float(
            solution.w @ solution.w
        )
        self.optimality_gap_ = solution.gap
        self.n_iter_ = solution.n_iter
        self.converged_ = solution.converged
        self.n_train_pairs_ = len(pairs)
        if not solution.converged:
            warnings.warn(
                f"PairwiseHingeRanker stopped after max_iter={self.max_iter} "
                f"Newton steps with a certified optimality gap of "
                f"{solution.gap:.3g}, above tol={self.tol:g} times "
                f"max(1, objective); increase max_iter, raise tol, or raise l2 "
                f"(now {self.l2:g}) to make the problem better conditioned",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _score_validation(
        self, data: _FitData, rows: np.ndarray, rng: np.random.Generator
    ) -> None:
        self.n_validation_pairs_ = 0
        self.validation_loss_: float | None = None
        self.validation_pairwise_accuracy_: float | None = None
        self.validation_top1_: float | None = None
        if rows.shape[0] == 0:
            return
        base = None if data.base is None else data.base[rows]
        rewards = self.decision_function(data.X[rows], base)
        self.validation_top1_ = top1_share(data.codes[rows], data.ranks[rows], rewards)

        pairs = self._pairs_for(data, rows, rng)
        self.n_validation_pairs_ = len(pairs)
        if len(pairs) == 0:
            return
        reward_gap = rewards[pairs.better] - rewards[pairs.worse]
        hinge = np.maximum(pairs.margin - reward_gap, 0.0)
        self.validation_loss_ = float(np.mean(hinge))
        correct = reward_gap > 0.0
        self.validation_pairwise_accuracy_ = float(np.mean(correct))


def top1_share(
    codes: np.ndarray, ranks: np.ndarray, rewards: np.ndarray
) -> float | None:
    """Return the share of groups whose best-ranked row has the top reward.

    Only groups with at least two distinct ranks count. A group counts as
    correct when the highest reward among its best-ranked rows is strictly
    above every reward of its other rows. Returns None when no group counts.
    """
    _, dense = np.unique(codes, return_inverse=True)
    dense = dense.reshape(-1)
    n_groups = int(dense.max()) + 1
    best_rank = np.full(n_groups, np.iinfo(np.int64).max)
    np.minimum.at(best_rank, dense, ranks)
    is_best = ranks == best_rank[dense]

    best_reward = np.full(n_groups, -np.inf)
    np.maximum.at(best_reward, dense[is_best], rewards[is_best])
    other_reward = np.full(n_groups, -np.inf)
    np.maximum.at(other_reward, dense[~is_best], rewards[~is_best])
    has_other = np.bincount(dense[~is_best], minlength=n_groups) > 0
    if not has_other.any():
        return None
    return float(np.mean(best_reward[has_other] > other_reward[has_other]))


class _FitData:
    """Validated inputs of one ``fit`` call."""

    def __init__(
        self,
        X: np.ndarray,
        unique_groups: np.ndarray,
        codes: np.ndarray,
        ranks: np.ndarray,
        margins: np.ndarray,
        base: np.ndarray | None,
    ) -> None:
        self.X = X
        self.unique_groups = unique_groups
        self.codes = codes
        self.n_groups = int(unique_groups.shape[0])
        self.ranks = ranks
        self.margins = margins
        self.base = base

    @classmethod
    def from_inputs(
        cls,
        ranker: PairwiseHingeRanker,
        X: npt.ArrayLike,
        groups: npt.ArrayLike,
        ranks: npt.ArrayLike,
        margins: npt.ArrayLike | None,
        base_rewards: npt.ArrayLike | None,
    ) -> _FitData:
        features = _validate_features(X)
        n_rows = features.shape[0]
        if n_rows == 0:
            raise ValueError("X has no rows; fit needs graded completions")
        unique_groups, codes = encode_groups(groups)
        if codes.shape[0] != n_rows:
            raise ValueError(f"groups has {codes.shape[0]} values, expected {n_rows}")
        rank_array = validate_ranks(ranks, n_rows)
        if margins is None:
            margin_array = np.full(n_rows, float(ranker.margin))
        else:
            margin_array = validate_margins(margins, n_rows)
        base = None
        if base_rewards is not None:
            if ranker.cross_prompt:
                raise ValueError(
                    "cross_prompt=True cannot be used with base_rewards: a base "
                    "reward model's scores are only comparable between "
                    "completions of the same prompt. Fit without base_rewards "
                    "or with cross_prompt=False"
                )
            base = _validate_base_rewards(base_rewards, n_rows)
        return cls(features, unique_groups, codes, rank_array, margin_array, base)


_DEFAULTS: dict[str, Any] = {
    name: PairwiseHingeRanker.__init__.__kwdefaults__[name] for name in _PARAM_NAMES
}


def _same_value(value: Any, default: Any) -> bool:
    return type(value) is type(default) and value == default


def _validate_features(X: npt.ArrayLike) -> np.ndarray:
    array = np.asarray(X, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(
            f"X must be a 2-D array (completions by features), got shape {array.shape}"
        )
    if array.shape[1] == 0:
        raise ValueError("X must have at least one feature column")
    if not np.all(np.isfinite(array)):
        raise ValueError("X contains NaN or infinite values")
    return array


def _validate_base_rewards(base_rewards: npt.ArrayLike, n_rows: int) -> np.ndarray:
    array = np.asarray(base_rewards, dtype=np.float64)
    if array.shape != (n_rows,):
        raise ValueError(
            f"base_rewards must be a 1-D array of {n_rows} values, got shape "
            f"{array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("base_rewards contains NaN or infinite values")
    return array


def _check_number(name: str, value: Any, *, low: float, low_inclusive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    too_low = value < low if low_inclusive else value <= low
    if not math.isfinite(value) or too_low:
        bound = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be finite and {bound} {low:g}, got {value!r}")


def _check_count(name: str, value: Any, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        suffix = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a positive int{suffix}, got {value!r}")
