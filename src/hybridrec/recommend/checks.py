"""Checks of the arguments users pass to :class:`Recommender` and the file writer.

They are user input, so they raise (:class:`ConfigError`, which is a ``ValueError``, or
``TypeError``) rather than assert: ``python -O`` strips asserts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from hybridrec.errors import ConfigError


def check_k(k: Any) -> int:
    """``k`` as an int; refused unless an integer >= 1."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ConfigError(f"k must be an integer >= 1, got {k!r}")
    if k < 1:
        raise ConfigError(f"k must be >= 1, got k={k}")
    return int(k)


def check_chunk_users(chunk_users: Any) -> int:
    """``chunk_users`` as an int; refused unless an integer >= 1."""
    if isinstance(chunk_users, bool) or not isinstance(chunk_users, int | np.integer):
        raise ConfigError(f"chunk_users must be an integer >= 1, got {chunk_users!r}")
    if chunk_users < 1:
        raise ConfigError(f"chunk_users must be >= 1, got {chunk_users}")
    return int(chunk_users)


def id_list(ids: Any, name: str) -> list[Any]:
    """Raw ids as a list; a lone string is refused rather than read as its characters."""
    if isinstance(ids, str | bytes):
        raise TypeError(f"{name} must be a list of ids, got the single id {ids!r}")
    return list(ids)


def unique(values: Iterable[Any]) -> list[Any]:
    """Distinct values in first-seen order."""
    return list(dict.fromkeys(values))
