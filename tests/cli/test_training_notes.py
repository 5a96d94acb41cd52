"""Notes that a bundled model may be evaluated on its own training data."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rbr.cli.classifier_cmd import classify_command
from rbr.cli.quickstart_cmd import quickstart_command
from rbr.cli.report_cmd import report_group
from rbr.examples import example_path
from rbr.reports.grader_report import build_grader_report
from tests.reports.test_report_grader import shifted_evaluation  # noqa: F401


@pytest.fixture()
def gold_head(tmp_path):
    """The first 30 bundled example rows, which carry proposition labels."""
    lines = example_path().read_text(encoding="utf-8").splitlines()[:30]
    path = tmp_path / "gold.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_report_grader_offline_note(gold_head, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "rep"
    result = CliRunner().invoke(
        report_group, ["grader", "--gold", str(gold_head), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "note: the offline grader" in result.output
    assert "hand-labelled gold rows" in result.output
    data = json.loads((out / "grader-report.json").read_text(encoding="utf-8"))
    assert "training-set numbers" in data["grader_training_note"]
    html = (out / "grader-report.html").read_text(encoding="utf-8")
    assert "Note: the offline grader" in html


def test_report_grader_labels_no_note(gold_head, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "rep"
    args = ["grader", "--gold", str(gold_head), "--grader", "labels"]
    result = CliRunner().invoke(report_group, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "note:" not in result.output


def test_grader_report_header_once(shifted_evaluation):  # noqa: F811
    _, data = shifted_evaluation
    html = build_grader_report(data, source="gold.jsonl").to_html()
    assert html.count("gold.jsonl") == 1
    from_json = build_grader_report(data, source="eval.json").to_html()
    assert "Read from eval.json." in from_json


def test_classify_offline_note(tmp_path):
    result = CliRunner().invoke(classify_command, [str(example_path())])
    assert result.exit_code == 0, result.output
    assert "category accuracy" in result.output
    assert "note: the prompt classifier" in result.output
    assert "cross-validated accuracy" in result.output


def test_classify_without_categories_no_note(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "How do I bake bread?"}) + "\n")
    result = CliRunner().invoke(classify_command, [str(path)])
    assert result.exit_code == 0, result.output
    assert "note:" not in result.output


def test_quickstart_holds_out_like_fit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        quickstart_command, ["--grader", "labels", "--out", "qs"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "qs" / "fit_report.json").read_text())
    assert report["settings"]["validation_fraction"] == 0.2
    assert "class_order_warnings" in report
