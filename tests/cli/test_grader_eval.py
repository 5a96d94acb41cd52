"""``rbr grader eval``: table, JSON report, thresholds file and bad input."""

from __future__ import annotations

import json
import math
import textwrap

import pytest
from click.testing import CliRunner

from rbr.cli.grader_cmd import grader_group
from rbr.evaluation import PropositionThresholds
from tests.evaluation.tiny_gold import gold_rows, tiny_policy, write_rows
from tests.graders.fake_openai_server import FakeOpenAIServer
from tests.policy.test_loader import MINIMAL


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture()
def policy_file(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(MINIMAL))
    return path


def test_help_lists_options_and_units(runner):
    result = runner.invoke(grader_group, ["eval", "--help"])
    assert result.exit_code == 0, result.output
    for option in (
        "--gold",
        "--policy",
        "--grader",
        "--batch-size",
        "--tuning-fraction",
        "--seed",
        "--json",
        "--thresholds-out",
    ):
        assert option in result.output
    assert "from 0 to 1" in result.output


def test_eval_writes_report_and_thresholds(runner, tmp_path, policy_file):
    gold = write_rows(tmp_path / "gold.jsonl", gold_rows())
    report_path = tmp_path / "out" / "report.json"
    thresholds_path = tmp_path / "out" / "thresholds.json"
    result = runner.invoke(
        grader_group,
        [
            "eval",
            "--grader",
            "labels",
            "--gold",
            str(gold),
            "--policy",
            str(policy_file),
            "--tuning-fraction",
            "0.25",
            "--seed",
            "3",
            "--json",
            str(report_path),
            "--thresholds-out",
            str(thresholds_path),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["proposition", "n", "pos", "acc"]
    apology = next(line for line in lines if line.startswith("apology"))
    assert apology.split()[1:4] == ["48", "24", "1.000"]
    assert any(line.startswith("macro (3 propositions)") for line in lines)
    hard = next(line for line in lines if line.startswith("Hard Refuse"))
    assert hard.split()[2:] == ["48", "48", "1.000", "1.000", "1.000"]

    report = json.loads(report_path.read_text())
    assert report["settings"] == {"tuning_fraction": 0.25, "random_state": 3}
    assert report["propositions"]["harmful"]["accuracy"] == 1.0
    assert report["response_types"]["Hard Refuse"]["agreement_at_default"] == 1.0
    thresholds = PropositionThresholds.load(thresholds_path)
    assert thresholds.grader_identity == "labels"
    assert thresholds.source == str(gold)
    thresholds.check_matches(policy=tiny_policy(), grader_identity="labels")
    assert set(thresholds.thresholds) == {"apology", "refuses", "harmful"}
    assert sorted(p.name for p in report_path.parent.iterdir()) == [
        "report.json",
        "thresholds.json",
    ]


def test_eval_without_outputs_prints_only(runner, tmp_path, policy_file):
    gold = write_rows(tmp_path / "gold.jsonl", gold_rows())
    result = runner.invoke(
        grader_group,
        [
            "eval",
            "--grader",
            "labels",
            "--gold",
            str(gold),
            "--policy",
            str(policy_file),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "written" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gold.jsonl", "policy.yaml"]


def test_invalid_json_line_exits_2_without_outputs(runner, tmp_path, policy_file):
    gold = tmp_path / "gold.jsonl"
    write_rows(gold, gold_rows()[:5])
    with gold.open("a") as handle:
        handle.write('{"prompt": [\n')
    report_path = tmp_path / "report.json"
    thresholds_path = tmp_path / "thresholds.json"
    result = runner.invoke(
        grader_group,
        [
            "eval",
            "--grader",
            "labels",
            "--gold",
            str(gold),
            "--policy",
            str(policy_file),
            "--json",
            str(report_path),
            "--thresholds-out",
            str(thresholds_path),
        ],
    )
    assert result.exit_code == 2
    assert f"{gold}:6: invalid JSON" in result.output
    assert not report_path.exists()
    assert not thresholds_path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gold.jsonl", "policy.yaml"]


def test_fractional_label_exits_2(runner, tmp_path, policy_file):
    rows = gold_rows()
    rows[1]["propositions"]["harmful"] = 0.4
    gold = write_rows(tmp_path / "gold.jsonl", rows)
    report_path = tmp_path / "report.json"
    result = runner.invoke(
        grader_group,
        [
            "eval",
            "--grader",
            "labels",
            "--gold",
            str(gold),
            "--policy",
            str(policy_file),
            "--json",
            str(report_path),
        ],
    )
    assert result.exit_code == 2
    assert f"{gold}:2:" in result.output
    assert "propositions.harmful" in result.output
    assert not report_path.exists()


def test_tuning_fraction_out_of_range(runner, tmp_path, policy_file):
    gold = write_rows(tmp_path / "gold.jsonl", gold_rows())
    result = runner.invoke(
        grader_group,
        ["eval", "--gold", str(gold), "--tuning-fraction", "1.5"],
    )
    assert result.exit_code == 2
    assert "--tuning-fraction" in result.output


def tagged_gold_rows() -> list[dict]:
    """Return gold rows whose completions start with a unique ``sample-<id>`` tag."""
    rows = gold_rows(unrated=0)
    for row in rows:
        message = row["completion"][0]
        index, copy = message["content"].removeprefix("reply ").split(".")
        message["content"] = f"sample-{index}x{copy} reply"
    return rows


def test_openai_grader_few_shot_from_gold(runner, tmp_path, policy_file):
    rows = tagged_gold_rows()
    gold = write_rows(tmp_path / "gold.jsonl", rows)
    labels = {
        row["completion"][0]["content"].split()[0].removeprefix("sample-"): row[
            "propositions"
        ]
        for row in rows
    }

    def answer_with_label(key):
        yes = labels[key[0]][key[1]]
        return [
            (" Yes", math.log(0.9 if yes else 0.1)),
            (" no", math.log(0.1 if yes else 0.9)),
        ]

    with FakeOpenAIServer(
        ["apology", "refuses", "harmful"], top_for=answer_with_label
    ) as server:
        result = runner.invoke(
            grader_group,
            [
                "eval",
                "--grader",
                "labels",
                "--gold",
                str(gold),
                "--policy",
                str(policy_file),
                "--grader",
                "openai",
                "--base-url",
                server.url,
                "--model",
                "m",
                "--api-key",
                "k",
                "--max-retries",
                "0",
                "--no-cache",
                "--few-shot-from",
                str(gold),
                "--few-shot-k",
                "4",
                "--json",
                str(tmp_path / "report.json"),
            ],
        )
        requests = server.requests
    assert result.exit_code == 0, result.output
    assert len(requests) == 3 * len(rows)
    for request in requests:
        text = json.dumps(request.body)
        tag = f"sample-{request.key[0]}"
        # The graded completion appears once, so it is never its own example.
        assert text.count(tag) == 1, tag
        assert text.count("sample-") == 5
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["grader_identity"] != "labels"
    for name in ("apology", "refuses", "harmful"):
        assert report["propositions"][name]["accuracy"] == 1.0
        assert report["propositions"][name]["threshold"] == 0.5
    assert report["response_types"]["Hard Refuse"]["agreement_at_default"] == 1.0
