"""The reward server over a real socket on 127.0.0.1, with a slowed grader.

A grader that sleeps before each grade call makes requests pile up, so
these tests can see batching, a full queue and shutdown with work in flight.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx

from rbr.serve import ServeSettings, create_app
from tests.serve.serve_support import (
    InstrumentedGrader,
    make_pipeline,
    openrlhf_body,
    running_server,
)

PROMPT = "How do I hotwire a car?"
REFUSAL = "I'm sorry, I can't help with that."


def reward_body(n: int = 1) -> dict[str, list[object]]:
    return openrlhf_body([PROMPT] * n, [REFUSAL] * n, ["K-R"] * n)


async def wait_until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.005)


def test_concurrent_requests_share_grader_calls(policy, weights_file, offline_grader):
    grader = InstrumentedGrader(offline_grader, delay_s=0.2)
    app = create_app(
        make_pipeline(policy, weights_file, grader),
        ServeSettings(max_batch_size=64, max_wait_ms=20),
    )
    n = 16

    async def send_all(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            calls = [client.post("/get_reward", json=reward_body()) for _ in range(n)]
            return await asyncio.gather(*calls)

    with running_server(app) as url:
        responses = asyncio.run(send_all(url))
        metrics = httpx.get(f"{url}/metrics").text
    assert [r.status_code for r in responses] == [200] * n
    assert len({r.json()["rewards"][0] for r in responses}) == 1
    assert grader.calls < n
    assert sum(grader.batch_sizes) == n
    assert f'rbr_serve_items_scored_total{{endpoint="/get_reward"}} {n}.0' in metrics


def test_full_queue_answers_503_at_once(policy, weights_file, offline_grader):
    grader = InstrumentedGrader(offline_grader, delay_s=0.3)
    app = create_app(
        make_pipeline(policy, weights_file, grader),
        ServeSettings(max_batch_size=1, max_wait_ms=0, max_queue=2),
    )
    batcher = app.state.rbr.batcher

    async def scenario(url: str) -> tuple[httpx.Response, float, list, httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            first = asyncio.ensure_future(
                client.post("/get_reward", json=reward_body())
            )
            await wait_until(lambda: grader.calls == 1)
            queued = [
                asyncio.ensure_future(client.post("/get_reward", json=reward_body()))
                for _ in range(2)
            ]
            await wait_until(lambda: batcher.pending_items == 2)
            started = time.perf_counter()
            rejected = await client.post("/get_reward", json=reward_body())
            elapsed = time.perf_counter() - started
            accepted = await asyncio.gather(first, *queued)
            after = await client.post("/get_reward", json=reward_body())
            return rejected, elapsed, accepted, after

    with running_server(app) as url:
        rejected, elapsed, accepted, after = asyncio.run(scenario(url))
        metrics = httpx.get(f"{url}/metrics").text
    assert rejected.status_code == 503
    assert rejected.json()["error"] == "queue_full"
    assert int(rejected.headers["retry-after"]) >= 1
    assert elapsed < 0.25
    assert [r.status_code for r in accepted] == [200, 200, 200]
    assert after.status_code == 200
    assert (
        'rbr_serve_requests_total{endpoint="/get_reward",status="503"} 1.0' in metrics
    )


def test_oversize_bodies_over_socket(policy, weights_file, offline_grader):
    app = create_app(
        make_pipeline(policy, weights_file, InstrumentedGrader(offline_grader)),
        ServeSettings(max_body_bytes=1000),
    )
    big = httpx.Request("POST", "/", json=reward_body(10)).content

    def chunks():
        for start in range(0, len(big), 256):
            yield big[start : start + 256]

    with running_server(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        declared = client.post(
            "/get_reward", content=big, headers={"Content-Type": "application/json"}
        )
        streamed = client.post("/get_reward", content=chunks())
        after = client.post("/get_reward", json=reward_body())
    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert streamed.json()["error"] == "body_too_large"
    assert after.status_code == 200


def test_shutdown_finishes_request_in_flight(policy, weights_file, offline_grader):
    grader = InstrumentedGrader(offline_grader, delay_s=0.3)
    app = create_app(make_pipeline(policy, weights_file, grader))
    responses: list[httpx.Response] = []

    with running_server(app) as url:
        sender = threading.Thread(
            target=lambda: responses.append(
                httpx.post(f"{url}/get_reward", json=reward_body(), timeout=10)
            )
        )
        sender.start()
        deadline = time.monotonic() + 5
        while grader.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert grader.calls == 1
    sender.join(timeout=10)
    assert [r.status_code for r in responses] == [200]
    assert app.state.rbr.batcher.closing
    assert not grader.closed
