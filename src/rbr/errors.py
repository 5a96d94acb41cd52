"""Exception hierarchy shared by every rbr package.

Every error carries the context a user needs to act on it: the file, the key
path or line, what is wrong and how to fix it.
"""

from __future__ import annotations


class RbrError(Exception):
    """Base class of every error raised by rbr."""


class PolicyError(RbrError):
    """A policy file or policy object is invalid.

    Attributes:
        source: File the policy came from, or ``"<memory>"``.
        key_path: Dotted path of the offending key, such as
            ``response_types.Hard Refuse.classes.ideal``.
        problem: What is wrong.
        fix: What the user should change.
    """

    def __init__(self, source: str, key_path: str, problem: str, fix: str) -> None:
        self.source = source
        self.key_path = key_path
        self.problem = problem
        self.fix = fix
        location = f"{source}: {key_path}" if key_path else source
        super().__init__(f"{location}: {problem}. Fix: {fix}")


class PolicyErrors(PolicyError):
    """Several policy problems found in one validation pass."""

    def __init__(self, errors: list[PolicyError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(first.source, first.key_path, first.problem, first.fix)
        lines = [str(error) for error in errors]
        noun = "problem" if len(errors) == 1 else "problems"
        self.args = (f"{len(errors)} {noun} in policy:\n  " + "\n  ".join(lines),)


class DataError(RbrError):
    """A data file or row is invalid.

    Attributes:
        source: File name, or ``"<memory>"`` for in-memory rows.
        line: 1-based line number (JSONL) or row number (Parquet), or None.
    """

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {problem}")


class WeightsError(RbrError):
    """Saved weights are invalid or do not match the policy or grader in use."""


class NotFittedError(RbrError, ValueError):
    """An estimator was used before ``fit`` was called."""


class GraderError(RbrError):
    """A grader could not be built or failed as a whole (not per item)."""


class OutputError(RbrError):
    """An output file cannot be written where the user asked."""
