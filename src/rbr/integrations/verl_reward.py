"""The rule-based reward as a verl custom reward function.

verl loads a reward function from a file path and calls it with
``data_source``, ``solution_str`` (the decoded response), ``ground_truth``
(``reward_model.ground_truth`` of the dataset row) and ``extra_info``, plus
any ``custom_reward_function.reward_kwargs``. Its ``batch`` reward manager
calls a function with the plural names (``data_sources``, ``solution_strs``,
``ground_truths``, ``extra_infos``) once per batch instead. Select this file
with (current verl; older releases use the same keys without ``reward.``)::

    reward.custom_reward_function.path=/path/to/rbr/integrations/verl_reward.py
    reward.custom_reward_function.name=compute_score        # one call per sample
    # or, one call per batch:
    reward.custom_reward_function.name=compute_score_batch
    reward.reward_manager.name=batch

Inputs this module reads:

- The reward settings YAML file from ``$RBR_REWARD_CONFIG`` (or the
  ``config_path`` reward kwarg). Each process builds the pipeline once.
- The conversation from ``extra_info["prompt"]``: a list of ``{role,
  content}`` messages (or a string, which becomes one user message). verl
  does not pass the prompt column to reward functions, so the dataset must
  copy it there; :func:`rbr.integrations.convert.verl_rows` does.
- The routing fields from ``extra_info["response_type"]`` and
  ``extra_info["category"]``. When both are empty they come from
  ``ground_truth``, read as a response type name, else a category name, or
  as a mapping with those keys.
- An optional precomputed base reward from ``extra_info["base_reward"]``,
  else from the ``base_reward`` key of a ``ground_truth`` mapping.

Each result is a dictionary with the same keys for every sample, and verl
logs each key. The keys are ``score`` (the reward), ``rbr`` (the RBR term),
``base``, ``rbr_applied`` (1.0 when the prompt has a response type),
``rbr_unscored`` (1.0 when the grader failed) and ``class_<class>`` (class
probabilities).
``rbr`` and ``class_<class>`` are 0.0 where ``rbr_applied`` is 0.0, so divide
their means by the mean of ``rbr_applied``. These keys match the
``extra_logs`` of the OpenRLHF entry point and of ``rbr serve``.

verl needs a number for every sample. When the grader could not score a
proposition the reward needs, the score is the base reward plus
``unscored_rbr`` (default ``$RBR_UNSCORED_RBR``, else 0.0) and
``rbr_unscored`` is 1.0.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from typing import Any

from rbr.integrations.convert import (
    IntegrationError,
    base_reward_value,
    label_fields,
    label_text,
    optional_text,
    prompt_messages,
)
from rbr.integrations.scoring import (
    env_unlabelled,
    env_unscored_rbr,
    reward_log,
    shared_scorer,
    total_or_fallback,
)
from rbr.policy.spec import CLASS_ORDER, Policy
from rbr.reward.pipeline import RewardRequest
from rbr.reward.routing import RoutingError
from rbr.reward.rule_based import RewardBreakdown

PROMPT_KEY = "prompt"
"""Key of ``extra_info`` that contains the conversation."""


def compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    *,
    config_path: str | os.PathLike[str] | None = None,
    unscored_rbr: float | None = None,
    unlabelled: str | None = None,
    details: bool = True,
    **kwargs: Any,
) -> dict[str, float] | float:
    """Score one response; verl's per-sample reward managers call this.

    Calls from many threads at once are scored together in shared batches
    (see :class:`rbr.integrations.batching.BatchingScorer`).

    Args:
        data_source: The row's data source, used in error messages.
        solution_str: The decoded response.
        ground_truth: Response type or category name, a mapping with
            ``response_type``/``category``, or empty.
        extra_info: The row's ``extra_info``; must hold the conversation.
        config_path: Reward settings file; defaults to ``$RBR_REWARD_CONFIG``.
        unscored_rbr: RBR term of a response the grader could not score;
            defaults to ``$RBR_UNSCORED_RBR``, else 0.0.
        unlabelled: ``route`` or ``no_rbr`` (see
            :data:`rbr.integrations.scoring.Unlabelled`); defaults to
            ``$RBR_UNLABELLED``, else ``route``.
        details: Return the dictionary described in the module docstring;
            False returns the reward alone.
        **kwargs: Other arguments verl passes; ignored.

    Raises:
        IntegrationError: On a missing settings file or prompt, or an
            unknown label.
        RoutingError: When the response type cannot be decided.
    """
    return compute_score_batch(
        [data_source],
        [solution_str],
        [ground_truth],
        [extra_info],
        config_path=config_path,
        unscored_rbr=unscored_rbr,
        unlabelled=unlabelled,
        details=details,
    )[0]


def compute_score_batch(
    data_sources: Sequence[Any],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Mapping[str, Any] | None],
    *,
    config_path: str | os.PathLike[str] | None = None,
    unscored_rbr: float | None = None,
    unlabelled: str | None = None,
    details: bool = True,
    **kwargs: Any,
) -> list[dict[str, float] | float]:
    """Score a batch; verl's ``batch`` reward manager calls this.

    The arguments are those of :func:`compute_score`, one list entry per
    sample.

    Raises:
        IntegrationError: When the lists differ in length, or as
            :func:`compute_score`.
        RoutingError: When a response type cannot be decided.
    """
    n = len(solution_strs)
    for name, values in (
        ("data_sources", data_sources),
        ("ground_truths", ground_truths),
        ("extra_infos", extra_infos),
    ):
        if len(values) != n:
            raise IntegrationError(
                f"got {len(values)} {name} for {n} solution_strs; verl passes one "
                "entry per sample"
            )
    scorer = shared_scorer(config_path, unlabelled or env_unlabelled())
    if unscored_rbr is None:
        unscored_rbr = env_unscored_rbr()
    policy = scorer.pipeline.policy
    requests = [
        _request(
            solution_strs[i],
            ground_truths[i],
            extra_infos[i],
            policy,
            _where(i, data_sources[i]),
        )
        for i in range(n)
    ]
    try:
        breakdowns = scorer.score(requests)
    except RoutingError as error:
        raise RoutingError(
            f"{error}. In a verl dataset, set extra_info['response_type'] or "
            "extra_info['category'] (or ground_truth) for safety prompts, and "
            "set RBR_UNLABELLED=no_rbr to give the other prompts the base "
            "reward only"
        ) from None
    results: list[dict[str, float] | float] = []
    for breakdown in breakdowns:
        value = total_or_fallback(breakdown, unscored_rbr)
        results.append(_details(breakdown, value) if details else value)
    return results


def _where(index: int, data_source: Any) -> str:
    return f"sample {index} (data_source {data_source!r})"


def _request(
    solution: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None,
    policy: Policy,
    where: str,
) -> RewardRequest:
    if not isinstance(solution, str):
        raise IntegrationError(
            f"{where}: solution_str must be a string (the decoded response), got "
            f"{type(solution).__name__}"
        )
    info = extra_info if extra_info is not None else {}
    if not isinstance(info, Mapping):
        raise IntegrationError(
            f"{where}: extra_info must be a mapping, got {type(info).__name__}"
        )
    if PROMPT_KEY not in info:
        raise IntegrationError(
            f"{where}: extra_info has no {PROMPT_KEY!r} key; copy the prompt "
            "messages into extra_info when preparing the dataset (see "
            "rbr.integrations.convert.verl_rows)"
        )
    prompt = prompt_messages(info[PROMPT_KEY], where=f"{where}: extra_info['prompt']")
    response_type = label_text(info, "response_type", where=f"{where}: extra_info")
    category = label_text(info, "category", where=f"{where}: extra_info")
    truth = f"{where}: ground_truth"
    fields: Mapping[str, Any] = {}
    if (response_type is None and category is None) or _is_structured(ground_truth):
        fields = label_fields(ground_truth, policy, where=truth)
        _check_key_spelling(fields, where=truth)
    truth_type = label_text(fields, "response_type", where=truth)
    truth_category = label_text(fields, "category", where=truth)
    if response_type is None and category is None:
        response_type, category = truth_type, truth_category
    else:
        _check_agreement("response_type", response_type, truth_type, where=where)
        _check_agreement("category", category, truth_category, where=where)
    truth_base = base_reward_value(
        fields.get("base_reward"), where=f"{truth}['base_reward']"
    )
    info_base = base_reward_value(
        info.get("base_reward"), where=f"{where}: extra_info['base_reward']"
    )
    base = info_base if info_base is not None else truth_base
    return RewardRequest(
        prompt=prompt,
        completion=solution,
        response_type=response_type,
        category=category,
        base_reward=base,
        request_id=optional_text(info.get("prompt_id")) or where,
    )


GROUND_TRUTH_KEYS = ("response_type", "category", "base_reward")
"""Keys of a ``ground_truth`` mapping that this reward function reads."""


def _check_key_spelling(fields: Mapping[str, Any], *, where: str) -> None:
    """Raise for a key that looks like a misspelled :data:`GROUND_TRUTH_KEYS` entry.

    Other keys pass, because a dataset may keep data for other reward
    functions in the same mapping.
    """
    for key in fields:
        if key in GROUND_TRUTH_KEYS:
            continue
        close = difflib.get_close_matches(str(key), GROUND_TRUTH_KEYS, n=1, cutoff=0.8)
        if close:
            raise IntegrationError(
                f"{where} has key {key!r}; did you mean {close[0]!r}? The keys "
                f"read are {', '.join(GROUND_TRUTH_KEYS)}"
            )


def _check_agreement(
    key: str, from_info: str | None, from_truth: str | None, *, where: str
) -> None:
    """Raise when ``extra_info`` and ``ground_truth`` give different routing values."""
    if from_info is not None and from_truth is not None and from_info != from_truth:
        raise IntegrationError(
            f"{where}: extra_info[{key!r}] is {from_info!r} but ground_truth gives "
            f"{from_truth!r}; make the two agree or drop one of them"
        )


def _is_structured(ground_truth: Any) -> bool:
    """Return whether ``ground_truth`` is a mapping or a JSON object string."""
    if isinstance(ground_truth, Mapping):
        return True
    return isinstance(ground_truth, str) and ground_truth.lstrip().startswith("{")


def _details(breakdown: RewardBreakdown, value: float) -> dict[str, float]:
    result = {"score": value, **reward_log(breakdown, value)}
    for name in CLASS_ORDER:
        result[f"class_{name}"] = breakdown.classes.get(name, 0.0)
    return result
