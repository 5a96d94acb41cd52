"""Base (helpful-only) reward models added to the RBR term.

Two kinds score a completion without rbr's grader:

- ``local``: a Hugging Face sequence-classification reward model read from a
  folder (:class:`rbr.reward.base_local.LocalReward`, needs the ``local``
  extra).
- ``http``: a reward endpoint that takes a JSON batch and returns one
  number per item (:class:`HttpReward`), such as OpenRLHF's
  ``openrlhf.cli.serve_rm`` (``POST /get_reward``).

Both turn a conversation into text the same way (:func:`render_text`): with
the tokenizer's chat template when one is given and has a template, else in
the plain format of :func:`format_plain`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np

from rbr.data.types import Message, Sample
from rbr.graders.ratelimit import RequestLimits, backoff_delay, parse_retry_after
from rbr.reward.config import RewardConfigError
from rbr.reward.rule_based import BaseReward, BaseRewardError

logger = logging.getLogger(__name__)

BASE_REWARD_KINDS = ("none", "local", "http")

LOCAL_OPTIONS = ("model_path", "device", "dtype", "batch_size", "max_length")
HTTP_OPTIONS = (
    "url",
    "payload",
    "response_key",
    "batch_size",
    "timeout_s",
    "max_retries",
    "api_key",
    "headers",
    "tokenizer_path",
)

Payload = Literal["openrlhf", "messages"]
PAYLOADS: tuple[str, ...] = ("openrlhf", "messages")


def format_plain(prompt: Sequence[Message], completion: str) -> str:
    """Render a conversation and its completion in the plain format.

    Each turn is its capitalized role, a colon and a space, then the content
    (``User: ...``, ``Assistant: ...``), and turns are separated by a blank
    line. The completion is the final ``Assistant:`` turn.
    """
    turns = [f"{m.role.capitalize()}: {m.content}" for m in prompt]
    turns.append(f"Assistant: {completion}")
    return "\n\n".join(turns)


def chat_messages(sample: Sample) -> list[dict[str, str]]:
    """Return the prompt and completion as ``{role, content}`` dictionaries."""
    messages = [m.to_dict() for m in sample.prompt]
    messages.append({"role": "assistant", "content": sample.completion})
    return messages


def render_text(sample: Sample, tokenizer: Any | None = None) -> str:
    """Render a sample as one text for a reward model.

    Args:
        sample: The conversation and the completion to score.
        tokenizer: A transformers tokenizer. When it has a chat template,
            the messages go through it with the completion as the last
            assistant turn and no generation prompt. Otherwise, or without
            a tokenizer, :func:`format_plain` is used.
    """
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return str(
            tokenizer.apply_chat_template(
                chat_messages(sample), tokenize=False, add_generation_prompt=False
            )
        )
    return format_plain(sample.prompt, sample.completion)


def render_prompt(prompt: Sequence[Message], tokenizer: Any | None = None) -> str:
    """Render the prompt alone, as :func:`render_text` renders it before the reply.

    With a chat template the generation prompt is added; in the plain format
    the text ends with ``Assistant:``.
    """
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return str(
            tokenizer.apply_chat_template(
                [m.to_dict() for m in prompt],
                tokenize=False,
                add_generation_prompt=True,
            )
        )
    return format_plain(prompt, "").rstrip()


class HttpReward:
    """Score completions with a reward model behind an HTTP endpoint.

    Each batch is one ``POST`` of a JSON object to ``url``:

    - ``payload="openrlhf"``: ``{"query": [text, ...], "prompts": [text, ...]}``
      where each query is the prompt and completion rendered by
      :func:`render_text` and each prompt entry is the prompt alone (the
      shape OpenRLHF's reward server reads).
    - ``payload="messages"``: ``{"messages": [[{role, content}, ...], ...]}``
      with the completion as the last assistant message of each list.

    The reply must be a JSON object whose ``response_key`` entry is a list
    of numbers, one per item, in order.

    Args:
        url: The full endpoint URL, such as ``http://127.0.0.1:5000/get_reward``.
        payload: Request shape, one of :data:`PAYLOADS`.
        response_key: Key of the scores in the reply.
        batch_size: Items per request.
        timeout_s: Seconds one request may take, connection included.
        max_retries: Retries after the first attempt on a timeout, a
            connection error, HTTP 408, 429 or 5xx, or an unreadable reply.
        api_key: Sent as ``Authorization: Bearer <api_key>`` when set.
        headers: Further HTTP headers.
        tokenizer_path: Folder of a transformers tokenizer whose chat template
            renders the ``openrlhf`` queries; None uses the plain format.

    Raises:
        BaseRewardError: On an invalid option or a tokenizer that fails to load.
    """

    def __init__(
        self,
        *,
        url: str,
        payload: str = "openrlhf",
        response_key: str = "rewards",
        batch_size: int = 32,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        tokenizer_path: str | Path | None = None,
    ) -> None:
        if payload not in PAYLOADS:
            raise BaseRewardError(
                f"unknown payload {payload!r} for {url}; use one of {', '.join(PAYLOADS)}"
            )
        if batch_size < 1:
            raise BaseRewardError(f"batch_size must be 1 or more, got {batch_size}")
        try:
            self.limits = RequestLimits(timeout_s=timeout_s, max_retries=max_retries)
        except ValueError as error:
            raise BaseRewardError(f"base reward {url}: {error}") from None
        self.url = url
        self.payload = payload
        self.response_key = response_key
        self.batch_size = batch_size
        self._headers = dict(headers or {})
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._tokenizer = _load_tokenizer(tokenizer_path) if tokenizer_path else None
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s))

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        """Return one reward per sample, in order.

        Raises:
            BaseRewardError: When a batch still fails after the retries, or
                the endpoint rejects the request; the message names the URL.
        """
        scores: list[float] = []
        for start in range(0, len(samples), self.batch_size):
            batch = samples[start : start + self.batch_size]
            scores.extend(self._score_batch(batch))
        return np.asarray(scores, dtype=np.float64)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def __enter__(self) -> HttpReward:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _body(self, batch: Sequence[Sample]) -> dict[str, Any]:
        if self.payload == "messages":
            return {"messages": [chat_messages(s) for s in batch]}
        return {
            "query": [render_text(s, self._tokenizer) for s in batch],
            "prompts": [render_prompt(s.prompt, self._tokenizer) for s in batch],
        }

    def _score_batch(self, batch: Sequence[Sample]) -> list[float]:
        body = self._body(batch)
        attempts = self.limits.max_retries + 1
        problem = ""
        for attempt in range(1, attempts + 1):
            outcome = self._post(body, len(batch))
            if isinstance(outcome, list):
                check_finite_scores(outcome, batch, f"base reward endpoint {self.url}")
                return outcome
            problem, retry_after = outcome
            if attempt == attempts:
                break
            delay = max(backoff_delay(attempt, self.limits), retry_after or 0.0)
            logger.warning(
                "base reward %s: retrying a batch of %d (attempt %d of %d) in %.2f s "
                "after: %s",
                self.url,
                len(batch),
                attempt + 1,
                attempts,
                delay,
                problem,
            )
            time.sleep(delay)
        raise BaseRewardError(
            f"base reward endpoint {self.url} failed after {attempts} attempts: "
            f"{problem}; check that the server is up and reachable"
        )

    def _post(
        self, body: dict[str, Any], expected: int
    ) -> list[float] | tuple[str, float | None]:
        """Send one request; return the scores, or a retryable problem and wait.

        Raises:
            BaseRewardError: On a status or reply that retrying cannot fix.
        """
        try:
            response = self._client.post(self.url, json=body, headers=self._headers)
        except httpx.TimeoutException:
            return f"no reply within {self.limits.timeout_s} s", None
        except httpx.TransportError as error:
            return f"connection failed: {type(error).__name__}: {error}", None
        status = response.status_code
        if status == 429 or status == 408 or status >= 500:
            wait = parse_retry_after(response.headers.get("retry-after"))
            return f"HTTP {status}: {response.text[:300]}", wait
        if status >= 300:
            raise BaseRewardError(
                f"base reward endpoint {self.url} rejected the request with HTTP "
                f"{status}: {response.text[:300]}; check the URL, the api_key and "
                f"the payload shape ({self.payload!r})"
            )
        return self._read_scores(response, expected)

    def _read_scores(
        self, response: httpx.Response, expected: int
    ) -> list[float] | tuple[str, float | None]:
        try:
            reply = response.json()
        except ValueError:
            return f"reply is not JSON: {response.text[:300]!r}", None
        values = reply.get(self.response_key) if isinstance(reply, dict) else None
        if not isinstance(values, list):
            keys = sorted(reply) if isinstance(reply, dict) else type(reply).__name__
            raise BaseRewardError(
                f"base reward endpoint {self.url} replied without a list under "
                f"{self.response_key!r} (reply keys: {keys}); set response_key to "
                "the key that holds the scores"
            )
        if len(values) != expected:
            raise BaseRewardError(
                f"base reward endpoint {self.url} returned {len(values)} scores for "
                f"{expected} items; the server must return one score per item"
            )
        try:
            return [_as_float(v) for v in values]
        except (TypeError, ValueError) as error:
            raise BaseRewardError(
                f"base reward endpoint {self.url} returned a score that is not a "
                f"number: {error}"
            ) from None


def check_finite_scores(
    scores: Sequence[float], samples: Sequence[Sample], source: str
) -> None:
    """Raise when a reward model returned NaN or an infinity for a sample.

    Args:
        scores: One score per sample.
        samples: The scored samples, for the sample id in the message.
        source: The model, such as ``base reward endpoint http://...``.

    Raises:
        BaseRewardError: Naming ``source``, the first bad sample and the count.
    """
    bad = [i for i, score in enumerate(scores) if not math.isfinite(score)]
    if not bad:
        return
    first = bad[0]
    sample_id = samples[first].sample_id
    name = f"sample {sample_id!r}" if sample_id else f"sample {first} of the batch"
    raise BaseRewardError(
        f"{source} returned {scores[first]!r} for {name} ({len(bad)} of "
        f"{len(scores)} scores are not finite numbers); a base reward must be "
        "finite, so check the reward model"
    )


def _as_float(value: Any) -> float:
    # A score may come wrapped in a one-element list, the shape a reward head of
    # width 1 gives when the server does not squeeze it.
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(repr(value))
    return float(value)


def _load_tokenizer(path: str | Path) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise BaseRewardError(
            "tokenizer_path needs transformers: pip install 'rbr[local]'"
        ) from None
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as error:
        raise BaseRewardError(
            f"cannot load a tokenizer from {str(path)!r}: {error}; pass a folder "
            "written by save_pretrained"
        ) from None


def make_base_reward(spec: Mapping[str, Any]) -> BaseReward | None:
    """Build the base reward named by ``spec['kind']``; None for ``none``.

    Args:
        spec: ``kind`` (one of :data:`BASE_REWARD_KINDS`) and the options of
            that kind. ``local`` takes ``model_path`` (required), ``device``,
            ``dtype``, ``batch_size`` and ``max_length``. ``http`` takes
            ``url`` (required) and the other :class:`HttpReward` arguments.

    Raises:
        RewardConfigError: On an unknown kind, an unknown option or a missing
            required option.
        BaseRewardError: When the model or tokenizer fails to load.
    """
    options = dict(spec)
    kind = options.pop("kind", "none")
    if kind == "none":
        _check_options("none", options, ())
        return None
    if kind == "http":
        _check_options("http", options, HTTP_OPTIONS, required="url")
        return HttpReward(**options)
    if kind == "local":
        _check_options("local", options, LOCAL_OPTIONS, required="model_path")
        from rbr.reward.base_local import LocalReward

        return LocalReward(**options)
    raise RewardConfigError(
        f"base_reward.kind: unknown kind {kind!r}; use one of "
        f"{', '.join(BASE_REWARD_KINDS)}"
    )


def _check_options(
    kind: str,
    options: Mapping[str, Any],
    known: Sequence[str],
    *,
    required: str | None = None,
) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        allowed = ", ".join(known) if known else "none"
        raise RewardConfigError(
            f"base_reward.{unknown[0]}: unknown option for kind {kind!r}; "
            f"options of this kind: {allowed}"
        )
    if required and not options.get(required):
        hint = (
            "the endpoint URL, such as http://127.0.0.1:5000/get_reward"
            if required == "url"
            else "a local folder written by save_pretrained"
        )
        raise RewardConfigError(
            f"base_reward.{required}: missing, and kind {kind!r} needs it; set it "
            f"to {hint}"
        )
