"""Conversions between RL trainer formats and rbr messages, and dataset rows.

Trainers hand rewards a prompt and a completion in their own shapes: TRL as a
string or a list of ``{role, content}`` messages, verl and OpenRLHF as decoded
text plus whatever the dataset row carried. The helpers here turn those shapes
into :class:`~rbr.data.types.Message` tuples and text, and build dataset rows
in the layout each trainer's reward entry point in this package reads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rbr.data.io import iter_rows
from rbr.data.types import Message, Record, messages_from_mapping, prompt_hash
from rbr.errors import DataError, RbrError
from rbr.policy.spec import Policy
from rbr.reward.pipeline import RewardRequestError, check_base_reward

PromptParser = Callable[[str], Sequence[Message]]
"""Turns a prompt string (for example one with a chat template applied) into messages."""


class IntegrationError(RbrError):
    """A trainer passed a prompt, completion or label rbr cannot read."""


def prompt_messages(
    value: Any, *, parser: PromptParser | None = None, where: str = "prompt"
) -> tuple[Message, ...]:
    """Convert a trainer's prompt into rbr messages.

    A list of ``{role, content}`` mappings (also a tuple or a NumPy array, as
    Parquet readers return them) keeps its roles. A string goes through
    ``parser`` when one is given, and otherwise becomes one user message
    holding the whole string, chat template markup included.

    Raises:
        IntegrationError: When the value is neither, a message is malformed,
            or the result is empty.
    """
    if isinstance(value, str):
        messages = tuple(parser(value)) if parser else (Message("user", value),)
    elif isinstance(value, Mapping):
        raise IntegrationError(
            f"{where}: expected a string or a list of {{role, content}} messages, "
            f"got one mapping with keys {sorted(value)}; wrap it in a list"
        )
    elif _is_sequence(value):
        try:
            messages = messages_from_mapping([_plain_message(m) for m in value])
        except ValueError as error:
            raise IntegrationError(f"{where}: {error}") from None
    else:
        raise IntegrationError(
            f"{where}: expected a string or a list of {{role, content}} messages, "
            f"got {type(value).__name__}"
        )
    if not messages:
        raise IntegrationError(f"{where}: the prompt has no messages")
    return messages


def completion_text(value: Any, *, where: str = "completion") -> str:
    """Return the text of a completion: a string, or a list of messages.

    For a list, the content of the last assistant message is the completion
    (a tool-calling completion may hold tool results before the final reply).

    Raises:
        IntegrationError: When the value is neither or has no assistant message.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) or not _is_sequence(value):
        raise IntegrationError(
            f"{where}: expected a string or a list of messages, got "
            f"{type(value).__name__}"
        )
    for message in reversed(list(value)):
        if isinstance(message, Mapping) and message.get("role") == "assistant":
            return _content_text(message.get("content"), where)
    raise IntegrationError(f"{where}: the completion has no assistant message")


def optional_text(value: Any) -> str | None:
    """Return a dataset cell as a stripped string, or None when it is empty.

    None, NaN (how pandas stores a missing string) and blank strings count as
    empty.
    """
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = str(value).strip()
    return text or None


def split_label(label: str, policy: Policy) -> tuple[str | None, str | None]:
    """Read a label as ``(response_type, category)`` of the policy.

    A label that names a response type is one (checked first), otherwise it
    must name a content-policy category.

    Raises:
        IntegrationError: When the label names neither.
    """
    try:
        policy.response_type(label)
        return label, None
    except KeyError:
        pass
    try:
        policy.response_type_for_category(label)
        return None, label
    except KeyError:
        pass
    raise IntegrationError(
        f"label {label!r} names neither a response type ("
        f"{', '.join(policy.response_types)}) nor a content category ("
        f"{', '.join(policy.content_policy)}) of policy {policy.name!r}"
    )


def label_fields(label: Any, policy: Policy, *, where: str) -> Mapping[str, Any]:
    """Read a trainer's label column as a mapping of routing fields.

    A mapping is returned as it is (it may carry ``messages``,
    ``response_type``, ``category``, ``base_reward`` and other keys). A
    string that starts with ``{`` is read as a JSON object, the label
    :func:`openrlhf_rows` writes. Any other string is read by
    :func:`split_label` into ``response_type`` and ``category``; None or a
    blank string gives an empty mapping.

    Raises:
        IntegrationError: Prefixed with ``where``, for invalid JSON, another
            type or a name the policy lacks.
    """
    if isinstance(label, str) and label.lstrip().startswith("{"):
        label = parse_json_label(label, where=where)
    if isinstance(label, Mapping):
        return label
    if label is not None and not isinstance(label, str):
        raise IntegrationError(
            f"{where} must be a mapping or a response type or category name, got "
            f"{type(label).__name__}"
        )
    text = optional_text(label)
    if text is None:
        return {}
    try:
        response_type, category = split_label(text, policy)
    except IntegrationError as error:
        raise IntegrationError(f"{where}: {error}") from None
    return {"response_type": response_type, "category": category}


def parse_json_label(text: str, *, where: str) -> Mapping[str, Any]:
    """Parse a label written as a JSON object string, as :func:`openrlhf_rows` does.

    Raises:
        IntegrationError: Prefixed with ``where``, when the text is not a JSON
            object.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise IntegrationError(
            f"{where} looks like JSON but is invalid: {error.msg} at column "
            f"{error.colno}"
        ) from None
    if not isinstance(value, Mapping):
        raise IntegrationError(
            f"{where} must be a JSON object, got {type(value).__name__}"
        )
    return value


def label_text(fields: Mapping[str, Any], key: str, *, where: str) -> str | None:
    """Return a string field of a label mapping, or None when it is empty.

    Raises:
        IntegrationError: When the value is neither a string nor empty.
    """
    value = fields.get(key)
    if value is not None and not isinstance(value, str):
        if isinstance(value, float) and math.isnan(value):
            return None
        raise IntegrationError(
            f"{where}: {key!r} must be a string or null, got "
            f"{type(value).__name__} {value!r}"
        )
    return optional_text(value)


def base_reward_value(value: Any, *, where: str) -> float | None:
    """Return a base reward carried in a dataset row, or None when it is absent.

    Raises:
        IntegrationError: Naming ``where``, when the value is not a finite
            number.
    """
    try:
        return check_base_reward(value, where=where)
    except RewardRequestError as error:
        raise IntegrationError(str(error)) from None


@dataclass(frozen=True, slots=True)
class PromptRow:
    """One RL prompt with the response type or category it needs.

    Attributes:
        prompt: The conversation, ending with the user turn.
        response_type: Response type, when known.
        category: Content-policy category, when known.
        prompt_id: Identifier of the prompt.
    """

    prompt: tuple[Message, ...]
    response_type: str | None = None
    category: str | None = None
    prompt_id: str = ""

    def messages(self) -> list[dict[str, str]]:
        """Return the prompt as a list of ``{role, content}`` dictionaries."""
        return [m.to_dict() for m in self.prompt]


def prompts_from_records(records: Iterable[Record]) -> list[PromptRow]:
    """Return the distinct prompts of labelled records, in first-seen order."""
    rows: dict[str, PromptRow] = {}
    for record in records:
        if record.prompt_id not in rows:
            rows[record.prompt_id] = PromptRow(
                record.sample.prompt,
                record.sample.response_type,
                record.category,
                record.prompt_id,
            )
    return list(rows.values())


def read_prompts(path: str | Path) -> list[PromptRow]:
    """Read RL prompts from JSONL or Parquet rows.

    Each row needs ``prompt`` (a list of ``{role, content}`` messages or a
    string) and may have ``response_type``, ``category`` and ``prompt_id``.
    Other fields, ``completion`` included, are ignored, so files written for
    ``rbr fit`` work too (their repeated prompts are kept once).

    Raises:
        DataError: On a missing or invalid prompt, naming the file and line.
    """
    source = str(path)
    rows: dict[str, PromptRow] = {}
    for line, row in iter_rows(path):
        if "prompt" not in row:
            raise DataError(source, line, "missing field 'prompt'")
        try:
            prompt = prompt_messages(row["prompt"], where="field 'prompt'")
        except IntegrationError as error:
            raise DataError(source, line, str(error)) from None
        prompt_id = optional_text(row.get("prompt_id")) or prompt_hash(prompt)
        if prompt_id not in rows:
            rows[prompt_id] = PromptRow(
                prompt,
                optional_text(row.get("response_type")),
                optional_text(row.get("category")),
                prompt_id,
            )
    return list(rows.values())


def trl_rows(prompts: Iterable[PromptRow]) -> list[dict[str, Any]]:
    """Build rows of a conversational TRL prompt dataset.

    Columns: ``prompt`` (messages), ``response_type``, ``category`` and
    ``prompt_id``; :class:`~rbr.integrations.trl_reward.RBRRewardFunction`
    reads the middle two by default.
    """
    return [
        {
            "prompt": row.messages(),
            "response_type": row.response_type,
            "category": row.category,
            "prompt_id": row.prompt_id,
        }
        for row in prompts
    ]


def verl_rows(
    prompts: Iterable[PromptRow], *, data_source: str = "rbr_safety"
) -> list[dict[str, Any]]:
    """Build rows of a verl RL dataset (write them to Parquet).

    ``prompt`` is what verl renders and generates from. verl does not pass
    the prompt column to reward functions, so the reward reads the
    conversation from ``extra_info["prompt"]``. It reads the routing fields
    from ``extra_info`` too. ``reward_model.ground_truth`` repeats the
    response type, or the category when only that is known.
    """
    rows = []
    for row in prompts:
        messages = row.messages()
        rows.append(
            {
                "data_source": data_source,
                "prompt": messages,
                "ability": "safety",
                "reward_model": {
                    "style": "rule",
                    "ground_truth": row.response_type or row.category or "",
                },
                "extra_info": {
                    "prompt": messages,
                    "response_type": row.response_type,
                    "category": row.category,
                    "prompt_id": row.prompt_id,
                },
            }
        )
    return rows


def openrlhf_rows(prompts: Iterable[PromptRow]) -> list[dict[str, Any]]:
    """Build rows of an OpenRLHF prompt dataset.

    Use ``--input_key prompt --label_key label --apply_chat_template``. The
    label is a JSON string with the conversation and routing fields, which is
    how :func:`rbr.integrations.openrlhf_reward.reward_func` gets the prompt
    as messages rather than as chat-template text.
    """
    rows = []
    for row in prompts:
        messages = row.messages()
        label = {
            "messages": messages,
            "response_type": row.response_type,
            "category": row.category,
        }
        rows.append({"prompt": messages, "label": json.dumps(label)})
    return rows


def _is_sequence(value: Any) -> bool:
    # NumPy arrays (from Parquet through pandas) are sequences here, strings not.
    if isinstance(value, (str, bytes, Mapping)):
        return False
    return isinstance(value, Sequence) or getattr(value, "ndim", 0) >= 1


def _plain_message(message: Any) -> Any:
    if not isinstance(message, Mapping):
        return message
    content = message.get("content")
    if content is None or isinstance(content, str):
        return message
    return {**message, "content": _content_text(content, "message content")}


def _content_text(content: Any, where: str) -> str:
    """Join the text parts of a content value (a string or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not _is_sequence(content):
        raise IntegrationError(
            f"{where}: expected a string or a list of content parts, got "
            f"{type(content).__name__}"
        )
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, Mapping) and part.get("type", "text") == "text":
            texts.append(str(part.get("text", "")))
    return "".join(texts)
