"""Trainer formats to rbr messages, labels, and dataset rows for each trainer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rbr.data.types import Message
from rbr.errors import DataError
from rbr.integrations.convert import (
    IntegrationError,
    completion_text,
    label_fields,
    openrlhf_rows,
    optional_text,
    prompt_messages,
    read_prompts,
    split_label,
    trl_rows,
    verl_rows,
)
from rbr.policy import load_default_policy


def test_string_prompt_becomes_one_user_message():
    text = "<|user|>\nHi<|end|>\n<|assistant|>\n"
    assert prompt_messages(text) == (Message("user", text),)


def test_string_prompt_uses_parser():
    def parse(text: str) -> list[Message]:
        return [Message("system", "s"), Message("user", text.upper())]

    assert prompt_messages("hi", parser=parse) == (
        Message("system", "s"),
        Message("user", "HI"),
    )


def test_message_prompt_keeps_roles():
    value = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]
    assert prompt_messages(value) == (
        Message("system", "Be brief."),
        Message("user", "Hello"),
    )


def test_numpy_array_prompt_accepted():
    # Parquet read through pandas yields object arrays of dictionaries.
    value = np.array([{"role": "user", "content": "Hello"}], dtype=object)
    assert prompt_messages(value) == (Message("user", "Hello"),)


def test_content_parts_joined():
    value = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look "},
                {"type": "image", "image": "ignored"},
                {"type": "text", "text": "here"},
            ],
        }
    ]
    assert prompt_messages(value) == (Message("user", "Look here"),)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ({"role": "user", "content": "x"}, "wrap it in a list"),
        (42, "got int"),
        (np.float64(1.5), "got float64"),
        ([], "no messages"),
        ([{"role": "robot", "content": "x"}], "role 'robot'"),
    ],
)
def test_bad_prompt_rejected(value, match):
    with pytest.raises(IntegrationError, match=match):
        prompt_messages(value, where="prompt 3")


def test_completion_text_forms():
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "reply"}]) == "reply"
    tool_turns = [
        {"role": "assistant", "content": "calling"},
        {"role": "tool", "content": "result"},
        {"role": "assistant", "content": "final"},
    ]
    assert completion_text(tool_turns) == "final"


def test_completion_without_assistant_rejected():
    with pytest.raises(IntegrationError, match="no assistant message"):
        completion_text([{"role": "user", "content": "x"}])
    with pytest.raises(IntegrationError, match="got int"):
        completion_text(3)


def test_optional_text_empty_values():
    assert optional_text(None) is None
    assert optional_text(math.nan) is None
    assert optional_text("  ") is None
    assert optional_text(" Comply ") == "Comply"


def test_split_label_response_type_then_category():
    policy = load_default_policy()
    assert split_label("Hard Refuse", policy) == ("Hard Refuse", None)
    assert split_label("K-R", policy) == (None, "K-R")
    with pytest.raises(IntegrationError, match="names neither"):
        split_label("Maybe", policy)


def test_label_fields_forms():
    policy = load_default_policy()
    mapping = {"category": "K-R", "messages": []}
    assert label_fields(mapping, policy, where="row 1") is mapping
    assert label_fields("K-R", policy, where="row 1") == {
        "response_type": None,
        "category": "K-R",
    }
    assert label_fields(" ", policy, where="row 1") == {}
    assert label_fields(None, policy, where="row 1") == {}
    with pytest.raises(IntegrationError, match="row 1: label 'Maybe' names neither"):
        label_fields("Maybe", policy, where="row 1")
    with pytest.raises(IntegrationError, match="row 1 must be a mapping.*got int"):
        label_fields(3, policy, where="row 1")


def test_verl_rows_layout(example_prompts):
    row = verl_rows(example_prompts[:1], data_source="safety")[0]
    first = example_prompts[0]
    assert row["data_source"] == "safety"
    assert row["prompt"] == first.messages()
    assert row["extra_info"]["prompt"] == first.messages()
    assert row["extra_info"]["response_type"] == first.response_type
    assert row["reward_model"]["ground_truth"] == first.response_type


def test_openrlhf_label_is_json(example_prompts):
    row = openrlhf_rows(example_prompts[:1])[0]
    label = json.loads(row["label"])
    assert label["messages"] == example_prompts[0].messages()
    assert label["category"] == example_prompts[0].category


def test_trl_rows_one_per_prompt(example_records, example_prompts):
    rows = trl_rows(example_prompts)
    assert len(rows) == len({r.prompt_id for r in example_records})
    assert {"prompt", "response_type", "category", "prompt_id"} <= set(rows[0])


def test_read_prompts_from_fit_file(example_records):
    from rbr.examples import example_path

    prompts = read_prompts(example_path())
    assert len(prompts) == len({r.prompt_id for r in example_records})
    assert prompts[0].prompt == example_records[0].sample.prompt


def test_read_prompts_string_and_errors(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        json.dumps({"prompt": "Hi there", "category": "None"})
        + "\n"
        + json.dumps({"response_type": "Comply"})
        + "\n"
    )
    with pytest.raises(DataError, match=r"prompts.jsonl:2: missing field 'prompt'"):
        read_prompts(path)
    path.write_text(json.dumps({"prompt": "Hi there", "category": "None"}) + "\n")
    (row,) = read_prompts(path)
    assert row.prompt == (Message("user", "Hi there"),)
    assert row.category == "None"
    assert row.response_type is None
