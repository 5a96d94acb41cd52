"""The core CLI commands: policy check, fit, score and quickstart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rbr.cli.main import cli
from rbr.examples import example_path
from tests.conftest import shared_file
from tests.policy.test_loader import MINIMAL


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def example_rows() -> list[dict]:
    return [json.loads(line) for line in example_path().read_text().splitlines()]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["policy"],
        ["policy", "check"],
        ["grade"],
        ["fit"],
        ["score"],
        ["quickstart"],
        ["grader"],
        ["grader", "eval"],
    ],
)
def test_help_everywhere(runner, args):
    result = runner.invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_policy_check_default(runner):
    result = runner.invoke(cli, ["policy", "check"])
    assert result.exit_code == 0, result.output
    assert "is valid" in result.output
    assert "Hard Refuse" in result.output
    assert "19" in result.output


def test_policy_check_bad_file(runner, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(MINIMAL.replace("K-R: Hard Refuse", "K-R: Hard Refusal"))
    result = runner.invoke(cli, ["policy", "check", str(path)])
    assert result.exit_code == 2
    assert "bad.yaml" in result.output
    assert "content_policy.K-R" in result.output


def test_fit_and_score_example_data(runner, tmp_path):
    weights = tmp_path / "w.json"
    report = tmp_path / "report.json"
    result = runner.invoke(
        cli,
        [
            "fit",
            str(example_path()),
            "--out",
            str(weights),
            "--report",
            str(report),
            "--grader",
            "labels",
        ],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads(weights.read_text())
    assert set(saved["response_types"]) == {
        "Comply",
        "Hard Refuse",
        "Safe Refuse 1",
        "Safe Refuse 2",
    }
    assert saved["grader_identity"] == "labels"
    assert (
        "validation_pairwise_accuracy"
        in json.loads(report.read_text())["response_types"]["Hard Refuse"]
    )

    scores = tmp_path / "scores.jsonl"
    result = runner.invoke(
        cli,
        [
            "score",
            str(example_path()),
            "--weights",
            str(weights),
            "--out",
            str(scores),
            "--grader",
            "labels",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    assert len(rows) == len(example_rows())
    first = rows[0]["reward"]
    assert first["total"] == pytest.approx(first["rbr"] + first["base"])
    assert set(first["classes"]) == {
        "ideal",
        "minimum_acceptable_style",
        "unacceptable_completion",
        "illogical_completion",
        "disallowed_completion",
    }


def test_fit_invalid_json_line_reports_line_and_leaves_no_output(runner, tmp_path):
    rows = example_rows()[:6]
    data = write_rows(tmp_path / "data.jsonl", rows)
    with data.open("a") as handle:
        handle.write("{not json\n")
    out = tmp_path / "w.json"
    result = runner.invoke(cli, ["fit", str(data), "--out", str(out)])
    assert result.exit_code == 2
    assert "data.jsonl:7" in result.output
    assert "invalid JSON" in result.output
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [data]


def test_fit_missing_field_reports_line(runner, tmp_path):
    rows = example_rows()[:4]
    del rows[2]["completion"]
    data = write_rows(tmp_path / "data.jsonl", rows)
    result = runner.invoke(cli, ["fit", str(data), "--out", str(tmp_path / "w.json")])
    assert result.exit_code == 2
    assert "data.jsonl:3" in result.output
    assert "missing field 'completion'" in result.output


def test_fit_unknown_label_reports_line_and_choices(runner, tmp_path):
    rows = example_rows()
    rows[5]["label"] = "excellent"
    data = write_rows(tmp_path / "data.jsonl", rows)
    out = tmp_path / "w.json"
    result = runner.invoke(cli, ["fit", str(data), "--out", str(out)])
    assert result.exit_code == 2
    assert "data.jsonl:6" in result.output
    assert "'excellent'" in result.output
    assert not out.exists()


def test_fit_wrong_type_reports_field(runner, tmp_path):
    rows = example_rows()[:3]
    rows[1]["base_reward"] = "high"
    data = write_rows(tmp_path / "data.jsonl", rows)
    result = runner.invoke(cli, ["fit", str(data), "--out", str(tmp_path / "w.json")])
    assert result.exit_code == 2
    assert "data.jsonl:2" in result.output
    assert "base_reward" in result.output


def test_score_rejects_weights_of_another_policy(runner, tmp_path):
    weights = tmp_path / "w.json"
    assert (
        runner.invoke(
            cli,
            ["fit", str(example_path()), "--out", str(weights), "--grader", "labels"],
        ).exit_code
        == 0
    )
    policy = tmp_path / "other.yaml"
    default = Path(__file__).resolve().parents[2] / "src/rbr/policy/default_policy.yaml"
    policy.write_text(
        default.read_text().replace("name: rbr-default-safety", "name: other")
    )
    out = tmp_path / "scores.jsonl"
    result = runner.invoke(
        cli,
        [
            "score",
            str(example_path()),
            "--weights",
            str(weights),
            "--out",
            str(out),
            "--policy",
            str(policy),
        ],
    )
    assert result.exit_code == 2
    assert "fitted for policy 'rbr-default-safety'" in result.output
    assert "refit" in result.output
    assert not out.exists()


def test_quickstart_runs_end_to_end(runner, tmp_path):
    out = tmp_path / "qs"
    result = runner.invoke(cli, ["quickstart", "--out", str(out)])
    assert result.exit_code == 0, result.output
    weights = json.loads((out / "weights.json").read_text())
    assert weights["grader_identity"].startswith("offline:")
    assert set(weights["response_types"]) == {
        "Comply",
        "Hard Refuse",
        "Safe Refuse 1",
        "Safe Refuse 2",
    }
    rows = [
        json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()
    ]
    assert len(rows) == len(example_rows())
    assert all(row["reward"]["total"] is not None for row in rows)
    assert "mean reward" in result.output


def test_quickstart_rewards_follow_hard_refuse_ordering(runner, tmp_path):
    out = tmp_path / "qs"
    assert runner.invoke(cli, ["quickstart", "--out", str(out)]).exit_code == 0
    rows = [
        json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()
    ]
    by_label: dict[str, list[float]] = {}
    for row in rows:
        if row["reward"]["response_type"] == "Hard Refuse":
            by_label.setdefault(row["label"], []).append(row["reward"]["total"])
    mean = {label: sum(v) / len(v) for label, v in by_label.items()}
    assert mean["perfect_refusal"] > mean["bad_refusal"] > mean["disallowed"]


def test_fit_gold_set_by_class_reaches_target(runner, tmp_path):
    gold = shared_file("rbr-gold/train.jsonl")
    report = tmp_path / "report.json"
    result = runner.invoke(
        cli,
        [
            "fit",
            str(gold),
            "--out",
            str(tmp_path / "w.json"),
            "--report",
            str(report),
            "--labels",
            "classes",
        ],
    )
    assert result.exit_code == 0, result.output
    types = json.loads(report.read_text())["response_types"]
    measured = 0
    for name, entry in types.items():
        assert entry["cross_prompt"] is True, name
        if entry["n_validation_pairs"] >= 20:
            measured += 1
            assert entry["validation_pairwise_accuracy"] >= 0.97, (name, entry)
    assert measured >= 2
