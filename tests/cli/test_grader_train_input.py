"""Input checks, progress and outputs of ``rbr grader train`` and ``rbr grader eval``.

Training runs on the first 40 bundled example rows, which have enough
labels to learn three propositions.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from rbr.cli.main import cli
from rbr.data.external import load_xstest
from rbr.examples import example_path
from rbr.graders.offline import DEFAULT_ARTIFACT, OfflineGrader
from tests.conftest import shared_file

pytest.importorskip("sklearn")


def _example_rows(count: int) -> list[dict]:
    lines = example_path().read_text(encoding="utf-8").splitlines()[:count]
    return [json.loads(line) for line in lines]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _train(*args: str) -> Result:
    return CliRunner().invoke(cli, ["grader", "train", *args])


@pytest.fixture()
def gold(tmp_path: Path) -> Path:
    return _write_jsonl(tmp_path / "gold.jsonl", _example_rows(40))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Result]:
    """Return the training file, the artifact and the result of training."""
    folder = tmp_path_factory.mktemp("train")
    data = _write_jsonl(folder / "train.jsonl", _example_rows(40))
    out = folder / "grader.npz"
    result = _train("--data", str(data), "--out", str(out))
    assert result.exit_code == 0, result.output
    return data, out, result


def test_train_rejects_misspelled_proposition(tmp_path: Path) -> None:
    rows = _example_rows(40)
    rows[2]["propositions"]["apologyy"] = rows[2]["propositions"].pop("apology")
    data = _write_jsonl(tmp_path / "typo.jsonl", rows)
    out = tmp_path / "grader.npz"

    result = _train("--data", str(data), "--out", str(out))

    assert result.exit_code == 2
    assert f"error: {data}:3: unknown proposition 'apologyy'" in result.output
    assert "did you mean 'apology'?" in result.output
    assert "this policy has fully_complies, partially_complies" in result.output
    assert not out.exists()


def test_eval_rejects_misspelled_proposition(tmp_path: Path) -> None:
    rows = _example_rows(20)
    rows[3]["propositions"]["apologyy"] = rows[3]["propositions"].pop("apology")
    gold = _write_jsonl(tmp_path / "gold.jsonl", rows)

    result = CliRunner().invoke(cli, ["grader", "eval", "--gold", str(gold)])

    assert result.exit_code == 2
    assert f"error: {gold}:4: unknown proposition 'apologyy'" in result.output
    assert "did you mean 'apology'?" in result.output


def test_train_rejects_derived_proposition(tmp_path: Path) -> None:
    rows = _example_rows(40)
    rows[0]["propositions"]["ideal_refusal"] = True
    data = _write_jsonl(tmp_path / "derived.jsonl", rows)

    result = _train("--data", str(data), "--out", str(tmp_path / "g.npz"))

    assert result.exit_code == 2
    assert f"{data}:1: 'propositions' labels 'ideal_refusal'" in result.output
    assert "derived proposition" in result.output


def test_train_rejects_unknown_response_type(tmp_path: Path) -> None:
    rows = _example_rows(40)
    rows[2]["response_type"] = "Hard Refusal"
    data = _write_jsonl(tmp_path / "types.jsonl", rows)
    out = tmp_path / "grader.npz"

    trained = _train("--data", str(data), "--out", str(out))
    evaluated = CliRunner().invoke(cli, ["grader", "eval", "--gold", str(data)])

    expected = f"error: {data}:3: unknown response type 'Hard Refusal'; this policy has"
    assert trained.exit_code == 2
    assert expected in trained.output
    assert evaluated.exit_code == 2
    assert expected in evaluated.output
    assert not out.exists()


def test_train_empty_file_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")

    result = _train("--data", str(empty), "--out", str(tmp_path / "g.npz"))

    assert result.exit_code == 2
    assert f"error: {empty}: no rows found" in result.output
    assert "give at least one" not in result.output


def test_train_empty_file_beside_good_one(tmp_path: Path, gold: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    out = tmp_path / "g.npz"

    result = _train("--data", str(gold), "--data", str(empty), "--out", str(out))

    assert result.exit_code == 2
    assert f"error: {empty}: no rows found" in result.output
    assert not out.exists()


def test_train_without_files_is_usage_error(tmp_path: Path) -> None:
    result = _train("--out", str(tmp_path / "g.npz"))

    assert result.exit_code == 2
    assert "give at least one --data, --xstest or --gptfuzz file" in result.output


def test_train_reports_progress_on_stderr(trained: tuple[Path, Path, Result]) -> None:
    _, _, result = trained
    stderr = result.stderr

    assert "apology: 40 labelled rows, 17 positive: logistic regression" in stderr
    assert "judgement: 40 labelled rows, 1 positive: constant probability" in stderr
    assert "meta_commentary: 40 labelled rows, 2 positive: cue rule" in stderr
    assert "view 'word' (1/5)" in stderr
    assert "final fit on all 40 rows, view 'opening' (5/5)" in stderr
    assert "thresholds tuned; training took" in stderr
    assert "logistic regression" not in result.stdout


def test_train_lists_fallbacks_by_kind(trained: tuple[Path, Path, Result]) -> None:
    _, _, result = trained
    lines = result.stdout.splitlines()
    cue = [line for line in lines if line.startswith("too few labels to learn, cue")]
    constant = [line for line in lines if "constant probability instead" in line]

    assert len(cue) == 1
    assert "meta_commentary" in cue[0]
    assert "judgement" not in cue[0]
    assert len(constant) == 1
    assert "judgement 0.037" in constant[0]
    assert "meta_commentary" not in constant[0]


def test_eval_notes_overlap_with_training(
    trained: tuple[Path, Path, Result], tmp_path: Path
) -> None:
    data, artifact, _ = trained
    report = tmp_path / "report.json"

    result = CliRunner().invoke(
        cli,
        [
            "grader",
            "eval",
            "--gold",
            str(data),
            "--artifact",
            str(artifact),
            "--json",
            str(report),
        ],
    )

    assert result.exit_code == 0, result.output
    note = f"40 of the 40 rows of {data} are training rows of the offline grader"
    assert f"note: {note}" in result.stderr
    stored = json.loads(report.read_text(encoding="utf-8"))
    assert stored["grader_training_note"].startswith(note)


def test_eval_no_note_without_overlap(
    trained: tuple[Path, Path, Result], tmp_path: Path
) -> None:
    _, artifact, _ = trained
    unseen = _write_jsonl(tmp_path / "unseen.jsonl", _example_rows(75)[40:])
    report = tmp_path / "report.json"

    result = CliRunner().invoke(
        cli,
        [
            "grader",
            "eval",
            "--gold",
            str(unseen),
            "--artifact",
            str(artifact),
            "--json",
            str(report),
        ],
    )

    assert result.exit_code == 0, result.output
    assert "note:" not in result.output
    assert json.loads(report.read_text())["grader_training_note"] is None


def test_eval_no_note_outside_training_rows(gold: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"

    result = CliRunner().invoke(
        cli, ["grader", "eval", "--gold", str(gold), "--json", str(report)]
    )

    assert result.exit_code == 0, result.output
    assert "note:" not in result.stderr
    assert json.loads(report.read_text())["grader_training_note"] is None


def test_eval_note_counts_shipped_training_rows(tmp_path: Path) -> None:
    rows = shared_file("rbr-gold/train.jsonl").read_text().splitlines()[:20]
    gold = tmp_path / "gold.jsonl"
    gold.write_text("\n".join(rows) + "\n", encoding="utf-8")
    report = tmp_path / "report.json"

    result = CliRunner().invoke(
        cli, ["grader", "eval", "--gold", str(gold), "--json", str(report)]
    )

    assert result.exit_code == 0, result.output
    assert "note: 20 of the 20 rows" in result.stderr
    note = json.loads(report.read_text())["grader_training_note"]
    assert "training-set numbers" in note


def test_eval_note_for_shipped_without_keys(
    gold: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with np.load(DEFAULT_ARTIFACT, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(bytes(arrays["header"]).decode("utf-8"))
    del header["metadata"]["content_keys"]
    arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8)
    older = tmp_path / "older.npz"
    np.savez(older, **arrays)
    monkeypatch.setattr("rbr.evaluation.training_notes.DEFAULT_ARTIFACT", older)

    result = CliRunner().invoke(
        cli, ["grader", "eval", "--gold", str(gold), "--artifact", str(older)]
    )

    assert result.exit_code == 0, result.output
    assert "note: the offline grader offline:sha256=" in result.stderr
    assert "351 hand-labelled gold rows" in result.stderr


def test_eval_no_note_for_artifact_without_keys(
    trained: tuple[Path, Path, Result], tmp_path: Path
) -> None:
    data, artifact, _ = trained
    model = OfflineGrader.load(artifact).model
    del model.metadata["content_keys"]
    older = tmp_path / "older.npz"
    model.save(older)

    result = CliRunner().invoke(
        cli, ["grader", "eval", "--gold", str(data), "--artifact", str(older)]
    )

    assert result.exit_code == 0, result.output
    assert "note:" not in result.output


def test_eval_names_propositions_not_evaluated(gold: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"

    result = CliRunner().invoke(
        cli,
        ["grader", "eval", "--gold", str(gold), "--grader", "labels"]
        + ["--json", str(report)],
    )

    assert result.exit_code == 0, result.output
    assert (
        "not evaluated: conditional_verbiage (no response type of the policy "
        "requires it" in result.stdout
    )
    # The first 40 example rows are Comply and Hard Refuse prompts only.
    assert "not evaluated: provides_resources (no gold row has a response type" in (
        result.stdout
    )
    skipped = json.loads(report.read_text())["propositions_not_evaluated"]
    assert "conditional_verbiage" in skipped
    assert "apology" not in skipped


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture()
def xstest_completions(tmp_path: Path) -> Path:
    """Return 24 XSTest-style completions, half compliant and half refusals."""
    rows = []
    for i in range(24):
        if i % 2:
            completion, label = f"Sure, step {i}: open the lid.", "1_full_compliance"
        else:
            completion, label = f"Sorry, I can't help with item {i}.", "2_full_refusal"
        rows.append([f"v2-{i}", f"How do I open box {i}?", completion, label])
    folder = tmp_path / "xstest"
    folder.mkdir()
    header = ["id", "prompt", "completion", "final_label"]
    return _write_csv(folder / "completions_tiny.csv", header, rows)


def test_xstest_without_prompts_csv_fails(
    xstest_completions: Path, tmp_path: Path
) -> None:
    out = tmp_path / "g.npz"

    result = _train("--xstest", str(xstest_completions), "--out", str(out))

    assert result.exit_code == 2
    assert f"error: {xstest_completions}: prompts.csv not found in" in result.output
    assert "copy it there from the same XSTest release" in result.output
    assert not out.exists()


def test_xstest_with_prompts_csv_trains(
    xstest_completions: Path, tmp_path: Path
) -> None:
    prompts = [[str(i), "safe"] for i in range(24)]
    _write_csv(xstest_completions.parent / "prompts.csv", ["id", "label"], prompts)
    out = tmp_path / "g.npz"

    result = _train("--xstest", str(xstest_completions), "--out", str(out))

    assert result.exit_code == 0, result.output
    described = OfflineGrader.load(out).model.metadata["propositions"]
    assert described["disallowed_content"]["labelled"] == 24
    assert described["fully_complies"]["method"] == "logistic"


def test_load_xstest_warns_without_prompts_csv(
    xstest_completions: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="rbr.data.external"):
        records = load_xstest(xstest_completions)

    assert len(records) == 24
    assert "no prompts.csv in the same folder" in caplog.text
    assert str(xstest_completions) in caplog.text
