"""OpenRLHF's remote reward protocol: read plain-text samples, return rewards.

OpenRLHF posts ``{"query": [...], "prompts": [...], "labels": [...]}`` to the
URL given by ``--remote_rm_url`` (``--reward.remote_url`` in releases with
dotted options). Each query is the decoded prompt and response, special
tokens included. Each prompt is the string the policy generated from, after
the chat template when one was applied. This module turns those strings
into a conversation and a completion as
:mod:`rbr.integrations.openrlhf_text` describes, and reads each label as
routing fields.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from rbr.data.types import Message
from rbr.integrations.convert import IntegrationError, parse_json_label
from rbr.integrations.openrlhf_text import (
    DEFAULT_END_TOKENS,
    EXTRA_LOG_KEYS,
    parse_prompt,
    split_query,
)
from rbr.policy.spec import Policy
from rbr.reward.pipeline import RewardRequest
from rbr.reward.rule_based import RewardBreakdown
from rbr.serve.schemas import (
    LabelFields,
    OpenRLHFRequest,
    field_error,
    validation_error,
)


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
        fields = read_label(labels[i], policy, f"labels[{i}]")
        try:
            prompt_text, completion = split_query(query, prompts[i], end_tokens)
            if fields.messages is None:
                prompt = parse_prompt(prompt_text)
        except ValueError as error:
            field = f"query[{i}]"
            raise field_error(field, str(error)) from None
        if fields.messages is not None:
            prompt = tuple(Message(m.role, m.content) for m in fields.messages)
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
    category. An object, or a string holding a JSON object (the label
    :func:`rbr.integrations.convert.openrlhf_rows` writes), may carry
    ``messages``, ``response_type``, ``category`` and ``base_reward``. Null
    or an empty string carries nothing.

    Raises:
        ServeError: 422 naming ``field`` for any other value.
    """
    if label is None:
        return LabelFields()
    if isinstance(label, str) and label.lstrip().startswith("{"):
        try:
            label = dict(parse_json_label(label, where=field))
        except IntegrationError as error:
            raise field_error(field, str(error).removeprefix(f"{field} ")) from None
    if isinstance(label, dict):
        try:
            return LabelFields.model_validate(label)
        except ValidationError as error:
            raise validation_error(error, field) from None
    if not isinstance(label, str):
        raise field_error(
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
        raise field_error(
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
        raise field_error(name, f"has {len(values)} entries but 'query' has {n}")
    return values
