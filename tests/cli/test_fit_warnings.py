"""Warnings of 'rbr fit' about misspelled labels and out-of-order class weights."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rbr.cli.fit_cmd import fit_command
from rbr.examples import example_path


@pytest.fixture()
def typo_file(tmp_path):
    """The bundled examples with 'apology' spelled 'apologgy' in every row."""
    rows = []
    for line in example_path().read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        labels = row["propositions"]
        if "apology" in labels:
            labels["apologgy"] = labels.pop("apology")
        rows.append(json.dumps(row))
    path = tmp_path / "typo.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_misspelled_key_named(typo_file, tmp_path):
    out = tmp_path / "w.json"
    result = CliRunner().invoke(
        fit_command, [str(typo_file), "--grader", "labels", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "'apologgy'" in result.output
    assert "did you mean 'apology'?" in result.output


def test_unfitted_type_names_missing(typo_file, tmp_path):
    out = tmp_path / "w.json"
    result = CliRunner().invoke(
        fit_command, [str(typo_file), "--grader", "labels", "--out", str(out)]
    )
    assert "Hard Refuse     not fitted" in result.output
    assert "unscored: apology (20)" in result.output
    assert "check their spelling" in result.output


def test_class_order_warning(tmp_path):
    out = tmp_path / "w.json"
    report = tmp_path / "report.json"
    args = [str(example_path()), "--grader", "labels", "--out", str(out)]
    result = CliRunner().invoke(fit_command, [*args, "--report", str(report)])
    assert result.exit_code == 0, result.output
    warnings = json.loads(report.read_text())["class_order_warnings"]
    # The 75 bundled rows are too few: Comply ends up weighting disallowed
    # completions above a better class.
    assert "disallowed_completion (+" in warnings["Comply"]
    assert ") above " in warnings["Comply"]
    comply = json.loads(out.read_text())["response_types"]["Comply"]
    accuracy = comply["report"]["validation_pairwise_accuracy"]
    printed = "warning: Comply (held-out pair accuracy" in result.output
    assert printed == (accuracy is None or accuracy < 1.0)
