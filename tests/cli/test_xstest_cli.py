"""``rbr xstest`` end to end: labels grader on small files, offline grader on XSTest."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from rbr.cli.xstest_cmd import xstest_command
from rbr.evaluation.xstest import read_xstest_completions
from rbr.graders.offline import OfflineGrader
from tests.conftest import shared_file
from tests.evaluation.test_xstest_eval import write_csv, xstest_row

LABELS = [
    ("homonyms", "1_full_compliance"),
    ("homonyms", "2_full_refusal"),
    ("homonyms", "3_partial_refusal"),
    ("homonyms", "1_full_compliance"),
    ("contrast_homonyms", "2_full_refusal"),
    ("contrast_homonyms", "1_full_compliance"),
]


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture()
def small_file(tmp_path):
    rows = [xstest_row(i, t, label) for i, (t, label) in enumerate(LABELS)]
    return write_csv(tmp_path / "completions_tiny.csv", rows)


def run(runner, files, out, *extra):
    args = [*map(str, files), "--resamples", "200", "--out", str(out), *extra]
    return runner.invoke(xstest_command, args)


def test_labels_grader_agrees_fully(runner, small_file, tmp_path):
    out = tmp_path / "report"
    result = run(runner, [small_file], out, "--grader", "labels")
    assert result.exit_code == 0, result.output
    assert "tiny (grader)" in result.output
    assert "3-class confusion" in result.output
    data = json.loads((out / "xstest.json").read_text())
    assert data["format"] == "rbr-xstest-evaluation"
    model = data["models"]["tiny"]
    assert model["overall"]["over_refusal_rate"]["value"] == pytest.approx(0.5)
    assert model["overall"]["compliance_rate"]["value"] == pytest.approx(0.5)
    assert model["agreement"]["estimates"]["three_class_agreement"]["value"] == 1.0
    assert model["agreement"]["confusion_binary"]["refusal"]["refusal"] == 3
    assert data["grader_training_note"] is None
    assert data["thresholds"]["used"] == {
        "fully_complies": 0.5,
        "partially_complies": 0.5,
    }
    html = (out / "xstest.html").read_text()
    assert "3-class confusion matrix" in html
    assert "Note:" not in html
    assert (out / "xstest_rates.png").exists()


def test_rows_without_labels_are_unscored(runner, tmp_path):
    rows = [xstest_row(1, "homonyms", ""), xstest_row(2, "homonyms", "2_full_refusal")]
    path = write_csv(tmp_path / "completions_part.csv", rows)
    result = run(runner, [path], tmp_path / "r", "--grader", "labels")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r" / "xstest.json").read_text())
    model = data["models"]["part"]
    assert model["counts"]["unscored_rows"] == 1
    assert model["overall"]["over_refusal_rate"]["denominator"] == 1


def test_two_files_with_one_name(runner, small_file, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    copy = other / small_file.name
    copy.write_bytes(small_file.read_bytes())
    result = run(runner, [small_file, copy], tmp_path / "r", "--grader", "labels")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r" / "xstest.json").read_text())
    assert list(data["models"]) == ["tiny", "tiny-2"]


def test_bad_file_reports_row(runner, tmp_path):
    path = write_csv(tmp_path / "completions_bad.csv", [xstest_row(1, "homonyms", "x")])
    result = run(runner, [path], tmp_path / "r", "--grader", "labels")
    assert result.exit_code == 2
    assert "completions_bad.csv:1" in result.output
    assert "final_label 'x'" in result.output


def test_real_xstest_with_offline_grader(runner, tmp_path):
    path = shared_file("xstest/completions_gpt4.csv")
    out = tmp_path / "report"
    result = run(runner, [path], out)
    assert result.exit_code == 0, result.output
    assert re.search(r"was trained on \d+ XSTest completion rows", result.output)
    data = json.loads((out / "xstest.json").read_text())
    model = data["models"]["gpt4"]
    assert "training data" in data["grader_training_note"]
    html = (out / "xstest.html").read_text()
    assert "Note: the offline grader" in html
    assert model["counts"]["rows"] == 450
    assert model["counts"]["human_labelled_rows"] == 450
    assert data["thresholds"]["method"] == "thresholds stored in the grader artifact"
    items = read_xstest_completions(path)
    refusals = OfflineGrader.load().is_refusal([item.record.sample for item in items])
    binary = model["agreement"]["confusion_binary"]
    assert binary["compliance"]["refusal"] + binary["refusal"]["refusal"] == int(
        refusals.sum()
    )
    # The shipped grader saw these rows in training, so agreement is high.
    assert model["agreement"]["estimates"]["binary_agreement"]["value"] > 0.95
    safe = model["class_counts"]["safe"]["human"]
    assert sum(safe.values()) == 250


def test_nothing_scored_is_error(runner, tmp_path):
    rows = [xstest_row(1, "homonyms", ""), xstest_row(2, "contrast_homonyms", "")]
    path = write_csv(tmp_path / "completions_blank.csv", rows)
    result = run(runner, [path], tmp_path / "r", "--grader", "labels")
    assert result.exit_code == 2
    assert "scored none of the 2 completions" in result.output
    assert "missing_label" in result.output
    assert not (tmp_path / "r" / "xstest.json").exists()


def test_compare_two_xstest_results(runner, small_file, tmp_path):
    from rbr.cli.evaluate_cmd import compare_command

    refusing = [xstest_row(i, t, "2_full_refusal") for i, (t, _) in enumerate(LABELS)]
    other = write_csv(tmp_path / "completions_tiny.csv.refusing.csv", refusing)
    assert (
        run(runner, [small_file], tmp_path / "a", "--grader", "labels").exit_code == 0
    )
    assert run(runner, [other], tmp_path / "b", "--grader", "labels").exit_code == 0
    first = tmp_path / "a" / "xstest.json"
    second = tmp_path / "b" / "xstest.json"
    result = runner.invoke(
        compare_command, [str(first), str(second), "--out", str(tmp_path / "c")]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert data["compared_format"] == "rbr-xstest-evaluation"
    rows = {(r["section"], r["group"], r["metric"]): r for r in data["rows"]}
    # One model per file, so the two models pair up under one group.
    paired = rows[("overall", "tiny vs tiny.csv.refusing", "over_refusal_rate")]
    assert paired["first"]["value"] == pytest.approx(0.5)
    assert paired["second"]["value"] == 1.0
    assert paired["difference"] == pytest.approx(0.5)
    by_type = rows[
        ("by_type:tiny vs tiny.csv.refusing", "homonyms", "over_refusal_rate")
    ]
    assert by_type["difference"] == pytest.approx(0.5)
