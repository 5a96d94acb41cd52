"""BatchingScorer: concurrent callers share pipeline calls and keep their own errors."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rbr.data.types import Message
from rbr.integrations.batching import BatchingScorer
from rbr.reward.pipeline import RewardRequest
from rbr.reward.rule_based import RewardBreakdown


class SlowPipeline:
    """Scores each request with the length of its completion, slowly.

    A completion of "boom" makes the whole call raise, like a bad row does.
    """

    def __init__(self, delay_s: float = 0.05, base_normalization: str = "none") -> None:
        self.delay_s = delay_s
        self.base_normalization = base_normalization
        self.batches: list[list[str]] = []
        self.modes: list[str] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def score(self, requests, *, unlabelled="classify"):
        self.modes.append(unlabelled)
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.delay_s)
            completions = [r.completion for r in requests]
            self.batches.append(completions)
            if "boom" in completions:
                raise ValueError("bad request in batch")
            return [
                RewardBreakdown(float(len(c)), None, float(len(c)), None)
                for c in completions
            ]
        finally:
            with self._lock:
                self.active -= 1


def request(completion: str) -> RewardRequest:
    return RewardRequest((Message("user", "q"),), completion)


def test_concurrent_callers_share_calls():
    pipeline = SlowPipeline()
    scorer = BatchingScorer(pipeline, wait_s=0.05)
    texts = ["x" * n for n in range(1, 17)]

    def score(text):
        return scorer.score([request(text)])[0].total

    with ThreadPoolExecutor(max_workers=16) as pool:
        totals = list(pool.map(score, texts))
    assert totals == [float(len(t)) for t in texts]
    assert len(pipeline.batches) < len(texts)
    assert pipeline.max_active == 1


def test_no_merging_with_base_normalization():
    pipeline = SlowPipeline(delay_s=0.02, base_normalization="center")
    scorer = BatchingScorer(pipeline, wait_s=0.05)
    callers = [["a", "bb"], ["ccc"], ["dddd", "e"]]

    def score(texts):
        return [r.total for r in scorer.score([request(t) for t in texts])]

    with ThreadPoolExecutor(max_workers=3) as pool:
        totals = list(pool.map(score, callers))
    assert totals == [[1.0, 2.0], [3.0], [4.0, 1.0]]
    assert sorted(map(sorted, pipeline.batches)) == sorted(map(sorted, callers))
    assert pipeline.max_active == 1


def test_error_reaches_only_its_caller():
    pipeline = SlowPipeline()
    scorer = BatchingScorer(pipeline, wait_s=0.05)
    texts = ["ok", "boom", "fine", "good"]

    def score(text):
        try:
            return scorer.score([request(text)])[0].total
        except ValueError as error:
            return str(error)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(score, texts))
    assert results == [2.0, "bad request in batch", 4.0, 4.0]


def test_max_batch_keeps_caller_requests_together():
    pipeline = SlowPipeline(delay_s=0.0)
    scorer = BatchingScorer(pipeline, wait_s=0.0, max_batch=2)
    results = scorer.score([request("a"), request("bb"), request("ccc")])
    assert [r.total for r in results] == [1.0, 2.0, 3.0]
    assert pipeline.batches == [["a", "bb", "ccc"]]


def test_empty_request_list():
    pipeline = SlowPipeline(delay_s=0.0)
    assert BatchingScorer(pipeline).score([]) == []
    assert pipeline.batches == []


def test_unlabelled_mode_reaches_pipeline():
    pipeline = SlowPipeline(delay_s=0.0)
    BatchingScorer(pipeline).score([request("a")])
    BatchingScorer(pipeline, unlabelled="no_rbr").score([request("b")])
    assert pipeline.modes == ["classify", "no_rbr"]


@pytest.mark.parametrize(
    ("option", "value"),
    [("wait_s", -1.0), ("max_batch", 0), ("unlabelled", "skip")],
)
def test_invalid_options_rejected(option, value):
    with pytest.raises(ValueError, match=option):
        BatchingScorer(SlowPipeline(), **{option: value})
