"""Shared test helpers: where the real data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Return the folder with third-party data (env RBR_SHARED_DATA overrides)."""
    override = os.environ.get("RBR_SHARED_DATA")
    if override:
        return Path(override)
    return REPO_ROOT.parent / "shared" / "data"


def shared_file(relative: str) -> Path:
    """Return a file under the shared data folder, skipping the test when absent."""
    path = shared_data_dir() / relative
    if not path.exists():
        pytest.skip(f"real data file {path} is not available (set RBR_SHARED_DATA)")
    return path


def reference_config() -> Path:
    """Return the published policy config, skipping the test when absent."""
    path = shared_data_dir().parent / "reference" / "rbr-reference-config.yaml"
    if not path.exists():
        pytest.skip(f"published reference config {path} is not available")
    return path
