"""Loaders that turn public refusal data sets into partially labelled records.

Each loader returns :class:`~rbr.data.types.Record` objects in the gold-set
layout: a one-turn prompt, the completion, and the propositions that the
data set's label determines. Propositions the label does not determine are
left out, so training treats them as unlabelled. Records carry
``extra["source"]`` (``"xstest"`` or ``"gptfuzz"``) and the original label.
Their ``response_type`` is None: the data sets do not map prompts to this
project's response types.

XSTest (Röttger et al., 2024, CC BY 4.0), ``final_label`` of a completion:

================== ============== ================== ==================
final_label        fully_complies partially_complies disallowed_content
================== ============== ================== ==================
1_full_compliance  yes            yes                no, for a safe prompt
2_full_refusal     no             no                 no
3_partial_refusal  no             yes                no, for a safe prompt
================== ============== ================== ==================

A full refusal contains no disallowed content, and XSTest's safe prompts
have harmless answers by construction. A compliant answer to an unsafe
prompt is left unlabelled for disallowed_content, because XSTest does not
judge its content.

GPTFuzz (Yu et al., 2023, MIT), ``label`` of a response to a harmful
question: 1 (a harmful, on-topic answer) gives disallowed_content yes and
partially_complies yes; 0 (a refusal or nothing harmful) gives
disallowed_content no. A jailbroken answer may still be incomplete, so
fully_complies stays unlabelled for both. The jailbreak template that
wrapped each question is not in the file, so the prompt is the bare question.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path

from rbr.data.types import Message, Record, Sample, prompt_hash
from rbr.errors import DataError

logger = logging.getLogger(__name__)

XSTEST_LABELS: dict[str, dict[str, bool]] = {
    "1_full_compliance": {"fully_complies": True, "partially_complies": True},
    "2_full_refusal": {
        "fully_complies": False,
        "partially_complies": False,
        "disallowed_content": False,
    },
    "3_partial_refusal": {"fully_complies": False, "partially_complies": True},
}
"""Propositions determined by each XSTest ``final_label``, for any prompt."""

XSTEST_REFUSAL_LABELS = frozenset({"2_full_refusal", "3_partial_refusal"})
"""XSTest labels that count as a refusal in refusal-versus-compliance scoring."""

GPTFUZZ_LABELS: dict[str, dict[str, bool]] = {
    "1": {"disallowed_content": True, "partially_complies": True},
    "0": {"disallowed_content": False},
}
"""Propositions determined by each GPTFuzz ``label``."""


def _read_csv(path: Path, required: set[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(row_number, row)`` with 1-based data row numbers (header excluded)."""
    if not path.exists():
        raise DataError(str(path), None, "file not found")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise DataError(
                str(path),
                1,
                f"missing columns {sorted(missing)}; expected at least {sorted(required)}",
            )
        yield from enumerate(reader, start=1)


def _record(
    prompt: str, completion: str, propositions: dict[str, bool], sample_id: str
) -> Record:
    messages = (Message("user", prompt),)
    return Record(
        sample=Sample(prompt=messages, completion=completion, sample_id=sample_id),
        prompt_id=prompt_hash(messages),
        propositions={k: 1.0 if v else 0.0 for k, v in propositions.items()},
    )


def read_xstest_prompt_labels(path: str | Path) -> dict[str, str]:
    """Read XSTest ``prompts.csv`` into a map of prompt id to ``safe``/``unsafe``.

    Raises:
        DataError: When the file is missing, lacks ``id`` or ``label``, or a
            label is neither ``safe`` nor ``unsafe``.
    """
    path = Path(path)
    labels = {}
    for number, row in _read_csv(path, {"id", "label"}):
        label = row["label"].strip()
        if label not in {"safe", "unsafe"}:
            raise DataError(
                str(path), number, f"label {label!r} must be 'safe' or 'unsafe'"
            )
        labels[row["id"].strip()] = label
    return labels


def load_xstest(
    path: str | Path,
    *,
    prompts_path: str | Path | None = None,
    model: str | None = None,
) -> list[Record]:
    """Load one XSTest ``completions_<model>.csv`` file as labelled records.

    Args:
        path: The completions file (columns ``id``, ``prompt``, ``completion``,
            ``final_label``; ``type`` is kept when present).
        prompts_path: ``prompts.csv`` with the safe/unsafe label of each
            prompt; defaults to ``prompts.csv`` beside ``path`` when that
            exists. Without it, disallowed_content is labelled only for
            full refusals, and a warning is logged.
        model: Name of the model that wrote the completions; defaults to the
            part of the file name after ``completions_``.

    Returns:
        One record per row, with ``extra`` holding ``source``, ``model``,
        ``final_label``, ``refusal`` (True for full or partial refusal),
        ``prompt_label`` (``safe``/``unsafe`` or None) and ``type``.

    Raises:
        DataError: When a file is missing, lacks a column, or a row has an
            unknown ``final_label``.
    """
    path = Path(path)
    model = model or path.stem.removeprefix("completions_")
    if prompts_path is None and (path.parent / "prompts.csv").exists():
        prompts_path = path.parent / "prompts.csv"
    if prompts_path is None:
        logger.warning(
            "%s: no prompts.csv in the same folder, so disallowed_content is "
            "labelled only for full refusals; pass prompts_path or put the XSTest "
            "prompts.csv there to label compliant answers to safe prompts too",
            path,
        )
    prompt_labels = read_xstest_prompt_labels(prompts_path) if prompts_path else {}
    records = []
    required = {"id", "prompt", "completion", "final_label"}
    for number, row in _read_csv(path, required):
        final_label = row["final_label"].strip()
        if final_label not in XSTEST_LABELS:
            raise DataError(
                str(path),
                number,
                f"final_label {final_label!r} is not one of {sorted(XSTEST_LABELS)}",
            )
        row_id = row["id"].strip()
        prompt_label = prompt_labels.get(row_id.removeprefix("v2-"))
        propositions = dict(XSTEST_LABELS[final_label])
        if prompt_label == "safe":
            propositions["disallowed_content"] = False
        record = _record(
            row["prompt"], row["completion"], propositions, f"xstest-{model}:{row_id}"
        )
        record.line = number
        record.extra = {
            "source": "xstest",
            "model": model,
            "final_label": final_label,
            "refusal": final_label in XSTEST_REFUSAL_LABELS,
            "prompt_label": prompt_label,
            "type": row.get("type"),
        }
        records.append(record)
    return records


def read_gptfuzz_questions(path: str | Path) -> dict[str, str]:
    """Read GPTFuzz ``questions.csv`` into a map of question index to text.

    Raises:
        DataError: When the file is missing or lacks ``index`` or ``text``.
    """
    return {
        row["index"].strip(): row["text"]
        for _, row in _read_csv(Path(path), {"index", "text"})
    }


def load_gptfuzz(
    path: str | Path, *, questions_path: str | Path | None = None
) -> list[Record]:
    """Load GPTFuzz ``train.csv`` (columns ``question``, ``Response``, ``label``).

    Args:
        path: The labelled responses file.
        questions_path: ``questions.csv``; defaults to the file beside ``path``.

    Returns:
        One record per row, with ``extra`` holding ``source``, ``label`` and
        ``question`` (the index). Records of one question share a
        ``prompt_id``.

    Raises:
        DataError: When a file is missing, lacks a column, a label is not 0
            or 1, or a question index is not in the questions file.
    """
    path = Path(path)
    questions_path = Path(questions_path or path.parent / "questions.csv")
    questions = read_gptfuzz_questions(questions_path)
    records = []
    for number, row in _read_csv(path, {"question", "Response", "label"}):
        label = row["label"].strip()
        if label not in GPTFUZZ_LABELS:
            raise DataError(str(path), number, f"label {label!r} must be 0 or 1")
        index = row["question"].strip()
        if index not in questions:
            raise DataError(
                str(path),
                number,
                f"question {index!r} is not in {questions_path}; "
                "pass the questions.csv of the same release",
            )
        record = _record(
            questions[index],
            row["Response"],
            GPTFUZZ_LABELS[label],
            f"gptfuzz:{number}",
        )
        record.line = number
        record.extra = {
            "source": "gptfuzz",
            "label": int(label),
            "question": int(index),
        }
        records.append(record)
    return records
