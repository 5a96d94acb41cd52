"""OpenRLHF's remote reward protocol: read plain-text samples, return rewards.

OpenRLHF posts ``{"query": [...], "prompts": [...], "labels": [...]}`` to the
URL given by ``--remote_rm_url`` (``--reward.remote_url`` in releases with
dotted options). Each query is the decoded prompt and response, special
tokens included. Each prompt is the string the policy generated from, after
the chat template when one was applied. This module turns those strings
into a conversation and a completion:

1. The completion is the text after the prompt's first occurrence in the
   query. When the prompt is missing or is not found, the query is split at
   its last assistant turn marker of a known chat template.
2. End-of-turn and padding tokens (:data:`DEFAULT_END_TOKENS`) and
   surrounding whitespace are stripped from the end of the completion.
3. The prompt string is read as messages when it uses a known chat template
   (ChatML, Llama 3, Gemma); otherwise the whole string is one user message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from rbr.data.types import ROLES, Message
from rbr.policy.spec import Policy
from rbr.reward.pipeline import RewardRequest
from rbr.reward.rule_based import RewardBreakdown
from rbr.serve.schemas import LabelFields, OpenRLHFRequest, ServeError, validation_error

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
"""Tokens removed from the end of a completion, repeatedly, in any order."""

BEGIN_TOKENS: tuple[str, ...] = ("<|begin_of_text|>", "<bos>", "<s>")
"""Tokens removed from the start of a plain-text prompt."""

EXTRA_LOG_KEYS: tuple[str, ...] = ("rbr", "base", "rbr_applied", "rbr_unscored")
"""Keys of ``extra_logs``; every response has all of them, even when empty,
because OpenRLHF merges the logs of several responses key by key."""


@dataclass(frozen=True)
class ChatTemplate:
    """How one chat template marks turns.

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

    A final assistant turn with no content (the generation prompt a chat
    template appends) is dropped. Roles rbr does not know are read as
    ``user``.

    Raises:
        ValueError: When the prompt contains no text.
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
    plain = text.strip()
    for token in BEGIN_TOKENS:
        plain = plain.removeprefix(token).lstrip()
    if not plain:
        raise ValueError("the prompt is empty")
    return (Message("user", plain),)


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
    """Remove end-of-turn and padding tokens and whitespace from both ends."""
    text = text.strip()
    stripped = True
    while stripped:
        stripped = False
        for token in end_tokens:
            if token and text.endswith(token):
                text = text[: -len(token)].rstrip()
                stripped = True
    return text


def openrlhf_requests(
    body: OpenRLHFRequest,
    policy: Policy,
    *,
    end_tokens: Sequence[str] = DEFAULT_END_TOKENS,
    request_id: str = "",
) -> list[RewardRequest]:
    """Turn an OpenRLHF body into reward requests, one per query.

    Raises:
        ServeError: 422 naming the field, when a list has the wrong length, a
            query cannot be split or a label is not understood.
    """
    n = len(body.query)
    prompts = _column(body.prompts, n, "prompts")
    labels = _column(body.labels, n, "labels")
    requests = []
    for i, query in enumerate(body.query):
        try:
            prompt_text, completion = split_query(query, prompts[i], end_tokens)
            prompt = parse_prompt(prompt_text)
        except ValueError as error:
            field = f"query[{i}]"
            raise _invalid(field, str(error)) from None
        fields = read_label(labels[i], policy, f"labels[{i}]")
        requests.append(
            RewardRequest(
                prompt,
                completion,
                fields.response_type,
                fields.category,
                fields.base_reward,
                f"{request_id}:{i}" if request_id else str(i),
            )
        )
    return requests


def read_label(label: Any, policy: Policy, field: str) -> LabelFields:
    """Read one OpenRLHF label as routing fields.

    A string names a response type of the policy or else a content-policy
    category; an object may carry ``response_type``, ``category`` and
    ``base_reward``; null or an empty string carries nothing.

    Raises:
        ServeError: 422 naming ``field`` for any other value.
    """
    if label is None:
        return LabelFields()
    if isinstance(label, dict):
        try:
            return LabelFields.model_validate(label)
        except ValidationError as error:
            raise validation_error(error, field) from None
    if not isinstance(label, str):
        raise _invalid(
            field,
            f"expected a string, an object or null, got {type(label).__name__}",
        )
    name = label.strip()
    if not name:
        return LabelFields()
    try:
        return LabelFields(response_type=policy.response_type(name).name)
    except KeyError:
        pass
    try:
        policy.response_type_for_category(name)
    except KeyError:
        types = ", ".join(repr(t) for t in policy.response_types)
        categories = ", ".join(repr(c) for c in policy.content_policy)
        raise _invalid(
            field,
            f"{label!r} is neither a response type ({types}) nor a content "
            f"category ({categories}) of policy {policy.name!r}",
        ) from None
    return LabelFields(category=name)


def openrlhf_response(
    results: Sequence[RewardBreakdown], *, unscored_rbr: float
) -> dict[str, Any]:
    """Build the OpenRLHF reply: rewards, scores and per-sample extra logs.

    A sample whose RBR term could not be computed gets ``base +
    unscored_rbr`` as its reward, and 1.0 in ``extra_logs["rbr_unscored"]``.
    ``scores`` repeats ``rewards``.
    """
    logs: dict[str, list[float]] = {key: [] for key in EXTRA_LOG_KEYS}
    rewards = []
    for result in results:
        unscored = result.response_type is not None and result.total is None
        rbr = unscored_rbr if unscored else (result.rbr or 0.0)
        total = result.base + rbr if unscored else result.total
        rewards.append(_finite(total))
        logs["rbr"].append(_finite(rbr))
        logs["base"].append(_finite(result.base))
        logs["rbr_applied"].append(0.0 if result.response_type is None else 1.0)
        logs["rbr_unscored"].append(1.0 if unscored else 0.0)
    return {"rewards": rewards, "scores": list(rewards), "extra_logs": logs}


def _finite(value: float | None) -> float:
    if value is None or not math.isfinite(value):
        raise ValueError(f"reward {value!r} is not a finite number")
    return float(value)


def _column(values: list[Any] | None, n: int, name: str) -> list[Any]:
    if values is None:
        return [None] * n
    if len(values) != n:
        raise _invalid(name, f"has {len(values)} entries but 'query' has {n}")
    return values


def _invalid(field: str, message: str) -> ServeError:
    return ServeError(
        422,
        "invalid_request",
        f"invalid field {field!r}: {message}",
        fields=[{"field": field, "message": message}],
    )
