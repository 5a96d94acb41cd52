"""Enumerate the ranked pairs that the pairwise hinge loss is taken over.

A pair ``(a, b)`` is two completions of the same group (prompt) where ``a`` has
the strictly lower, that is better, rank. Completions of equal rank form no
pair. Pairs are built per group from one sort of all rows, so the cost is
linear in the number of pairs, with no Python loop over groups.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

RandomState = int | np.random.Generator | None

# Listing more pairs than this takes over 24 GB for the three pair arrays alone.
MAX_LISTED_PAIRS = 1_000_000_000


@dataclass(frozen=True)
class Pairs:
    """Ordered pairs of row indices with the margin each pair must clear.

    Attributes:
        better: Row index of the better-ranked completion of each pair (int64).
        worse: Row index of the worse-ranked completion of each pair (int64).
        margin: Margin of each pair: the margin of its better completion
            (float64).
    """

    better: npt.NDArray[np.int64]
    worse: npt.NDArray[np.int64]
    margin: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.better.shape[0])


def as_random_generator(random_state: RandomState) -> np.random.Generator:
    """Return a numpy Generator for an int seed, a Generator or None.

    Raises:
        ValueError: If ``random_state`` is of another type.
    """
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.Generator):
        return random_state
    raise ValueError(
        f"random_state must be None, an int seed or a numpy.random.Generator, "
        f"got {type(random_state).__name__}"
    )


def validate_ranks(ranks: npt.ArrayLike, n_rows: int | None = None) -> np.ndarray:
    """Return ``ranks`` as a 1-D int64 array after checking it.

    Float arrays are accepted when every value is a whole number.

    Raises:
        ValueError: If ranks are not 1-D, not whole numbers, or of the wrong
            length.
    """
    array = np.asarray(ranks)
    if array.ndim != 1:
        raise ValueError(f"ranks must be a 1-D array, got shape {array.shape}")
    if n_rows is not None and array.shape[0] != n_rows:
        raise ValueError(f"ranks has {array.shape[0]} values, expected {n_rows}")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"ranks must be integers, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64, copy=False)
    if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
        bad = array[~np.isfinite(array) | (array != np.round(array))][0]
        raise ValueError(f"ranks must be whole numbers, got {bad!r}")
    return array.astype(np.int64)


def validate_margins(margins: npt.ArrayLike, n_rows: int) -> np.ndarray:
    """Return per-row ``margins`` as a float64 array after checking it.

    Raises:
        ValueError: If margins are not 1-D, of the wrong length, negative or not
            finite.
    """
    array = np.asarray(margins, dtype=np.float64)
    if array.ndim != 1 or array.shape[0] != n_rows:
        raise ValueError(
            f"margins must be a 1-D array of {n_rows} values, got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("margins contains NaN or infinite values")
    if np.any(array < 0):
        raise ValueError(
            f"margins must be >= 0, got {array.min()!r}. A margin is the reward "
            "gap a better completion must keep over a worse one"
        )
    return array


def encode_groups(group_ids: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return the sorted unique group ids and each row's index into them.

    Raises:
        ValueError: If ``group_ids`` is not 1-D or its values cannot be sorted.
    """
    array = np.asarray(group_ids)
    if array.ndim != 1:
        raise ValueError(f"group_ids must be a 1-D array, got shape {array.shape}")
    try:
        unique, codes = np.unique(array, return_inverse=True)
    except TypeError as error:
        raise ValueError(
            f"group_ids must be of one sortable type (all ints or all strings): {error}"
        ) from error
    return unique, codes.reshape(-1).astype(np.int64, copy=False)


def _worse_ranges(
    codes: np.ndarray, ranks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort rows by (group, rank) and find where each row's worse rows lie.

    Returns:
        ``order`` (sorted position to row), ``tier_end`` (first sorted position
        after the row's rank tier in its group) and ``group_end`` (first sorted
        position after its group), both indexed by sorted position.
    """
    order = np.lexsort((ranks, codes))
    sorted_codes = codes[order]
    sorted_ranks = ranks[order]
    n_rows = order.shape[0]
    positions = np.arange(n_rows, dtype=np.int64)

    new_group = np.ones(n_rows, dtype=bool)
    new_group[1:] = sorted_codes[1:] != sorted_codes[:-1]
    new_tier = new_group.copy()
    new_tier[1:] |= sorted_ranks[1:] != sorted_ranks[:-1]

    def end_of_run(starts: np.ndarray) -> np.ndarray:
        # A run ends where the next run starts, and the last run ends at n_rows.
        boundary = np.flatnonzero(starts)
        run_index = np.cumsum(starts) - 1
        ends = np.append(boundary[1:], n_rows)
        return ends[run_index]

    tier_end = end_of_run(new_tier) if n_rows else positions
    group_end = end_of_run(new_group) if n_rows else positions
    return order, tier_end, group_end


def build_pairs(
    group_ids: npt.ArrayLike,
    ranks: npt.ArrayLike,
    margins: npt.ArrayLike | None = None,
    *,
    max_pairs: int | None = None,
    random_state: RandomState = None,
) -> Pairs:
    """Build every (better, worse) pair of rows within each group.

    Args:
        group_ids: Group (prompt) of each row; any sortable 1-D array.
        ranks: Integer rank of each row, 0 for the best tier; lower is better.
        margins: Margin of each row, used for the pairs in which the row is the
            better one. None means 1.0 for every row.
        max_pairs: When the groups yield more pairs than this, keep a uniform
            random sample of this many distinct pairs, drawn without listing
            the others. None keeps all pairs.
        random_state: Seed or Generator for the sample; the same seed gives
            the same pairs.

    Returns:
        The pairs, ordered by group, then by the better row's rank.

    Raises:
        ValueError: If an argument has the wrong shape, type or value.
    """
    _, codes = encode_groups(group_ids)
    n_rows = codes.shape[0]
    rank_array = validate_ranks(ranks, n_rows)
    margin_array = (
        np.ones(n_rows) if margins is None else validate_margins(margins, n_rows)
    )
    if max_pairs is not None and (
        isinstance(max_pairs, bool)
        or not isinstance(max_pairs, (int, np.integer))
        or max_pairs < 1
    ):
        raise ValueError(f"max_pairs must be a positive int or None, got {max_pairs!r}")

    order, tier_end, group_end = _worse_ranges(codes, rank_array)
    counts = group_end - tier_end
    offsets = np.cumsum(counts) - counts
    total = int(counts.sum())

    if total > MAX_LISTED_PAIRS and (max_pairs is None or max_pairs > MAX_LISTED_PAIRS):
        raise ValueError(
            f"the groups yield {total} pairs, more than {MAX_LISTED_PAIRS} can be "
            "held in memory; set max_pairs to sample fewer"
        )
    if max_pairs is not None and total > max_pairs:
        rng = as_random_generator(random_state)
        pair_index = np.sort(rng.choice(total, size=int(max_pairs), replace=False))
        better_pos = np.searchsorted(offsets + counts, pair_index, side="right")
        logger.info("Sampled %s of %s pairs (max_pairs)", max_pairs, total)
    else:
        pair_index = np.arange(total, dtype=np.int64)
        better_pos = np.repeat(np.arange(n_rows, dtype=np.int64), counts)
    worse_pos = tier_end[better_pos] + (pair_index - offsets[better_pos])

    better = order[better_pos].astype(np.int64, copy=False)
    worse = order[worse_pos].astype(np.int64, copy=False)
    return Pairs(better=better, worse=worse, margin=margin_array[better])
