"""Checks of the arguments users pass to :class:`Recommender` and the file writer.

They are user input, so they raise (:class:`ConfigError`, which is a ``ValueError``, or
``TypeError``) rather than assert: ``python -O`` strips asserts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from hybridrec.errors import ConfigError


def positive_int(value: Any, name: str, *, name_value: bool = True) -> int:
    """``value`` as an int; a :class:`ConfigError` naming ``name`` unless an integer >= 1.

    ``name_value``: a value below 1 is shown as ``name=value`` (else the value alone).
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    if value < 1:
        shown = f"{name}={value}" if name_value else f"{value}"
        raise ConfigError(f"{name} must be >= 1, got {shown}")
    if value >= 2**63:  # PyTorch's top-k and sizes take 64-bit integers
        raise ConfigError(f"{name} must be below 2^63, got {value}")
    return int(value)


def check_k(k: Any) -> int:
    """``k`` as an int; refused unless an integer >= 1."""
    return positive_int(k, "k")


def check_chunk_users(chunk_users: Any) -> int:
    """``chunk_users`` as an int; refused unless an integer >= 1."""
    return positive_int(chunk_users, "chunk_users", name_value=False)


def id_list(ids: Any, name: str) -> list[Any]:
    """Raw ids as a list; a lone string is refused rather than read as its characters."""
    if isinstance(ids, str | bytes):
        raise TypeError(f"{name} must be a list of ids, got the single id {ids!r}")
    return list(ids)


def one_id(value: Any, name: str) -> Any:
    """A single raw id: an integer or a text. A list (use the ``_many`` methods), None, a
    float or a mapping is refused rather than looked up as an unknown id."""
    if isinstance(value, str | np.str_):
        return value
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return value
    what = (
        "a list of ids (use recommend_many)"
        if isinstance(value, list | tuple | np.ndarray)
        else f"{value!r}"
    )
    raise ConfigError(f"{name} must be one id, an integer or a text, got {what}")


def check_many(user_ids: Any, exclude_seen: Any) -> None:
    """``recommend_many``'s users are one-dimensional and ``exclude_seen`` a bool ("no"
    would count as true)."""
    if isinstance(user_ids, np.ndarray) and user_ids.ndim != 1:
        raise ConfigError(f"user_ids must be one-dimensional, got shape {user_ids.shape}")
    if not isinstance(exclude_seen, bool | np.bool_):
        raise ConfigError(f"exclude_seen must be True or False, got {exclude_seen!r}")


def unique(values: Iterable[Any]) -> list[Any]:
    """Distinct values in first-seen order."""
    return list(dict.fromkeys(values))


def per_user_k(k: int | Sequence[int], count: int) -> np.ndarray:
    """``k`` for each of ``count`` users: one ``k`` for all, or a sequence of one each.

    The deepest ``k`` is ranked once and each user keeps its prefix, which is that user's
    own top-``k`` list: :func:`~hybridrec.recommend.topk.top_k` orders by score, then index.
    """
    if isinstance(k, Sequence | np.ndarray) and not isinstance(k, str | bytes):
        if len(k) != count:
            raise ConfigError(f"k must be one integer or one per user ({count}), got {len(k)}")
        return np.array([check_k(one) for one in k], dtype=np.int64)
    return np.full(count, check_k(k), dtype=np.int64)
