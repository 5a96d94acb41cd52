"""Conversation and record types used across rbr."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool", "developer")


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message."""

    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class Sample:
    """One completion to grade, with the conversation that led to it.

    Attributes:
        prompt: Messages before the completion, ending with a user turn.
        completion: Text of the assistant reply being graded.
        response_type: Response type of the prompt under the policy, or None
            when the prompt has no safety response type.
        sample_id: Caller's identifier, carried into logs and failures.
    """

    prompt: tuple[Message, ...]
    completion: str
    response_type: str | None = None
    sample_id: str | None = None

    def content_key(self) -> str:
        """Return a SHA-256 hex digest of the conversation and completion text."""
        payload = json.dumps(
            {
                "prompt": [[m.role, m.content] for m in self.prompt],
                "completion": self.completion,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(slots=True)
class Record:
    """One row of a data file in the conversation format.

    Attributes:
        sample: The conversation and completion.
        prompt_id: Identifier grouping completions to the same prompt. Taken
            from a ``prompt_id`` field when present, otherwise a hash of the
            prompt messages.
        category: Content-policy category, when the row has one.
        label: Completion label used for weight fitting, when present.
        base_reward: Score of a base reward model, when present.
        propositions: Proposition values stored in the row (human labels as
            booleans, or probabilities), keyed by proposition name.
        line: 1-based line (JSONL) or row (Parquet) in the source file.
        extra: Other fields of the row, passed through to outputs.
    """

    sample: Sample
    prompt_id: str
    category: str | None = None
    label: str | None = None
    base_reward: float | None = None
    propositions: dict[str, float] = field(default_factory=dict)
    line: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def prompt_hash(prompt: tuple[Message, ...]) -> str:
    """Return a short stable identifier for a list of prompt messages."""
    payload = json.dumps(
        [[m.role, m.content] for m in prompt], ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def last_user_message(prompt: tuple[Message, ...]) -> str:
    """Return the content of the last user message, or an empty string."""
    for message in reversed(prompt):
        if message.role == "user":
            return message.content
    return ""


def messages_from_mapping(items: Any) -> tuple[Message, ...]:
    """Convert a list of ``{role, content}`` mappings to messages.

    Raises:
        ValueError: When the value is not a list of such mappings.
    """
    if isinstance(items, str) or not isinstance(items, (list, tuple)):
        raise ValueError(
            f"expected a list of {{role, content}} messages, got {type(items).__name__}"
        )
    messages = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ValueError(
                f"message {index} must be an object with 'role' and 'content', "
                f"got {type(item).__name__}"
            )
        role = item.get("role")
        content = item.get("content")
        if role not in ROLES:
            raise ValueError(
                f"message {index} has role {role!r}; expected one of {', '.join(ROLES)}"
            )
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ValueError(
                f"message {index} content must be a string, got {type(content).__name__}"
            )
        _check_encodable(content, f"message {index} content")
        messages.append(Message(role=role, content=content))
    return tuple(messages)


def _check_encodable(text: str, field_name: str) -> None:
    """Reject text with lone surrogates, which no UTF-8 file can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{field_name} has an invalid Unicode character at position {error.start} "
            "(a lone surrogate such as \\ud800); fix the text encoding"
        ) from None
