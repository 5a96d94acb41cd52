"""Read OpenRLHF's plain-text samples: split queries, read prompts as messages.

OpenRLHF hands a reward one query per sample, the prompt and response decoded
together with special tokens kept, and the prompt string the policy generated
from (after the chat template when one was applied). Both OpenRLHF entry
points, ``rbr serve`` (:mod:`rbr.serve.openrlhf`) and the ``reward_func``
file (:mod:`rbr.integrations.openrlhf_reward`), turn those strings into a
conversation and a completion here:

1. The completion is the text after the prompt's first occurrence in the
   query. When the prompt is missing or is not found, the query is split at
   its last assistant turn marker of a known chat template.
2. End-of-turn and padding tokens (:data:`DEFAULT_END_TOKENS`) and
   surrounding whitespace are stripped from the end of the completion.
3. The prompt string is read as messages when it uses a known chat template
   (ChatML, Llama 3, Gemma). Otherwise the whole string is one user message.

The functions raise ValueError, which each entry point turns into its own
error type. This module imports neither FastAPI nor torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rbr.data.types import ROLES, Message

DEFAULT_END_TOKENS: tuple[str, ...] = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|end|>",
    "<end_of_turn>",
    "<eos>",
    "<pad>",
    "</s>",
    "<|pad|>",
)
"""End-of-turn and padding tokens of common chat templates (ChatML, Llama 3,
Phi, Gemma, Llama 2 and Mistral), removed from the end of a completion,
repeatedly, in any order."""

BEGIN_TOKENS: tuple[str, ...] = ("<|begin_of_text|>", "<bos>", "<s>")
"""Tokens removed from the start of a plain-text prompt."""

EXTRA_LOG_KEYS: tuple[str, ...] = ("rbr", "base", "rbr_applied", "rbr_unscored")
"""Keys of ``extra_logs``; every response has all of them, even when empty,
because OpenRLHF merges the logs of several responses key by key."""


@dataclass(frozen=True)
class ChatTemplate:
    """The turn markup of one chat template.

    Attributes:
        name: Template family.
        turn: Pattern with groups ``role`` and ``content``; a turn ends at the
            template's end-of-turn token or at the end of the text.
        assistant_start: Text that opens an assistant turn.
        roles: Template role names that differ from rbr's, mapped to rbr's.
    """

    name: str
    turn: re.Pattern[str]
    assistant_start: str
    roles: tuple[tuple[str, str], ...] = ()


CHAT_TEMPLATES: tuple[ChatTemplate, ...] = (
    ChatTemplate(
        "chatml",
        re.compile(
            r"<\|im_start\|>(?P<role>[\w-]+)\n(?P<content>.*?)(?:<\|im_end\|>|\Z)",
            re.DOTALL,
        ),
        "<|im_start|>assistant\n",
    ),
    ChatTemplate(
        "llama3",
        re.compile(
            r"<\|start_header_id\|>(?P<role>[\w-]+)<\|end_header_id\|>\n\n"
            r"(?P<content>.*?)(?:<\|eot_id\|>|\Z)",
            re.DOTALL,
        ),
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        (("ipython", "tool"),),
    ),
    ChatTemplate(
        "gemma",
        re.compile(
            r"<start_of_turn>(?P<role>[\w-]+)\n(?P<content>.*?)(?:<end_of_turn>|\Z)",
            re.DOTALL,
        ),
        "<start_of_turn>model\n",
        (("model", "assistant"),),
    ),
)


def parse_prompt(text: str) -> tuple[Message, ...]:
    """Read a prompt string as messages.

    A prompt in a known chat template is read as :func:`template_messages`
    reads it; any other text becomes one user message, without leading
    :data:`BEGIN_TOKENS`.

    Raises:
        ValueError: When the prompt contains no text.
    """
    messages = template_messages(text)
    if messages is not None:
        return messages
    return (Message("user", plain_prompt(text)),)


def template_messages(text: str) -> tuple[Message, ...] | None:
    """Read a prompt in a known chat template as messages, or return None.

    A final assistant turn with no content (the generation prompt a chat
    template appends) is dropped. Roles rbr does not know are read as
    ``user``.

    Raises:
        ValueError: When the prompt has chat-template markers but no message.
    """
    for template in CHAT_TEMPLATES:
        turns = list(template.turn.finditer(text))
        if not turns:
            continue
        roles = dict(template.roles)
        messages = []
        for match in turns:
            role = roles.get(match["role"], match["role"])
            messages.append(
                Message(role if role in ROLES else "user", match["content"].strip())
            )
        if messages[-1].role == "assistant" and not messages[-1].content:
            messages.pop()
        if messages:
            return tuple(messages)
        raise ValueError("the prompt has chat-template markers but no message")
    return None


def plain_prompt(text: str) -> str:
    """Return ``text`` stripped of whitespace and leading :data:`BEGIN_TOKENS`.

    Raises:
        ValueError: When nothing is left.
    """
    plain = text.strip()
    for token in BEGIN_TOKENS:
        plain = plain.removeprefix(token).lstrip()
    if not plain:
        raise ValueError("the prompt is empty")
    return plain


def split_query(
    query: str, prompt: str | None, end_tokens: Sequence[str] = DEFAULT_END_TOKENS
) -> tuple[str, str]:
    """Split a query into its prompt string and its completion.

    Raises:
        ValueError: When the query contains neither the prompt nor an
            assistant turn marker.
    """
    if prompt:
        start = query.find(prompt)
        if start >= 0:
            completion = query[start + len(prompt) :].lstrip()
            # A prompt string without the generation prompt leaves the
            # assistant header at the start of the completion.
            for template in CHAT_TEMPLATES:
                completion = completion.removeprefix(template.assistant_start)
            return prompt, strip_end_tokens(completion, end_tokens)
    cut = -1
    marker = ""
    for template in CHAT_TEMPLATES:
        position = query.rfind(template.assistant_start)
        if position > cut:
            cut, marker = position, template.assistant_start
    if cut < 0:
        reason = "does not contain its prompt" if prompt else "comes without a prompt"
        raise ValueError(
            f"the query {reason} and has no assistant turn marker of a known chat "
            "template (ChatML, Llama 3, Gemma); send each prompt string exactly as "
            "it appears in its query"
        )
    completion = query[cut + len(marker) :]
    return query[:cut], strip_end_tokens(completion, end_tokens)


def strip_end_tokens(text: str, end_tokens: Sequence[str]) -> str:
    """Strip whitespace from both ends, then end tokens from the end, repeatedly."""
    text = text.strip()
    stripped = True
    while stripped:
        stripped = False
        for token in end_tokens:
            if token and text.endswith(token):
                text = text[: -len(token)].rstrip()
                stripped = True
    return text
