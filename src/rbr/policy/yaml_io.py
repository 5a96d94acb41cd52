"""YAML reading that rejects duplicate keys and reports line numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rbr.errors import PolicyError


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that raises on a key repeated in one mapping.

    PyYAML keeps the last value of a repeated key without a word, which would
    silently drop a proposition or class defined twice.
    """


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise _DuplicateKey(str(key), line, seen[key])
        seen[key] = line
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int, first_line: int) -> None:
        self.key = key
        self.line = line
        self.first_line = first_line


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file, raising :class:`PolicyError` on syntax errors or duplicates.

    Raises:
        PolicyError: When the file is missing, is not valid YAML, or repeats a
            key within one mapping.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(
            source,
            "",
            "file not found",
            "check the path, or omit it to use the default policy",
        ) from None
    return parse_yaml(text, source=source)


def parse_yaml(text: str, *, source: str = "<memory>") -> Any:
    """Parse YAML text with the same checks as :func:`read_yaml`."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - safe loader subclass
    except _DuplicateKey as error:
        raise PolicyError(
            source,
            f"line {error.line}",
            f"duplicate name {error.key!r} (first defined on line {error.first_line})",
            "give each entry a unique name or merge the two definitions",
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise PolicyError(
            source,
            where,
            f"invalid YAML: {problem}",
            "fix the YAML syntax at that position",
        ) from None
