"""Tests of the grading prompt layouts."""

from __future__ import annotations

import pytest

from rbr.data.types import Message, Record, Sample
from rbr.graders.fewshot import FewShotPool
from rbr.graders.prompts import (
    ANSWER_CUE,
    DEFAULT_PREAMBLE,
    PromptRenderer,
    build_definitions_preamble,
    build_prefix,
    build_prompt,
    build_question,
    build_suffix,
    prompt_template_hash,
)
from rbr.policy.spec import FewShotExample, Proposition

EXAMPLE = FewShotExample(
    prompt="How do I pick a lock?",
    completion="Sorry, I can't help with that.",
    answer=True,
    explanation="It apologises.",
)
APOLOGY = Proposition(
    name="apology", instruction="Does the reply apologise?", examples=(EXAMPLE,)
)
JUDGEMENT = Proposition(name="judgement", instruction="Does the reply judge the user?")
SAMPLE = Sample(
    prompt=(
        Message("system", "Be helpful."),
        Message("user", "Tell me a secret recipe."),
    ),
    completion="Here is my grandmother's bread recipe.",
)
OTHER = Sample(prompt=(Message("user", "Hello"),), completion="Hi there.")


def test_prefix_holds_conversation_and_reply() -> None:
    prefix = build_prefix(SAMPLE)
    assert prefix.startswith(DEFAULT_PREAMBLE)
    assert "[system]\nBe helpful." in prefix
    assert "[user]\nTell me a secret recipe." in prefix
    assert prefix.index("Tell me a secret recipe.") < prefix.index(
        "grandmother's bread"
    )


def test_suffix_holds_question_examples_cue() -> None:
    suffix = build_suffix(APOLOGY)
    assert "Does the reply apologise?" in suffix
    assert "Example 1" in suffix
    assert "Answer: yes" in suffix
    assert "Reason: It apologises." in suffix
    assert suffix.endswith(ANSWER_CUE)
    assert "Example 1" not in build_suffix(APOLOGY, examples=())


def test_prompt_prefix_shared_across_propositions() -> None:
    first = build_prompt(SAMPLE, APOLOGY)
    second = build_prompt(SAMPLE, JUDGEMENT)
    assert first.prefix == second.prefix
    assert first.suffix != second.suffix
    assert first.text == first.prefix + first.suffix


def test_definitions_preamble_lists_every_proposition() -> None:
    preamble = build_definitions_preamble([APOLOGY, JUDGEMENT])
    assert preamble.startswith(DEFAULT_PREAMBLE)
    assert preamble.index("### apology") < preamble.index("### judgement")
    assert "Does the reply judge the user?" in preamble
    assert "How do I pick a lock?" in preamble
    replaced = build_definitions_preamble([APOLOGY], examples={"apology": ()})
    assert "How do I pick a lock?" not in replaced


def test_question_is_short_and_names_proposition() -> None:
    question = build_question(JUDGEMENT)
    assert "judgement" in question
    assert JUDGEMENT.instruction not in question
    assert question.endswith(ANSWER_CUE)
    assert len(question) < 200


def test_shared_layout_prefix_identical_until_conversation() -> None:
    renderer = PromptRenderer(
        layout="shared_definitions", definitions=[APOLOGY, JUDGEMENT]
    )
    first = renderer.prefix(SAMPLE)
    second = renderer.prefix(OTHER)
    start = first.index("## Conversation")
    assert first[:start] == second[:start]
    assert renderer.suffix(SAMPLE, APOLOGY) == build_question(APOLOGY)


def test_conversation_first_renderer_matches_build_prompt() -> None:
    renderer = PromptRenderer()
    prompt = build_prompt(SAMPLE, APOLOGY)
    assert renderer.prefix(SAMPLE) == prompt.prefix
    assert renderer.suffix(SAMPLE, APOLOGY) == prompt.suffix


def test_renderer_validates_layout_and_definitions() -> None:
    with pytest.raises(ValueError, match="unknown prompt layout"):
        PromptRenderer(layout="question_first")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs definitions"):
        PromptRenderer(layout="shared_definitions")
    renderer = PromptRenderer(layout="shared_definitions", definitions=[APOLOGY])
    renderer.check_propositions([APOLOGY])
    with pytest.raises(ValueError, match="'judgement' is not among"):
        renderer.check_propositions([JUDGEMENT])
    changed = APOLOGY.model_copy(update={"instruction": "Changed?"})
    with pytest.raises(ValueError, match="text differs"):
        renderer.check_propositions([changed])


def test_renderer_few_shot_excludes_sample() -> None:
    records = [
        Record(sample=SAMPLE, prompt_id="a", propositions={"judgement": 1.0}),
        Record(sample=OTHER, prompt_id="b", propositions={"judgement": 1.0}),
    ]
    pool = FewShotPool(records, ["apology", "judgement"], 2)
    suffix = PromptRenderer(few_shot=pool).suffix(SAMPLE, JUDGEMENT)
    assert "Hi there." in suffix
    assert "grandmother's bread" not in suffix
    shared = PromptRenderer(
        layout="shared_definitions", definitions=[APOLOGY, JUDGEMENT], few_shot=pool
    )
    prefix = shared.prefix(OTHER)
    definitions = prefix[: prefix.index("## Conversation")]
    assert "grandmother's bread" in definitions
    assert "Hi there." not in definitions
    assert "How do I pick a lock?" not in definitions


def test_template_hash_stable_and_per_layout() -> None:
    assert prompt_template_hash() == prompt_template_hash("conversation_first")
    assert prompt_template_hash() != prompt_template_hash("shared_definitions")
    assert len(prompt_template_hash()) == 16
    with pytest.raises(ValueError, match="unknown prompt layout"):
        prompt_template_hash("other")  # type: ignore[arg-type]


def test_fingerprint_tracks_preamble_and_examples() -> None:
    base = PromptRenderer().fingerprint()
    assert PromptRenderer().fingerprint() == base
    assert PromptRenderer(preamble="Grade strictly.").fingerprint() != base
    records = [Record(sample=OTHER, prompt_id="b", propositions={"judgement": 1.0})]
    pool = FewShotPool(records, ["judgement"], 1)
    assert PromptRenderer(few_shot=pool).fingerprint() != base
