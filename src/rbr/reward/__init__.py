"""Scoring completions with a fitted rule-based reward."""

from rbr.reward.rule_based import BaseReward, RewardBreakdown, RuleBasedReward

__all__ = ["BaseReward", "RewardBreakdown", "RuleBasedReward"]
