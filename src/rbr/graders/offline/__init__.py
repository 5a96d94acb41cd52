"""Offline grader: proposition classifiers that need no GPU, server or network.

Inference needs only numpy; training (:func:`train_offline_grader`) needs
scikit-learn and scipy, from the ``train`` extra.
"""

from rbr.graders.offline.grader import DEFAULT_ARTIFACT, OfflineGrader
from rbr.graders.offline.model import ArtifactError, OfflineModel, load_model
from rbr.graders.offline.rules import PROPOSITIONS
from rbr.graders.offline.training import (
    TrainingOptions,
    train_offline_grader,
    train_offline_model,
)

__all__ = [
    "DEFAULT_ARTIFACT",
    "PROPOSITIONS",
    "ArtifactError",
    "OfflineGrader",
    "OfflineModel",
    "TrainingOptions",
    "load_model",
    "train_offline_grader",
    "train_offline_model",
]
