"""``rbr grader train`` on too little data."""

from __future__ import annotations

from click.testing import CliRunner

from rbr.cli.main import cli
from rbr.examples import example_path


def test_too_few_labels_names_file(tmp_path):
    data = tmp_path / "tiny.jsonl"
    lines = example_path().read_text(encoding="utf-8").splitlines()[:3]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "grader.npz"

    result = CliRunner().invoke(
        cli, ["grader", "train", "--data", str(data), "--out", str(out)]
    )

    assert result.exit_code == 2
    assert f"error: {data}: no proposition has 10 labelled positive" in result.output
    assert "<memory>" not in result.output
    assert not out.exists()
