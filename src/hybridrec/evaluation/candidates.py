"""Reading a file of negative candidates for the sampled protocol (NCF-style wide files or
long ``user, item`` pairs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hybridrec.data.columns import is_csv_path, parse_ids, row_error
from hybridrec.data.encoding import IdEncoder
from hybridrec.data.io import read_table
from hybridrec.errors import DataError


def read_candidates(
    path: str | Path,
    user_encoder: IdEncoder,
    item_encoder: IdEncoder,
    user_col: str = "userId",
    item_col: str = "itemId",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a negative-candidate file into long-form encoded ``(user_idx, item_idx)`` pairs.

    Two layouts, told apart by the header:

    * long: exactly the columns ``user_col, item_col``, one row per candidate;
    * wide: ``user_col`` then any other columns (``neg_1 .. neg_N``, none named
      ``item_col``), one row per user, as in the NCF ``test_negatives`` files.

    Ids are parsed as :func:`hybridrec.data.io.read_interactions` parses them (canonical
    integers become ints), so they match encoders fitted on interaction files; unknown ids
    become index 0 and are left for :func:`evaluate_sampled` to count and drop.

    Raises:
        DataError: missing or unreadable file, no user column, an ambiguous header, no rows,
            or a blank cell (named by row and column).
    """
    path = Path(path)
    raw = read_table(path)
    is_csv = is_csv_path(path)
    columns = [str(c) for c in raw.columns]
    raw.columns = columns
    found = ", ".join(repr(c) for c in columns)
    if user_col not in columns:
        raise DataError(
            path,
            f"missing user column {user_col!r}; found {found}",
            expected=f"{user_col},{item_col} rows or {user_col},neg_1,...,neg_N rows",
        )
    others = [c for c in columns if c != user_col]
    if not others:
        raise DataError(path, f"has only the user column {user_col!r}", expected="candidates")
    if item_col in others and len(others) > 1:
        raise DataError(
            path,
            f"has {item_col!r} and other columns ({found}), so the layout is ambiguous",
            expected=f"exactly {user_col},{item_col} or {user_col},neg_1,...,neg_N",
        )
    if len(raw) == 0:
        raise DataError(path, "has a header but no rows", expected="at least one candidate")

    users = parse_ids(raw[user_col], path, user_col, is_csv)
    cells = raw[others]
    if is_csv or any(cells[c].dtype == object for c in others):
        text = cells.astype(str).apply(lambda col: col.str.strip())
        blank = (cells.isna() | (text == "")).to_numpy()
    else:
        blank = cells.isna().to_numpy()
    if blank.any():
        pos, col = np.argwhere(blank)[0]  # first in reading order (row-major)
        raise row_error(
            path, int(pos), others[col], "blank candidate id", "a non-empty integer or string id"
        )
    # All candidate cells form one id column, so one non-integer id makes them all strings,
    # exactly as in a long file.
    stacked = pd.Series(cells.to_numpy().reshape(-1))
    try:
        items = parse_ids(stacked, path, others[0], is_csv)
    except DataError as error:
        raise _cell_error(cells, path, is_csv) or error from None
    user_idx = np.repeat(user_encoder.transform(users), len(others))
    item_idx = item_encoder.transform(items)
    return torch.from_numpy(user_idx.astype(np.int64)), torch.from_numpy(item_idx.astype(np.int64))


def _cell_error(cells: pd.DataFrame, path: Path, is_csv: bool) -> DataError | None:
    """The error of the first bad cell in reading order, with its own row and column (the
    stacked column's error names a position in the flattened cells)."""
    errors = []
    for position, column in enumerate(cells.columns):
        try:
            parse_ids(cells[column], path, column, is_csv)
        except DataError as error:
            errors.append((error.row or 0, position, error))
    return min(errors, key=lambda e: e[:2])[2] if errors else None
