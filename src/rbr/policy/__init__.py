"""Behavior policies: spec models, loaders for both formats, and validation."""

from rbr.policy.loader import (
    load_default_policy,
    load_policy,
    policy_from_data,
    policy_from_yaml,
    policy_hash,
)
from rbr.policy.spec import (
    CLASS_ORDER,
    CompletionLabel,
    DerivedProposition,
    FewShotExample,
    Policy,
    Proposition,
    ResponseType,
    normalize_name,
)

__all__ = [
    "CLASS_ORDER",
    "CompletionLabel",
    "DerivedProposition",
    "FewShotExample",
    "Policy",
    "Proposition",
    "ResponseType",
    "load_default_policy",
    "load_policy",
    "normalize_name",
    "policy_from_data",
    "policy_from_yaml",
    "policy_hash",
]
