"""Build a :class:`RewardPipeline` from one settings mapping or YAML file.

The reward server, the TRL and verl entry points all start from the same
settings, so a reward behaves the same wherever it runs::

    weights: runs/weights.json        # from 'rbr fit' (required)
    policy: null                      # default: the built-in policy
    grader: {kind: offline}           # any grader kind and its options
    base_reward: {kind: none}         # none | local | http
    classifier: {kind: none}          # none | offline | openai
    base_normalization: none          # none | center | standardize
    base_scale: 1.0
    allow_grader_mismatch: false
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from rbr.errors import GraderError, RbrError, WeightsError
from rbr.fitting.weights import RBRWeights
from rbr.graders.factory import GraderOptions, check_grader_settings, make_grader
from rbr.policy import Policy, load_default_policy, load_policy
from rbr.policy.yaml_io import read_yaml
from rbr.reward.pipeline import BASE_NORMALIZATIONS, RewardPipeline
from rbr.reward.routing import Router
from rbr.reward.rule_based import RuleBasedReward


class RewardConfigError(RbrError):
    """Reward settings with a missing key or an invalid value."""


class RewardSettings(BaseModel):
    """Everything needed to build a reward pipeline.

    Attributes:
        weights: Weights JSON written by ``rbr fit``.
        policy: Policy YAML; None uses the built-in policy.
        grader: ``kind`` plus the grader's options, as in
            :class:`rbr.graders.factory.GraderOptions` (``cache_path``,
            ``use_cache``, ``few_shot_from`` and ``few_shot_k`` are read from
            here too; every other key goes to the grader).
        base_reward: ``kind`` (``none``, ``local`` or ``http``) and its options.
        classifier: ``kind`` (``none``, ``offline`` or ``openai``) and its
            options; it decides prompts that arrive without a response type
            or category.
        base_normalization: Per-prompt adjustment of the base reward.
        base_scale: Factor on the base reward.
        allow_grader_mismatch: Accept weights fitted with another grader.
    """

    model_config = ConfigDict(extra="forbid")

    weights: Path
    policy: Path | None = None
    grader: dict[str, Any] = Field(default_factory=lambda: {"kind": "offline"})
    base_reward: dict[str, Any] = Field(default_factory=lambda: {"kind": "none"})
    classifier: dict[str, Any] = Field(default_factory=lambda: {"kind": "none"})
    base_normalization: str = "none"
    base_scale: float = 1.0
    allow_grader_mismatch: bool = False
    _source: str = PrivateAttr(default="settings")

    @property
    def source(self) -> str:
        """The settings file these settings were read from, or ``settings``."""
        return self._source

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "settings") -> RewardSettings:
        """Validate a mapping, naming the offending key on error.

        Raises:
            RewardConfigError: For unknown keys, missing keys or wrong types.
        """
        if not isinstance(data, dict):
            raise RewardConfigError(
                f"{source}: expected a mapping of reward settings, got "
                f"{type(data).__name__}"
            )
        try:
            settings = cls.model_validate(data)
        except ValidationError as error:
            first = error.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "<root>"
            message = first["msg"]
            if key in ("weights", "policy") and first["type"] != "missing":
                value = first.get("input")
                message = f"expected a file path, got {type(value).__name__} {value!r}"
            raise RewardConfigError(
                f"{source}: key {key!r}: {message}; known keys are "
                f"{', '.join(cls.model_fields)}"
            ) from None
        if settings.base_normalization not in BASE_NORMALIZATIONS:
            raise RewardConfigError(
                f"{source}: key 'base_normalization': unknown value "
                f"{settings.base_normalization!r}; use one of "
                f"{', '.join(BASE_NORMALIZATIONS)}"
            )
        if not math.isfinite(settings.base_scale):
            raise RewardConfigError(
                f"{source}: key 'base_scale': {settings.base_scale!r} is not a "
                "finite number; use a number such as 1.0"
            )
        grader = dict(settings.grader)
        kind = grader.pop("kind", "offline")
        for key in SHARED_GRADER_KEYS:
            grader.pop(key, None)
        try:
            check_grader_settings(kind, grader)
        except GraderError as error:
            raise RewardConfigError(f"{source}: {error}") from None
        settings._source = source
        return settings

    @classmethod
    def load(cls, path: str | Path) -> RewardSettings:
        """Read settings from a YAML (or JSON) file; relative paths in it are
        taken relative to the file's folder."""
        path = Path(path)
        if not path.is_file():
            raise RewardConfigError(
                f"reward settings file {str(path)!r} not found; pass the path of a "
                "YAML file with the keys weights, grader, base_reward, ... (see "
                "docs/rl.md)"
            )
        settings = cls.from_mapping(read_yaml(path), source=str(path))
        return settings.relative_to(path.parent)

    def relative_to(self, folder: Path) -> RewardSettings:
        """Return a copy whose relative file paths are resolved against ``folder``.

        Covers ``weights``, ``policy`` and the keys of :data:`PATH_KEYS` inside
        ``grader``, ``classifier`` and ``base_reward``.
        """
        policy = self.policy
        if policy is not None:
            policy = _resolve(policy, folder)
        # model_copy keeps the private source attribute.
        return self.model_copy(
            update={
                "weights": _resolve(self.weights, folder),
                "policy": policy,
                "grader": _resolve_paths(self.grader, folder),
                "classifier": _resolve_paths(self.classifier, folder),
                "base_reward": _resolve_paths(self.base_reward, folder),
            }
        )


PATH_KEYS = (
    "artifact_path",
    "model_path",
    "tokenizer_path",
    "cache_path",
    "few_shot_from",
)
"""Option keys whose values are file or folder paths."""

SHARED_GRADER_KEYS = ("cache_path", "use_cache", "few_shot_from", "few_shot_k")
"""Keys of ``grader`` read by the settings for every kind, not by the grader."""


def _resolve(path: Path, folder: Path) -> Path:
    return path if path.is_absolute() else folder / path


def _resolve_paths(spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    resolved = dict(spec)
    for key in PATH_KEYS:
        value = resolved.get(key)
        if isinstance(value, (str, Path)) and str(value):
            resolved[key] = str(_resolve(Path(value), folder))
    return resolved


def build_pipeline(settings: RewardSettings | dict[str, Any]) -> RewardPipeline:
    """Load the policy, weights, grader, base reward and classifier.

    Raises:
        RewardConfigError: When the settings are invalid.
        PolicyError, WeightsError, GraderError: When a file or grader fails
            to load.
    """
    if isinstance(settings, dict):
        settings = RewardSettings.from_mapping(settings)
    from rbr.reward.base_models import make_base_reward
    from rbr.reward.classifiers import make_prompt_classifier

    policy = _load_policy(settings)
    weights = _load_weights(settings)
    grader = make_grader(_grader_options(settings.grader, policy))
    try:
        reward = RuleBasedReward(
            policy,
            weights,
            grader,
            allow_grader_mismatch=settings.allow_grader_mismatch,
        )
        classifier = make_prompt_classifier(dict(settings.classifier), policy)
        base = make_base_reward(dict(settings.base_reward))
    except BaseException:
        grader.close()
        raise
    return RewardPipeline(
        reward,
        router=Router(policy, classifier),
        base_reward=base,
        base_normalization=settings.base_normalization,
        base_scale=settings.base_scale,
    )


def _load_policy(settings: RewardSettings) -> Policy:
    if settings.policy is None:
        return load_default_policy()
    if not settings.policy.is_file():
        raise RewardConfigError(
            f"{settings.source}: key 'policy': policy file {str(settings.policy)!r} "
            "not found; fix the path (a relative path is read from the settings "
            "file's folder) or remove the key to use the built-in policy"
        )
    return load_policy(settings.policy)


def _load_weights(settings: RewardSettings) -> RBRWeights:
    if not settings.weights.is_file():
        raise RewardConfigError(
            f"{settings.source}: key 'weights': weights file "
            f"{str(settings.weights)!r} not found; fix the path (a relative path "
            "is read from the settings file's folder) or run 'rbr fit' to write it"
        )
    try:
        return RBRWeights.load(settings.weights)
    except WeightsError as error:
        raise WeightsError(f"{settings.source}: key 'weights': {error}") from None


def _grader_options(spec: dict[str, Any], policy: Any) -> GraderOptions:
    settings = dict(spec)
    kind = settings.pop("kind", "offline")
    cache_path = settings.pop("cache_path", None)
    few_shot_from = settings.pop("few_shot_from", None)
    return GraderOptions(
        kind=kind,
        policy=policy,
        cache_path=Path(cache_path) if cache_path else None,
        use_cache=bool(settings.pop("use_cache", True)),
        few_shot_from=Path(few_shot_from) if few_shot_from else None,
        few_shot_k=int(settings.pop("few_shot_k", 4)),
        settings=settings,
    )
