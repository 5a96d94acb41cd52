"""Percentile bootstrap over prompts: coverage, stratification and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rbr.evaluation.bootstrap import (
    Estimate,
    PromptBootstrap,
    harmonic_mean,
    sum_by_unit,
)

TRUE_RATE = 0.3
N_PROMPTS = 60
COMPLETIONS_PER_PROMPT = 5
REPETITIONS = 200
# Observed coverage over 200 repetitions is binomial. A method with true
# coverage 0.95 falls outside the band 0.90-0.99 with probability 0.002, and
# one with true coverage 0.80 falls inside it with probability 0.0001.
COVERAGE_BAND = (0.90, 0.99)


def clustered_sample(rng: np.random.Generator) -> np.ndarray:
    """Return per-completion outcomes where all completions of a prompt agree.

    Each prompt is unsafe with probability TRUE_RATE, and then all of its
    completions are, so completions are strongly correlated within a prompt.
    """
    per_prompt = rng.random(N_PROMPTS) < TRUE_RATE
    return np.repeat(per_prompt, COMPLETIONS_PER_PROMPT).astype(float)


def coverage(*, resample_prompts: bool, confidence: float = 0.95) -> float:
    """Return how often the interval contains TRUE_RATE over REPETITIONS samples."""
    rng = np.random.default_rng(2024)
    prompt_of = np.repeat(np.arange(N_PROMPTS), COMPLETIONS_PER_PROMPT)
    hits = 0
    for repetition in range(REPETITIONS):
        outcomes = clustered_sample(rng)
        if resample_prompts:
            units = prompt_of
            n_units = N_PROMPTS
        else:
            units = np.arange(outcomes.size)
            n_units = outcomes.size
        bootstrap = PromptBootstrap(
            ["all"] * n_units, n_resamples=200, seed=repetition, confidence=confidence
        )
        estimate = bootstrap.rate(
            sum_by_unit(units, outcomes, n_units),
            sum_by_unit(units, np.ones_like(outcomes), n_units),
        )
        hits += estimate.ci_low <= TRUE_RATE <= estimate.ci_high
    return hits / REPETITIONS


def test_prompt_resampling_covers_true_rate():
    observed = coverage(resample_prompts=True)
    assert COVERAGE_BAND[0] <= observed <= COVERAGE_BAND[1], observed


def test_completion_resampling_fails_same_check():
    # Resampling correlated completions one by one ignores the clustering,
    # so its intervals are about sqrt(5) times too narrow.
    observed = coverage(resample_prompts=False)
    assert observed < COVERAGE_BAND[0], observed


def test_narrow_level_fails_same_check():
    observed = coverage(resample_prompts=True, confidence=0.6)
    assert observed < COVERAGE_BAND[0], observed


def test_strata_keep_their_sizes():
    strata = ["comply"] * 7 + ["refuse"] * 3
    bootstrap = PromptBootstrap(strata, n_resamples=50, seed=1)
    counts = bootstrap._counts
    assert counts.shape == (50, 10)
    assert np.all(counts[:, :7].sum(axis=1) == 7)
    assert np.all(counts[:, 7:].sum(axis=1) == 3)
    assert counts[:, 7:].std() > 0


def test_same_seed_same_interval():
    values = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    ones = np.ones(6)
    first = PromptBootstrap(["a"] * 6, n_resamples=200, seed=5).rate(values, ones)
    second = PromptBootstrap(["a"] * 6, n_resamples=200, seed=5).rate(values, ones)
    assert first == second
    assert first.value == pytest.approx(4 / 6)


def test_rate_pools_completions_per_prompt():
    # Prompt 0 has 3 completions (2 successes), prompt 1 has 1 (0 successes).
    bootstrap = PromptBootstrap(["a", "a"], n_resamples=100, seed=0)
    estimate = bootstrap.rate(np.array([2.0, 0.0]), np.array([3.0, 1.0]))
    assert estimate.value == pytest.approx(0.5)
    assert estimate.numerator == 2.0
    assert estimate.denominator == 4.0
    assert 0.0 <= estimate.ci_low <= estimate.value <= estimate.ci_high <= 2 / 3


def test_undefined_resamples_are_counted():
    # Only prompt 1 counts; a resample that misses it has no denominator.
    bootstrap = PromptBootstrap(["a"] * 4, n_resamples=400, seed=3)
    estimate = bootstrap.rate(np.array([0, 1.0, 0, 0]), np.array([0, 1.0, 0, 0]))
    assert estimate.value == 1.0
    assert 0 < estimate.n_undefined < 400
    assert estimate.ci_low == 1.0


def test_empty_denominator_gives_undefined_estimate():
    bootstrap = PromptBootstrap(["a"] * 3, n_resamples=20, seed=0)
    estimate = bootstrap.rate(np.zeros(3), np.zeros(3))
    assert estimate.value is None
    assert estimate.ci_low is None
    assert estimate.n_undefined == 20


def test_estimate_round_trips_through_dict():
    estimate = Estimate(0.75, 0.5, 0.9, 3.0, 4.0, 2)
    data = estimate.to_dict()
    assert data["numerator"] == 3
    assert isinstance(data["numerator"], int)
    assert Estimate.from_dict(data) == estimate
    empty = Estimate.from_dict(Estimate(None, None, None).to_dict())
    assert empty.value is None
    assert math.isnan(empty.denominator)


def test_harmonic_mean_edge_cases():
    result = harmonic_mean(
        np.array([0.5, 0.0, np.nan, 1.0]), np.array([1.0, 0.0, 0.5, 1.0])
    )
    assert result[0] == pytest.approx(2 * 0.5 / 1.5)
    assert result[1] == 0.0
    assert np.isnan(result[2])
    assert result[3] == 1.0


@pytest.mark.parametrize(
    ("strata", "options", "message"),
    [
        (["a"], {"n_resamples": 0}, "n_resamples"),
        (["a"], {"confidence": 1.0}, "confidence"),
        ([], {}, "at least one prompt"),
    ],
)
def test_invalid_settings_raise(strata, options, message):
    with pytest.raises(ValueError, match=message):
        PromptBootstrap(strata, **options)


def test_wrong_shape_raises():
    bootstrap = PromptBootstrap(["a", "b"], n_resamples=5)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        bootstrap.rate(np.ones(3), np.ones(3))
