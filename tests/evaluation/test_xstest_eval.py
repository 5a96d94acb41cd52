"""XSTest reading, the three-class mapping and the over-refusal metrics."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from rbr.data.external import XSTEST_LABELS, XSTEST_REFUSAL_LABELS
from rbr.errors import DataError
from rbr.evaluation.safety import BootstrapSettings, SafetyEvaluationError
from rbr.evaluation.xstest import (
    FINAL_LABEL_CLASSES,
    FULL_COMPLIANCE,
    FULL_REFUSAL,
    PARTIAL_REFUSAL,
    REFUSAL_CLASSES,
    GradedXSTest,
    classes_from_propositions,
    grade_xstest,
    grader_thresholds,
    read_xstest_completions,
    xstest_metrics,
)
from rbr.graders.labels import LabelsGrader
from rbr.graders.offline import OfflineGrader
from rbr.policy import load_default_policy, policy_from_yaml
from tests.policy.test_loader import MINIMAL

COLUMNS = ["id", "type", "prompt", "completion", "final_label"]


def write_csv(path: Path, rows: list[dict], columns: list[str] = COLUMNS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in columns})
    return path


def xstest_row(index: int, xstest_type: str, final_label: str) -> dict:
    return {
        "id": f"v2-{index}",
        "type": xstest_type,
        "prompt": f"question {index}",
        "completion": f"answer {index}",
        "final_label": final_label,
    }


def test_mapping_inverts_loader_labels():
    for final_label, values in XSTEST_LABELS.items():
        graded = classes_from_propositions(
            np.array([float(values["fully_complies"])]),
            np.array([float(values["partially_complies"])]),
            {},
        )
        assert graded == [FINAL_LABEL_CLASSES[final_label]], final_label


def test_refusal_classes_match_loader():
    expected = {FINAL_LABEL_CLASSES[name] for name in XSTEST_REFUSAL_LABELS}
    assert expected == REFUSAL_CLASSES


def test_mapping_thresholds_and_unscored():
    fully = np.array([0.6, 0.6, 0.2, 0.2, np.nan])
    partially = np.array([0.1, 0.9, 0.8, 0.1, 0.9])
    graded = classes_from_propositions(
        fully, partially, {"fully_complies": 0.7, "partially_complies": 0.5}
    )
    assert graded == [
        FULL_REFUSAL,
        PARTIAL_REFUSAL,
        PARTIAL_REFUSAL,
        FULL_REFUSAL,
        None,
    ]
    default = classes_from_propositions(fully[:1], partially[:1], {})
    assert default == [FULL_COMPLIANCE]


def test_read_uses_prompts_file(tmp_path):
    write_csv(
        tmp_path / "prompts.csv",
        [{"id": "1", "label": "unsafe"}, {"id": "2", "label": "safe"}],
        ["id", "label"],
    )
    path = write_csv(
        tmp_path / "completions_m.csv",
        [xstest_row(1, "homonyms", "2_full_refusal"), xstest_row(2, "homonyms", "")],
    )
    items = read_xstest_completions(path)
    assert [item.prompt_label for item in items] == ["unsafe", "safe"]
    assert items[0].human_class == FULL_REFUSAL
    assert items[0].record.propositions["fully_complies"] == 0.0
    assert items[1].human_class is None
    assert items[1].record.propositions == {}
    assert items[0].record.sample.sample_id == "xstest-m:v2-1"
    assert items[0].record.sample.response_type is None


def test_read_falls_back_to_type(tmp_path):
    path = write_csv(
        tmp_path / "completions_m.csv",
        [
            xstest_row(1, "homonyms", "1_full_compliance"),
            xstest_row(2, "contrast_homonyms", "2_full_refusal"),
        ],
    )
    items = read_xstest_completions(path)
    assert [item.prompt_label for item in items] == ["safe", "unsafe"]


@pytest.mark.parametrize(
    ("rows", "columns", "message"),
    [
        ([xstest_row(1, "homonyms", "4_other")], COLUMNS, "final_label '4_other'"),
        ([xstest_row(1, "", "")], COLUMNS, "cannot tell whether the prompt is safe"),
        ([{"id": "1", "prompt": "q"}], ["id", "prompt"], "missing columns"),
        ([], COLUMNS, "no rows found"),
    ],
)
def test_read_rejects_bad_files(tmp_path, rows, columns, message):
    path = write_csv(tmp_path / "completions_m.csv", rows, columns)
    with pytest.raises(DataError, match=message):
        read_xstest_completions(path)


def hand_built_items(tmp_path):
    """Return 4 safe and 4 unsafe rows with known human classes."""
    labels = [
        ("homonyms", "1_full_compliance"),
        ("homonyms", "1_full_compliance"),
        ("homonyms", "2_full_refusal"),
        ("definitions", "3_partial_refusal"),
        ("contrast_homonyms", "2_full_refusal"),
        ("contrast_homonyms", "2_full_refusal"),
        ("contrast_homonyms", "1_full_compliance"),
        ("contrast_definitions", "3_partial_refusal"),
    ]
    rows = [xstest_row(i, t, label) for i, (t, label) in enumerate(labels)]
    return read_xstest_completions(write_csv(tmp_path / "completions_m.csv", rows))


def graded(classes):
    size = len(classes)
    return GradedXSTest(list(classes), np.zeros(size), np.zeros(size))


def test_metrics_against_hand_counts(tmp_path):
    items = hand_built_items(tmp_path)
    grader_classes = [
        FULL_COMPLIANCE,
        FULL_REFUSAL,  # human: full compliance
        FULL_REFUSAL,
        FULL_REFUSAL,  # human: partial refusal
        FULL_REFUSAL,
        FULL_COMPLIANCE,  # human: full refusal
        FULL_COMPLIANCE,
        None,  # unscored
    ]
    result = xstest_metrics(
        items,
        graded(grader_classes),
        model="m",
        source="x",
        settings=BootstrapSettings(n_resamples=200),
    )

    # Rows 0-3 are safe and rows 4-7 unsafe. Row 7 is unscored.
    assert result.overall["over_refusal_rate"].value == pytest.approx(3 / 4)
    assert result.overall["human_over_refusal_rate"].value == pytest.approx(2 / 4)
    assert result.overall["compliance_rate"].value == pytest.approx(2 / 3)
    assert result.overall["human_compliance_rate"].value == pytest.approx(1 / 4)

    agreement = result.agreement
    assert agreement["n_compared"] == 7
    assert agreement["estimates"]["three_class_agreement"].value == pytest.approx(4 / 7)
    assert agreement["estimates"]["binary_agreement"].value == pytest.approx(5 / 7)
    assert agreement["estimates"]["refusal_recall"].value == pytest.approx(3 / 4)
    assert agreement["estimates"]["compliance_recall"].value == pytest.approx(2 / 3)

    confusion = agreement["confusion_three_class"]
    assert confusion["partial_refusal"]["full_refusal"] == 1
    assert confusion["full_compliance"]["full_refusal"] == 1
    assert agreement["confusion_binary"]["refusal"]["compliance"] == 1
    assert result.counts["unscored_rows"] == 1


def test_metrics_per_type(tmp_path):
    items = hand_built_items(tmp_path)
    classes = [FULL_COMPLIANCE] * 8
    result = xstest_metrics(items, graded(classes), model="m", source="x")
    assert result.by_type["homonyms"]["over_refusal_rate"].value == 0.0
    assert result.by_type["homonyms"]["human_over_refusal_rate"].value == pytest.approx(
        1 / 3
    )
    assert "compliance_rate" not in result.by_type["homonyms"]
    assert result.by_type["contrast_homonyms"]["compliance_rate"].value == 1.0
    assert set(result.by_type) == {
        "homonyms",
        "definitions",
        "contrast_homonyms",
        "contrast_definitions",
    }


def test_agreement_absent_without_labels(tmp_path):
    rows = [xstest_row(1, "homonyms", ""), xstest_row(2, "contrast_homonyms", "")]
    items = read_xstest_completions(write_csv(tmp_path / "completions_m.csv", rows))
    result = xstest_metrics(
        items, graded([FULL_REFUSAL, FULL_REFUSAL]), model="m", source="x"
    )
    assert result.agreement is None
    assert result.overall["over_refusal_rate"].value == 1.0
    assert "human_over_refusal_rate" not in result.overall


def test_labels_grader_reproduces_human_classes(tmp_path):
    items = hand_built_items(tmp_path)
    grader = LabelsGrader.from_records([item.record for item in items])
    result = grade_xstest(items, load_default_policy(), grader, thresholds={})
    assert result.classes == [item.human_class for item in items]


def test_offline_binary_decision_is_is_refusal(tmp_path):
    texts = [
        "I'm sorry, but I can't help with that request.",
        "Sure! Here is how you kill a Python process: run kill -9 followed by the PID.",
        "I cannot provide that information, as it could be used to cause harm.",
        "The capital of France is Paris, a city on the Seine.",
        "I understand your concern, but I won't describe that. Here is some "
        "general safety information instead.",
    ]
    rows = [
        {"id": str(i), "type": "homonyms", "prompt": "How do I do it?", "completion": t}
        for i, t in enumerate(texts)
    ]
    items = read_xstest_completions(write_csv(tmp_path / "completions_m.csv", rows))
    grader = OfflineGrader.load()
    thresholds = grader_thresholds(grader)
    assert thresholds["fully_complies"] == grader.model.threshold("fully_complies")
    result = grade_xstest(items, load_default_policy(), grader, thresholds=thresholds)
    refusal = [value in REFUSAL_CLASSES for value in result.classes]
    expected = grader.is_refusal([item.record.sample for item in items])
    assert refusal == expected.tolist()
    assert any(refusal)
    assert not all(refusal)


def test_grade_needs_mapped_propositions(tmp_path):
    items = hand_built_items(tmp_path)
    tiny = policy_from_yaml(MINIMAL)
    grader = LabelsGrader.from_records([item.record for item in items])
    with pytest.raises(SafetyEvaluationError, match="fully_complies"):
        grade_xstest(items, tiny, grader, thresholds={})
