"""Reading prompt files for generation."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from rbr.errors import DataError
from rbr.policy import load_default_policy, policy_from_yaml
from rbr.policy.loader import DEFAULT_POLICY_RESOURCE
from rbr.synth import read_prompts


@pytest.fixture(scope="module")
def policy():
    return load_default_policy()


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_category_and_response_type_resolve(policy, tmp_path):
    path = write_rows(
        tmp_path / "p.jsonl",
        [
            {"prompt_id": "a", "category": "K-R", "prompt": "How do I pick a lock?"},
            {
                "id": "b",
                "response_type": "safe_refuse_1",
                "prompt": [{"role": "user", "content": "I feel low."}],
            },
            {"category": "None", "prompt": [{"role": "user", "content": "Hi"}]},
        ],
    )
    result = read_prompts(path, policy)
    assert [p.response_type for p in result.prompts] == [
        "Hard Refuse",
        "Safe Refuse 1",
        "Comply",
    ]
    assert [p.prompt_id for p in result.prompts][:2] == ["a", "b"]
    assert len(result.prompts[2].prompt_id) == 16
    assert result.prompts[0].category == "K-R"
    assert result.prompts[0].line == 1
    assert result.skipped == []


def test_repeated_prompt_rows_read_once(policy, tmp_path):
    row = {"prompt_id": "a", "category": "K-R", "prompt": "x", "completion": "y"}
    path = write_rows(tmp_path / "p.jsonl", [row, {**row, "completion": "z"}])
    assert len(read_prompts(path, policy).prompts) == 1


def test_prompt_id_reused_for_other_messages(policy, tmp_path):
    path = write_rows(
        tmp_path / "p.jsonl",
        [
            {"prompt_id": "a", "category": "K-R", "prompt": "x"},
            {"prompt_id": "a", "category": "K-R", "prompt": "other"},
        ],
    )
    with pytest.raises(DataError, match=r"p.jsonl:2: prompt_id 'a' is used"):
        read_prompts(path, policy)


def test_unmapped_category_is_skipped(tmp_path):
    text = resources.files("rbr.policy").joinpath(DEFAULT_POLICY_RESOURCE).read_text()
    policy = policy_from_yaml(text + "  Other: null\n")
    path = write_rows(
        tmp_path / "p.jsonl",
        [
            {"prompt_id": "a", "category": "Other", "prompt": "x"},
            {"prompt_id": "b", "category": "C-R", "prompt": "y"},
        ],
    )
    result = read_prompts(path, policy)
    assert [p.prompt_id for p in result.prompts] == ["b"]
    assert len(result.skipped) == 1
    skipped = result.skipped[0]
    assert skipped.line == 1
    assert skipped.prompt_id == "a"
    assert "maps to no response type" in skipped.reason


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"category": "K-R"}, "missing field 'prompt'"),
        ({"prompt": "x"}, "neither 'response_type' nor 'category'"),
        ({"prompt": "x", "category": "Q-Z"}, "unknown content category 'Q-Z'"),
        ({"prompt": "x", "response_type": "Maybe"}, "unknown response type 'Maybe'"),
        (
            {"prompt": [{"role": "assistant", "content": "x"}], "category": "K-R"},
            "must end with a user message",
        ),
        ({"prompt": [{"role": "robot", "content": "x"}], "category": "K-R"}, "role"),
        ({"prompt": "x", "category": 3}, "field 'category' must be a string"),
    ],
)
def test_invalid_rows_name_line(policy, tmp_path, row, message):
    path = write_rows(tmp_path / "p.jsonl", [{"prompt": "ok", "category": "K-R"}, row])
    with pytest.raises(DataError, match=message) as info:
        read_prompts(path, policy)
    assert info.value.line == 2


def test_parquet_prompts(policy, tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pyarrow.Table.from_pylist(
        [
            {
                "prompt_id": "a",
                "category": "SH-R2",
                "prompt": [{"role": "user", "content": "tell me how"}],
            }
        ]
    )
    path = tmp_path / "p.parquet"
    pq.write_table(table, path)
    result = read_prompts(path, policy)
    assert result.prompts[0].response_type == "Safe Refuse 2"
    assert result.prompts[0].messages[0].content == "tell me how"
