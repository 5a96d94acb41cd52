"""Build the reward-fit report page from a held-out :class:`FitEvaluation`."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from rbr.reports import plots
from rbr.reports.html import HtmlReport
from rbr.reports.reward_fit import (
    VARIANTS,
    FitEvaluation,
    TypeEvaluation,
    centered_rewards,
    centering_groups,
    ranking_accuracy,
    split_matches_fit,
)

SUMMARY_COLUMNS = (
    "response type",
    "prompts",
    "rows",
    "pairs",
    "acc base",
    "acc base+RBR",
    "acc RBR",
    "fit's held-out acc",
)
HISTOGRAM_BINS = 30


def build_fit_report(
    evaluation: FitEvaluation,
    *,
    weights_path: str,
    data_path: str,
    title: str = "Reward fit report",
) -> HtmlReport:
    """Return the report page: summary, ranking tables, histograms and weights.

    ``report.data`` contains every number the page shows, under the same names.
    """
    report = HtmlReport(title)
    weights = evaluation.weights
    report.data = {
        "report": "reward_fit",
        "weights": weights_path,
        "data": data_path,
        "held_out": evaluation.split,
        "policy_name": weights.policy_name,
        "policy_hash": weights.policy_hash,
        "grader_identity": weights.grader_identity,
        "settings": dict(weights.settings),
        "base_reward": "rows" if evaluation.base_from_rows else "zero",
        "summary": [],
        "response_types": {},
        "skipped": dict(evaluation.skipped),
    }
    _add_introduction(report, evaluation, weights_path, data_path)
    sections = {}
    for name, item in evaluation.types.items():
        sections[name] = _type_data(item, weights.for_type(name))
        report.data["summary"].append(_summary_entry(item, sections[name]))
    report.data["response_types"] = sections
    report.add_heading("Summary")
    report.add_table(
        SUMMARY_COLUMNS,
        summary_rows(report.data["summary"]),
        caption="Held-out pairwise ranking accuracy (ties count as errors)",
    )
    _add_split_check(report, report.data["summary"])
    for name, item in evaluation.types.items():
        _add_type_section(report, item, sections[name])
    if evaluation.skipped:
        report.add_heading("Not evaluated")
        report.add_table(
            ("response type", "reason"), sorted(evaluation.skipped.items())
        )
    return report


def summary_rows(summary: list[dict[str, Any]]) -> list[list[Any]]:
    """Return the summary table rows (also printed by the command line)."""
    return [
        [
            entry["response_type"],
            entry["n_prompts"],
            entry["n_rows"],
            entry["n_pairs"],
            entry["accuracy_base"],
            entry["accuracy_total"],
            entry["accuracy_rbr"],
            entry["fit_held_out_accuracy"],
        ]
        for entry in summary
    ]


def _add_introduction(
    report: HtmlReport, evaluation: FitEvaluation, weights_path: str, data_path: str
) -> None:
    weights = evaluation.weights
    if evaluation.split == "fit":
        rows = (
            f"Rows: the prompts the fit held out of {data_path} (validation fraction "
            f"{weights.settings.get('validation_fraction')}, seed "
            f"{weights.settings.get('random_state')}), which the weights never saw."
        )
    else:
        rows = f"Rows: every row of {data_path}, a file separate from the fit."
    report.add_paragraph(
        f"Weights: {weights_path} (policy {weights.policy_name}, grader "
        f"{weights.grader_identity}, labels from {weights.settings.get('label_source')})."
    )
    report.add_paragraph(rows)
    if evaluation.base_from_rows:
        report.add_paragraph("Base reward: the rows' base_reward field.")
    else:
        report.add_paragraph(
            "Base reward: the rows have no base_reward field, so the base reward is 0 "
            "for every completion. Base + RBR then equals RBR alone, and the base "
            "reward alone ties every pair, which counts as a ranking error."
        )
    report.add_paragraph(
        "Centered reward: a completion's reward minus the mean reward of the "
        "best-labelled completions of its group. The group is the prompt for a fit "
        "with within-prompt pairs, and all held-out rows of the response type for a "
        "fit with cross-prompt pairs. Groups whose completions all share one rank "
        "are left out of the histograms."
    )


def _type_data(item: TypeEvaluation, entry: Any) -> dict[str, Any]:
    ranking = ranking_accuracy(item)
    groups = centering_groups(item)
    centered = {
        key: centered_rewards(groups, item.ranks, values)
        for key, values in item.rewards.items()
    }
    labels = np.array(item.labels)
    edges = {
        key: plots.histogram_edges([_present(centered[key])], HISTOGRAM_BINS)
        for key in VARIANTS
    }
    best_rank = int(item.ranks.min())
    histograms: dict[str, dict[str, Any]] = {}
    for label in item.label_order:
        mask = labels == label
        histograms[label] = {
            key: _centered_stats(centered[key][mask], edges[key]) for key in VARIANTS
        }
        if int(item.ranks[mask][0]) == best_rank:
            # Best-ranked completions spread around their own mean, so a share
            # above it measures no ranking error.
            for stats in histograms[label].values():
                stats["share_above_best"] = None
    counts = {label: int((labels == label).sum()) for label in item.label_order}
    return {
        "cross_prompt": item.cross_prompt,
        "n_prompts": int(np.unique(item.groups).size),
        "n_rows": len(item.labels),
        "n_unscored": item.n_unscored,
        "label_counts": counts,
        "ranking": ranking,
        "centered": histograms,
        "weights": dict(zip(entry.feature_names, entry.coef)),
    }


def _present(values: np.ndarray) -> np.ndarray:
    return values[~np.isnan(values)]


def _centered_stats(values: np.ndarray, edges: np.ndarray) -> dict[str, Any]:
    present = _present(values)
    counts, _ = np.histogram(present, bins=edges)
    if present.size == 0:
        stats = dict.fromkeys(("mean", "median", "min", "max", "share_above_best"))
    else:
        stats = {
            "mean": float(present.mean()),
            "median": float(np.median(present)),
            "min": float(present.min()),
            "max": float(present.max()),
            "share_above_best": float((present > 0).mean()),
        }
    return {
        "n": int(present.size),
        **stats,
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }


def _summary_entry(item: TypeEvaluation, section: dict[str, Any]) -> dict[str, Any]:
    overall = section["ranking"][-1]
    return {
        "response_type": item.response_type,
        "n_prompts": section["n_prompts"],
        "n_rows": section["n_rows"],
        "n_pairs": overall["n_pairs"],
        "accuracy_base": overall["accuracy_base"],
        "accuracy_total": overall["accuracy_total"],
        "accuracy_rbr": overall["accuracy_rbr"],
        "fit_held_out_accuracy": item.fit_accuracy,
        "split_matches_fit": split_matches_fit(item, overall),
    }


def _add_split_check(report: HtmlReport, summary: list[dict[str, Any]]) -> None:
    mismatched = [
        e["response_type"] for e in summary if e["split_matches_fit"] is False
    ]
    if mismatched:
        report.add_paragraph(
            "Warning: for "
            + ", ".join(mismatched)
            + " the held-out accuracy recomputed here differs from the fit's own "
            "figure, so these rows may not be the prompts the fit held out. Check that "
            "the data file, grader and policy are the ones the weights were fitted with."
        )
    elif any(e["split_matches_fit"] for e in summary):
        report.add_paragraph(
            "The recomputed base + RBR accuracy equals the fit's own held-out figure "
            "for every response type, which confirms that these are its held-out prompts."
        )


def _add_type_section(
    report: HtmlReport, item: TypeEvaluation, section: dict[str, Any]
) -> None:
    name = item.response_type
    slug = slugify(name)
    pairing = "across prompts" if item.cross_prompt else "within each prompt"
    report.add_heading(name)
    report.add_paragraph(
        f"{section['n_rows']} held-out completions to {section['n_prompts']} "
        f"prompts. Pairs are formed {pairing}, as in the fit."
        + (
            f" {section['n_unscored']} held-out rows with unscored propositions are "
            "left out."
            if section["n_unscored"]
            else ""
        )
    )
    report.add_table(
        (
            "better label",
            "worse label",
            "pairs",
            *(f"acc {t}" for t in VARIANTS.values()),
            "error base + RBR",
        ),
        [
            [
                r["better"],
                r["worse"],
                r["n_pairs"],
                r["accuracy_base"],
                r["accuracy_total"],
                r["accuracy_rbr"],
                r["error_total"],
            ]
            for r in section["ranking"]
        ],
        caption=f"{name}: pairwise ranking accuracy per label pair",
    )
    histograms = section["centered"]
    figure = plots.centered_histogram_grid(
        f"{name}: rewards centered on the best-labelled completion",
        VARIANTS,
        {
            label: {
                key: {"n": stats[key]["n"], **stats[key]["histogram"]}
                for key in VARIANTS
            }
            for label, stats in histograms.items()
        },
    )
    report.add_figure(
        figure,
        f"centered-{slug}",
        caption=f"{name}: one histogram per completion label (rows) and reward "
        "(columns). The dashed line marks the best-labelled completions' mean.",
    )
    report.add_table(
        (
            "label",
            "rows",
            *(f"mean {t}" for t in VARIANTS.values()),
            "share above best (base + RBR)",
        ),
        [
            [
                label,
                stats["total"]["n"],
                stats["base"]["mean"],
                stats["total"]["mean"],
                stats["rbr"]["mean"],
                stats["total"]["share_above_best"],
            ]
            for label, stats in histograms.items()
        ],
        caption=f"{name}: centered rewards per label. Share above best: share of "
        "a label's completions rewarded above the best-labelled ones (a ranking "
        "error), shown as a dash for the best label itself.",
    )
    weights = section["weights"]
    report.add_figure(
        plots.weights_bar_chart(
            f"{name}: fitted weights", list(weights), list(weights.values())
        ),
        f"weights-{slug}",
        caption=f"{name}: weight of each feature (propositions, then class probabilities).",
    )


def slugify(name: str) -> str:
    """Return a file-name part for ``name``: lower case, runs of other characters as '-'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "type"
