"""Fixtures for the trainer integration tests: weights fitted on the bundled examples."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from rbr.data import read_records
from rbr.data.types import Record
from rbr.examples import example_path
from rbr.fitting.grading import grade_records
from rbr.fitting.rbr_fit import FitSettings, fit_rbr
from rbr.graders.labels import LabelsGrader
from rbr.graders.offline import OfflineGrader
from rbr.integrations.convert import PromptRow, prompts_from_records
from rbr.policy import load_default_policy
from rbr.reward.config import RewardSettings, build_pipeline
from rbr.reward.pipeline import RewardPipeline
from rbr.reward.rule_based import RuleBasedReward


@pytest.fixture(scope="session")
def example_records() -> list[Record]:
    return read_records(example_path())


@pytest.fixture(scope="session")
def example_prompts(example_records: list[Record]) -> list[PromptRow]:
    return prompts_from_records(example_records)


@pytest.fixture(scope="session")
def settings_file(
    tmp_path_factory: pytest.TempPathFactory, example_records: list[Record]
) -> Path:
    """A reward settings file: offline grader, weights fitted on the examples."""
    folder = tmp_path_factory.mktemp("reward")
    policy = load_default_policy()
    grader = OfflineGrader.load()
    graded = grade_records(example_records, policy, grader)
    weights = fit_rbr(
        graded, policy, grader.identity, FitSettings(validation_fraction=0)
    )
    weights.save(folder / "weights.json")
    path = folder / "reward.yaml"
    path.write_text(
        yaml.safe_dump({"weights": "weights.json", "grader": {"kind": "offline"}})
    )
    return path


@pytest.fixture(scope="session")
def offline_pipeline(settings_file: Path) -> Iterator[RewardPipeline]:
    pipeline = build_pipeline(RewardSettings.load(settings_file))
    yield pipeline
    pipeline.close()


@pytest.fixture(scope="session")
def labels_pipeline(example_records: list[Record]) -> RewardPipeline:
    """A pipeline whose grader has only the stored labels of the examples.

    Any other completion is unscored, which is how tests reach that case.
    """
    policy = load_default_policy()
    grader = LabelsGrader.from_records(example_records)
    graded = grade_records(example_records, policy, grader)
    weights = fit_rbr(
        graded, policy, grader.identity, FitSettings(validation_fraction=0)
    )
    return RewardPipeline(RuleBasedReward(policy, weights, grader))


@pytest.fixture
def unscored_settings(tmp_path: Path, labels_pipeline: RewardPipeline) -> Path:
    """Settings whose labels grader has no labels, so nothing gets scored."""
    labels_pipeline.reward.weights.save(tmp_path / "weights.json")
    path = tmp_path / "reward.yaml"
    path.write_text(
        yaml.safe_dump({"weights": "weights.json", "grader": {"kind": "labels"}})
    )
    return path
