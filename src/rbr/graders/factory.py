"""Build a grader from a kind name and options, as the CLI and configs do."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rbr.data.types import Record
from rbr.errors import GraderError
from rbr.graders.base import Grader
from rbr.graders.labels import LabelsGrader

GRADER_KINDS = ("labels",)


@dataclass
class GraderOptions:
    """Options shared by the grader kinds; each kind reads the ones it uses.

    Attributes:
        kind: One of :data:`GRADER_KINDS`.
        records: Rows whose stored ``propositions`` the labels grader returns.
        cache_path: SQLite grade cache file; None disables caching.
        settings: Kind-specific options, such as ``base_url`` or ``model_path``.
    """

    kind: str = "labels"
    records: Sequence[Record] = ()
    cache_path: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def make_grader(options: GraderOptions) -> Grader:
    """Build the grader described by ``options``.

    Raises:
        GraderError: When the kind is unknown or its options are incomplete.
    """
    if options.kind == "labels":
        return LabelsGrader.from_records(options.records)
    raise GraderError(
        f"unknown grader kind {options.kind!r}; use one of {', '.join(GRADER_KINDS)}"
    )
