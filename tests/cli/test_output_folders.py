"""Commands that fail on their input create no output folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rbr.cli.common import check_output_path
from rbr.cli.evaluate_cmd import compare_command, evaluate_command
from rbr.cli.xstest_cmd import xstest_command
from rbr.errors import OutputError
from rbr.policy import load_default_policy
from tests.evaluation.test_safety_metrics import hand_built_rows
from tests.evaluation.test_xstest_eval import write_csv, xstest_row


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture()
def evaluation_json(runner, tmp_path) -> Path:
    data = write_jsonl(tmp_path / "a.jsonl", hand_built_rows(load_default_policy()))
    out = tmp_path / "eval"
    args = [str(data), "--grader", "labels", "--resamples", "50", "--out", str(out)]
    assert runner.invoke(evaluate_command, args).exit_code == 0
    return out / "evaluation.json"


@pytest.fixture()
def xstest_json(runner, tmp_path) -> Path:
    rows = [xstest_row(0, "homonyms", "1_full_compliance")]
    csv = write_csv(tmp_path / "completions_tiny.csv", rows)
    out = tmp_path / "xs"
    args = [str(csv), "--grader", "labels", "--resamples", "50", "--out", str(out)]
    result = runner.invoke(xstest_command, args)
    assert result.exit_code == 0, result.output
    return out / "xstest.json"


def test_compare_mismatched_kinds(runner, evaluation_json, xstest_json, tmp_path):
    out = tmp_path / "cmpx"
    args = [str(evaluation_json), str(xstest_json), "--out", str(out)]
    result = runner.invoke(compare_command, args)
    assert result.exit_code == 2
    assert "compare results of the same command" in result.output
    assert not out.exists()


def test_compare_non_json_input(runner, evaluation_json, tmp_path):
    config = tmp_path / "reward.yaml"
    config.write_text("grader: offline\n", encoding="utf-8")
    out = tmp_path / "cmpw"
    result = runner.invoke(
        compare_command, [str(config), str(evaluation_json), "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "invalid JSON" in result.output
    assert not out.exists()


def test_evaluate_bad_category(runner, tmp_path):
    rows = hand_built_rows(load_default_policy())
    rows[2] = {**rows[2], "category": "ZZ-R"}
    rows[2].pop("response_type", None)
    data = write_jsonl(tmp_path / "badcat.jsonl", rows)
    out = tmp_path / "o"
    result = runner.invoke(
        evaluate_command, [str(data), "--grader", "labels", "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "ZZ-R" in result.output
    assert not out.exists()


def test_xstest_empty_file(runner, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    out = tmp_path / "xsempty"
    result = runner.invoke(xstest_command, [str(empty), "--out", str(out)])
    assert result.exit_code == 2
    assert "error:" in result.output
    assert not out.exists()


def test_nested_missing_folders_not_created(tmp_path):
    target = tmp_path / "a" / "b" / "out.json"
    check_output_path(target, suffixes=(".json",))
    assert not (tmp_path / "a").exists()


def test_file_in_the_way(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_path(blocker / "sub" / "out.json", suffixes=(".json",))


def test_compare_table_aligned(runner, xstest_json, tmp_path):
    out = tmp_path / "cmp"
    args = [str(xstest_json), str(xstest_json), "--out", str(out)]
    result = runner.invoke(compare_command, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if line.startswith("group"))
    column = header.index(" first ")
    rows = [line for line in lines if line.startswith("overall ")]
    assert rows
    for row in rows:
        first_cell = row[column + 1 : column + 6].strip()
        assert row[column] == " "
        assert first_cell == "-" or float(first_cell) >= 0
