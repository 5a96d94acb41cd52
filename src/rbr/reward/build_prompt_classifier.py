"""Rebuild the shipped offline prompt classifier from the public data sets.

Usage::

    python -m rbr.reward.build_prompt_classifier --data ../shared/data \\
        --out src/rbr/reward/artifacts/prompt_classifier.npz

``--data`` is a folder with ``rbr-gold/train.jsonl``, ``xstest/prompts.csv``
and ``gptfuzz/questions.csv``. The ordinary requests of
:data:`ORDINARY_PROMPTS`, shipped beside the artifact, are added too. The
build first cross-validates (results stored in the artifact's metadata and
printed as JSON), then trains on everything. Needs the ``train`` extra.

Categories of the prompts other than gold (the default policy's names):

- The ordinary requests (cooking, code, travel, homework, writing and
  similar everyday tasks, written for this project because the gold set's
  ``None`` prompts are all long, borderline conversations) are ``None``.

- XSTest ``safe`` prompts are ordinary requests: ``None``.
- XSTest ``unsafe`` prompts that request ways to end one's own life
  (:data:`SELF_HARM`) are ``SH-R2``. Those of the ``contrast_discr`` type,
  and those that demean a protected group, call for violence against it or
  glorify a hate crime (:data:`HATE`), are ``H-R``. The rest (violence,
  crime, privacy violations) are ``K-R``.
- GPTFuzz questions 0 to 79 (those with labelled responses in
  ``gptfuzz/train.csv``) are harmful requests: ``H-R`` when they match
  :data:`HATE`, else ``K-R``. Questions 80 to 99 are left out so they stay
  unseen by any model trained here.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from rbr.data.external import read_gptfuzz_questions
from rbr.data.io import iter_rows, read_records
from rbr.data.types import Message, prompt_hash
from rbr.errors import DataError
from rbr.policy import Policy, load_default_policy
from rbr.reward.prompt_offline import DEFAULT_PROMPT_ARTIFACT, PromptModel
from rbr.reward.prompt_training import (
    GOLD_SOURCE,
    LabelledPrompt,
    cross_validate,
    train_prompt_model,
)

logger = logging.getLogger(__name__)

SELF_HARM = re.compile(
    r"\b(suicide|kill myself|end my life|go out like|to die like)\b", re.IGNORECASE
)
"""Requests for ways to end one's own life."""

HATE = re.compile(
    r"\b(jews?|jewish|black people|roma|gay|women|ethnic|slave|white supremacy"
    r"|jim crow|hitler|genocide|massacre|khmer rouge|taliban|auschwitz|isis"
    r"|dylann roof|pulse nightclub|trail of tears)\b",
    re.IGNORECASE,
)
"""Words that mark a request aimed at a protected group or a hate crime."""

GPTFUZZ_QUESTIONS_USED = 80

ORDINARY_PROMPTS = Path(__file__).parent / "artifacts" / "ordinary_prompts.jsonl"
"""Everyday requests with ``category`` None, one JSON object per line."""
ORDINARY_SOURCE = "ordinary"


def load_gold_prompts(path: str | Path) -> list[LabelledPrompt]:
    """Read the distinct prompts of a gold file with their ``category``.

    Raises:
        DataError: When a row has no category, or one prompt has two.
    """
    found: dict[str, LabelledPrompt] = {}
    for record in read_records(path):
        if record.category is None:
            raise DataError(
                str(path), record.line, "row has no 'category'; label every prompt"
            )
        key = prompt_hash(record.sample.prompt)
        earlier = found.get(key)
        if earlier is not None and earlier.category != record.category:
            raise DataError(
                str(path),
                record.line,
                f"prompt already labelled {earlier.category!r} is labelled "
                f"{record.category!r} here; give it one category",
            )
        found[key] = LabelledPrompt(record.sample.prompt, record.category)
    return list(found.values())


def xstest_category(prompt: str, label: str, kind: str) -> str:
    """Return the category of an XSTest prompt from its label and type."""
    if label == "safe":
        return "None"
    if SELF_HARM.search(prompt):
        return "SH-R2"
    if kind == "contrast_discr" or HATE.search(prompt):
        return "H-R"
    return "K-R"


def load_xstest_prompts(path: str | Path) -> list[LabelledPrompt]:
    """Read XSTest ``prompts.csv`` (columns ``prompt``, ``type``, ``label``).

    Raises:
        DataError: When the file is missing, lacks a column, or a label is
            neither ``safe`` nor ``unsafe``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), None, "file not found")
    items = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"prompt", "type", "label"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(str(path), 1, f"missing columns {sorted(missing)}")
        for number, row in enumerate(reader, start=2):
            label = row["label"].strip()
            if label not in ("safe", "unsafe"):
                raise DataError(
                    str(path), number, f"label {label!r} must be 'safe' or 'unsafe'"
                )
            category = xstest_category(row["prompt"], label, row["type"].strip())
            prompt = (Message("user", row["prompt"]),)
            items.append(LabelledPrompt(prompt, category, "xstest"))
    return items


def load_gptfuzz_prompts(path: str | Path) -> list[LabelledPrompt]:
    """Read GPTFuzz ``questions.csv``; see the module notes for the categories."""
    items = []
    for index, text in read_gptfuzz_questions(path).items():
        if int(index) >= GPTFUZZ_QUESTIONS_USED:
            continue
        category = "H-R" if HATE.search(text) else "K-R"
        items.append(LabelledPrompt((Message("user", text),), category, "gptfuzz"))
    return items


def load_ordinary_prompts(path: str | Path = ORDINARY_PROMPTS) -> list[LabelledPrompt]:
    """Read prompts with a ``category`` (one JSON object per line) as ordinary."""
    items = []
    for line, row in iter_rows(path):
        prompt, category = row.get("prompt"), row.get("category")
        if not isinstance(prompt, str) or not isinstance(category, str):
            raise DataError(
                str(path), line, "each row needs a 'prompt' and a 'category' string"
            )
        items.append(
            LabelledPrompt((Message("user", prompt),), category, ORDINARY_SOURCE)
        )
    return items


def load_training_prompts(data_dir: str | Path) -> list[LabelledPrompt]:
    """Load the gold, XSTest, GPTFuzz and ordinary prompts."""
    data_dir = Path(data_dir)
    items = load_gold_prompts(data_dir / "rbr-gold" / "train.jsonl")
    items.extend(load_xstest_prompts(data_dir / "xstest" / "prompts.csv"))
    items.extend(load_gptfuzz_prompts(data_dir / "gptfuzz" / "questions.csv"))
    items.extend(load_ordinary_prompts())
    return items


def refusal_accuracy(
    model: PromptModel, items: Sequence[LabelledPrompt], policy: Policy
) -> float:
    """Return how often the predicted and true categories agree on refusing.

    A category means refusing when the policy maps it to a response type
    other than ``Comply``.
    """
    predicted = model.predict([item.prompt for item in items])
    agree = [
        _refuses(policy, guess) == _refuses(policy, item.category)
        for guess, item in zip(predicted, items)
    ]
    return sum(agree) / len(agree)


def _refuses(policy: Policy, category: str) -> bool:
    return policy.response_type_for_category(category) not in (None, "Comply")


def build(data_dir: str | Path, out: str | Path) -> PromptModel:
    """Cross-validate, train on every prompt and save the artifact to ``out``."""
    items = load_training_prompts(data_dir)
    policy = load_default_policy()
    logger.info("cross-validating on %d prompts", len(items))
    gold_only = [i for i in items if i.source == GOLD_SOURCE]
    with_external = cross_validate(items, policy).summary()
    without_external = cross_validate(gold_only, policy).summary()
    ordinary = cross_validate(items, policy, source=ORDINARY_SOURCE).summary()
    xstest = [i for i in items if i.source == "xstest"]
    transfer = refusal_accuracy(train_prompt_model(gold_only), xstest, policy)
    metadata = {
        "sources": {
            "gold": "rbr-gold/train.jsonl (category column)",
            "xstest": "xstest/prompts.csv (label and type)",
            "gptfuzz": f"gptfuzz/questions.csv (questions 0-{GPTFUZZ_QUESTIONS_USED - 1})",
            "ordinary": f"{ORDINARY_PROMPTS.name} (shipped with rbr)",
        },
        "cross_validation": with_external,
        "cross_validation_gold_only": without_external,
        "cross_validation_ordinary": ordinary,
        "xstest_refusal_accuracy_gold_only": round(transfer, 4),
    }
    logger.info("training on %d prompts", len(items))
    model = train_prompt_model(items, metadata=metadata)
    digest = model.save(out)
    logger.info("wrote %s (sha256 %s)", out, digest[:12])
    return model


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Rebuild the offline prompt classifier artifact."
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="folder with rbr-gold, xstest, gptfuzz"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_PROMPT_ARTIFACT, help="artifact to write"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    model = build(args.data, args.out)
    report = {
        key: model.metadata[key]
        for key in (
            "counts",
            "cross_validation",
            "cross_validation_gold_only",
            "cross_validation_ordinary",
            "xstest_refusal_accuracy_gold_only",
        )
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
