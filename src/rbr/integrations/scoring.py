"""Helpers the trainer entry points share: pipeline loading, routing modes, metrics.

The reward settings file (see :mod:`rbr.reward.config`) is named by the
environment variable :data:`CONFIG_ENV` when a trainer loads the reward from a
file path and cannot pass arguments (verl, OpenRLHF). Each process builds the
pipeline once and keeps it.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from rbr.integrations.batching import BatchingScorer
from rbr.integrations.convert import IntegrationError
from rbr.policy.spec import CLASS_ORDER
from rbr.reward.config import RewardSettings, build_pipeline
from rbr.reward.pipeline import RewardPipeline
from rbr.reward.routing import UnlabelledMode
from rbr.reward.rule_based import RewardBreakdown

logger = logging.getLogger(__name__)

CONFIG_ENV = "RBR_REWARD_CONFIG"
"""Environment variable with the path of the reward settings YAML file."""

UNSCORED_ENV = "RBR_UNSCORED_RBR"
"""Environment variable with the RBR term used when the grader fails on a sample."""

UNLABELLED_ENV = "RBR_UNLABELLED"
"""Environment variable choosing the :data:`Unlabelled` mode (default ``route``)."""

Unlabelled = Literal["route", "no_rbr"]
"""The handling of prompts that carry neither a response type nor a category.
``route`` sends them to the configured prompt classifier, which is an error
without one. ``no_rbr`` gives them no RBR term, only the base reward.
:func:`router_mode` turns it into the router's
:data:`rbr.reward.routing.UnlabelledMode`."""

UNLABELLED_MODES: tuple[str, ...] = ("route", "no_rbr")

DEFAULT_LOGGED_PROPOSITIONS: tuple[str, ...] = (
    "disallowed_content",
    "fully_complies",
    "partially_complies",
    "apology",
    "inability_to_comply",
    "judgement",
    "encourage_professional_help",
)
"""Propositions whose mean probability the trainer integrations log by default."""


def check_unlabelled(mode: str) -> Unlabelled:
    """Return ``mode`` when it is one of :data:`UNLABELLED_MODES`.

    Raises:
        IntegrationError: For any other value.
    """
    if mode not in UNLABELLED_MODES:
        raise IntegrationError(
            f"unknown unlabelled mode {mode!r}; use one of {', '.join(UNLABELLED_MODES)}"
        )
    return mode  # type: ignore[return-value]


def router_mode(mode: str) -> UnlabelledMode:
    """Return the :meth:`rbr.reward.routing.Router.route` mode for trainer ``mode``.

    ``route`` becomes ``classify``; ``no_rbr`` stays as it is.

    Raises:
        IntegrationError: When ``mode`` is not one of :data:`UNLABELLED_MODES`.
    """
    return "classify" if check_unlabelled(mode) == "route" else "no_rbr"


def reward_value(breakdown: RewardBreakdown, *, rbr_only: bool) -> float | None:
    """Return the number a trainer gets for one breakdown.

    With ``rbr_only`` it is the RBR term, or None where no RBR applies or the
    grader failed. Otherwise it is the total: base plus RBR term, the base
    alone without a response type, and None where the grader failed.
    """
    return breakdown.rbr if rbr_only else breakdown.total


def total_or_fallback(breakdown: RewardBreakdown, unscored_rbr: float) -> float:
    """Return the total reward, or ``base + unscored_rbr`` when it is unscored.

    It serves trainers that need a number for every sample (verl, OpenRLHF),
    and the reward server returns the same for unscored samples. Unscored
    samples are counted, with a warning at the 1st, 10th, 100th, ... one.
    """
    if breakdown.total is not None:
        return breakdown.total
    _count_unscored()
    return breakdown.base + unscored_rbr


def reward_log(breakdown: RewardBreakdown, value: float) -> dict[str, float]:
    """Return the per-sample log values that go with reward ``value``.

    Keys: ``rbr`` (the RBR term in ``value``: the fallback term when the
    sample is unscored, 0.0 without a response type), ``base``,
    ``rbr_applied`` and ``rbr_unscored`` (1.0 or 0.0), the keys ``rbr serve``
    returns to OpenRLHF.
    """
    applied = breakdown.response_type is not None
    unscored = applied and breakdown.total is None
    if breakdown.rbr is not None:
        rbr = breakdown.rbr
    else:
        rbr = value - breakdown.base if unscored else 0.0
    return {
        "rbr": rbr,
        "base": breakdown.base,
        "rbr_applied": 1.0 if applied else 0.0,
        "rbr_unscored": 1.0 if unscored else 0.0,
    }


_unscored_seen = 0
_unscored_lock = threading.Lock()


def _count_unscored() -> None:
    global _unscored_seen
    with _unscored_lock:
        _unscored_seen += 1
        seen = _unscored_seen
    if seen == 10 ** (len(str(seen)) - 1):
        logger.warning(
            "%d samples so far had a proposition the grader could not score; "
            "each got its base reward plus %s (see the rbr_unscored metric)",
            seen,
            UNSCORED_ENV,
        )


def summarize(
    breakdowns: Sequence[RewardBreakdown], propositions: Iterable[str] | None = None
) -> dict[str, float]:
    """Return the mean reward components of a batch, for trainer logs.

    Keys: ``applied_fraction`` (share with a response type) and
    ``unscored_fraction`` (share of those the grader failed on). Means of
    ``total``, ``base`` and ``rbr_term``, and ``class/<class>`` (mean class
    probabilities). Per response type (lowercase, with underscores):
    ``<response type>/rbr_term`` and ``<response type>/class/<class>``.
    ``prop/<name>`` for each requested proposition, or for every graded one
    when ``propositions`` is None. A key is left out when no sample
    contributes to it.
    """
    if not breakdowns:
        return {}
    metrics: dict[str, float] = {}
    applied = [b for b in breakdowns if b.response_type is not None]
    scored = [b for b in applied if b.rbr is not None]
    metrics["applied_fraction"] = len(applied) / len(breakdowns)
    if applied:
        metrics["unscored_fraction"] = 1.0 - len(scored) / len(applied)
    _put_mean(metrics, "total", [b.total for b in breakdowns])
    _put_mean(metrics, "base", [b.base for b in breakdowns])
    _put_mean(metrics, "rbr_term", [b.rbr for b in scored])
    _put_classes(metrics, "class", scored)
    for name in sorted({b.response_type for b in scored if b.response_type}):
        group = [b for b in scored if b.response_type == name]
        key = metric_key(name)
        _put_mean(metrics, f"{key}/rbr_term", [b.rbr for b in group])
        _put_classes(metrics, f"{key}/class", group)
    if propositions is None:
        propositions = sorted({p for b in applied for p in b.propositions})
    for name in propositions:
        _put_mean(metrics, f"prop/{name}", [b.propositions.get(name) for b in applied])
    return metrics


def top_class(breakdown: RewardBreakdown) -> str | None:
    """Return the most probable completion class, or None without class probabilities."""
    if not breakdown.classes:
        return None
    return max(breakdown.classes, key=lambda name: breakdown.classes[name])


def metric_key(name: str) -> str:
    """Return ``name`` lowercased with runs of other characters as one underscore."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _put_mean(
    metrics: dict[str, float], key: str, values: Iterable[float | None]
) -> None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    if present:
        metrics[key] = sum(present) / len(present)


def _put_classes(
    metrics: dict[str, float], prefix: str, group: Sequence[RewardBreakdown]
) -> None:
    for name in CLASS_ORDER:
        _put_mean(metrics, f"{prefix}/{name}", [b.classes.get(name) for b in group])


_SCORERS: dict[tuple[Path, str], BatchingScorer] = {}
_BASE_PIPELINES: dict[Path, RewardPipeline] = {}
_SCORERS_LOCK = threading.Lock()


def settings_path(config_path: str | os.PathLike[str] | None) -> Path:
    """Return the settings file: ``config_path``, else ``$RBR_REWARD_CONFIG``.

    Raises:
        IntegrationError: When neither is set or the file does not exist.
    """
    value = config_path if config_path is not None else os.environ.get(CONFIG_ENV)
    if not value:
        raise IntegrationError(
            f"no reward settings file: set {CONFIG_ENV} to the path of a reward "
            "settings YAML file (keys weights, grader, ...)"
        )
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        origin = "config_path" if config_path is not None else CONFIG_ENV
        raise IntegrationError(
            f"reward settings file {path} not found (from {origin}); check the path"
        )
    return path


def shared_scorer(
    config_path: str | os.PathLike[str] | None = None, unlabelled: str = "route"
) -> BatchingScorer:
    """Return this process's scorer for a settings file, building it once.

    One pipeline is built per settings file; each ``unlabelled`` mode gets
    its own :class:`BatchingScorer` over it, which passes the mode to
    :meth:`RewardPipeline.score`.

    Raises:
        IntegrationError: When no settings file is given or found, or the
            mode is unknown.
        RewardConfigError, PolicyError, WeightsError, GraderError: When the
            settings or a file they name are invalid.
    """
    path = settings_path(config_path)
    mode = check_unlabelled(unlabelled)
    with _SCORERS_LOCK:
        scorer = _SCORERS.get((path, mode))
        if scorer is None:
            pipeline = _BASE_PIPELINES.get(path)
            if pipeline is None:
                logger.info("building reward pipeline from %s", path)
                pipeline = build_pipeline(RewardSettings.load(path))
                _BASE_PIPELINES[path] = pipeline
            scorer = BatchingScorer(pipeline, unlabelled=router_mode(mode))
            _SCORERS[(path, mode)] = scorer
        return scorer


def close_shared_scorers() -> None:
    """Close and forget every pipeline :func:`shared_scorer` built."""
    with _SCORERS_LOCK:
        pipelines = list(_BASE_PIPELINES.values())
        _BASE_PIPELINES.clear()
        _SCORERS.clear()
    for pipeline in pipelines:
        pipeline.close()


def env_unscored_rbr() -> float:
    """Return ``$RBR_UNSCORED_RBR`` as a float (0.0 when unset).

    Raises:
        IntegrationError: When it is set but not a finite number.
    """
    value = os.environ.get(UNSCORED_ENV, "").strip()
    if not value:
        return 0.0
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise IntegrationError(
            f"{UNSCORED_ENV}={value!r} is not a finite number; set it to the RBR "
            "term unscored samples should get, such as 0 or -1"
        )
    return number


def env_unlabelled() -> Unlabelled:
    """Return ``$RBR_UNLABELLED`` (default ``route``), checked."""
    return check_unlabelled(os.environ.get(UNLABELLED_ENV, "route").strip() or "route")
