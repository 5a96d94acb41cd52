"""Decide which response type, if any, applies to each prompt.

A prompt's response type comes, in order of preference, from an explicit
response type, from a content-policy category mapped by the policy, or from a
prompt classifier that predicts the category. A category the policy maps to
no response type means the prompt gets no RBR term, only the base reward, and
so does a prompt with neither field when the caller routes with
``unlabelled="no_rbr"``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

from rbr.data.types import Message
from rbr.errors import RbrError
from rbr.policy.spec import Policy

logger = logging.getLogger(__name__)

UnlabelledMode = Literal["classify", "no_rbr"]
"""The handling of prompts that carry neither a response type nor a category.
``classify`` sends them to the prompt classifier, which is an error without
one. ``no_rbr`` gives them no RBR term, only the base reward."""

UNLABELLED_MODES: tuple[str, ...] = ("classify", "no_rbr")


class RoutingError(RbrError):
    """A prompt's response type could not be decided."""


@runtime_checkable
class PromptClassifier(Protocol):
    """Predicts the content-policy category of prompts.

    ``classify`` returns one category name per prompt, a key of the policy's
    content-policy map, or None when the classifier has no answer for that
    prompt (which the router reports as an error, never as a guess).
    """

    @property
    def identity(self) -> str:
        """A stable string naming the classifier and its settings."""
        ...

    def classify(self, prompts: Sequence[Sequence[Message]]) -> list[str | None]:
        """Return the predicted category of each prompt."""
        ...


class Router:
    """Resolve response types from request fields or a prompt classifier.

    Args:
        policy: Supplies response type names and the category map.
        classifier: Used for prompts that come with neither a response type
            nor a category; without one such prompts are an error.
    """

    def __init__(
        self, policy: Policy, classifier: PromptClassifier | None = None
    ) -> None:
        self.policy = policy
        self.classifier = classifier

    def resolve(
        self, response_type: str | None, category: str | None, *, where: str = ""
    ) -> tuple[bool, str | None]:
        """Resolve one prompt from its fields alone.

        Returns:
            ``(known, name)``: ``known`` is False when neither field is set
            (the classifier must decide); ``name`` is the canonical response
            type, or None for a prompt without an RBR term.

        Raises:
            RoutingError: When a field names a type or category that the
                policy does not define. Also when the two fields disagree.
        """
        prefix = f"{where}: " if where else ""
        mapped: str | None = None
        if category is not None:
            mapped = self._map_category(category, prefix)
        if response_type is None:
            return (category is not None), mapped
        try:
            name = self.policy.response_type(response_type).name
        except KeyError as error:
            raise RoutingError(f"{prefix}{error.args[0]}") from None
        if category is not None and mapped != name:
            raise RoutingError(
                f"{prefix}response type {response_type!r} disagrees with category "
                f"{category!r}, which the policy maps to {mapped!r}; drop one of "
                "the two fields or fix the policy's content map"
            )
        return True, name

    def route(
        self,
        prompts: Sequence[Sequence[Message]],
        response_types: Sequence[str | None] | None = None,
        categories: Sequence[str | None] | None = None,
        *,
        unlabelled: UnlabelledMode = "classify",
    ) -> list[str | None]:
        """Return the canonical response type of every prompt (None: no RBR).

        Args:
            prompts: The conversations, each ending with the user turn.
            response_types: Response type per prompt, None where unknown.
            categories: Content-policy category per prompt, None where unknown.
            unlabelled: One of :data:`UNLABELLED_MODES`, for prompts with
                neither field. ``classify`` sends them to the classifier, and
                ``no_rbr`` routes them to None without calling it.

        Raises:
            RoutingError: When a field is unknown, the lengths differ, or a
                prompt has no field and no classifier can decide it.
            ValueError: When ``unlabelled`` is not a known mode.
        """
        if unlabelled not in UNLABELLED_MODES:
            raise ValueError(
                f"unknown unlabelled mode {unlabelled!r}; use one of "
                f"{', '.join(UNLABELLED_MODES)}"
            )
        n = len(prompts)
        types = _column(response_types, n, "response_types")
        cats = _column(categories, n, "categories")
        routed: list[str | None] = [None] * n
        pending: list[int] = []
        for i in range(n):
            known, name = self.resolve(types[i], cats[i], where=f"prompt {i}")
            routed[i] = name
            if not known:
                pending.append(i)
        if pending and unlabelled == "classify":
            self._classify(prompts, pending, routed)
        return routed

    def _classify(
        self,
        prompts: Sequence[Sequence[Message]],
        pending: list[int],
        routed: list[str | None],
    ) -> None:
        if self.classifier is None:
            raise RoutingError(
                f"prompt {pending[0]} has neither a response type nor a category "
                f"({len(pending)} such prompt{'s' * (len(pending) > 1)}); pass a "
                "'response_type' or "
                "'category' column, or configure a prompt classifier"
            )
        predicted = self.classifier.classify([prompts[i] for i in pending])
        if len(predicted) != len(pending):
            raise RoutingError(
                f"prompt classifier {self.classifier.identity} returned "
                f"{len(predicted)} categories for {len(pending)} prompts"
            )
        for i, category in zip(pending, predicted):
            if category is None:
                raise RoutingError(
                    f"prompt {i}: classifier {self.classifier.identity} gave no "
                    "category; pass the category or response type with the prompt"
                )
            routed[i] = self._map_category(category, f"prompt {i}: ")
        logger.debug("classified %d prompts", len(pending))

    def _map_category(self, category: str, prefix: str) -> str | None:
        try:
            mapped = self.policy.response_type_for_category(category)
        except KeyError as error:
            raise RoutingError(f"{prefix}{error.args[0]}") from None
        return None if mapped is None else self.policy.response_type(mapped).name


def _column(
    values: Sequence[str | None] | None, n: int, name: str
) -> Sequence[str | None]:
    if values is None:
        return [None] * n
    if len(values) != n:
        raise RoutingError(f"got {len(values)} {name} for {n} prompts")
    return values
