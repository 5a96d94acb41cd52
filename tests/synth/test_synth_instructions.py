"""Behavior instructions built from targets and proposition instructions."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from rbr.data.types import Message
from rbr.policy import load_default_policy, policy_from_yaml
from rbr.policy.loader import DEFAULT_POLICY_RESOURCE
from rbr.synth import (
    GenerationTarget,
    TargetSettings,
    behavior_instructions,
    generation_messages,
    plan_targets,
    requirements,
)
from rbr.synth.instructions import FLAWED_NOTE, REQUIREMENT_WORDING
from tests.conftest import REPO_ROOT

REQUIREMENT_LINE = re.compile(r"^- (\w+) \((yes|no)\): (.*)$", re.MULTILINE)

DOC_PROMPT_ID = "example"
"""Prompt id whose flaw draws (seed 0) docs/synth.md shows."""

DOC_ORDER = ("Hard Refuse", "Comply", "Safe Refuse 1", "Safe Refuse 2")
"""Response types in the order docs/synth.md takes each label's first appearance."""


@pytest.fixture(scope="module")
def policy():
    return load_default_policy()


def test_every_default_proposition_has_wording(policy):
    assert set(REQUIREMENT_WORDING) == set(policy.propositions)


def test_one_line_per_target_value(policy):
    for rtype in policy.response_types:
        for target in plan_targets(policy, rtype, "p1"):
            text = behavior_instructions(policy, target)
            lines = {name: value for name, value, _ in REQUIREMENT_LINE.findall(text)}
            expected = {n: "yes" if v else "no" for n, v in target.values.items()}
            assert lines == expected, target.target_id


def test_wording_and_question_match_value(policy):
    target = plan_targets(policy, "Hard Refuse", "p1")[0]
    text = behavior_instructions(policy, target)
    apology_yes, _ = REQUIREMENT_WORDING["apology"]
    _, judgement_no = REQUIREMENT_WORDING["judgement"]
    assert f"- apology (yes): {apology_yes}" in text
    assert f"- judgement (no): {judgement_no}" in text
    question = " ".join(policy.propositions["apology"].instruction.split())
    assert f"Reviewer's question: {question} Required answer: yes." in text


def test_true_requirements_come_first(policy):
    target = plan_targets(policy, "Hard Refuse", "p1")[0]
    values = [r.value for r in requirements(policy, target)]
    assert values == sorted(values, reverse=True)


def test_flawed_note_only_below_ideal(policy):
    perfect, bad = plan_targets(policy, "Hard Refuse", "p1")[:2]
    assert FLAWED_NOTE not in behavior_instructions(policy, perfect)
    assert FLAWED_NOTE in behavior_instructions(policy, bad)
    assert "Kind of reply: A refusal with one or more flaws of style." in (
        behavior_instructions(policy, bad)
    )


def test_changed_instruction_gets_generic_wording():
    text = _default_policy_text().replace(
        'as "I\'m sorry", "I apologize" or "unfortunately"?',
        'as "I\'m sorry" or "my apologies"?',
    )
    policy = policy_from_yaml(text)
    target = plan_targets(policy, "Hard Refuse", "p1")[0]
    rendered = behavior_instructions(policy, target)
    assert REQUIREMENT_WORDING["apology"][0] not in rendered
    assert (
        "- apology (yes): Write the reply so that the answer to the question below "
        "is yes." in rendered
    )
    assert '"my apologies"' in rendered


def test_derived_targets_expand_or_stay_whole(policy):
    target = GenerationTarget(
        "Hard Refuse",
        "custom",
        1,
        {"ideal_refusal": True, "acceptable_safe_refusal": False},
    )
    text = behavior_instructions(policy, target)
    names = [name for name, _, _ in REQUIREMENT_LINE.findall(text)]
    assert "ideal_refusal" not in names
    assert "apology" in names
    assert "- acceptable_safe_refusal (no): Do not meet all of these at once:" in text


def test_prompt_system_message_is_merged():
    prompt = (Message("system", "Answer in French."), Message("user", "Hi"))
    messages = generation_messages(prompt, "INSTRUCTIONS")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"].startswith("INSTRUCTIONS\n\n")
    assert messages[0]["content"].endswith("Answer in French.")
    assert messages[1] == {"role": "user", "content": "Hi"}


def test_prompt_without_system_message():
    messages = generation_messages((Message("user", "Hi"),), "INSTRUCTIONS")
    assert messages == [
        {"role": "system", "content": "INSTRUCTIONS"},
        {"role": "user", "content": "Hi"},
    ]


def test_docs_show_current_instructions(policy):
    docs = (REPO_ROOT / "docs" / "synth.md").read_text()
    shown = set()
    for rtype in DOC_ORDER:
        for target in plan_targets(policy, rtype, DOC_PROMPT_ID, TargetSettings()):
            if target.label in shown or target.variant != 1:
                continue
            shown.add(target.label)
            assert behavior_instructions(policy, target) in docs, target.label
    assert shown == set(policy.labels)


def _default_policy_text() -> str:
    return resources.files("rbr.policy").joinpath(DEFAULT_POLICY_RESOURCE).read_text()
