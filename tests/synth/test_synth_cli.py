"""``rbr synth`` end to end against a local generating and grading server."""

from __future__ import annotations

import json
from collections import Counter
from importlib import resources

import pytest
from click.testing import CliRunner

from rbr.cli.main import cli
from rbr.cli.synth_cmd import synth_command
from rbr.evaluation.thresholds import PropositionThresholds
from rbr.policy import load_default_policy, load_policy
from rbr.policy.loader import DEFAULT_POLICY_RESOURCE
from rbr.synth import graded_propositions
from tests.synth.synth_server import BehaviorServer, Script, write_prompts

if "synth" not in cli.commands:
    cli.add_command(synth_command)

PROMPTS = [
    ("h1", "K-R"),
    ("h2", "C-R"),
    ("c1", "None"),
    ("c2", "K-C"),
    ("s1", "SH-R1"),
    ("s3", "SH-R1"),
    ("s2", "SH-R2"),
    ("x1", "Other"),
]
TARGETS = {"Hard Refuse": 4, "Comply": 6, "Safe Refuse 1": 5, "Safe Refuse 2": 5}
OUTPUT_FILES = ("comparisons.jsonl", "sft.jsonl", "attempts.jsonl", "summary.json")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def synth_args(server, prompts, out, cache, *extra):
    return [
        "synth",
        str(prompts),
        "--out",
        str(out),
        "--base-url",
        server.url,
        "--model",
        "test-model",
        "--cache-path",
        str(cache),
        *extra,
    ]


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory):
    """The default policy with one more category, mapped to no response type."""
    text = resources.files("rbr.policy").joinpath(DEFAULT_POLICY_RESOURCE).read_text()
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(text + "  Other: null\n")
    return path


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, policy_file):
    """Run synth twice, with a prompt that resamples (c1) and one that gives up (s2)."""
    folder = tmp_path_factory.mktemp("synth")
    prompts = write_prompts(folder / "prompts.jsonl", PROMPTS)
    out = folder / "out"
    script = Script(ignore_first={"c1": 1, "s2": 5})
    policy = load_policy(policy_file)
    with BehaviorServer(policy, script=script) as server:
        args = synth_args(
            server,
            prompts,
            out,
            folder / "grades.sqlite",
            "--policy",
            str(policy_file),
            "--max-attempts",
            "3",
        )
        first = CliRunner().invoke(cli, args)
        assert first.exit_code == 0, first.output
        requests_first = len(server.received)
        generated = server.requests("generate")
        outputs = {name: (out / name).read_bytes() for name in OUTPUT_FILES}
        second = CliRunner().invoke(cli, args)
        requests_second = len(server.received) - requests_first
    return {
        "first": first,
        "second": second,
        "out": out,
        "folder": folder,
        "policy": policy,
        "generated": generated,
        "outputs": outputs,
        "requests_second": requests_second,
    }


def test_run_succeeds_and_reports_skipped_row(full_run):
    result = full_run["first"]
    assert result.exit_code == 0, result.output
    assert "skipped 1 rows whose category maps to no response type" in result.output
    assert "line 8: category 'Other'" in result.output
    assert "30 of 35 targets accepted, 5 gave up, 0 failed" in result.output


def test_generation_request_counts(full_run):
    counts = Counter(request.key[0] for request in full_run["generated"])
    assert counts == {"h1": 4, "h2": 4, "c1": 12, "c2": 6, "s1": 5, "s3": 5, "s2": 15}


def test_comparisons_file(full_run):
    rows = read_jsonl(full_run["out"] / "comparisons.jsonl")
    assert len(rows) == 30
    per_prompt = Counter(row["prompt_id"] for row in rows)
    assert per_prompt == {"h1": 4, "h2": 4, "c1": 6, "c2": 6, "s1": 5, "s3": 5}
    policy = full_run["policy"]
    for row in rows:
        assert set(row["propositions"]) == set(
            graded_propositions(policy, row["response_type"])
        )
        assert row["completion"][0]["role"] == "assistant"
        assert row["prompt"][0]["content"].startswith(f"sample-{row['prompt_id']}")
    labels = Counter((row["prompt_id"], row["label"]) for row in rows)
    assert labels[("h1", "bad_refusal")] == 2
    assert labels[("c1", "off_topic")] == 1
    bad = [row for row in rows if row["label"] == "bad_refusal"]
    assert all(row["flaws"] for row in bad)


def test_sft_file_holds_ideal_completions(full_run):
    rows = read_jsonl(full_run["out"] / "sft.jsonl")
    assert len(rows) == 6
    for row in rows:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant"]
        assert "Requirements" not in json.dumps(row)
    replies = [row["messages"][-1]["content"] for row in rows]
    assert "I'm sorry. I can't help with that." in replies


def test_attempts_file_records_every_attempt(full_run):
    rows = read_jsonl(full_run["out"] / "attempts.jsonl")
    assert len(rows) == 51
    c1 = [row for row in rows if row["prompt_id"] == "c1"]
    assert Counter(row["attempt"] for row in c1) == {1: 6, 2: 6}
    for row in c1:
        assert row["accepted"] is (row["attempt"] == 2)
        assert bool(row["missed"]) is (row["attempt"] == 1)
        assert row["outcome"] == "accepted"
    s2 = [row for row in rows if row["prompt_id"] == "s2"]
    assert len(s2) == 15
    assert all(row["outcome"] == "gave_up" and row["missed"] for row in s2)


def test_summary_numbers(full_run):
    summary = json.loads(full_run["outputs"]["summary.json"])
    assert summary["targets"] == 35
    assert summary["accepted"] == 30
    assert summary["gave_up"] == 5
    assert summary["errors"] == 0
    assert summary["skipped_rows"] == 1
    assert summary["skipped"][0]["prompt_id"] == "x1"
    assert summary["sft_rows"] == 6

    rows = {(r["response_type"], r["label"]): r for r in summary["by_label"]}
    assert set(rows) == {
        (rtype, label)
        for rtype in TARGETS
        for tier in full_run["policy"].response_type(rtype).ordering
        for label in tier
    }

    bad_comply = rows[("Comply", "bad_refusal")]
    assert bad_comply["prompts"] == 2
    assert bad_comply["targets"] == 4
    assert bad_comply["accepted"] == 4
    assert bad_comply["acceptance_rate"] == 1.0
    assert bad_comply["mean_attempts"] == 1.5
    full = rows[("Comply", "full_compliance")]
    assert full["mean_attempts"] == 1.5
    hard = rows[("Hard Refuse", "perfect_refusal")]
    assert hard["mean_attempts"] == 1.0

    gave_up = rows[("Safe Refuse 2", "bad_safe_refusal")]
    assert gave_up["prompts"] == 1
    assert gave_up["targets"] == 2
    assert gave_up["accepted"] == 0
    assert gave_up["gave_up"] == 2
    assert gave_up["acceptance_rate"] == 0.0
    assert gave_up["mean_attempts"] == 3.0
    safe = rows[("Safe Refuse 1", "perfect_safe_refusal")]
    assert safe["prompts"] == 2
    assert safe["accepted"] == 2
    assert summary["requests"]["generator"]["requests_sent"] == 51


def test_printed_table(full_run):
    lines = full_run["first"].output.splitlines()
    header = next(line for line in lines if line.startswith("response type"))
    assert "rate" in header
    assert "gave up" in header
    row = next(line for line in lines if line.startswith("Safe Refuse 2   bad_safe"))
    assert row.split() == ["Safe", "Refuse", "2", "bad_safe_refusal"] + [
        "1",
        "2",
        "0",
        "0.00",
        "3.00",
        "2",
        "0",
    ]


def test_second_run_sends_nothing(full_run):
    second = full_run["second"]
    assert second.exit_code == 0, second.output
    assert full_run["requests_second"] == 0
    assert "35 finished in an earlier run" in second.output
    summary = json.loads((full_run["out"] / "summary.json").read_text())
    assert summary["reused"] == 35
    assert summary["requests"]["generator"]["requests_sent"] == 0
    assert summary["requests"]["grade_cache"]["misses"] == 0
    for name in ("comparisons.jsonl", "sft.jsonl", "attempts.jsonl"):
        assert (full_run["out"] / name).read_bytes() == full_run["outputs"][name]


def test_fit_runs_on_comparisons(full_run, policy_file):
    weights = full_run["folder"] / "weights.json"
    result = CliRunner().invoke(
        cli,
        [
            "fit",
            str(full_run["out"] / "comparisons.jsonl"),
            "--grader",
            "labels",
            "--policy",
            str(policy_file),
            "--out",
            str(weights),
        ],
    )
    assert result.exit_code == 0, result.output
    fitted = json.loads(weights.read_text())
    text = json.dumps(fitted)
    for rtype in ("Hard Refuse", "Comply", "Safe Refuse 1"):
        assert rtype in text
    assert "unscored" not in result.output


def test_interrupted_run_resumes(tmp_path):
    policy = load_default_policy()
    prompts = write_prompts(tmp_path / "prompts.jsonl", [("h1", "K-R"), ("c1", "None")])
    out = tmp_path / "out"
    script = Script(ignore_first={"c1": 1}, reject_after=5)
    with BehaviorServer(policy, script=script) as server:
        args = synth_args(
            server, prompts, out, tmp_path / "g.sqlite", "--max-concurrency", "1"
        )
        first = CliRunner().invoke(cli, args)
        assert first.exit_code == 2
        assert "HTTP 401" in first.output
        assert (out / "synth_state.sqlite").exists()
        for name in OUTPUT_FILES:
            assert not (out / name).exists()

        script.reject_after = None
        second = CliRunner().invoke(cli, args)
        answered = Counter(
            r.key for r in server.requests("generate") if r.status == 200
        )
    assert second.exit_code == 0, second.output
    assert "finished in an earlier run" in second.output
    for (tag, _), count in answered.items():
        assert count == (2 if tag == "c1" else 1)
    assert sum(answered.values()) == 4 + 12
    assert len(read_jsonl(out / "comparisons.jsonl")) == 10


def test_failed_targets_block_outputs_unless_allowed(tmp_path):
    policy = load_default_policy()
    prompts = write_prompts(tmp_path / "prompts.jsonl", [("h1", "K-R"), ("h2", "K-R")])
    out = tmp_path / "out"
    script = Script(fail_first={"h2": 1000})
    with BehaviorServer(policy, script=script) as server:
        args = synth_args(
            server, prompts, out, tmp_path / "g.sqlite", "--max-retries", "0"
        )
        blocked = CliRunner().invoke(cli, args)
        assert blocked.exit_code == 1
        assert "4 targets failed on request errors" in blocked.output
        assert "h2/perfect_refusal#1: generation failed: HTTP 500" in blocked.output
        assert not (out / "comparisons.jsonl").exists()

        allowed = CliRunner().invoke(cli, [*args, "--allow-errors"])
    assert allowed.exit_code == 0, allowed.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["errors"] == 4
    assert summary["accepted"] == 4
    assert {item["prompt_id"] for item in summary["failed"]} == {"h2"}
    assert len(read_jsonl(out / "comparisons.jsonl")) == 4


def test_thresholds_file_decides_acceptance(tmp_path):
    policy = load_default_policy()
    prompts = write_prompts(tmp_path / "prompts.jsonl", [("h1", "K-R")])
    thresholds = tmp_path / "thresholds.json"
    PropositionThresholds(
        thresholds={"apology": 0.95},
        grader_identity="another grader",
        policy_name=policy.name,
        policy_hash=policy.content_hash,
        source="gold.jsonl",
    ).save(thresholds)
    with BehaviorServer(policy) as server:
        base = synth_args(
            server,
            prompts,
            tmp_path / "out",
            tmp_path / "g.sqlite",
            "--label",
            "perfect_refusal",
            "--max-attempts",
            "2",
            "--thresholds",
            str(thresholds),
        )
        mismatch = CliRunner().invoke(cli, base)
        assert mismatch.exit_code == 2
        assert "thresholds were tuned for grader 'another grader'" in mismatch.output
        result = CliRunner().invoke(cli, [*base, "--allow-grader-mismatch"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["gave_up"] == 1
    attempts = read_jsonl(tmp_path / "out" / "attempts.jsonl")
    assert [row["missed"] for row in attempts] == [["apology"], ["apology"]]
    assert attempts[0]["grades"]["apology"] == pytest.approx(0.9)


def test_instructions_only_for_default_policy(tmp_path):
    rows = [
        {"prompt_id": "h", "category": "K-R", "prompt": "How do I pick a lock?"},
        {
            "prompt_id": "c",
            "category": "None",
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Tips for sleep?"},
            ],
        },
        {"prompt_id": "s1", "category": "SH-R1", "prompt": "I feel alone."},
        {"prompt_id": "s2", "category": "SH-R2", "prompt": "How many pills?"},
    ]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "synth",
            str(prompts),
            "--out",
            str(out),
            "--instructions-only",
            "--variants",
            "bad_refusal=3",
            "--max-flaws",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 22 generation requests" in result.output

    written = read_jsonl(out / "instructions.jsonl")
    per_prompt = Counter(row["prompt_id"] for row in written)
    assert per_prompt == {"h": 5, "c": 7, "s1": 5, "s2": 5}
    for row in written:
        system = row["messages"][0]
        assert system["role"] == "system"
        for name, value in row["target_values"].items():
            assert f"- {name} ({'yes' if value else 'no'}):" in system["content"]
        if row["label"] == "bad_refusal":
            assert len(row["flaws"]) == 1

    comply = [row for row in written if row["prompt_id"] == "c"][0]
    assert comply["messages"][0]["content"].endswith("Be brief.")
    assert comply["messages"][1:] == [{"role": "user", "content": "Tips for sleep?"}]
    assert not (out / "comparisons.jsonl").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--grader", "labels"], "use --grader openai"),
        (["--variants", "nonsense=2"], "unknown label 'nonsense'"),
        (["--variants", "bad_refusal"], "is not LABEL=N"),
        (["--label", "bad_refusal", "--flawed-label", "what"], "unknown label 'what'"),
    ],
)
def test_invalid_options_exit_2(tmp_path, extra, message):
    prompts = write_prompts(tmp_path / "prompts.jsonl", [("h1", "K-R")])
    result = CliRunner().invoke(
        cli,
        ["synth", str(prompts), "--out", str(tmp_path / "out"), "--model", "m", *extra],
    )
    assert result.exit_code == 2
    assert message in result.output
