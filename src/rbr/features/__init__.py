"""Proposition probabilities to RBR feature matrices."""

from rbr.features.space import CLASS_FEATURE_PREFIX, FeatureSpace, feature_spaces

__all__ = ["CLASS_FEATURE_PREFIX", "FeatureSpace", "feature_spaces"]
