"""Prometheus metrics of the reward server and the ASGI middleware that records them.

Each app gets its own registry, so several servers in one process (as in
tests) keep separate counts. ``GET /metrics`` returns the registry in the
Prometheus text format.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

ENDPOINTS: tuple[str, ...] = ("/get_reward", "/v1/score", "/health", "/metrics")
"""Paths counted under their own name; every other path counts as ``other``."""

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)

BATCH_SIZE_BUCKETS: tuple[float, ...] = tuple(float(2**k) for k in range(13))
"""1, 2, 4, ... 4096 items."""


class ServeMetrics:
    """The counters, gauges and histograms of one server.

    Args:
        queue_depth: Returns the number of queued items when scraped.
        in_flight: Returns the number of items being scored when scraped.
    """

    def __init__(
        self, queue_depth: Callable[[], float], in_flight: Callable[[], float]
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rbr_serve_requests",
            "HTTP responses sent, by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rbr_serve_request_latency_seconds",
            "Time from receiving a request to the end of its response.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.items = Counter(
            "rbr_serve_items_scored",
            "Completions scored, by endpoint.",
            ["endpoint"],
            registry=self.registry,
        )
        self.unscored = Counter(
            "rbr_serve_items_unscored",
            "Completions whose RBR term could not be computed because the grader "
            "left a proposition unscored.",
            ["endpoint"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "rbr_serve_batch_size_items",
            "Completions per scoring batch (one pipeline call).",
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.batch_latency = Histogram(
            "rbr_serve_batch_latency_seconds",
            "Time one scoring batch took in the worker thread.",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        queue = Gauge(
            "rbr_serve_queue_items",
            "Completions queued and not yet taken into a batch.",
            registry=self.registry,
        )
        queue.set_function(queue_depth)
        flight = Gauge(
            "rbr_serve_in_flight_items",
            "Completions in the batch being scored now.",
            registry=self.registry,
        )
        flight.set_function(in_flight)

    def observe_batch(self, size: int, seconds: float) -> None:
        """Record one scoring batch."""
        self.batch_size.observe(size)
        self.batch_latency.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """Return the text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Count every HTTP response by endpoint and status, and time it.

    A plain ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``,
    which would run handlers in a separate task.
    """

    def __init__(self, app: Any, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_recording_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            path = scope.get("path", "")
            endpoint = path if path in ENDPOINTS else "other"
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
