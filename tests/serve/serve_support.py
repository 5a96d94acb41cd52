"""Helpers for the reward server tests: an instrumented grader, apps and servers.

Servers run on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from fastapi import FastAPI

from rbr.data.types import Sample
from rbr.fitting.weights import RBRWeights
from rbr.graders.base import Grader, GradeResult, Unscored
from rbr.policy.spec import Policy, Proposition
from rbr.reward.pipeline import RewardPipeline
from rbr.reward.rule_based import RuleBasedReward

UNSCORABLE = "[unscorable]"
"""Completions containing this text get one unscored proposition."""


class InstrumentedGrader(Grader):
    """Wrap a grader: sleep before each grade call, count calls, leave some unscored.

    It keeps the wrapped grader's identity, so weights fitted with that
    grader load with this one.
    """

    def __init__(self, inner: Grader, *, delay_s: float = 0.0) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.batch_sizes: list[int] = []
        self.closed = False
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return self.inner.identity

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.batch_sizes)

    def grade(
        self, samples: Sequence[Sample], propositions: Sequence[Proposition]
    ) -> GradeResult:
        with self._lock:
            self.batch_sizes.append(len(samples))
        if self.delay_s:
            time.sleep(self.delay_s)
        result = self.inner.grade(samples, propositions)
        probabilities = np.array(result.probabilities)
        unscored = list(result.unscored)
        for i, sample in enumerate(samples):
            if UNSCORABLE in sample.completion:
                probabilities[i, 0] = np.nan
                unscored.append(
                    Unscored(i, propositions[0].name, "timeout", "test grader")
                )
        return GradeResult(result.propositions, probabilities, unscored)

    def close(self) -> None:
        self.closed = True


def make_pipeline(
    policy: Policy,
    weights_file: Path,
    grader: Grader,
    *,
    base_normalization: str = "none",
) -> RewardPipeline:
    reward = RuleBasedReward(policy, RBRWeights.load(weights_file), grader)
    return RewardPipeline(reward, base_normalization=base_normalization)


@contextlib.asynccontextmanager
async def asgi_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client calling the app in memory, with startup and shutdown run."""
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        yield client


@contextlib.contextmanager
def running_server(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 and a free port; yield its URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start within 10 s")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if thread.is_alive():
            raise RuntimeError("the test server did not stop within 10 s")


def openrlhf_body(
    prompts: Sequence[str], completions: Sequence[str], labels: Sequence[object]
) -> dict[str, list[object]]:
    """Build a /get_reward body the way OpenRLHF does with a ChatML template."""
    chat_prompts = [
        f"<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n" for p in prompts
    ]
    queries = [f"{p}{c}<|im_end|>" for p, c in zip(chat_prompts, completions)]
    return {"query": queries, "prompts": chat_prompts, "labels": list(labels)}
