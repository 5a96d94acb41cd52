"""The reward an RL loop calls: routing, base reward and RBR in one place.

``R_total = R_base + RBR``. The RBR term applies only to prompts with a
safety response type; the others get the base reward alone. Trainer
integrations and the reward server all score through :class:`RewardPipeline`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import numbers
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rbr.data.types import Message, Sample, prompt_hash
from rbr.errors import RbrError
from rbr.reward.routing import Router, UnlabelledMode
from rbr.reward.rule_based import (
    BaseReward,
    BaseRewardError,
    RewardBreakdown,
    RuleBasedReward,
)

logger = logging.getLogger(__name__)

BaseNormalization = Literal["none", "center", "standardize"]
"""Adjustment of base rewards within the completions of one prompt: none,
minus the prompt's mean, or minus the mean and divided by the standard
deviation (only centered when the deviation is zero)."""

BASE_NORMALIZATIONS: tuple[str, ...] = ("none", "center", "standardize")


class RewardRequestError(RbrError, ValueError):
    """A reward request field has an invalid value."""


def check_base_reward(value: object, *, where: str = "base_reward") -> float | None:
    """Return a caller's base reward as a float, or None when it is absent.

    Args:
        value: None, or a finite real number, NumPy scalars included (bool
            is rejected).
        where: The field name used in the error, such as
            ``sample 3: extra_info['base_reward']``.

    Raises:
        RewardRequestError: When the value is not a finite number.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RewardRequestError(
            f"{where}: expected a finite number or null, got "
            f"{type(value).__name__} {value!r}"
        )
    number = float(value)
    if not math.isfinite(number):
        raise RewardRequestError(
            f"{where}: expected a finite number, got {number!r}; drop the value "
            "or fix the reward that produced it"
        )
    return number


@dataclass(frozen=True, slots=True)
class RewardRequest:
    """One completion to score.

    Attributes:
        prompt: The conversation, ending with the user turn.
        completion: The assistant reply being rewarded.
        response_type: How the prompt should be answered, if known.
        category: The prompt's content-policy category, if known.
        base_reward: A base reward computed elsewhere; overrides the
            pipeline's base reward model for this request.
        request_id: An identifier carried into logs.
    """

    prompt: tuple[Message, ...]
    completion: str
    response_type: str | None = None
    category: str | None = None
    base_reward: float | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        where = f"request {self.request_id}: base_reward" if self.request_id else None
        checked = check_base_reward(self.base_reward, where=where or "base_reward")
        object.__setattr__(self, "base_reward", checked)


class RewardPipeline:
    """Route, add the base reward and score with the RBR.

    Args:
        reward: The fitted rule-based reward (policy, weights and grader).
        router: Decides response types; default routes by the request fields
            only.
        base_reward: Helpful-only reward model; None gives a base of 0 unless
            requests carry their own.
        base_normalization: One of :data:`BASE_NORMALIZATIONS`, applied per
            prompt across the completions in one call.
        base_scale: Multiplies the (normalized) base reward.
    """

    def __init__(
        self,
        reward: RuleBasedReward,
        *,
        router: Router | None = None,
        base_reward: BaseReward | None = None,
        base_normalization: str = "none",
        base_scale: float = 1.0,
    ) -> None:
        if base_normalization not in BASE_NORMALIZATIONS:
            raise ValueError(
                f"unknown base_normalization {base_normalization!r}; use one of "
                f"{', '.join(BASE_NORMALIZATIONS)}"
            )
        self.reward = reward
        self.policy = reward.policy
        self.router = router or Router(reward.policy)
        self.base_reward = base_reward
        self.base_normalization = base_normalization
        self.base_scale = float(base_scale)
        self._lock = threading.Lock()

    def score(
        self,
        requests: Sequence[RewardRequest],
        *,
        unlabelled: UnlabelledMode = "classify",
    ) -> list[RewardBreakdown]:
        """Score a batch; one breakdown per request, in order.

        Args:
            requests: The completions to score.
            unlabelled: How :meth:`Router.route` treats requests with neither
                a response type nor a category. ``classify`` sends them to the
                prompt classifier, and ``no_rbr`` gives them no RBR term.

        Raises:
            RoutingError: When a request's response type cannot be decided.
            ValueError: When ``unlabelled`` is not a known mode.
        """
        if not requests:
            return []
        types = self.router.route(
            [r.prompt for r in requests],
            [r.response_type for r in requests],
            [r.category for r in requests],
            unlabelled=unlabelled,
        )
        samples = [
            Sample(r.prompt, r.completion, t, r.request_id)
            for r, t in zip(requests, types)
        ]
        base = self._base(requests, samples)
        return self.reward.score(samples, base.tolist())

    async def ascore(
        self,
        requests: Sequence[RewardRequest],
        *,
        unlabelled: UnlabelledMode = "classify",
    ) -> list[RewardBreakdown]:
        """Score in a worker thread, one batch at a time, without blocking the loop.

        The arguments are those of :meth:`score`.
        """
        return await asyncio.to_thread(self._score_serially, requests, unlabelled)

    def _score_serially(
        self, requests: Sequence[RewardRequest], unlabelled: UnlabelledMode
    ) -> list[RewardBreakdown]:
        # A thread lock, unlike an asyncio.Lock, is bound to no event loop, so
        # callers that start a new loop per step (asyncio.run) can share it.
        with self._lock:
            return self.score(requests, unlabelled=unlabelled)

    def close(self) -> None:
        """Release the grader and any model the base reward holds."""
        self.reward.grader.close()
        close = getattr(self.base_reward, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> RewardPipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _base(
        self, requests: Sequence[RewardRequest], samples: Sequence[Sample]
    ) -> np.ndarray:
        base = np.zeros(len(requests))
        missing = [i for i, r in enumerate(requests) if r.base_reward is None]
        if self.base_reward is not None and missing:
            scores = np.asarray(
                self.base_reward.score([samples[i] for i in missing]), dtype=float
            )
            if scores.shape != (len(missing),):
                raise ValueError(
                    f"base reward model returned shape {scores.shape} for "
                    f"{len(missing)} samples"
                )
            _check_finite(scores, [requests[i] for i in missing])
            base[missing] = scores
        for i, request in enumerate(requests):
            if request.base_reward is not None:
                base[i] = request.base_reward
        base = normalize_per_prompt(
            base, [prompt_hash(r.prompt) for r in requests], self.base_normalization
        )
        return base * self.base_scale


def _check_finite(scores: np.ndarray, requests: Sequence[RewardRequest]) -> None:
    # Each model checks its own scores with more context; this catches any other
    # BaseReward, because one NaN would reach the trainer as the reward.
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        first = int(bad[0])
        raise BaseRewardError(
            f"the base reward model returned {scores[first]!r} for request "
            f"{requests[first].request_id or first} ({bad.size} of {len(scores)} "
            "scores are not finite); check the reward model"
        )


def normalize_per_prompt(
    values: np.ndarray, groups: Sequence[str], mode: str
) -> np.ndarray:
    """Center or standardize ``values`` within each group of equal keys.

    Args:
        values: One value per item.
        groups: One group key per item (a prompt hash).
        mode: One of :data:`BASE_NORMALIZATIONS`.
    """
    if mode == "none":
        return values
    out = np.array(values, dtype=float)
    keys = np.asarray(groups)
    for key in dict.fromkeys(groups):
        mask = keys == key
        part = out[mask]
        part = part - part.mean()
        if mode == "standardize":
            std = part.std()
            if std > 0:
                part = part / std
        out[mask] = part
    return out
