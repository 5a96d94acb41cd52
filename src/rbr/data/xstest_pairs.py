"""Build RBR comparison data from XSTest: several labelled completions per prompt.

XSTest v2 (Röttger et al., 2024, CC BY 4.0) publishes, per model, one
completion to each of its 450 prompts with a human ``final_label``. Putting
the files of several models together gives every prompt several completions
with known labels, which is the shape weight fitting needs.

Each prompt gets a response type from its safe/unsafe label: ``Comply`` for a
safe prompt and ``Hard Refuse`` for an unsafe one. XSTest labels map to the
default policy's completion labels so that the policy's orderings give
full compliance > partial refusal > full refusal for safe prompts, and the
reverse for unsafe prompts:

================== ================== ===============
final_label        safe (Comply)      unsafe (Hard Refuse)
================== ================== ===============
1_full_compliance  full_compliance    disallowed
3_partial_refusal  partial_compliance bad_refusal
2_full_refusal     bad_refusal        perfect_refusal
================== ================== ===============

The label names only place a completion in a tier of the ordering: XSTest
does not judge refusal style, so ``perfect_refusal`` here means "a full
refusal", not a refusal in the ideal style.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rbr.data.external import load_xstest
from rbr.errors import DataError

XSTEST_MODELS = ("gpt4", "llama2orig", "mistralinstruct")
"""Models whose completion files XSTest v2 publishes as ``completions_<model>.csv``."""

RESPONSE_TYPES = {"safe": "Comply", "unsafe": "Hard Refuse"}

LABEL_MAP: dict[str, dict[str, str]] = {
    "safe": {
        "1_full_compliance": "full_compliance",
        "3_partial_refusal": "partial_compliance",
        "2_full_refusal": "bad_refusal",
    },
    "unsafe": {
        "2_full_refusal": "perfect_refusal",
        "3_partial_refusal": "bad_refusal",
        "1_full_compliance": "disallowed",
    },
}
"""Completion label per prompt label and XSTest ``final_label``."""


def xstest_comparison_rows(
    xstest_dir: str | Path, *, models: Sequence[str] = XSTEST_MODELS
) -> list[dict[str, Any]]:
    """Return comparison rows (gold-set layout) for every completion of ``models``.

    Args:
        xstest_dir: Folder with ``prompts.csv`` and ``completions_<model>.csv``.
        models: Model names whose completion files to combine.

    Returns:
        One row per completion with ``prompt_id`` (``xstest-<id>``, shared by
        the models' completions to one prompt), ``prompt``, ``completion``,
        ``response_type``, ``label``, ``id`` and the XSTest fields ``model``,
        ``final_label``, ``prompt_label`` and ``xstest_type``.

    Raises:
        DataError: When a file is missing or invalid, or a prompt has no
            safe/unsafe label in ``prompts.csv``.
    """
    folder = Path(xstest_dir)
    prompts_path = folder / "prompts.csv"
    if not prompts_path.exists():
        raise DataError(
            str(prompts_path),
            None,
            "file not found; point to the XSTest v2 folder that holds prompts.csv "
            "and completions_<model>.csv",
        )
    rows = []
    for model in models:
        path = folder / f"completions_{model}.csv"
        for record in load_xstest(path, prompts_path=prompts_path, model=model):
            rows.append(_row(record, path))
    return rows


def _row(record: Any, path: Path) -> dict[str, Any]:
    extra = record.extra
    prompt_label = extra["prompt_label"]
    if prompt_label not in LABEL_MAP:
        raise DataError(
            str(path),
            record.line,
            f"prompt {record.sample.sample_id!r} has no safe/unsafe label in "
            "prompts.csv; use the prompts.csv of the same XSTest release",
        )
    prompt_number = record.sample.sample_id.split(":", 1)[1].removeprefix("v2-")
    return {
        "id": record.sample.sample_id,
        "prompt_id": f"xstest-{prompt_number}",
        "prompt": [
            {"role": m.role, "content": m.content} for m in record.sample.prompt
        ],
        "completion": [{"role": "assistant", "content": record.sample.completion}],
        "response_type": RESPONSE_TYPES[prompt_label],
        "label": LABEL_MAP[prompt_label][extra["final_label"]],
        "model": extra["model"],
        "final_label": extra["final_label"],
        "prompt_label": prompt_label,
        "xstest_type": extra["type"],
    }
