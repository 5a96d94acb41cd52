"""The rule-based reward: R_total = R_base + w . features, per response type."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rbr.data.types import Sample
from rbr.errors import RbrError
from rbr.features.space import FeatureSpace, feature_spaces
from rbr.fitting.weights import RBRWeights
from rbr.graders.base import Grader, Unscored
from rbr.policy.spec import CLASS_ORDER, Policy

logger = logging.getLogger(__name__)


class BaseRewardError(RbrError):
    """A base reward model could not be loaded or failed to score a batch."""


class BaseReward(Protocol):
    """A helpful-only reward model score added to the RBR term."""

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        """Return one float per sample."""
        ...


@dataclass
class RewardBreakdown:
    """The reward of one sample and the parts it is made of.

    Attributes:
        total: Base term plus RBR term; None when an RBR applies but a needed
            proposition could not be scored.
        rbr: The RBR term ``w . features``; None when no RBR applies or it
            could not be computed.
        base: The base reward, or 0.0 without a base reward model.
        response_type: Canonical response type, or None when the sample has no
            safety response type (then ``total == base``).
        propositions: Proposition probabilities used by the features.
        classes: Probabilities of the five completion classes.
        unscored: Propositions the grader could not score.
    """

    total: float | None
    rbr: float | None
    base: float
    response_type: str | None
    propositions: dict[str, float] = field(default_factory=dict)
    classes: dict[str, float] = field(default_factory=dict)
    unscored: list[Unscored] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "rbr": self.rbr,
            "base": self.base,
            "response_type": self.response_type,
            "propositions": self.propositions,
            "classes": self.classes,
            "unscored": [
                {"proposition": u.proposition, "reason": u.reason, "detail": u.detail}
                for u in self.unscored
            ],
        }


class RuleBasedReward:
    """Score completions with a fitted rule-based reward.

    Args:
        policy: The policy the weights were fitted with.
        weights: Fitted weights; checked against the policy and the grader.
        grader: Produces proposition probabilities.
        base_reward: Optional helpful-only reward model; without one the base
            term is zero.
        allow_grader_mismatch: Accept weights fitted with a different grader.

    Raises:
        WeightsError: When the weights do not match the policy or grader.
    """

    def __init__(
        self,
        policy: Policy,
        weights: RBRWeights,
        grader: Grader,
        base_reward: BaseReward | None = None,
        *,
        allow_grader_mismatch: bool = False,
    ) -> None:
        identity = None if allow_grader_mismatch else grader.identity
        weights.check_compatible(policy, identity)
        self.policy = policy
        self.weights = weights
        self.grader = grader
        self.base_reward = base_reward
        self._spaces = feature_spaces(policy)

    def __call__(self, samples: Sequence[Sample]) -> list[float | None]:
        """Return the total reward of each sample (None where it could not be scored)."""
        return [item.total for item in self.score(samples)]

    def score(
        self, samples: Sequence[Sample], base_rewards: Sequence[float] | None = None
    ) -> list[RewardBreakdown]:
        """Grade and score a batch, returning the breakdown of every sample.

        Args:
            samples: Conversations with completions. A sample's
                ``response_type`` selects its weights; None means no RBR term.
            base_rewards: Precomputed base rewards, one per sample; overrides
                the base reward model when given.
        """
        base = self._base(samples, base_rewards)
        results: list[RewardBreakdown | None] = [None] * len(samples)
        by_type: dict[str, list[int]] = {}
        for i, sample in enumerate(samples):
            if sample.response_type is None:
                results[i] = RewardBreakdown(float(base[i]), None, float(base[i]), None)
                continue
            name = self.policy.response_type(sample.response_type).name
            by_type.setdefault(name, []).append(i)
        for name, positions in by_type.items():
            self._score_type(name, positions, samples, base, results)
        return [r for r in results if r is not None]

    def _base(
        self, samples: Sequence[Sample], base_rewards: Sequence[float] | None
    ) -> np.ndarray:
        if base_rewards is not None:
            if len(base_rewards) != len(samples):
                raise ValueError(
                    f"got {len(base_rewards)} base rewards for {len(samples)} samples"
                )
            return np.asarray(base_rewards, dtype=float)
        if self.base_reward is None:
            return np.zeros(len(samples))
        return np.asarray(self.base_reward.score(samples), dtype=float)

    def _score_type(
        self,
        name: str,
        positions: list[int],
        samples: Sequence[Sample],
        base: np.ndarray,
        results: list[RewardBreakdown | None],
    ) -> None:
        space: FeatureSpace = self._spaces[name]
        coef = self.weights.for_type(name).as_array()
        batch = [samples[i] for i in positions]
        propositions = [self.policy.propositions[p] for p in space.propositions]
        graded = self.grader.grade(batch, propositions)
        complete = graded.complete_rows()
        missing: dict[int, list[Unscored]] = {}
        for item in graded.unscored:
            missing.setdefault(item.sample_index, []).append(item)
        probabilities = np.where(
            np.isnan(graded.probabilities), 0.0, graded.probabilities
        )
        features = space.transform(probabilities)
        classes = features[:, len(space.propositions) :]
        rbr = features @ coef
        for k, i in enumerate(positions):
            props = {
                p: float(graded.probabilities[k, j])
                for j, p in enumerate(space.propositions)
            }
            class_probs = {c: float(classes[k, j]) for j, c in enumerate(CLASS_ORDER)}
            if complete[k]:
                term = float(rbr[k])
                results[i] = RewardBreakdown(
                    term + float(base[i]),
                    term,
                    float(base[i]),
                    name,
                    props,
                    class_probs,
                )
            else:
                results[i] = RewardBreakdown(
                    None, None, float(base[i]), name, props, {}, missing.get(k, [])
                )
