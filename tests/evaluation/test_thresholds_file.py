"""Threshold files: round trip, validation and provenance checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rbr.evaluation import PropositionThresholds, ThresholdsError
from rbr.features import FeatureSpace
from tests.evaluation.tiny_gold import tiny_policy


def sample_thresholds() -> PropositionThresholds:
    policy = tiny_policy()
    return PropositionThresholds(
        thresholds={"apology": 0.3, "refuses": 0.5, "harmful": 0.72},
        grader_identity="table",
        policy_name=policy.name,
        policy_hash=policy.content_hash,
        source="gold.jsonl",
        method="maximum accuracy",
        n_tuning_cells={"apology": 10, "refuses": 10, "harmful": 0},
    )


def test_save_and_load_round_trip(tmp_path):
    path = tmp_path / "thresholds.json"
    original = sample_thresholds()
    original.save(path)
    loaded = PropositionThresholds.load(path)
    assert loaded == original
    assert json.loads(path.read_text())["format"] == "rbr-proposition-thresholds"
    assert [p.name for p in tmp_path.iterdir()] == ["thresholds.json"]


def test_loaded_thresholds_drive_class_assignment(tmp_path):
    path = tmp_path / "thresholds.json"
    sample_thresholds().save(path)
    loaded = PropositionThresholds.load(path)
    space = FeatureSpace(tiny_policy(), "Hard Refuse")
    probabilities = np.array([[0.4, 0.9, 0.6]])
    # At 0.5 apology is false (minimum style) and harmful true (illogical);
    # with the loaded thresholds apology is true and harmful false (ideal).
    assert space.assign_classes(probabilities) == ["illogical_completion"]
    assert space.assign_classes(probabilities, loaded.thresholds) == ["ideal"]


def test_check_matches_accepts_own_policy_and_grader():
    sample_thresholds().check_matches(policy=tiny_policy(), grader_identity="table")


def test_check_matches_rejects_other_grader():
    thresholds = sample_thresholds()
    with pytest.raises(ThresholdsError, match="'table', not 'other'"):
        thresholds.check_matches(grader_identity="other")
    thresholds.check_matches(grader_identity="other", allow_grader_mismatch=True)


def test_check_matches_rejects_changed_policy():
    policy = tiny_policy()
    changed = policy.model_copy(update={"content_hash": "f" * 64})
    with pytest.raises(ThresholdsError, match="policy hash"):
        sample_thresholds().check_matches(policy=changed)


def test_check_matches_rejects_unknown_propositions():
    data = sample_thresholds().to_dict()
    data["thresholds"]["sarcasm"] = 0.5
    thresholds = PropositionThresholds.from_dict(data)
    with pytest.raises(ThresholdsError, match="sarcasm"):
        thresholds.check_matches(policy=tiny_policy())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "weights"}, "key 'format'"),
        ({"version": 9}, "version 9"),
        ({"grader_identity": None}, "'grader_identity' must be a string"),
        ({"thresholds": {}}, "non-empty object"),
        ({"thresholds": {"apology": 1.5}}, r"thresholds.apology must be a number"),
        ({"thresholds": {"apology": True}}, r"thresholds.apology must be a number"),
        ({"n_tuning_cells": {"apology": -1}}, r"n_tuning_cells.apology"),
    ],
)
def test_invalid_content_names_key(tmp_path, change, message):
    path = tmp_path / "bad.json"
    data = {**sample_thresholds().to_dict(), **change}
    path.write_text(json.dumps(data))
    with pytest.raises(ThresholdsError, match=message) as info:
        PropositionThresholds.load(path)
    assert "bad.json" in str(info.value)


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "format": \n')
    with pytest.raises(ThresholdsError, match=r"broken.json: invalid JSON at line 3"):
        PropositionThresholds.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(ThresholdsError, match="not found"):
        PropositionThresholds.load(tmp_path / "absent.json")
