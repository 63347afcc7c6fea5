"""Read and validate interaction files (CSV or Parquet).

Every problem a user can put in a file becomes a :class:`DataError` naming the file, the
1-based data row (header not counted) and the column, so nothing ends in a traceback.
IDs keep the type they have in the file: integer-looking CSV ids become ``int64`` (only when
the text is the canonical integer, so ``"007"`` stays a string), everything else stays ``str``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hybridrec.config import DataConfig
from hybridrec.data.encoding import CANONICAL_INT as _CANONICAL_INT
from hybridrec.errors import DataError

PARQUET_SUFFIXES = {".parquet", ".pq"}
TRUE_WORDS = {"1", "1.0", "true", "t", "yes"}
FALSE_WORDS = {"0", "0.0", "false", "f", "no"}

FRAME_SOURCE = "<DataFrame>"

#: Column names of the frame that ``read_interactions`` returns.
USER, ITEM, TARGET, TIMESTAMP = "user_id", "item_id", "target", "timestamp"


def read_interactions(path: str | Path, config: DataConfig | None = None) -> pd.DataFrame:
    """Read ``userId, itemId[, target][, timestamp]`` rows into a validated frame.

    Args:
        path: a ``.csv``/``.tsv`` (anything else is read as CSV) or ``.parquet`` file.
        config: column names and the optional rating threshold.

    Returns:
        A frame with columns ``user_id``, ``item_id`` (int64 or str), ``target`` (float32 0/1;
        all 1 when the file has no target column) and ``timestamp`` when the file has one.
        ``frame.attrs["has_target"]`` tells whether the file had a target column.

    Raises:
        DataError: the file is missing, unreadable, empty or has a bad row.
    """
    config = config or DataConfig()
    path = Path(path)
    raw = read_table(path)
    return interactions_from_frame(raw, config, source=path)


def interactions_from_frame(
    raw: pd.DataFrame, config: DataConfig | None = None, *, source: str | Path = FRAME_SOURCE
) -> pd.DataFrame:
    """Validate an in-memory frame exactly as :func:`read_interactions` validates a file."""
    config = config or DataConfig()
    path = Path(source)
    is_csv = is_csv_path(path)
    missing = [c for c in (config.user_col, config.item_col) if c not in raw.columns]
    if missing:
        found = ", ".join(repr(str(c)) for c in raw.columns)
        raise DataError(
            path,
            f"missing column(s) {', '.join(repr(c) for c in missing)}; found {found}. "
            "Name your columns with --user-col/--item-col/--target-col",
        )
    if len(raw) == 0:
        raise DataError(path, "has a header but no rows", expected="at least one interaction")

    out = pd.DataFrame(
        {
            USER: parse_ids(raw[config.user_col], path, config.user_col, is_csv),
            ITEM: parse_ids(raw[config.item_col], path, config.item_col, is_csv),
        }
    )
    has_target = config.target_col in raw.columns
    if has_target:
        out[TARGET] = _parse_target(
            raw[config.target_col], path, config.target_col, config.threshold
        )
    else:
        out[TARGET] = np.ones(len(raw), dtype=np.float32)
    if TIMESTAMP in raw.columns and TIMESTAMP not in (config.user_col, config.item_col):
        out[TIMESTAMP] = _parse_timestamp(raw[TIMESTAMP], path)
    out.attrs["has_target"] = has_target
    out.attrs["path"] = str(path)
    return out


def check_file(path: Path, kind: str, content: str) -> None:
    """A ``DataError`` unless ``path`` is an existing, non-empty file (``kind`` names it)."""
    if not path.exists():
        raise DataError(path, f"file not found: {path}", expected=kind)
    if path.is_dir():
        raise DataError(path, f"{path} is a directory", expected=kind)
    if path.stat().st_size == 0:
        raise DataError(path, "the file is empty", expected=content)


def read_table(path: Path) -> pd.DataFrame:
    check_file(path, "a CSV or Parquet file", "a header row and interactions")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types; all mean "not valid Parquet"
            raise DataError(path, f"cannot be parsed as Parquet: {one_line(exc)}") from exc
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        # Read everything as text so ids stay exact and bad cells can be reported by row.
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as exc:
        raise DataError(path, "the file is empty", expected="a header row") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(path, f"cannot be parsed as CSV: {one_line(exc)}") from exc
    except OSError as exc:
        raise DataError(path, f"cannot be read: {one_line(exc)}") from exc


def _show(value: object) -> str:
    """A cell value as the user wrote it: quoted text, or a plain number (not np.int64(2))."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def is_csv_path(path: Path) -> bool:
    return path.suffix.lower() not in PARQUET_SUFFIXES and path.name != FRAME_SOURCE


def row_error(path: Path, pos: int, column: str, message: str, expected: str) -> DataError:
    line = pos + 2 if is_csv_path(path) else None
    return DataError(path, message, row=pos + 1, line=line, column=column, expected=expected)


def parse_ids(col: pd.Series, path: Path, name: str, is_csv: bool) -> np.ndarray:
    expected = "a non-empty integer or string id"
    if is_csv or col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
        nulls = col.isna().to_numpy()
        if nulls.any():
            raise row_error(path, int(np.argmax(nulls)), name, "missing id", expected)
        text = col.astype(str)
        stripped = text.str.strip()
        blank = (stripped == "").to_numpy()
        if blank.any():
            raise row_error(path, int(np.argmax(blank)), name, "blank id", expected)
        if stripped.str.fullmatch(_CANONICAL_INT).all():
            return stripped.astype(np.int64).to_numpy()
        return stripped.to_numpy(dtype=object)
    if pd.api.types.is_bool_dtype(col.dtype):
        raise DataError(path, f"ids are booleans ({col.dtype})", column=name, expected=expected)
    nulls = col.isna().to_numpy()
    if nulls.any():
        raise row_error(path, int(np.argmax(nulls)), name, "missing id", expected)
    if pd.api.types.is_integer_dtype(col.dtype):
        return col.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(col.dtype):
        values = col.to_numpy(dtype=np.float64)
        fractional = values != np.round(values)
        if fractional.any():
            pos = int(np.argmax(fractional))
            raise row_error(
                path, pos, name, f"id {_show(values[pos])} is not a whole number", expected
            )
        return values.astype(np.int64)
    raise DataError(path, f"ids have unsupported type {col.dtype}", column=name, expected=expected)


def _parse_target(col: pd.Series, path: Path, name: str, threshold: float | None) -> np.ndarray:
    text = col.astype(str).str.strip().str.lower()
    blank = (col.isna() | (text == "") | (text == "nan") | (text == "none")).to_numpy()
    if blank.any():
        raise row_error(path, int(np.argmax(blank)), name, "missing target", "0 or 1")
    if threshold is not None:
        values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            pos = int(np.argmax(bad))
            raise row_error(
                path,
                pos,
                name,
                f"target {_show(col.iloc[pos])} is not a number",
                "a numeric rating",
            )
        return (values >= threshold).astype(np.float32)
    is_true = text.isin(TRUE_WORDS).to_numpy()
    is_false = text.isin(FALSE_WORDS).to_numpy()
    bad = ~(is_true | is_false)
    if bad.any():
        pos = int(np.argmax(bad))
        raise row_error(
            path,
            pos,
            name,
            f"target {_show(col.iloc[pos])} is not 0/1; for ratings pass --threshold T "
            "to count target >= T as positive",
            "0/1 or true/false",
        )
    return is_true.astype(np.float32)


def _parse_timestamp(col: pd.Series, path: Path) -> np.ndarray:
    values = pd.to_numeric(col, errors="coerce")
    if values.isna().any():
        as_dates = pd.to_datetime(col, errors="coerce", utc=True, format="ISO8601")
        if as_dates.isna().any():
            pos = int(np.argmax((values.isna() & as_dates.isna()).to_numpy()))
            raise row_error(
                path,
                pos,
                TIMESTAMP,
                f"timestamp {_show(col.iloc[pos])} is neither a number nor a date",
                "a number or an ISO date",
            )
        seconds = (as_dates - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
        return seconds.to_numpy(dtype=np.float64)
    return values.to_numpy(dtype=np.float64)
