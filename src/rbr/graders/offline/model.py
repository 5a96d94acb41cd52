"""The trained offline model: its parameters, inference and file format.

Inference needs only numpy. A model has two stages:

1. Stage 1: one linear score per learned proposition over the features of
   :mod:`rbr.graders.offline.features`. Training averages several logistic
   regressions, each over a different subset of the feature blocks. Their
   mean is again linear, so it is stored as one weight matrix.
2. Stage 2 (stacking): one logistic regression per learned proposition over
   the stage-1 logits of every learned proposition and the one-hot response
   type, so that one proposition's evidence informs the others (an apology
   makes a full compliance less likely, for example).

Propositions with too few labelled positives to learn get a rule instead: a
fixed logistic function of cue counts, flagged ``"method": "rule"`` in the
metadata.

The file is one ``.npz`` archive written without pickle: arrays plus a
``metadata`` entry holding UTF-8 JSON, and each vocabulary as one UTF-8 text
of newline-separated terms (terms never contain a newline because whitespace
is collapsed before n-grams are taken).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rbr.data.types import Sample
from rbr.errors import GraderError
from rbr.graders.offline.cues import CUE_FEATURE_NAMES, CUE_VERSION
from rbr.graders.offline.features import (
    BLOCKS,
    RESPONSE_TYPES,
    Vocabulary,
    block_terms,
    dense_feature_names,
    dense_row,
    prepare,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


class ArtifactError(GraderError):
    """An offline grader artifact is missing, unreadable or inconsistent."""


@dataclass(frozen=True, slots=True)
class Rule:
    """A fixed estimate for a proposition with too few positives to learn.

    The logit is ``intercept + sum(weight * feature)`` over raw cue features
    (``log1p`` of match counts), so a text with no matching cue gets
    ``sigmoid(intercept)``.
    """

    intercept: float
    weights: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"intercept": self.intercept, "weights": dict(self.weights)}


@dataclass(slots=True)
class OfflineModel:
    """Parameters of a trained offline grader.

    Attributes:
        propositions: Every proposition the model answers, in column order.
        learned: The propositions answered by logistic regressions, in the
            column order of the weight matrices.
        rules: The propositions answered by rules.
        vocabularies: One vocabulary per sparse block.
        dense_mean: Training mean of each dense feature.
        dense_std: Training standard deviation of each dense feature (1 where
            a feature was constant).
        sparse_weights: Stage-1 weights, shape ``(total sparse terms, learned)``,
            rows in block order.
        dense_weights: Stage-1 weights of the dense block, ``(dense, learned)``.
        intercepts: Stage-1 intercepts, shape ``(learned,)``.
        stack_weights: Stage-2 weights over ``[stage-1 logits, response type
            one-hot]``, shape ``(learned + 5, learned)``, or None without stacking.
        stack_intercepts: Stage-2 intercepts, or None without stacking.
        thresholds: Decision threshold per proposition (column order of
            ``propositions``), tuned on out-of-fold predictions of the
            training data.
        metadata: JSON-serializable facts about training: per-proposition
            method and label counts, data sources, options.
    """

    propositions: tuple[str, ...]
    learned: tuple[str, ...]
    rules: dict[str, Rule]
    vocabularies: dict[str, Vocabulary]
    dense_mean: np.ndarray
    dense_std: np.ndarray
    sparse_weights: np.ndarray
    dense_weights: np.ndarray
    intercepts: np.ndarray
    stack_weights: np.ndarray | None
    stack_intercepts: np.ndarray | None
    thresholds: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, samples: Sequence[Sample]) -> np.ndarray:
        """Return P(yes) with shape ``(len(samples), len(propositions))``."""
        result = np.empty((len(samples), len(self.propositions)), dtype=np.float64)
        for i, sample in enumerate(samples):
            result[i] = self._predict_one(sample)
        return result

    def _stage1(self, text: Any) -> tuple[np.ndarray, np.ndarray]:
        terms = block_terms(text)
        logits = self.intercepts.astype(np.float64)
        offset = 0
        for block in BLOCKS:
            vocabulary = self.vocabularies[block]
            columns, values = vocabulary.transform(terms[block])
            if len(columns):
                weights = self.sparse_weights[columns + offset]
                logits = logits + values @ weights
            offset += len(vocabulary)
        raw = dense_row(text)
        scaled = (raw - self.dense_mean) / self.dense_std
        logits = logits + scaled @ self.dense_weights
        return logits, raw

    def _predict_one(self, sample: Sample) -> np.ndarray:
        text = prepare(sample)
        logits, raw = self._stage1(text)
        if self.stack_weights is not None and self.stack_intercepts is not None:
            one_hot = np.zeros(len(RESPONSE_TYPES) + 1)
            one_hot[text.response_type] = 1.0
            inputs = np.concatenate([np.clip(logits, -10.0, 10.0), one_hot])
            logits = inputs @ self.stack_weights + self.stack_intercepts
        learned = dict(zip(self.learned, _sigmoid(logits), strict=True))
        cues = dict(zip(CUE_FEATURE_NAMES, raw[: len(CUE_FEATURE_NAMES)], strict=True))
        row = np.empty(len(self.propositions))
        for j, name in enumerate(self.propositions):
            if name in learned:
                row[j] = learned[name]
            else:
                rule = self.rules[name]
                logit = rule.intercept + sum(
                    w * cues[c] for c, w in rule.weights.items()
                )
                row[j] = _sigmoid(np.asarray(logit))
        return row

    def threshold(self, proposition: str) -> float:
        """Return the decision threshold of ``proposition``.

        Raises:
            KeyError: When the model does not answer ``proposition``.
        """
        if proposition not in self.propositions:
            raise KeyError(
                f"the offline model does not answer {proposition!r}; "
                f"it answers {', '.join(self.propositions)}"
            )
        return float(self.thresholds[self.propositions.index(proposition)])

    def save(self, path: str | Path) -> str:
        """Write the model to ``path`` atomically and return its SHA-256 digest."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **self._arrays())
        data = buffer.getvalue()
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_bytes(data)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return hashlib.sha256(data).hexdigest()

    def _arrays(self) -> dict[str, np.ndarray]:
        header = {
            "format_version": FORMAT_VERSION,
            "cue_version": CUE_VERSION,
            "propositions": list(self.propositions),
            "learned": list(self.learned),
            "rules": {name: rule.to_json() for name, rule in self.rules.items()},
            "dense_features": list(dense_feature_names()),
            "stacking": self.stack_weights is not None,
            "metadata": self.metadata,
        }
        arrays = {
            "header": _text_array(json.dumps(header, sort_keys=True)),
            "dense_mean": self.dense_mean.astype(np.float32),
            "dense_std": self.dense_std.astype(np.float32),
            "sparse_weights": self.sparse_weights.astype(np.float32),
            "dense_weights": self.dense_weights.astype(np.float32),
            "intercepts": self.intercepts.astype(np.float32),
            "thresholds": self.thresholds.astype(np.float32),
        }
        for block in BLOCKS:
            vocabulary = self.vocabularies[block]
            arrays[f"terms_{block}"] = _text_array("\n".join(vocabulary.terms))
            arrays[f"idf_{block}"] = vocabulary.idf.astype(np.float32)
        if self.stack_weights is not None and self.stack_intercepts is not None:
            arrays["stack_weights"] = self.stack_weights.astype(np.float32)
            arrays["stack_intercepts"] = self.stack_intercepts.astype(np.float32)
        return arrays


def load_model(path: str | Path) -> tuple[OfflineModel, str]:
    """Read a model file and return it with the SHA-256 digest of the file.

    Raises:
        ArtifactError: When the file is missing, is not a model archive, or
            was written by an incompatible version.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ArtifactError(
            f"cannot read offline grader artifact {path}: {error.strerror}; "
            "pass the path of a file written by 'rbr grader train'"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if not data.startswith(_ZIP_MAGIC):
        raise ArtifactError(
            f"{path} is not an offline grader artifact (not an .npz archive); "
            "pass a file written by 'rbr grader train'"
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        header = json.loads(bytes(arrays["header"]).decode("utf-8"))
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as error:
        raise ArtifactError(
            f"{path} is not an offline grader artifact "
            f"({type(error).__name__}: {_first_sentence(error)}); pass a file "
            "written by 'rbr grader train'"
        ) from None
    _check_header(path, header)
    return _model_from_arrays(arrays, header), digest


_ZIP_MAGIC = b"PK\x03\x04"
"""First bytes of a zip archive, which an .npz file is."""


def _first_sentence(error: Exception) -> str:
    """Return the first sentence of an error message, without numpy's advice."""
    return str(error).split(". ")[0].rstrip(".")


def _check_header(path: Path, header: dict[str, Any]) -> None:
    if header.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has format version {header.get('format_version')!r}, "
            f"this rbr reads version {FORMAT_VERSION}; retrain the artifact"
        )
    if header.get("cue_version") != CUE_VERSION:
        raise ArtifactError(
            f"{path} was trained with cue features version "
            f"{header.get('cue_version')!r}, this rbr computes version "
            f"{CUE_VERSION}; retrain the artifact"
        )
    if header.get("dense_features") != list(dense_feature_names()):
        raise ArtifactError(
            f"{path} lists different dense features than this rbr computes; "
            "retrain the artifact"
        )


def _model_from_arrays(
    arrays: dict[str, np.ndarray], header: dict[str, Any]
) -> OfflineModel:
    vocabularies = {}
    for block in BLOCKS:
        text = bytes(arrays[f"terms_{block}"]).decode("utf-8")
        terms = text.split("\n") if text else []
        vocabularies[block] = Vocabulary(terms, arrays[f"idf_{block}"])
    rules = {
        name: Rule(float(spec["intercept"]), dict(spec["weights"]))
        for name, spec in header["rules"].items()
    }
    stacking = header["stacking"]
    return OfflineModel(
        propositions=tuple(header["propositions"]),
        learned=tuple(header["learned"]),
        rules=rules,
        vocabularies=vocabularies,
        dense_mean=arrays["dense_mean"].astype(np.float64),
        dense_std=arrays["dense_std"].astype(np.float64),
        sparse_weights=arrays["sparse_weights"],
        dense_weights=arrays["dense_weights"].astype(np.float64),
        intercepts=arrays["intercepts"].astype(np.float64),
        stack_weights=arrays["stack_weights"].astype(np.float64) if stacking else None,
        stack_intercepts=(
            arrays["stack_intercepts"].astype(np.float64) if stacking else None
        ),
        thresholds=arrays["thresholds"].astype(np.float64),
        metadata=header["metadata"],
    )


def _text_array(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))
