"""Reading the event log back: the events after a model's watermark, for ``update`` and
for the service's per-user state."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridrec.errors import ConfigError
from hybridrec.events.store import open_reader


def read_rows(path: str | Path, after: int = 0) -> list[tuple[Any, ...]]:
    """``(id, user, item, target, timestamp)`` of the events with id > ``after``, in id order.

    Raises:
        ConfigError: a missing or unreadable file, or one that is not an event log.
    """
    conn = open_reader(Path(path))
    try:
        return conn.execute(
            "SELECT id, user, item, target, timestamp FROM events WHERE id > ? ORDER BY id",
            (after,),
        ).fetchall()
    except sqlite3.Error as exc:
        raise ConfigError(f"event log {path}: not readable as an event log ({exc})") from None
    finally:
        conn.close()


def read_events(
    path: str | Path,
    after: int = 0,
    *,
    user_col: str = "userId",
    item_col: str = "itemId",
    target_col: str = "target",
    time_col: str = "timestamp",
) -> tuple[pd.DataFrame, int]:
    """The events with id > ``after``, in id order, as an interactions frame.

    What ``hybridrec update`` consumes: the rows a model has not seen yet (``after`` = its
    watermark, :func:`watermark_of`), and the id to record as the new watermark.

    Columns ``user_col``, ``item_col``, ``target_col`` (float) and ``time_col`` (float Unix
    seconds, NaN for an event without a timestamp). An id column is int64 when every id in
    it is an integer; otherwise it is text throughout (an integer id as its decimal text),
    the rule the file readers follow, so an encoder sees one kind of id per column.

    Returns:
        ``(frame, last_id)``: ``last_id`` is the id of the last event returned, ``after``
        when none is.

    Raises:
        ConfigError: ``after`` is not an integer >= 0, or the file is missing, unreadable or
            not an event log (the CLI turns it into exit status 2).
    """
    if isinstance(after, bool) or not isinstance(after, int | np.integer) or after < 0:
        raise ConfigError(f"after must be an event id (an integer >= 0), got {after!r}")
    rows = read_rows(path, int(after))
    ids = [row[0] for row in rows]
    frame = pd.DataFrame(
        {
            user_col: _id_column([row[1] for row in rows]),
            item_col: _id_column([row[2] for row in rows]),
            target_col: _numbers(rows, 3, ids, "target", path),
            time_col: _numbers(rows, 4, ids, "timestamp", path),
        }
    )
    return frame, (int(ids[-1]) if ids else int(after))


def _numbers(rows: list[Any], column: int, ids: list[int], name: str, path: str | Path) -> Any:
    """A float column of the rows (a missing timestamp is NaN); a cell that is not a
    number (a log edited by hand: SQLite stores any type) names its event."""
    out = np.empty(len(rows), dtype=np.float64)
    for j, row in enumerate(rows):
        cell = row[column]
        if cell is None and name == "timestamp":
            out[j] = np.nan
        elif isinstance(cell, int | float) and not isinstance(cell, bool):
            out[j] = cell
        else:
            raise ConfigError(
                f"event log {path}: event {ids[j]} has {name} {str(cell)[:40]!r}, not a number"
            )
    return out


def _id_column(values: list[Any]) -> np.ndarray:
    """int64 when every id is an integer, else text throughout (as the file readers do)."""
    if all(isinstance(v, int) for v in values):
        return np.array(values, dtype=np.int64)
    return np.array([v if isinstance(v, str) else str(v) for v in values], dtype=object)


def watermark_of(config: dict[str, Any]) -> int:
    """The last event id a model has consumed: ``settings.watermark.event_id`` of its
    ``config`` (written by ``hybridrec update``), 0 for a model trained from files only.

    Events after it are the ones the model has not learned from: the service excludes and
    folds in those, and ``update`` trains on them."""
    settings = config.get("settings") or {}
    watermark = settings.get("watermark") or {} if isinstance(settings, dict) else {}
    event_id = watermark.get("event_id") if isinstance(watermark, dict) else None
    if isinstance(event_id, bool) or not isinstance(event_id, int | float):
        return 0
    return int(event_id) if math.isfinite(event_id) and event_id > 0 else 0
