"""Generation targets from the default policy's labels and orderings."""

from __future__ import annotations

import pytest

from rbr.policy import load_default_policy, policy_from_yaml
from rbr.policy.loader import DEFAULT_POLICY_RESOURCE
from rbr.synth import (
    SynthError,
    TargetSettings,
    flaw_pool,
    plan_targets,
    undesired_propositions,
)
from rbr.synth.targets import expand_requirements

HARD_REFUSE_UNDESIRED = (
    "fully_complies",
    "judgement",
    "illogical_continuation_of_prompt",
    "meta_commentary",
    "disallowed_content",
    "third_person",
    "threatening_language",
    "insulting_language",
    "encourage_professional_help",
    "reference_safety_policy",
    "requests_information",
    "additional_content",
)


@pytest.fixture(scope="module")
def policy():
    return load_default_policy()


def test_undesired_propositions_of_hard_refuse(policy):
    assert undesired_propositions(policy, "Hard Refuse") == HARD_REFUSE_UNDESIRED


def test_flaw_pool_leaves_out_label_targets(policy):
    pool = flaw_pool(policy, "Hard Refuse", "bad_refusal")
    assert "disallowed_content" not in pool
    assert "fully_complies" not in pool
    assert set(pool) == set(HARD_REFUSE_UNDESIRED) - {
        "disallowed_content",
        "fully_complies",
    }


def test_flaw_pool_of_comply(policy):
    assert flaw_pool(policy, "Comply", "bad_refusal") == (
        "illogical_continuation_of_prompt",
        "meta_commentary",
    )


def test_expand_requirements_follows_derived_true(policy):
    expanded = expand_requirements(policy, {"ideal_refusal": True})
    assert expanded["apology"] is True
    assert expanded["judgement"] is False
    assert "ideal_refusal" not in expanded
    kept = expand_requirements(policy, {"acceptable_refusal": False})
    assert kept == {"acceptable_refusal": False}


def test_hard_refuse_targets_follow_ordering(policy):
    targets = plan_targets(policy, "Hard Refuse", "p1")
    ids = [t.target_id for t in targets]
    assert ids == [
        "perfect_refusal#1",
        "bad_refusal#1",
        "bad_refusal#2",
        "disallowed#1",
    ]
    perfect = targets[0]
    assert perfect.values == dict(policy.labels["perfect_refusal"].targets)
    assert perfect.flaws == ()


def test_bad_refusal_sets_its_flaws_true(policy):
    pool = set(flaw_pool(policy, "Hard Refuse", "bad_refusal"))
    for prompt_id in ("p1", "p2", "p3"):
        for target in plan_targets(policy, "Hard Refuse", prompt_id)[1:3]:
            assert 1 <= len(target.flaws) <= 2
            assert set(target.flaws) <= pool
            for flaw in target.flaws:
                assert target.values[flaw] is True
            for name, value in policy.labels["bad_refusal"].targets.items():
                assert target.values[name] is value


def test_flaw_draw_is_deterministic(policy):
    first = plan_targets(policy, "Hard Refuse", "p1", TargetSettings(seed=3))
    again = plan_targets(policy, "Hard Refuse", "p1", TargetSettings(seed=3))
    assert [t.flaws for t in first] == [t.flaws for t in again]


def test_flaw_draw_depends_on_prompt_and_seed(policy):
    def flaws(prompt_id: str, seed: int) -> tuple:
        settings = TargetSettings(seed=seed)
        return tuple(
            t.flaws for t in plan_targets(policy, "Hard Refuse", prompt_id, settings)
        )

    by_prompt = {flaws(f"p{i}", 0) for i in range(10)}
    by_seed = {flaws("p1", seed) for seed in range(10)}
    assert len(by_prompt) > 1
    assert len(by_seed) > 1


def test_variants_of_one_label_differ(policy):
    settings = TargetSettings(variants={"bad_refusal": 3})
    for prompt_id in ("a", "b", "c", "d"):
        bad = [
            t
            for t in plan_targets(policy, "Comply", prompt_id, settings)
            if t.label == "bad_refusal"
        ]
        assert len(bad) == 3
        assert len({t.flaws for t in bad}) == 3


def test_more_variants_keep_earlier_flaws(policy):
    two = plan_targets(policy, "Hard Refuse", "p9", TargetSettings())
    four = plan_targets(
        policy, "Hard Refuse", "p9", TargetSettings(variants={"bad_refusal": 4})
    )
    assert [t.flaws for t in two if t.label == "bad_refusal"] == [
        t.flaws for t in four if t.label == "bad_refusal"
    ][:2]


def test_max_flaws_and_label_filter(policy):
    settings = TargetSettings(
        max_flaws=1,
        labels=frozenset({"bad_safe_refusal"}),
        variants={"bad_safe_refusal": 5},
    )
    targets = plan_targets(policy, "Safe Refuse 2", "p1", settings)
    assert [t.label for t in targets] == ["bad_safe_refusal"] * 5
    assert all(len(t.flaws) == 1 for t in targets)


def test_zero_variants_drops_label(policy):
    targets = plan_targets(
        policy, "Hard Refuse", "p1", TargetSettings(variants={"disallowed": 0})
    )
    assert "disallowed" not in {t.label for t in targets}


def test_label_without_targets_is_an_error():
    text = _default_policy_text().replace(
        "    targets: {disallowed_content: true, inability_to_comply: false}\n", ""
    )
    policy = policy_from_yaml(text)
    with pytest.raises(SynthError, match="label 'disallowed' has no 'targets'"):
        plan_targets(policy, "Hard Refuse", "p1")


def test_negative_variants_rejected():
    with pytest.raises(ValueError, match="variants for label 'x'"):
        TargetSettings(variants={"x": -1})


def _default_policy_text() -> str:
    from importlib import resources

    return resources.files("rbr.policy").joinpath(DEFAULT_POLICY_RESOURCE).read_text()
