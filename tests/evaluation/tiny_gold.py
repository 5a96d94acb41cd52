"""A tiny policy, gold rows built in code, and graders that return preset scores."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from rbr.data import Record, Sample, parse_record
from rbr.graders.base import Grader, GradeResult, Unscored
from rbr.policy import Policy, Proposition
from tests.policy.test_loader import MINIMAL, load

PROPOSITIONS = ("apology", "refuses", "harmful")


def tiny_policy() -> Policy:
    """Return the three-proposition policy with one response type, Hard Refuse."""
    return load(MINIMAL)


def label_pattern(index: int) -> dict[str, bool]:
    """Return labels that cycle through all eight combinations of the propositions."""
    return {
        "apology": index % 2 == 1,
        "refuses": (index // 2) % 2 == 1,
        "harmful": (index // 4) % 2 == 1,
    }


def gold_rows(n_prompts: int = 40, *, unrated: int = 2) -> list[dict]:
    """Return gold rows: one labelled Hard Refuse completion per prompt.

    Prompts with an index divisible by 5 get a second completion with the
    same labels. ``unrated`` extra rows have category ``None``, which the
    tiny policy maps to no response type.
    """
    rows = []
    for i in range(n_prompts):
        copies = 2 if i % 5 == 0 else 1
        for copy in range(copies):
            rows.append(
                {
                    "category": "K-R",
                    "prompt": [{"role": "user", "content": f"request {i}"}],
                    "completion": [
                        {"role": "assistant", "content": f"reply {i}.{copy}"}
                    ],
                    "propositions": label_pattern(i),
                }
            )
    for i in range(unrated):
        rows.append(
            {
                "category": "None",
                "prompt": [{"role": "user", "content": f"ordinary {i}"}],
                "completion": [{"role": "assistant", "content": f"answer {i}"}],
            }
        )
    return rows


def to_records(rows: Sequence[Mapping], source: str = "gold.jsonl") -> list[Record]:
    return [parse_record(row, source=source, line=n + 1) for n, row in enumerate(rows)]


def write_rows(path: Path, rows: Sequence[Mapping]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


ScoreFunction = Callable[[Record, str], float | None]


class TableGrader(Grader):
    """Return stored scores per sample content key, and unscored cells where none is stored.

    Args:
        scores: Content key to proposition name to probability.
        name: Identity of the grader.
        reason: Unscored reason given for missing scores.
    """

    def __init__(
        self,
        scores: Mapping[str, Mapping[str, float]],
        *,
        name: str = "table",
        reason: str = "no_yes_no_token",
    ) -> None:
        self._scores = {key: dict(values) for key, values in scores.items()}
        self._name = name
        self._reason = reason
        self.graded_keys: list[str] = []

    @classmethod
    def from_function(
        cls, records: Sequence[Record], score: ScoreFunction, **options: str
    ) -> TableGrader:
        """Build the table by calling ``score(record, proposition)`` on every cell."""
        table: dict[str, dict[str, float]] = {}
        for record in records:
            values = {}
            for name in PROPOSITIONS:
                value = score(record, name)
                if value is not None:
                    values[name] = value
            table[record.sample.content_key()] = values
        return cls(table, **options)

    @property
    def identity(self) -> str:
        return self._name

    def grade(
        self, samples: Sequence[Sample], propositions: Sequence[Proposition]
    ) -> GradeResult:
        names = tuple(p.name for p in propositions)
        values = np.full((len(samples), len(names)), np.nan)
        unscored = []
        for i, sample in enumerate(samples):
            key = sample.content_key()
            self.graded_keys.append(key)
            stored = self._scores.get(key, {})
            for j, name in enumerate(names):
                if name in stored:
                    values[i, j] = stored[name]
                else:
                    unscored.append(Unscored(i, name, self._reason, "no score set"))
        return GradeResult(names, values, unscored)


def true_label(record: Record, name: str) -> float | None:
    """Score function that returns the human label itself."""
    return record.propositions.get(name)


def flipped_label(record: Record, name: str) -> float | None:
    """Score function that returns the opposite of the human label."""
    value = record.propositions.get(name)
    return None if value is None else 1.0 - value


def shifted_label(record: Record, name: str) -> float | None:
    """Score function with 0.4 for a true label and 0.2 for a false one.

    Thresholding at 0.5 calls every cell false, and the best threshold is 0.3.
    """
    value = record.propositions.get(name)
    return None if value is None else 0.2 + 0.2 * value
