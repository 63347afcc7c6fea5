"""Split an interaction frame into train / (validation /) test, and write the splits as CSV.

Every function takes the standard frame of :func:`hybridrec.data.io.read_interactions`
(``user_id``, ``item_id``, ``target`` and optionally ``timestamp``) and returns a :class:`Split`
whose ``train`` and ``test`` partition the input exactly: every input row lands in exactly one of
them, in input order and with its input index, so ``split.test.index`` tells where each test row
came from. The functions are pure (the input is not modified) and vectorized: a user is a group
in one sort, never a Python loop, so 10M-row frames split in seconds.

Order "by timestamp" always means ascending ``(timestamp, item id, row position)``: among
interactions at the same time the one with the largest item id counts as the latest (integer ids
compare as numbers, string ids as strings), and among identical ``(timestamp, item)`` rows the
later row. This makes the held-out item reproducible whatever order the file lists ties in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from hybridrec.data.io import FRAME_SOURCE, ITEM, TARGET, TIMESTAMP, USER
from hybridrec.errors import ConfigError, DataError
from hybridrec.files import atomic_write

#: ``test_fraction * n`` is floored after adding this, so 0.29 * 100 gives 29, not 28.
_EPS = 1e-9


@dataclass(frozen=True)
class Split:
    """Two frames that partition the input rows; unpacks as ``train, test = split``."""

    train: pd.DataFrame
    test: pd.DataFrame

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return iter((self.train, self.test))


def leave_one_out(
    frame: pd.DataFrame, by: Literal["timestamp", "random"] = "timestamp", seed: int = 0
) -> Split:
    """Hold out one interaction per user: the NCF-style evaluation split.

    Users with a single interaction stay entirely in train: holding out their only row would
    leave the model nothing to learn them from, so their test row could never be ranked well.

    Args:
        frame: the standard interaction frame.
        by: ``"timestamp"``: each user's latest interaction (ties: the largest item id, then the
            later row) is the test row; ``"random"``: a random row per user.
        seed: seed of the random choice (``by="random"`` only).

    Raises:
        ConfigError: ``by="timestamp"`` on a frame without a timestamp column, or a bad ``by``.
    """
    _require_ids(frame)
    _check_by("leave_one_out", by)
    instead = "--method loo-random to hold out a random interaction per user"
    rank, size = _rank_within_user(frame, by, seed, instead)
    return _split(frame, (rank == size - 1) & (size >= 2))


def ratio_split(
    frame: pd.DataFrame,
    test_fraction: float = 0.2,
    by: Literal["random", "timestamp"] = "random",
    seed: int = 0,
) -> Split:
    """Hold out ``floor(test_fraction * n)`` of each user's ``n`` rows, so every user is in both.

    Because ``test_fraction < 1``, at least one row of every user stays in train; a user with a
    single row keeps it in train.

    Args:
        frame: the standard interaction frame.
        test_fraction: share of each user's rows to hold out, in ``[0, 1)``.
        by: ``"random"``: random rows of each user; ``"timestamp"``: each user's latest rows.
        seed: seed of the random choice (``by="random"`` only).

    Raises:
        ConfigError: a bad fraction or ``by``, or ``by="timestamp"`` without timestamps.
    """
    _require_ids(frame)
    _check_fraction(test_fraction)
    _check_by("ratio_split", by)
    instead = "--method ratio to hold out random rows per user"
    rank, size = _rank_within_user(frame, by, seed, instead)
    n_test = np.floor(test_fraction * size + _EPS).astype(np.int64)
    return _split(frame, rank >= size - n_test)


def temporal_split(frame: pd.DataFrame, test_fraction: float = 0.2) -> Split:
    """Hold out the latest ``test_fraction`` of all rows: train on the past, test on the future.

    The cut time is the timestamp of the ``floor(test_fraction * n)``-th latest row, and every row
    at or after it goes to test, so rows sharing a timestamp are never torn apart (test may get a
    few more rows than the fraction). Users or items that only appear after the cut are unknown
    at test time, as they would be in production.

    Raises:
        ConfigError: a bad fraction, or the frame has no timestamp column.
    """
    _require_ids(frame)
    _check_fraction(test_fraction)
    ts = _timestamps(frame, "--method ratio or --method loo-random, which need no timestamps")
    n_test = math.floor(test_fraction * len(frame) + _EPS)
    if n_test == 0:
        return _split(frame, np.zeros(len(frame), dtype=bool))
    cut = np.sort(ts)[len(ts) - n_test]
    return _split(frame, ts >= cut)


def cold_split(
    frame: pd.DataFrame,
    by: Literal["item", "user"] = "item",
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Split:
    """Hold out every interaction of a random ``test_fraction`` of the items (or users).

    The cold-start split of the LightFM paper and ColdRec: the held-out items (users) never
    appear in train, so only their features can place them. Evaluate it with
    ``hybridrec evaluate --protocol cold``, which ranks each user's held-out items among all
    held-out items.

    Raises:
        ConfigError: a bad fraction or ``by``.
    """
    _require_ids(frame)
    _check_fraction(test_fraction)
    if by not in ("item", "user"):
        raise ConfigError(f"cold_split: by must be 'item' or 'user', got {by!r}")
    column = ITEM if by == "item" else USER
    codes, n = _dense_codes(frame[column].to_numpy())
    chosen = np.random.default_rng(seed).permutation(n)[: math.floor(test_fraction * n + _EPS)]
    is_cold = np.zeros(n, dtype=bool)
    is_cold[chosen] = True
    return _split(frame, is_cold[codes])


def _cold_items(frame: pd.DataFrame, test_fraction: float, seed: int) -> Split:
    """``cold_split`` by item."""
    return cold_split(frame, "item", test_fraction, seed)


def _cold_users(frame: pd.DataFrame, test_fraction: float, seed: int) -> Split:
    """``cold_split`` by user."""
    return cold_split(frame, "user", test_fraction, seed)


def _loo(frame: pd.DataFrame, test_fraction: float, seed: int) -> Split:
    """``leave_one_out`` by timestamp; ``test_fraction`` is ignored (one row per user)."""
    return leave_one_out(frame, by="timestamp", seed=seed)


def _loo_random(frame: pd.DataFrame, test_fraction: float, seed: int) -> Split:
    """``leave_one_out`` of a random row; ``test_fraction`` is ignored (one row per user)."""
    return leave_one_out(frame, by="random", seed=seed)


def _ratio(frame: pd.DataFrame, test_fraction: float, seed: int) -> Split:
    """``ratio_split`` of random rows per user."""
    return ratio_split(frame, test_fraction, by="random", seed=seed)


def _temporal(frame: pd.DataFrame, test_fraction: float, seed: int) -> Split:
    """``temporal_split``; ``seed`` is ignored (the cut is deterministic)."""
    return temporal_split(frame, test_fraction)


#: CLI method names -> ``split(frame, test_fraction, seed)``.
METHODS: dict[str, Callable[[pd.DataFrame, float, int], Split]] = {
    "loo": _loo,
    "loo-random": _loo_random,
    "ratio": _ratio,
    "temporal": _temporal,
    "cold-items": _cold_items,
    "cold-users": _cold_users,
}


def split_three_ways(
    frame: pd.DataFrame,
    method: str,
    test_fraction: float = 0.2,
    val_fraction: float | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split into ``(train, val, test)``: val is cut from what is left, the way test was cut.

    Applying the same rule twice makes val a faithful stand-in for test (e.g. with ``"loo"`` both
    hold each user's latest item), so early stopping and tuning on val transfer to test. This
    is how ``movielens-100k-loo`` and its ``val/`` were built.

    Args:
        frame: the standard interaction frame.
        method: a key of :data:`METHODS`.
        test_fraction: share held out for test (ignored by the ``loo`` methods).
        val_fraction: share of the remaining rows held out for val; defaults to ``test_fraction``.
        seed: seed of the test split; the val split uses ``seed + 1``.

    On labelled data the ``loo`` methods hold out each user's latest (or a random)
    *positive*; rows labelled 0 stay in train.

    Raises:
        ConfigError: unknown method or bad fraction.
    """
    if method not in METHODS:
        raise ConfigError(
            f"unknown split method {method!r}; choose one of {', '.join(sorted(METHODS))}"
        )
    split = METHODS[method]
    negatives = None
    if method in _ONE_PER_USER and TARGET in frame and bool((frame[TARGET] <= 0.5).any()):
        # each user's held-out item is one they chose: a row labelled 0 (or below
        # --threshold) stays in train, where it teaches what the user passed over
        keep = frame[TARGET].to_numpy() > 0.5
        frame, negatives = frame[keep], frame[~keep]
    rest, test = split(frame, test_fraction, seed)
    frac = test_fraction if val_fraction is None else val_fraction
    train, val = split(rest, frac, seed + 1)
    if negatives is not None:
        train = pd.concat([train, negatives]).sort_index(kind="stable")
    return train, val, test


#: Methods that hold out one interaction per user: a positive one on labelled data.
_ONE_PER_USER = ("loo", "loo-random")


def write_interactions_csv(
    frame: pd.DataFrame,
    path: str | Path,
    *,
    user_col: str = "userId",
    item_col: str = "itemId",
    target_col: str = "target",
) -> Path:
    """Write the standard frame atomically as ``userId,itemId,target[,timestamp]`` CSV.

    This is the format ``read_interactions`` reads with the default column names. The 0/1
    target is written as ``0``/``1`` and whole-second timestamps without ``.0``, as in the seed
    files, so a written file reads back to the same frame.
    """
    _require_ids(frame)
    out = pd.DataFrame({user_col: frame[USER].to_numpy(), item_col: frame[ITEM].to_numpy()})
    target = frame[TARGET].to_numpy(dtype=np.float64) if TARGET in frame else None
    if target is None:
        out[target_col] = np.ones(len(frame), dtype=np.int8)
    elif np.all(np.isin(target, (0.0, 1.0))):
        out[target_col] = target.astype(np.int8)
    else:
        out[target_col] = target
    if TIMESTAMP in frame:
        ts = frame[TIMESTAMP].to_numpy()
        whole = ts.dtype.kind == "f" and np.all(np.isfinite(ts)) and np.all(ts == np.round(ts))
        if whole and np.all(np.abs(ts) < 2.0**63):  # beyond int64 a cast gives INT64_MIN
            ts = ts.astype(np.int64)
        out[TIMESTAMP] = ts
    path = Path(path)
    atomic_write(path, lambda f: out.to_csv(f, index=False))
    return path


def write_split(
    directory: str | Path,
    train: pd.DataFrame,
    val: pd.DataFrame,
    test: pd.DataFrame,
    user_col: str = "userId",
    item_col: str = "itemId",
) -> tuple[Path, Path, Path]:
    """Write ``train.csv``, ``val.csv`` and ``test.csv`` atomically, ready for ``hybridrec train``.

    Args:
        directory: created when missing.
        train, val, test: standard interaction frames, e.g. from :func:`split_three_ways`.
        user_col, item_col: the column names to write, usually those of the original file.

    Returns:
        The three paths, in that order.
    """
    directory = Path(directory)
    return tuple(  # type: ignore[return-value]
        write_interactions_csv(frame, directory / name, user_col=user_col, item_col=item_col)
        for frame, name in ((train, "train.csv"), (val, "val.csv"), (test, "test.csv"))
    )


# ---------------------------------------------------------------- helpers


def _source(frame: pd.DataFrame) -> str:
    return str(frame.attrs.get("path", FRAME_SOURCE))


def _require_ids(frame: pd.DataFrame) -> None:
    missing = [c for c in (USER, ITEM) if c not in frame.columns]
    if missing:
        raise DataError(
            _source(frame),
            f"missing column(s) {', '.join(map(repr, missing))}",
            expected="the frame read_interactions returns",
        )


def _check_by(function: str, by: str) -> None:
    if by not in ("timestamp", "random"):
        raise ConfigError(f"{function}: by must be 'timestamp' or 'random', got {by!r}")


def _check_fraction(test_fraction: float) -> None:
    if not 0 <= test_fraction < 1:
        raise ConfigError(f"--test-fraction must be in [0, 1), got {test_fraction}")


def _timestamps(frame: pd.DataFrame, instead: str) -> np.ndarray:
    """The timestamp column as float64, or a ConfigError saying which method works without."""
    if TIMESTAMP not in frame.columns:
        raise ConfigError(
            f"{Path(_source(frame)).name}: cannot split by time: the data has no timestamp "
            f"column; use {instead}, or add a 'timestamp' column"
        )
    col = frame[TIMESTAMP]
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        col = col.astype("int64")
    ts = col.to_numpy(dtype=np.float64)
    bad = np.isnan(ts)
    if bad.any():
        pos = int(np.argmax(bad))
        raise DataError(
            _source(frame), "missing timestamp", row=pos + 1, column=TIMESTAMP, expected="a number"
        )
    return ts


def _dense_codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """``(codes, count)``: 0-based codes that sort like the values; equal values, equal codes.

    Numbers compare as numbers and strings as strings (mixed types that cannot be compared fall
    back to their text). One quicksort, which is faster than ``pd.factorize(sort=True)`` when
    the values are nearly all distinct, as timestamps are.
    """
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        try:
            codes, uniques = pd.factorize(values, sort=True)
        except TypeError:
            codes, uniques = pd.factorize(values.astype(str), sort=True)
        return codes.astype(np.int64), len(uniques)
    codes = np.empty(len(values), dtype=np.int64)
    if len(values) == 0:
        return codes, 0
    order = np.argsort(values)
    ordered = values[order]
    codes[order] = np.cumsum(np.r_[False, ordered[1:] != ordered[:-1]])
    return codes, int(codes[order[-1]]) + 1


def _rank_within_user(
    frame: pd.DataFrame, by: str, seed: int, instead: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per row (input order): its 0-based rank among its user's rows, and the user's row count.

    Rows of a user are ranked by ``(timestamp, item id, position)`` when ``by == "timestamp"``
    (the last rank is the latest), else in a seeded random order. All users are ranked by one
    stable sort on one int64 key (``user, timestamp, item`` packed), falling back to a lexsort,
    twice as slow, when the packed key could overflow.
    """
    n = len(frame)
    users, uniques = pd.factorize(frame[USER].to_numpy())
    users = users.astype(np.int64)
    if by == "timestamp":
        ts, n_ts = _dense_codes(_timestamps(frame, instead))
        items, n_items = _dense_codes(frame[ITEM].to_numpy())
        if len(uniques) * n_ts * n_items < 2**62:  # Python ints: this check cannot overflow
            order = np.argsort((users * n_ts + ts) * n_items + items, kind="stable")
        else:
            order = np.lexsort((items, ts, users))  # stable too: equal keys keep row order
    else:
        shuffled = np.random.default_rng(seed).permutation(n)
        order = shuffled[np.argsort(users[shuffled], kind="stable")]
    rank = np.empty(n, dtype=np.int64)
    size = np.empty(n, dtype=np.int64)
    if n == 0:
        return rank, size
    grouped = users[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    lengths = np.diff(np.r_[starts, n])
    rank[order] = np.arange(n) - np.repeat(starts, lengths)
    size[order] = np.repeat(lengths, lengths)
    return rank, size


def _split(frame: pd.DataFrame, is_test: np.ndarray) -> Split:
    is_test = np.asarray(is_test, dtype=bool)
    return Split(train=frame[~is_test], test=frame[is_test])
