"""evaluate_grader on a tiny gold set built in the test, and on the real gold file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rbr.data import read_records
from rbr.errors import DataError
from rbr.evaluation import evaluate_grader, split_prompts
from rbr.graders.labels import LabelsGrader
from rbr.policy import load_default_policy
from tests.conftest import shared_file
from tests.evaluation.tiny_gold import (
    PROPOSITIONS,
    TableGrader,
    flipped_label,
    gold_rows,
    shifted_label,
    tiny_policy,
    to_records,
    true_label,
)

# gold_rows(): 40 prompts, 8 of them (index divisible by 5) with two
# completions, so 48 Hard Refuse rows, plus 2 rows without a response type.
N_ROWS = 48


def prompt_index(record) -> int:
    return int(record.sample.prompt[-1].content.split()[-1])


def assert_numbers_finite(value) -> None:
    """Fail on NaN or infinity anywhere in a JSON-like structure."""
    if isinstance(value, dict):
        for item in value.values():
            assert_numbers_finite(item)
    elif isinstance(value, list):
        for item in value:
            assert_numbers_finite(item)
    elif isinstance(value, float):
        assert math.isfinite(value)


def test_labels_grader_is_perfect():
    records = to_records(gold_rows())
    report = evaluate_grader(records, tiny_policy(), LabelsGrader.from_records(records))
    assert report.n_records == N_ROWS + 2
    assert report.n_evaluated == N_ROWS
    for name in PROPOSITIONS:
        item = report.propositions[name]
        assert item.n == N_ROWS
        assert item.accuracy == 1.0
        assert item.balanced_accuracy == 1.0
        assert item.f1 == 1.0
        assert item.roc_auc == 1.0
        assert item.threshold == 0.5
        assert item.held_out_accuracy == 1.0
        assert item.unscored == 0
    hard = report.response_types["Hard Refuse"]
    assert hard.n_compared == N_ROWS
    assert hard.agreement_at_default == 1.0
    assert hard.held_out_agreement == 1.0
    assert report.macro["n_propositions"] == 3
    assert report.macro["accuracy"] == 1.0


def test_positives_and_confusion_counts():
    records = to_records(gold_rows())
    report = evaluate_grader(records, tiny_policy(), LabelsGrader.from_records(records))
    expected = sum(r.propositions["apology"] for r in records if r.propositions)
    item = report.propositions["apology"]
    assert item.positives == expected
    assert item.confusion.tp == expected
    assert item.confusion.tn == N_ROWS - expected
    assert item.confusion.fp == 0
    assert item.held_out_confusion.n == item.held_out_n


def test_flipped_grader_scores_zero():
    records = to_records(gold_rows())
    grader = TableGrader.from_function(records, flipped_label)
    report = evaluate_grader(records, tiny_policy(), grader)
    for name in PROPOSITIONS:
        item = report.propositions[name]
        assert item.accuracy == 0.0
        assert item.balanced_accuracy == 0.0
        assert item.f1 == 0.0
        assert item.roc_auc == 0.0
        assert item.held_out_accuracy == 0.0
    # The complement of every label combination falls in a different class.
    hard = report.response_types["Hard Refuse"]
    assert hard.agreement_at_default == 0.0
    assert hard.held_out_agreement == 0.0
    assert hard.class_confusion_at_default["ideal"]["disallowed_completion"] > 0


def test_noisy_grader_gives_expected_accuracy():
    records = to_records(gold_rows())

    def noisy(record, name):
        value = true_label(record, name)
        if name == "harmful" and value is not None and prompt_index(record) % 8 < 2:
            return 1.0 - value
        return value

    report = evaluate_grader(
        records, tiny_policy(), TableGrader.from_function(records, noisy)
    )
    # Prompts 0, 1, 8, 9, 16, 17, 24, 25, 32 and 33 are flipped. Prompts 0 and
    # 25 have two completions, so 12 of 48 rows are wrong.
    assert report.propositions["harmful"].accuracy == pytest.approx(36 / 48)
    assert report.propositions["apology"].accuracy == 1.0
    # Flipping 'harmful' changes the class of each of these rows.
    assert report.response_types["Hard Refuse"].agreement_at_default == pytest.approx(
        36 / 48
    )
    tuning = split_prompts(
        records,
        ["Hard Refuse" if r.category == "K-R" else None for r in records],
        fraction=0.5,
        random_state=0,
    )
    held_out = [
        r for r, t in zip(records, tuning, strict=True) if not t and r.propositions
    ]
    wrong = sum(prompt_index(r) % 8 < 2 for r in held_out)
    item = report.propositions["harmful"]
    assert item.held_out_n == len(held_out)
    assert item.held_out_accuracy == pytest.approx(1 - wrong / len(held_out))
    assert report.macro["accuracy"] == pytest.approx((1 + 1 + 36 / 48) / 3)


def test_tuned_threshold_beats_default():
    records = to_records(gold_rows())
    grader = TableGrader.from_function(records, shifted_label)
    report = evaluate_grader(records, tiny_policy(), grader)
    for name in PROPOSITIONS:
        item = report.propositions[name]
        negatives = N_ROWS - item.positives
        assert item.threshold == pytest.approx(0.3)
        assert item.accuracy == pytest.approx(negatives / N_ROWS)
        assert item.roc_auc == 1.0
        assert item.held_out_accuracy == 1.0
        assert item.held_out_accuracy_at_default < 1.0
    hard = report.response_types["Hard Refuse"]
    # At 0.5 every row reads (no, no, no): unacceptable, which is right only for
    # the 12 rows of prompts whose index modulo 8 is 0 or 1.
    assert hard.agreement_at_default == pytest.approx(12 / 48)
    assert hard.held_out_agreement == 1.0
    assert report.thresholds.thresholds == pytest.approx(
        {"apology": 0.3, "refuses": 0.3, "harmful": 0.3}
    )


def test_unscored_cells_counted_and_excluded():
    records = to_records(gold_rows())

    def gappy(record, name):
        if name == "harmful" and prompt_index(record) % 3 == 0:
            return None
        return true_label(record, name)

    grader = TableGrader.from_function(records, gappy, reason="timeout")
    report = evaluate_grader(records, tiny_policy(), grader)
    # Prompts 0, 3, ..., 39 (14) lack 'harmful', and 0, 15 and 30 have two rows.
    item = report.propositions["harmful"]
    assert item.unscored == 17
    assert item.unscored_reasons == {"timeout": 17}
    assert item.n == N_ROWS - 17
    assert item.accuracy == 1.0
    assert report.propositions["apology"].unscored == 0
    hard = report.response_types["Hard Refuse"]
    assert hard.n_unscored == 17
    assert hard.n_compared == N_ROWS - 17
    assert hard.agreement_at_default == 1.0
    assert report.unscored_reasons == {"timeout": 17}


def test_unlabelled_cells_counted_and_excluded():
    rows = gold_rows()
    grader = TableGrader.from_function(to_records(rows), true_label)
    for row in rows:
        index = int(row["prompt"][0]["content"].split()[-1])
        if "propositions" in row and index % 4 == 3:
            del row["propositions"]["apology"]
    report = evaluate_grader(to_records(rows), tiny_policy(), grader)
    # Prompts 3, 7, ..., 39 (10) lose the label, and 15 and 35 have two rows.
    item = report.propositions["apology"]
    assert item.unlabelled == 12
    assert item.unscored == 0
    assert item.n == N_ROWS - 12
    assert report.response_types["Hard Refuse"].n_unlabelled == 12
    assert report.response_types["Hard Refuse"].n_compared == N_ROWS - 12


def test_split_keeps_prompts_together_and_is_seeded():
    records = to_records(gold_rows())
    types = ["Hard Refuse" if r.category == "K-R" else None for r in records]
    tuning = split_prompts(records, types, fraction=0.5, random_state=4)
    by_prompt: dict[str, set[bool]] = {}
    for record, flag in zip(records, tuning, strict=True):
        by_prompt.setdefault(record.prompt_id, set()).add(bool(flag))
    assert all(len(flags) == 1 for flags in by_prompt.values())
    hard_prompts = {r.prompt_id for r in records if r.category == "K-R"}
    tuned_prompts = {r.prompt_id for r, t in zip(records, tuning, strict=True) if t}
    assert len(tuned_prompts & hard_prompts) == 20
    again = split_prompts(records, types, fraction=0.5, random_state=4)
    other = split_prompts(records, types, fraction=0.5, random_state=5)
    np.testing.assert_array_equal(tuning, again)
    assert (tuning != other).any()


def test_tuning_fraction_zero_keeps_default_thresholds():
    records = to_records(gold_rows())
    grader = TableGrader.from_function(records, shifted_label)
    report = evaluate_grader(records, tiny_policy(), grader, tuning_fraction=0.0)
    assert report.n_held_out == N_ROWS
    for item in report.propositions.values():
        assert item.threshold == 0.5
        assert item.n_tuning == 0
        assert item.held_out_accuracy == item.accuracy


def test_tuning_fraction_one_reports_no_held_out():
    records = to_records(gold_rows())
    report = evaluate_grader(
        records, tiny_policy(), LabelsGrader.from_records(records), tuning_fraction=1.0
    )
    assert report.n_held_out == 0
    assert report.propositions["apology"].held_out_accuracy is None
    assert report.response_types["Hard Refuse"].held_out_agreement is None
    assert report.macro["held_out_accuracy"] is None


def test_report_json_has_every_number():
    records = to_records(gold_rows())
    grader = TableGrader.from_function(records, shifted_label)
    data = json.loads(
        json.dumps(evaluate_grader(records, tiny_policy(), grader).to_dict())
    )
    assert_numbers_finite(data)
    apology = data["propositions"]["apology"]
    for key in (
        "n",
        "positives",
        "accuracy",
        "balanced_accuracy",
        "f1",
        "roc_auc",
        "threshold",
        "held_out_accuracy",
        "unscored",
        "unlabelled",
    ):
        assert apology[key] is not None, key
    assert set(apology["confusion"]) == {"tp", "fp", "tn", "fn"}
    confusion = data["response_types"]["Hard Refuse"]["class_confusion_at_default"]
    assert sum(sum(row.values()) for row in confusion.values()) == N_ROWS
    assert data["thresholds"]["grader_identity"] == "table"
    assert data["thresholds"]["policy_hash"] == tiny_policy().content_hash
    assert data["settings"] == {"tuning_fraction": 0.5, "random_state": 0}


def test_fractional_label_names_line():
    rows = gold_rows()
    rows[3]["propositions"]["apology"] = 0.7
    records = to_records(rows, source="gold.jsonl")
    grader = LabelsGrader.from_records(records)
    with pytest.raises(DataError, match=r"gold.jsonl:4: .*propositions.apology.*0.7"):
        evaluate_grader(records, tiny_policy(), grader, source="gold.jsonl")


def test_no_labels_rejected():
    rows = gold_rows()
    for row in rows:
        row.pop("propositions", None)
    records = to_records(rows)
    with pytest.raises(DataError, match="no row has human labels"):
        evaluate_grader(records, tiny_policy(), LabelsGrader.from_records(records))


def test_grader_sees_original_content_keys():
    records = to_records(gold_rows())
    grader = TableGrader.from_function(records, true_label)
    evaluate_grader(records, tiny_policy(), grader)
    expected = {r.sample.content_key() for r in records if r.category == "K-R"}
    assert set(grader.graded_keys) == expected


def test_real_gold_file_with_labels_grader():
    path = shared_file("rbr-gold/train.jsonl")
    records = read_records(path)
    policy = load_default_policy()
    report = evaluate_grader(
        records, policy, LabelsGrader.from_records(records), source=str(path)
    )
    assert report.n_evaluated == len(records)
    counts = {name: item.n for name, item in report.response_types.items()}
    assert sum(counts.values()) == len(records)
    assert counts["Comply"] > 0
    assert counts["Hard Refuse"] > 0
    for name, item in report.propositions.items():
        assert item.unscored == 0, name
        assert item.accuracy == 1.0, name
    for name, item in report.response_types.items():
        assert item.n_compared == item.n, name
        assert item.agreement_at_default == 1.0, name
        assert item.held_out_agreement == 1.0, name
    assert report.macro["n_propositions"] >= 15
    assert report.macro["roc_auc"] == 1.0
