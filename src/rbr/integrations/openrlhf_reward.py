"""The rule-based reward as an OpenRLHF ``reward_func`` file.

OpenRLHF loads a Python file given as ``--remote_rm_url /path/file.py``
(``--reward.remote_url`` in releases with dotted options) and calls its
``reward_func(queries, prompts, labels)``. ``queries`` are the prompt and
response decoded together with special tokens kept. ``prompts`` are the
prompt strings (chat template applied with ``--apply_chat_template``), and
``labels`` the dataset's label column. It reads ``rewards``, ``scores`` and
``extra_logs`` (logged per key) from the returned dictionary. This contract
was read from OpenRLHF's source (``SingleTurnAgentExecutor``, main branch);
OpenRLHF itself was not installed or run with this module. Its single-turn
executor calls the function with one sample at a time from many threads,
which :class:`rbr.integrations.batching.BatchingScorer` gathers into shared
batches.

Use it with the settings file in ``$RBR_REWARD_CONFIG``::

    RBR_REWARD_CONFIG=/path/reward.yaml python -m openrlhf.cli.train_ppo_ray \\
        --remote_rm_url /path/to/rbr/integrations/openrlhf_reward.py \\
        --input_key prompt --label_key label --apply_chat_template ...

Labels: what :func:`rbr.integrations.convert.openrlhf_rows` writes, a JSON
object (as a string or a mapping) with ``messages`` (the prompt as
``{role, content}`` messages), ``response_type``, ``category`` and optionally
``base_reward``. A plain string label is a response type name, else a
category name. Without ``messages``, a prompt string in a known chat
template (ChatML, Llama 3, Gemma) is read as messages. Any other prompt
string becomes one user message, markup included, which LLM graders read
less well.

Queries are split into prompt and response as ``rbr serve`` splits them for
OpenRLHF's HTTP protocol (see :mod:`rbr.integrations.openrlhf_text`), with
end-of-turn and padding tokens (:data:`DEFAULT_END_TOKENS`, plus the JSON
list in ``$RBR_END_TOKENS``) and whitespace stripped from the response's end.
Unscored samples get their base reward plus ``$RBR_UNSCORED_RBR`` (default
0.0), and ``$RBR_UNLABELLED`` chooses what happens to samples without a
label (see :data:`rbr.integrations.scoring.Unlabelled`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from rbr.data.types import Message
from rbr.integrations.convert import (
    IntegrationError,
    base_reward_value,
    label_fields,
    label_text,
    prompt_messages,
)
from rbr.integrations.openrlhf_text import (
    DEFAULT_END_TOKENS,
    EXTRA_LOG_KEYS,
    plain_prompt,
    split_query,
    template_messages,
)
from rbr.integrations.scoring import (
    env_unlabelled,
    env_unscored_rbr,
    reward_log,
    shared_scorer,
    total_or_fallback,
)
from rbr.policy.spec import Policy
from rbr.reward.pipeline import RewardRequest
from rbr.reward.rule_based import RewardBreakdown

logger = logging.getLogger(__name__)

END_TOKENS_ENV = "RBR_END_TOKENS"
"""Environment variable with a JSON list of further tokens to strip."""

_plain_prompt_warned = False


def reward_func(
    queries: Sequence[str],
    prompts: Sequence[str | None] | None,
    labels: Sequence[Any] | None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Score decoded prompt-and-response strings for OpenRLHF.

    ``prompts`` or ``labels`` may be None, which counts as no prompt string
    or no label for every query, as in ``rbr serve``.

    Returns:
        ``{"rewards": tensor, "scores": tensor, "extra_logs": {...}}`` with
        float32 tensors of one value per query. ``scores`` repeats
        ``rewards``. ``extra_logs`` contains ``rbr`` (the RBR term, 0.0
        without a response type), ``base``, ``rbr_applied`` and
        ``rbr_unscored``.

    Raises:
        IntegrationError: On a missing settings file, an argument that is not
            a list, an unreadable label, or a query that contains neither its
            prompt nor an assistant turn marker of a known chat template.
        RoutingError: When a response type cannot be decided.
    """
    import torch

    queries = _argument_list(queries, "queries")
    n = len(queries)
    prompts = [None] * n if prompts is None else _argument_list(prompts, "prompts")
    labels = [None] * n if labels is None else _argument_list(labels, "labels")
    if len(prompts) != n or len(labels) != n:
        raise IntegrationError(
            f"got {n} queries, {len(prompts)} prompts and {len(labels)} labels; "
            "OpenRLHF passes one of each per sample"
        )
    scorer = shared_scorer(None, env_unlabelled())
    unscored_rbr = env_unscored_rbr()
    end_tokens = end_tokens_from_env()
    policy = scorer.pipeline.policy
    requests = [
        _request(queries[i], prompts[i], labels[i], policy, end_tokens, f"sample {i}")
        for i in range(n)
    ]
    breakdowns = scorer.score(requests)
    rewards = [total_or_fallback(b, unscored_rbr) for b in breakdowns]
    logs = _extra_logs(breakdowns, rewards)
    values = torch.tensor(rewards, dtype=torch.float32)
    return {
        "rewards": values,
        "scores": values.clone(),
        "extra_logs": {
            key: torch.tensor(column, dtype=torch.float32)
            for key, column in logs.items()
        },
    }


def end_tokens_from_env() -> tuple[str, ...]:
    """Return :data:`DEFAULT_END_TOKENS` plus those in ``$RBR_END_TOKENS``.

    Raises:
        IntegrationError: When the variable is not a JSON list of strings.
    """
    value = os.environ.get(END_TOKENS_ENV, "").strip()
    if not value:
        return DEFAULT_END_TOKENS
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, list) or not all(isinstance(s, str) for s in parsed):
        raise IntegrationError(
            f'{END_TOKENS_ENV} must be a JSON list of strings such as ["<|eom|>"], '
            f"got {value!r}"
        )
    return DEFAULT_END_TOKENS + tuple(s for s in parsed if s)


def _argument_list(values: Any, name: str) -> list[Any]:
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
        raise IntegrationError(
            f"{name} must be a list with one entry per sample, got "
            f"{type(values).__name__}"
        )
    return list(values)


def _request(
    query: Any,
    prompt: Any,
    label: Any,
    policy: Policy,
    end_tokens: Sequence[str],
    where: str,
) -> RewardRequest:
    if not isinstance(query, str):
        raise IntegrationError(
            f"{where}: query must be a string, got {type(query).__name__}"
        )
    if prompt is not None and not isinstance(prompt, str):
        raise IntegrationError(
            f"{where}: prompt must be a string or None, got {type(prompt).__name__}"
        )
    fields = label_fields(label, policy, where=f"{where}: label")
    try:
        prompt_text, completion = split_query(query, prompt, end_tokens)
    except ValueError as error:
        raise IntegrationError(f"{where}: {error}") from None
    messages = fields.get("messages")
    if messages is not None:
        conversation = prompt_messages(messages, where=f"{where}: label messages")
    else:
        conversation = _prompt_conversation(prompt_text, where)
    label_where = f"{where}: label"
    return RewardRequest(
        prompt=conversation,
        completion=completion,
        response_type=label_text(fields, "response_type", where=label_where),
        category=label_text(fields, "category", where=label_where),
        base_reward=base_reward_value(
            fields.get("base_reward"), where=f"{label_where} base_reward"
        ),
        request_id=where,
    )


def _prompt_conversation(prompt: str, where: str) -> tuple[Message, ...]:
    try:
        messages = template_messages(prompt)
        if messages is not None:
            return messages
        text = plain_prompt(prompt)
    except ValueError as error:
        raise IntegrationError(f"{where}: {error}") from None
    _warn_plain_prompt()
    return (Message("user", text),)


def _warn_plain_prompt() -> None:
    global _plain_prompt_warned
    if not _plain_prompt_warned:
        _plain_prompt_warned = True
        logger.warning(
            "labels carry no 'messages' and prompt strings use no known chat "
            "template (ChatML, Llama 3, Gemma), so each prompt string is graded "
            "as one user message; write labels with "
            "rbr.integrations.convert.openrlhf_rows to grade the conversation"
        )


def _extra_logs(
    breakdowns: Sequence[RewardBreakdown], rewards: Sequence[float]
) -> dict[str, list[float]]:
    logs: dict[str, list[float]] = {key: [] for key in EXTRA_LOG_KEYS}
    for breakdown, reward in zip(breakdowns, rewards):
        for key, value in reward_log(breakdown, reward).items():
            logs[key].append(value)
    return logs
