"""Fixtures for the reward server tests: the policy, the grader and fitted weights.

Weights are fitted once per session with the offline grader on the example
conversations shipped with rbr.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rbr.data import read_records
from rbr.examples import example_path
from rbr.fitting.grading import grade_records
from rbr.fitting.rbr_fit import FitSettings, fit_rbr
from rbr.graders.offline import OfflineGrader
from rbr.policy import load_default_policy
from rbr.policy.spec import Policy


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_default_policy()


@pytest.fixture(scope="session")
def offline_grader() -> OfflineGrader:
    return OfflineGrader.load()


@pytest.fixture(scope="session")
def weights_file(
    tmp_path_factory: pytest.TempPathFactory,
    policy: Policy,
    offline_grader: OfflineGrader,
) -> Path:
    """Weights fitted with the offline grader on the example conversations."""
    records = read_records(example_path())
    graded = grade_records(records, policy, offline_grader)
    weights = fit_rbr(
        graded,
        policy,
        offline_grader.identity,
        FitSettings(validation_fraction=0),
    )
    path = tmp_path_factory.mktemp("serve") / "weights.json"
    weights.save(path)
    return path
