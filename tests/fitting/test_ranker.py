"""Tests of PairwiseHingeRanker: the estimator contract, the split and metrics."""

from __future__ import annotations

import numpy as np
import pytest
from ranking_reference import brute_force_pairs, make_tiered_data

from rbr.errors import NotFittedError
from rbr.fitting.estimator import (
    DEFAULT_L2,
    ConvergenceWarning,
    PairwiseHingeRanker,
    top1_share,
)
from rbr.fitting.pairs import build_pairs
from rbr.fitting.solver import solve_pairwise_hinge


def fitted(seed: int = 0, **params) -> tuple[PairwiseHingeRanker, object]:
    data = make_tiered_data(seed)
    params.setdefault("random_state", 0)
    params.setdefault("validation_fraction", 0.25)
    ranker = PairwiseHingeRanker(**params)
    ranker.fit(data.X, groups=data.groups, ranks=data.ranks)
    return ranker, data


def test_decision_function_before_fit_raises() -> None:
    ranker = PairwiseHingeRanker()

    with pytest.raises(NotFittedError, match="not fitted"):
        ranker.decision_function(np.zeros((2, 3)))


def test_fit_returns_self() -> None:
    data = make_tiered_data(0)
    ranker = PairwiseHingeRanker(random_state=0)

    assert ranker.fit(data.X, groups=data.groups, ranks=data.ranks) is ranker


def test_params_unchanged_by_fit() -> None:
    params = {
        "l2": 0.01,
        "margin": 2.0,
        "validation_fraction": 0.2,
        "cross_prompt": False,
        "max_pairs": 500,
        "tol": 1e-7,
        "max_iter": 50,
        "random_state": 3,
    }
    ranker = PairwiseHingeRanker(**params)
    data = make_tiered_data(1)

    ranker.fit(data.X, groups=data.groups, ranks=data.ranks)

    assert ranker.get_params() == params


def test_defaults_are_documented_values() -> None:
    params = PairwiseHingeRanker().get_params()

    assert params["l2"] == DEFAULT_L2
    assert params["margin"] == 1.0
    assert params["cross_prompt"] is False
    assert params["max_pairs"] is None
    assert params["random_state"] is None


def test_set_params_and_repr() -> None:
    ranker = PairwiseHingeRanker()

    assert ranker.set_params(l2=0.5, random_state=4) is ranker
    assert ranker.l2 == 0.5
    assert repr(ranker) == "PairwiseHingeRanker(l2=0.5, random_state=4)"
    with pytest.raises(ValueError, match="invalid parameter 'alpha'"):
        ranker.set_params(alpha=1.0)


def test_sklearn_clone_copies_params() -> None:
    base = pytest.importorskip("sklearn.base")
    ranker = PairwiseHingeRanker(l2=0.3, random_state=2)

    copy = base.clone(ranker)

    assert copy is not ranker
    assert copy.get_params() == ranker.get_params()


def test_fit_learns_tier_order() -> None:
    ranker, _ = fitted(0)

    assert ranker.converged_
    assert ranker.optimality_gap_ <= 1e-6
    assert ranker.validation_pairwise_accuracy_ > 0.9
    assert ranker.validation_top1_ > 0.8
    assert ranker.n_features_in_ == 6
    assert ranker.coef_.shape == (6,)


def test_train_loss_and_objective_agree_with_solver() -> None:
    ranker, data = fitted(1, l2=0.02)
    train = ~np.isin(data.groups, ranker.validation_groups_)
    pairs = build_pairs(data.groups[train], data.ranks[train])

    solution = solve_pairwise_hinge(data.X[train], pairs, l2=0.02)

    assert ranker.n_train_pairs_ == len(pairs)
    assert ranker.objective_ == pytest.approx(solution.objective, abs=2e-6)
    penalty = 0.01 * float(ranker.coef_ @ ranker.coef_)
    assert ranker.train_loss_ == pytest.approx(ranker.objective_ - penalty)


def test_validation_metrics_match_brute_force() -> None:
    ranker, data = fitted(2, validation_fraction=0.3)
    held = np.flatnonzero(np.isin(data.groups, ranker.validation_groups_))
    rewards = ranker.decision_function(data.X[held])
    local_pairs = brute_force_pairs(data.groups[held], data.ranks[held])

    gaps = np.array([rewards[a] - rewards[b] for a, b in local_pairs])

    assert ranker.n_validation_pairs_ == len(local_pairs)
    assert ranker.validation_pairwise_accuracy_ == pytest.approx(np.mean(gaps > 0))
    assert ranker.validation_loss_ == pytest.approx(np.mean(np.maximum(1 - gaps, 0)))


def test_split_is_by_prompt() -> None:
    ranker, data = fitted(3, validation_fraction=0.25)
    n_prompts = len(np.unique(data.groups))

    held = ranker.validation_groups_

    assert len(held) == int(np.ceil(0.25 * n_prompts))
    assert set(held.tolist()) <= set(data.groups.tolist())
    assert len(np.unique(held)) == len(held)


def test_same_seed_reproduces_split_and_coef() -> None:
    first, _ = fitted(4, random_state=11)
    again, _ = fitted(4, random_state=11)

    assert np.array_equal(first.validation_groups_, again.validation_groups_)
    assert np.array_equal(first.coef_, again.coef_)


def test_other_seed_changes_split() -> None:
    first, _ = fitted(4, random_state=11)
    other, _ = fitted(4, random_state=12)

    assert not np.array_equal(first.validation_groups_, other.validation_groups_)


def test_zero_validation_fraction_has_no_metrics() -> None:
    ranker, data = fitted(5, validation_fraction=0.0)

    assert ranker.validation_loss_ is None
    assert ranker.validation_pairwise_accuracy_ is None
    assert ranker.validation_top1_ is None
    assert ranker.n_validation_pairs_ == 0
    assert len(ranker.validation_groups_) == 0
    assert ranker.n_train_pairs_ == len(build_pairs(data.groups, data.ranks))


def test_margin_param_equals_per_row_margins() -> None:
    data = make_tiered_data(6)
    by_param = PairwiseHingeRanker(margin=2.5, random_state=1)
    by_row = PairwiseHingeRanker(random_state=1)

    by_param.fit(data.X, groups=data.groups, ranks=data.ranks)
    by_row.fit(
        data.X,
        groups=data.groups,
        ranks=data.ranks,
        margins=np.full(len(data.ranks), 2.5),
    )

    np.testing.assert_array_equal(by_param.coef_, by_row.coef_)


def test_base_rewards_shift_decision_function() -> None:
    data = make_tiered_data(7)
    base = np.random.default_rng(0).normal(0.0, 0.1, len(data.ranks))
    ranker = PairwiseHingeRanker(random_state=0)

    ranker.fit(data.X, groups=data.groups, ranks=data.ranks, base_rewards=base)

    expected = data.X @ ranker.coef_ + base
    np.testing.assert_allclose(ranker.decision_function(data.X, base), expected)


def test_prompt_constant_base_rewards_change_nothing() -> None:
    data = make_tiered_data(8)
    base = 5.0 * np.sin(data.groups.astype(float))
    plain = PairwiseHingeRanker(random_state=0, tol=1e-9)
    shifted = PairwiseHingeRanker(random_state=0, tol=1e-9)

    plain.fit(data.X, groups=data.groups, ranks=data.ranks)
    shifted.fit(data.X, groups=data.groups, ranks=data.ranks, base_rewards=base)

    np.testing.assert_allclose(shifted.coef_, plain.coef_, atol=1e-5)


def test_string_prompt_ids_accepted() -> None:
    data = make_tiered_data(9)
    names = np.array([f"prompt-{g}" for g in data.groups])
    ranker = PairwiseHingeRanker(random_state=0)

    ranker.fit(data.X, groups=names, ranks=data.ranks)

    assert ranker.validation_groups_.dtype.kind == "U"
    assert all(name.startswith("prompt-") for name in ranker.validation_groups_)


def test_cross_prompt_fits_one_completion_per_prompt() -> None:
    data = make_tiered_data(10, n_prompts=300, tier_sizes=(1, 1, 1))
    keep = np.arange(len(data.ranks)) % 3 == np.arange(len(data.ranks)) // 3 % 3
    X, ranks = data.X[keep], data.ranks[keep]
    prompts = np.arange(len(ranks))
    ranker = PairwiseHingeRanker(cross_prompt=True, random_state=0)

    ranker.fit(X, groups=prompts, ranks=ranks)

    assert ranker.n_train_pairs_ > 0
    assert ranker.validation_pairwise_accuracy_ > 0.9
    assert ranker.validation_top1_ is None


def test_one_completion_per_prompt_needs_cross_prompt() -> None:
    ranks = np.arange(40) % 3
    X = np.random.default_rng(0).random((40, 3))

    with pytest.raises(ValueError, match="cross_prompt=True"):
        PairwiseHingeRanker().fit(X, groups=np.arange(40), ranks=ranks)


def test_cross_prompt_with_base_rewards_rejected() -> None:
    data = make_tiered_data(11)
    ranker = PairwiseHingeRanker(cross_prompt=True)

    with pytest.raises(ValueError, match="only comparable"):
        ranker.fit(
            data.X,
            groups=data.groups,
            ranks=data.ranks,
            base_rewards=np.zeros(len(data.ranks)),
        )


def test_max_pairs_caps_both_splits() -> None:
    ranker, _ = fitted(12, max_pairs=300, validation_fraction=0.5)

    assert ranker.n_train_pairs_ == 300
    assert ranker.n_validation_pairs_ == 300


def test_not_converged_warns() -> None:
    data = make_tiered_data(13)
    ranker = PairwiseHingeRanker(max_iter=1, tol=1e-12, random_state=0)

    with pytest.warns(ConvergenceWarning, match="increase max_iter"):
        ranker.fit(data.X, groups=data.groups, ranks=data.ranks)

    assert ranker.converged_ is False
    assert ranker.n_iter_ == 1


def test_decision_function_checks_width() -> None:
    ranker, _ = fitted(14)

    with pytest.raises(ValueError, match="fitted with 6"):
        ranker.decision_function(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="base_rewards"):
        ranker.decision_function(np.zeros((2, 6)), np.zeros(3))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"l2": 0.0}, "l2 must be"),
        ({"l2": -1.0}, "l2 must be"),
        ({"l2": "big"}, "l2 must be a number"),
        ({"margin": -0.5}, "margin must be"),
        ({"tol": 0.0}, "tol must be"),
        ({"validation_fraction": 1.0}, r"validation_fraction must be in \[0, 1\)"),
        ({"validation_fraction": -0.1}, "validation_fraction must be"),
        ({"max_iter": 0}, "max_iter"),
        ({"max_pairs": 0}, "max_pairs"),
        ({"cross_prompt": "yes"}, "cross_prompt"),
        ({"random_state": "seed"}, "random_state"),
        ({"validation_fraction": 0.99}, "leaving none to train on"),
    ],
)
def test_invalid_params_rejected_at_fit(params: dict, message: str) -> None:
    data = make_tiered_data(15, n_prompts=10)
    ranker = PairwiseHingeRanker(**params)

    with pytest.raises(ValueError, match=message):
        ranker.fit(data.X, groups=data.groups, ranks=data.ranks)


def bad_inputs() -> list[tuple[dict, str]]:
    data = make_tiered_data(16, n_prompts=10)
    n_rows = len(data.ranks)
    good = {"X": data.X, "groups": data.groups, "ranks": data.ranks}
    nan_X = data.X.copy()
    nan_X[0, 0] = np.nan
    return [
        ({**good, "X": data.X[:, 0]}, "X must be a 2-D"),
        ({**good, "X": nan_X}, "NaN"),
        ({**good, "X": data.X[:0]}, "no rows"),
        ({**good, "groups": data.groups[:-1]}, "groups has"),
        ({**good, "ranks": data.ranks + 0.5}, "whole numbers"),
        ({**good, "margins": np.full(n_rows, -1.0)}, "margins must be >= 0"),
        ({**good, "base_rewards": np.zeros(n_rows + 1)}, "base_rewards must be"),
        ({**good, "base_rewards": np.full(n_rows, np.nan)}, "base_rewards"),
    ]


@pytest.mark.parametrize(("inputs", "message"), bad_inputs())
def test_invalid_inputs_rejected(inputs: dict, message: str) -> None:
    X = inputs.pop("X")

    with pytest.raises(ValueError, match=message):
        PairwiseHingeRanker(random_state=0).fit(X, **inputs)


def test_top1_share_counts_ties_as_errors() -> None:
    codes = np.array([0, 0, 0, 1, 1, 2, 2, 3])
    ranks = np.array([0, 0, 1, 0, 1, 0, 1, 0])
    rewards = np.array([1.0, 3.0, 2.0, 5.0, 5.0, 0.0, -1.0, 9.0])

    share = top1_share(codes, ranks, rewards)

    # Prompt 0 is right (3 > 2), prompt 1 ties (wrong), prompt 2 is right and
    # prompt 3 has a single rank, so it does not count.
    assert share == pytest.approx(2 / 3)


def test_top1_share_none_without_two_ranks() -> None:
    share = top1_share(np.array([0, 1, 1]), np.array([0, 2, 2]), np.zeros(3))

    assert share is None
