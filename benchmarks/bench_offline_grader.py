"""Measure the throughput of the offline grader (all 23 propositions per completion).

Usage::

    python benchmarks/bench_offline_grader.py --data ../shared/data \
        --out benchmarks/results/offline_grader_bench.json

Grades the gold completions and the XSTest completions of all three models
(1,701 completions, a mix of short refusals and long answers) in batches,
after a warm-up batch, with the shipped artifact unless ``--artifact`` names
another. BLAS threads are capped at ``--threads`` before numpy loads.
The timed path is ``OfflineGrader.grade``, the same code the accuracy
evaluation runs, so the measured speed and accuracy belong to one model.
"""

from __future__ import annotations

import argparse
import os
import sys

# Thread caps must be set before numpy is imported.
_THREADS = "2"
if "--threads" in sys.argv:
    _THREADS = sys.argv[sys.argv.index("--threads") + 1]
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, _THREADS)

import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from rbr.data import Sample, read_records  # noqa: E402
from rbr.data.external import load_xstest  # noqa: E402
from rbr.graders.offline import PROPOSITIONS, OfflineGrader  # noqa: E402
from rbr.policy.spec import Proposition  # noqa: E402

logger = logging.getLogger("bench_offline_grader")


def load_samples(data_dir: Path) -> tuple[list[Sample], list[Sample]]:
    """Return the gold completions and the XSTest completions as samples."""
    gold = [r.sample for r in read_records(data_dir / "rbr-gold" / "train.jsonl")]
    xstest = []
    for model in ("llama2orig", "mistralinstruct", "gpt4"):
        path = data_dir / "xstest" / f"completions_{model}.csv"
        xstest.extend(r.sample for r in load_xstest(path))
    return gold, xstest


def measure(
    grader: OfflineGrader,
    samples: Sequence[Sample],
    *,
    batch_size: int,
    min_seconds: float,
) -> dict[str, float]:
    """Grade ``samples`` in batches until ``min_seconds`` pass; return rates."""
    propositions = [Proposition(name=n, instruction=n) for n in PROPOSITIONS]
    grader.grade(samples[:batch_size], propositions)
    graded = 0
    batch_seconds = []
    started = time.perf_counter()
    while time.perf_counter() - started < min_seconds:
        for start in range(0, len(samples), batch_size):
            batch = samples[start : start + batch_size]
            batch_started = time.perf_counter()
            result = grader.grade(batch, propositions)
            batch_seconds.append(time.perf_counter() - batch_started)
            graded += len(batch)
            if np.isnan(result.probabilities).any():
                raise RuntimeError("the offline grader left a proposition unscored")
    elapsed = time.perf_counter() - started
    return {
        "completions": graded,
        "seconds": elapsed,
        "completions_per_second": graded / elapsed,
        "median_batch_ms": float(np.median(batch_seconds) * 1000),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--artifact", type=Path, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0, help="time per run")
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    grader = OfflineGrader.load(args.artifact)
    gold, xstest = load_samples(args.data)
    samples = gold + xstest
    lengths = np.array([len(s.completion) for s in samples])
    report = {
        "artifact": grader.identity,
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs visible, BLAS threads {args.threads}",
        "samples": len(samples),
        "completion_chars_mean": float(lengths.mean()),
        "completion_chars_max": int(lengths.max()),
        "propositions": len(PROPOSITIONS),
        "batch_size": args.batch_size,
        "all": measure(
            grader, samples, batch_size=args.batch_size, min_seconds=args.seconds
        ),
        "gold_only": measure(
            grader, gold, batch_size=args.batch_size, min_seconds=args.seconds
        ),
    }
    logger.info(
        "%.0f completions/s over all samples", report["all"]["completions_per_second"]
    )
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
