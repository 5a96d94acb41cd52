"""Readers and writers for conversation data in JSONL and Parquet.

Rows use the gold-set layout: ``prompt`` is a list of ``{role, content}``
messages ending with a user turn and ``completion`` is a list holding one
assistant message (a plain string is accepted for either). Optional fields:
``response_type``, ``category``, ``label``, ``base_reward``, ``prompt_id`` and
``propositions`` (a mapping of proposition name to a boolean or a probability).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal, overload

from rbr.data.types import Record, Sample, messages_from_mapping, prompt_hash
from rbr.errors import DataError

KNOWN_FIELDS = {
    "prompt",
    "completion",
    "response_type",
    "category",
    "label",
    "base_reward",
    "prompt_id",
    "propositions",
    "id",
}


def iter_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)`` from a JSONL or Parquet file.

    Line numbers are 1-based. Blank JSONL lines are skipped but still counted.

    Raises:
        DataError: When the file is missing, unreadable or a line is not a JSON
            object.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), None, "file not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _iter_parquet(path)
        return
    # Read all lines first so the file is closed even when the caller stops
    # at an invalid row without closing this generator.
    try:
        # utf-8-sig also accepts a leading byte-order mark.
        with path.open("r", encoding="utf-8-sig") as handle:
            lines = handle.readlines()
    except UnicodeDecodeError as error:
        raise DataError(
            str(path), None, f"not UTF-8 text (byte {error.start}); save it as UTF-8"
        ) from None
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(
                str(path),
                number,
                f"invalid JSON: {error.msg} at column {error.colno}",
            ) from None
        if not isinstance(row, dict):
            raise DataError(
                str(path),
                number,
                f"expected a JSON object, got {type(row).__name__}",
            )
        yield number, row


def _iter_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - depends on the environment
        raise DataError(
            str(path), None, "reading Parquet needs pyarrow: pip install 'rbr[parquet]'"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several unrelated types
        raise DataError(str(path), None, f"cannot read Parquet file: {error}") from None
    yield from enumerate(table.to_pylist(), start=1)


def parse_record(row: Mapping[str, Any], *, source: str, line: int | None) -> Record:
    """Build a :class:`Record` from one row, reporting problems with file and line.

    Raises:
        DataError: When a required field is missing or has the wrong type.
    """

    def fail(problem: str) -> DataError:
        return DataError(source, line, problem)

    if "prompt" not in row:
        raise fail("missing field 'prompt' (a list of {role, content} messages)")
    if "completion" not in row:
        raise fail("missing field 'completion' (a list with one assistant message)")
    prompt_value = row["prompt"]
    if isinstance(prompt_value, str):
        prompt_value = [{"role": "user", "content": prompt_value}]
    try:
        prompt = messages_from_mapping(prompt_value)
    except ValueError as error:
        raise fail(f"field 'prompt': {error}") from None
    if not prompt:
        raise fail("field 'prompt' is empty; it needs at least one user message")
    if prompt[-1].role != "user":
        raise fail(
            f"field 'prompt' ends with a {prompt[-1].role!r} message; it must end with "
            "the user turn the completion answers"
        )
    completion = _completion_text(row["completion"], fail)

    response_type = _optional_str(row, "response_type", fail)
    category = _optional_str(row, "category", fail)
    label = _optional_str(row, "label", fail)
    base_reward = _optional_float(row, "base_reward", fail)
    prompt_id = _optional_str(row, "prompt_id", fail) or prompt_hash(prompt)
    sample_id = _optional_str(row, "id", fail)
    propositions = _propositions(row.get("propositions"), fail)
    extra = {k: v for k, v in row.items() if k not in KNOWN_FIELDS}
    sample = Sample(
        prompt=prompt,
        completion=completion,
        response_type=response_type,
        sample_id=sample_id if sample_id is not None else f"{source}:{line}",
    )
    return Record(
        sample=sample,
        prompt_id=prompt_id,
        category=category,
        label=label,
        base_reward=base_reward,
        propositions=propositions,
        line=line,
        extra=extra,
    )


def read_records(path: str | Path) -> list[Record]:
    """Read every row of a JSONL or Parquet file into records.

    Raises:
        DataError: On the first invalid row, naming the file and line.
    """
    source = str(path)
    # Close the reader at once when a row is invalid, not when it is collected.
    with contextlib.closing(iter_rows(path)) as rows:
        return [parse_record(row, source=source, line=n) for n, row in rows]


def _completion_text(value: Any, fail: Any) -> str:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise fail("field 'completion' has an invalid Unicode character") from None
        return value
    try:
        messages = messages_from_mapping(value)
    except ValueError as error:
        raise fail(f"field 'completion': {error}") from None
    if len(messages) != 1 or messages[0].role != "assistant":
        roles = [m.role for m in messages]
        raise fail(
            f"field 'completion' must hold exactly one assistant message, got roles {roles}"
        )
    return messages[0].content


def _optional_str(row: Mapping[str, Any], key: str, fail: Any) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise fail(f"field '{key}' must be a string, got {type(value).__name__}")
    return value


def _optional_float(row: Mapping[str, Any], key: str, fail: Any) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(f"field '{key}' must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise fail(f"field '{key}' must be finite, got {value}")
    return float(value)


def _propositions(value: Any, fail: Any) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise fail(
            f"field 'propositions' must be an object of name to boolean or "
            f"probability, got {type(value).__name__}"
        )
    result = {}
    for name, item in value.items():
        if item is None:
            # Columnar formats store an unlabelled proposition as null.
            continue
        if isinstance(item, bool):
            result[name] = 1.0 if item else 0.0
        elif isinstance(item, (int, float)) and 0.0 <= item <= 1.0:
            result[name] = float(item)
        else:
            raise fail(
                f"field 'propositions.{name}' must be a boolean or a probability "
                f"in [0, 1], got {item!r}"
            )
    return result


@overload
def atomic_output(
    path: str | Path, *, binary: Literal[False] = False
) -> contextlib.AbstractContextManager[IO[str]]: ...


@overload
def atomic_output(
    path: str | Path, *, binary: Literal[True]
) -> contextlib.AbstractContextManager[IO[bytes]]: ...


@contextlib.contextmanager
def atomic_output(path: str | Path, *, binary: bool = False) -> Iterator[IO[Any]]:
    """Open a file for writing that appears only if the block succeeds.

    The data goes to a temporary file in the same folder, which is renamed
    over ``path`` on success and deleted on any exception, so a failed run
    never leaves a partial output file.

    Args:
        path: The output file; missing parent folders are created.
        binary: Open the file for bytes rather than UTF-8 text.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode, encoding = ("wb", None) if binary else ("w", "utf-8")
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below
        mode, encoding=encoding, dir=path.parent, prefix=f".{path.name}.", delete=False
    )
    try:
        with handle:
            yield handle
        # NamedTemporaryFile creates the file with mode 0600; give the output
        # the permissions an ordinary open() would, honouring the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(handle.name, 0o666 & ~umask)
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)
        raise


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows as JSONL atomically and return how many were written."""
    count = 0
    with atomic_output(path) as handle:
        for row in rows:
            handle.write(json.dumps(json_safe(row), ensure_ascii=False) + "\n")
            count += 1
    return count


def json_safe(value: Any) -> Any:
    """Return ``value`` with NaN and infinities replaced by None, recursively.

    Python's json module writes NaN as a bare ``NaN`` token, which standard
    JSON parsers reject.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
