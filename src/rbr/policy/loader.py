"""Load policies from YAML in this project's format or the published format.

This project's format has top-level keys ``name``, ``propositions``,
``derived``, ``response_types``, ``labels`` and ``content_policy``. The
published format has ``prompt_template``, ``completion_class_order``,
``completion_classes``, ``derived_propositions`` and ``simple_propositions``;
both load into the same :class:`~rbr.policy.spec.Policy`.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rbr.errors import PolicyError, PolicyErrors
from rbr.policy.spec import (
    CLASS_ORDER,
    CompletionLabel,
    DerivedProposition,
    FewShotExample,
    Policy,
    Proposition,
    ResponseType,
)
from rbr.policy.validate import validate_policy
from rbr.policy.yaml_io import parse_yaml, read_yaml

DEFAULT_POLICY_RESOURCE = "default_policy.yaml"
REFERENCE_KEYS = {"simple_propositions", "completion_classes"}


class _FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _PropositionEntry(_FileModel):
    instruction: str
    examples: list[FewShotExample] = Field(default_factory=list)


class _ResponseTypeEntry(_FileModel):
    description: str = ""
    classes: dict[str, dict[str, bool]]
    ordering: list[list[str]] = Field(default_factory=list)


class _LabelEntry(_FileModel):
    description: str = ""
    margin: float | None = Field(default=None, gt=0)
    targets: dict[str, bool] = Field(default_factory=dict)


class _PolicyFile(_FileModel):
    name: str
    version: str | int = "1"
    description: str = ""
    prompt_template: str | None = None
    propositions: dict[str, _PropositionEntry]
    derived: dict[str, dict[str, bool]] = Field(default_factory=dict)
    response_types: dict[str, _ResponseTypeEntry]
    labels: dict[str, _LabelEntry] = Field(default_factory=dict)
    content_policy: dict[str, str | None] = Field(default_factory=dict)


class _ReferencePropositionEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt: str


class _ReferenceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt_template: str | None = None
    completion_class_order: list[str] = Field(default_factory=lambda: list(CLASS_ORDER))
    completion_classes: dict[str, dict[str, dict[str, bool]]]
    derived_propositions: dict[str, dict[str, bool]] = Field(default_factory=dict)
    simple_propositions: dict[str, _ReferencePropositionEntry]


def load_policy(path: str | Path) -> Policy:
    """Load and validate a policy file in either supported format.

    Raises:
        PolicyError: Naming the file, the key path, the problem and the fix.
    """
    data = read_yaml(path)
    return policy_from_data(data, source=str(path))


def load_default_policy() -> Policy:
    """Load the safety policy that ships with rbr."""
    text = (
        resources.files("rbr.policy")
        .joinpath(DEFAULT_POLICY_RESOURCE)
        .read_text(encoding="utf-8")
    )
    return policy_from_data(
        parse_yaml(text, source="rbr:default_policy.yaml"),
        source="rbr:default_policy.yaml",
    )


def policy_from_yaml(text: str, *, source: str = "<memory>") -> Policy:
    """Load and validate a policy from YAML text."""
    return policy_from_data(parse_yaml(text, source=source), source=source)


def policy_from_data(data: Any, *, source: str = "<memory>") -> Policy:
    """Build a validated policy from parsed YAML data.

    Raises:
        PolicyError: When the data is not a valid policy.
    """
    if not isinstance(data, dict):
        raise PolicyError(
            source,
            "",
            f"a policy must be a mapping at the top level, got {type(data).__name__}",
            "start the file with keys such as 'name:' and 'propositions:'",
        )
    if REFERENCE_KEYS & data.keys():
        policy = _from_reference(data, source)
    else:
        policy = _from_native(data, source)
    validate_policy(policy)
    return policy.model_copy(update={"content_hash": policy_hash(policy)})


def policy_hash(policy: Policy) -> str:
    """Return a SHA-256 digest of everything in the policy that affects rewards."""
    content = policy.model_dump(exclude={"source", "content_hash"}, mode="json")
    payload = json.dumps(content, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _validate_file(model: type[BaseModel], data: dict, source: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise PolicyErrors(
            [_convert(item, source) for item in error.errors()]
        ) from None


def _convert(item: Any, source: str) -> PolicyError:
    path = ".".join(str(part) for part in item["loc"])
    kind = item["type"]
    value = item.get("input")
    if kind == "missing":
        return PolicyError(source, path, "required key is missing", f"add '{path}'")
    if kind == "extra_forbidden":
        return PolicyError(
            source, path, "unknown key", "remove it or correct its spelling"
        )
    if kind == "bool_type" or kind == "bool_parsing":
        return PolicyError(
            source,
            path,
            f"expected true or false, got {value!r}",
            "write true or false",
        )
    return PolicyError(
        source,
        path,
        f"{item['msg']} (got {type(value).__name__} {_short(value)})",
        "change the value to the expected type",
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _from_native(data: dict, source: str) -> Policy:
    parsed: _PolicyFile = _validate_file(_PolicyFile, data, source)
    propositions = {
        name: Proposition(
            name=name, instruction=entry.instruction, examples=tuple(entry.examples)
        )
        for name, entry in parsed.propositions.items()
    }
    derived = {
        name: DerivedProposition(name=name, requires=requires)
        for name, requires in parsed.derived.items()
    }
    response_types = {
        name: ResponseType(
            name=name,
            description=entry.description,
            classes=entry.classes,
            ordering=tuple(tuple(tier) for tier in entry.ordering),
        )
        for name, entry in parsed.response_types.items()
    }
    labels = {
        name: CompletionLabel(
            name=name,
            description=entry.description,
            margin=entry.margin,
            targets=entry.targets,
        )
        for name, entry in parsed.labels.items()
    }
    return Policy(
        name=parsed.name,
        version=str(parsed.version),
        description=parsed.description,
        source=source,
        format="rbr",
        prompt_template=parsed.prompt_template,
        propositions=propositions,
        derived=derived,
        response_types=response_types,
        labels=labels,
        content_policy=parsed.content_policy,
    )


def _from_reference(data: dict, source: str) -> Policy:
    """Convert the published format, whose classes are keyed class -> response type."""
    parsed: _ReferenceFile = _validate_file(_ReferenceFile, data, source)
    if tuple(parsed.completion_class_order) != CLASS_ORDER:
        raise PolicyError(
            source,
            "completion_class_order",
            f"expected the classes {list(CLASS_ORDER)} in that order, "
            f"got {parsed.completion_class_order}",
            "list the five completion classes from best to worst",
        )
    by_type: dict[str, dict[str, dict[str, bool]]] = {}
    for class_name, per_type in parsed.completion_classes.items():
        for type_name, requires in per_type.items():
            by_type.setdefault(type_name, {})[class_name] = requires
    propositions = {
        name: Proposition(name=name, instruction=entry.prompt)
        for name, entry in parsed.simple_propositions.items()
    }
    derived = {
        name: DerivedProposition(name=name, requires=requires)
        for name, requires in parsed.derived_propositions.items()
    }
    response_types = {
        name: ResponseType(name=name, classes=classes)
        for name, classes in by_type.items()
    }
    return Policy(
        name=Path(source).stem,
        source=source,
        format="reference",
        prompt_template=parsed.prompt_template,
        propositions=propositions,
        derived=derived,
        response_types=response_types,
    )
