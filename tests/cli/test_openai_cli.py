"""The CLI with the OpenAI-compatible grader against a local fake server."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rbr.cli.main import cli
from rbr.examples import example_path
from rbr.policy import load_default_policy
from tests.graders.fake_openai_server import DEFAULT_P_YES, FakeOpenAIServer


@pytest.fixture()
def server():
    with FakeOpenAIServer(list(load_default_policy().propositions)) as running:
        yield running


def small_data(folder):
    """Write the first rows of the example data, enough to cover two response types."""
    path = folder / "small.jsonl"
    lines = example_path().read_text().splitlines()[:8]
    path.write_text("\n".join(lines) + "\n")
    return path


def grade_args(server, out, *extra):
    return [
        "grade",
        str(small_data(out.parent)),
        "--out",
        str(out),
        "--grader",
        "openai",
        "--base-url",
        server.url,
        "--model",
        "test-model",
        "--api-key",
        "k",
        "--max-retries",
        "0",
        *extra,
    ]


def test_grade_with_openai_grader_and_cache(server, tmp_path):
    runner = CliRunner()
    cache = tmp_path / "grades.sqlite"
    out = tmp_path / "graded.jsonl"
    result = runner.invoke(cli, grade_args(server, out, "--cache-path", str(cache)))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    first_requests = len(server.requests)
    expected_cells = sum(len(row["propositions"]) for row in rows)
    assert first_requests == expected_cells
    for row in rows:
        assert "unscored" not in row
        for value in row["propositions"].values():
            assert value == pytest.approx(DEFAULT_P_YES)

    again = tmp_path / "again.jsonl"
    result = runner.invoke(cli, grade_args(server, again, "--cache-path", str(cache)))
    assert result.exit_code == 0, result.output
    assert len(server.requests) == first_requests
    assert again.read_text() == out.read_text()


def test_no_cache_sends_requests_again(server, tmp_path):
    runner = CliRunner()
    out = tmp_path / "graded.jsonl"
    for _ in range(2):
        result = runner.invoke(cli, grade_args(server, out, "--no-cache"))
        assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    cells = sum(len(row["propositions"]) for row in rows)
    assert len(server.requests) == 2 * cells


def test_missing_model_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "grade",
            str(example_path()),
            "--out",
            str(tmp_path / "o.jsonl"),
            "--grader",
            "openai",
            "--base-url",
            "http://127.0.0.1:9/v1",
        ],
    )
    assert result.exit_code == 2
    assert "--model" in result.output
    assert not (tmp_path / "o.jsonl").exists()
