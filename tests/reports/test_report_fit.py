"""Reward-fit report: held-out split, centered rewards, ranking table, JSON and HTML."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from rbr.data.io import read_records
from rbr.errors import DataError
from rbr.examples import example_path
from rbr.fitting.estimator import PairwiseHingeRanker
from rbr.fitting.grading import grade_records
from rbr.fitting.rbr_fit import FitSettings, fit_rbr
from rbr.graders.labels import LabelsGrader
from rbr.policy import load_default_policy
from rbr.reports.html import format_number
from rbr.reports.reward_fit import (
    TypeEvaluation,
    centered_rewards,
    evaluate_fit,
    held_out_prompts,
    ranking_accuracy,
)
from rbr.reports.reward_fit_report import build_fit_report, summary_rows


class TableParser(HTMLParser):
    """Collect every table of a page as a list of rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell += data


def example_rows(*response_types: str) -> list[dict]:
    """Return the example rows, only those of ``response_types`` when given."""
    rows = [json.loads(line) for line in example_path().read_text().splitlines()]
    if response_types:
        rows = [row for row in rows if row["response_type"] in response_types]
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def fit_and_evaluate(
    path: Path, *, split: str = "fit", weights_from: Path | None = None
):
    policy = load_default_policy()
    source = weights_from or path
    train_records = read_records(source)
    records = read_records(path)
    grader = LabelsGrader.from_records([*train_records, *records])
    train = grade_records(train_records, policy, grader, source=str(source))
    weights = fit_rbr(train, policy, grader.identity, FitSettings(), source=str(source))
    graded = grade_records(records, policy, grader, source=str(path))
    evaluation = evaluate_fit(graded, weights, policy, split=split, source=str(path))
    return evaluation, weights


@pytest.fixture(scope="module")
def example_report(tmp_path_factory):
    """Fit on two response types of the example data and build the report once."""
    folder = tmp_path_factory.mktemp("fit-report")
    path = write_rows(folder / "train.jsonl", example_rows("Comply", "Hard Refuse"))
    evaluation, weights = fit_and_evaluate(path)
    report = build_fit_report(evaluation, weights_path="w.json", data_path=str(path))
    files = report.write(folder / "out", "fit")
    return weights, report, files


def test_centered_best_is_zero():
    groups = np.array(["p1", "p1", "p1", "p2", "p2"])
    ranks = np.array([0, 1, 2, 1, 0])
    rewards = np.array([3.0, 1.0, -2.0, 0.5, 4.0])
    centered = centered_rewards(groups, ranks, rewards)
    assert centered[0] == 0.0
    assert centered[4] == 0.0
    assert centered[1] == -2.0
    assert centered[2] == -5.0
    assert centered[3] == -3.5


def test_centered_ties_and_single_rank():
    groups = np.array(["p1", "p1", "p1", "p2", "p2"])
    ranks = np.array([0, 0, 1, 2, 2])
    rewards = np.array([2.0, 4.0, 1.0, 5.0, 6.0])
    centered = centered_rewards(groups, ranks, rewards)
    # Two best completions: the center is their mean, 3.0.
    assert centered[:3].tolist() == [-1.0, 1.0, -2.0]
    # A prompt whose completions share one rank has no best to center on.
    assert np.isnan(centered[3:]).all()


def test_split_matches_ranker():
    rng = np.random.default_rng(3)
    groups = np.repeat([f"prompt-{i:02d}" for i in range(23)], 3)
    ranks = np.tile([0, 1, 2], 23)
    features = rng.normal(size=(groups.size, 4))
    for seed in (0, 7):
        ranker = PairwiseHingeRanker(validation_fraction=0.2, random_state=seed)
        ranker.fit(features, groups=groups, ranks=ranks)
        expected = set(ranker.validation_groups_.tolist())
        found = held_out_prompts(groups.tolist(), validation_fraction=0.2, seed=seed)
        assert found == expected


def test_split_fraction_holding_all_is_empty():
    assert held_out_prompts(["a", "b"], validation_fraction=0.6, seed=0) == set()
    assert held_out_prompts(["a", "b", "c"], validation_fraction=0.0, seed=0) == set()


def test_ranking_rows_per_label_pair():
    evaluation = TypeEvaluation(
        response_type="Hard Refuse",
        labels=["good", "bad", "good", "bad"],
        ranks=np.array([0, 1, 0, 1]),
        groups=np.array(["p1", "p1", "p2", "p2"]),
        rewards={
            "base": np.zeros(4),
            "total": np.array([1.0, 0.0, 0.0, 2.0]),
            "rbr": np.array([1.0, 0.0, 0.0, 2.0]),
        },
        cross_prompt=False,
    )
    rows = ranking_accuracy(evaluation)
    assert [(r["better"], r["worse"]) for r in rows] == [
        ("good", "bad"),
        ("all", "all"),
    ]
    assert rows[0]["n_pairs"] == 2
    assert rows[0]["accuracy_total"] == 0.5
    assert rows[0]["error_total"] == 0.5
    # Zero base rewards tie every pair, and ties count as errors.
    assert rows[0]["accuracy_base"] == 0.0


def test_heldout_accuracy_matches_fit(example_report):
    weights, report, _ = example_report
    assert [e["response_type"] for e in report.data["summary"]] == [
        "Comply",
        "Hard Refuse",
    ]
    for entry in report.data["summary"]:
        fitted = weights.for_type(entry["response_type"]).report
        assert entry["accuracy_total"] == pytest.approx(
            fitted["validation_pairwise_accuracy"]
        )
        assert entry["n_pairs"] == fitted["n_validation_pairs"]
        assert entry["split_matches_fit"] is True


def test_report_json_has_numbers_shown(example_report):
    _, _, files = example_report
    data = json.loads(files.json.read_text(encoding="utf-8"))
    parser = TableParser()
    parser.feed(files.html.read_text(encoding="utf-8"))
    summary_table = parser.tables[0]
    expected = [
        [value if isinstance(value, str) else format_number(value) for value in row]
        for row in summary_rows(data["summary"])
    ]
    assert summary_table[1:] == expected
    comply_ranking = parser.tables[1]
    rows = data["response_types"]["Comply"]["ranking"]
    assert len(comply_ranking) == len(rows) + 1
    for shown, row in zip(comply_ranking[1:], rows):
        assert shown[:3] == [row["better"], row["worse"], str(row["n_pairs"])]
        assert shown[4] == format_number(row["accuracy_total"])


def test_report_figures_and_zero_base_note(example_report):
    _, report, files = example_report
    assert report.figure_names == [
        "centered-comply",
        "weights-comply",
        "centered-hard-refuse",
        "weights-hard-refuse",
    ]
    assert all(path.stat().st_size > 1000 for path in files.figures)
    assert report.data["base_reward"] == "zero"
    assert "the base reward is 0" in report.to_html()


def test_best_label_histogram_at_zero(example_report):
    _, report, _ = example_report
    centered = report.data["response_types"]["Hard Refuse"]["centered"]
    best = centered["perfect_refusal"]["total"]
    assert best["n"] >= 1
    assert best["min"] == 0.0
    assert best["max"] == 0.0
    assert sum(best["histogram"]["counts"]) == best["n"]


def test_base_reward_from_rows(tmp_path):
    rows = example_rows("Hard Refuse")
    for index, row in enumerate(rows):
        row["base_reward"] = 0.1 * (index % 4)
    path = write_rows(tmp_path / "train.jsonl", rows)
    evaluation, _ = fit_and_evaluate(path)
    assert evaluation.base_from_rows
    for item in evaluation.types.values():
        rewards = item.rewards
        assert rewards["base"].any()
        np.testing.assert_allclose(rewards["total"], rewards["base"] + rewards["rbr"])
    report = build_fit_report(evaluation, weights_path="w.json", data_path=str(path))
    assert report.data["base_reward"] == "rows"
    assert "the rows&#x27; base_reward field" in report.to_html()


def test_partial_base_reward_names_line(tmp_path):
    train = write_rows(tmp_path / "train.jsonl", example_rows())
    rows = example_rows()
    rows[0]["base_reward"] = 1.0
    heldout = write_rows(tmp_path / "heldout.jsonl", rows)
    with pytest.raises(DataError) as info:
        fit_and_evaluate(heldout, split="file", weights_from=train)
    message = str(info.value)
    assert str(heldout) in message
    assert "give every row a base reward or none" in message


def test_missing_label_names_file_and_line(tmp_path):
    train = write_rows(tmp_path / "train.jsonl", example_rows())
    rows = example_rows()
    del rows[3]["label"]
    heldout = write_rows(tmp_path / "heldout.jsonl", rows)
    with pytest.raises(DataError) as info:
        fit_and_evaluate(heldout, split="file", weights_from=train)
    assert f"{heldout}:4" in str(info.value)
    assert "add the completion label" in str(info.value)


def test_unknown_label_lists_allowed(tmp_path):
    train = write_rows(tmp_path / "train.jsonl", example_rows())
    rows = example_rows()
    rows[0]["label"] = "great"
    heldout = write_rows(tmp_path / "heldout.jsonl", rows)
    with pytest.raises(DataError) as info:
        fit_and_evaluate(heldout, split="file", weights_from=train)
    assert f"{heldout}:1" in str(info.value)
    assert "full_compliance" in str(info.value)


def test_separate_file_uses_every_row(tmp_path):
    train = write_rows(tmp_path / "train.jsonl", example_rows())
    heldout = write_rows(tmp_path / "heldout.jsonl", example_rows())
    evaluation, _ = fit_and_evaluate(heldout, split="file", weights_from=train)
    assert evaluation.split == "file"
    assert sum(len(item.labels) for item in evaluation.types.values()) == 75
    assert all(item.fit_accuracy is None for item in evaluation.types.values())
