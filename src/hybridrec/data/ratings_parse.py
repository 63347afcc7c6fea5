"""Parsing MovieLens rating files: fast typed reads of good files, and for a bad one the
first bad row and column named in a :class:`~hybridrec.errors.DataError` (the readers of
:mod:`hybridrec.data.movielens` are built from these)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from hybridrec.data.columns import ITEM, TARGET, TIMESTAMP, USER, one_line
from hybridrec.data.encoding import CANONICAL_INT
from hybridrec.data.io import DECOMPRESSION_ERRORS, check_file
from hybridrec.errors import ConfigError, DataError

USER_FIELD, ITEM_FIELD, RATING_FIELD, TS_FIELD = "user", "item", "rating", "timestamp"
_ANY_INT = r"[+-]?[0-9]{1,18}"  # MovieLens ids are integers; "007" is 7 there


def _parser_error(path: Path, exc: Exception, header_lines: int, expected: str) -> DataError:
    """Turn pandas' "Expected 4 fields in line 3, saw 5" into a DataError at that row."""
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
    if not found:
        return DataError(path, f"cannot be parsed: {one_line(exc)}", expected=expected)
    want, line, saw = (int(g) for g in found.groups())
    return DataError(
        path,
        f"has {saw} fields, not {want}",
        row=line - header_lines,
        line=line,
        expected=expected,
    )


def _read_csv(path: Path, header_lines: int, expected: str, **kw) -> pd.DataFrame:
    try:
        return pd.read_csv(path, engine="c", **kw)
    except pd.errors.ParserError as exc:
        raise _parser_error(path, exc, header_lines, expected) from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(path, "the file is empty", expected=expected) from exc
    except UnicodeDecodeError as exc:
        raise DataError(path, f"is not a text file: {one_line(exc)}", expected=expected) from exc
    except (OSError, *DECOMPRESSION_ERRORS) as exc:
        raise DataError(path, f"cannot be read: {one_line(exc)}") from exc


def read_headerless(
    path: Path, sep: str, names: dict[int, str], expected: str, ncols: int | None = None
) -> pd.DataFrame:
    """Read a file without header; ``names`` maps field positions to column names.

    Fields not in ``names`` (the empty ones between the colons of ``::``) must be empty.
    """
    check_file(path, "a MovieLens ratings file", "ratings")
    ncols = ncols or len(names)
    dtypes = {pos: np.float64 for pos in range(ncols)}
    dtypes.update(
        {pos: np.int64 for pos, name in names.items() if name in (USER_FIELD, ITEM_FIELD)}
    )
    try:
        raw = _read_csv(path, 0, expected, sep=sep, header=None, dtype=dtypes)
    except DataError:
        raise
    except (ValueError, OverflowError):  # a cell did not parse as its type (or overflowed
        # int64): re-read as text to name it
        raw = _read_csv(path, 0, expected, sep=sep, header=None, dtype=str, keep_default_na=False)
    if raw.shape[1] != ncols:
        raise DataError(
            path,
            f"the first row has {raw.shape[1]} fields, not {ncols}",
            row=1,
            line=1,
            expected=expected,
        )
    for pos in range(ncols):
        if pos in names:
            continue
        col = raw[pos]
        filled = (col.notna() & (col.astype(str) != "")).to_numpy()
        if filled.any():
            row = int(np.argmax(filled))
            raise DataError(
                path,
                f"unexpected {col.iloc[row]!r} between fields",
                row=row + 1,
                line=row + 1,
                expected=expected,
            )
    return _parse_columns(path, raw, names, names, 0, string_ids=False)


def read_headed(
    path: Path,
    sep: str,
    columns: dict[str, str],
    required: tuple[str, ...],
    expected: str,
    *,
    string_ids: bool,
) -> pd.DataFrame:
    """Read a file with a header row; ``columns`` maps header names to column names.

    With ``string_ids`` (RecBole), a typed header ``user_id:token`` counts as ``user_id`` and
    ids are read as text (to keep ``"007"`` apart from ``"7"``). Other columns are read
    but ignored; every row must have as many fields as the header.
    """
    check_file(path, "a MovieLens ratings file", "ratings")
    try:  # utf-8-sig: a byte-order mark is no part of the first name
        with open(path, encoding="utf-8-sig") as f:
            header = [h.strip() for h in f.readline().rstrip("\r\n").split(sep)]
            has_rows = any(line.strip() for line in f)  # stops at the first row
    except UnicodeDecodeError as exc:
        raise DataError(path, f"is not a text file: {one_line(exc)}", expected=expected) from exc
    plain = [h.split(":", 1)[0] if string_ids else h for h in header]
    missing = [c for c in required if c not in plain]
    if missing:
        found = ", ".join(repr(h) for h in header)
        raise DataError(
            path,
            f"missing column(s) {', '.join(map(repr, missing))}; found {found}",
            expected=expected,
        )
    # columns by position: pandas would take names with spaces as written, and a row with
    # one field more than the header as an index column (silently shifting the rest)
    names = {plain.index(c): name for c, name in columns.items() if c in plain}
    id_type = str if string_ids else np.int64
    dtypes = {
        pos: (id_type if name in (USER_FIELD, ITEM_FIELD) else np.float64)
        for pos, name in names.items()
    }
    positional = {"sep": sep, "header": None, "skiprows": 1}
    labels = {pos: header[pos] for pos in names}
    if not has_rows:  # a header alone: no rows (not "empty", as pandas would say)
        empty = pd.DataFrame({pos: pd.Series([], dtype=dtypes[pos]) for pos in names})
        return _parse_columns(path, empty, names, labels, 1, string_ids=string_ids)
    try:
        raw = _read_csv(path, 1, expected, dtype=dtypes, **positional)
    except DataError:
        raise
    except (ValueError, OverflowError):  # a cell did not parse as its type (or overflowed
        # int64): re-read as text to name it
        raw = _read_csv(path, 1, expected, dtype=str, keep_default_na=False, **positional)
    if raw.shape[1] > len(header):  # the first row is long (a later one is a ParserError)
        raise DataError(
            path,
            f"has more fields than the header ({raw.shape[1]}, not {len(header)})",
            row=1,
            line=2,
            expected=expected,
        )
    return _parse_columns(path, raw, names, labels, 1, string_ids=string_ids)


def _parse_columns(
    path: Path,
    raw: pd.DataFrame,
    names: dict,
    labels: dict,
    header_lines: int,
    *,
    string_ids: bool,
) -> pd.DataFrame:
    """Check and convert the ``names`` columns of ``raw``, raising at the earliest bad row.

    Columns may arrive typed (the fast path: int64 ids, float64 numbers, NaN where a cell was
    empty or the row short) or as text (the slow path). Ids become int64, or stay ``str`` when
    ``string_ids`` and some id is not a canonical integer; numbers become finite float64.
    ``labels`` names each column in errors.
    """
    out: dict[str, np.ndarray] = {}
    first_bad: tuple[int, object, str, str] | None = None  # row, key, message, expected
    for key, name in names.items():
        col = raw[key]
        is_id = name in (USER_FIELD, ITEM_FIELD)
        if is_id and col.dtype.kind == "i":
            out[name] = col.to_numpy(dtype=np.int64)
            continue
        if not is_id and col.dtype.kind in "if":
            text = None
            values = col.to_numpy(dtype=np.float64)
            blank = np.isnan(values)
            bad = ~np.isfinite(values)
        else:
            text = col.astype(str).str.strip()
            blank = (col.isna() | (text == "")).to_numpy()
            if is_id:
                pattern = CANONICAL_INT if string_ids else _ANY_INT
                integer = text.str.fullmatch(pattern).fillna(False).to_numpy(dtype=bool)
                if string_ids and not integer[~blank].all():
                    bad, values = blank, text.to_numpy(dtype=object)
                else:
                    bad = blank | ~integer
                    values = None if bad.any() else text.astype(np.int64).to_numpy()
            else:
                numbers = pd.to_numeric(text.where(~blank, "nan"), errors="coerce")
                values = numbers.to_numpy(dtype=np.float64)
                bad = ~np.isfinite(values)
        if not bad.any():
            out[name] = values
            continue
        row = int(np.argmax(bad))
        kind = "id" if is_id else name
        if blank[row]:
            message = f"missing {kind}"
        elif text is None:
            message = f"{kind} {float(values[row])!r} is not finite"
        else:
            message = f"{kind} {col.iloc[row]!r} is not {'an integer' if is_id else 'a number'}"
        want = ("a non-empty id" if string_ids else "an integer id") if is_id else "a number"
        if first_bad is None or row < first_bad[0]:
            first_bad = (row, key, message, want)
    if first_bad is not None:
        row, key, message, want = first_bad
        raise DataError(
            path,
            message,
            row=row + 1,
            line=row + 1 + header_lines,
            column=str(labels[key]),
            expected=want,
        )
    return pd.DataFrame(out)


def standard_frame(
    raw: pd.DataFrame, path: Path, min_rating: float | None, threshold: float | None = None
) -> pd.DataFrame:
    """Turn parsed ``user, item[, rating][, timestamp]`` columns into the standard frame:
    rows below ``min_rating`` dropped; with ``threshold``, every row kept and labelled 1
    where its rating is >= ``threshold``, else 0 (what ``--threshold`` does to any file)."""
    if len(raw) == 0:
        raise DataError(path, "has no ratings", expected="at least one rating")
    if threshold is not None:
        if not math.isfinite(threshold):
            raise ConfigError(f"--threshold must be a finite number, got {threshold}")
        if RATING_FIELD not in raw.columns:
            raise DataError(
                path, f"--threshold {threshold} needs a rating column, and the file has none"
            )
    if min_rating is not None and not math.isfinite(min_rating):  # >= nan keeps nothing
        raise ConfigError(f"min_rating must be a finite number, got {min_rating}")
    if min_rating is not None:
        if RATING_FIELD not in raw.columns:
            raise DataError(
                path, f"min_rating={min_rating} needs a rating column, and the file has none"
            )
        raw = raw[raw[RATING_FIELD].to_numpy() >= min_rating]
        if len(raw) == 0:
            raise DataError(
                path,
                f"no rating is >= {min_rating}, so no interaction is left",
                column=RATING_FIELD,
                expected="a lower min_rating",
            )
    out = pd.DataFrame(
        {
            USER: raw[USER_FIELD].to_numpy(),
            ITEM: raw[ITEM_FIELD].to_numpy(),
            TARGET: np.ones(len(raw), dtype=np.float32)
            if threshold is None
            else (raw[RATING_FIELD].to_numpy() >= threshold).astype(np.float32),
        }
    )
    if TS_FIELD in raw.columns:
        out[TIMESTAMP] = raw[TS_FIELD].to_numpy(dtype=np.float64)
    out.attrs["has_target"] = threshold is not None
    out.attrs["path"] = str(path)
    return out
