"""The reward server: a FastAPI app around one :class:`RewardPipeline`.

Endpoints:

- ``POST /get_reward``: OpenRLHF's remote reward protocol (see
  :mod:`rbr.serve.openrlhf`).
- ``POST /v1/score``: conversations as messages, with the full breakdown.
- ``GET /health``: readiness, grader identity and policy hash.
- ``GET /metrics``: Prometheus text format.

Concurrent requests are merged into grader batches by a
:class:`~rbr.serve.batching.MicroBatcher`. Error responses carry a JSON body
``{"error": code, "message": text, "fields": [...]}``.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from rbr import __version__
from rbr.data.types import Message
from rbr.errors import RbrError, WeightsError
from rbr.integrations.openrlhf_text import DEFAULT_END_TOKENS
from rbr.reward.pipeline import RewardPipeline, RewardRequest
from rbr.reward.routing import RoutingError
from rbr.reward.rule_based import RewardBreakdown
from rbr.serve.batching import (
    BatcherClosedError,
    MicroBatcher,
    QueueFullError,
    SubmissionTooLargeError,
)
from rbr.serve.metrics import MetricsMiddleware, ServeMetrics
from rbr.serve.openrlhf import openrlhf_requests, openrlhf_response
from rbr.serve.schemas import (
    OpenRLHFRequest,
    ScoreItem,
    ScoreRequest,
    ServeError,
    field_error,
    validation_error,
)

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


class ServeConfigError(RbrError):
    """A reward server setting is out of range."""


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    """Limits and options of the reward server.

    Attributes:
        max_batch_size: Maximum completions per grader batch.
        max_wait_ms: Maximum wait for a batch to fill, in milliseconds (see
            :class:`~rbr.serve.batching.MicroBatcher`).
        max_queue: Maximum completions waiting to be scored; requests beyond
            it get 503.
        max_body_bytes: Maximum request body size in bytes; larger bodies
            get 413.
        token: Bearer token required on every endpoint but ``/health``;
            None disables authentication.
        unscored_rbr: RBR term used in ``/get_reward`` rewards when the
            grader could not score a needed proposition.
        end_tokens: Tokens stripped from the end of OpenRLHF completions.
        shutdown_timeout_s: How long shutdown waits for queued items.
    """

    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    max_queue: int = 16384
    max_body_bytes: int = 64 * MIB
    token: str | None = field(default=None, repr=False)
    unscored_rbr: float = 0.0
    end_tokens: tuple[str, ...] = DEFAULT_END_TOKENS
    shutdown_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ServeConfigError(
                    f"{name} must be at least 1, got {getattr(self, name)}"
                )
        if self.max_wait_ms < 0 or self.shutdown_timeout_s < 0:
            raise ServeConfigError(
                "max_wait_ms and shutdown_timeout_s must be 0 or more, got "
                f"{self.max_wait_ms} and {self.shutdown_timeout_s}"
            )
        if not math.isfinite(self.unscored_rbr):
            raise ServeConfigError(
                f"unscored_rbr must be a finite number, got {self.unscored_rbr}"
            )
        if self.token is not None and not self.token.strip():
            raise ServeConfigError("the bearer token is empty; pass a non-empty token")


@dataclass
class ServerState:
    """State shared by the handlers: the pipeline, the batcher and the metrics."""

    pipeline: RewardPipeline
    settings: ServeSettings
    batcher: MicroBatcher
    metrics: ServeMetrics
    rejected_at: float = 0.0
    rejected_since_log: int = 0


def create_app(
    pipeline: RewardPipeline, settings: ServeSettings | None = None
) -> FastAPI:
    """Build the server app; the caller keeps ownership of ``pipeline``.

    The app serves one startup-to-shutdown cycle: after shutdown its scoring
    endpoints return 503.

    Args:
        pipeline: Scores the completions; it is not closed with the app.
        settings: Limits and options; None uses the defaults.
    """
    settings = settings or ServeSettings()
    state = _build_state(pipeline, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logger.info(
            "reward server ready: grader %s, policy %s (hash %s), max batch %d "
            "items, max wait %.1f ms, queue %d items",
            pipeline.reward.grader.identity,
            pipeline.policy.name,
            pipeline.policy.content_hash[:12],
            settings.max_batch_size,
            settings.max_wait_ms,
            settings.max_queue,
        )
        yield
        logger.info(
            "reward server stopping: %d items queued", state.batcher.pending_items
        )
        await state.batcher.stop(settings.shutdown_timeout_s)
        logger.info("reward server stopped")

    app = FastAPI(
        title="rbr reward server",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.rbr = state
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_exception_handler(ServeError, _serve_error_response)
    app.add_exception_handler(StarletteHTTPException, _http_error_response)
    app.add_exception_handler(Exception, _unexpected_error_response)
    app.add_api_route("/get_reward", _json_errors(_get_reward), methods=["POST"])
    app.add_api_route("/v1/score", _json_errors(_score_items), methods=["POST"])
    app.add_api_route("/health", _health, methods=["GET"])
    app.add_api_route("/metrics", _metrics, methods=["GET"])
    return app


def _build_state(pipeline: RewardPipeline, settings: ServeSettings) -> ServerState:
    merge = pipeline.base_normalization == "none"
    if not merge:
        logger.info(
            "base rewards are normalized per prompt within a call (%s), so each "
            "request is scored alone instead of merged with others",
            pipeline.base_normalization,
        )
    # The gauges read the batcher when scraped, after it exists.
    metrics = ServeMetrics(
        queue_depth=lambda: batcher.pending_items,
        in_flight=lambda: batcher.in_flight_items,
    )
    batcher = MicroBatcher(
        pipeline.score,
        max_batch_size=settings.max_batch_size,
        max_wait_s=settings.max_wait_ms / 1000,
        max_queue=settings.max_queue,
        merge_submissions=merge,
        on_batch=metrics.observe_batch,
    )
    return ServerState(pipeline, settings, batcher, metrics)


Handler = Callable[[Request], Awaitable[Response]]


def _json_errors(handler: Handler) -> Handler:
    """Give a scoring endpoint a request id and a JSON 500 for unexpected errors.

    The id is in ``request.state.request_id`` and the ``X-Request-ID``
    header. An error that is not a :class:`ServeError` is logged with its
    traceback and the id, and the client gets ``{"error": "internal_error"}``.
    """

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        request_id = uuid.uuid4().hex[:12]
        request.state.request_id = request_id
        try:
            return await handler(request)
        except (ServeError, StarletteHTTPException):
            raise
        except Exception as error:
            logger.exception(
                "request %s to %s failed: %s", request_id, request.url.path, error
            )
            body = {
                "error": "internal_error",
                "message": f"internal server error ({type(error).__name__}); the "
                f"server log has the details under request id {request_id}",
            }
            return JSONResponse(
                body, status_code=500, headers={"X-Request-ID": request_id}
            )

    return wrapper


async def _get_reward(request: Request) -> Response:
    """Score OpenRLHF samples: ``{"query", "prompts", "labels"}`` in, rewards out."""
    state = _state(request)
    _check_token(request, state.settings)
    body = await _read_json(request, state.settings.max_body_bytes)
    payload = _validate(OpenRLHFRequest, body)
    request_id = request.state.request_id
    requests = openrlhf_requests(
        payload,
        state.pipeline.policy,
        end_tokens=state.settings.end_tokens,
        request_id=request_id,
    )
    _check_routing(state.pipeline, requests, "labels")
    results = await _score(state, requests, "/get_reward", request_id)
    reply = openrlhf_response(results, unscored_rbr=state.settings.unscored_rbr)
    return JSONResponse(reply, headers={"X-Request-ID": request_id})


async def _score_items(request: Request) -> Response:
    """Score conversations given as messages; return every breakdown."""
    state = _state(request)
    _check_token(request, state.settings)
    body = await _read_json(request, state.settings.max_body_bytes)
    if isinstance(body, list):
        body = {"items": body}
    payload = _validate(ScoreRequest, body)
    request_id = request.state.request_id
    requests = [
        _score_request(item, i, request_id) for i, item in enumerate(payload.items)
    ]
    _check_routing(state.pipeline, requests, "items")
    results = await _score(state, requests, "/v1/score", request_id)
    reply = {
        "results": [
            _breakdown_json(item.id, result)
            for item, result in zip(payload.items, results)
        ]
    }
    return JSONResponse(reply, headers={"X-Request-ID": request_id})


async def _health(request: Request) -> Response:
    """Report readiness, the grader identity and the policy hash; needs no token."""
    state = _state(request)
    pipeline = state.pipeline
    ready = not state.batcher.closing
    body = {
        "status": "ok" if ready else "shutting_down",
        "ready": ready,
        "version": __version__,
        "grader": pipeline.reward.grader.identity,
        "weights_grader": pipeline.reward.weights.grader_identity,
        "policy": pipeline.policy.name,
        "policy_hash": pipeline.policy.content_hash,
        "response_types": list(pipeline.reward.weights.response_types),
        "queue_items": state.batcher.pending_items,
        "max_batch_size": state.settings.max_batch_size,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


async def _metrics(request: Request) -> Response:
    """Return the metrics in the Prometheus text format."""
    state = _state(request)
    _check_token(request, state.settings)
    content, media_type = state.metrics.render()
    return Response(content, media_type=media_type)


def _state(request: Request) -> ServerState:
    return request.app.state.rbr


def _check_token(request: Request, settings: ServeSettings) -> None:
    if settings.token is None:
        return
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    valid = scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode("utf-8"), settings.token.encode("utf-8")
    )
    if not valid:
        raise ServeError(
            401,
            "unauthorized",
            "missing or invalid bearer token; send 'Authorization: Bearer <token>' "
            "with the token the server was started with",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def _read_json(request: Request, limit: int) -> Any:
    """Read the body up to ``limit`` bytes and parse it as JSON."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ServeError(
                400, "invalid_header", f"invalid Content-Length header {declared!r}"
            )
        if int(declared) > limit:
            raise _too_large(int(declared), limit)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as error:
        # JSONDecodeError and UnicodeDecodeError are both ValueErrors.
        raise ServeError(
            400, "invalid_json", f"the request body is not valid JSON: {error}"
        ) from None


def _too_large(size: int, limit: int) -> ServeError:
    return ServeError(
        413,
        "body_too_large",
        f"the request body has at least {size} bytes; the limit is {limit} "
        "(--max-body-bytes); send fewer items per request",
    )


def _validate(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise ServeError(
            422,
            "invalid_request",
            f"the request body must be a JSON object, got {type(body).__name__}",
        )
    try:
        return model.model_validate(body)
    except PydanticValidationError as error:
        raise validation_error(error) from None


def _score_request(item: ScoreItem, index: int, request_id: str) -> RewardRequest:
    return RewardRequest(
        tuple(Message(m.role, m.content) for m in item.prompt),
        item.completion,
        item.response_type,
        item.category,
        item.base_reward,
        item.id or f"{request_id}:{index}",
    )


def _check_routing(
    pipeline: RewardPipeline, requests: Sequence[RewardRequest], column: str
) -> None:
    """Reject, before queueing, items whose response type cannot be decided.

    Checking here keeps one bad item from failing a batch merged with other
    clients' items.
    """
    router = pipeline.router
    weights = pipeline.reward.weights
    for i, item in enumerate(requests):
        field_name = f"{column}[{i}]"
        try:
            known, name = router.resolve(item.response_type, item.category)
            if name is not None:
                weights.for_type(name)
        except (RoutingError, WeightsError) as error:
            raise field_error(field_name, str(error), code="routing_error") from None
        if not known and router.classifier is None:
            raise field_error(
                field_name,
                "no response type or category was given and the server has no "
                "prompt classifier; send one (for OpenRLHF, a label column via "
                "--label_key) or configure a classifier",
                code="routing_error",
            )


async def _score(
    state: ServerState,
    requests: Sequence[RewardRequest],
    endpoint: str,
    request_id: str,
) -> list[RewardBreakdown]:
    try:
        results = await state.batcher.submit(requests)
    except QueueFullError as error:
        _log_rejection(state, str(error))
        raise ServeError(
            503,
            "queue_full",
            str(error),
            headers={"Retry-After": str(error.retry_after_s)},
        ) from None
    except SubmissionTooLargeError as error:
        raise ServeError(413, "too_many_items", str(error)) from None
    except BatcherClosedError as error:
        raise ServeError(
            503, "shutting_down", str(error), headers={"Retry-After": "5"}
        ) from None
    except RoutingError as error:
        raise ServeError(422, "routing_error", str(error)) from None
    except Exception as error:
        logger.exception(
            "request %s: scoring %d items failed", request_id, len(requests)
        )
        raise ServeError(
            500,
            "scoring_failed",
            f"scoring failed: {type(error).__name__}: {error} (request id "
            f"{request_id})",
            headers={"X-Request-ID": request_id},
        ) from None
    unscored = sum(
        1 for r in results if r.response_type is not None and r.total is None
    )
    state.metrics.items.labels(endpoint).inc(len(results))
    if unscored:
        state.metrics.unscored.labels(endpoint).inc(unscored)
    return results


def _log_rejection(state: ServerState, message: str) -> None:
    """Log a full queue at most every 10 s, with the count since the last line."""
    state.rejected_since_log += 1
    now = time.monotonic()
    if now - state.rejected_at >= 10.0:
        logger.warning(
            "%s (%d requests rejected since the last report)",
            message,
            state.rejected_since_log,
        )
        state.rejected_at = now
        state.rejected_since_log = 0


def _breakdown_json(item_id: str | None, result: RewardBreakdown) -> dict[str, Any]:
    data = result.to_dict()
    data["propositions"] = {k: _json_float(v) for k, v in result.propositions.items()}
    data["classes"] = {k: _json_float(v) for k, v in result.classes.items()}
    return {"id": item_id, **data}


def _json_float(value: float) -> float | None:
    """Return None for NaN (an unscored cell), which JSON cannot hold."""
    return value if math.isfinite(value) else None


async def _serve_error_response(request: Request, error: Exception) -> Response:
    assert isinstance(error, ServeError)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _http_error_response(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = str(error.detail)
    if error.status_code in codes:
        message = (
            f"no endpoint {request.method} {request.url.path}; the server has "
            "POST /get_reward, POST /v1/score, GET /health and GET /metrics"
        )
    body = {"error": codes.get(error.status_code, "http_error"), "message": message}
    return JSONResponse(body, status_code=error.status_code, headers=error.headers)


async def _unexpected_error_response(request: Request, error: Exception) -> Response:
    # Starlette calls this for errors outside the scoring handlers, which
    # build their own responses. It then re-raises the error so the server logs it.
    body = {
        "error": "internal_error",
        "message": f"internal server error ({type(error).__name__})",
    }
    return JSONResponse(body, status_code=500)
