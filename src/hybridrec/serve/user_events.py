"""One user's recorded events, stored compactly: what :class:`~hybridrec.serve.recent.
RecentEvents` keeps per user between a model's watermark and the next model."""

from __future__ import annotations

import weakref
from array import array
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from hybridrec.recommend import Recommender


def user_key(raw: Any) -> str:
    """The key of a user's events: their id as text, so 42 and "42" are one user (as the
    model's encoder treats them)."""
    return str(raw).strip()


class ItemCodes:
    """Item ids as small integers, so each user's events are an ``array`` of codes: the
    cyclic garbage collector does not walk arrays (it walks every element of a list, and
    millions of event items made each full collection stall the service)."""

    __slots__ = ("codes", "raw")

    def __init__(self) -> None:
        self.codes: dict[Any, int] = {}
        self.raw: list[Any] = []  # code -> item id

    def code(self, item: Any) -> int:
        code = self.codes.get(item)
        if code is None:  # only the writer thread adds codes
            code = len(self.raw)
            self.raw.append(item)
            self.codes[item] = code
        return code


class UserEvents:
    """One user's events after the watermark: every item, and the positives (a target of
    1, or at least the model's ``--threshold``) in event order, as item codes."""

    __slots__ = ("codes", "items", "positives", "_encoded")

    def __init__(self, codes: ItemCodes) -> None:
        self.codes = codes
        self.items = array("q")
        self.positives = array("q")
        self._encoded: tuple[Any, int, np.ndarray] | None = None

    def add(self, item: Any, positive: bool) -> None:
        code = self.codes.code(item)
        self.items.append(code)
        if positive:
            self.positives.append(code)

    def positive_items(self) -> list[Any]:
        """The ids of the positive items, in event order."""
        raw = self.codes.raw
        return [raw[code] for code in self.positives[: len(self.positives)]]

    def item_indices(self, rec: Recommender) -> np.ndarray:
        """The distinct indices of these items in ``rec`` (unknown items dropped), kept
        until the user's items or the model change."""
        n, cached = len(self.items), self._encoded
        if cached is None or cached[0]() is not rec or cached[1] != n:
            codes = np.unique(np.frombuffer(self.items[:n], dtype=np.int64))  # a copy
            raw = self.codes.raw
            ids = [raw[code] for code in codes.tolist()]
            index = rec.items.transform(ids) if ids else np.zeros(0, dtype=np.int64)
            cached = (weakref.ref(rec), n, np.unique(index[index > 0]))
            self._encoded = cached
        return cached[2]
