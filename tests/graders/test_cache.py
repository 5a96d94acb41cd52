"""Tests of the SQLite grade cache and the caching grader wrapper."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from fake_openai_server import Action, FakeOpenAIServer, Key, TopTokens

from rbr.data.types import Message, Sample
from rbr.errors import GraderError
from rbr.graders.base import Grader, GradeResult, Unscored
from rbr.graders.cache import (
    CachedGrader,
    GradeCache,
    default_cache_path,
    grader_hash,
    proposition_hash,
)
from rbr.graders.openai_compat import OpenAICompatibleGrader
from rbr.graders.ratelimit import RequestLimits
from rbr.policy.spec import Proposition

TESTS_DIR = Path(__file__).resolve().parent
NAMES = ["apology", "judgement", "disclaimer", "third_person", "provides_resources"]
PROPOSITIONS = [
    Proposition(name=n, instruction=f"Decide whether {n} holds.") for n in NAMES
]


def make_samples(count: int) -> list[Sample]:
    return [
        Sample(
            prompt=(Message("user", f"Request number {i}."),),
            completion=f"Reply for sample-{i}.",
            sample_id=f"s{i}",
        )
        for i in range(count)
    ]


def expected_probability(sample_tag: str, name: str) -> float:
    """Return the P(yes) the kill-test server replies with, distinct per cell."""
    return (int(sample_tag) + 1) / 100 + NAMES.index(name) / 10


def top_for(key: Key) -> TopTokens:
    p = expected_probability(*key)
    return [("yes", math.log(p)), ("no", math.log(1 - p))]


class TableGrader(Grader):
    """Grades from a function of (sample, proposition); None becomes Unscored."""

    def __init__(
        self,
        table: Callable[[Sample, Proposition], float | None],
        name: str = "table",
    ) -> None:
        self.table = table
        self.name = name
        self.calls: list[tuple[tuple[str | None, ...], tuple[str, ...]]] = []
        self.lock = threading.Lock()

    @property
    def identity(self) -> str:
        return self.name

    def grade(
        self, samples: Sequence[Sample], propositions: Sequence[Proposition]
    ) -> GradeResult:
        with self.lock:
            self.calls.append(
                (
                    tuple(s.sample_id for s in samples),
                    tuple(p.name for p in propositions),
                )
            )
        names = tuple(p.name for p in propositions)
        values = np.full((len(samples), len(names)), np.nan)
        unscored = []
        for i, sample in enumerate(samples):
            for j, proposition in enumerate(propositions):
                value = self.table(sample, proposition)
                if value is None:
                    unscored.append(Unscored(i, proposition.name, "test_failure"))
                else:
                    values[i, j] = value
        return GradeResult(names, values, unscored)


def table_value(sample: Sample, proposition: Proposition) -> float:
    return expected_probability(sample.sample_id.removeprefix("s"), proposition.name)


def test_cache_round_trip_persists(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "grades.sqlite"
    cache = GradeCache(path)
    cache.store("g", "t", "sample", "prop", 0.25)
    cache.store("g", "t", "sample", "prop2", 1.0)
    cache.close()
    reopened = GradeCache(path)
    assert reopened.lookup("g", "t", "sample") == {"prop": 0.25, "prop2": 1.0}
    assert reopened.lookup("g", "other", "sample") == {}
    assert len(reopened) == 2


def test_cache_uses_wal_mode(tmp_path: Path) -> None:
    GradeCache(tmp_path / "grades.sqlite").close()
    with sqlite3.connect(tmp_path / "grades.sqlite") as connection:
        mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_cache_rejects_nan_and_range(tmp_path: Path) -> None:
    cache = GradeCache(tmp_path / "grades.sqlite")
    with pytest.raises(ValueError, match="NaN|nan"):
        cache.store("g", "t", "s", "p", float("nan"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cache.store("g", "t", "s", "p", 1.5)
    assert len(cache) == 0


def test_cache_unreadable_file_names_fix(tmp_path: Path) -> None:
    path = tmp_path / "grades.sqlite"
    path.write_bytes(b"this is not an sqlite database" * 100)
    with pytest.raises(GraderError, match="--no-cache"):
        GradeCache(path)


def test_default_path_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBR_CACHE_DIR", str(tmp_path))
    assert default_cache_path() == tmp_path / "grades.sqlite"
    monkeypatch.delenv("RBR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_path() == tmp_path / "xdg" / "rbr" / "grades.sqlite"


def test_second_run_served_from_cache(tmp_path: Path) -> None:
    inner = TableGrader(table_value)
    grader = CachedGrader(inner, tmp_path / "grades.sqlite")
    samples = make_samples(3)
    first = grader.grade(samples, PROPOSITIONS)
    second = grader.grade(samples, PROPOSITIONS)
    assert len(inner.calls) == 1
    np.testing.assert_array_equal(first.probabilities, second.probabilities)
    assert second.probabilities[2, 1] == pytest.approx(
        table_value(samples[2], PROPOSITIONS[1])
    )
    assert grader.stats.hits == 15
    assert grader.stats.misses == 15


def test_only_missing_cells_graded_grouped(tmp_path: Path) -> None:
    inner = TableGrader(table_value)
    grader = CachedGrader(inner, tmp_path / "grades.sqlite")
    samples = make_samples(4)
    grader.grade(samples[:2], PROPOSITIONS[:2])
    grader.grade(samples[2:3], PROPOSITIONS[:4])
    inner.calls.clear()
    result = grader.grade(samples, PROPOSITIONS)
    assert sorted(inner.calls) == sorted(
        [
            (("s0", "s1"), tuple(NAMES[2:])),
            (("s2",), (NAMES[4],)),
            (("s3",), tuple(NAMES)),
        ]
    )
    assert not np.isnan(result.probabilities).any()
    assert result.probabilities[3, 4] == pytest.approx(
        table_value(samples[3], PROPOSITIONS[4])
    )


def test_unscored_never_cached(tmp_path: Path) -> None:
    def flaky(sample: Sample, proposition: Proposition) -> float | None:
        if sample.sample_id == "s1" and proposition.name == "judgement":
            return None
        return 0.5

    inner = TableGrader(flaky)
    grader = CachedGrader(inner, tmp_path / "grades.sqlite")
    samples = make_samples(2)
    first = grader.grade(samples, PROPOSITIONS)
    assert [(u.sample_index, u.proposition) for u in first.unscored] == [
        (1, "judgement")
    ]
    assert len(grader.cache) == 9
    inner.calls.clear()
    second = grader.grade(samples, PROPOSITIONS)
    assert inner.calls == [(("s1",), ("judgement",))]
    assert [(u.sample_index, u.reason) for u in second.unscored] == [
        (1, "test_failure")
    ]


def test_keys_separate_grader_and_wording(tmp_path: Path) -> None:
    path = tmp_path / "grades.sqlite"
    samples = make_samples(1)
    CachedGrader(TableGrader(lambda s, p: 0.1, "a"), path).grade(samples, PROPOSITIONS)
    other_grader = TableGrader(lambda s, p: 0.9, "b")
    result = CachedGrader(other_grader, path).grade(samples, PROPOSITIONS)
    assert len(other_grader.calls) == 1
    assert result.probabilities[0, 0] == pytest.approx(0.9)
    reworded = [p.model_copy(update={"instruction": "Reworded."}) for p in PROPOSITIONS]
    same_grader = TableGrader(lambda s, p: 0.4, "a")
    result = CachedGrader(same_grader, path).grade(samples, reworded)
    assert len(same_grader.calls) == 1
    assert result.probabilities[0, 0] == pytest.approx(0.4)
    assert proposition_hash(reworded[0]) != proposition_hash(PROPOSITIONS[0])


def test_duplicate_samples_graded_once(tmp_path: Path) -> None:
    inner = TableGrader(table_value)
    samples = make_samples(2)
    batch = [samples[0], samples[1], samples[0]]
    seen: list[tuple[int, str]] = []
    result = CachedGrader(inner, tmp_path / "grades.sqlite").grade(
        batch, PROPOSITIONS, on_result=lambda i, n, v: seen.append((i, n))
    )
    assert inner.calls == [(("s0", "s1"), tuple(NAMES))]
    np.testing.assert_array_equal(result.probabilities[2], result.probabilities[0])
    assert sorted(seen) == sorted((i, n) for i in range(3) for n in NAMES)


def test_concurrent_threads_share_cache(tmp_path: Path) -> None:
    inner = TableGrader(table_value)
    grader = CachedGrader(inner, tmp_path / "grades.sqlite")
    samples = make_samples(20)
    results: list[GradeResult] = []
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            chunk = samples[offset:] + samples[:offset]
            results.append(grader.grade(chunk, PROPOSITIONS))
        except BaseException as error:  # collected for the assert below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(5 * k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 4
    assert len(grader.cache) == 100
    for result in results:
        assert not np.isnan(result.probabilities).any()


def test_streaming_grader_keeps_grades_on_failure(tmp_path: Path) -> None:
    script = {("6", "apology"): [Action("status", status=404)]}
    limits = RequestLimits(max_concurrency=1, timeout_s=2.0)
    path = tmp_path / "grades.sqlite"
    with FakeOpenAIServer(NAMES, script=script, top_for=top_for) as server:
        inner = OpenAICompatibleGrader(model="m", base_url=server.url, limits=limits)
        grader = CachedGrader(inner, path)
        with pytest.raises(GraderError, match="404"):
            grader.grade(make_samples(10), PROPOSITIONS)
        assert len(grader.cache) == 30
        assert len(server.requests) == 31


CHILD = textwrap.dedent(
    """
    import json
    import sys

    from test_cache import PROPOSITIONS, make_samples

    from rbr.graders.cache import CachedGrader
    from rbr.graders.openai_compat import OpenAICompatibleGrader
    from rbr.graders.ratelimit import RequestLimits

    url, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    limits = RequestLimits(max_concurrency=int(sys.argv[4]), timeout_s=10.0)
    inner = OpenAICompatibleGrader(model="m", base_url=url, limits=limits)
    result = CachedGrader(inner, path).grade(make_samples(count), PROPOSITIONS)
    print(json.dumps({
        "probabilities": result.probabilities.tolist(),
        "unscored": len(result.unscored),
    }))
    """
)
KILL_SAMPLES = 40
KILL_CONCURRENCY = 4
KILL_AFTER = 60


def cached_cells(path: Path, count: int) -> dict[Key, float]:
    """Read the cache file directly and map rows back to (sample tag, name)."""
    by_sample = {
        s.content_key(): s.sample_id.removeprefix("s") for s in make_samples(count)
    }
    by_prop = {proposition_hash(p): p.name for p in PROPOSITIONS}
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT sample, proposition, probability FROM grades"
        ).fetchall()
    return {(by_sample[s], by_prop[p]): value for s, p, value in rows}


def start_child(script: Path, url: str, path: Path) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [
            sys.executable,
            str(script),
            url,
            str(path),
            str(KILL_SAMPLES),
            str(KILL_CONCURRENCY),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_kill_nine_loses_no_finished_grade(tmp_path: Path) -> None:
    """SIGKILL mid-run keeps every answered cell; the rerun requests only the rest.

    The server answers the first KILL_AFTER requests and holds the next ones
    without a reply. Each of the child's KILL_CONCURRENCY workers sends its
    next request only after storing its previous grade, so once the server
    has received KILL_AFTER + KILL_CONCURRENCY requests, every answered cell
    must be in the cache and exactly the held requests are in flight.
    """
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    path = tmp_path / "grades.sqlite"
    all_keys = {(str(i), n) for i in range(KILL_SAMPLES) for n in NAMES}
    with FakeOpenAIServer(NAMES, top_for=top_for, hold_after=KILL_AFTER) as server:
        child = start_child(script, server.url, path)
        deadline = time.monotonic() + 60
        while len(server.requests) < KILL_AFTER + KILL_CONCURRENCY:
            assert child.poll() is None, child.communicate()[1]
            assert time.monotonic() < deadline, "the child sent too few requests"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL
        before_kill = [r.key for r in server.requests]
        cached = cached_cells(path, KILL_SAMPLES)

        # Every answered cell survived, and only the held requests were lost.
        answered = set(before_kill[:KILL_AFTER])
        held = set(before_kill[KILL_AFTER:])
        assert len(before_kill) == KILL_AFTER + KILL_CONCURRENCY
        assert set(cached) == answered
        assert len(held) == KILL_CONCURRENCY
        assert not held & answered

        server.release()
        rerun = start_child(script, server.url, path)
        stdout, stderr = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, stderr
        after_kill = [r.key for r in server.requests[len(before_kill) :]]

    # The rerun requests each uncached cell once: the held ones again, and
    # every cell never sent before. No answered cell is requested again.
    assert not set(after_kill) & answered
    assert len(after_kill) == len(set(after_kill))
    assert set(after_kill) == all_keys - answered
    assert held <= set(after_kill)
    final = cached_cells(path, KILL_SAMPLES)
    assert set(final) == all_keys
    for (tag, name), value in final.items():
        assert value == pytest.approx(expected_probability(tag, name), abs=1e-12)
    for key, value in cached.items():
        assert final[key] == value
    output = json.loads(stdout)
    assert output["unscored"] == 0
    assert output["probabilities"][7][3] == pytest.approx(
        expected_probability("7", NAMES[3])
    )


def test_grader_hash_tracks_identity() -> None:
    assert grader_hash(TableGrader(table_value, "x")) == grader_hash(
        TableGrader(table_value, "x")
    )
    assert grader_hash(TableGrader(table_value, "x")) != grader_hash(
        TableGrader(table_value, "y")
    )
