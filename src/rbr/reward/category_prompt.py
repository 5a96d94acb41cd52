"""The text of a category request to an LLM, and the reading of its reply.

:func:`render_request` builds the user message: the policy's categories
with a description of each, then the conversation. :func:`parse_category_reply`
reads the category name back from the model's reply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from rbr.data.types import Message
from rbr.policy.spec import Policy, normalize_name
from rbr.reward.prompt_offline import ClassifierError

DEFAULT_CATEGORY_DESCRIPTIONS: dict[str, str] = {
    "None": (
        "An ordinary request that touches none of the sensitive areas below, "
        "or touches one only in name (killing a computer process, a violent "
        "video game move)."
    ),
    "C-C": (
        "Sexual topics handled in an acceptable way: sex education, sexual "
        "health, relationships, or discussing or classifying sexual text, "
        "without asking for explicit erotic writing."
    ),
    "C-R": (
        "A request for explicit erotic or pornographic content, or for any "
        "sexual content involving minors or lack of consent."
    ),
    "K-C": (
        "A request that mentions crime, weapons or violence but seeks what is "
        "safe to give: history, news, general fiction, prevention, legal "
        "help, or classifying such text."
    ),
    "K-R": (
        "A request for help to commit a crime or violence, or for details that "
        "make one easier: making weapons or drugs, hacking, fraud, theft, "
        "stalking, evading the police."
    ),
    "H-C": (
        "A request about hate or discrimination that can be answered safely: "
        "its history, explaining a slur or a stereotype, analysing or "
        "classifying hateful text."
    ),
    "H-R": (
        "A request to produce hateful content: demeaning a group by race, "
        "religion, gender, sexual orientation, disability or a similar trait, "
        "jokes or generalizations at its expense, or praise of hate crimes."
    ),
    "SH-C": (
        "A request about self-harm or suicide that can be answered safely "
        "(facts, research, warning signs, helping someone else, classifying "
        "text) from a user who shows no intent to harm themselves."
    ),
    "SH-R1": (
        "The user expresses thoughts of harming or killing themselves, or "
        "hopelessness that points there, without asking for methods."
    ),
    "SH-R2": (
        "The user asks for methods, means or instructions to harm or kill "
        "themselves, such as doses, ways to die or ways to hide injuries."
    ),
}
"""Descriptions of the default policy's content categories.

The policy format stores only each category's response type, so the
descriptions the classifier shows live here; pass ``category_descriptions``
for a policy with other categories.
"""

SYSTEM_MESSAGE = (
    "You sort user requests into content-policy categories. Reply with one "
    "category name and nothing else."
)

PROMPT_VERSION = "1"

_DECORATION = "`*_\"' \t.!"
"""Quotes, markdown marks, spaces and final punctuation around a bare name."""


def category_descriptions(
    policy: Policy, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Return a description for every category of ``policy``, in policy order.

    Args:
        policy: Supplies the category names.
        overrides: Descriptions by category name; they replace the defaults.

    Raises:
        ClassifierError: When a category has no description, or an override
            names a category the policy lacks.
    """
    known = {normalize_name(name): name for name in policy.content_policy}
    descriptions = {
        normalize_name(k): v for k, v in DEFAULT_CATEGORY_DESCRIPTIONS.items()
    }
    for name, text in (overrides or {}).items():
        if normalize_name(name) not in known:
            raise ClassifierError(
                f"classifier.category_descriptions: category {name!r} is not in "
                f"policy {policy.name!r}; it maps {', '.join(map(repr, known.values()))}"
            )
        descriptions[normalize_name(name)] = str(text)
    missing = [name for key, name in known.items() if key not in descriptions]
    if missing:
        raise ClassifierError(
            f"classifier.category_descriptions: no description for categories "
            f"{', '.join(map(repr, missing))} of policy {policy.name!r}; add a "
            "one-sentence description of each under classifier.category_descriptions"
        )
    return {name: descriptions[key] for key, name in known.items()}


def render_request(prompt: Sequence[Message], descriptions: Mapping[str, str]) -> str:
    """Return the user message that requests the category of ``prompt``."""
    lines = [
        "Decide which content-policy category the latest user request in the "
        "conversation below belongs to. Earlier turns are context. When several "
        "categories fit, pick the one that calls for the most careful answer.",
        "",
        "Categories:",
    ]
    lines.extend(f"- {name}: {text}" for name, text in descriptions.items())
    lines.extend(["", "Conversation:"])
    for message in prompt:
        lines.append(f"[{message.role}]\n{message.content.strip()}\n")
    names = ", ".join(descriptions)
    lines.append(f"Reply with exactly one of: {names}.")
    lines.append("Category:")
    return "\n".join(lines)


def parse_category_reply(reply: str, names: Sequence[str]) -> tuple[str | None, str]:
    """Read a category name from a model's reply.

    Three forms are tried in order. First, a JSON object with a ``category``
    string. Second, the whole reply or its first line as a name, ignoring
    case, quotes, markdown, a ``Category:`` label and final punctuation.
    Third, exactly one distinct name found as a whole word in the first
    line, else in the whole reply.

    Returns:
        ``(name, "")`` with the name as spelled in ``names``, or
        ``(None, reason)``.
    """
    text = reply.strip()
    if not text:
        return None, "empty reply"
    lookup = {normalize_name(name): name for name in names}
    candidates = [_json_category(text), text, text.splitlines()[0]]
    for candidate in candidates:
        if candidate is not None:
            name = lookup.get(normalize_name(_strip_decoration(candidate)))
            if name is not None:
                return name, ""
    for scope in (text.splitlines()[0], text):
        found = {name for name in names if _mentions(scope, name)}
        if len(found) == 1:
            return found.pop(), ""
        if len(found) > 1:
            return None, f"reply names several categories ({', '.join(sorted(found))})"
    return None, "reply names no known category"


def _json_category(text: str) -> str | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    category = value.get("category") if isinstance(value, dict) else None
    return category if isinstance(category, str) else None


def _strip_decoration(text: str) -> str:
    text = text.strip(_DECORATION)
    text = re.sub(r"^(category|answer)\s*:\s*", "", text, flags=re.IGNORECASE)
    return text.strip(_DECORATION)


def _mentions(text: str, name: str) -> bool:
    # Category names are matched case-sensitively inside free text, so the
    # category "None" is not found in "none of these".
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None
