"""Checks of the arguments users pass to :class:`Recommender` and the file writer.

They are user input, so they raise (:class:`ConfigError`, which is a ``ValueError``, or
``TypeError``) rather than assert: ``python -O`` strips asserts.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def unique(values: Iterable[Any]) -> list[Any]:
    """Distinct values in first-seen order."""
    return list(dict.fromkeys(values))
