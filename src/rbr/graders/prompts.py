"""Grading prompt layout shared by the LLM graders.

The prompt for one (sample, proposition) splits into a prefix and a suffix.
The prefix holds everything that is the same for all propositions of one
sample: the grading instructions, the conversation and the reply being
judged. The suffix holds the proposition's question, its few-shot examples
and the answer cue. A server with prefix caching (vLLM, SGLang) or the local
grader's KV-cache reuse then processes the prefix once per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rbr.data.types import Sample
from rbr.policy.spec import FewShotExample, Proposition

DEFAULT_PREAMBLE = (
    "You are grading the final reply of an AI assistant in a conversation. "
    "Read the conversation, then answer one question about the assistant's "
    "final reply only. Earlier assistant turns are context and are not graded. "
    'Answer with a single word: "yes" or "no".'
)

ANSWER_CUE = 'Answer "yes" or "no".\nAnswer:'


@dataclass(frozen=True, slots=True)
class GradingPrompt:
    """A grading prompt split at the point where propositions start to differ."""

    prefix: str
    suffix: str

    @property
    def text(self) -> str:
        return self.prefix + self.suffix


def render_conversation(sample: Sample) -> str:
    """Render the prompt messages and the graded reply as plain text."""
    lines = []
    for message in sample.prompt:
        lines.append(f"[{message.role}]\n{message.content.strip()}\n")
    return "\n".join(lines)


def build_prefix(sample: Sample, *, preamble: str = DEFAULT_PREAMBLE) -> str:
    """Return the part of the prompt shared by every proposition of ``sample``."""
    return (
        f"{preamble}\n\n"
        "## Conversation\n\n"
        f"{render_conversation(sample)}\n"
        "## Final assistant reply (the reply to grade)\n\n"
        f"{sample.completion.strip()}\n\n"
        "## End of reply\n\n"
    )


def render_examples(examples: Sequence[FewShotExample]) -> str:
    """Render few-shot examples, or an empty string when there are none."""
    if not examples:
        return ""
    parts = ["Worked examples (they are not the reply being graded):\n"]
    for number, example in enumerate(examples, start=1):
        answer = "yes" if example.answer else "no"
        block = (
            f"Example {number}\n"
            f"[user] {example.prompt.strip()}\n"
            f"[assistant] {example.completion.strip()}\n"
            f"Answer: {answer}\n"
        )
        if example.explanation:
            block += f"Reason: {example.explanation.strip()}\n"
        parts.append(block)
    return "\n".join(parts) + "\n"


def build_suffix(
    proposition: Proposition, examples: Sequence[FewShotExample] | None = None
) -> str:
    """Return the proposition-specific end of the prompt.

    Args:
        proposition: The proposition to ask about.
        examples: Few-shot examples to show; None uses the proposition's own.
    """
    chosen = proposition.examples if examples is None else examples
    return (
        "## Question\n\n"
        f"{proposition.instruction.strip()}\n\n"
        f"{render_examples(chosen)}"
        f"Question about the final assistant reply above: {proposition.name}?\n"
        f"{ANSWER_CUE}"
    )


def build_prompt(
    sample: Sample,
    proposition: Proposition,
    *,
    examples: Sequence[FewShotExample] | None = None,
    preamble: str = DEFAULT_PREAMBLE,
) -> GradingPrompt:
    """Build the grading prompt for one sample and one proposition."""
    return GradingPrompt(
        prefix=build_prefix(sample, preamble=preamble),
        suffix=build_suffix(proposition, examples),
    )
