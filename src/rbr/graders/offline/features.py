"""Feature extraction for the offline grader, using only numpy.

A sample becomes three sparse n-gram blocks and one dense block:

- ``word``: word unigrams and bigrams of the completion,
- ``char``: character 3- to 5-grams of the completion (whitespace collapsed),
- ``user``: word unigrams of the last user message,
- ``opening``: word 1- to 3-grams of the first 200 characters of the
  completion, where a refusal is usually stated whatever follows it,
- dense: the cue features of :mod:`rbr.graders.offline.cues`, a one-hot
  response type (``Comply``, ``Hard Refuse``, ``Safe Refuse 1``,
  ``Safe Refuse 2`` or unknown), each completion cue crossed with each
  known response type, and the products in :data:`CROSSED_CUES`.

Sparse blocks are TF-IDF weighted (``1 + log(tf)`` times a smoothed IDF) and
scaled to unit L2 norm per block. The dense block is standardized with means
and deviations from the training data. Training and inference share this
code, so a trained model sees exactly the features it was fitted on.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from rbr.data.types import Sample, last_user_message
from rbr.graders.offline.cues import (
    COMPLETION_CUE_NAMES,
    CUE_FEATURE_NAMES,
    OPENING_CHARS,
    cue_features,
    normalize_text,
)

RESPONSE_TYPES: tuple[str, ...] = (
    "Comply",
    "Hard Refuse",
    "Safe Refuse 1",
    "Safe Refuse 2",
)
"""Response types with their own features; any other value counts as unknown."""

MAX_COMPLETION_CHARS = 4000
"""Completion characters read per sample. Longer text is cut, which bounds the
cost of one sample; refusals and disallowed content show in the first part."""

MAX_USER_CHARS = 2000

BLOCKS: tuple[str, ...] = ("word", "char", "user", "opening")

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[?!]")
_SPACES = re.compile(r"\s+")


def _response_type_key(value: str | None) -> int:
    if value is None:
        return len(RESPONSE_TYPES)
    key = re.sub(r"[\s_\-]+", " ", value.strip().lower())
    for index, name in enumerate(RESPONSE_TYPES):
        if name.lower() == key:
            return index
    return len(RESPONSE_TYPES)


OVERLAP_FEATURE_NAMES: tuple[str, ...] = ("user_words_in_reply", "reply_words_in_user")
"""Share of the user message's distinct words (4+ letters) found in the
completion, and the reverse: a reply that ignores the request scores low."""


REPLY_STANCE_CUES: tuple[str, ...] = (
    "apology",
    "inability",
    "refusal_phrase",
    "policy",
    "judgement",
    "premise_rejection",
    "false_premise",
    "instructions",
    "compliance_opener",
)
"""Completion cues that state the reply's stance towards the request."""

REQUEST_CUES: tuple[str, ...] = ("user_method_request", "user_loaded_why", "user_group")
"""User-message cues that describe what kind of request it is."""

CROSSED_CUES: tuple[tuple[str, str], ...] = tuple(
    (a, b) for a in REPLY_STANCE_CUES for b in REQUEST_CUES
)
"""Pairs of a stance cue and a request cue whose product is a feature. The
same stance (rejecting a premise, say) can mean a refusal for one kind of
request and compliance for another, which a linear model cannot express
without the product."""

_CUE_INDEX = {name: i for i, name in enumerate(CUE_FEATURE_NAMES)}


def dense_feature_names() -> tuple[str, ...]:
    """Return the names of the dense features, in column order."""
    names = list(CUE_FEATURE_NAMES) + list(OVERLAP_FEATURE_NAMES)
    names.extend(f"rt={name}" for name in (*RESPONSE_TYPES, "unknown"))
    for response_type in RESPONSE_TYPES:
        names.extend(f"{cue}|rt={response_type}" for cue in COMPLETION_CUE_NAMES)
    names.extend(f"{a}|{b}" for a, b in CROSSED_CUES)
    return tuple(names)


@dataclass(frozen=True, slots=True)
class SampleText:
    """The normalized text of one sample and its response-type column."""

    completion: str
    user: str
    response_type: int


def prepare(sample: Sample) -> SampleText:
    """Normalize and truncate the parts of a sample the features read."""
    completion = normalize_text(sample.completion[:MAX_COMPLETION_CHARS])
    user = normalize_text(last_user_message(sample.prompt)[-MAX_USER_CHARS:])
    return SampleText(completion, user, _response_type_key(sample.response_type))


def block_terms(text: SampleText) -> dict[str, list[str]]:
    """Return the n-gram terms of each sparse block for one sample."""
    tokens = _TOKEN.findall(text.completion)
    words = list(tokens)
    words.extend(f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False))
    flat = " " + _SPACES.sub(" ", text.completion).strip() + " "
    chars = [flat[i : i + n] for n in (3, 4, 5) for i in range(len(flat) - n + 1)]
    user = _TOKEN.findall(text.user)
    opening_tokens = _TOKEN.findall(text.completion[:OPENING_CHARS])
    opening = list(opening_tokens)
    for size in (2, 3):
        opening.extend(
            " ".join(opening_tokens[i : i + size])
            for i in range(len(opening_tokens) - size + 1)
        )
    return {"word": words, "char": chars, "user": user, "opening": opening}


def dense_row(text: SampleText) -> np.ndarray:
    """Return the raw (not yet standardized) dense features of one sample."""
    cues = cue_features(text.completion, text.user)
    user_words = {w for w in _TOKEN.findall(text.user) if len(w) > 3}
    reply_words = {w for w in _TOKEN.findall(text.completion) if len(w) > 3}
    shared = len(user_words & reply_words)
    overlap = [shared / max(1, len(user_words)), shared / max(1, len(reply_words))]
    n_types = len(RESPONSE_TYPES)
    one_hot = [0.0] * (n_types + 1)
    one_hot[text.response_type] = 1.0
    crossed = [0.0] * (n_types * len(COMPLETION_CUE_NAMES))
    if text.response_type < n_types:
        start = text.response_type * len(COMPLETION_CUE_NAMES)
        crossed[start : start + len(COMPLETION_CUE_NAMES)] = cues[
            : len(COMPLETION_CUE_NAMES)
        ]
    pairs = [cues[_CUE_INDEX[a]] * cues[_CUE_INDEX[b]] for a, b in CROSSED_CUES]
    return np.asarray(cues + overlap + one_hot + crossed + pairs, dtype=np.float64)


class Vocabulary:
    """Terms of one sparse block with their column and IDF weight."""

    def __init__(self, terms: Sequence[str], idf: np.ndarray) -> None:
        if len(terms) != len(idf):
            raise ValueError(
                f"vocabulary has {len(terms)} terms but {len(idf)} IDF weights"
            )
        self.terms = tuple(terms)
        self.index = {term: i for i, term in enumerate(self.terms)}
        self.idf = np.asarray(idf, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.terms)

    @classmethod
    def fit(
        cls,
        documents: Iterable[list[str]],
        *,
        min_df: int,
        max_terms: int,
        only: set[str] | None = None,
    ) -> Vocabulary:
        """Keep the ``max_terms`` most frequent terms seen in at least ``min_df`` docs.

        Args:
            documents: Terms of each document.
            min_df: Fewest documents a kept term occurs in.
            max_terms: Largest number of terms kept.
            only: When given, only these terms are counted and kept, and
                with ``min_df`` 0 a term found in no document is kept with
                the largest IDF. IDF still counts every document.
        """
        document_frequency: Counter[str] = Counter()
        n_documents = 0
        for terms in documents:
            distinct = set(terms)
            if only is not None:
                distinct &= only
            document_frequency.update(distinct)
            n_documents += 1
        if only is not None and min_df <= 0:
            document_frequency.update(dict.fromkeys(only, 0))
        frequent = [(t, df) for t, df in document_frequency.items() if df >= min_df]
        frequent.sort(key=lambda item: (-item[1], item[0]))
        frequent = frequent[:max_terms]
        frequent.sort()
        terms = [t for t, _ in frequent]
        idf = np.array(
            [math.log((1 + n_documents) / (1 + df)) + 1.0 for _, df in frequent],
            dtype=np.float64,
        )
        return cls(terms, idf)

    def transform(self, terms: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(columns, values)`` of one document, L2-normalized."""
        counts = Counter(terms)
        lookup = self.index
        columns = [lookup[t] for t in counts if t in lookup]
        if not columns:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        tf = np.array([counts[self.terms[c]] for c in columns], dtype=np.float64)
        column_array = np.asarray(columns, dtype=np.int64)
        values = (1.0 + np.log(tf)) * self.idf[column_array]
        values /= np.linalg.norm(values)
        return column_array, values
