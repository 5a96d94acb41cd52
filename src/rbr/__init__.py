"""Rule-Based Rewards: a written safety behavior policy as an RL reward."""

__version__ = "0.1.0"
