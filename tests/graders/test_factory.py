"""Grader options are checked per kind before any grader is built."""

from __future__ import annotations

import pytest

from rbr.errors import GraderError
from rbr.graders.factory import check_grader_settings
from rbr.reward.config import RewardConfigError, RewardSettings


def test_unknown_openai_option_named():
    with pytest.raises(GraderError, match="grader.max_concurency: unknown option"):
        check_grader_settings("openai", {"model": "m", "max_concurency": 64})


def test_unknown_offline_option_lists_valid():
    with pytest.raises(GraderError, match="kind 'offline'; valid options:.*artifact"):
        check_grader_settings("offline", {"foo": 1})


def test_settings_name_file_and_key():
    with pytest.raises(RewardConfigError, match=r"^r.yaml: grader.kind: unknown"):
        RewardSettings.from_mapping(
            {"weights": "w.json", "grader": {"kind": "offlin"}}, source="r.yaml"
        )


def test_settings_missing_file_and_policy(tmp_path):
    with pytest.raises(RewardConfigError, match="reward settings file .* not found"):
        RewardSettings.load(tmp_path / "nope.yaml")
    with pytest.raises(RewardConfigError, match="key 'weights': expected a file"):
        RewardSettings.from_mapping({"weights": [1, 2]})
