"""The grader interface and its result types.

A grader answers each proposition for each sample with the probability that
it holds. An answer it could not read becomes an :class:`Unscored` entry with
the reason and the raw reply, and NaN in the probability matrix: never a
made-up 0.5.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rbr.data.types import Sample
from rbr.policy.spec import Proposition


@dataclass(frozen=True, slots=True)
class Unscored:
    """A (sample, proposition) pair the grader could not score.

    Attributes:
        sample_index: Position of the sample in the graded batch.
        proposition: Name of the proposition.
        reason: Short machine-readable cause, such as ``missing_label``,
            ``no_yes_no_token``, ``http_error``, ``timeout`` or ``malformed_reply``.
        detail: Human-readable explanation.
        raw: The raw reply or value that could not be read, when there was one.
        sample_id: The sample's identifier, when it has one.
    """

    sample_index: int
    proposition: str
    reason: str
    detail: str = ""
    raw: str | None = None
    sample_id: str | None = None


@dataclass(slots=True)
class GradeResult:
    """Probabilities for a batch of samples and the pairs left unscored.

    Attributes:
        propositions: Column names of ``probabilities``.
        probabilities: Array of shape ``(n_samples, n_propositions)`` with
            P(yes) per cell, NaN where the cell is unscored.
        unscored: One entry per NaN cell.
    """

    propositions: tuple[str, ...]
    probabilities: np.ndarray
    unscored: list[Unscored] = field(default_factory=list)

    def __post_init__(self) -> None:
        expected = (self.probabilities.shape[0], len(self.propositions))
        if self.probabilities.ndim != 2 or self.probabilities.shape != expected:
            raise ValueError(
                f"probabilities must have shape (n_samples, {len(self.propositions)}), "
                f"got {self.probabilities.shape}"
            )

    def row(self, index: int) -> dict[str, float]:
        """Return sample ``index`` as a mapping of proposition name to probability."""
        values = self.probabilities[index]
        return {name: float(values[j]) for j, name in enumerate(self.propositions)}

    def complete_rows(self) -> np.ndarray:
        """Return a boolean mask of samples with every proposition scored."""
        return ~np.isnan(self.probabilities).any(axis=1)

    def reasons(self) -> dict[str, int]:
        """Count unscored cells by reason."""
        counts: dict[str, int] = {}
        for item in self.unscored:
            counts[item.reason] = counts.get(item.reason, 0) + 1
        return counts


class Grader(abc.ABC):
    """Answers propositions about completions with probabilities.

    Subclasses implement :meth:`grade`, and may override :meth:`agrade` with
    a native asynchronous version.
    """

    @property
    @abc.abstractmethod
    def identity(self) -> str:
        """A stable string naming the grader and its settings.

        It goes into cache keys and saved weights, so two graders whose
        answers may differ must have different identities.
        """

    @abc.abstractmethod
    def grade(
        self, samples: Sequence[Sample], propositions: Sequence[Proposition]
    ) -> GradeResult:
        """Grade every proposition for every sample."""

    async def agrade(
        self, samples: Sequence[Sample], propositions: Sequence[Proposition]
    ) -> GradeResult:
        """Grade asynchronously; by default runs :meth:`grade` in a worker thread."""
        return await asyncio.to_thread(self.grade, samples, propositions)

    def close(self) -> None:  # noqa: B027 - a no-op default is intended
        """Release connections, threads or models the grader holds."""

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
