"""Tests of pair enumeration and sampling."""

from __future__ import annotations

import numpy as np
import pytest
from ranking_reference import brute_force_pairs

from rbr.fitting.pairs import MAX_LISTED_PAIRS, Pairs, build_pairs


def as_set(pairs: Pairs) -> set[tuple[int, int]]:
    return set(zip(pairs.better.tolist(), pairs.worse.tolist(), strict=True))


@pytest.mark.parametrize("seed", range(6))
def test_pairs_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_rows = int(rng.integers(1, 120))
    groups = rng.integers(0, int(rng.integers(1, 15)), n_rows)
    ranks = rng.integers(-2, 4, n_rows)

    pairs = build_pairs(groups, ranks)

    expected = brute_force_pairs(groups, ranks)
    assert as_set(pairs) == expected
    assert len(pairs) == len(expected)


def test_pairs_with_string_groups() -> None:
    groups = np.array(["p2", "p1", "p2", "p1", "p2"])
    ranks = np.array([1, 0, 0, 2, 1])

    pairs = build_pairs(groups, ranks)

    assert as_set(pairs) == {(2, 0), (2, 4), (1, 3)}


def test_equal_ranks_form_no_pair() -> None:
    pairs = build_pairs(np.zeros(5, dtype=int), np.full(5, 3))

    assert len(pairs) == 0
    assert pairs.better.dtype == np.int64
    assert pairs.margin.dtype == np.float64


def test_single_rows_form_no_pair() -> None:
    pairs = build_pairs(np.arange(4), np.arange(4))

    assert len(pairs) == 0


def test_empty_input_gives_no_pairs() -> None:
    pairs = build_pairs(np.array([], dtype=int), np.array([], dtype=int))

    assert len(pairs) == 0


def test_pair_margin_is_better_rows_margin() -> None:
    groups = np.array([0, 0, 0, 1, 1])
    ranks = np.array([0, 1, 2, 1, 0])
    margins = np.array([0.5, 2.0, 9.0, 3.0, 4.0])

    pairs = build_pairs(groups, ranks, margins)

    keys = zip(pairs.better.tolist(), pairs.worse.tolist(), strict=True)
    by_pair = dict(zip(keys, pairs.margin.tolist(), strict=True))
    assert by_pair == {(0, 1): 0.5, (0, 2): 0.5, (1, 2): 2.0, (4, 3): 4.0}


def test_default_margin_is_one() -> None:
    pairs = build_pairs(np.zeros(4, dtype=int), np.arange(4))

    assert np.all(pairs.margin == 1.0)


def test_whole_float_ranks_accepted() -> None:
    pairs = build_pairs(np.zeros(3, dtype=int), np.array([0.0, 1.0, 2.0]))

    assert as_set(pairs) == {(0, 1), (0, 2), (1, 2)}


def test_max_pairs_samples_distinct_valid_pairs() -> None:
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 5, 300)
    ranks = rng.integers(0, 4, 300)
    everything = brute_force_pairs(groups, ranks)

    pairs = build_pairs(groups, ranks, max_pairs=500, random_state=1)

    sampled = as_set(pairs)
    assert len(pairs) == 500
    assert len(sampled) == 500
    assert sampled <= everything


def test_max_pairs_is_reproducible_under_seed() -> None:
    rng = np.random.default_rng(4)
    groups = rng.integers(0, 3, 200)
    ranks = rng.integers(0, 5, 200)

    first = build_pairs(groups, ranks, max_pairs=100, random_state=7)
    again = build_pairs(groups, ranks, max_pairs=100, random_state=7)
    other = build_pairs(groups, ranks, max_pairs=100, random_state=8)

    assert np.array_equal(first.better, again.better)
    assert np.array_equal(first.worse, again.worse)
    assert as_set(first) != as_set(other)


def test_max_pairs_above_total_keeps_all() -> None:
    groups = np.array([0, 0, 0, 1, 1])
    ranks = np.array([0, 1, 2, 0, 1])

    pairs = build_pairs(groups, ranks, max_pairs=1000, random_state=0)

    assert as_set(pairs) == brute_force_pairs(groups, ranks)


def test_max_pairs_samples_huge_group_without_listing() -> None:
    # One group of 200,000 rows yields about 1.6e10 pairs, far too many to list.
    rng = np.random.default_rng(5)
    ranks = rng.integers(0, 5, 200_000)

    pairs = build_pairs(np.zeros(200_000), ranks, max_pairs=2000, random_state=0)

    assert len(pairs) == 2000
    assert np.all(ranks[pairs.better] < ranks[pairs.worse])
    assert len(as_set(pairs)) == 2000


def test_too_many_pairs_without_max_pairs_rejected() -> None:
    n_rows = 50_000
    assert n_rows * (n_rows - 1) // 2 > MAX_LISTED_PAIRS

    with pytest.raises(ValueError, match="max_pairs"):
        build_pairs(np.zeros(n_rows), np.arange(n_rows))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group_ids": np.zeros((2, 2)), "ranks": np.zeros(4)}, "group_ids"),
        ({"group_ids": np.zeros(3), "ranks": np.zeros((3, 1))}, "ranks"),
        ({"group_ids": np.zeros(3), "ranks": np.zeros(2)}, "ranks has 2"),
        ({"group_ids": np.zeros(2), "ranks": np.array([0.5, 1.0])}, "whole"),
        ({"group_ids": np.zeros(2), "ranks": np.array([0.0, np.nan])}, "whole"),
        ({"group_ids": np.zeros(2), "ranks": np.array(["a", "b"])}, "ranks"),
        ({"group_ids": np.zeros(2), "ranks": np.array([True, False])}, "ranks"),
        (
            {"group_ids": np.array([1, "a"], dtype=object), "ranks": np.zeros(2)},
            "group_ids",
        ),
        (
            {"group_ids": np.zeros(2), "ranks": np.arange(2), "margins": [1.0]},
            "margins",
        ),
        (
            {"group_ids": np.zeros(2), "ranks": np.arange(2), "margins": [1.0, -1]},
            "margins must be >= 0",
        ),
        (
            {"group_ids": np.zeros(2), "ranks": np.arange(2), "margins": [1, np.inf]},
            "margins",
        ),
        (
            {"group_ids": np.zeros(2), "ranks": np.arange(2), "max_pairs": 0},
            "max_pairs",
        ),
        (
            {"group_ids": np.zeros(2), "ranks": np.arange(2), "max_pairs": 2.5},
            "max_pairs",
        ),
        (
            {"group_ids": np.zeros(2), "ranks": np.arange(2), "max_pairs": True},
            "max_pairs",
        ),
    ],
)
def test_invalid_input_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_pairs(**kwargs)


def test_invalid_random_state_rejected() -> None:
    with pytest.raises(ValueError, match="random_state"):
        build_pairs(np.zeros(4), np.arange(4), max_pairs=2, random_state="seed")
