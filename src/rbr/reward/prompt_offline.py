"""Offline prompt classifier: predicts a prompt's content-policy category.

Inference needs only numpy; training (:mod:`rbr.reward.prompt_training`)
needs scikit-learn. The model is one multinomial logistic regression over
three TF-IDF blocks of the prompt:

- ``word``: word unigrams and bigrams of the last user message,
- ``char``: character 2- to 5-grams of the last user message,
- ``context``: word unigrams of the messages before it, scaled by
  :data:`CONTEXT_SCALE` so that earlier turns inform but do not decide.

Terms are weighted ``1 + log(tf)`` times a smoothed IDF, each block scaled
to unit L2 norm (:class:`rbr.graders.offline.features.Vocabulary`).

The artifact is one ``.npz`` archive written without pickle: float32
arrays, a ``header`` entry of UTF-8 JSON and each vocabulary as one UTF-8
text of newline-separated terms (terms never hold a newline because
whitespace is collapsed first).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rbr.data.io import atomic_output
from rbr.data.types import Message, prompt_hash
from rbr.errors import RbrError
from rbr.graders.offline.cues import normalize_text
from rbr.graders.offline.features import Vocabulary
from rbr.policy.spec import Policy, normalize_name

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
BLOCKS: tuple[str, ...] = ("word", "char", "context")
CONTEXT_SCALE = 0.5
BLOCK_SCALES: dict[str, float] = {"word": 1.0, "char": 1.0, "context": CONTEXT_SCALE}
"""Factor on each block's unit-norm TF-IDF values, in training and inference."""
MAX_USER_CHARS = 2000
"""Characters of the last user message read (its end, where the request is)."""
MAX_CONTEXT_CHARS = 4000
"""Characters of the earlier turns read (the latest ones)."""

DEFAULT_PROMPT_ARTIFACT = Path(__file__).parent / "artifacts" / "prompt_classifier.npz"
"""The artifact shipped in the package, for the default policy's categories."""

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SPACES = re.compile(r"\s+")


class ClassifierError(RbrError):
    """A prompt classifier could not be built or failed as a whole."""


def prompt_terms(prompt: Sequence[Message]) -> dict[str, list[str]]:
    """Return the terms of each block for one prompt."""
    user_index = max(
        (i for i, m in enumerate(prompt) if m.role == "user"), default=len(prompt)
    )
    last = prompt[user_index].content if user_index < len(prompt) else ""
    user = normalize_text(last[-MAX_USER_CHARS:])
    earlier = " ".join(m.content for m in prompt[:user_index])
    context = normalize_text(earlier[-MAX_CONTEXT_CHARS:])
    tokens = _TOKEN.findall(user)
    words = list(tokens)
    words.extend(f"{a} {b}" for a, b in zip(tokens, tokens[1:]))
    flat = " " + _SPACES.sub(" ", user).strip() + " "
    chars = [flat[i : i + n] for n in (2, 3, 4, 5) for i in range(len(flat) - n + 1)]
    return {"word": words, "char": chars, "context": _TOKEN.findall(context)}


@dataclass(slots=True)
class PromptModel:
    """Parameters of a trained prompt classifier.

    Attributes:
        categories: Category names, in the column order of the weights.
        vocabularies: One vocabulary per block of :data:`BLOCKS`.
        weights: Shape ``(total terms, categories)``, rows in block order.
        intercepts: Shape ``(categories,)``.
        metadata: JSON facts about training: data sources, counts, options
            and cross-validated accuracy.
    """

    categories: tuple[str, ...]
    vocabularies: dict[str, Vocabulary]
    weights: np.ndarray
    intercepts: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def logits(self, prompts: Sequence[Sequence[Message]]) -> np.ndarray:
        """Return the category logits, shape ``(len(prompts), categories)``."""
        result = np.tile(self.intercepts.astype(np.float64), (len(prompts), 1))
        for i, prompt in enumerate(prompts):
            terms = prompt_terms(prompt)
            offset = 0
            for block in BLOCKS:
                vocabulary = self.vocabularies[block]
                columns, values = vocabulary.transform(terms[block])
                if len(columns):
                    weights = self.weights[columns + offset]
                    result[i] += BLOCK_SCALES[block] * (values @ weights)
                offset += len(vocabulary)
        return result

    def predict_proba(self, prompts: Sequence[Sequence[Message]]) -> np.ndarray:
        """Return category probabilities (softmax of :meth:`logits`)."""
        logits = self.logits(prompts)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, prompts: Sequence[Sequence[Message]]) -> list[str]:
        """Return the most likely category of each prompt."""
        if not prompts:
            return []
        best = self.logits(prompts).argmax(axis=1)
        return [self.categories[int(j)] for j in best]

    def save(self, path: str | Path) -> str:
        """Write the model to ``path`` atomically and return its SHA-256 digest."""
        header = {
            "format_version": FORMAT_VERSION,
            "categories": list(self.categories),
            "blocks": list(BLOCKS),
            "context_scale": CONTEXT_SCALE,
            "metadata": self.metadata,
        }
        arrays = {
            "header": _text_array(json.dumps(header, sort_keys=True)),
            "weights": self.weights.astype(np.float32),
            "intercepts": self.intercepts.astype(np.float32),
        }
        for block in BLOCKS:
            vocabulary = self.vocabularies[block]
            arrays[f"terms_{block}"] = _text_array("\n".join(vocabulary.terms))
            arrays[f"idf_{block}"] = vocabulary.idf.astype(np.float32)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        data = buffer.getvalue()
        with atomic_output(path, binary=True) as handle:
            handle.write(data)
        return hashlib.sha256(data).hexdigest()


def load_prompt_model(path: str | Path) -> tuple[PromptModel, str]:
    """Read a prompt classifier artifact; return it with the file's SHA-256 digest.

    Raises:
        ClassifierError: When the file is missing, not an artifact, or of
            another format version.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ClassifierError(
            f"cannot read prompt classifier artifact {path}: {error.strerror}; pass "
            "a file written by 'python -m rbr.reward.build_prompt_classifier'"
        ) from None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        header = json.loads(bytes(arrays["header"]).decode("utf-8"))
        version = header.get("format_version")
        if version != FORMAT_VERSION or header.get("blocks") != list(BLOCKS):
            raise ValueError(
                f"format version {version!r}, this rbr reads version {FORMAT_VERSION}"
            )
        vocabularies = {}
        for block in BLOCKS:
            text = bytes(arrays[f"terms_{block}"]).decode("utf-8")
            terms = text.split("\n") if text else []
            vocabularies[block] = Vocabulary(terms, arrays[f"idf_{block}"])
        model = PromptModel(
            categories=tuple(header["categories"]),
            vocabularies=vocabularies,
            weights=arrays["weights"],
            intercepts=arrays["intercepts"].astype(np.float64),
            metadata=header.get("metadata", {}),
        )
    except (ValueError, KeyError, OSError) as error:
        raise ClassifierError(
            f"{path} is not a usable prompt classifier artifact ({error}); rebuild "
            "it with 'python -m rbr.reward.build_prompt_classifier'"
        ) from None
    return model, hashlib.sha256(data).hexdigest()


class OfflinePromptClassifier:
    """Predict content-policy categories with a trained :class:`PromptModel`.

    It needs no network or GPU. Every prompt gets a category (the most
    likely one), never None. Repeated prompts in one call are classified
    once, and the last ``cache_size`` distinct prompts are remembered, since
    an RL loop scores several completions of each prompt.

    Args:
        model: The trained model.
        digest: SHA-256 hex digest of its artifact file.
        policy: When given, each artifact category is mapped to the policy's
            spelling of it, and a category the policy lacks is an error.
        cache_size: Distinct prompts remembered across calls; 0 for none.

    Raises:
        ClassifierError: When the artifact has a category the policy does
            not map.
    """

    def __init__(
        self,
        model: PromptModel,
        *,
        digest: str,
        policy: Policy | None = None,
        cache_size: int = 10000,
    ) -> None:
        self.model = model
        self._digest = digest
        self._names = _policy_names(model.categories, policy, digest)
        self._cache: OrderedDict[str, str] = OrderedDict()
        self.cache_size = cache_size

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        policy: Policy | None = None,
        cache_size: int = 10000,
    ) -> OfflinePromptClassifier:
        """Load an artifact; None loads :data:`DEFAULT_PROMPT_ARTIFACT`."""
        path = Path(path) if path is not None else DEFAULT_PROMPT_ARTIFACT
        model, digest = load_prompt_model(path)
        logger.info("loaded prompt classifier %s (sha256 %s)", path, digest[:12])
        return cls(model, digest=digest, policy=policy, cache_size=cache_size)

    @property
    def identity(self) -> str:
        return f"offline-prompt:sha256={self._digest[:16]}"

    @property
    def categories(self) -> tuple[str, ...]:
        """Categories the classifier predicts, spelled as the policy spells them."""
        return tuple(self._names[c] for c in self.model.categories)

    def classify(self, prompts: Sequence[Sequence[Message]]) -> list[str | None]:
        """Return the predicted category of each prompt."""
        keys = [prompt_hash(tuple(p)) for p in prompts]
        todo: dict[str, Sequence[Message]] = {}
        for key, prompt in zip(keys, prompts):
            if key not in self._cache:
                todo.setdefault(key, prompt)
        found = dict(zip(todo, self.model.predict(list(todo.values()))))
        resolved = {
            key: found[key] if key in found else self._cache[key]
            for key in dict.fromkeys(keys)
        }
        for key, category in resolved.items():
            self._remember(key, category)
        return [self._names[resolved[key]] for key in keys]

    def _remember(self, key: str, category: str) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = category
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


def _policy_names(
    categories: Sequence[str], policy: Policy | None, digest: str
) -> dict[str, str]:
    if policy is None:
        return {c: c for c in categories}
    known = {normalize_name(name): name for name in policy.content_policy}
    missing = [c for c in categories if normalize_name(c) not in known]
    if missing:
        raise ClassifierError(
            f"the prompt classifier (sha256 {digest[:12]}) predicts categories "
            f"{', '.join(map(repr, missing))} that policy {policy.name!r} does not "
            "map; add them to the policy's content_policy, or train an artifact on "
            "this policy's categories"
        )
    return {c: known[normalize_name(c)] for c in categories}


def _text_array(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
