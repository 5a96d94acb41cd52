"""A small labelled example data set that ships with rbr.

``conversations.jsonl`` contains 16 hand-written prompts across every
content-policy category, each with 4 or 5 completions. Every row has a
completion label (such as ``perfect_refusal`` or ``disallowed``) and
hand-labelled values of all 23 default propositions, so it can be graded with
the stored labels, used to fit weights and scored without a grader model. The
completions labelled ``disallowed`` only start to comply and then trail off:
they contain no harmful instructions or explicit material.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rbr.errors import DataError

EXAMPLE_FILE = "conversations.jsonl"


def example_path() -> Path:
    """Return the path of the bundled example conversations (JSONL).

    Raises:
        DataError: When the file is missing from the installed package, or the
            package is installed in a form (such as a zip file) that has no
            path on disk.
    """
    resource = resources.files(__name__).joinpath(EXAMPLE_FILE)
    if not isinstance(resource, Path):
        raise DataError(
            str(resource),
            None,
            "the example data is not a file on disk; install rbr from a wheel "
            "or source checkout instead of a zip file",
        )
    if not resource.is_file():
        raise DataError(
            str(resource),
            None,
            "example data file not found in the installed package; reinstall "
            "rbr so that its package data is included",
        )
    return resource
