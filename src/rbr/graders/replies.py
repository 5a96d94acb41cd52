"""Reading first-token log probabilities from OpenAI-style replies.

Both reply shapes of the OpenAI API are read, as served by OpenAI, vLLM,
SGLang and the llama.cpp server:

* ``/v1/chat/completions`` with ``logprobs: true``:
  ``choices[0].logprobs.content[0]`` contains the sampled ``token``, its
  ``logprob`` and ``top_logprobs``, a list of ``{token, logprob}``.
* ``/v1/completions`` with ``logprobs: k``:
  ``choices[0].logprobs.top_logprobs[0]`` maps each token to its log
  probability, and ``choices[0].logprobs.tokens[0]`` is the sampled token.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rbr.errors import GraderError

_STRIP_CHARS = string.whitespace + string.punctuation + "\u2581\u0120"
"""Characters stripped from a token before matching yes or no.

Besides whitespace and ASCII punctuation this strips the word-start markers
of SentencePiece (U+2581) and of GPT-2 byte-level BPE (U+0120), which some
servers leave in the token text.
"""


class MalformedReplyError(GraderError):
    """A reply body is not JSON or lacks a field the grader needs."""


@dataclass(frozen=True, slots=True)
class FirstToken:
    """The first generated token of a reply and its most likely alternatives.

    Attributes:
        reply: The generated text.
        top: ``(token, logprob)`` pairs of the most likely first tokens.
    """

    reply: str
    top: tuple[tuple[str, float], ...]

    def describe(self) -> str:
        """Return the reply and top tokens as JSON, for logs and Unscored.raw."""
        tokens = [[token, round(logprob, 4)] for token, logprob in self.top]
        return json.dumps({"reply": self.reply, "top_logprobs": tokens})


def normalize_token(token: str) -> str:
    """Return ``token`` lowercased, without outer spaces, punctuation or markers."""
    return token.strip(_STRIP_CHARS).lower()


def yes_probability(top: Sequence[tuple[str, float]]) -> float | None:
    """Return P(yes) = mass(yes) / (mass(yes) + mass(no)) over the top tokens.

    Every token that normalizes to ``yes`` or ``no`` counts, so ``"Yes"``,
    ``" yes"``, ``"YES."`` and ``"yes"`` add up. Returns None when no yes or
    no token is among ``top``, or when their total probability is zero.
    """
    yes_mass = 0.0
    no_mass = 0.0
    for token, logprob in top:
        word = normalize_token(token)
        if word == "yes":
            yes_mass += math.exp(logprob)
        elif word == "no":
            no_mass += math.exp(logprob)
    total = yes_mass + no_mass
    if total <= 0.0:
        return None
    return yes_mass / total


def _field(value: Any, *path: str | int) -> Any:
    """Return ``value[path[0]][path[1]]...``; raise MalformedReplyError if absent."""
    current = value
    walked = ""
    for key in path:
        walked += f"[{key!r}]" if isinstance(key, str) else f"[{key}]"
        try:
            current = current[key]
        except (KeyError, IndexError, TypeError):
            raise MalformedReplyError(f"reply has no field {walked}") from None
        if current is None:
            raise MalformedReplyError(f"reply field {walked} is null")
    return current


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedReplyError(
            f"reply field {where} is not an object: {type(value).__name__}"
        )
    return value


def _logprob(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedReplyError(
            f"log probability at {where} is not a number: {value!r}"
        )
    if math.isnan(value):
        raise MalformedReplyError(f"log probability at {where} is NaN")
    return float(value)


def _with_sampled(
    top: list[tuple[str, float]], sampled: Any, sampled_logprob: Any
) -> tuple[tuple[str, float], ...]:
    """Add the sampled token when the server left it out of the top list."""
    missing = isinstance(sampled, str) and all(token != sampled for token, _ in top)
    usable = isinstance(sampled_logprob, (int, float)) and not isinstance(
        sampled_logprob, bool
    )
    if missing and usable and not math.isnan(sampled_logprob):
        top.append((sampled, float(sampled_logprob)))
    return tuple(top)


def parse_chat_reply(body: Mapping[str, Any]) -> FirstToken:
    """Read the first token's top log probabilities from a chat completion.

    Raises:
        MalformedReplyError: When a required field is missing or invalid.
    """
    choice = _mapping(_field(body, "choices", 0), "choices[0]")
    message = _mapping(_field(choice, "message"), "choices[0].message")
    reply = message.get("content") or ""
    first = _mapping(_field(choice, "logprobs", "content", 0), "logprobs.content[0]")
    entries = _field(first, "top_logprobs")
    if not isinstance(entries, list):
        raise MalformedReplyError("reply field top_logprobs is not a list")
    top = []
    for index, entry in enumerate(entries):
        token = _field(_mapping(entry, f"top_logprobs[{index}]"), "token")
        top.append(
            (str(token), _logprob(_field(entry, "logprob"), f"top_logprobs[{index}]"))
        )
    return FirstToken(
        str(reply), _with_sampled(top, first.get("token"), first.get("logprob"))
    )


def parse_completion_reply(body: Mapping[str, Any]) -> FirstToken:
    """Read the first token's top log probabilities from a text completion.

    Raises:
        MalformedReplyError: When a required field is missing or invalid.
    """
    choice = _mapping(_field(body, "choices", 0), "choices[0]")
    reply = choice.get("text") or ""
    logprobs = _mapping(_field(choice, "logprobs"), "choices[0].logprobs")
    entries = _field(logprobs, "top_logprobs", 0)
    if not isinstance(entries, Mapping):
        raise MalformedReplyError("reply field top_logprobs[0] is not an object")
    top = [
        (str(token), _logprob(value, f"top_logprobs[0][{token!r}]"))
        for token, value in entries.items()
    ]
    sampled = _first_or_none(logprobs.get("tokens"))
    sampled_logprob = _first_or_none(logprobs.get("token_logprobs"))
    return FirstToken(str(reply), _with_sampled(top, sampled, sampled_logprob))


def _first_or_none(values: Any) -> Any:
    return values[0] if isinstance(values, list) and values else None
