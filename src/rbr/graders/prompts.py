"""Grading prompt layouts shared by the LLM graders.

The prompt for one (sample, proposition) splits into a prefix and a suffix.
The prefix contains everything that is the same for all propositions of one
sample, and the suffix contains what differs. A server with prefix caching (vLLM,
SGLang) or the local grader's KV-cache reuse then processes the prefix once
per sample. Two layouts exist:

``conversation_first``
    Prefix: grading instructions, the conversation and the reply being
    judged. Suffix: the proposition's instruction, its few-shot examples and
    the answer cue. Each prompt holds one proposition's text only.
``shared_definitions``
    Prefix: grading instructions followed by every proposition's instruction
    and examples (identical for the whole run), then the conversation and the
    reply. Suffix: a short question naming one proposition. A prefix cache
    prefills the definitions once per run, so per completion only the
    conversation and the short questions are new, at the price of sending
    all definitions with every request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from rbr.data.types import Message, Sample
from rbr.policy.spec import FewShotExample, Proposition

DEFAULT_PREAMBLE = (
    "You are grading the final reply of an AI assistant in a conversation. "
    "Read the conversation, then answer one question about the assistant's "
    "final reply only. Earlier assistant turns are context and are not graded. "
    'Answer with a single word: "yes" or "no".'
)

ANSWER_CUE = 'Answer "yes" or "no".\nAnswer:'

CHAT_SYSTEM_MESSAGE = (
    "You are a careful grader. Reply with exactly one word, yes or no, in lowercase."
)
"""System message of every chat request. The user message contains the prompt."""

TEMPLATE_VERSION = "2"
"""Bumped by hand when the wording of a layout changes in a way the hash misses."""

Layout = Literal["conversation_first", "shared_definitions"]
LAYOUTS: tuple[str, ...] = ("conversation_first", "shared_definitions")


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
    # After worked examples, a reminder points the answer back at the graded
    # reply. Without examples the question sits right above the answer cue, so
    # the part prefilled once per proposition stays short.
    reminder = (
        f"Question about the final assistant reply above: {proposition.name}?\n"
        if chosen
        else ""
    )
    return (
        "## Question\n\n"
        f"{proposition.instruction.strip()}\n\n"
        f"{render_examples(chosen)}"
        f"{reminder}"
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


DEFINITIONS_HEADING = (
    "## Definitions\n\n"
    "Each question at the end names one of the statements defined here.\n\n"
)


def render_definition(
    proposition: Proposition, examples: Sequence[FewShotExample] | None = None
) -> str:
    """Render one proposition's definition block; None uses its own examples."""
    chosen = proposition.examples if examples is None else examples
    return (
        f"### {proposition.name}\n\n"
        f"{proposition.instruction.strip()}\n\n"
        f"{render_examples(chosen)}"
    )


def build_definitions_preamble(
    propositions: Sequence[Proposition],
    *,
    examples: Mapping[str, Sequence[FewShotExample]] | None = None,
    preamble: str = DEFAULT_PREAMBLE,
) -> str:
    """Return the ``shared_definitions`` preamble: instructions, then every definition.

    Args:
        propositions: Every proposition the run may ask about, in a fixed order.
        examples: Few-shot examples per proposition name; a proposition missing
            from the mapping (or a None mapping) uses its own examples.
        preamble: General grading instructions placed first.
    """
    examples = examples or {}
    blocks = [render_definition(p, examples.get(p.name)) for p in propositions]
    return f"{preamble}\n\n{DEFINITIONS_HEADING}" + "".join(blocks)


def build_question(proposition: Proposition) -> str:
    """Return the ``shared_definitions`` suffix: a question naming one definition."""
    return (
        "## Question\n\n"
        f"Does the statement {proposition.name} (defined above) hold for the final "
        "assistant reply?\n"
        f"{ANSWER_CUE}"
    )


def prompt_template_hash(layout: Layout = "conversation_first") -> str:
    """Return a short hash that changes whenever a layout renders differently.

    It renders a fixed probe sample and proposition through the layout and
    hashes the text with :data:`TEMPLATE_VERSION` and the chat system message,
    so editing any template string changes the hash without a manual bump.
    Caches and saved weights store it to tell prompt versions apart.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown prompt layout {layout!r}; expected one of {LAYOUTS}")
    sample = Sample(prompt=(Message("user", "<request>"),), completion="<reply>")
    example = FewShotExample(
        prompt="<p>", completion="<c>", answer=True, explanation="<e>"
    )
    proposition = Proposition(name="probe", instruction="<i>", examples=(example,))
    if layout == "shared_definitions":
        preamble = build_definitions_preamble([proposition], preamble="<preamble>")
        text = build_prefix(sample, preamble=preamble) + build_question(proposition)
    else:
        text = build_prompt(sample, proposition, preamble="<preamble>").text
    payload = "\x00".join((TEMPLATE_VERSION, layout, CHAT_SYSTEM_MESSAGE, text))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


class ExampleSource(Protocol):
    """Few-shot examples chosen per proposition and graded sample."""

    fingerprint: str

    def examples_for(
        self, name: str, *, exclude_key: str | None = None
    ) -> tuple[FewShotExample, ...]: ...


class PromptRenderer:
    """Build the prefix and suffix of every grading prompt in one layout.

    Args:
        layout: ``conversation_first`` or ``shared_definitions``.
        preamble: General grading instructions at the start of every prompt.
        definitions: Every proposition of the run, in a fixed order; required
            by ``shared_definitions``, whose prefix lists them all.
        few_shot: Examples chosen per sample from a labelled set, excluding the
            sample itself; None shows each proposition's own examples.

    Raises:
        ValueError: On an unknown layout, or ``shared_definitions`` without
            definitions.
    """

    def __init__(
        self,
        *,
        layout: Layout = "conversation_first",
        preamble: str = DEFAULT_PREAMBLE,
        definitions: Sequence[Proposition] | None = None,
        few_shot: ExampleSource | None = None,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(
                f"unknown prompt layout {layout!r}; expected one of {LAYOUTS}"
            )
        if layout == "shared_definitions" and not definitions:
            raise ValueError(
                "the shared_definitions layout needs definitions: pass every "
                "proposition of the policy so the shared prefix lists them all"
            )
        self.layout = layout
        self.preamble = preamble
        self.definitions = tuple(definitions or ())
        self.few_shot = few_shot
        self.template_hash = prompt_template_hash(layout)

    def fingerprint(self) -> str:
        """Return a hash of every setting that changes the rendered text."""
        parts = [self.layout, self.template_hash, self.preamble]
        parts += [p.model_dump_json() for p in self.definitions]
        parts.append(self.few_shot.fingerprint if self.few_shot is not None else "")
        payload = "\x00".join(parts)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    def check_propositions(self, propositions: Sequence[Proposition]) -> None:
        """Raise ValueError when the layout cannot ask about one of ``propositions``."""
        if self.layout != "shared_definitions":
            return
        known = {p.name: p for p in self.definitions}
        for proposition in propositions:
            if known.get(proposition.name) != proposition:
                raise ValueError(
                    f"proposition {proposition.name!r} is not among the shared "
                    "definitions, or its text differs from them; build the grader "
                    "with the same propositions it grades"
                )

    def _examples(self, sample: Sample, name: str) -> tuple[FewShotExample, ...] | None:
        if self.few_shot is None:
            return None
        return self.few_shot.examples_for(name, exclude_key=sample.content_key())

    def prefix(self, sample: Sample) -> str:
        """Return the part of the prompt shared by every proposition of ``sample``."""
        if self.layout == "conversation_first":
            return build_prefix(sample, preamble=self.preamble)
        examples = None
        if self.few_shot is not None:
            examples = {
                p.name: self._examples(sample, p.name) or () for p in self.definitions
            }
        preamble = build_definitions_preamble(
            self.definitions, examples=examples, preamble=self.preamble
        )
        return build_prefix(sample, preamble=preamble)

    def suffix(self, sample: Sample, proposition: Proposition) -> str:
        """Return the proposition-specific end of the prompt for ``sample``."""
        if self.layout == "shared_definitions":
            return build_question(proposition)
        return build_suffix(proposition, self._examples(sample, proposition.name))
