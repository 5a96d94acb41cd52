"""A persistent SQLite cache of grades, and a grader wrapper that uses it.

A grade is stored under four keys: a hash of the grader's
:attr:`~rbr.graders.base.Grader.identity`, the prompt template hash, a hash of
the proposition's text (name, instruction and examples) and the sample's
:meth:`~rbr.data.Sample.content_key`. Changing the model, the prompt layout,
a proposition's wording or the conversation therefore misses the cache.

The database runs in WAL mode and commits every grade in its own
transaction as soon as it is stored. A process killed at any point, even by
SIGKILL, keeps every grade whose store call returned. An operating system
crash or power loss can still drop the last ones, because commits do not
wait for the disk (``synchronous=NORMAL``). Unscored cells are never stored,
so they are retried on the next run.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rbr.data.types import Sample
from rbr.errors import GraderError
from rbr.graders.base import Grader, GradeResult, Unscored
from rbr.graders.prompts import prompt_template_hash
from rbr.policy.spec import Proposition

logger = logging.getLogger(__name__)

ENV_CACHE_DIR = "RBR_CACHE_DIR"
CACHE_FILE_NAME = "grades.sqlite"

ResultCallback = Callable[[int, str, "float | Unscored"], None]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS grades (
    grader TEXT NOT NULL,
    template TEXT NOT NULL,
    sample TEXT NOT NULL,
    proposition TEXT NOT NULL,
    probability REAL NOT NULL,
    stored_at REAL NOT NULL,
    PRIMARY KEY (grader, template, sample, proposition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS graders (
    grader TEXT PRIMARY KEY,
    identity TEXT NOT NULL
) WITHOUT ROWID;
"""


def default_cache_path() -> Path:
    """Return ``$RBR_CACHE_DIR/grades.sqlite``, else ``~/.cache/rbr/grades.sqlite``.

    ``$XDG_CACHE_HOME`` replaces ``~/.cache`` when it is set.
    """
    folder = os.environ.get(ENV_CACHE_DIR)
    if folder:
        return Path(folder).expanduser() / CACHE_FILE_NAME
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root).expanduser() / "rbr" / CACHE_FILE_NAME


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def proposition_hash(proposition: Proposition) -> str:
    """Return a hash of the proposition's name, instruction and examples."""
    return _digest(proposition.model_dump_json())


def grader_hash(grader: Grader) -> str:
    """Return a hash of the grader's identity."""
    return _digest(grader.identity)


class GradeCache:
    """Grades in an SQLite file, safe to share between threads and processes.

    Args:
        path: Database file; None uses :func:`default_cache_path`. The folder
            is created when missing.

    Raises:
        GraderError: When the file cannot be opened as an SQLite database.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
            self._connection.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise GraderError(
                f"cannot open the grade cache {self.path}: {error}. Delete the file, "
                f"choose another folder with ${ENV_CACHE_DIR}, or run with --no-cache"
            ) from None

    def register(self, grader_key: str, identity: str) -> None:
        """Record the identity behind ``grader_key``, for people reading the file."""
        with self._lock:
            self._connection.execute(
                "INSERT OR IGNORE INTO graders (grader, identity) VALUES (?, ?)",
                (grader_key, identity),
            )

    def lookup(
        self, grader_key: str, template: str, sample_key: str
    ) -> dict[str, float]:
        """Return the stored grades of one sample, keyed by proposition hash."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT proposition, probability FROM grades "
                "WHERE grader = ? AND template = ? AND sample = ?",
                (grader_key, template, sample_key),
            ).fetchall()
        return dict(rows)

    def store(
        self,
        grader_key: str,
        template: str,
        sample_key: str,
        proposition_key: str,
        probability: float,
    ) -> None:
        """Store one grade and commit it before returning.

        Raises:
            ValueError: When ``probability`` is NaN or outside [0, 1].
        """
        if math.isnan(probability) or not 0.0 <= probability <= 1.0:
            raise ValueError(f"a cached grade must be in [0, 1], got {probability}")
        with self._lock:
            self._connection.execute(
                "INSERT OR REPLACE INTO grades VALUES (?, ?, ?, ?, ?, ?)",
                (
                    grader_key,
                    template,
                    sample_key,
                    proposition_key,
                    probability,
                    time.time(),
                ),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._connection.execute("SELECT COUNT(*) FROM grades").fetchone()[0]

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._connection.close()


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Cells served from the cache and cells sent to the wrapped grader."""

    hits: int
    misses: int


def accepts_result_callback(grader: Grader) -> bool:
    """Return whether ``grader.grade`` takes an ``on_result`` keyword argument."""
    try:
        parameters = inspect.signature(grader.grade).parameters
    except (TypeError, ValueError):
        return False
    return "on_result" in parameters


class CachedGrader(Grader):
    """Wrap a grader so that grades are looked up in and stored to a cache.

    Every cell is looked up first and only the missing ones are graded, in one
    call per set of missing propositions, so each sample's missing
    propositions go in the same call. When the wrapped grader accepts an
    ``on_result`` callback (as
    :class:`~rbr.graders.openai_compat.OpenAICompatibleGrader` does), each
    grade is committed as soon as it is known; otherwise when the call
    returns.

    Args:
        inner: The grader doing the work.
        cache: A cache, a database path, or None for :func:`default_cache_path`.
    """

    def __init__(
        self, inner: Grader, cache: GradeCache | str | Path | None = None
    ) -> None:
        self.inner = inner
        self.cache = cache if isinstance(cache, GradeCache) else GradeCache(cache)
        self._owns_cache = not isinstance(cache, GradeCache)
        self._grader_key = grader_hash(inner)
        self._template = (
            getattr(inner, "prompt_template_hash", None) or prompt_template_hash()
        )
        self.cache.register(self._grader_key, inner.identity)
        self._streams = accepts_result_callback(inner)
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    @property
    def identity(self) -> str:
        return self.inner.identity

    @property
    def stats(self) -> CacheStats:
        """Cache hits and misses since the wrapper was built."""
        with self._lock:
            return CacheStats(self._hits, self._misses)

    def grade(
        self,
        samples: Sequence[Sample],
        propositions: Sequence[Proposition],
        *,
        on_result: ResultCallback | None = None,
    ) -> GradeResult:
        """Grade every cell, from the cache where possible.

        Args:
            samples: Completions to grade.
            propositions: Propositions to ask about each completion.
            on_result: Called once per cell with its grade, cached cells first.
        """
        names = tuple(p.name for p in propositions)
        values = np.full((len(samples), len(names)), np.nan)
        sample_keys = [sample.content_key() for sample in samples]
        prop_keys = [proposition_hash(p) for p in propositions]
        groups = self._lookup(sample_keys, prop_keys, values, names, on_result)
        unscored: list[Unscored] = []
        for columns, rows in groups.items():
            self._grade_group(
                samples,
                propositions,
                rows,
                columns,
                sample_keys,
                values,
                unscored,
                on_result,
            )
        self._copy_duplicates(sample_keys, values, unscored, names, on_result)
        unscored.sort(key=lambda u: (u.sample_index, names.index(u.proposition)))
        return GradeResult(names, values, unscored)

    def _lookup(
        self,
        sample_keys: list[str],
        prop_keys: list[str],
        values: np.ndarray,
        names: tuple[str, ...],
        on_result: ResultCallback | None,
    ) -> dict[tuple[int, ...], list[int]]:
        """Fill cached cells; group first copies of samples by their missing columns."""
        groups: dict[tuple[int, ...], list[int]] = {}
        seen: set[str] = set()
        hits = 0
        for i, sample_key in enumerate(sample_keys):
            if sample_key in seen:
                continue
            seen.add(sample_key)
            stored = self.cache.lookup(self._grader_key, self._template, sample_key)
            missing = []
            for j, prop_key in enumerate(prop_keys):
                if prop_key in stored:
                    values[i, j] = stored[prop_key]
                    hits += 1
                    if on_result is not None:
                        on_result(i, names[j], stored[prop_key])
                else:
                    missing.append(j)
            if missing:
                groups.setdefault(tuple(missing), []).append(i)
        with self._lock:
            self._hits += hits
            self._misses += sum(len(cols) * len(rows) for cols, rows in groups.items())
        return groups

    def _grade_group(
        self,
        samples: Sequence[Sample],
        propositions: Sequence[Proposition],
        rows: list[int],
        columns: tuple[int, ...],
        sample_keys: list[str],
        values: np.ndarray,
        unscored: list[Unscored],
        on_result: ResultCallback | None,
    ) -> None:
        """Grade ``rows`` x ``columns`` with the inner grader, storing each grade."""
        chosen = [propositions[j] for j in columns]
        prop_keys = {p.name: proposition_hash(p) for p in chosen}
        reported: set[tuple[int, str]] = set()

        def store(local_index: int, name: str, outcome: float | Unscored) -> None:
            reported.add((local_index, name))
            row = rows[local_index]
            if not isinstance(outcome, Unscored) and not math.isnan(outcome):
                self.cache.store(
                    self._grader_key,
                    self._template,
                    sample_keys[row],
                    prop_keys[name],
                    float(outcome),
                )
            if on_result is not None:
                on_result(row, name, outcome)

        subset = [samples[i] for i in rows]
        if self._streams:
            result = self.inner.grade(subset, chosen, on_result=store)  # type: ignore[call-arg]
        else:
            result = self.inner.grade(subset, chosen)
        for item in result.unscored:
            unscored.append(_reindex(item, rows[item.sample_index]))
            if (item.sample_index, item.proposition) not in reported:
                store(item.sample_index, item.proposition, item)
        for local_index, row in enumerate(rows):
            for k, column in enumerate(columns):
                value = float(result.probabilities[local_index, k])
                values[row, column] = value
                name = result.propositions[k]
                if (local_index, name) not in reported and not math.isnan(value):
                    store(local_index, name, value)

    @staticmethod
    def _copy_duplicates(
        sample_keys: list[str],
        values: np.ndarray,
        unscored: list[Unscored],
        names: tuple[str, ...],
        on_result: ResultCallback | None,
    ) -> None:
        """Give repeated samples in one batch the grades of their first copy."""
        first: dict[str, int] = {}
        by_row: dict[int, list[Unscored]] = {}
        for item in unscored:
            by_row.setdefault(item.sample_index, []).append(item)
        for i, key in enumerate(sample_keys):
            if key not in first:
                first[key] = i
                continue
            values[i] = values[first[key]]
            copies = {u.proposition: _reindex(u, i) for u in by_row.get(first[key], [])}
            unscored.extend(copies.values())
            if on_result is None:
                continue
            for j, name in enumerate(names):
                on_result(i, name, copies.get(name, float(values[i, j])))

    def close(self) -> None:
        """Close the wrapped grader, and the cache when this wrapper opened it."""
        self.inner.close()
        if self._owns_cache:
            self.cache.close()


def _reindex(item: Unscored, sample_index: int) -> Unscored:
    return Unscored(
        sample_index,
        item.proposition,
        item.reason,
        item.detail,
        item.raw,
        item.sample_id,
    )
