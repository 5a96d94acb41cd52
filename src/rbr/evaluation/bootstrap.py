"""Percentile bootstrap confidence intervals for rates, resampling prompts.

Completions to one prompt are not independent: a model that refuses a prompt
tends to refuse it in every sample. Resampling completions one by one would
then give intervals that are too narrow. :class:`PromptBootstrap` resamples
whole units (prompts) with replacement instead, within strata (such as
response types), so every resample keeps the number of prompts of each
stratum. A rate is the sum of its per-prompt numerators over the sum of its
per-prompt denominators, so a prompt with several completions weighs by its
number of completions, as in the point estimate.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A rate with its percentile bootstrap interval.

    Attributes:
        value: Point estimate on the full data, None when undefined (no
            denominator).
        ci_low: Lower interval bound, None when no resample defines the rate.
        ci_high: Upper interval bound, None likewise.
        numerator: Count (or weight) of successes behind ``value``.
        denominator: Count behind ``value``.
        n_undefined: Resamples in which the rate was undefined (denominator
            zero). They are left out of the percentiles.
    """

    value: float | None
    ci_low: float | None
    ci_high: float | None
    numerator: float = math.nan
    denominator: float = math.nan
    n_undefined: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "numerator": _count_or_none(self.numerator),
            "denominator": _count_or_none(self.denominator),
            "n_undefined_resamples": self.n_undefined,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Estimate:
        """Rebuild an estimate written by :meth:`to_dict`."""
        numerator = data.get("numerator")
        denominator = data.get("denominator")
        return cls(
            value=data.get("value"),
            ci_low=data.get("ci_low"),
            ci_high=data.get("ci_high"),
            numerator=math.nan if numerator is None else float(numerator),
            denominator=math.nan if denominator is None else float(denominator),
            n_undefined=int(data.get("n_undefined_resamples", 0)),
        )


def _count_or_none(value: float) -> float | int | None:
    if math.isnan(value):
        return None
    return int(value) if float(value).is_integer() else float(value)


@dataclass(frozen=True)
class BootstrapSettings:
    """Settings of the bootstrap intervals."""

    n_resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    confidence: float = DEFAULT_CONFIDENCE

    def make(self, strata: Sequence[Hashable]) -> PromptBootstrap:
        """Return a :class:`PromptBootstrap` over units with these ``strata``."""
        return PromptBootstrap(
            strata,
            n_resamples=self.n_resamples,
            seed=self.seed,
            confidence=self.confidence,
        )

    def to_dict(self, *, strata: str) -> dict[str, Any]:
        """Describe the settings for a result file; ``strata`` names the strata."""
        return {
            "method": "percentile bootstrap over prompts, resampled with "
            f"replacement within each {strata}",
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "confidence": self.confidence,
        }


class PromptBootstrap:
    """Shared resamples of prompts, reused for every rate of one data set.

    All rates computed from one instance use the same resamples, so derived
    quantities (an F1 of two rates, a difference of two rates) get their
    intervals from paired replicates.

    Args:
        strata: Stratum of each unit (prompt), such as its response type.
            Units are resampled with replacement within their stratum.
        n_resamples: Number of bootstrap resamples.
        seed: Seed of the random generator, so intervals are reproducible.
        confidence: Coverage of the two-sided percentile interval, in (0, 1).

    Raises:
        ValueError: When ``n_resamples`` is below 1, ``confidence`` is outside
            (0, 1), or there are no units.
    """

    def __init__(
        self,
        strata: Sequence[Hashable],
        *,
        n_resamples: int = DEFAULT_RESAMPLES,
        seed: int = 0,
        confidence: float = DEFAULT_CONFIDENCE,
    ) -> None:
        if n_resamples < 1:
            raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
        if len(strata) == 0:
            raise ValueError("the bootstrap needs at least one prompt; got none")
        self.n_units = len(strata)
        self.n_resamples = n_resamples
        self.seed = seed
        self.confidence = confidence
        self._counts = _stratified_counts(strata, n_resamples, seed)

    def replicates(
        self, numerators: np.ndarray, denominators: np.ndarray
    ) -> np.ndarray:
        """Return the rate in each resample, NaN where its denominator is zero.

        Args:
            numerators: Per-unit numerator, shape ``(n_units,)``.
            denominators: Per-unit denominator, same shape.
        """
        numerators = self._check(numerators)
        denominators = self._check(denominators)
        top = self._counts @ numerators
        bottom = self._counts @ denominators
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), np.nan)

    def rate(self, numerators: np.ndarray, denominators: np.ndarray) -> Estimate:
        """Return ``sum(numerators) / sum(denominators)`` with its interval."""
        numerators = self._check(numerators)
        denominators = self._check(denominators)
        top = float(numerators.sum())
        bottom = float(denominators.sum())
        value = top / bottom if bottom > 0 else None
        replicates = self.replicates(numerators, denominators)
        return self.interval(value, replicates, numerator=top, denominator=bottom)

    def interval(
        self,
        value: float | None,
        replicates: np.ndarray,
        *,
        numerator: float = math.nan,
        denominator: float = math.nan,
    ) -> Estimate:
        """Wrap a point estimate and its replicates into an :class:`Estimate`.

        The interval bounds are the ``(1 - confidence) / 2`` and
        ``(1 + confidence) / 2`` quantiles of the defined (non-NaN) replicates.
        """
        defined = replicates[~np.isnan(replicates)]
        n_undefined = int(replicates.size - defined.size)
        if value is None or defined.size == 0:
            return Estimate(value, None, None, numerator, denominator, n_undefined)
        low, high = percentile_interval(defined, self.confidence)
        return Estimate(value, low, high, numerator, denominator, n_undefined)

    def _check(self, values: np.ndarray) -> np.ndarray:
        array = np.asarray(values, dtype=float)
        if array.shape != (self.n_units,):
            raise ValueError(
                f"expected one value per prompt, shape ({self.n_units},), "
                f"got {array.shape}"
            )
        return array


def group_units(
    keys: Sequence[Hashable], strata: Sequence[Hashable]
) -> tuple[np.ndarray, list[str]]:
    """Number the distinct keys (prompts) of per-row data in order of appearance.

    Args:
        keys: Unit key of each row, such as its prompt id.
        strata: Stratum of each row. A unit takes the stratum of its first row.

    Returns:
        The unit index of each row, and the stratum of each unit.
    """
    position: dict[Hashable, int] = {}
    unit_strata: list[str] = []
    units = []
    for key, stratum in zip(keys, strata, strict=True):
        if key not in position:
            position[key] = len(unit_strata)
            unit_strata.append(str(stratum))
        units.append(position[key])
    return np.array(units, dtype=int), unit_strata


def sum_by_unit(units: np.ndarray, values: np.ndarray, n_units: int) -> np.ndarray:
    """Return the sum of per-row ``values`` for each unit index in ``units``."""
    return np.bincount(
        np.asarray(units, dtype=int),
        weights=np.asarray(values, dtype=float),
        minlength=n_units,
    )


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Return the central ``confidence`` quantile range of ``values``."""
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def harmonic_mean(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Return ``2ab / (a + b)`` elementwise: 0 where both are 0, NaN where either is."""
    first = np.asarray(first, dtype=float)
    second = np.asarray(second, dtype=float)
    total = first + second
    with np.errstate(invalid="ignore", divide="ignore"):
        result = np.where(total > 0, 2.0 * first * second / total, 0.0)
    return np.where(np.isnan(total), np.nan, result)


def _stratified_counts(
    strata: Sequence[Hashable], n_resamples: int, seed: int
) -> np.ndarray:
    """Return how often each unit is drawn in each resample, shape ``(B, n)``.

    Each stratum of ``m`` units gets ``m`` draws with replacement per
    resample. Memory is ``8 * n_resamples * n_units`` bytes.
    """
    rng = np.random.default_rng(seed)
    labels = [str(value) for value in strata]
    counts = np.zeros((n_resamples, len(labels)))
    for stratum in sorted(set(labels)):
        members = np.array([i for i, value in enumerate(labels) if value == stratum])
        size = members.size
        draws = rng.integers(0, size, size=(n_resamples, size))
        # Offset each resample's draws into its own block so one bincount
        # counts every resample at once.
        offsets = np.arange(n_resamples)[:, None] * size
        tally = np.bincount((draws + offsets).ravel(), minlength=n_resamples * size)
        counts[:, members] = tally.reshape(n_resamples, size)
    return counts
