"""Errors for files that are not offline grader artifacts."""

from __future__ import annotations

import numpy as np
import pytest

from rbr.graders.offline import ArtifactError
from rbr.graders.offline.model import load_model


def test_object_array_error_names_command(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, header=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ArtifactError) as caught:
        load_model(path)
    message = str(caught.value)
    assert "is not an offline grader artifact" in message
    assert "rbr grader train" in message
    assert "If you trust the file" not in message


def test_missing_header_named(tmp_path):
    path = tmp_path / "arrays.npz"
    np.savez(path, weights=np.zeros(3))
    with pytest.raises(ArtifactError, match="KeyError: 'header'"):
        load_model(path)


def test_text_file_is_not_archive(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": []}\n', encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"not an \.npz archive"):
        load_model(path)


def test_truncated_archive_named(tmp_path):
    path = tmp_path / "truncated.npz"
    np.savez(path, weights=np.zeros(1000))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="BadZipFile"):
        load_model(path)
