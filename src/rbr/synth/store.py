"""A SQLite store of generation attempts and outcomes, so a stopped run can resume.

A job is one (prompt, target) pair under fixed settings. Its key is a hash
of everything that shapes its completions and their acceptance: the prompt
messages, the target, the instructions, the generator and grader identities
and the thresholds. Changing any of them starts the job afresh, while a rerun
with the same settings continues where the last run stopped.

Each attempt is stored twice over: once when its completion arrives, and
again with its grades. A run stopped between the two regrades the stored
completion (grades already in the grade cache cost no request) instead of
sampling a new one. An outcome is stored when a job is accepted or gives up.

Like the grade cache, the database runs in WAL mode and commits every write
before returning, so a killed process loses at most the request in flight.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rbr.synth.targets import SynthError

STATE_FILE_NAME = "synth_state.sqlite"
"""Default store file name inside the output folder."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job TEXT PRIMARY KEY,
    prompt_id TEXT NOT NULL,
    target TEXT NOT NULL,
    settings TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts (
    job TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    completion TEXT NOT NULL,
    finish_reason TEXT,
    grades TEXT,
    stored_at REAL NOT NULL,
    PRIMARY KEY (job, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outcomes (
    job TEXT PRIMARY KEY,
    outcome TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    stored_at REAL NOT NULL
) WITHOUT ROWID;
"""


def job_key(settings: Mapping[str, Any]) -> str:
    """Return a SHA-256 hex digest of a job's settings, serialized as sorted JSON."""
    payload = json.dumps(settings, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredAttempt:
    """One attempt as stored; ``grades`` is None until the completion is graded."""

    attempt: int
    completion: str
    finish_reason: str | None
    grades: dict[str, float] | None


@dataclass
class StoredJob:
    """The stored attempts of one job, in order, and its outcome if it has one."""

    attempts: list[StoredAttempt] = field(default_factory=list)
    outcome: str | None = None


class SampleStore:
    """Attempts and outcomes of generation jobs in an SQLite file.

    Args:
        path: Database file. The folder is created when missing.

    Raises:
        SynthError: When the file cannot be opened as an SQLite database.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
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
            raise SynthError(
                f"cannot open the generation state {self.path}: {error}. Delete the "
                "file to start over, or choose another file with --state"
            ) from None

    def register(self, job: str, prompt_id: str, target: str, settings: str) -> None:
        """Record what a job key stands for, for people reading the file."""
        with self._lock:
            self._connection.execute(
                "INSERT OR IGNORE INTO jobs VALUES (?, ?, ?, ?)",
                (job, prompt_id, target, settings),
            )

    def load(self, job: str) -> StoredJob:
        """Return the stored attempts and outcome of ``job``."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT attempt, completion, finish_reason, grades FROM attempts "
                "WHERE job = ? ORDER BY attempt",
                (job,),
            ).fetchall()
            outcome = self._connection.execute(
                "SELECT outcome FROM outcomes WHERE job = ?", (job,)
            ).fetchone()
        attempts = [
            StoredAttempt(
                n, text, reason, None if grades is None else json.loads(grades)
            )
            for n, text, reason, grades in rows
        ]
        return StoredJob(attempts, None if outcome is None else outcome[0])

    def add_attempt(
        self, job: str, attempt: int, completion: str, finish_reason: str | None
    ) -> None:
        """Store a sampled completion before it is graded."""
        with self._lock:
            self._connection.execute(
                "INSERT OR REPLACE INTO attempts VALUES (?, ?, ?, ?, NULL, ?)",
                (job, attempt, completion, finish_reason, time.time()),
            )

    def set_grades(self, job: str, attempt: int, grades: Mapping[str, float]) -> None:
        """Store the grades of an attempt's completion."""
        with self._lock:
            self._connection.execute(
                "UPDATE attempts SET grades = ? WHERE job = ? AND attempt = ?",
                (json.dumps(dict(grades), sort_keys=True), job, attempt),
            )

    def finish(self, job: str, outcome: str, attempts: int) -> None:
        """Store the outcome of a job (``accepted`` or ``gave_up``)."""
        with self._lock:
            self._connection.execute(
                "INSERT OR REPLACE INTO outcomes VALUES (?, ?, ?, ?)",
                (job, outcome, attempts, time.time()),
            )

    def count_outcomes(self) -> int:
        """Return how many jobs have an outcome."""
        with self._lock:
            return self._connection.execute("SELECT COUNT(*) FROM outcomes").fetchone()[
                0
            ]

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._connection.close()

    def __enter__(self) -> SampleStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
