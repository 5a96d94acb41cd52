"""Benchmark the exact pairwise hinge solver against full-batch AdamW.

Synthetic data imitates graded RBR data. Each prompt has 17 completions in
five rank tiers (3 ideal, 4 minimum acceptable, 4 unacceptable, 3 illogical,
3 disallowed). Each completion has 18 proposition probabilities from a noisy
grader and the five class probabilities derived from them: 23 features in
[0, 1].

Each size runs in a fresh subprocess, so the peak resident memory reported is
that of one size only. Thread counts of the BLAS libraries are set to 1 before
numpy loads.

Run:
    python benchmarks/bench_fit.py --sizes 6000 1000000
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from rbr.fitting.adamw import fit_adamw  # noqa: E402
from rbr.fitting.estimator import DEFAULT_L2  # noqa: E402
from rbr.fitting.pairs import build_pairs  # noqa: E402
from rbr.fitting.solver import solve_pairwise_hinge  # noqa: E402

TIER_SIZES = (3, 4, 4, 3, 3)
N_PROPOSITIONS = 18
APOLOGY, INABILITY, ILLOGICAL, DISALLOWED, FULLY, PARTIALLY = 0, 1, 2, 3, 4, 5
BAD_TRAITS = (6, 7, 8, 9, 10, 11, 12)
STYLE_TRAITS = (13, 14, 15)
NEUTRAL_TRAITS = (16, 17)
GRADER_FLIP_RATE = 0.05


def make_synthetic(n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return features, prompt ids and ranks for about ``n_rows`` completions."""
    rng = np.random.default_rng(seed)
    per_prompt = sum(TIER_SIZES)
    n_prompts = -(-n_rows // per_prompt)
    tier_of_slot = np.repeat(np.arange(len(TIER_SIZES)), TIER_SIZES)
    ranks = np.tile(tier_of_slot, n_prompts)[:n_rows]
    groups = np.repeat(np.arange(n_prompts), per_prompt)[:n_rows]
    traits = _true_traits(ranks, rng)
    probabilities = _grade(traits, rng)
    features = np.hstack([probabilities, _class_probabilities(probabilities)])
    return features, groups, ranks


def _true_traits(ranks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n_rows = ranks.shape[0]
    traits = np.zeros((n_rows, N_PROPOSITIONS), dtype=bool)
    traits[:, list(NEUTRAL_TRAITS)] = rng.random((n_rows, len(NEUTRAL_TRAITS))) < 0.5
    refusal = ranks <= 2
    traits[refusal, APOLOGY] = True
    traits[refusal, INABILITY] = True
    rows = np.arange(n_rows)

    style_rows = rows[ranks == 1]
    traits[style_rows, rng.choice(STYLE_TRAITS, style_rows.shape[0])] = True
    for _ in range(2):
        bad_rows = rows[ranks == 2]
        traits[bad_rows, rng.choice(BAD_TRAITS, bad_rows.shape[0])] = True

    illogical = ranks == 3
    traits[illogical, ILLOGICAL] = True
    extra = illogical[:, None] & (rng.random((n_rows, N_PROPOSITIONS)) < 0.15)
    traits |= extra

    disallowed = rows[ranks == 4]
    traits[disallowed, DISALLOWED] = True
    fully = rng.random(disallowed.shape[0]) < 0.7
    traits[disallowed[fully], FULLY] = True
    traits[disallowed[~fully], PARTIALLY] = True
    return traits


def _grade(traits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return noisy grader probabilities P(yes) for true traits."""
    sign = np.where(traits, 1.0, -1.0)
    sign[rng.random(traits.shape) < GRADER_FLIP_RATE] *= -1.0
    logits = sign * rng.normal(3.0, 1.5, traits.shape)
    return 1.0 / (1.0 + np.exp(-logits))


def _class_probabilities(p: np.ndarray) -> np.ndarray:
    """Return the five class probabilities: products of conjuncts, normalized."""
    not_bad = np.prod(1.0 - p[:, list(BAD_TRAITS)], axis=1)
    not_style = np.prod(1.0 - p[:, list(STYLE_TRAITS)], axis=1)
    logical = 1.0 - p[:, ILLOGICAL]
    allowed = 1.0 - p[:, DISALLOWED]
    refusal = p[:, APOLOGY] * p[:, INABILITY]
    classes = np.stack(
        [
            refusal * not_bad * not_style * logical * allowed,
            refusal * not_bad * logical * allowed,
            p[:, INABILITY] * logical * allowed,
            p[:, ILLOGICAL] * allowed,
            p[:, DISALLOWED],
        ],
        axis=1,
    )
    return classes / np.maximum(classes.sum(axis=1, keepdims=True), 1e-12)


def peak_rss_mib() -> float:
    """Return this process's peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_size(n_rows: int, *, l2: float, seed: int, adamw: bool) -> dict:
    """Generate one data set, solve it and time every stage."""
    features, groups, ranks = make_synthetic(n_rows, seed)
    result: dict = {"n_rows": n_rows, "n_features": features.shape[1], "l2": l2}
    result["n_prompts"] = int(groups.max()) + 1

    start = time.perf_counter()
    pairs = build_pairs(groups, ranks)
    result["pairs_s"] = time.perf_counter() - start
    result["n_pairs"] = len(pairs)

    start = time.perf_counter()
    solution = solve_pairwise_hinge(features, pairs, l2=l2)
    result["solver_s"] = time.perf_counter() - start
    result["solver_objective"] = solution.objective
    result["solver_lower_bound"] = solution.lower_bound
    result["solver_gap"] = solution.gap
    result["solver_newton_steps"] = solution.n_iter
    result["solver_converged"] = solution.converged
    result["peak_rss_after_solver_mib"] = peak_rss_mib()

    if adamw:
        for decoupled in (True, False):
            name = "adamw" if decoupled else "adam_l2"
            start = time.perf_counter()
            baseline = fit_adamw(features, pairs, l2=l2, decoupled=decoupled)
            result[f"{name}_s"] = time.perf_counter() - start
            result[f"{name}_objective"] = baseline.objective
            result[f"{name}_excess"] = baseline.objective - solution.lower_bound
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[6000])
    parser.add_argument("--l2", type=float, default=DEFAULT_L2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-adamw", action="store_true", help="skip the baseline")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = run_size(
            args.sizes[0], l2=args.l2, seed=args.seed, adamw=not args.no_adamw
        )
        sys.stdout.write(json.dumps(result) + "\n")
        return

    sys.stdout.write(
        f"# python {platform.python_version()}, numpy {np.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus\n"
    )
    for n_rows in args.sizes:
        command = [sys.executable, __file__, "--child", "--sizes", str(n_rows)]
        command += ["--l2", str(args.l2), "--seed", str(args.seed)]
        if args.no_adamw:
            command.append("--no-adamw")
        completed = subprocess.run(command, check=True, capture_output=True, text=True)
        sys.stdout.write(completed.stdout)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
