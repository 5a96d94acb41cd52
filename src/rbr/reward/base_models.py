"""Base (helpful-only) reward models added to the RBR term."""

from __future__ import annotations

from typing import Any

from rbr.errors import RbrError
from rbr.reward.rule_based import BaseReward

BASE_REWARD_KINDS = ("none",)


def make_base_reward(spec: dict[str, Any]) -> BaseReward | None:
    """Build the base reward named by ``spec['kind']``; None for ``none``."""
    kind = spec.pop("kind", "none")
    if kind == "none":
        return None
    raise RbrError(
        f"unknown base reward kind {kind!r}; use one of {', '.join(BASE_REWARD_KINDS)}"
    )
