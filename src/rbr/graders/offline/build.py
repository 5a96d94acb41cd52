"""Rebuild the shipped offline grader artifact from the public data sets.

Usage::

    python -m rbr.graders.offline.build --data ../shared/data \\
        --out src/rbr/graders/offline/artifacts/offline_grader.npz

``--data`` is a folder laid out as ``rbr-gold/train.jsonl``,
``xstest/completions_<model>.csv`` with ``xstest/prompts.csv``, and
``gptfuzz/train.csv`` with ``gptfuzz/questions.csv``. Needs the ``train``
extra. Takes 3 to 15 minutes on 2 cores, depending on other load.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from rbr.data.external import load_gptfuzz, load_xstest
from rbr.data.io import read_records
from rbr.data.types import Record
from rbr.graders.offline.grader import DEFAULT_ARTIFACT
from rbr.graders.offline.model import OfflineModel
from rbr.graders.offline.training import train_offline_grader

logger = logging.getLogger(__name__)

XSTEST_MODELS: tuple[str, ...] = ("llama2orig", "mistralinstruct", "gpt4")


def load_default_training_data(data_dir: str | Path) -> list[Record]:
    """Load the gold rows, the three XSTest model files and GPTFuzz.

    Raises:
        DataError: When a file is missing or invalid.
    """
    data_dir = Path(data_dir)
    records = read_records(data_dir / "rbr-gold" / "train.jsonl")
    for model in XSTEST_MODELS:
        records.extend(load_xstest(data_dir / "xstest" / f"completions_{model}.csv"))
    records.extend(load_gptfuzz(data_dir / "gptfuzz" / "train.csv"))
    return records


def build_default_artifact(data_dir: str | Path, out: str | Path) -> OfflineModel:
    """Train the default offline grader on every public data set and save it."""
    records = load_default_training_data(data_dir)
    logger.info("training the offline grader on %d records", len(records))
    return train_offline_grader(records, out=out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild the offline grader artifact.")
    parser.add_argument(
        "--data", type=Path, required=True, help="folder with rbr-gold, xstest, gptfuzz"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_ARTIFACT, help="artifact file to write"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    build_default_artifact(args.data, args.out)


if __name__ == "__main__":
    main()
