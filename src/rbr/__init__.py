"""Rule-Based Rewards: a written safety behavior policy as an RL reward.

The public entry points are re-exported here; everything else lives in the
subpackages named in ``docs/architecture.md``.
"""

from rbr.data import Message, Record, Sample, read_records
from rbr.features import FeatureSpace
from rbr.fitting import FitSettings, PairwiseHingeRanker, RBRWeights, fit_rbr
from rbr.graders.base import Grader, GradeResult, Unscored
from rbr.graders.labels import LabelsGrader
from rbr.policy import Policy, load_default_policy, load_policy
from rbr.reward import RewardBreakdown, RuleBasedReward

__version__ = "0.1.0"

__all__ = [
    "FeatureSpace",
    "FitSettings",
    "GradeResult",
    "Grader",
    "LabelsGrader",
    "Message",
    "PairwiseHingeRanker",
    "Policy",
    "RBRWeights",
    "Record",
    "RewardBreakdown",
    "RuleBasedReward",
    "Sample",
    "Unscored",
    "fit_rbr",
    "load_default_policy",
    "load_policy",
    "read_records",
    "__version__",
]
