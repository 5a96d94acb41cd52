"""Fitted RBR weights: one linear vector per response type, saved as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from rbr.data.io import atomic_output, json_safe
from rbr.errors import WeightsError
from rbr.features.space import FeatureSpace
from rbr.policy.spec import Policy

FORMAT_VERSION = 1


@dataclass
class ResponseTypeWeights:
    """The weights of one response type and the report of the fit that made them."""

    response_type: str
    feature_names: list[str]
    coef: list[float]
    report: dict[str, Any] = field(default_factory=dict)

    def as_array(self) -> np.ndarray:
        return np.asarray(self.coef, dtype=float)


@dataclass
class RBRWeights:
    """Weights for every fitted response type of one policy and one grader."""

    policy_name: str
    policy_hash: str
    grader_identity: str
    response_types: dict[str, ResponseTypeWeights]
    settings: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def for_type(self, response_type: str) -> ResponseTypeWeights:
        """Return the weights of ``response_type``.

        Raises:
            WeightsError: When the weights have no entry for it.
        """
        if response_type in self.response_types:
            return self.response_types[response_type]
        known = ", ".join(repr(n) for n in self.response_types) or "none"
        if response_type in self.skipped:
            raise WeightsError(
                f"no weights for response type {response_type!r}: the fit skipped it "
                f"because {self.skipped[response_type]}"
            )
        raise WeightsError(
            f"no weights for response type {response_type!r} (fitted: {known}); "
            "fit with data that includes this response type"
        )

    def check_compatible(
        self,
        policy: Policy,
        grader_identity: str | None = None,
        *,
        source: str = "weights",
    ) -> None:
        """Raise unless these weights were fitted for ``policy`` (and the grader).

        Raises:
            WeightsError: When the policy content hash, a feature layout or the
                grader identity differs.
        """
        if self.policy_hash != policy.content_hash:
            raise WeightsError(
                f"{source} were fitted for policy {self.policy_name!r} "
                f"(hash {self.policy_hash[:12]}), but the policy in use is "
                f"{policy.name!r} (hash {policy.content_hash[:12]}); refit the weights "
                "with this policy or load the policy they were fitted with"
            )
        for name, entry in self.response_types.items():
            space = FeatureSpace(policy, name)
            if list(space.feature_names) != entry.feature_names:
                raise WeightsError(
                    f"{source}: feature layout of {name!r} differs from the policy's; "
                    "refit the weights"
                )
        if grader_identity is not None and grader_identity != self.grader_identity:
            raise WeightsError(
                f"{source} were fitted with grader {self.grader_identity!r}, but the "
                f"grader in use is {grader_identity!r}; refit with this grader, or pass "
                "allow_grader_mismatch=True (CLI: --allow-grader-mismatch; reward "
                "settings: allow_grader_mismatch: true) to accept rewards tuned for "
                "another grader"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "policy_name": self.policy_name,
            "policy_hash": self.policy_hash,
            "grader_identity": self.grader_identity,
            "settings": self.settings,
            "skipped": self.skipped,
            "response_types": {k: asdict(v) for k, v in self.response_types.items()},
        }

    def save(self, path: str | Path) -> None:
        """Write the weights as JSON; the file appears only when fully written."""
        with atomic_output(path) as handle:
            self.dump(handle)

    def dump(self, handle: IO[str]) -> None:
        """Write the weights as JSON to an open text file."""
        json.dump(json_safe(self.to_dict()), handle, indent=2)
        handle.write("\n")

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<memory>") -> RBRWeights:
        """Build weights from a parsed JSON document.

        Raises:
            WeightsError: Naming the missing or malformed key.
        """
        if not isinstance(data, dict):
            raise WeightsError(f"{source}: expected a JSON object of RBR weights")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise WeightsError(
                f"{source}: unsupported format_version {version!r}; expected "
                f"{FORMAT_VERSION}"
            )
        try:
            types = {
                name: ResponseTypeWeights(
                    response_type=entry["response_type"],
                    feature_names=list(entry["feature_names"]),
                    coef=[float(x) for x in entry["coef"]],
                    report=dict(entry.get("report", {})),
                )
                for name, entry in data["response_types"].items()
            }
            weights = cls(
                policy_name=str(data["policy_name"]),
                policy_hash=str(data["policy_hash"]),
                grader_identity=str(data["grader_identity"]),
                response_types=types,
                settings=dict(data.get("settings", {})),
                skipped=dict(data.get("skipped", {})),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise WeightsError(
                f"{source}: malformed weights file ({error!r})"
            ) from None
        for name, entry in types.items():
            if len(entry.coef) != len(entry.feature_names):
                raise WeightsError(
                    f"{source}: response type {name!r} has {len(entry.coef)} weights "
                    f"for {len(entry.feature_names)} features"
                )
        return weights

    @classmethod
    def load(cls, path: str | Path) -> RBRWeights:
        """Read weights from a JSON file written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise WeightsError(
                f"{path}: weights file not found; run 'rbr fit' first"
            ) from None
        except json.JSONDecodeError as error:
            raise WeightsError(
                f"{path}: invalid JSON ({error.msg}, line {error.lineno})"
            ) from None
        return cls.from_dict(data, source=str(path))
