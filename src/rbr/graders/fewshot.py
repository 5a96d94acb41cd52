"""Few-shot example selection from a labelled set.

Examples for a proposition come either from the policy
(:attr:`rbr.policy.spec.Proposition.examples`) or from labelled records in the
gold-set format, whose ``propositions`` field maps each proposition name to a
human label. :class:`FewShotPool` ranks the labelled records once and then
hands out ``k`` examples per proposition:

* balanced: ``ceil(k / 2)`` yes and ``floor(k / 2)`` no, filled from the other
  answer when one answer has too few records;
* deterministic: candidates are ranked by a SHA-256 hash of the proposition
  name and the record's content key, so the same set always gives the same
  examples, whatever the file order;
* short: records whose request and reply fit :data:`SHORT_EXAMPLE_CHARS` come
  before longer ones, and every example text is cut to
  :data:`MAX_PROMPT_CHARS` / :data:`MAX_COMPLETION_CHARS`;
* never the graded item itself: ``exclude_key`` (a
  :meth:`rbr.data.Sample.content_key`) skips that record, and the next
  candidate takes its place.

Only labels of exactly 0 or 1 count. A fractional value (a grader
probability rather than a human label) is ignored.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rbr.data.types import Record, last_user_message
from rbr.policy.spec import FewShotExample

MAX_PROMPT_CHARS = 600
"""Maximum length of the user request shown in an example, in characters."""

MAX_COMPLETION_CHARS = 800
"""Maximum length of the assistant reply shown in an example, in characters."""

SHORT_EXAMPLE_CHARS = 1000
"""Request plus reply length, in characters, up to which a record ranks as short."""

TRUNCATION_MARK = " [...]"


@dataclass(frozen=True, slots=True)
class _Candidate:
    content_key: str
    example: FewShotExample
    is_short: bool
    rank_hash: str


def truncate_text(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, marking the cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(TRUNCATION_MARK))].rstrip() + TRUNCATION_MARK


def _rank_hash(name: str, content_key: str) -> str:
    return hashlib.sha256(f"{name}\x00{content_key}".encode()).hexdigest()


class FewShotPool:
    """Labelled records ranked per proposition, ready to hand out examples.

    Args:
        records: Records with human labels in their ``propositions`` field.
        proposition_names: Propositions to prepare examples for.
        k: Number of examples per proposition.

    Raises:
        ValueError: When ``k`` is negative.
    """

    def __init__(
        self, records: Iterable[Record], proposition_names: Sequence[str], k: int
    ) -> None:
        if k < 0:
            raise ValueError(f"few-shot k must be 0 or more, got {k}")
        self.k = k
        records = list(records)
        self._ranked: dict[str, dict[bool, list[_Candidate]]] = {
            name: self._rank(records, name) for name in proposition_names
        }
        self.fingerprint = self._fingerprint()

    @staticmethod
    def _rank(records: Sequence[Record], name: str) -> dict[bool, list[_Candidate]]:
        ranked: dict[bool, list[_Candidate]] = {True: [], False: []}
        seen: set[str] = set()
        for record in records:
            value = record.propositions.get(name)
            if value not in (0.0, 1.0):
                continue
            key = record.sample.content_key()
            if key in seen:
                continue
            seen.add(key)
            request = last_user_message(record.sample.prompt)
            reply = record.sample.completion
            example = FewShotExample(
                prompt=truncate_text(request, MAX_PROMPT_CHARS),
                completion=truncate_text(reply, MAX_COMPLETION_CHARS),
                answer=bool(value),
            )
            is_short = len(request) + len(reply) <= SHORT_EXAMPLE_CHARS
            ranked[bool(value)].append(
                _Candidate(key, example, is_short, _rank_hash(name, key))
            )
        for candidates in ranked.values():
            candidates.sort(key=lambda c: (not c.is_short, c.rank_hash))
        return ranked

    def _fingerprint(self) -> str:
        digest = hashlib.sha256(f"k={self.k}".encode())
        for name in sorted(self._ranked):
            for answer in (True, False):
                keys = [c.content_key for c in self._ranked[name][answer]]
                digest.update(json.dumps([name, answer, keys]).encode())
        return digest.hexdigest()[:16]

    def _first(
        self, candidates: list[_Candidate], exclude_key: str | None
    ) -> list[_Candidate]:
        """Return up to ``k`` leading candidates other than ``exclude_key``."""
        kept = (c for c in candidates if c.content_key != exclude_key)
        return list(itertools.islice(kept, self.k))

    @property
    def proposition_names(self) -> tuple[str, ...]:
        """Propositions the pool has ranked candidates for."""
        return tuple(self._ranked)

    def examples_for(
        self, name: str, *, exclude_key: str | None = None
    ) -> tuple[FewShotExample, ...]:
        """Return ``k`` examples for proposition ``name``, alternating yes and no.

        Args:
            name: Proposition name.
            exclude_key: Content key of the sample being graded, which is never
                its own example.

        Raises:
            KeyError: When the pool was not built for ``name``.
        """
        if name not in self._ranked:
            known = ", ".join(self._ranked) or "none"
            raise KeyError(f"few-shot pool has no proposition {name!r}; it has {known}")
        yes = self._first(self._ranked[name][True], exclude_key)
        no = self._first(self._ranked[name][False], exclude_key)
        n_yes = min(len(yes), (self.k + 1) // 2)
        n_no = min(len(no), self.k - n_yes)
        n_yes = min(len(yes), self.k - n_no)
        chosen_yes, chosen_no = yes[:n_yes], no[:n_no]
        ordered: list[FewShotExample] = []
        for index in range(max(n_yes, n_no)):
            if index < n_yes:
                ordered.append(chosen_yes[index].example)
            if index < n_no:
                ordered.append(chosen_no[index].example)
        return tuple(ordered)


def select_examples(
    records: Iterable[Record],
    proposition_names: Sequence[str],
    k: int,
    *,
    exclude_key: str | None = None,
) -> dict[str, tuple[FewShotExample, ...]]:
    """Select ``k`` balanced few-shot examples per proposition from labelled records.

    Args:
        records: Records with human labels in their ``propositions`` field.
        proposition_names: Propositions to select examples for.
        k: Number of examples per proposition; fewer when the set has fewer
            usable records.
        exclude_key: Content key of a sample that must not be used, such as
            the sample being graded during evaluation.

    Returns:
        Examples per proposition name, alternating yes and no.
    """
    pool = FewShotPool(records, proposition_names, k)
    return {
        name: pool.examples_for(name, exclude_key=exclude_key)
        for name in proposition_names
    }
