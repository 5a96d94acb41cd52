"""Naming the propositions that left a response type unfitted."""

from __future__ import annotations

from rbr.fitting.grading import proposition_summary
from rbr.graders.base import Unscored


def unscored(name: str, index: int) -> Unscored:
    return Unscored(index, name, "missing_label", "no label", None, None)


def test_most_frequent_first():
    items = [unscored("apology", i) for i in range(3)] + [unscored("judgement", 0)]
    assert proposition_summary(items) == "apology (3), judgement (1)"


def test_long_list_counts_rest():
    items = [unscored(f"p{i}", 0) for i in range(7)]
    summary = proposition_summary(items, limit=5)
    assert summary.endswith("and 2 more")
    assert summary.count("(1)") == 5
