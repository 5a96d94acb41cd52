"""``rbr evaluate`` and ``rbr compare`` end to end with the labels grader."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

from rbr.cli.evaluate_cmd import compare_command, evaluate_command
from rbr.evaluation import PropositionThresholds
from rbr.policy import load_default_policy
from tests.evaluation.test_safety_metrics import (
    HAND_BUILT,
    hand_built_rows,
    labelled_row,
)


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture()
def data_file(tmp_path):
    return write_jsonl(
        tmp_path / "model_a.jsonl", hand_built_rows(load_default_policy())
    )


@pytest.fixture()
def better_file(tmp_path):
    """The same prompts, but every hard refusal ideal and no over-refusal."""
    policy = load_default_policy()
    improved = {
        ("p1", "unacceptable_completion"): "ideal",
        ("p4", "disallowed_completion"): "ideal",
        ("p5", "minimum_acceptable_style"): "ideal",
    }
    rows = [
        labelled_row(p, c, improved.get((p, t), t), policy, i)
        for i, (p, c, t) in enumerate(HAND_BUILT)
    ]
    return write_jsonl(tmp_path / "model_b.jsonl", rows)


def evaluate(runner, data, out, *extra):
    args = [str(data), "--grader", "labels", "--resamples", "200", "--out", str(out)]
    return runner.invoke(evaluate_command, [*args, *extra])


def test_evaluate_writes_table_json_html(runner, data_file, tmp_path):
    out = tmp_path / "report"
    result = evaluate(runner, data_file, out)
    assert result.exit_code == 0, result.output
    for title in ("Not-Unsafe", "Not-Overrefuse", "Hard-Refusal-Style", "F1"):
        assert title in result.output
    assert " 80.0 [" in result.output  # Not-Unsafe 4/5
    data = json.loads((out / "evaluation.json").read_text())
    assert data["format"] == "rbr-safety-evaluation"
    assert data["grader_identity"] == "labels"
    assert data["overall"]["not_unsafe"]["value"] == pytest.approx(0.8)
    assert data["overall"]["not_overrefuse"]["denominator"] == 3
    assert data["by_category"]["K-R"]["not_unsafe"]["value"] == pytest.approx(0.5)
    assert data["bootstrap"]["n_resamples"] == 200
    assert data["counts"]["rows_by_status"] == {"classified": 8, "unscored": 1}
    assert data["thresholds"]["source"] is None
    html = (out / "evaluation.html").read_text()
    assert "Not-Overrefuse" in html
    assert "data:image/png;base64," in html
    assert (out / "evaluation_metrics.png").stat().st_size > 1000


def test_evaluate_is_seeded(runner, data_file, tmp_path):
    first = evaluate(runner, data_file, tmp_path / "a", "--seed", "3")
    second = evaluate(runner, data_file, tmp_path / "b", "--seed", "3")
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    a = json.loads((tmp_path / "a" / "evaluation.json").read_text())
    b = json.loads((tmp_path / "b" / "evaluation.json").read_text())
    assert a["overall"] == b["overall"]


def save_thresholds(path, grader_identity):
    policy = load_default_policy()
    PropositionThresholds(
        thresholds={"disallowed_content": 0.0},
        grader_identity=grader_identity,
        policy_name=policy.name,
        policy_hash=policy.content_hash,
        source="test",
        method="hand-set",
    ).save(path)
    return path


def test_thresholds_file_changes_classes(runner, data_file, tmp_path):
    thresholds = save_thresholds(tmp_path / "t.json", "labels")
    out = tmp_path / "report"
    result = evaluate(runner, data_file, out, "--thresholds", str(thresholds))
    assert result.exit_code == 0, result.output
    data = json.loads((out / "evaluation.json").read_text())
    assert data["overall"]["not_unsafe"]["value"] == 0.0
    assert data["thresholds"]["source"] == str(thresholds)
    assert data["thresholds"]["values"] == {"disallowed_content": 0.0}


def test_thresholds_for_other_grader_rejected(runner, data_file, tmp_path):
    thresholds = save_thresholds(tmp_path / "t.json", "openai:some-model")
    result = evaluate(
        runner, data_file, tmp_path / "r", "--thresholds", str(thresholds)
    )
    assert result.exit_code == 2
    assert "tuned for grader 'openai:some-model'" in result.output
    allowed = evaluate(
        runner,
        data_file,
        tmp_path / "r",
        "--thresholds",
        str(thresholds),
        "--allow-grader-mismatch",
    )
    assert allowed.exit_code == 0, allowed.output


def test_unknown_type_option_rejected(runner, data_file, tmp_path):
    result = evaluate(runner, data_file, tmp_path / "r", "--comply-type", "Answer")
    assert result.exit_code == 2
    assert "unknown response type 'Answer'" in result.output


def test_missing_data_is_usage_error(runner, tmp_path):
    result = runner.invoke(evaluate_command, ["--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "missing DATA" in result.output


def test_compare_both_ways(runner, data_file, better_file, tmp_path):
    assert evaluate(runner, data_file, tmp_path / "a").exit_code == 0
    assert evaluate(runner, better_file, tmp_path / "b").exit_code == 0
    first = tmp_path / "a" / "evaluation.json"
    second = tmp_path / "b" / "evaluation.json"
    out = tmp_path / "cmp"
    result = runner.invoke(
        compare_command, [str(first), str(second), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "Hard-Refusal-Style" in result.output
    data = json.loads((out / "comparison.json").read_text())
    rows = {(r["section"], r["group"], r["metric"]): r for r in data["rows"]}
    hard = rows[("overall", "all", "hard_refusal_style")]
    assert hard["difference"] == pytest.approx(1.0 - 1 / 3)
    assert hard["difference_ci_low"] <= hard["difference"] <= hard["difference_ci_high"]
    assert rows[("overall", "all", "not_overrefuse")]["difference"] == pytest.approx(
        1 / 3
    )
    assert (out / "comparison.html").exists()
    alias = runner.invoke(
        evaluate_command,
        ["--compare", str(first), str(second), "--out", str(tmp_path / "cmp2")],
    )
    assert alias.exit_code == 0, alias.output
    again = json.loads((tmp_path / "cmp2" / "comparison.json").read_text())
    assert again["rows"] == data["rows"]


def test_compare_rejects_other_files(runner, data_file, tmp_path):
    assert evaluate(runner, data_file, tmp_path / "a").exit_code == 0
    result = runner.invoke(
        compare_command,
        [
            str(tmp_path / "a" / "evaluation.json"),
            str(data_file),
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2
    assert "invalid JSON" in result.output
    both = runner.invoke(
        evaluate_command,
        [str(data_file), "--compare", str(data_file), str(data_file)],
    )
    assert both.exit_code == 2
    assert "either DATA or --compare" in both.output


def test_report_without_matplotlib(runner, data_file, tmp_path, monkeypatch):
    # A None entry in sys.modules makes the import raise ImportError.
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    out = tmp_path / "report"
    result = evaluate(runner, data_file, out)
    assert result.exit_code == 0, result.output
    assert (
        "No chart: matplotlib is not installed" in (out / "evaluation.html").read_text()
    )
    assert not (out / "evaluation_metrics.png").exists()
    assert (out / "evaluation.json").exists()


def test_csv_points_to_xstest(runner, tmp_path):
    path = tmp_path / "completions_model.csv"
    path.write_text("id,prompt,completion,final_label\n", encoding="utf-8")
    result = runner.invoke(
        evaluate_command, [str(path), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2
    assert "is a CSV file" in result.output
    assert f"rbr xstest {path}" in result.output
