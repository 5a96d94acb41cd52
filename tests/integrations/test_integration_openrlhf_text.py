"""OpenRLHF text: splitting queries and reading prompt strings as messages."""

from __future__ import annotations

import pytest

from rbr.data.types import Message
from rbr.integrations.openrlhf_text import (
    parse_prompt,
    split_query,
    strip_end_tokens,
    template_messages,
)

CHATML_PROMPT = (
    "<|im_start|>system\nBe brief.<|im_end|>\n"
    "<|im_start|>user\nHow do I pick a lock?<|im_end|>\n"
    "<|im_start|>assistant\n"
)
LLAMA3_PROMPT = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)


def test_split_query_after_prompt_strips_end_tokens():
    query = CHATML_PROMPT + "Sorry, I can't help with that.<|im_end|><|endoftext|>"
    prompt, completion = split_query(query, CHATML_PROMPT)
    assert prompt == CHATML_PROMPT
    assert completion == "Sorry, I can't help with that."


def test_split_query_drops_assistant_header():
    prompt = "<|im_start|>user\nHi<|im_end|>\n"
    query = prompt + "<|im_start|>assistant\nHello!<|im_end|>"
    assert split_query(query, prompt) == (prompt, "Hello!")


def test_split_query_finds_prompt_after_bos():
    query = "<s>" + "Tell me a joke." + " Why did the chicken cross the road?</s>"
    prompt, completion = split_query(query, "Tell me a joke.")
    assert prompt == "Tell me a joke."
    assert completion == "Why did the chicken cross the road?"


def test_split_query_without_prompt_uses_last_assistant_marker():
    query = CHATML_PROMPT + "No.<|im_end|>"
    prompt, completion = split_query(query, None)
    assert prompt == CHATML_PROMPT[: -len("<|im_start|>assistant\n")]
    assert completion == "No."


def test_split_query_falls_back_to_marker():
    query = LLAMA3_PROMPT + "Hello!<|eot_id|>"
    _, completion = split_query(query, "a prompt that was re-tokenized differently")
    assert completion == "Hello!"


def test_split_query_without_prompt_or_marker_fails():
    with pytest.raises(ValueError, match="assistant turn marker"):
        split_query("plain text with no template", None)
    with pytest.raises(ValueError, match="does not contain its prompt"):
        split_query("plain text", "another prompt")


def test_parse_prompt_chatml_drops_generation_prompt():
    messages = parse_prompt(CHATML_PROMPT)
    assert messages == (
        Message("system", "Be brief."),
        Message("user", "How do I pick a lock?"),
    )


def test_parse_prompt_llama3_multi_turn():
    messages = parse_prompt(LLAMA3_PROMPT)
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[1].content == "Hi there"


def test_parse_prompt_gemma_maps_model_role():
    text = (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello"
        "<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )
    messages = parse_prompt(text)
    assert [m.role for m in messages] == ["user", "assistant", "user"]


def test_parse_prompt_plain_text_is_one_user_message():
    assert parse_prompt("<s> What is 2+2? ") == (Message("user", "What is 2+2?"),)
    with pytest.raises(ValueError, match="empty"):
        parse_prompt("  <s> ")


def test_template_messages_none_for_plain_text():
    assert template_messages("<s> What is 2+2?") is None


def test_template_markers_without_message_fail():
    with pytest.raises(ValueError, match="markers but no message"):
        template_messages("<|im_start|>assistant\n")


def test_strip_end_tokens_repeats_in_any_order():
    text = " Sure thing.<|im_end|>\n<|endoftext|><pad><pad> "
    assert strip_end_tokens(text, ["<pad>", "<|endoftext|>", "<|im_end|>"]) == (
        "Sure thing."
    )
    assert strip_end_tokens("Done.<pad>", ["", "<pad>"]) == "Done."
