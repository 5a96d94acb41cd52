"""The rule-based reward as a TRL reward function (``GRPOTrainer``, ``RLOOTrainer``).

TRL (checked against 1.16.0) calls each entry of ``reward_funcs`` with
keyword arguments ``prompts``, ``completions`` and ``completion_ids``, one
list per dataset column other than ``prompt``, and ``trainer_state``,
``log_extra`` and ``log_metric``. It expects one float or None per completion
back; None means "this reward does not apply", and TRL leaves that reward
out of the sum for that completion. It logs each function under its
``__name__`` (``rewards/<name>/mean``), and awaits functions whose
``__call__`` is a coroutine function, running them alongside the others.

Usage::

    reward = RBRRewardFunction("reward.yaml")
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], ...)

Prompts may be conversational (a list of ``{role, content}`` messages, kept
as they are) or standard (a string). A string prompt becomes one user message
holding the whole string, chat template markup included, unless
``prompt_parser`` or ``messages_column`` is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from typing import Any

from rbr.data.types import Message
from rbr.integrations.convert import (
    IntegrationError,
    PromptParser,
    completion_text,
    optional_text,
    prompt_messages,
)
from rbr.integrations.scoring import (
    DEFAULT_LOGGED_PROPOSITIONS,
    check_unlabelled,
    reward_value,
    router_mode,
    summarize,
    top_class,
)
from rbr.reward.config import RewardSettings, build_pipeline
from rbr.reward.pipeline import RewardPipeline, RewardRequest
from rbr.reward.rule_based import RewardBreakdown

logger = logging.getLogger(__name__)

RewardSource = RewardPipeline | RewardSettings | Mapping[str, Any] | str | PathLike[str]
"""A built pipeline, reward settings, a settings mapping or a settings file path."""


class BaseRBRRewardFunction:
    """The conversion, scoring and logging both TRL reward functions share.

    Args:
        reward: A :class:`RewardPipeline` (used as is, never closed here), or
            settings to build one from: a :class:`RewardSettings`, a mapping
            of its keys, or the path of a settings YAML file.
        response_type_column: Dataset column with each prompt's response type.
        category_column: Dataset column with each prompt's content-policy
            category.
        rbr_only: Return only the RBR term, None for prompts without a
            response type. Use it when another reward function supplies the
            helpful-only reward and TRL sums the two. When False, return base
            plus RBR term, and the base reward alone for prompts without a
            response type.
        unlabelled: ``"route"`` sends prompts with neither column set to the
            pipeline's prompt classifier (an error without one); ``"no_rbr"``
            gives them no RBR term.
        name: The ``__name__`` TRL logs the reward under, also the prefix of
            the component metrics.
        messages_column: Dataset column holding each prompt as messages, read
            in place of ``prompts`` (for datasets whose prompts are
            pre-rendered strings).
        prompt_parser: Turns string prompts into messages; without one a
            string prompt is one user message.
        log_propositions: Propositions whose mean probability is logged;
            None logs every graded proposition.
        log_completions: Add ``<name>_response_type``, ``<name>_class`` and
            ``<name>_term`` columns to TRL's completions table.

    Raises:
        IntegrationError: When ``unlabelled`` is unknown.
        RewardConfigError, PolicyError, WeightsError, GraderError: When the
            pipeline cannot be built from the settings.
    """

    def __init__(
        self,
        reward: RewardSource,
        *,
        response_type_column: str | None = "response_type",
        category_column: str | None = "category",
        rbr_only: bool = False,
        unlabelled: str = "route",
        name: str = "rbr",
        messages_column: str | None = None,
        prompt_parser: PromptParser | None = None,
        log_propositions: Sequence[str] | None = DEFAULT_LOGGED_PROPOSITIONS,
        log_completions: bool = True,
    ) -> None:
        self.__name__ = name
        self.response_type_column = response_type_column
        self.category_column = category_column
        self.rbr_only = rbr_only
        self.unlabelled = check_unlabelled(unlabelled)
        self._router_mode = router_mode(self.unlabelled)
        self.messages_column = messages_column
        self.prompt_parser = prompt_parser
        self.log_propositions = (
            None if log_propositions is None else tuple(log_propositions)
        )
        self.log_completions = log_completions
        self.last_metrics: dict[str, float] = {}
        """Component means of the latest batch, also when TRL has no log_metric."""
        self._settings: RewardSettings | None = None
        self._owned: RewardPipeline | None = None
        if isinstance(reward, RewardPipeline):
            self.pipeline = reward
        else:
            self._settings = _settings(reward)
            self.pipeline = self._owned = build_pipeline(self._settings)

    def close(self) -> None:
        """Release the grader of a pipeline this object built from settings."""
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> BaseRBRRewardFunction:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # TRL's asynchronous rollout worker pickles reward functions into a
        # child process; the child rebuilds the pipeline from the settings.
        if self._settings is None:
            raise TypeError(
                f"{type(self).__name__} built from a RewardPipeline cannot be "
                "pickled; build it from reward settings (a path, mapping or "
                "RewardSettings) instead"
            )
        state = dict(self.__dict__)
        state.pop("pipeline")
        state["_owned"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        assert self._settings is not None
        self.pipeline = self._owned = build_pipeline(self._settings)

    def _requests(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        columns: Mapping[str, Any],
    ) -> list[RewardRequest]:
        n = len(completions)
        if len(prompts) != n:
            raise IntegrationError(
                f"got {len(prompts)} prompts for {n} completions; TRL passes one "
                "prompt per completion"
            )
        source = prompts
        if self.messages_column is not None:
            source = self._column(columns, self.messages_column, n, required=True)
        types = self._column(columns, self.response_type_column, n)
        cats = self._column(columns, self.category_column, n)
        state = columns.get("trainer_state")
        step = getattr(state, "global_step", None)
        prefix = f"step{step}-" if step is not None else ""
        return [
            RewardRequest(
                prompt=self._prompt(source[i], i),
                completion=completion_text(completions[i], where=f"completion {i}"),
                response_type=optional_text(types[i]),
                category=optional_text(cats[i]),
                request_id=f"{prefix}{i}",
            )
            for i in range(n)
        ]

    def _prompt(self, value: Any, index: int) -> tuple[Message, ...]:
        return prompt_messages(
            value, parser=self.prompt_parser, where=f"prompt {index}"
        )

    def _column(
        self,
        columns: Mapping[str, Any],
        name: str | None,
        n: int,
        *,
        required: bool = False,
    ) -> Sequence[Any]:
        if name is None or (name not in columns and not required):
            return [None] * n
        if name not in columns:
            hooks = ("trainer_state", "log_extra", "log_metric", "environments")
            known = sorted(k for k in columns if k not in hooks)
            raise IntegrationError(
                f"dataset column {name!r} is missing; the reward got columns "
                f"{', '.join(known) or 'none'}"
            )
        values = columns[name]
        if len(values) != n:
            raise IntegrationError(
                f"dataset column {name!r} has {len(values)} values for {n} completions"
            )
        return values

    def _finish(
        self, breakdowns: Sequence[RewardBreakdown], columns: Mapping[str, Any]
    ) -> list[float | None]:
        self.last_metrics = summarize(breakdowns, self.log_propositions)
        log_metric: Callable[[str, float], None] | None = columns.get("log_metric")
        if log_metric is not None:
            for key, value in self.last_metrics.items():
                log_metric(f"{self.__name__}/{key}", value)
        else:
            logger.debug("%s component means: %s", self.__name__, self.last_metrics)
        log_extra: Callable[[str, list[Any]], None] | None = columns.get("log_extra")
        if self.log_completions and log_extra is not None:
            log_extra(
                f"{self.__name__}_response_type", [b.response_type for b in breakdowns]
            )
            log_extra(f"{self.__name__}_class", [top_class(b) for b in breakdowns])
            log_extra(f"{self.__name__}_term", [b.rbr for b in breakdowns])
        return [reward_value(b, rbr_only=self.rbr_only) for b in breakdowns]


class RBRRewardFunction(BaseRBRRewardFunction):
    """A synchronous TRL reward function that scores completions with the RBR.

    See :class:`BaseRBRRewardFunction` for the arguments. Each call scores the whole
    batch in one pipeline call, so per-prompt base normalization includes
    every completion of a prompt that TRL generated in that batch.
    """

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Any] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        """Return one reward per completion (None where it does not apply).

        Raises:
            IntegrationError: On a prompt, completion or column it cannot read.
            RoutingError: When a prompt's response type cannot be decided.
        """
        requests = self._requests(prompts, completions, columns)
        breakdowns = self.pipeline.score(requests, unlabelled=self._router_mode)
        return self._finish(breakdowns, columns)


class AsyncRBRRewardFunction(BaseRBRRewardFunction):
    """An asynchronous TRL reward function that scores completions with the RBR.

    TRL awaits it alongside its other asynchronous reward functions; the
    scoring itself runs in a worker thread (see
    :meth:`RewardPipeline.ascore`), so it overlaps with them while an LLM
    grader waits on its server. See :class:`BaseRBRRewardFunction` for the arguments.
    """

    async def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Any] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        """Return one reward per completion (None where it does not apply).

        Raises:
            IntegrationError: On a prompt, completion or column it cannot read.
            RoutingError: When a prompt's response type cannot be decided.
        """
        requests = self._requests(prompts, completions, columns)
        breakdowns = await self.pipeline.ascore(requests, unlabelled=self._router_mode)
        return self._finish(breakdowns, columns)


def _settings(
    reward: RewardSettings | Mapping[str, Any] | str | PathLike[str],
) -> RewardSettings:
    if isinstance(reward, RewardSettings):
        return reward
    if isinstance(reward, Mapping):
        return RewardSettings.from_mapping(dict(reward))
    return RewardSettings.load(reward)
