"""Generation targets: the proposition values a synthetic completion must have.

For each response type, the labels to generate are those in its ordering.
A label's target is its ``targets`` mapping from the policy. Flawed labels
(by default ``bad_refusal`` and ``bad_safe_refusal``) also get one or more
flaws, drawn at random from the response type's undesired propositions: the
simple propositions that its ``ideal`` class requires to be false, minus the
ones the label already sets. Each flaw is set true in the target.

The draw is seeded by a hash of the seed, the prompt id, the response type
and the label, so the same inputs always give the same targets, whatever the
order of the prompts or the other labels.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rbr.errors import RbrError
from rbr.policy.spec import Policy

DEFAULT_FLAWED_LABELS: tuple[str, ...] = ("bad_refusal", "bad_safe_refusal")
"""Labels of the default policy that describe a refusal with flaws of style."""

DEFAULT_FLAWED_VARIANTS = 2
"""Completions per prompt of a flawed label unless configured otherwise."""

MAX_DISTINCT_DRAWS = 20
"""Draws tried per variant to find a flaw set no earlier variant has."""


class SynthError(RbrError):
    """Synthetic data generation cannot start or cannot go on."""


@dataclass(frozen=True)
class TargetSettings:
    """Settings that turn labels into generation targets.

    Attributes:
        variants: Completions to generate per prompt for a label, by label
            name. Labels not listed get :data:`DEFAULT_FLAWED_VARIANTS` when
            flawed and 1 otherwise.
        flawed_labels: Labels that get random flaws.
        max_flaws: Largest number of flaws one flawed target gets; each
            target draws between 1 and this many.
        labels: Generate only these labels; None generates every label in
            the ordering.
        seed: Seed of the flaw draws.
    """

    variants: Mapping[str, int] = field(default_factory=dict)
    flawed_labels: tuple[str, ...] = DEFAULT_FLAWED_LABELS
    max_flaws: int = 2
    labels: frozenset[str] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_flaws < 1:
            raise ValueError(f"max_flaws must be 1 or more, got {self.max_flaws}")
        for label, count in self.variants.items():
            if count < 0:
                raise ValueError(
                    f"variants for label {label!r} must be 0 or more, got {count}"
                )

    def variants_for(self, label: str) -> int:
        """Return how many completions to generate per prompt for ``label``."""
        if label in self.variants:
            return self.variants[label]
        return DEFAULT_FLAWED_VARIANTS if label in self.flawed_labels else 1


@dataclass(frozen=True)
class GenerationTarget:
    """The proposition values one synthetic completion must have.

    Attributes:
        response_type: Canonical response type of the prompt.
        label: Completion label from the policy.
        variant: 1-based number among the targets of this label for one prompt.
        values: Required truth value per proposition (simple or derived):
            the label's targets, then the flaws set true.
        flaws: Propositions set true because the label is flawed, in policy
            order; empty for other labels.
        description: The label's description from the policy.
    """

    response_type: str
    label: str
    variant: int
    values: dict[str, bool]
    flaws: tuple[str, ...] = ()
    description: str = ""

    @property
    def target_id(self) -> str:
        """Identifier of the target within its prompt, such as ``bad_refusal#2``."""
        return f"{self.label}#{self.variant}"


def expand_requirements(
    policy: Policy, requires: Mapping[str, bool]
) -> dict[str, bool]:
    """Replace derived propositions required true by their simple conditions.

    A derived proposition required false cannot be split, because it only
    requires that some condition fails, so it stays as it is. When two conditions
    name the same proposition, the first one found wins.
    """
    result: dict[str, bool] = {}
    stack = list(reversed(requires.items()))
    while stack:
        name, wanted = stack.pop()
        if name in policy.derived and wanted:
            stack.extend(reversed(policy.derived[name].requires.items()))
        else:
            result.setdefault(name, wanted)
    return result


def undesired_propositions(policy: Policy, response_type: str) -> tuple[str, ...]:
    """Return the simple propositions that the ``ideal`` class requires false.

    The names are in policy order.

    Raises:
        SynthError: When the response type has no ``ideal`` class.
    """
    spec = policy.response_type(response_type)
    if "ideal" not in spec.classes:
        raise SynthError(
            f"response type {spec.name!r} has no 'ideal' class, so it has no "
            "undesired propositions to draw flaws from; add the class to the policy"
        )
    expanded = expand_requirements(policy, spec.classes["ideal"])
    return tuple(
        name
        for name in policy.propositions
        if name in expanded and expanded[name] is False
    )


def flaw_pool(policy: Policy, response_type: str, label: str) -> tuple[str, ...]:
    """Return the propositions a flawed ``label`` may draw its flaws from."""
    pinned = set(expand_requirements(policy, policy.labels[label].targets))
    return tuple(
        name
        for name in undesired_propositions(policy, response_type)
        if name not in pinned
    )


def ordered_labels(policy: Policy, response_type: str) -> tuple[str, ...]:
    """Return the labels in the response type's ordering, best tier first."""
    spec = policy.response_type(response_type)
    return tuple(label for tier in spec.ordering for label in tier)


def ideal_labels(policy: Policy, response_type: str) -> tuple[str, ...]:
    """Return the labels of the first ordering tier: the ideal completions."""
    spec = policy.response_type(response_type)
    return tuple(spec.ordering[0]) if spec.ordering else ()


def plan_targets(
    policy: Policy,
    response_type: str,
    prompt_id: str,
    settings: TargetSettings | None = None,
) -> list[GenerationTarget]:
    """Return the generation targets of one prompt.

    Raises:
        SynthError: When the response type has no ordering, a label to
            generate has no targets, or a flawed label has no flaw to draw.
    """
    settings = settings or TargetSettings()
    spec = policy.response_type(response_type)
    if not spec.ordering:
        raise SynthError(
            f"response type {spec.name!r} has no 'ordering', so there are no labels "
            "to generate; list its labels in tiers under 'ordering' in the policy"
        )
    targets: list[GenerationTarget] = []
    for label in ordered_labels(policy, spec.name):
        if settings.labels is not None and label not in settings.labels:
            continue
        targets += _label_targets(policy, spec.name, label, prompt_id, settings)
    return targets


def _label_targets(
    policy: Policy,
    response_type: str,
    label: str,
    prompt_id: str,
    settings: TargetSettings,
) -> list[GenerationTarget]:
    spec = policy.labels[label]
    count = settings.variants_for(label)
    if count and not spec.targets:
        raise SynthError(
            f"label {label!r} has no 'targets', so there is nothing to tell the model; "
            f"add labels.{label}.targets to the policy, or leave the label out "
            "with --label"
        )
    if label not in settings.flawed_labels:
        return [
            GenerationTarget(
                response_type, label, number, dict(spec.targets), (), spec.description
            )
            for number in range(1, count + 1)
        ]
    pool = flaw_pool(policy, response_type, label)
    if count and not pool:
        raise SynthError(
            f"flawed label {label!r} of response type {response_type!r} has no "
            "undesired proposition left to use as a flaw (the ideal class requires "
            "none false that the label does not already set)"
        )
    rng = random.Random(_seed(settings.seed, prompt_id, response_type, label))
    draws = _distinct_flaw_sets(rng, pool, count, settings.max_flaws)
    return [
        GenerationTarget(
            response_type,
            label,
            number,
            {**spec.targets, **dict.fromkeys(flaws, True)},
            flaws,
            spec.description,
        )
        for number, flaws in enumerate(draws, start=1)
    ]


def _distinct_flaw_sets(
    rng: random.Random, pool: Sequence[str], count: int, max_flaws: int
) -> list[tuple[str, ...]]:
    """Draw ``count`` flaw sets, avoiding repeats while the pool allows.

    Variants are drawn in order from one generator, so raising ``count``
    keeps the earlier variants' flaws.
    """
    draws: list[tuple[str, ...]] = []
    largest = min(max_flaws, len(pool))
    for _ in range(count):
        for _ in range(MAX_DISTINCT_DRAWS):
            size = rng.randint(1, largest)
            chosen = set(rng.sample(list(pool), size))
            flaws = tuple(name for name in pool if name in chosen)
            if flaws not in draws:
                break
        draws.append(flaws)
    return draws


def _seed(seed: int, prompt_id: str, response_type: str, label: str) -> int:
    text = "\0".join((str(seed), prompt_id, response_type, label))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
