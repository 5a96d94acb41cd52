"""Prompt classification by an LLM behind an OpenAI-compatible HTTP API.

One request per distinct prompt shows the policy's content categories with
a description of each, then the conversation, and requests the category
name alone (temperature 0, a few output tokens). Connection settings,
rate limits, retries and backoff are those of the OpenAI-compatible
grader (:mod:`rbr.graders.openai_compat`, :mod:`rbr.graders.http`,
:mod:`rbr.graders.ratelimit`).

A reply is read by :func:`rbr.reward.category_prompt.parse_category_reply`.
A prompt whose reply names no category, or more than one, gets None and
the reason is logged, so the router reports that prompt as undecided.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from rbr.data.types import Message, prompt_hash
from rbr.errors import GraderError
from rbr.graders.http import (
    RequestFailure,
    post_json,
    run_workers,
    send_with_retries,
    server_message,
)
from rbr.graders.openai_compat import ENDPOINTS, ENV_API_KEY, resolve_connection
from rbr.graders.ratelimit import (
    RateLimiter,
    RequestLimits,
    estimate_tokens,
    parse_retry_after,
)
from rbr.graders.runtime import GraderStats, StatsCounter, run_sync
from rbr.policy.spec import Policy
from rbr.reward.category_prompt import (
    DEFAULT_CATEGORY_DESCRIPTIONS,
    PROMPT_VERSION,
    SYSTEM_MESSAGE,
    category_descriptions,
    parse_category_reply,
    render_request,
)
from rbr.reward.prompt_offline import ClassifierError

__all__ = [
    "DEFAULT_CATEGORY_DESCRIPTIONS",
    "SYSTEM_MESSAGE",
    "OpenAIPromptClassifier",
    "category_descriptions",
    "make_openai_classifier",
    "parse_category_reply",
    "render_request",
]

logger = logging.getLogger(__name__)

LIMIT_KEYS = (
    "max_concurrency",
    "requests_per_minute",
    "tokens_per_minute",
    "timeout_s",
    "max_retries",
)


class OpenAIPromptClassifier:
    """Classify prompts with an LLM behind an OpenAI-compatible API.

    Args:
        model: Model name sent in every request.
        descriptions: Category name to description, in the order shown (see
            :func:`category_descriptions`).
        base_url: API root, usually ending in ``/v1``; defaults to
            ``$OPENAI_BASE_URL``.
        api_key: Bearer token; defaults to ``$OPENAI_API_KEY``.
        endpoint: ``chat`` or ``completions``.
        limits: Concurrency, rate limits, timeout and retries.
        max_tokens: Tokens the model may generate per reply.
        cache_size: Distinct prompts whose category is remembered across
            calls; 0 for none.

    Raises:
        ClassifierError: On a missing model or base URL, or an invalid option.
    """

    def __init__(
        self,
        *,
        model: str | None,
        descriptions: Mapping[str, str],
        base_url: str | None = None,
        api_key: str | None = None,
        endpoint: str = "chat",
        limits: RequestLimits | None = None,
        max_tokens: int = 16,
        cache_size: int = 10000,
    ) -> None:
        if not model:
            raise ClassifierError(
                "classifier.model: missing; set it to the model name the server "
                "serves, such as gpt-4o-mini"
            )
        if endpoint not in ENDPOINTS:
            raise ClassifierError(
                f"classifier.endpoint: unknown value {endpoint!r}; use 'chat' or "
                "'completions'"
            )
        if max_tokens < 1:
            raise ClassifierError(
                f"classifier.max_tokens must be 1 or more, got {max_tokens}"
            )
        try:
            self.base_url, self._api_key = resolve_connection(base_url, api_key)
        except GraderError as error:
            raise ClassifierError(f"classifier: {error}") from None
        self.model = model
        self.descriptions = dict(descriptions)
        self.endpoint = endpoint
        self.limits = limits or RequestLimits()
        self.max_tokens = max_tokens
        self.cache_size = cache_size
        self._limiter = RateLimiter(
            requests_per_minute=self.limits.requests_per_minute,
            tokens_per_minute=self.limits.tokens_per_minute,
        )
        self._stats = StatsCounter()
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._any_success = False

    @property
    def identity(self) -> str:
        template = json.dumps(
            [PROMPT_VERSION, SYSTEM_MESSAGE, self.descriptions], sort_keys=True
        )
        settings = {
            "base_url": self.base_url,
            "model": self.model,
            "endpoint": self.endpoint,
            "max_tokens": self.max_tokens,
            "prompt": hashlib.sha256(template.encode()).hexdigest()[:16],
        }
        return "openai-prompt-classifier:" + json.dumps(settings, sort_keys=True)

    @property
    def stats(self) -> GraderStats:
        """Counters of requests sent, retries by cause and unanswered prompts."""
        return self._stats.snapshot()

    def classify(self, prompts: Sequence[Sequence[Message]]) -> list[str | None]:
        """Return the category of each prompt (None where the reply was unusable).

        Raises:
            ClassifierError: On a reply that means every request will fail
                (bad key, unknown model or URL, rejected request format).
        """
        keys = [prompt_hash(tuple(p)) for p in prompts]
        todo: dict[str, Sequence[Message]] = {}
        for key, prompt in zip(keys, prompts):
            if key not in self._cache:
                todo.setdefault(key, prompt)
        answers = run_sync(lambda: self.aclassify(list(todo.values())))
        resolved: dict[str, str | None] = dict(self._cached(keys))
        for key, category in zip(todo, answers):
            resolved[key] = category
            if category is not None:
                self._remember(key, category)
        return [resolved[key] for key in keys]

    async def aclassify(self, prompts: Sequence[Sequence[Message]]) -> list[str | None]:
        """Classify every prompt with ``max_concurrency`` requests in flight."""
        results: list[str | None] = [None] * len(prompts)

        async def classify(
            client: httpx.AsyncClient, item: tuple[int, Sequence[Message]]
        ) -> None:
            index, prompt = item
            results[index] = await self._classify_one(client, index, prompt)

        await run_workers(enumerate(prompts), classify, self.limits)
        return results

    def close(self) -> None:
        """Nothing to release: each call opens and closes its own client."""

    def _cached(self, keys: Sequence[str]) -> dict[str, str]:
        found = {}
        for key in keys:
            if key in self._cache:
                self._cache.move_to_end(key)
                found[key] = self._cache[key]
        return found

    def _remember(self, key: str, category: str) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = category
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _body(self, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": 0,
        }
        if self.endpoint == "chat":
            body["messages"] = [
                {"role": "system", "content": SYSTEM_MESSAGE},
                {"role": "user", "content": text},
            ]
        else:
            body["prompt"] = f"{SYSTEM_MESSAGE}\n\n{text}"
        return body

    async def _classify_one(
        self, client: httpx.AsyncClient, index: int, prompt: Sequence[Message]
    ) -> str | None:
        text = render_request(prompt, self.descriptions)
        body = self._body(text)
        outcome, attempt = await send_with_retries(
            lambda: self._send(client, body),
            limiter=self._limiter,
            tokens=estimate_tokens(SYSTEM_MESSAGE + text, max_tokens=self.max_tokens),
            limits=self.limits,
            stats=self._stats,
            label=f"prompt {index}",
            log=logger,
        )
        if not isinstance(outcome, RequestFailure):
            return self._read_category(index, outcome)
        self._stats.count_unscored(outcome.cause)
        logger.error(
            "prompt %d: no category after %d attempts (%s): %s",
            index,
            attempt,
            outcome.cause,
            outcome.detail,
        )
        return None

    def _read_category(self, index: int, reply: str) -> str | None:
        category, reason = parse_category_reply(reply, list(self.descriptions))
        if category is None:
            self._stats.count_unscored("unreadable_reply")
            logger.error(
                "prompt %d: no category (%s); the reply was %r",
                index,
                reason,
                reply[:200],
            )
        return category

    async def _send(
        self, client: httpx.AsyncClient, body: dict[str, Any]
    ) -> str | RequestFailure:
        """Send one request; return the reply text or why there is none.

        Retries and unscored prompts are counted by the failure's ``cause``.

        Raises:
            ClassifierError: On a status that means every request will fail.
        """
        url = self.base_url + ENDPOINTS[self.endpoint]
        response = await post_json(
            client, url, body, api_key=self._api_key, stats=self._stats
        )
        if isinstance(response, RequestFailure):
            return response
        status = response.status_code
        detail = f"HTTP {status} from {url}: {server_message(response)}"
        if status in (408, 429) or status >= 500:
            wait = parse_retry_after(response.headers.get("retry-after"))
            return RequestFailure(
                "http_error", "http_error", detail, retryable=True, retry_after=wait
            )
        if status >= 300:
            self._raise_for_status(response, detail)
            return RequestFailure("http_error", "http_error", detail, retryable=False)
        return self._reply_text(response, url)

    def _raise_for_status(self, response: httpx.Response, detail: str) -> None:
        status = response.status_code
        if status in (401, 403):
            raise ClassifierError(
                f"{detail}. Check classifier.api_key (or ${ENV_API_KEY})"
            )
        if status == 404:
            raise ClassifierError(
                f"{detail}. Check classifier.base_url (it usually ends in /v1), "
                f"the endpoint ({self.endpoint!r}) and the model ({self.model!r})"
            )
        if not self._any_success:
            raise ClassifierError(
                f"{detail}. The server rejected the first request; check that it "
                f"serves the {self.endpoint!r} endpoint"
            )

    def _reply_text(self, response: httpx.Response, url: str) -> str | RequestFailure:
        try:
            choice = response.json()["choices"][0]
            text = (
                choice["message"]["content"]
                if self.endpoint == "chat"
                else choice["text"]
            )
        except (ValueError, KeyError, IndexError, TypeError) as error:
            detail = f"unreadable reply from {url} ({type(error).__name__}): "
            detail += repr(response.text[:200])
            return RequestFailure("malformed_reply", "malformed_reply", detail, True)
        self._any_success = True
        return text if isinstance(text, str) else ""


def make_openai_classifier(
    options: Mapping[str, Any], policy: Policy
) -> OpenAIPromptClassifier:
    """Build the ``openai`` classifier from its settings (``kind`` removed).

    Raises:
        ClassifierError: On an invalid option or a missing description.
    """
    settings = dict(options)
    descriptions = category_descriptions(
        policy, settings.pop("category_descriptions", None)
    )
    try:
        limits = RequestLimits(
            **{key: settings.pop(key) for key in LIMIT_KEYS if key in settings}
        )
    except ValueError as error:
        raise ClassifierError(f"classifier: {error}") from None
    return OpenAIPromptClassifier(descriptions=descriptions, limits=limits, **settings)
