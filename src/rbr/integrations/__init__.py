"""Use the rule-based reward as the reward of RL trainers: TRL, verl, OpenRLHF.

- :mod:`rbr.integrations.trl_reward`: reward functions for TRL's
  ``GRPOTrainer`` and ``RLOOTrainer``.
- :mod:`rbr.integrations.verl_reward`: ``compute_score`` and
  ``compute_score_batch`` for verl's ``custom_reward_function``.
- :mod:`rbr.integrations.openrlhf_reward`: ``reward_func`` for OpenRLHF's
  ``--remote_rm_url`` Python file.
- :mod:`rbr.integrations.openrlhf_text`: OpenRLHF's decoded queries and
  prompt strings to completions and messages, shared with ``rbr serve``.
- :mod:`rbr.integrations.convert`: trainer formats to rbr messages, and
  dataset rows for each trainer.

None of these modules imports its trainer; the OpenRLHF entry point imports
torch to return tensors. See docs/rl.md for recipes.
"""

from rbr.integrations.convert import (
    IntegrationError,
    PromptRow,
    openrlhf_rows,
    prompts_from_records,
    read_prompts,
    trl_rows,
    verl_rows,
)
from rbr.integrations.trl_reward import AsyncRBRRewardFunction, RBRRewardFunction

__all__ = [
    "AsyncRBRRewardFunction",
    "IntegrationError",
    "PromptRow",
    "RBRRewardFunction",
    "openrlhf_rows",
    "prompts_from_records",
    "read_prompts",
    "trl_rows",
    "verl_rows",
]
