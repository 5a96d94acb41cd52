"""Cross-reference checks of a policy: names, cycles, classes, labels, categories."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from rbr.errors import PolicyError, PolicyErrors
from rbr.policy.spec import CLASS_ORDER, Policy, normalize_name


def validate_policy(policy: Policy) -> None:
    """Check every cross-reference in ``policy``.

    Raises:
        PolicyErrors: Listing every problem found, each with its key path and fix.
    """
    errors: list[PolicyError] = []
    errors += _check_names(policy)
    errors += _check_derived(policy)
    errors += _check_response_types(policy)
    errors += _check_labels(policy)
    errors += _check_content_policy(policy)
    if errors:
        raise PolicyErrors(errors)


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_refs(
    policy: Policy, requires: dict[str, bool], path: str, known: set[str]
) -> list[PolicyError]:
    errors = []
    for ref in requires:
        if ref not in known:
            errors.append(
                PolicyError(
                    policy.source,
                    f"{path}.{ref}",
                    f"unknown proposition {ref!r}{_suggest(ref, known)}",
                    "declare it under 'propositions' or 'derived', or correct the name",
                )
            )
    return errors


def _check_names(policy: Policy) -> list[PolicyError]:
    errors = []
    for name in policy.derived:
        if name in policy.propositions:
            errors.append(
                PolicyError(
                    policy.source,
                    f"derived.{name}",
                    f"duplicate name {name!r}: it is both a proposition and a derived "
                    "proposition",
                    "rename one of them",
                )
            )
    seen: dict[str, str] = {}
    for name in policy.response_types:
        key = normalize_name(name)
        if key in seen:
            errors.append(
                PolicyError(
                    policy.source,
                    f"response_types.{name}",
                    f"duplicate response type: {name!r} and {seen[key]!r} differ only in "
                    "case or separators",
                    "remove or rename one of them",
                )
            )
        seen[key] = name
    return errors


def _check_derived(policy: Policy) -> list[PolicyError]:
    known = set(policy.propositions) | set(policy.derived)
    errors = []
    for name, derived in policy.derived.items():
        path = f"derived.{name}"
        if not derived.requires:
            errors.append(
                PolicyError(
                    policy.source,
                    path,
                    "a derived proposition needs at least one condition",
                    "list the propositions it requires, each with true or false",
                )
            )
        errors += _unknown_refs(policy, derived.requires, path, known)
    cycle = _find_cycle(policy)
    if cycle:
        errors.append(
            PolicyError(
                policy.source,
                f"derived.{cycle[0]}",
                "derived propositions form a cycle: " + " -> ".join(cycle),
                "break the cycle so each derived proposition depends only on others "
                "that do not depend on it",
            )
        )
    return errors


def _find_cycle(policy: Policy) -> list[str] | None:
    """Return one cycle among derived propositions as a list of names, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for ref in policy.derived[name].requires:
            if ref not in policy.derived:
                continue
            if state.get(ref) == 1:
                return path[path.index(ref) :] + [ref]
            if ref not in state:
                found = visit(ref)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return None

    for name in policy.derived:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def _check_response_types(policy: Policy) -> list[PolicyError]:
    known = set(policy.propositions) | set(policy.derived)
    label_names = set(policy.labels) | set(CLASS_ORDER)
    errors = []
    for name, response_type in policy.response_types.items():
        base = f"response_types.{name}"
        for class_name in CLASS_ORDER:
            if class_name not in response_type.classes:
                errors.append(
                    PolicyError(
                        policy.source,
                        f"{base}.classes",
                        f"missing class {class_name!r}",
                        f"define all five classes: {', '.join(CLASS_ORDER)}",
                    )
                )
        for class_name, requires in response_type.classes.items():
            path = f"{base}.classes.{class_name}"
            if class_name not in CLASS_ORDER:
                errors.append(
                    PolicyError(
                        policy.source,
                        path,
                        f"unknown class {class_name!r}{_suggest(class_name, CLASS_ORDER)}",
                        f"use one of {', '.join(CLASS_ORDER)}",
                    )
                )
            if not requires:
                errors.append(
                    PolicyError(
                        policy.source,
                        path,
                        "a class needs at least one condition",
                        "list the propositions it requires, each with true or false",
                    )
                )
            errors += _unknown_refs(policy, requires, path, known)
        errors += _check_ordering(policy, name, response_type.ordering, label_names)
    return errors


def _check_ordering(
    policy: Policy,
    name: str,
    ordering: tuple[tuple[str, ...], ...],
    label_names: set[str],
) -> list[PolicyError]:
    errors = []
    seen: set[str] = set()
    for index, tier in enumerate(ordering):
        path = f"response_types.{name}.ordering.{index}"
        if not tier:
            errors.append(
                PolicyError(
                    policy.source, path, "empty tier", "remove it or list labels in it"
                )
            )
        for label in tier:
            if label not in label_names:
                errors.append(
                    PolicyError(
                        policy.source,
                        path,
                        f"unknown completion label {label!r}{_suggest(label, label_names)}",
                        "declare it under 'labels' or use a completion class name",
                    )
                )
            if label in seen:
                errors.append(
                    PolicyError(
                        policy.source,
                        path,
                        f"label {label!r} appears in more than one tier",
                        "keep each label in exactly one tier",
                    )
                )
            seen.add(label)
    if len(ordering) == 1:
        errors.append(
            PolicyError(
                policy.source,
                f"response_types.{name}.ordering",
                "an ordering with one tier ranks nothing",
                "list at least two tiers, best first, or remove 'ordering'",
            )
        )
    return errors


def _check_labels(policy: Policy) -> list[PolicyError]:
    known = set(policy.propositions) | set(policy.derived)
    errors = []
    for name, label in policy.labels.items():
        if name in CLASS_ORDER:
            errors.append(
                PolicyError(
                    policy.source,
                    f"labels.{name}",
                    f"duplicate name {name!r}: completion class names are built-in labels",
                    "rename the label",
                )
            )
        errors += _unknown_refs(policy, label.targets, f"labels.{name}.targets", known)
    return errors


def _check_content_policy(policy: Policy) -> list[PolicyError]:
    keys = {normalize_name(n): n for n in policy.response_types}
    errors = []
    for category, target in policy.content_policy.items():
        if target is None or normalize_name(target) in keys:
            continue
        errors.append(
            PolicyError(
                policy.source,
                f"content_policy.{category}",
                f"unknown response type {target!r}{_suggest(target, keys.values())}",
                f"use one of {', '.join(repr(n) for n in keys.values())}, or null for "
                "no safety response type",
            )
        )
    return errors
