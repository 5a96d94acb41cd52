"""Proposition probabilities to RBR feature vectors, vectorised over batches.

For one response type the features are the probabilities of the simple
propositions its classes depend on (directly or through derived
propositions), in policy order, followed by the five class probabilities.

Probabilities combine as if propositions were independent: a conjunction's
probability is the product over its conditions of ``p`` (required true) or
``1 - p`` (required false), and a derived proposition required false
contributes ``1 - P(derived)``. Class probabilities are these products
normalised to sum to one over the five classes. When every class product is
zero (possible only with probabilities of exactly 0 or 1 and classes that do
not cover every case), all five class features are zero: no class is
claimed, and :meth:`FeatureSpace.assign_classes` returns None for that row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rbr.policy.spec import CLASS_ORDER, Policy

CLASS_FEATURE_PREFIX = "class:"


class FeatureSpace:
    """The feature layout of one response type of a policy.

    Attributes:
        response_type: Canonical response type name in the policy.
        propositions: Simple propositions the features use, in policy order.
        feature_names: ``propositions`` followed by ``class:<name>`` for the
            five classes.
    """

    def __init__(self, policy: Policy, response_type: str) -> None:
        spec = policy.response_type(response_type)
        self.response_type = spec.name
        self._policy = policy
        self._classes = [spec.classes[name] for name in CLASS_ORDER]
        used = _closure(policy, [req for req in self._classes])
        self.propositions: tuple[str, ...] = tuple(
            name for name in policy.propositions if name in used
        )
        self._derived_order = _derived_order(policy, used)
        self.feature_names: tuple[str, ...] = self.propositions + tuple(
            CLASS_FEATURE_PREFIX + name for name in CLASS_ORDER
        )

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def matrix_from_dicts(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Stack per-row proposition mappings into an ``(n, n_propositions)`` array.

        Raises:
            KeyError: When a row lacks a proposition this response type needs.
        """
        values = np.empty((len(rows), len(self.propositions)))
        for i, row in enumerate(rows):
            for j, name in enumerate(self.propositions):
                if name not in row:
                    raise KeyError(
                        f"row {i} has no probability for proposition {name!r}, which "
                        f"response type {self.response_type!r} needs"
                    )
                values[i, j] = row[name]
        return values

    def unnormalized_class_scores(self, probabilities: np.ndarray) -> np.ndarray:
        """Return the conjunction products of the five classes, shape ``(n, 5)``."""
        probabilities = self._check(probabilities)
        columns: dict[str, np.ndarray] = {
            name: probabilities[:, j] for j, name in enumerate(self.propositions)
        }
        for name in self._derived_order:
            columns[name] = _conjunction(self._policy.derived[name].requires, columns)
        return np.stack([_conjunction(req, columns) for req in self._classes], axis=1)

    def class_probabilities(self, probabilities: np.ndarray) -> np.ndarray:
        """Return class probabilities normalised over the five classes, shape ``(n, 5)``.

        Rows whose five products are all zero stay all zero.
        """
        scores = self.unnormalized_class_scores(probabilities)
        totals = scores.sum(axis=1, keepdims=True)
        safe = np.where(totals > 0, totals, 1.0)
        return np.where(totals > 0, scores / safe, 0.0)

    def transform(self, probabilities: np.ndarray) -> np.ndarray:
        """Return the feature matrix ``(n, n_features)`` for proposition probabilities."""
        probabilities = self._check(probabilities)
        return np.hstack([probabilities, self.class_probabilities(probabilities)])

    def assign_classes(
        self, probabilities: np.ndarray, thresholds: Mapping[str, float] | None = None
    ) -> list[str | None]:
        """Return each row's class after thresholding the proposition probabilities.

        A proposition counts as true when its probability is at least its
        threshold (default 0.5). Rows that match no class get None; a row
        matching several classes gets the best of them.
        """
        probabilities = self._check(probabilities)
        cut = np.array([(thresholds or {}).get(n, 0.5) for n in self.propositions])
        binary = (probabilities >= cut).astype(float)
        scores = self.unnormalized_class_scores(binary)
        result: list[str | None] = []
        for row in scores:
            matches = np.flatnonzero(row > 0.5)
            result.append(CLASS_ORDER[matches[0]] if matches.size else None)
        return result

    def _check(self, probabilities: np.ndarray) -> np.ndarray:
        array = np.asarray(probabilities, dtype=float)
        if array.ndim != 2 or array.shape[1] != len(self.propositions):
            raise ValueError(
                f"expected probabilities of shape (n, {len(self.propositions)}) for "
                f"response type {self.response_type!r}, got {array.shape}"
            )
        if np.isnan(array).any():
            raise ValueError(
                "probabilities contain NaN (unscored propositions); drop or regrade "
                "those rows before computing features"
            )
        if (array < 0).any() or (array > 1).any():
            raise ValueError("probabilities must lie in [0, 1]")
        return array


def _conjunction(
    requires: Mapping[str, bool], columns: Mapping[str, np.ndarray]
) -> np.ndarray:
    result: np.ndarray | None = None
    for name, wanted in requires.items():
        term = columns[name] if wanted else 1.0 - columns[name]
        result = term if result is None else result * term
    assert result is not None  # a validated policy has no empty conjunction
    return result


def _closure(policy: Policy, conjunctions: Sequence[Mapping[str, bool]]) -> set[str]:
    """Return every proposition name (simple and derived) reachable from conjunctions."""
    seen: set[str] = set()
    stack = [name for req in conjunctions for name in req]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in policy.derived:
            stack.extend(policy.derived[name].requires)
    return seen


def _derived_order(policy: Policy, used: set[str]) -> list[str]:
    """Return the used derived propositions so that each follows its dependencies."""
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        for ref in policy.derived[name].requires:
            if ref in policy.derived:
                visit(ref)
        done.add(name)
        order.append(name)

    for name in policy.derived:
        if name in used:
            visit(name)
    return order


def feature_spaces(policy: Policy) -> dict[str, FeatureSpace]:
    """Return the feature space of every response type in ``policy``."""
    return {name: FeatureSpace(policy, name) for name in policy.response_types}
