"""Warnings for fitted class weights that contradict the policy's class order."""

from __future__ import annotations

from rbr.fitting.class_order import class_order_warnings
from rbr.fitting.weights import RBRWeights, ResponseTypeWeights
from rbr.policy import load_default_policy
from rbr.policy.spec import CLASS_ORDER


def weights_with(class_coef: dict[str, float]) -> RBRWeights:
    names = ["meta_commentary", *(f"class:{c}" for c in CLASS_ORDER)]
    coef = [5.0, *(class_coef.get(c, 0.0) for c in CLASS_ORDER)]
    entry = ResponseTypeWeights("Comply", names, coef)
    return RBRWeights("p", "h", "g", {"Comply": entry})


def test_ordered_weights_pass():
    ordered = {c: -float(i) for i, c in enumerate(CLASS_ORDER)}
    assert class_order_warnings(weights_with(ordered), load_default_policy()) == {}


def test_reversed_pair_named():
    coef = {
        "ideal": 2.5,
        "minimum_acceptable_style": 1.0,
        "disallowed_completion": 19.6,
    }
    warnings = class_order_warnings(weights_with(coef), load_default_policy())
    message = warnings["Comply"]
    assert "disallowed_completion (+19.60) above ideal (+2.50)" in message
    assert "more or more varied comparison data" in message


def test_within_tolerance_ignored():
    coef = {"ideal": 1.0, "minimum_acceptable_style": 1.05}
    policy = load_default_policy()
    assert class_order_warnings(weights_with(coef), policy, tolerance=0.1) == {}
    assert "Comply" in class_order_warnings(weights_with(coef), policy, tolerance=0.01)


def test_non_class_features_ignored():
    # meta_commentary carries +5.0 but is not a class feature.
    ordered = {c: -float(i) for i, c in enumerate(CLASS_ORDER)}
    warnings = class_order_warnings(weights_with(ordered), load_default_policy())
    assert "meta_commentary" not in str(warnings)
