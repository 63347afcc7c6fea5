"""Map raw ids (as found in the files) to dense embedding indices and back.

Index 0 is reserved for *unknown*: ids never seen when the encoder was fitted map there, so
validation and inference never crash on a new user or item. Known ids get 1..n in sorted
order, which makes the mapping independent of row order (deterministic across runs).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

UNKNOWN_INDEX = 0
#: Text that is exactly an integer (no "007", no "-0"), at most 18 digits so it fits int64.
CANONICAL_INT = r"0|-?[1-9][0-9]{0,17}"
#: Lookups of at most this many ids use a binary search instead of pandas' hash table.
SMALL_LOOKUP = 256
_INT_TEXT = re.compile(CANONICAL_INT)
_NO_MATCH = np.iinfo(np.int64).min  # an int64 no real id uses, for text that is not an int


class IdEncoder:
    """A fitted bijection between raw ids and indices 1..n (0 = unknown).

    Example:
        >>> enc = IdEncoder.fit(["b", "a", "b"])
        >>> enc.transform(["a", "b", "zzz"]).tolist()
        [1, 2, 0]
        >>> enc.inverse_transform([2]).tolist()
        ['b']
    """

    def __init__(self, ids: np.ndarray) -> None:
        self._ids = ids  # position p holds the raw id of index p + 1
        self._index = pd.Index(ids)
        if not self._index.is_unique:
            raise ValueError("IdEncoder ids must be unique")
        self._sorted: np.ndarray | None = None  # built on the first small lookup
        self._order: np.ndarray | None = None

    @classmethod
    def fit(cls, ids: Sequence[Any] | np.ndarray | pd.Series) -> IdEncoder:
        """Build the encoder from every id in ``ids`` (duplicates allowed)."""
        unique = pd.unique(pd.Series(np.asarray(ids, dtype=_dtype_of(ids))))
        if len(unique) and isinstance(unique[0], str):
            unique = np.array(sorted(unique), dtype=object)
        else:
            unique = np.sort(unique)
        return cls(unique)

    def __len__(self) -> int:
        """Number of known ids (the embedding table has ``len(enc) + 1`` rows)."""
        return len(self._ids)

    @property
    def num_embeddings(self) -> int:
        """Rows an embedding table needs: every known id plus the unknown row 0."""
        return len(self._ids) + 1

    @property
    def ids(self) -> np.ndarray:
        """Known raw ids in index order (index ``p + 1`` is ``ids[p]``)."""
        return self._ids

    def transform(self, ids: Sequence[Any] | np.ndarray | pd.Series) -> np.ndarray:
        """Raw ids -> int64 indices; unknown ids (including ids of another type) map to 0.
        Whole floats are the integer ids they equal (1.0 is 1), as the file readers take
        them; other floats (1.5, NaN) are unknown."""
        floats = ids.to_numpy() if isinstance(ids, pd.Series) else np.asarray(ids)
        text_ids = len(self._ids) > 0 and isinstance(self._ids[0], str)
        if floats.dtype.kind == "f" and floats.ndim == 1 and not text_ids and not _whole(floats):
            out = np.zeros(len(floats), dtype=np.int64)
            with np.errstate(invalid="ignore"):
                whole = np.isfinite(floats) & (np.abs(floats) <= 2**53)
                whole &= np.floor(floats) == floats
            out[whole] = self.transform(floats[whole].astype(np.int64))
            return out
        values = np.asarray(ids, dtype=_dtype_of(ids))
        if values.ndim != 1:
            values = values.reshape(-1)
        if len(values) == 0:
            return np.zeros(0, dtype=np.int64)
        # one hash lookup per value (vectorised in pandas); -1 (not found) + 1 = 0 = unknown.
        # In place and without a dtype copy: at 20M ids each extra array is 160 MB.
        own, valid = self._as_own_kind(values)
        if len(own) <= SMALL_LOOKUP and self._searchable(own):
            positions = self._search(own)
        else:
            positions = self._index.get_indexer(own)
        if valid is not None:  # text that is no int64 matches nothing, not the placeholder
            positions[~valid] = -1
        self._strip_misses(own, positions)
        positions += 1
        return positions.astype(np.int64, copy=False)

    def _strip_misses(self, values: np.ndarray, positions: np.ndarray) -> None:
        """Text ids are stripped of surrounding spaces wherever they are read (files,
        events), so " u1" is the user "u1" here too. Only the misses are looked at again:
        a lookup of ids that are all known pays nothing for it."""
        if values.dtype != object or not len(self._ids) or not isinstance(self._ids[0], str):
            return
        missed = np.flatnonzero(positions == -1)
        if not len(missed):
            return
        spaced = [(j, v.strip()) for j, v in zip(missed, values[missed], strict=True)
                  if isinstance(v, str) and v != v.strip()]  # fmt: skip
        if spaced:
            rows, stripped = zip(*spaced, strict=True)
            positions[list(rows)] = self._index.get_indexer(np.array(stripped, dtype=object))

    def _searchable(self, values: np.ndarray) -> bool:
        """Whether a binary search compares ``values`` as the hash table would: integers
        against integer ids, text against text ids (anything else goes to pandas)."""
        if self._ids.dtype.kind == "i":
            return values.dtype.kind == "i"
        return values.dtype == object and all(isinstance(v, str) for v in values)

    def _search(self, values: np.ndarray) -> np.ndarray:
        """``get_indexer`` by binary search in a sorted copy of the ids: for a handful of ids
        (a service request) pandas' hash lookup costs ~0.1 ms of fixed overhead, this a few
        microseconds. Same answers: -1 where an id is absent."""
        if self._sorted is None:
            order = np.argsort(self._ids, kind="stable")
            self._sorted, self._order = self._ids[order], order
        sorted_ids, order = self._sorted, self._order
        if len(sorted_ids) == 0:
            return np.full(len(values), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(sorted_ids, values), len(sorted_ids) - 1)
        found = np.asarray(sorted_ids[at] == values, dtype=bool)
        return np.where(found, order[at], -1).astype(np.int64)

    def _as_own_kind(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Bring ids to the encoder's type, so "42" finds 42 (and 42 finds "42"); with a
        mask of the values that could be converted (None: all).

        A file whose id column holds one non-integer value is read as text throughout; its
        integer-looking ids must still match an encoder fitted on integers, and vice versa.
        """
        own_is_str = len(self._ids) > 0 and isinstance(self._ids[0], str)
        if own_is_str and values.dtype != object:
            return values.astype(str).astype(object), None
        if own_is_str and pd.api.types.infer_dtype(values, skipna=False) != "string":
            # Python ints among text (a list like [42, "u1"]): 42 still finds "42"
            return np.array([v if isinstance(v, str) else str(v) for v in values], object), None
        if not own_is_str and values.dtype == object and len(values) <= SMALL_LOOKUP:
            # a request's few ids: pandas' string methods cost ~0.5 ms of fixed overhead
            text = [str(v).strip() for v in values]
            is_int = np.array([_INT_TEXT.fullmatch(t) is not None for t in text], dtype=bool)
            numbers = [int(t) if ok else _NO_MATCH for t, ok in zip(text, is_int, strict=True)]
            return np.array(numbers, dtype=np.int64), is_int
        if not own_is_str and values.dtype == object:
            text = pd.Series(values, dtype=object).astype(str).str.strip()
            is_int = text.str.fullmatch(CANONICAL_INT).to_numpy()  # <= 18 digits: no overflow
            out = np.full(len(values), _NO_MATCH, dtype=np.int64)
            out[is_int] = text[is_int].astype(np.int64).to_numpy()
            return out, is_int
        return values, None

    def inverse_transform(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Indices 1..n -> raw ids. Index 0 has no raw id and raises ``ValueError``."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 1 or idx.max() > len(self._ids)):
            raise ValueError(f"indices must lie in 1..{len(self._ids)} (0 is the unknown id)")
        return self._ids[idx - 1]

    def extended(self, ids: Sequence[Any] | np.ndarray) -> IdEncoder:
        """A new encoder that keeps every index of this one and appends the ids of ``ids``
        it does not know (first appearance order; repeats allowed), so a grown model's old
        rows stay where they were. New ids take the encoder's kind (text ids stay text;
        integer ids must be integers).

        Example:
            >>> IdEncoder.fit([3, 1]).extended([5, 1, 4, 5]).ids.tolist()
            [1, 3, 5, 4]
        """
        values = np.asarray(ids, dtype=_dtype_of(ids)).reshape(-1)
        fresh = pd.unique(pd.Series(values[self.transform(values) == UNKNOWN_INDEX]))
        if len(fresh) == 0:
            return self
        fresh = np.asarray(fresh, dtype=_dtype_of(fresh))
        if len(self._ids) and isinstance(self._ids[0], str):
            own = np.asarray([str(x) for x in fresh], dtype=object)
        else:
            own, valid = self._as_own_kind(fresh)
            if valid is not None and not valid.all():
                raise ValueError(
                    f"the model's ids are integers; {fresh[~valid][0]!r} is not (give integer ids)"
                )
        return IdEncoder(np.concatenate([self._ids, own]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, kept with the model artifact."""
        kind = "str" if len(self._ids) and isinstance(self._ids[0], str) else "int"
        return {"kind": kind, "ids": [str(x) if kind == "str" else int(x) for x in self._ids]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IdEncoder:
        """Inverse of :meth:`to_dict`."""
        kind = data["kind"]
        if kind == "str":
            return cls(np.array(data["ids"], dtype=object))
        if kind == "int":
            return cls(np.array(data["ids"], dtype=np.int64))
        raise ValueError(f"unknown id kind {kind!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdEncoder) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"IdEncoder({len(self)} ids)"


def _dtype_of(ids: Any) -> Any:
    """Keep integers as int64 and everything else as Python objects (strings). Integers
    beyond int64 (2^63 and up) stay objects: no encoder holds them, so they are unknown."""
    arr = ids.to_numpy() if isinstance(ids, pd.Series) else np.asarray(ids)
    if arr.dtype == np.uint64 and len(arr) and arr.max() > np.iinfo(np.int64).max:
        return object
    if arr.dtype.kind == "f" and _whole(arr):  # a column that became float (a merge, NaN)
        return np.int64  # 1.0 is the id 1, as the file readers take it
    return np.int64 if np.issubdtype(arr.dtype, np.integer) else object


def _whole(values: np.ndarray) -> bool:
    """Floats that are all whole numbers an int64 holds exactly (within 2^53)."""
    return bool(
        np.isfinite(values).all()
        and (np.abs(values) <= 2**53).all()
        and (np.floor(values) == values).all()
    )
