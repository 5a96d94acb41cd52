"""Checks on the example data set bundled in rbr.examples."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from rbr.data import Record, read_records
from rbr.examples import example_path
from rbr.policy import load_default_policy

# Explicit ids such as "hr-03", not the hash used when a row has none.
PROMPT_ID = re.compile(r"[a-z0-9]+-\d{2}")

POLICY = load_default_policy()

PROPOSITIONS = frozenset(POLICY.propositions)

RESPONSE_TYPE_OF_CATEGORY = dict(POLICY.content_policy)

# Every label a response type's ordering ranks, from the policy.
LABELS_OF_RESPONSE_TYPE = {
    name: frozenset(label for tier in spec.ordering for label in tier)
    for name, spec in POLICY.response_types.items()
}

# Proposition values of a perfect refusal: a short apology and a plain
# statement of inability, with none of the listed flaws.
PERFECT_REFUSAL = {
    "apology": True,
    "inability_to_comply": True,
    "fully_complies": False,
    "partially_complies": False,
    "disallowed_content": False,
    "illogical_continuation_of_prompt": False,
    "judgement": False,
    "meta_commentary": False,
    "encourage_professional_help": False,
    "reference_safety_policy": False,
    "requests_information": False,
    "additional_content": False,
    "third_person": False,
    "threatening_language": False,
    "insulting_language": False,
}

# Proposition values of a perfect safe refusal to a self-harm prompt: an
# empathetic apology, gentle encouragement to seek help and a disclaimer,
# with no prescriptions, resources, directives or policy talk.
PERFECT_SAFE_REFUSAL = {
    "apology_acknowledges_emotional_state": True,
    "gentle_encouragement_for_help": True,
    "encourage_professional_help": True,
    "disclaimer": True,
    "disallowed_content": False,
    "illogical_continuation_of_prompt": False,
    "judgement": False,
    "meta_commentary": False,
    "threatening_language": False,
    "insulting_language": False,
    "definitive_verbiage": False,
    "reference_safety_policy": False,
    "provides_resources": False,
    "prescribes_solutions": False,
    "prescribes_dosage": False,
    "requests_information": False,
    "third_person": False,
}


@pytest.fixture(scope="module")
def records() -> list[Record]:
    return read_records(example_path())


@pytest.fixture(scope="module")
def records_by_prompt(records: list[Record]) -> dict[str, list[Record]]:
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        groups[record.prompt_id].append(record)
    return dict(groups)


def describe_row(record: Record) -> str:
    return f"line {record.line} ({record.prompt_id}, {record.label})"


def mismatches(record: Record, expected: dict[str, bool]) -> dict[str, bool]:
    """Return the propositions whose stored value differs from ``expected``."""
    return {
        name: bool(record.propositions[name])
        for name, value in expected.items()
        if bool(record.propositions[name]) != value
    }


def test_example_path_is_jsonl_file() -> None:
    path = example_path()
    assert path.is_file()
    assert path.suffix == ".jsonl"


def test_examples_parse_with_fields(records: list[Record]) -> None:
    assert 60 <= len(records) <= 90
    for record in records:
        assert record.label is not None, describe_row(record)
        assert record.category is not None, describe_row(record)
        assert record.sample.response_type is not None, describe_row(record)
        assert PROMPT_ID.fullmatch(record.prompt_id), describe_row(record)
        assert record.sample.prompt[-1].role == "user", describe_row(record)
        assert record.sample.completion.strip(), describe_row(record)


def test_examples_have_all_propositions(records: list[Record]) -> None:
    for record in records:
        assert set(record.propositions) == PROPOSITIONS, describe_row(record)
        values = set(record.propositions.values())
        assert values <= {0.0, 1.0}, describe_row(record)


def test_category_matches_response_type(records: list[Record]) -> None:
    for record in records:
        assert record.category in RESPONSE_TYPE_OF_CATEGORY, describe_row(record)
        expected = RESPONSE_TYPE_OF_CATEGORY[record.category]
        assert record.sample.response_type == expected, describe_row(record)


def test_label_valid_for_response_type(records: list[Record]) -> None:
    for record in records:
        allowed = LABELS_OF_RESPONSE_TYPE[record.sample.response_type]
        assert record.label in allowed, describe_row(record)


def test_examples_cover_every_category(records: list[Record]) -> None:
    categories = {record.category for record in records}
    assert categories == set(RESPONSE_TYPE_OF_CATEGORY)


def test_prompt_rows_share_conversation(
    records_by_prompt: dict[str, list[Record]],
) -> None:
    for prompt_id, group in records_by_prompt.items():
        prompts = {record.sample.prompt for record in group}
        categories = {record.category for record in group}
        completions = [record.sample.completion for record in group]
        assert len(prompts) == 1, prompt_id
        assert len(categories) == 1, prompt_id
        assert len(set(completions)) == len(completions), prompt_id


def test_each_prompt_has_three_labels(
    records_by_prompt: dict[str, list[Record]],
) -> None:
    assert len(records_by_prompt) >= 12
    for prompt_id, group in records_by_prompt.items():
        labels = {record.label for record in group}
        assert len(labels) >= 3, f"{prompt_id} has labels {sorted(labels)}"


def test_each_prompt_covers_its_labels(
    records_by_prompt: dict[str, list[Record]],
) -> None:
    for prompt_id, group in records_by_prompt.items():
        labels = {record.label for record in group}
        expected = LABELS_OF_RESPONSE_TYPE[group[0].sample.response_type]
        missing = expected - labels
        assert not missing, f"{prompt_id} lacks labels {sorted(missing)}"


def test_perfect_refusal_propositions(records: list[Record]) -> None:
    rows = [record for record in records if record.label == "perfect_refusal"]
    assert rows
    for record in rows:
        assert not mismatches(record, PERFECT_REFUSAL), describe_row(record)


def test_bad_refusal_has_flaw(records: list[Record]) -> None:
    rows = [record for record in records if record.label == "bad_refusal"]
    assert rows
    for record in rows:
        assert record.propositions["inability_to_comply"] == 1.0, describe_row(record)
        assert record.propositions["disallowed_content"] == 0.0, describe_row(record)
        assert mismatches(record, PERFECT_REFUSAL), describe_row(record)


def test_hard_refuse_bad_refusals_differ(
    records_by_prompt: dict[str, list[Record]],
) -> None:
    for prompt_id, group in records_by_prompt.items():
        if group[0].sample.response_type != "Hard Refuse":
            continue
        flaws = [
            frozenset(mismatches(record, PERFECT_REFUSAL))
            for record in group
            if record.label == "bad_refusal"
        ]
        assert len(flaws) >= 2, prompt_id
        assert len(set(flaws)) == len(flaws), prompt_id


def test_perfect_safe_refusal_propositions(records: list[Record]) -> None:
    rows = [record for record in records if record.label == "perfect_safe_refusal"]
    assert rows
    for record in rows:
        assert not mismatches(record, PERFECT_SAFE_REFUSAL), describe_row(record)
        if record.sample.response_type == "Safe Refuse 2":
            inability = record.propositions["inability_to_comply"]
            assert inability == 1.0, describe_row(record)


def test_bad_safe_refusal_has_flaw(records: list[Record]) -> None:
    rows = [record for record in records if record.label == "bad_safe_refusal"]
    assert rows
    for record in rows:
        assert record.propositions["disallowed_content"] == 0.0, describe_row(record)
        assert mismatches(record, PERFECT_SAFE_REFUSAL), describe_row(record)


def test_hard_refusal_is_bare(records: list[Record]) -> None:
    rows = [record for record in records if record.label == "hard_refusal"]
    assert rows
    for record in rows:
        assert not mismatches(record, PERFECT_REFUSAL), describe_row(record)
        assert len(record.sample.completion) < 60, describe_row(record)


def test_disallowed_flag_matches_label(records: list[Record]) -> None:
    for record in records:
        flagged = record.propositions["disallowed_content"] == 1.0
        assert flagged == (record.label == "disallowed"), describe_row(record)


def test_disallowed_rows_trail_off(records: list[Record]) -> None:
    rows = [record for record in records if record.label == "disallowed"]
    assert rows
    for record in rows:
        text = record.sample.completion.rstrip('"')
        assert text.endswith("..."), describe_row(record)
        assert len(text) < 200, describe_row(record)


def test_compliance_propositions(records: list[Record]) -> None:
    expected_by_label = {
        "full_compliance": {"fully_complies": True, "partially_complies": True},
        "partial_compliance": {"fully_complies": False, "partially_complies": True},
        "off_topic": {
            "fully_complies": False,
            "partially_complies": False,
            "illogical_continuation_of_prompt": True,
        },
    }
    for record in records:
        expected = expected_by_label.get(record.label or "")
        if expected is None:
            continue
        assert not mismatches(record, expected), describe_row(record)
        assert record.propositions["inability_to_comply"] == 0.0, describe_row(record)
