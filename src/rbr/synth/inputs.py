"""Read the prompts to generate completions for, with their response types.

A prompt file is JSONL or Parquet. Each row has ``prompt`` (a list of
``{role, content}`` messages ending with a user turn, or a plain string for
one user message) and either ``response_type`` or ``category``, which is
mapped through the policy's content-policy map. ``prompt_id`` (else ``id``)
names the prompt; without either, a hash of the messages does. Other fields,
``completion`` included, are ignored, so a gold or comparison file can serve
as a prompt file: rows that repeat a prompt are read once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbr.data.io import iter_rows
from rbr.data.types import Message, messages_from_mapping, prompt_hash
from rbr.errors import DataError
from rbr.policy.spec import Policy


@dataclass(frozen=True, slots=True)
class SynthPrompt:
    """One prompt to generate completions for.

    Attributes:
        prompt_id: Identifier, unique within the file.
        messages: The conversation, ending with a user turn.
        response_type: Canonical response type name in the policy.
        category: Content-policy category, when the row has one.
        line: 1-based line (JSONL) or row (Parquet) in the file.
    """

    prompt_id: str
    messages: tuple[Message, ...]
    response_type: str
    category: str | None = None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class SkippedRow:
    """A row left out because its category maps to no response type."""

    line: int | None
    prompt_id: str
    category: str | None
    reason: str


@dataclass
class PromptSet:
    """The prompts of a file and the rows skipped."""

    prompts: list[SynthPrompt]
    skipped: list[SkippedRow]


def read_prompts(path: str | Path, policy: Policy) -> PromptSet:
    """Read a prompt file and resolve each row's response type.

    Raises:
        DataError: Naming the file and line of a row without a usable prompt,
            with an unknown response type or category, with neither field, or
            reusing another prompt's ``prompt_id`` for different messages.
    """
    source = str(path)
    prompts: list[SynthPrompt] = []
    skipped: list[SkippedRow] = []
    seen: dict[str, tuple[Message, ...]] = {}
    for line, row in iter_rows(path):
        messages = _messages(row, source, line)
        prompt_id = _prompt_id(row, messages, source, line)
        if prompt_id in seen:
            if seen[prompt_id] != messages:
                raise DataError(
                    source,
                    line,
                    f"prompt_id {prompt_id!r} is used by an earlier row with "
                    "different messages; give each prompt its own prompt_id",
                )
            continue
        seen[prompt_id] = messages
        category = _optional_str(row, "category", source, line)
        response_type = _response_type(row, category, policy, source, line)
        if response_type is None:
            reason = f"category {category!r} maps to no response type in the policy"
            skipped.append(SkippedRow(line, prompt_id, category, reason))
            continue
        prompts.append(SynthPrompt(prompt_id, messages, response_type, category, line))
    return PromptSet(prompts, skipped)


def _messages(row: dict[str, Any], source: str, line: int) -> tuple[Message, ...]:
    value = row.get("prompt")
    if value is None:
        raise DataError(
            source, line, "missing field 'prompt' (a list of {role, content} messages)"
        )
    if isinstance(value, str):
        messages: tuple[Message, ...] = (Message("user", value),)
    else:
        try:
            messages = messages_from_mapping(value)
        except ValueError as error:
            raise DataError(source, line, f"field 'prompt': {error}") from None
    if not messages or messages[-1].role != "user":
        raise DataError(
            source,
            line,
            "field 'prompt' must end with a user message, because the generated "
            "completion answers it",
        )
    return messages


def _prompt_id(
    row: dict[str, Any], messages: tuple[Message, ...], source: str, line: int
) -> str:
    for key in ("prompt_id", "id"):
        value = _optional_str(row, key, source, line)
        if value:
            return value
    return prompt_hash(messages)


def _response_type(
    row: dict[str, Any],
    category: str | None,
    policy: Policy,
    source: str,
    line: int,
) -> str | None:
    name = _optional_str(row, "response_type", source, line)
    try:
        if name is not None:
            return policy.response_type(name).name
        if category is not None:
            mapped = policy.response_type_for_category(category)
            return None if mapped is None else policy.response_type(mapped).name
    except KeyError as error:
        raise DataError(source, line, str(error.args[0])) from None
    raise DataError(
        source,
        line,
        "row has neither 'response_type' nor 'category'; add one so the policy "
        "knows which completions to generate",
    )


def _optional_str(row: dict[str, Any], key: str, source: str, line: int) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DataError(
            source, line, f"field '{key}' must be a string, got {type(value).__name__}"
        )
    return value
