"""What every recommendation path returns: a :class:`Recommendation` of read-only arrays.

The arrays are frozen because results may share one (every unknown user gets the same
popularity list), so changing one result must not change the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

IdsLike = Sequence[Any] | np.ndarray
Source = Literal["model", "popularity", "items", "similar"]


@dataclass(frozen=True, eq=False)
class Recommendation:
    """Top items for one user (or one item list), best first.

    Attributes:
        user_id: the user as given; None for :meth:`Recommender.recommend_for_items` and
            :meth:`Recommender.similar_items`.
        item_ids: raw item ids, best first (read-only array).
        scores: float32, one per item (read-only array): the probability of a positive
            (sigmoid of the model's logit) for ``"model"`` and ``"items"``, the item's share
            of all training positives for ``"popularity"``, the cosine similarity for
            ``"similar"``.
        source: ``"model"`` (the user's own scores), ``"popularity"`` (a user the model does
            not know), ``"items"`` (a new user fitted to given items) or ``"similar"``.
        unknown_items: ids from the input (candidates or given items) that the model does not
            know and therefore ignored, in input order without repeats.
    """

    user_id: Any
    item_ids: np.ndarray
    scores: np.ndarray
    source: Source
    unknown_items: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.item_ids)

    def top(self, k: int) -> Recommendation:
        """The first ``k`` items: what the same ranking with ``k`` would have returned."""
        if k >= len(self.item_ids):
            return self
        return Recommendation(
            self.user_id,
            frozen(self.item_ids[:k]),
            frozen(self.scores[:k]),
            self.source,
            list(self.unknown_items),
        )

    def __eq__(self, other: object) -> bool:
        # the generated __eq__ would compare arrays element-wise and fail on bool()
        if not isinstance(other, Recommendation):
            return NotImplemented
        return (
            self.user_id == other.user_id
            and self.source == other.source
            and self.unknown_items == other.unknown_items
            and np.array_equal(self.item_ids, other.item_ids)
            and np.array_equal(self.scores, other.scores)
        )

    __hash__ = None  # type: ignore[assignment]  # holds arrays


def frozen(array: np.ndarray) -> np.ndarray:
    """Read-only, so results that share an array (popularity) cannot change each other."""
    array = np.asarray(array)
    array.flags.writeable = False
    return array
