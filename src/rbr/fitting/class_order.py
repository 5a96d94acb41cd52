"""Check fitted class weights against the policy's order of completion classes.

Each response type's feature vector has one indicator per completion class
(``class:ideal`` ... ``class:disallowed_completion``). The policy ranks the
classes best first (:data:`rbr.policy.spec.CLASS_ORDER`), so a fit whose
weight for a worse class exceeds that of a better one rewards, all else
equal, the worse completion. This happens when the comparison data has too
few rows of a class, or rows whose classes correlate with other features.
The check only reports such contradictions; it does not change the fit.
"""

from __future__ import annotations

from rbr.fitting.weights import RBRWeights
from rbr.policy.spec import CLASS_ORDER, Policy

CLASS_FEATURE_PREFIX = "class:"
DEFAULT_TOLERANCE = 0.1
"""Weight difference (reward units) above which a reversed pair is reported."""


def class_order_warnings(
    weights: RBRWeights, policy: Policy, *, tolerance: float = DEFAULT_TOLERANCE
) -> dict[str, str]:
    """Return, per response type, a message naming class weights in the wrong order.

    A pair is reported when a worse class's weight exceeds a better class's
    weight by more than ``tolerance``. Only the classes the policy defines
    for the response type are compared.
    """
    warnings: dict[str, str] = {}
    for name, entry in weights.response_types.items():
        defined = _defined_classes(policy, name)
        class_weights = {
            feature.removeprefix(CLASS_FEATURE_PREFIX): float(coef)
            for feature, coef in zip(entry.feature_names, entry.coef)
            if feature.startswith(CLASS_FEATURE_PREFIX)
            and feature.removeprefix(CLASS_FEATURE_PREFIX) in defined
        }
        reversed_pairs = _reversed_pairs(class_weights, tolerance)
        if reversed_pairs:
            warnings[name] = (
                f"fitted class weights contradict the policy's class order: "
                f"{'; '.join(reversed_pairs)}. Proposition weights add to these, "
                "but a completion of a worse class can outscore a better one; fit "
                "on more or more varied comparison data (completions of every "
                "class for the same prompts)"
            )
    return warnings


def _defined_classes(policy: Policy, response_type: str) -> set[str]:
    try:
        return set(policy.response_type(response_type).classes)
    except KeyError:
        return set(CLASS_ORDER)


def _reversed_pairs(class_weights: dict[str, float], tolerance: float) -> list[str]:
    """Describe each class weighted above a better class, worst class first."""
    ordered = [c for c in CLASS_ORDER if c in class_weights]
    pairs = []
    for position in range(len(ordered) - 1, 0, -1):
        worse = ordered[position]
        beaten = [
            better
            for better in ordered[:position]
            if class_weights[worse] > class_weights[better] + tolerance
        ]
        if beaten:
            listed = ", ".join(f"{b} ({class_weights[b]:+.2f})" for b in beaten)
            pairs.append(f"{worse} ({class_weights[worse]:+.2f}) above {listed}")
    return pairs
