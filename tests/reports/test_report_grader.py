"""Grader report: recorded probabilities, reliability bins, JSON input checks."""

from __future__ import annotations

import json

import pytest

from rbr.reports.grader_report import (
    build_grader_report,
    load_grader_eval,
    proposition_rows,
    reliability_from_cells,
    run_grader_evaluation,
)
from rbr.reports.html import ReportError, format_number
from tests.evaluation.tiny_gold import (
    TableGrader,
    gold_rows,
    shifted_label,
    tiny_policy,
    to_records,
    true_label,
)


@pytest.fixture(scope="module")
def shifted_evaluation():
    records = to_records(gold_rows(24))
    grader = TableGrader.from_function(records, shifted_label)
    data = run_grader_evaluation(records, tiny_policy(), grader, source="gold.jsonl")
    return records, data


def test_reliability_bins_from_run(shifted_evaluation):
    _, data = shifted_evaluation
    curves = data["reliability"]
    assert set(curves) == {"apology", "refuses", "harmful"}
    # shifted_label scores 0.2 for a false label and 0.4 for a true one, so each
    # proposition has two bins: observed share 0 at 0.2 and 1 at 0.4.
    for bins in curves.values():
        assert [round(b["mean_predicted"], 6) for b in bins] == [0.2, 0.4]
        assert [b["observed_frequency"] for b in bins] == [0.0, 1.0]
        assert sum(b["count"] for b in bins) == data["propositions"]["apology"]["n"]


def test_reliability_skips_unlabelled_and_unscored():
    records = to_records(gold_rows(4, unrated=0))
    key = records[0].sample.content_key()
    cells = [
        (key, "apology", 0.9),
        (key, "refuses", float("nan")),
        (key, "not_labelled", 0.3),
        ("unknown-key", "apology", 0.1),
    ]
    curves = reliability_from_cells(records, cells)
    assert list(curves) == ["apology"]
    assert curves["apology"][0]["count"] == 1


def test_report_has_figures_and_numbers(shifted_evaluation, tmp_path):
    _, data = shifted_evaluation
    report = build_grader_report(data, source="gold.jsonl")
    assert report.figure_names == ["grader-metrics", "grader-reliability"]
    files = report.write(tmp_path, "grader")
    written = json.loads(files.json.read_text(encoding="utf-8"))
    assert written["propositions"]["apology"]["accuracy"] == pytest.approx(
        data["propositions"]["apology"]["accuracy"]
    )
    assert written["reliability"] == data["reliability"]
    html = files.html.read_text(encoding="utf-8")
    for row in proposition_rows(written):
        cells = [format_number(v) if not isinstance(v, str) else v for v in row]
        assert "".join(f'<td class="num">{c}</td>' for c in cells[1:4]) in html


def test_report_from_json_without_reliability(tmp_path):
    records = to_records(gold_rows(12))
    grader = TableGrader.from_function(records, true_label)
    data = run_grader_evaluation(records, tiny_policy(), grader, source="gold.jsonl")
    del data["reliability"]
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    loaded = load_grader_eval(path)
    report = build_grader_report(loaded, source=str(path))
    assert report.figure_names == ["grader-metrics"]
    assert "No reliability curves" in report.to_html()


def test_missing_json_names_file_and_fix(tmp_path):
    path = tmp_path / "absent.json"
    with pytest.raises(ReportError) as info:
        load_grader_eval(path)
    assert str(path) in str(info.value)
    assert "rbr grader eval" in str(info.value)


def test_invalid_json_names_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ReportError) as info:
        load_grader_eval(path)
    assert str(path) in str(info.value)
    assert "not a JSON file" in str(info.value)


def test_json_without_propositions(tmp_path):
    path = tmp_path / "weights.json"
    path.write_text(json.dumps({"response_types": {}}), encoding="utf-8")
    with pytest.raises(ReportError) as info:
        load_grader_eval(path)
    assert "missing the 'propositions' object" in str(info.value)
    assert "--json OUT.json" in str(info.value)


def test_proposition_without_metrics(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text(
        json.dumps({"propositions": {"apology": {"n": 3}}}), encoding="utf-8"
    )
    with pytest.raises(ReportError) as info:
        load_grader_eval(path)
    assert "propositions.apology" in str(info.value)
