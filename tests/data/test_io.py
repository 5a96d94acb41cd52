"""Data readers: JSONL and Parquet rows, errors with file and line."""

from __future__ import annotations

import json

import pytest

from rbr.data import atomic_output, read_records, write_jsonl
from rbr.errors import DataError

ROW = {
    "prompt": [{"role": "user", "content": "hello"}],
    "completion": [{"role": "assistant", "content": "hi there"}],
    "response_type": "Comply",
    "label": "full_compliance",
    "propositions": {"apology": False, "fully_complies": 0.75},
    "note": "kept",
}


def test_jsonl_row_parsed(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(ROW) + "\n\n" + json.dumps(ROW) + "\n")
    records = read_records(path)
    assert len(records) == 2
    record = records[1]
    assert record.line == 3
    assert record.sample.completion == "hi there"
    assert record.propositions == {"apology": 0.0, "fully_complies": 0.75}
    assert record.extra == {"note": "kept"}
    assert record.prompt_id == records[0].prompt_id


def test_parquet_rows_parsed(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    path = tmp_path / "rows.parquet"
    row = {k: v for k, v in ROW.items() if k != "propositions"}
    pq.write_table(pa.Table.from_pylist([row, row]), path)
    records = read_records(path)
    assert [r.line for r in records] == [1, 2]
    assert records[0].sample.prompt[0].content == "hello"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt": "x", "completion": 5}, "field 'completion'"),
        ({"prompt": [{"role": "robot", "content": "x"}]}, "role 'robot'"),
        ({"completion": [{"role": "user", "content": "x"}]}, "exactly one assistant"),
        ({"propositions": {"apology": 2}}, "propositions.apology"),
        ({"response_type": 3}, "field 'response_type' must be a string"),
        ({"base_reward": float("nan")}, "must be finite"),
        ({"prompt": []}, "field 'prompt' is empty"),
    ],
)
def test_bad_rows_name_line_and_field(tmp_path, change, message):
    path = tmp_path / "rows.jsonl"
    bad = {**ROW, **change}
    path.write_text(json.dumps(ROW) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError) as info:
        read_records(path)
    assert f"{path}:2" in str(info.value)
    assert message in str(info.value)


def test_non_object_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(DataError, match="expected a JSON object"):
        read_records(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_records(tmp_path / "absent.jsonl")


def test_atomic_output_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError), atomic_output(target) as handle:
        handle.write("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_binary_mode(tmp_path):
    target = tmp_path / "figures" / "plot.png"
    payload = bytes(range(256))
    with atomic_output(target, binary=True) as handle:
        handle.write(payload)
    assert target.read_bytes() == payload
    assert list(target.parent.iterdir()) == [target]
    with pytest.raises(RuntimeError), atomic_output(target, binary=True) as handle:
        handle.write(b"partial")
        raise RuntimeError("boom")
    assert target.read_bytes() == payload
    assert list(target.parent.iterdir()) == [target]


def test_write_jsonl_counts_rows(tmp_path):
    target = tmp_path / "out.jsonl"
    assert write_jsonl(target, [{"a": 1}, {"a": 2}]) == 2
    assert target.read_text().count("\n") == 2
