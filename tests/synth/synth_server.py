"""An OpenAI-compatible server on 127.0.0.1 that writes and grades test replies.

The server replies to a generation request (any chat request that is not a
one-token grading request) by reading the requirement lines of the behavior
instructions, ``- name (yes|no): ...``, and writing one cue sentence from
:data:`CUES` for every proposition required true. Grading requests
(``max_tokens`` 1 with ``logprobs``) find the graded reply and the
proposition whose instruction the prompt contains, and answer yes with
probability ``yes_probability`` when the reply contains that proposition's
cue, else with ``1 - yes_probability``.

A generation request is tied to a prompt by the first ``sample-<tag>`` in
its last user message. Scripts per tag make the server ignore the
instructions (a reply with no cue), fail with HTTP 500, or, after a number of
generation requests in all, reject every generation request with HTTP 401.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rbr.graders.prompts import ANSWER_CUE
from rbr.policy.spec import Policy

CUES: dict[str, str] = {
    "fully_complies": "Here is everything you asked for.",
    "partially_complies": "Here is part of what you asked for.",
    "judgement": "Asking this is shameful.",
    "illogical_continuation_of_prompt": "Bananas are yellow.",
    "meta_commentary": "As an AI language model, I have limits.",
    "disallowed_content": "Step one of the harmful plan is this.",
    "third_person": "This assistant declines.",
    "threatening_language": "I will report you.",
    "insulting_language": "That is a stupid question.",
    "encourage_professional_help": "Please talk to a professional.",
    "reference_safety_policy": "This is against my guidelines.",
    "requests_information": "Why do you want to know?",
    "apology": "I'm sorry.",
    "inability_to_comply": "I can't help with that.",
    "additional_content": "Here is some background.",
    "disclaimer": "This is not professional advice.",
    "conditional_verbiage": "It might help to rest.",
    "definitive_verbiage": "You must rest.",
    "prescribes_dosage": "Take 200 mg twice a day.",
    "provides_resources": "Call the helpline at 555-0100.",
    "prescribes_solutions": "Try a breathing exercise.",
    "apology_acknowledges_emotional_state": "I'm so sorry you feel this way.",
    "gentle_encouragement_for_help": "When you feel ready, reaching out could help.",
}
"""The sentence written for, and looked for as evidence of, each proposition."""

IGNORED_REPLY = "Here is a reply."
"""What the server writes when a script makes it ignore the instructions."""

REQUIREMENT_LINE = re.compile(r"^- (\w+) \((yes|no)\):", re.MULTILINE)
SAMPLE_TAG = re.compile(r"\bsample-(\w+)\b")
REPLY_START = "## Final assistant reply (the reply to grade)\n\n"
REPLY_END = "\n\n## End of reply"
QUESTION_START = "## Question\n\n"

GenerationKey = tuple[str, tuple[tuple[str, bool], ...]]


def cue(name: str) -> str:
    """Return the cue sentence of a proposition (a bracketed name when unknown)."""
    return CUES.get(name, f"[{name}]")


@dataclass(frozen=True)
class Received:
    """One request as the server saw it.

    Attributes:
        kind: ``generate`` or ``grade``.
        key: For ``generate``: (tag, requirements). For ``grade``: (reply,
            proposition).
        status: HTTP status of the response.
    """

    kind: str
    key: Any
    status: int
    body: dict[str, Any]


@dataclass
class Script:
    """Scripted misbehavior of the server; change fields between runs.

    Attributes:
        ignore_first: Per tag, how many generation requests of each
            (tag, requirements) pair ignore the instructions.
        fail_first: Per tag, how many generation requests get HTTP 500.
        reject_after: Number of generation requests served before every
            later one gets HTTP 401; None for never.
    """

    ignore_first: dict[str, int] = field(default_factory=dict)
    fail_first: dict[str, int] = field(default_factory=dict)
    reject_after: int | None = None


class BehaviorServer:
    """A scripted generator and grader in a background thread.

    Args:
        policy: Policy whose proposition instructions the grader looks for.
        script: Scripted misbehavior; defaults to none.
        yes_probability: P(yes) answered when the cue is present.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        script: Script | None = None,
        yes_probability: float = 0.9,
    ) -> None:
        self.script = script or Script()
        self.yes_probability = yes_probability
        self.instructions = {
            " ".join(p.instruction.split()): name
            for name, p in policy.propositions.items()
        }
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.generation_counts: dict[GenerationKey, int] = {}
        self.tag_counts: dict[str, int] = {}
        handler = type("Handler", (_Handler,), {"owner": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def requests(self, kind: str) -> list[Received]:
        """Return the requests of one kind received so far."""
        with self.lock:
            return [r for r in self.received if r.kind == kind]

    def __enter__(self) -> BehaviorServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def generate(
        self, body: Mapping[str, Any]
    ) -> tuple[int, dict[str, Any], GenerationKey]:
        """Return the status, reply body and key of a generation request."""
        messages = body["messages"]
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        users = [m["content"] for m in messages if m["role"] == "user"]
        match = SAMPLE_TAG.search(users[-1] if users else "")
        tag = match.group(1) if match else ""
        wanted = tuple((n, v == "yes") for n, v in REQUIREMENT_LINE.findall(system))
        key: GenerationKey = (tag, wanted)

        with self.lock:
            total = sum(self.tag_counts.values())
            seen_tag = self.tag_counts.get(tag, 0)
            self.tag_counts[tag] = seen_tag + 1
            if (
                self.script.reject_after is not None
                and total >= self.script.reject_after
            ):
                return 401, {"error": {"message": "scripted rejection"}}, key
            if seen_tag < self.script.fail_first.get(tag, 0):
                return 500, {"error": {"message": "scripted server error"}}, key
            seen = self.generation_counts.get(key, 0)
            self.generation_counts[key] = seen + 1

        if seen < self.script.ignore_first.get(tag, 0):
            text = IGNORED_REPLY
        else:
            text = " ".join(cue(n) for n, value in wanted if value) or IGNORED_REPLY

        reply = {
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        }
        return 200, reply, key

    def grade(
        self, body: Mapping[str, Any]
    ) -> tuple[int, dict[str, Any], tuple[str, str]]:
        """Return the status, body and (reply, proposition) of a grading request."""
        text = body["messages"][-1]["content"]
        reply = text.split(REPLY_START, 1)[1].split(REPLY_END, 1)[0]
        question = text.split(QUESTION_START, 1)[1].split(ANSWER_CUE, 1)[0]
        question = " ".join(question.split())
        name = next(
            (
                n
                for instruction, n in self.instructions.items()
                if question.startswith(instruction)
            ),
            "",
        )

        p_yes = self.yes_probability if cue(name) in reply else 1 - self.yes_probability
        top = [("yes", math.log(p_yes)), ("no", math.log(1 - p_yes))]
        top.sort(key=lambda item: -item[1])
        entries = [
            {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top
        ]
        content = {"token": top[0][0], "logprob": top[0][1], "top_logprobs": entries}

        answer = {
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": top[0][0]},
                    "logprobs": {"content": [content]},
                    "finish_reason": "length",
                }
            ],
        }
        return 200, answer, (reply, name)


class _Server(ThreadingHTTPServer):
    # The default listen backlog of 5 drops connections when a client opens
    # more at once, and the client's SYN retry then waits a full second.
    request_queue_size = 128
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    owner: BehaviorServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes. With Nagle's algorithm on, the
    # body would wait for the client's delayed ACK (about 40 ms on Linux).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Keep test output quiet."""

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        grading = body.get("max_tokens") == 1 and body.get("logprobs")
        kind = "grade" if grading else "generate"
        handle = self.owner.grade if grading else self.owner.generate
        status, payload, key = handle(body)
        with self.owner.lock:
            self.owner.received.append(Received(kind, key, status, body))
        self._send(status, payload)

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        # A client whose run stopped on an error may have closed the connection.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()


def write_prompts(path: Path, specs: Sequence[tuple[str, str]]) -> Path:
    """Write a prompt file with one row per (tag, category); tags are prompt ids."""
    lines = []
    for tag, category in specs:
        row = {
            "prompt_id": tag,
            "category": category,
            "prompt": [{"role": "user", "content": f"sample-{tag}: a request."}],
        }
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")
    return path
