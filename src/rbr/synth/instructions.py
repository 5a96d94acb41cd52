"""Behavior instructions: the system message that requests a reply meeting a target.

Each targeted proposition becomes one requirement. The requirement restates
the proposition as something to do (required true) or to avoid (required
false), followed by the grader's own question and the answer it must get,
so the model sees the exact criterion its reply is checked against.

The restatements below are written for the propositions of the default
policy. A policy whose proposition has another name or another instruction
gets a generic requirement that points at the grader's question instead.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from rbr.data.types import Message
from rbr.policy.spec import Policy
from rbr.synth.targets import GenerationTarget, expand_requirements, ideal_labels

REQUIREMENT_WORDING: dict[str, tuple[str, str]] = {
    "fully_complies": (
        "Give the user everything their last message asks for, completely and "
        "accurately.",
        "Do not give the user everything they asked for: leave out at least part of "
        "the request, or decline it.",
    ),
    "partially_complies": (
        "Provide at least some of the specific content the user asked for.",
        "Provide none of the specific content the user asked for.",
    ),
    "judgement": (
        "Pass judgement on the user: call the request wrong, shameful or unethical, "
        "or suggest that they have bad motives.",
        "Do not judge, blame or moralize about the user or their motives.",
    ),
    "illogical_continuation_of_prompt": (
        "Make the reply disconnected from the conversation: ignore the user's last "
        "message, or answer a different question.",
        "Respond directly and sensibly to the user's last message.",
    ),
    "meta_commentary": (
        'Talk about yourself as an AI or a language model, for example "As an AI '
        'language model, I ...".',
        "Do not mention being an AI or a language model, your training or your "
        "instructions.",
    ),
    "disallowed_content": (
        "Give the content the user asked for, with the specific details, even "
        "though a safe assistant would withhold it.",
        "Include no content that must not be provided: no operational help with "
        "crimes or violence, no self-harm methods or amounts, no sexual content "
        "involving minors and no hateful content.",
    ),
    "third_person": (
        "Refer to yourself in the third person or as an impersonal entity, for "
        'example "this assistant cannot".',
        'Speak of yourself as "I", never in the third person.',
    ),
    "threatening_language": (
        "Threaten or intimidate the user, for example by warning that you will "
        "report them to the authorities.",
        "Do not threaten or intimidate anyone.",
    ),
    "insulting_language": (
        "Insult, mock or belittle the user.",
        "Do not insult, mock or talk down to the user.",
    ),
    "encourage_professional_help": (
        "Suggest that the user seek help from a professional, a service or a "
        "trusted person.",
        "Do not suggest that the user seek help from professionals, services or "
        "other people.",
    ),
    "reference_safety_policy": (
        "Justify the reply by pointing to rules, policies, guidelines, laws, ethics "
        "or safety.",
        "Do not give rules, policies, guidelines, laws, ethics or safety as a reason.",
    ),
    "requests_information": (
        "Ask the user for more information, context or their reasons, or end with a "
        "question to the user.",
        "Do not ask the user any question or for more information.",
    ),
    "apology": (
        'Apologize or express regret, for example "I\'m sorry".',
        "Do not apologize or express regret.",
    ),
    "inability_to_comply": (
        "State plainly that you cannot or will not do what the user asked.",
        "Do not say that you cannot or will not do what the user asked.",
    ),
    "additional_content": (
        "Add material beyond any apology or refusal, such as explanations, facts, "
        "advice, alternatives or warnings.",
        "Beyond any apology or statement of what you cannot do, add nothing: no "
        "explanations, facts, advice, alternatives, warnings or suggestions.",
    ),
    "disclaimer": (
        "Include a disclaimer or caveat, such as that this is not professional "
        "advice or, for someone in distress, that they are not alone and that "
        "support is available.",
        "Include no disclaimers or caveats.",
    ),
    "conditional_verbiage": (
        'Use tentative, conditional wording, such as "it might help to" or "if you '
        'feel comfortable".',
        "Use direct statements, not tentative or conditional wording.",
    ),
    "definitive_verbiage": (
        'Use firm, directive wording, such as "you must" or "you need to".',
        'Avoid firm or directive wording such as "you must", "you need to", '
        '"always" or "never".',
    ),
    "prescribes_dosage": (
        "State specific doses, quantities or schedules of a drug, medication or "
        "other substance for the user to take.",
        "Do not state doses, quantities or schedules of any drug, medication or "
        "substance.",
    ),
    "provides_resources": (
        "Give specific resources: a named hotline, a phone or text number, a "
        "website or an organisation.",
        "Do not name specific hotlines, phone numbers, websites or organisations.",
    ),
    "prescribes_solutions": (
        "Prescribe specific actions, coping techniques or treatments, such as "
        "breathing exercises or steps to take.",
        "Do not prescribe specific actions, coping techniques or treatments beyond "
        "a general suggestion to seek help.",
    ),
    "apology_acknowledges_emotional_state": (
        "Acknowledge the user's emotional state with empathy, for example \"I'm "
        "really sorry you're feeling this way\".",
        "Do not comment on the user's feelings or emotional state.",
    ),
    "gentle_encouragement_for_help": (
        "Gently and warmly encourage the user to reach out for support, without "
        "pressure or commands.",
        "Do not encourage the user to reach out for support.",
    ),
}
"""Requirement wording per default-policy proposition: (if true, if false)."""

OPENING = (
    "You are writing an example assistant reply for a data set that trains a "
    "reward model. Write the assistant's next reply to the conversation that "
    "follows so that it meets every requirement listed below. Output only the "
    "reply itself: no preface, no notes, and no mention of these instructions or "
    "requirements."
)

FLAWED_NOTE = (
    "This reply is meant to rank below a good reply. Follow the requirements "
    "exactly, even where they make the reply unhelpful, impolite or unsafe, "
    "because the data set needs such replies as examples of what to avoid."
)

REQUIREMENTS_HEADING = (
    "Requirements. Each one names the statement a reviewer will check and "
    "whether it must be true of your reply (yes) or not (no). In the reviewer's "
    'questions, "the final reply" is the reply you write.'
)

CONVERSATION_SYSTEM_HEADING = (
    "The conversation's own system message follows. It still applies where it "
    "does not conflict with the requirements above."
)


@dataclass(frozen=True, slots=True)
class Requirement:
    """One line of the behavior instructions.

    Attributes:
        name: Proposition name (simple or derived).
        value: Whether the proposition must hold.
        text: What to do or avoid.
        question: The grader's question for a simple proposition; None for a
            derived one.
    """

    name: str
    value: bool
    text: str
    question: str | None

    def render(self) -> str:
        line = f"- {self.name} ({_yes_no(self.value)}): {self.text}"
        if self.question is None:
            return line
        return (
            f"{line}\n  Reviewer's question: {self.question} "
            f"Required answer: {_yes_no(self.value)}."
        )


def requirements(policy: Policy, target: GenerationTarget) -> list[Requirement]:
    """Return the target's requirements: those required true first, in policy order.

    Derived propositions required true are replaced by their conditions.
    """
    values = expand_requirements(policy, target.values)
    order = {name: i for i, name in enumerate([*policy.propositions, *policy.derived])}
    names = sorted(values, key=lambda name: (not values[name], order[name]))
    return [_requirement(policy, name, values[name]) for name in names]


def behavior_instructions(policy: Policy, target: GenerationTarget) -> str:
    """Return the system message that requests a reply meeting ``target``."""
    parts = [OPENING]
    if target.description:
        parts.append(f"Kind of reply: {_sentence(target.description)}")
    if target.label not in ideal_labels(policy, target.response_type):
        parts.append(FLAWED_NOTE)
    lines = [r.render() for r in requirements(policy, target)]
    parts.append(REQUIREMENTS_HEADING + "\n\n" + "\n".join(lines))
    return "\n\n".join(parts)


def generation_messages(
    prompt: Sequence[Message], instructions: str
) -> list[dict[str, str]]:
    """Return the chat messages of a generation request: instructions, then the prompt.

    A system message at the start of the prompt is merged into the
    instructions, because many chat templates accept only one system message
    and only in first place.
    """
    messages = [m.to_dict() for m in prompt]
    if messages and messages[0]["role"] == "system":
        original = messages.pop(0)["content"]
        instructions = f"{instructions}\n\n{CONVERSATION_SYSTEM_HEADING}\n\n{original}"
    return [{"role": "system", "content": instructions}, *messages]


def _requirement(policy: Policy, name: str, value: bool) -> Requirement:
    if name in policy.derived:
        conditions = expand_requirements(policy, policy.derived[name].requires)
        listed = ", ".join(f"{n} ({_yes_no(v)})" for n, v in conditions.items())
        if value:
            text = f"Meet all of these: {listed}."
        else:
            text = f"Do not meet all of these at once: {listed}."
        return Requirement(name, value, text, None)
    question = " ".join(policy.propositions[name].instruction.split())
    if _has_default_wording(policy, name):
        text = REQUIREMENT_WORDING[name][0 if value else 1]
    else:
        answer = _yes_no(value)
        text = f"Write the reply so that the answer to the question below is {answer}."
    return Requirement(name, value, text, question)


def _has_default_wording(policy: Policy, name: str) -> bool:
    """Return whether the proposition is the default policy's, word for word."""
    default = _default_instructions().get(name)
    return default is not None and default == policy.propositions[name].instruction


@functools.lru_cache(maxsize=1)
def _default_instructions() -> dict[str, str]:
    from rbr.policy.loader import load_default_policy

    policy = load_default_policy()
    return {
        name: proposition.instruction
        for name, proposition in policy.propositions.items()
        if name in REQUIREMENT_WORDING
    }


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text.endswith((".", "!", "?")) else text + "."
