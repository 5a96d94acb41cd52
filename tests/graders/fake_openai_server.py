"""A scripted OpenAI-compatible HTTP server on 127.0.0.1 for grader tests.

It serves ``POST /v1/chat/completions`` and ``POST /v1/completions`` in the
OpenAI reply shapes with first-token log probabilities. Each request is
matched to a (sample tag, proposition) key: the sample tag is the first
``sample-<id>`` in the prompt, and the proposition is the known proposition
name that occurs last in the prompt (prompts end with the question). The
n-th request for a key performs the n-th scripted action for that key, and
replies normally once the script is used up. Every request is recorded.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Key = tuple[str, str]
TopTokens = list[tuple[str, float]]

SAMPLE_TAG = re.compile(r"\bsample-(\w+)\b")

DEFAULT_TOP: TopTokens = [
    (" Yes", math.log(0.30)),
    ("yes", math.log(0.20)),
    ("NO", math.log(0.10)),
    (" no", math.log(0.15)),
    ("Maybe", math.log(0.05)),
]
"""Top tokens of a normal answer: P(yes) = 0.50 / (0.50 + 0.25)."""

DEFAULT_P_YES = 0.5 / 0.75

NO_YES_NO_TOP: TopTokens = [("Maybe", math.log(0.6)), ("I", math.log(0.3))]


@dataclass(frozen=True, slots=True)
class Action:
    """What the server does with one request.

    Attributes:
        kind: ``answer``, ``status`` (an HTTP error), ``sleep`` (answer after
            ``delay_s``, past the client's timeout), ``bad_json`` (a 200 whose
            body is not JSON), ``missing_field`` (a 200 without logprobs) or
            ``disconnect`` (close the connection without a reply, which the
            client sees as a connection error).
        status: HTTP status for ``status``.
        retry_after: ``Retry-After`` header value for ``status``, if any.
        top: Top tokens for ``answer``; None uses the server's default.
        delay_s: Seconds to wait before replying.
    """

    kind: str = "answer"
    status: int = 200
    retry_after: str | None = None
    top: TopTokens | None = None
    delay_s: float = 0.0


ANSWER = Action()
NO_YES_NO = Action(top=NO_YES_NO_TOP)
BAD_JSON = Action("bad_json")
MISSING_FIELD = Action("missing_field")
SERVER_ERROR = Action("status", status=500)
DISCONNECT = Action("disconnect")


def rate_limited(retry_after: str | None = None) -> Action:
    """Return a 429 action with an optional ``Retry-After`` header."""
    return Action("status", status=429, retry_after=retry_after)


def timeout(delay_s: float) -> Action:
    """Return an action that answers only after ``delay_s`` seconds."""
    return Action("sleep", delay_s=delay_s)


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as the server saw it."""

    key: Key
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    attempt: int
    action: Action
    received_at: float


@dataclass
class _State:
    propositions: tuple[str, ...]
    script: dict[Key, list[Action]]
    top_for: Callable[[Key], TopTokens]
    answer_delay_s: float
    api_key: str | None
    hold_after: int | None
    gate: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[ReceivedRequest] = field(default_factory=list)
    counts: dict[Key, int] = field(default_factory=dict)


class FakeOpenAIServer:
    """A scripted OpenAI-compatible server running in a background thread.

    Args:
        propositions: Names the server looks for in prompts.
        script: Actions per key, used in order by successive requests.
        top_for: Top tokens of a normal answer per key; defaults to
            :data:`DEFAULT_TOP` for every key.
        answer_delay_s: Seconds every request waits before it is handled.
        api_key: When set, requests without ``Bearer <api_key>`` get a 401.
        hold_after: When set, every request after this many waits without a
            reply until :meth:`release` or :meth:`stop` is called.
    """

    def __init__(
        self,
        propositions: Iterable[str],
        *,
        script: Mapping[Key, Sequence[Action]] | None = None,
        top_for: Callable[[Key], TopTokens] | None = None,
        answer_delay_s: float = 0.0,
        api_key: str | None = None,
        hold_after: int | None = None,
    ) -> None:
        self._state = _State(
            propositions=tuple(propositions),
            script={key: list(actions) for key, actions in (script or {}).items()},
            top_for=top_for or (lambda key: DEFAULT_TOP),
            answer_delay_s=answer_delay_s,
            api_key=api_key,
            hold_after=hold_after,
        )
        handler = type("Handler", (_Handler,), {"state": self._state})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            daemon=True,
        )

    @property
    def url(self) -> str:
        """Base URL to give the grader, ending in ``/v1``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A copy of every request received so far, in arrival order."""
        with self._state.lock:
            return list(self._state.requests)

    def count(self, key: Key) -> int:
        """Return how many requests arrived for ``key``."""
        with self._state.lock:
            return self._state.counts.get(key, 0)

    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def release(self) -> None:
        """Let held requests and all later ones through."""
        self._state.gate.set()

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _prompt_text(body: Mapping[str, Any]) -> str:
    if "messages" in body:
        return "\n".join(str(m.get("content", "")) for m in body["messages"])
    return str(body.get("prompt", ""))


def _key_of(text: str, propositions: Sequence[str]) -> Key:
    tag = SAMPLE_TAG.search(text)
    best, best_at = "", -1
    for name in propositions:
        at = text.rfind(name)
        if at > best_at:
            best, best_at = name, at
    return (tag.group(1) if tag else "", best)


class _Server(ThreadingHTTPServer):
    # The default listen backlog of 5 drops connections when a grader opens
    # more at once, which costs a one-second client retry.
    request_queue_size = 128


class _Handler(BaseHTTPRequestHandler):
    # Nagle's algorithm delays each small reply by about 40 ms.
    disable_nagle_algorithm = True
    state: _State
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Keep test output quiet."""

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        key, action, position = self._register(body)
        hold_after = self.state.hold_after
        if hold_after is not None and position > hold_after:
            self.state.gate.wait()
        expected = f"Bearer {self.state.api_key}"
        if self.state.api_key and self.headers.get("Authorization") != expected:
            self._send_json(401, {"error": {"message": "Incorrect API key provided"}})
            return
        time.sleep(self.state.answer_delay_s + action.delay_s)
        # The client may have given up waiting, as a timeout test intends.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._perform(action, key, body)

    def _register(self, body: dict[str, Any]) -> tuple[Key, Action, int]:
        """Record the request; return its key, action and 1-based arrival position."""
        state = self.state
        key = _key_of(_prompt_text(body), state.propositions)
        with state.lock:
            attempt = state.counts.get(key, 0)
            state.counts[key] = attempt + 1
            script = state.script.get(key, [])
            action = script[attempt] if attempt < len(script) else ANSWER
            headers = {name.lower(): value for name, value in self.headers.items()}
            state.requests.append(
                ReceivedRequest(
                    key, self.path, body, headers, attempt + 1, action, time.time()
                )
            )
            position = len(state.requests)
        return key, action, position

    def _perform(self, action: Action, key: Key, body: dict[str, Any]) -> None:
        if action.kind == "disconnect":
            self.close_connection = True
        elif action.kind == "status":
            headers = {"Retry-After": action.retry_after} if action.retry_after else {}
            error = {"message": f"scripted HTTP {action.status}", "type": "test"}
            self._send_json(action.status, {"error": error}, headers)
        elif action.kind == "bad_json":
            self._send_bytes(200, b'{"choices": [ this is not JSON')
        elif action.kind == "missing_field":
            self._send_json(
                200, {"choices": [{"index": 0, "message": {"content": "yes"}}]}
            )
        else:
            top = action.top if action.top is not None else self.state.top_for(key)
            if self.path.endswith("/chat/completions"):
                self._send_json(200, chat_reply(top, body))
            else:
                self._send_json(200, completion_reply(top, body))

    def _send_json(
        self, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), headers)

    def _send_bytes(
        self, status: int, data: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def chat_reply(top: TopTokens, body: Mapping[str, Any]) -> dict[str, Any]:
    """Return a chat completion whose first token is the most likely of ``top``."""
    ranked = sorted(top, key=lambda item: -item[1])
    limit = int(body.get("top_logprobs") or 0)
    first = ranked[0]
    entries = [
        {"token": token, "logprob": logprob, "bytes": list(token.encode())}
        for token, logprob in ranked[:limit]
    ]
    content = {"token": first[0], "logprob": first[1], "top_logprobs": entries}
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": first[0]},
        "logprobs": {"content": [content]},
        "finish_reason": "length",
    }
    return {
        "object": "chat.completion",
        "model": body.get("model"),
        "choices": [choice],
    }


def completion_reply(top: TopTokens, body: Mapping[str, Any]) -> dict[str, Any]:
    """Return a text completion whose first token is the most likely of ``top``."""
    ranked = sorted(top, key=lambda item: -item[1])
    limit = int(body.get("logprobs") or 0)
    first = ranked[0]
    logprobs = {
        "tokens": [first[0]],
        "token_logprobs": [first[1]],
        "top_logprobs": [dict(ranked[:limit])],
        "text_offset": [0],
    }
    choice = {
        "index": 0,
        "text": first[0],
        "logprobs": logprobs,
        "finish_reason": "length",
    }
    return {
        "object": "text_completion",
        "model": body.get("model"),
        "choices": [choice],
    }
