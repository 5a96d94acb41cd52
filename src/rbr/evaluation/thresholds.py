"""Per-proposition decision thresholds, saved as JSON with their provenance.

A threshold file maps each proposition to the probability at or above which
the grader's output counts as yes, for use with
:meth:`rbr.features.space.FeatureSpace.assign_classes`. Thresholds only make
sense for the grader and policy they were tuned with, so the file records the
grader identity, the policy hash and the data file they were tuned on, and
:meth:`PropositionThresholds.check_matches` compares them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rbr.data.io import atomic_output
from rbr.errors import RbrError
from rbr.policy.spec import Policy

THRESHOLDS_FORMAT = "rbr-proposition-thresholds"
THRESHOLDS_VERSION = 1
_REQUIRED_STRINGS = ("grader_identity", "policy_name", "policy_hash", "source")


class ThresholdsError(RbrError):
    """A thresholds file is invalid or does not match the grader or policy in use."""


@dataclass(frozen=True)
class PropositionThresholds:
    """Decision thresholds per proposition and where they came from.

    Attributes:
        thresholds: Proposition name to threshold in [0, 1]. A probability at
            or above the threshold counts as yes.
        grader_identity: :attr:`rbr.graders.base.Grader.identity` of the
            grader whose probabilities were thresholded.
        policy_name: Name of the policy.
        policy_hash: :attr:`rbr.policy.spec.Policy.content_hash` of the policy.
        source: Data file the thresholds were tuned on.
        method: How the thresholds were chosen, in words.
        n_tuning_cells: Number of labelled, scored cells each threshold was
            tuned on (0 means the default 0.5 was kept).
    """

    thresholds: dict[str, float]
    grader_identity: str
    policy_name: str
    policy_hash: str
    source: str
    method: str = ""
    n_tuning_cells: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": THRESHOLDS_FORMAT,
            "version": THRESHOLDS_VERSION,
            "grader_identity": self.grader_identity,
            "policy_name": self.policy_name,
            "policy_hash": self.policy_hash,
            "source": self.source,
            "method": self.method,
            "thresholds": dict(self.thresholds),
            "n_tuning_cells": dict(self.n_tuning_cells),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def save(self, path: str | Path) -> None:
        """Write the thresholds as JSON. The file appears only when complete."""
        text = self.to_json()
        with atomic_output(path) as handle:
            handle.write(text)

    @classmethod
    def load(cls, path: str | Path) -> PropositionThresholds:
        """Read and validate a thresholds file.

        Raises:
            ThresholdsError: Naming the file and the invalid key.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ThresholdsError(f"{path}: thresholds file not found") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ThresholdsError(
                f"{path}: invalid JSON at line {error.lineno}: {error.msg}"
            ) from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<memory>") -> PropositionThresholds:
        """Build thresholds from parsed JSON, validating every key.

        Raises:
            ThresholdsError: Naming ``source`` and the invalid key.
        """
        if not isinstance(data, Mapping):
            raise ThresholdsError(
                f"{source}: expected a JSON object, got {type(data).__name__}"
            )
        _check_header(data, source)
        for key in _REQUIRED_STRINGS:
            if not isinstance(data.get(key), str):
                raise ThresholdsError(
                    f"{source}: key {key!r} must be a string, got {data.get(key)!r}"
                )
        method = data.get("method", "")
        if not isinstance(method, str):
            raise ThresholdsError(f"{source}: key 'method' must be a string")
        return cls(
            thresholds=_parse_thresholds(data.get("thresholds"), source),
            grader_identity=data["grader_identity"],
            policy_name=data["policy_name"],
            policy_hash=data["policy_hash"],
            source=data["source"],
            method=method,
            n_tuning_cells=_parse_counts(data.get("n_tuning_cells", {}), source),
        )

    def check_matches(
        self,
        *,
        policy: Policy | None = None,
        grader_identity: str | None = None,
        allow_grader_mismatch: bool = False,
    ) -> None:
        """Raise unless the thresholds fit ``policy`` and the grader in use.

        Raises:
            ThresholdsError: When a proposition is unknown to the policy, the
                policy hash differs, or the grader identity differs (unless
                ``allow_grader_mismatch``).
        """
        if policy is not None:
            unknown = sorted(set(self.thresholds) - set(policy.propositions))
            if unknown:
                raise ThresholdsError(
                    f"thresholds tuned on {self.source} name propositions that policy "
                    f"{policy.name!r} does not have: {', '.join(unknown)}; tune "
                    "thresholds again with this policy"
                )
            if policy.content_hash and policy.content_hash != self.policy_hash:
                raise ThresholdsError(
                    f"thresholds were tuned with policy hash {self.policy_hash[:12]}, "
                    f"but policy {policy.name!r} has hash {policy.content_hash[:12]}; "
                    "tune thresholds again with this policy"
                )
        mismatch = (
            grader_identity is not None and grader_identity != self.grader_identity
        )
        if mismatch and not allow_grader_mismatch:
            raise ThresholdsError(
                f"thresholds were tuned for grader {self.grader_identity!r}, not "
                f"{grader_identity!r}; tune thresholds for this grader ('rbr grader "
                "eval --thresholds-out') or pass allow_grader_mismatch=True (CLI: "
                "--allow-grader-mismatch) to use them anyway"
            )


def _check_header(data: Mapping[str, Any], source: str) -> None:
    if data.get("format") != THRESHOLDS_FORMAT:
        raise ThresholdsError(
            f"{source}: key 'format' is {data.get('format')!r}, expected "
            f"{THRESHOLDS_FORMAT!r}; is this a thresholds file written by "
            "'rbr grader eval --thresholds-out'?"
        )
    if data.get("version") != THRESHOLDS_VERSION:
        raise ThresholdsError(
            f"{source}: thresholds file version {data.get('version')!r} is not "
            f"supported; this rbr reads version {THRESHOLDS_VERSION}"
        )


def _parse_thresholds(value: Any, source: str) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise ThresholdsError(
            f"{source}: key 'thresholds' must be a non-empty object of proposition "
            "name to threshold"
        )
    result = {}
    for name, threshold in value.items():
        is_number = isinstance(threshold, (int, float)) and not isinstance(
            threshold, bool
        )
        if not is_number or not math.isfinite(threshold) or not 0 <= threshold <= 1:
            raise ThresholdsError(
                f"{source}: thresholds.{name} must be a number in [0, 1], "
                f"got {threshold!r}"
            )
        result[str(name)] = float(threshold)
    return result


def _parse_counts(value: Any, source: str) -> dict[str, int]:
    if not isinstance(value, Mapping):
        raise ThresholdsError(f"{source}: key 'n_tuning_cells' must be an object")
    result = {}
    for name, count in value.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ThresholdsError(
                f"{source}: n_tuning_cells.{name} must be a count of 0 or more, "
                f"got {count!r}"
            )
        result[str(name)] = count
    return result
