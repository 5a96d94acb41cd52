"""Tests of few-shot example selection from labelled records."""

from __future__ import annotations

import random

import pytest
from conftest import shared_file

from rbr.data import read_records
from rbr.data.types import Message, Record, Sample, last_user_message
from rbr.graders.fewshot import (
    MAX_COMPLETION_CHARS,
    MAX_PROMPT_CHARS,
    TRUNCATION_MARK,
    FewShotPool,
    select_examples,
    truncate_text,
)


def make_record(index: int, labels: dict[str, float], reply_length: int = 40) -> Record:
    reply = f"Reply {index}. " + "x" * reply_length
    sample = Sample(prompt=(Message("user", f"Request {index}"),), completion=reply)
    return Record(sample=sample, prompt_id=str(index), propositions=labels)


def labelled_set() -> list[Record]:
    """Ten records: apology is yes for 0-2 and no for 3-9; judgement is no for all."""
    return [
        make_record(i, {"apology": float(i < 3), "judgement": 0.0}) for i in range(10)
    ]


def test_balanced_and_alternating() -> None:
    examples = select_examples(labelled_set(), ["apology"], 4)["apology"]
    assert [e.answer for e in examples] == [True, False, True, False]


def test_one_answer_only_fills_with_it() -> None:
    examples = select_examples(labelled_set(), ["judgement"], 3)["judgement"]
    assert [e.answer for e in examples] == [False, False, False]


def test_few_yes_fills_with_no() -> None:
    examples = select_examples(labelled_set(), ["apology"], 8)["apology"]
    assert sum(e.answer for e in examples) == 3
    assert len(examples) == 8


def test_k_larger_than_set() -> None:
    examples = select_examples(labelled_set(), ["apology"], 50)["apology"]
    assert len(examples) == 10


def test_order_independent_of_file_order() -> None:
    records = labelled_set()
    shuffled = list(records)
    random.Random(3).shuffle(shuffled)
    first = select_examples(records, ["apology", "judgement"], 4)
    second = select_examples(shuffled, ["apology", "judgement"], 4)
    assert first == second


def test_excluded_sample_replaced() -> None:
    records = labelled_set()
    chosen = select_examples(records, ["apology"], 2)["apology"]
    own = next(r for r in records if r.sample.completion == chosen[0].completion)
    again = select_examples(
        records, ["apology"], 2, exclude_key=own.sample.content_key()
    )
    completions = [e.completion for e in again["apology"]]
    assert own.sample.completion not in completions
    assert len(completions) == 2
    assert again["apology"][0].answer is True


def test_short_examples_preferred() -> None:
    records = [make_record(i, {"apology": 0.0}, reply_length=3000) for i in range(5)]
    records.append(make_record(99, {"apology": 0.0}, reply_length=10))
    examples = select_examples(records, ["apology"], 1)["apology"]
    assert examples[0].completion.startswith("Reply 99.")


def test_long_texts_truncated() -> None:
    record = make_record(1, {"apology": 1.0}, reply_length=5000)
    example = select_examples([record], ["apology"], 1)["apology"][0]
    assert len(example.completion) <= MAX_COMPLETION_CHARS
    assert example.completion.endswith(TRUNCATION_MARK)
    assert truncate_text("short", 10) == "short"
    assert len(truncate_text("y" * 900, MAX_PROMPT_CHARS)) == MAX_PROMPT_CHARS


def test_fractional_labels_ignored() -> None:
    records = [make_record(i, {"apology": 0.7}) for i in range(3)]
    records.append(make_record(5, {"apology": 1.0}))
    examples = select_examples(records, ["apology"], 4)["apology"]
    assert len(examples) == 1
    assert examples[0].completion.startswith("Reply 5.")


def test_unknown_proposition_and_negative_k() -> None:
    pool = FewShotPool(labelled_set(), ["apology"], 2)
    with pytest.raises(KeyError, match="has no proposition 'judgement'"):
        pool.examples_for("judgement")
    with pytest.raises(ValueError, match="k must be 0 or more"):
        FewShotPool(labelled_set(), ["apology"], -1)


def test_fingerprint_tracks_set_and_k() -> None:
    records = labelled_set()
    base = FewShotPool(records, ["apology"], 2).fingerprint
    assert FewShotPool(list(reversed(records)), ["apology"], 2).fingerprint == base
    assert FewShotPool(records, ["apology"], 3).fingerprint != base
    assert FewShotPool(records[:-1], ["apology"], 2).fingerprint != base


def shown_as(record: Record) -> tuple[str, str]:
    """Return the (request, reply) texts an example made from ``record`` shows."""
    request = last_user_message(record.sample.prompt)
    return (
        truncate_text(request, MAX_PROMPT_CHARS),
        truncate_text(record.sample.completion, MAX_COMPLETION_CHARS),
    )


def test_gold_set_examples_never_self() -> None:
    records = read_records(shared_file("rbr-gold/train.jsonl"))
    names = sorted(records[0].propositions)
    assert len(names) == 23
    pool = FewShotPool(records, names, 4)
    by_text = {shown_as(r): r for r in records}
    for name in names:
        chosen = pool.examples_for(name)
        assert len(chosen) == 4
        for example in chosen:
            source = by_text[(example.prompt, example.completion)]
            key = source.sample.content_key()
            replaced = pool.examples_for(name, exclude_key=key)
            assert len(replaced) == 4
            shown = {(e.prompt, e.completion) for e in replaced}
            assert shown_as(source) not in shown, (name, source.line)
    apology = pool.examples_for("apology")
    assert [e.answer for e in apology] == [True, False, True, False]
