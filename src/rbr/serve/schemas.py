"""Request bodies of the reward server and the error type its handlers raise.

Bodies are validated with pydantic in strict mode, so a number where a string
is expected is an error rather than a silent conversion. Every validation
error names the field by its path in the body, such as ``items[2].completion``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictStr,
)
from pydantic import ValidationError as PydanticValidationError

from rbr.errors import RbrError


class ServeError(RbrError):
    """A request the server rejects with an HTTP error status.

    Attributes:
        status: HTTP status code.
        code: Short machine-readable cause, such as ``invalid_json``.
        message: What is wrong and how to fix it.
        fields: One ``{"field", "message"}`` entry per invalid field.
        headers: Extra response headers, such as ``Retry-After``.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """Return the JSON body of the error response."""
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        return body


def _check_encodable(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"invalid Unicode character at position {error.start} (a lone "
            "surrogate such as \\ud800); fix the text encoding"
        ) from None
    return text


Text = Annotated[StrictStr, AfterValidator(_check_encodable)]
"""A string that can be encoded as UTF-8 (JSON allows lone surrogates)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


Role = Literal["system", "user", "assistant", "tool", "developer"]


class ChatMessage(_Strict):
    """One message of a conversation."""

    role: Role
    content: Text


def _check_ends_with_user(prompt: list[ChatMessage]) -> list[ChatMessage]:
    if prompt and prompt[-1].role != "user":
        raise ValueError(
            f"the prompt ends with a {prompt[-1].role!r} message; it must end with "
            "the user turn the completion answers (send the assistant reply as "
            "'completion')"
        )
    return prompt


Prompt = Annotated[
    list[ChatMessage], Field(min_length=1), AfterValidator(_check_ends_with_user)
]
"""A conversation of at least one message that ends with a user turn."""


class ScoreItem(_Strict):
    """One completion sent to ``POST /v1/score``.

    Attributes:
        prompt: The conversation, ending with the user turn.
        completion: The assistant reply to score.
        response_type: How the prompt should be answered, such as
            ``Hard Refuse``.
        category: The prompt's content-policy category, such as ``K-R``.
        base_reward: A base reward computed by the caller.
        id: The caller's identifier, returned with the result.
    """

    prompt: Prompt
    completion: Text
    response_type: StrictStr | None = None
    category: StrictStr | None = None
    base_reward: StrictFloat | None = Field(default=None, allow_inf_nan=False)
    id: StrictStr | None = None


class ScoreRequest(_Strict):
    """The body of ``POST /v1/score``."""

    items: list[ScoreItem]


class LabelFields(BaseModel):
    """A label given as an object in the OpenRLHF ``labels`` list.

    ``messages`` is the conversation, read in place of the prompt string.
    Other keys are ignored, because a dataset's label column may carry data
    meant for other rewards.
    """

    model_config = ConfigDict(extra="ignore", strict=True)

    messages: Prompt | None = None
    response_type: StrictStr | None = None
    category: StrictStr | None = None
    base_reward: StrictFloat | None = Field(default=None, allow_inf_nan=False)


class OpenRLHFRequest(BaseModel):
    """The body of ``POST /get_reward`` (OpenRLHF's remote reward protocol).

    Attributes:
        query: Prompt and response as one decoded string per sample.
        prompts: The prompt string of each sample; None or missing makes the
            server split each query at its last assistant turn marker.
        labels: One label per sample: a response type or content-category
            name, an object with ``response_type``, ``category`` and
            ``base_reward``, or null.

    Other keys are ignored, so clients that send extra fields still work.
    """

    model_config = ConfigDict(extra="ignore", strict=True)

    query: list[Text]
    prompts: list[Text] | None = None
    labels: list[Any] | None = None


def field_path(location: tuple[int | str, ...]) -> str:
    """Format a pydantic error location as ``items[0].prompt[1].role``."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "<body>"


def field_error(
    field: str, message: str, *, code: str = "invalid_request"
) -> ServeError:
    """Return a 422 error about one field of the request body."""
    return ServeError(
        422,
        code,
        f"invalid field {field!r}: {message}",
        fields=[{"field": field, "message": message}],
    )


def validation_error(error: PydanticValidationError, prefix: str = "") -> ServeError:
    """Convert a pydantic error into a 422 that names every invalid field.

    Args:
        error: The pydantic error.
        prefix: Path of the validated value inside the body, such as
            ``labels[3]``.
    """
    fields = []
    for item in error.errors():
        location = tuple(item["loc"])
        path = field_path(location)
        if prefix:
            path = f"{prefix}.{path}" if location else prefix
        fields.append({"field": path, "message": item["msg"]})
    first = fields[0]
    more = f" (and {len(fields) - 1} more)" if len(fields) > 1 else ""
    return ServeError(
        422,
        "invalid_request",
        f"invalid field {first['field']!r}: {first['message']}{more}",
        fields=fields,
    )
