"""The offline grader: trained proposition classifiers behind the Grader interface."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rbr.data.types import Sample
from rbr.graders.base import Grader, GradeResult, Unscored
from rbr.graders.offline.model import OfflineModel, load_model
from rbr.policy.spec import Proposition

logger = logging.getLogger(__name__)

DEFAULT_ARTIFACT = Path(__file__).parent / "artifacts" / "offline_grader.npz"
"""The artifact shipped in the package (see docs/offline-grader.md)."""

REFUSAL_PROPOSITION = "fully_complies"


class OfflineGrader(Grader):
    """Answer propositions with classifiers trained on labelled completions.

    It needs no GPU, server or network: inference is numpy only. It answers
    the propositions its artifact was trained on, by name. It does not read a
    proposition's instruction or examples, so rewording a known proposition
    does not change its answers. Any other proposition is unscored with
    reason ``unsupported_proposition``.
    """

    def __init__(self, model: OfflineModel, *, digest: str) -> None:
        """Wrap a model; ``digest`` is the SHA-256 hex digest of its artifact file."""
        self._model = model
        self._digest = digest

    @classmethod
    def load(cls, path: str | Path | None = None) -> OfflineGrader:
        """Load an artifact written by ``train_offline_grader``.

        Args:
            path: The ``.npz`` file; None loads the artifact shipped in the
                package.

        Raises:
            ArtifactError: When the file is missing or invalid.
        """
        path = Path(path) if path is not None else DEFAULT_ARTIFACT
        model, digest = load_model(path)
        logger.info("loaded offline grader %s (sha256 %s)", path, digest[:12])
        return cls(model, digest=digest)

    @property
    def model(self) -> OfflineModel:
        """The loaded model."""
        return self._model

    @property
    def identity(self) -> str:
        return f"offline:sha256={self._digest[:16]}"

    @property
    def propositions(self) -> tuple[str, ...]:
        """Names of the propositions this grader answers."""
        return self._model.propositions

    def grade(
        self, samples: Sequence[Sample], propositions: Sequence[Proposition]
    ) -> GradeResult:
        names = tuple(p.name for p in propositions)
        values = np.full((len(samples), len(names)), np.nan)
        known = [j for j, name in enumerate(names) if name in self._model.propositions]
        if known and samples:
            predicted = self._model.predict_proba(samples)
            for j in known:
                values[:, j] = predicted[:, self._model.propositions.index(names[j])]
        unscored = [
            Unscored(
                i,
                name,
                "unsupported_proposition",
                f"the offline grader {self.identity} was not trained on {name!r}; "
                "train one with labels for it or use an LLM grader",
                None,
                sample.sample_id,
            )
            for j, name in enumerate(names)
            if j not in known
            for i, sample in enumerate(samples)
        ]
        return GradeResult(names, values, unscored)

    def refusal_probability(self, samples: Sequence[Sample]) -> np.ndarray:
        """Return ``1 - P(fully_complies)`` per sample."""
        column = self._model.propositions.index(REFUSAL_PROPOSITION)
        return 1.0 - self._model.predict_proba(samples)[:, column]

    def is_refusal(self, samples: Sequence[Sample]) -> np.ndarray:
        """Classify each sample as a refusal (True) or a compliance (False).

        A refusal is ``P(fully_complies)`` below the fully_complies threshold
        stored in the artifact, which was tuned for balanced accuracy on
        out-of-fold predictions of the training data. A partial refusal
        counts as a refusal.
        """
        threshold = self._model.threshold(REFUSAL_PROPOSITION)
        column = self._model.propositions.index(REFUSAL_PROPOSITION)
        return self._model.predict_proba(samples)[:, column] < threshold
