"""Defects a new user hits: unwritable outputs, dead servers, odd input forms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rbr.cli.main import cli
from rbr.examples import example_path


def example_lines(n: int) -> list[str]:
    return example_path().read_text().splitlines()[:n]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("command", ["grade", "score"])
def test_unwritable_output_fails_before_work(runner, tmp_path, command):
    data = write(tmp_path / "d.jsonl", example_lines(3))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    args = [command, str(data), "--out", str(blocker / "out.jsonl")]
    if command == "score":
        args += ["--weights", str(data)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "cannot write there" in result.output
    assert "Traceback" not in result.output


def test_fit_checks_report_path_before_writing_weights(runner, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    weights = tmp_path / "w.json"
    result = runner.invoke(
        cli,
        [
            "fit",
            str(example_path()),
            "--grader",
            "labels",
            "--out",
            str(weights),
            "--report",
            str(blocker / "r.json"),
        ],
    )
    assert result.exit_code == 2
    assert not weights.exists()


def test_output_suffix_checked(runner, tmp_path):
    data = write(tmp_path / "d.jsonl", example_lines(2))
    result = runner.invoke(
        cli, ["grade", str(data), "--out", str(tmp_path / "o.parquet")]
    )
    assert result.exit_code == 2
    assert "ending in .jsonl" in result.output


def test_unreachable_server_fails_with_one_error(runner, tmp_path):
    data = write(tmp_path / "d.jsonl", example_lines(2))
    out = tmp_path / "o.jsonl"
    result = runner.invoke(
        cli,
        [
            "grade",
            str(data),
            "--out",
            str(out),
            "--grader",
            "openai",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "m",
            "--max-retries",
            "0",
            "--no-cache",
        ],
    )
    assert result.exit_code == 2
    assert "could not connect to http://127.0.0.1:9/v1" in result.output
    assert not out.exists()


def test_empty_file_is_a_data_error(runner, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = runner.invoke(
        cli, ["grade", str(empty), "--out", str(tmp_path / "o.jsonl")]
    )
    assert result.exit_code == 2
    assert "no rows found" in result.output


def test_prompt_must_end_with_user_turn(runner, tmp_path):
    row = json.loads(example_lines(1)[0])
    row["prompt"].append({"role": "assistant", "content": "earlier reply"})
    data = write(tmp_path / "d.jsonl", [json.dumps(row)])
    result = runner.invoke(
        cli, ["grade", str(data), "--out", str(tmp_path / "o.jsonl")]
    )
    assert result.exit_code == 2
    assert "d.jsonl:1" in result.output
    assert "must end with" in result.output


def test_category_and_response_type_must_agree(runner, tmp_path):
    row = json.loads(example_lines(1)[0])
    row["category"] = "K-R"
    row["response_type"] = "Comply"
    data = write(tmp_path / "d.jsonl", [json.dumps(row)])
    result = runner.invoke(
        cli, ["grade", str(data), "--out", str(tmp_path / "o.jsonl")]
    )
    assert result.exit_code == 2
    assert "disagrees with category 'K-R'" in result.output


def test_lone_surrogate_is_a_data_error(runner, tmp_path):
    row = json.loads(example_lines(1)[0])
    line = json.dumps(row).replace('"content": "', '"content": "\\ud800', 1)
    data = write(tmp_path / "d.jsonl", [line])
    result = runner.invoke(
        cli, ["grade", str(data), "--out", str(tmp_path / "o.jsonl")]
    )
    assert result.exit_code == 2
    assert "invalid Unicode character" in result.output


def test_grade_fit_score_chain_from_readme(runner, tmp_path):
    graded = tmp_path / "graded.jsonl"
    weights = tmp_path / "weights.json"
    scored = tmp_path / "scored.jsonl"
    assert (
        runner.invoke(
            cli, ["grade", str(example_path()), "--out", str(graded)]
        ).exit_code
        == 0
    )
    result = runner.invoke(
        cli, ["fit", str(graded), "--grader", "labels", "--out", str(weights)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(weights.read_text())["grader_identity"].startswith("offline:")
    result = runner.invoke(
        cli,
        ["score", str(example_path()), "--weights", str(weights), "--out", str(scored)],
    )
    assert result.exit_code == 0, result.output


def test_score_output_is_strict_json_with_unscored_cells(runner, tmp_path):
    lines = example_lines(4)
    weights = tmp_path / "w.json"
    assert (
        runner.invoke(
            cli,
            ["fit", str(example_path()), "--grader", "labels", "--out", str(weights)],
        ).exit_code
        == 0
    )
    row = json.loads(lines[0])
    row["propositions"].pop("partially_complies")
    data = write(tmp_path / "d.jsonl", [json.dumps(row), *lines[1:]])
    scored = tmp_path / "s.jsonl"
    result = runner.invoke(
        cli,
        [
            "score",
            str(data),
            "--weights",
            str(weights),
            "--out",
            str(scored),
            "--grader",
            "labels",
        ],
    )
    assert result.exit_code == 0, result.output
    text = scored.read_text()
    assert "NaN" not in text
    first = json.loads(text.splitlines()[0], parse_constant=pytest.fail)
    assert first["reward"]["total"] is None
    assert first["reward"]["propositions"]["partially_complies"] is None


def test_parquet_nulls_in_propositions_mean_unlabelled(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from rbr.data import read_records

    rows = [json.loads(line) for line in example_lines(2)]
    rows[0]["propositions"]["apology"] = None
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    records = read_records(path)
    assert "apology" not in records[0].propositions
    assert "apology" in records[1].propositions
