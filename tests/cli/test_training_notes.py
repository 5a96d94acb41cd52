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
from tests.conftest import shared_file
from tests.reports.test_report_grader import shifted_evaluation  # noqa: F401


@pytest.fixture()
def gold_head(tmp_path):
    """The first 30 bundled example rows, which carry proposition labels."""
    lines = example_path().read_text(encoding="utf-8").splitlines()[:30]
    path = tmp_path / "gold.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_report_grader_no_note_on_examples(gold_head, tmp_path):
    # The bundled examples are not training rows of the shipped artifact.
    pytest.importorskip("matplotlib")
    out = tmp_path / "rep"
    result = CliRunner().invoke(
        report_group, ["grader", "--gold", str(gold_head), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "note:" not in result.output
    data = json.loads((out / "grader-report.json").read_text(encoding="utf-8"))
    assert data["grader_training_note"] is None
    html = (out / "grader-report.html").read_text(encoding="utf-8")
    assert "Note:" not in html


def test_report_grader_note_on_training_rows(tmp_path):
    pytest.importorskip("matplotlib")
    rows = shared_file("rbr-gold/train.jsonl").read_text().splitlines()[:20]
    gold = tmp_path / "gold.jsonl"
    gold.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "rep"
    result = CliRunner().invoke(
        report_group, ["grader", "--gold", str(gold), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "note: 20 of the 20 rows" in result.output
    data = json.loads((out / "grader-report.json").read_text(encoding="utf-8"))
    assert "training-set numbers" in data["grader_training_note"]
    html = (out / "grader-report.html").read_text(encoding="utf-8")
    assert "Note: 20 of the 20 rows" in html


def test_report_grader_rejects_misspelled_proposition(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [
        json.loads(line)
        for line in example_path().read_text(encoding="utf-8").splitlines()[:20]
    ]
    rows[3]["propositions"]["apologyy"] = rows[3]["propositions"].pop("apology")
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    out = tmp_path / "rep"
    result = CliRunner().invoke(
        report_group, ["grader", "--gold", str(gold), "--out", str(out)]
    )
    assert result.exit_code == 2
    assert f"error: {gold}:4: unknown proposition 'apologyy'" in result.output
    assert "did you mean 'apology'?" in result.output
    assert not out.exists()


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
