"""Measure the accuracy of offline grader designs.

Two evaluations:

1. Cross-validation on the gold set: 5 folds grouped by prompt (a hash of
   the prompt messages decides each prompt's fold). Each fold trains on the
   other four folds' gold rows, plus the external rows (XSTest, GPTFuzz)
   for the designs that use them, and predicts the held-out gold rows.
   Decision thresholds come from the training side only (inner
   cross-validation inside ``train_offline_model``). Metrics are computed per
   proposition on the pooled out-of-fold predictions of all 351 rows, then
   averaged over the propositions with at least one positive (macro).
2. XSTest transfer: train on the gold rows, GPTFuzz and two XSTest model
   files, then score refusal versus compliance on the third model's
   completions, with partial refusal counted as refusal. Each of the three
   models is held out once.
   The refusal decision is ``P(fully_complies) < threshold``, the threshold
   being the one the model tuned on its own training data.

Usage::

    python benchmarks/eval_offline_grader.py --data ../shared/data \
        --out benchmarks/results/offline_grader_eval.json

Needs the ``train`` extra (scikit-learn, scipy). Takes 20 to 40 minutes
on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from rbr.data import Record, read_records
from rbr.data.external import load_gptfuzz, load_xstest
from rbr.graders.offline.grader import OfflineGrader
from rbr.graders.offline.model import OfflineModel
from rbr.graders.offline.rules import PROPOSITIONS
from rbr.graders.offline.training import TrainingOptions, View, train_offline_model
from rbr.graders.offline.training_data import group_folds

logger = logging.getLogger("eval_offline_grader")

XSTEST_MODELS = ("llama2orig", "mistralinstruct", "gpt4")


@dataclass(frozen=True)
class Design:
    """One grader design: training options and whether external rows are added."""

    name: str
    description: str
    options: TrainingOptions
    external: bool


def designs() -> list[Design]:
    """Return the compared designs, simplest first."""
    base = TrainingOptions()
    word_only = replace(
        base, views=(View("word", {"word": 1.0}, 4.0),), select_views=False
    )
    return [
        Design(
            "tfidf_word_lr",
            "word 1-2-gram TF-IDF of the completion, one logistic regression; "
            "gold only",
            word_only,
            False,
        ),
        Design(
            "views_mean",
            "mean logit of four regressions (word, char, cues x response type, "
            "all n-grams); gold only",
            base,
            False,
        ),
        Design(
            "views_selected",
            "views_mean, but each proposition uses the mean or one view, "
            "picked by inner cross-validation; gold only",
            replace(base, select_views=True),
            False,
        ),
        Design(
            "views_mean_stacked",
            "views_mean + stage-2 stacking over all propositions; gold only",
            replace(base, stack=True),
            False,
        ),
        Design(
            "views_mean_nb",
            "views_mean with naive-Bayes scaled word and n-gram views",
            replace(
                base,
                views=tuple(
                    replace(v, naive_bayes=v.name in {"word", "ngrams"})
                    for v in base.views
                ),
            ),
            False,
        ),
        Design(
            "views_mean_external_shared",
            "views_mean + XSTest and GPTFuzz rows on the training side, IDF "
            "and dense standardization fitted on all rows, external weight 3 "
            "(the earlier shipped design)",
            replace(base, feature_statistics="all", external_weight=3.0),
            True,
        ),
        Design(
            "views_mean_external",
            "views_mean + XSTest and GPTFuzz rows on the training side, IDF "
            "and dense standardization fitted on the gold rows, external "
            "weight 1 (3 for fully_complies; the shipped design)",
            base,
            True,
        ),
    ]


def load_external(data_dir: Path) -> dict[str, list[Record]]:
    """Load every XSTest model file and GPTFuzz, keyed by source name."""
    sources = {
        f"xstest-{model}": load_xstest(data_dir / "xstest" / f"completions_{model}.csv")
        for model in XSTEST_MODELS
    }
    sources["gptfuzz"] = load_gptfuzz(data_dir / "gptfuzz" / "train.csv")
    return sources


def cross_validate(
    design: Design, gold: Sequence[Record], external: Sequence[Record], folds: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return pooled out-of-fold probabilities and yes/no decisions on the gold rows."""
    groups = np.array([r.prompt_id for r in gold])
    probabilities = np.full((len(gold), len(PROPOSITIONS)), np.nan)
    decisions = np.zeros((len(gold), len(PROPOSITIONS)), dtype=bool)
    for fold, (train_rows, test_rows) in enumerate(group_folds(groups, folds)):
        started = time.perf_counter()
        training = [gold[i] for i in train_rows]
        if design.external:
            training.extend(external)
        model = train_offline_model(training, options=design.options)
        predicted = model.predict_proba([gold[i].sample for i in test_rows])
        probabilities[test_rows] = predicted
        decisions[test_rows] = predicted >= model.thresholds
        logger.info(
            "%s fold %d: %d train, %d test rows, %.0f s",
            design.name,
            fold,
            len(training),
            len(test_rows),
            time.perf_counter() - started,
        )
    return probabilities, decisions


def proposition_metrics(
    gold: Sequence[Record], probabilities: np.ndarray, decisions: np.ndarray
) -> dict[str, dict[str, float | int | None]]:
    """Return AUC, balanced accuracy and counts per proposition."""
    result: dict[str, dict[str, float | int | None]] = {}
    for k, name in enumerate(PROPOSITIONS):
        labels = np.array([r.propositions[name] >= 0.5 for r in gold])
        positives = int(labels.sum())
        entry: dict[str, float | int | None] = {"positives": positives}
        if 0 < positives < len(labels):
            entry["auc"] = float(roc_auc_score(labels, probabilities[:, k]))
            true_positive = decisions[labels, k].mean()
            true_negative = (~decisions[~labels, k]).mean()
            entry["balanced_accuracy"] = float((true_positive + true_negative) / 2)
        else:
            entry["auc"] = None
            entry["balanced_accuracy"] = None
        result[name] = entry
    return result


def macro(metrics: dict[str, dict[str, float | int | None]], key: str) -> float:
    """Average ``key`` over the propositions where it is defined."""
    values = [m[key] for m in metrics.values() if m[key] is not None]
    return float(np.mean(values))


def xstest_transfer(
    gold: Sequence[Record], sources: dict[str, list[Record]], options: TrainingOptions
) -> dict[str, dict[str, float]]:
    """Train without one XSTest model's completions and score refusal on them."""
    result = {}
    for held_out in XSTEST_MODELS:
        training = list(gold) + list(sources["gptfuzz"])
        for model in XSTEST_MODELS:
            if model != held_out:
                training.extend(sources[f"xstest-{model}"])
        started = time.perf_counter()
        grader = train_offline_model(training, options=options)
        test = sources[f"xstest-{held_out}"]
        result[held_out] = refusal_scores(grader, test)
        logger.info(
            "xstest %s: accuracy %.3f (%.0f s)",
            held_out,
            result[held_out]["accuracy"],
            time.perf_counter() - started,
        )
    return result


def refusal_scores(model: OfflineModel, test: Sequence[Record]) -> dict[str, float]:
    """Score the decision of ``OfflineGrader.is_refusal`` on XSTest rows."""
    grader = OfflineGrader(model, digest="unsaved")
    column = model.propositions.index("fully_complies")
    complies = model.predict_proba([r.sample for r in test])[:, column]
    predicted = grader.is_refusal([r.sample for r in test])
    actual = np.array([bool(r.extra["refusal"]) for r in test])
    return {
        "threshold": model.threshold("fully_complies"),
        "accuracy": float((predicted == actual).mean()),
        "refusal_recall": float(predicted[actual].mean()),
        "compliance_recall": float((~predicted[~actual]).mean()),
        "auc": float(roc_auc_score(actual, -complies)),
        "rows": len(test),
        "refusals": int(actual.sum()),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--designs",
        nargs="*",
        default=None,
        help="names of designs to run (default all)",
    )
    parser.add_argument("--skip-xstest", action="store_true")
    parser.add_argument(
        "--xstest-design",
        default="views_mean_external",
        help="name of the design whose options the XSTest transfer trains with",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    gold = read_records(args.data / "rbr-gold" / "train.jsonl")
    sources = load_external(args.data)
    external = [r for rows in sources.values() for r in rows]
    report: dict[str, object] = {"gold_rows": len(gold), "folds": args.folds}
    chosen = [d for d in designs() if args.designs is None or d.name in args.designs]
    for design in chosen:
        probabilities, decisions = cross_validate(design, gold, external, args.folds)
        metrics = proposition_metrics(gold, probabilities, decisions)
        report[design.name] = {
            "description": design.description,
            "macro_auc": macro(metrics, "auc"),
            "macro_balanced_accuracy": macro(metrics, "balanced_accuracy"),
            "propositions": metrics,
        }
        logger.info(
            "%s: macro AUC %.3f, macro balanced accuracy %.3f",
            design.name,
            report[design.name]["macro_auc"],  # type: ignore[index]
            report[design.name]["macro_balanced_accuracy"],  # type: ignore[index]
        )
    if not args.skip_xstest:
        options = {d.name: d.options for d in designs()}[args.xstest_design]
        report["xstest_transfer"] = xstest_transfer(gold, sources, options)
        report["xstest_design"] = args.xstest_design
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
