"""Pydantic models of a behavior policy.

A policy declares simple propositions (answered by a grader), derived
propositions (conjunctions of other propositions), response types with five
ordered completion classes each, completion labels with their orderings for
weight fitting, and a content-policy map from request category to response
type. Models here check types and shapes; cross-references are checked in
:mod:`rbr.policy.validate`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CLASS_ORDER: tuple[str, ...] = (
    "ideal",
    "minimum_acceptable_style",
    "unacceptable_completion",
    "illogical_completion",
    "disallowed_completion",
)
"""The five completion classes, best first."""

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Requirements = dict[str, bool]
"""A conjunction: each named proposition must take the given truth value."""


def normalize_name(name: str) -> str:
    """Return a lookup key that ignores case and treats spaces, ``-`` and ``_`` alike.

    ``"Hard Refuse"``, ``"hard_refuse"`` and ``"hard-refuse"`` share one key.
    """
    return re.sub(r"[\s_\-]+", "_", name.strip().lower())


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FewShotExample(_Strict):
    """A worked example shown to an LLM grader for one proposition."""

    prompt: str = Field(description="The user's request in the example.")
    completion: str = Field(description="The assistant reply in the example.")
    answer: bool = Field(description="Whether the proposition holds for the reply.")
    explanation: str | None = Field(
        default=None, description="Optional one-line reason shown after the answer."
    )


class Proposition(_Strict):
    """A yes/no statement about the last assistant turn, answered by a grader."""

    name: str
    instruction: str = Field(
        description="The question put to the grader, with the criteria for yes and no."
    )
    examples: tuple[FewShotExample, ...] = ()

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(
                f"proposition name {value!r} must be an identifier "
                "(letters, digits and underscores, not starting with a digit)"
            )
        return value


class DerivedProposition(_Strict):
    """A conjunction of required values of simple or other derived propositions."""

    name: str
    requires: Requirements


class ResponseType(_Strict):
    """How the policy wants the assistant to respond to a kind of request.

    Attributes:
        classes: For each of the five completion classes, the conjunction a
            completion must satisfy to belong to it.
        ordering: Completion labels in tiers, best tier first. A label in an
            earlier tier must receive a higher reward than any label in a
            later tier of the same prompt.
    """

    name: str
    description: str = ""
    classes: dict[str, Requirements]
    ordering: tuple[tuple[str, ...], ...] = ()


class CompletionLabel(_Strict):
    """A kind of completion in comparison data, used by weight fitting.

    Attributes:
        margin: Hinge margin required between a completion with this label
            and any completion ranked below it; None uses the fitter default.
        targets: Proposition values that define this label, used when
            generating completions of this kind.
    """

    name: str
    description: str = ""
    margin: float | None = Field(default=None, gt=0)
    targets: Requirements = Field(default_factory=dict)


class Policy(_Strict):
    """A validated behavior policy.

    Build one with :func:`rbr.policy.load_policy`, which also checks every
    cross-reference; constructing it directly skips those checks.
    """

    name: str
    version: str = "1"
    description: str = ""
    source: str = "<memory>"
    format: Literal["rbr", "reference"] = "rbr"
    prompt_template: str | None = None
    propositions: dict[str, Proposition]
    derived: dict[str, DerivedProposition] = Field(default_factory=dict)
    response_types: dict[str, ResponseType]
    labels: dict[str, CompletionLabel] = Field(default_factory=dict)
    content_policy: dict[str, str | None] = Field(default_factory=dict)
    content_hash: str = ""

    def response_type(self, name: str) -> ResponseType:
        """Return the response type called ``name``, ignoring case and separators.

        Raises:
            KeyError: With the known names, when none matches.
        """
        key = normalize_name(name)
        for response_type in self.response_types.values():
            if normalize_name(response_type.name) == key:
                return response_type
        known = ", ".join(repr(n) for n in self.response_types)
        raise KeyError(f"unknown response type {name!r}; this policy has {known}")

    def response_type_for_category(self, category: str) -> str | None:
        """Return the response type of a content-policy category (None: no RBR).

        Raises:
            KeyError: When the category is not in the content-policy map.
        """
        if category in self.content_policy:
            return self.content_policy[category]
        key = normalize_name(category)
        for known, response_type in self.content_policy.items():
            if normalize_name(known) == key:
                return response_type
        names = ", ".join(repr(n) for n in self.content_policy)
        raise KeyError(
            f"unknown content category {category!r}; this policy maps {names}"
        )
