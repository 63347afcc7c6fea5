"""Parse one column of an interaction or id file: ids, 0/1 targets, timestamps.

Each parser takes the raw column as read (pandas, often Arrow-backed) and returns a NumPy
array, or raises a :class:`DataError` naming the file, the 1-based data row and the column,
with what was expected there. :mod:`hybridrec.data.io` reads the files; feature files and
candidate lists parse their id columns here too, so every id means the same everywhere.
"""

from __future__ import annotations

import csv
import datetime
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from hybridrec.data.encoding import CANONICAL_INT as _CANONICAL_INT
from hybridrec.errors import DataError

PARQUET_SUFFIXES = {".parquet", ".pq"}
TRUE_WORDS = {"1", "1.0", "true", "t", "yes"}
FALSE_WORDS = {"0", "0.0", "false", "f", "no"}

FRAME_SOURCE = "<DataFrame>"
_CANONICAL_INT_TEXT = f"^(?:{_CANONICAL_INT})$"  # the whole cell, for Arrow's RE2

#: Column names of the frame that :func:`hybridrec.data.io.read_interactions` returns.
USER, ITEM, TARGET, TIMESTAMP = "user_id", "item_id", "target", "timestamp"


def arrow_text(col: pd.Series) -> pa.ChunkedArray | None:
    """The column's text as Arrow strings without copying, when pandas holds it in Arrow."""
    dtype = col.dtype
    if isinstance(dtype, pd.StringDtype):
        is_arrow = dtype.storage == "pyarrow"
    elif isinstance(dtype, pd.ArrowDtype):
        is_arrow = pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(
            dtype.pyarrow_dtype
        )
    else:
        is_arrow = False
    if not is_arrow:
        return None
    data = col.array.__arrow_array__()
    return data if isinstance(data, pa.ChunkedArray) else pa.chunked_array([data])


def first_true(mask: pa.ChunkedArray | pa.Array) -> int | None:
    """Position of the first true value of a boolean Arrow array, or None."""
    pos = pc.index(mask, True).as_py()
    return None if pos < 0 else pos


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


def csv_separator(path: Path) -> str:
    """Tab for ``.tsv`` files (also compressed, ``x.tsv.gz``), else comma."""
    return "\t" if ".tsv" in (suffix.lower() for suffix in path.suffixes[-2:]) else ","


def row_error(path: Path, pos: int, column: str, message: str, expected: str) -> DataError:
    line = csv_line(path, pos) if is_csv_path(path) else None
    return DataError(path, message, row=pos + 1, line=line, column=column, expected=expected)


def csv_line(path: Path, pos: int) -> int | None:
    """The file line where data row ``pos`` (0-based) starts. The readers skip blank lines
    and a quoted field may span lines, so the file is read again up to that row (only when
    an error is reported); ``None`` if it cannot be."""
    sep = csv_separator(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = csv.reader(f, delimiter=sep)
            next(rows, None)  # the header
            start, seen = rows.line_num + 1, 0
            for fields in rows:
                if fields:  # blank lines are no rows
                    if seen == pos:
                        return start
                    seen += 1
                start = rows.line_num + 1
    except (OSError, UnicodeDecodeError, csv.Error):
        pass
    return None


ID_EXPECTED = "a non-empty integer or string id"
#: Beyond 2^53 a float column cannot hold every integer (a double has a 53-bit mantissa):
#: two ids could already have become one, so such float ids are refused, not rounded.
_EXACT_FLOAT_LIMIT = 2.0**53
_INT64 = np.iinfo(np.int64)
#: Python types a cell of an object column may hold as an id.
_TEXT_OR_INT = (str, int, np.integer)


def parse_ids(col: pd.Series, path: Path, name: str, is_csv: bool) -> np.ndarray:
    """An id column as int64 (every id an integer) or ``str`` objects (any other).

    Text ids are stripped; ``007`` and integers of 19 or more digits stay text, exactly as
    written. Numeric ids must be whole, finite and within int64 (floats within 2^53, where
    they are still exact); booleans, dates, lists, structs and other values are refused,
    naming the first offending row. Nothing is reinterpreted silently.
    """
    text = arrow_text(col)
    if text is not None:
        return _parse_text_ids(text, path, name, ID_EXPECTED)
    if isinstance(col.dtype, pd.CategoricalDtype):  # a frame's categorical: its values
        return parse_ids(pd.Series(np.asarray(col.array)), path, name, is_csv)
    if is_csv or pd.api.types.is_string_dtype(col.dtype) and col.dtype != object:
        return _parse_str_ids(col, path, name)
    nulls = col.isna().to_numpy()
    if nulls.any():
        raise row_error(path, int(np.argmax(nulls)), name, "missing id", ID_EXPECTED)
    if col.dtype == object:
        return _parse_object_ids(col, path, name)
    if pd.api.types.is_bool_dtype(col.dtype):
        raise DataError(path, f"ids are booleans ({col.dtype})", column=name, expected=ID_EXPECTED)
    if pd.api.types.is_integer_dtype(col.dtype):
        return _int64_ids(col.to_numpy(), path, name)
    if pd.api.types.is_float_dtype(col.dtype):
        return _float_ids(col.to_numpy(dtype=np.float64), path, name)
    raise DataError(
        path, f"ids have unsupported type {col.dtype}", column=name, expected=ID_EXPECTED
    )


def _parse_str_ids(col: pd.Series, path: Path, name: str) -> np.ndarray:
    """Text ids held by pandas as Python strings (the CSV fallback reader, frames)."""
    nulls = col.isna().to_numpy()
    if nulls.any():
        raise row_error(path, int(np.argmax(nulls)), name, "missing id", ID_EXPECTED)
    stripped = col.astype(str).str.strip()
    blank = (stripped == "").to_numpy()
    if blank.any():
        raise row_error(path, int(np.argmax(blank)), name, "blank id", ID_EXPECTED)
    if stripped.str.fullmatch(_CANONICAL_INT).all():
        return stripped.astype(np.int64).to_numpy()
    return stripped.to_numpy(dtype=object)


def _parse_object_ids(col: pd.Series, path: Path, name: str) -> np.ndarray:
    """Ids in a column of Python objects (no nulls): what kind of values decides the rule.

    Floats and decimals follow the numeric rules, bytes must be UTF-8 text, integers must
    fit int64; strings mixed with integers are read as text. Anything else (a list or
    struct from a nested Parquet column, a date, a boolean) names its row.
    """
    kind = pd.api.types.infer_dtype(col, skipna=False)
    if kind == "string":
        return _parse_str_ids(col, path, name)
    if kind in ("floating", "mixed-integer-float"):
        return _float_ids(col.to_numpy(dtype=np.float64), path, name)
    if kind == "decimal":
        return _decimal_ids(col.to_numpy(), path, name)
    if kind == "bytes":
        return _parse_str_ids(_utf8(col, path, name), path, name)
    values = col.to_numpy()
    ok = np.fromiter(
        (isinstance(v, _TEXT_OR_INT) and not isinstance(v, bool) for v in values),
        dtype=bool,
        count=len(values),
    )
    if not ok.all():
        pos = int(np.argmin(ok))
        raise row_error(path, pos, name, f"id {_describe(values[pos])}", ID_EXPECTED)
    if kind == "integer":
        return _int64_ids(values, path, name)
    return _parse_str_ids(col.astype(str), path, name)


def _describe(value: object) -> str:
    """What a refused cell holds, e.g. ``[1, 2] is a list`` or ``True is a bool``."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    kind = type(value).__name__
    return f"{_short(value)} is a {kind}, not an integer or text"


def _short(value: object, limit: int = 40) -> str:
    """``repr`` of a cell, cut to ``limit`` characters so a message stays one short line."""
    text = _show(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _int64_ids(values: np.ndarray, path: Path, name: str) -> np.ndarray:
    """Integer ids as int64, refusing any outside its range (uint64, Python ints) rather
    than letting them wrap around into another id."""
    if values.dtype == object:
        big = np.fromiter(
            (not _INT64.min <= int(v) <= _INT64.max for v in values), bool, len(values)
        )
    elif values.dtype == np.uint64:
        big = values > np.uint64(_INT64.max)
    else:
        return values.astype(np.int64, copy=False)
    if big.any():
        pos = int(np.argmax(big))
        raise row_error(
            path,
            pos,
            name,
            f"id {_show(values[pos])} is beyond the int64 range; store such ids as text",
            "integers from -2^63 to 2^63-1",
        )
    return values.astype(np.int64)


def _float_ids(values: np.ndarray, path: Path, name: str) -> np.ndarray:
    """Float ids (a Parquet or frame column) as int64: each must be a finite whole number
    small enough to be exact, else its row is named."""
    problems = (
        (np.isnan(values), "missing id"),
        (~np.isfinite(values), "is not a finite number"),
        (values != np.round(values), "is not a whole number"),
        (
            np.abs(values) > _EXACT_FLOAT_LIMIT,
            "is beyond 2^53, where floats no longer hold every integer; store ids as "
            "integers or text",
        ),
    )
    for bad, what in problems:
        if bad.any():
            pos = int(np.argmax(bad))
            message = what if what == "missing id" else f"id {_show(values[pos])} {what}"
            raise row_error(path, pos, name, message, ID_EXPECTED)
    return values.astype(np.int64)


def _decimal_ids(values: np.ndarray, path: Path, name: str) -> np.ndarray:
    """Decimal ids (Parquet ``decimal`` columns) as int64: whole numbers only."""
    whole = np.fromiter(
        (v.is_finite() and v == v.to_integral_value() for v in values), bool, len(values)
    )
    if not whole.all():
        pos = int(np.argmin(whole))
        raise row_error(path, pos, name, f"id {values[pos]} is not a whole number", ID_EXPECTED)
    return _int64_ids(np.array([int(v) for v in values], dtype=object), path, name)


def _utf8(col: pd.Series, path: Path, name: str) -> pd.Series:
    """Bytes cells (a Parquet binary column) decoded as UTF-8 text, or the bad row named."""
    out = []
    for pos, value in enumerate(col):
        try:
            out.append(value.decode("utf-8") if isinstance(value, bytes) else value)
        except UnicodeDecodeError:
            raise row_error(
                path, pos, name, f"id {_short(value)} is not UTF-8 text", ID_EXPECTED
            ) from None
    return pd.Series(out, dtype=object)


def _parse_text_ids(text: pa.ChunkedArray, path: Path, name: str, expected: str) -> np.ndarray:
    """:func:`parse_ids` for Arrow text, with Arrow's vectorised kernels (same rules)."""
    pos = first_true(text.is_null())
    if pos is not None:
        raise row_error(path, pos, name, "missing id", expected)
    if _all_canonical_ints(text):  # the usual case: nothing to strip, nothing blank
        return pc.cast(text, pa.int64()).to_numpy()
    stripped = pc.utf8_trim_whitespace(text)
    pos = first_true(pc.equal(pc.binary_length(stripped), 0))
    if pos is not None:
        raise row_error(path, pos, name, "blank id", expected)
    if _all_canonical_ints(stripped):
        return pc.cast(stripped, pa.int64()).to_numpy()
    return stripped.to_numpy()  # Python str objects, as for any other text ids


def _all_canonical_ints(text: pa.ChunkedArray) -> bool:
    return pc.all(pc.match_substring_regex(text, _CANONICAL_INT_TEXT)).as_py()


def parse_target(col: pd.Series, path: Path, name: str, threshold: float | None) -> np.ndarray:
    text = arrow_text(col)
    if text is not None:
        return _parse_text_target(text, col, path, name, threshold)
    if isinstance(col.dtype, pd.CategoricalDtype):  # a frame's categorical: its values
        col = pd.Series(np.asarray(col.array))
    if pd.api.types.is_numeric_dtype(col.dtype) and col.dtype != object:
        return _parse_numeric_target(col, path, name, threshold)
    if col.dtype == object:
        check_scalars(col, path, name, "target", "0/1 or true/false")
    text = col.astype(str).str.strip().str.lower()
    blank = (col.isna() | (text == "") | (text == "nan") | (text == "none")).to_numpy()
    if blank.any():
        raise row_error(path, int(np.argmax(blank)), name, "missing target", "0 or 1")
    if threshold is not None:
        values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise _bad_target(col, path, name, int(np.argmax(bad)), threshold)
        return (values >= threshold).astype(np.float32)
    is_true = text.isin(TRUE_WORDS).to_numpy()
    is_false = text.isin(FALSE_WORDS).to_numpy()
    bad = ~(is_true | is_false)
    if bad.any():
        raise _bad_target(col, path, name, int(np.argmax(bad)), threshold)
    return is_true.astype(np.float32)


def _bad_target(
    col: pd.Series, path: Path, name: str, pos: int, threshold: float | None
) -> DataError:
    """The error for a target cell that is not a number (with a threshold) or not 0/1."""
    if threshold is not None:
        message = f"target {_short(col.iloc[pos])} is not a number"
        return row_error(path, pos, name, message, "a numeric rating")
    return row_error(
        path,
        pos,
        name,
        f"target {_short(col.iloc[pos])} is not 0/1; for ratings pass --threshold T "
        "to count target >= T as positive",
        "0/1 or true/false",
    )


def _parse_numeric_target(
    col: pd.Series, path: Path, name: str, threshold: float | None
) -> np.ndarray:
    """:func:`_parse_target` for a numeric or boolean column (Parquet, frames), on numbers."""
    nulls = col.isna().to_numpy()
    if nulls.any():
        raise row_error(path, int(np.argmax(nulls)), name, "missing target", "0 or 1")
    values = col.to_numpy(dtype=np.float64)
    if threshold is not None:
        bad = ~np.isfinite(values)
        if bad.any():
            raise _bad_target(col, path, name, int(np.argmax(bad)), threshold)
        return (values >= threshold).astype(np.float32)
    is_true = values == 1
    bad = ~(is_true | (values == 0))
    if bad.any():
        raise _bad_target(col, path, name, int(np.argmax(bad)), threshold)
    return is_true.astype(np.float32)


def _parse_text_target(
    text: pa.ChunkedArray, col: pd.Series, path: Path, name: str, threshold: float | None
) -> np.ndarray:
    """:func:`_parse_target` for Arrow text (same rules), checking each distinct cell once.

    A target column holds a handful of distinct texts ("0"/"1", "yes"/"no", ratings), so
    the rules run on those and the labels reach the rows by one integer gather.
    """
    distinct = text.unique()  # includes a null when there is one
    row_of = pc.index_in(text, value_set=distinct, skip_nulls=False).to_numpy()

    def first_row(bad: np.ndarray) -> int | None:
        """First row whose cell is one of the ``bad`` distinct texts."""
        return int(np.argmax(bad[row_of])) if bad.any() else None

    lowered = pc.utf8_lower(pc.utf8_trim_whitespace(distinct))
    blank = pc.or_kleene(distinct.is_null(), pc.is_in(lowered, pa.array(["", "nan", "none"])))
    pos = first_row(blank.to_numpy(zero_copy_only=False))
    if pos is not None:
        raise row_error(path, pos, name, "missing target", "0 or 1")
    if threshold is not None:
        try:
            values = pc.cast(distinct, pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:  # let pandas decide what is a number, as it always has
            values = pd.to_numeric(distinct.to_pandas(), errors="coerce").to_numpy(np.float64)
        pos = first_row(~np.isfinite(values))
        if pos is not None:
            raise _bad_target(col, path, name, pos, threshold)
        return (values >= threshold).astype(np.float32)[row_of]
    is_true = pc.is_in(lowered, pa.array(sorted(TRUE_WORDS))).to_numpy(zero_copy_only=False)
    is_false = pc.is_in(lowered, pa.array(sorted(FALSE_WORDS))).to_numpy(zero_copy_only=False)
    pos = first_row(~(is_true | is_false))
    if pos is not None:
        raise _bad_target(col, path, name, pos, threshold)
    return is_true.astype(np.float32)[row_of]


def check_scalars(col: pd.Series, path: Path, name: str, what: str, expected: str) -> None:
    """Refuse an object column holding lists, dicts or other non-scalar cells (a nested
    Parquet column), whose text form would otherwise be parsed as if it were a value."""
    values = col.to_numpy()
    ok = np.fromiter(
        (v is None or isinstance(v, _SCALARS) for v in values), dtype=bool, count=len(values)
    )
    if not ok.all():
        pos = int(np.argmin(ok))
        value = values[pos]
        kind = "list" if isinstance(value, np.ndarray) else type(value).__name__
        value = value.tolist() if isinstance(value, np.ndarray) else value
        raise row_error(path, pos, name, f"{what} {_short(value)} is a {kind}", expected)


#: Cells a target or timestamp column may hold in an object column.
_SCALARS = (str, int, float, np.generic, datetime.date)

TIME_EXPECTED = "a finite number or an ISO date"
#: How an ISO date starts: year, month and day. pandas also reads "now" and "today" as
#: dates (the clock at reading), which are not data.
ISO_DATE = re.compile(r"\s*[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_timestamp(col: pd.Series, path: Path) -> np.ndarray:
    """Timestamps as float64: numbers kept as they are, dates and datetimes (ISO text or
    Parquet date/timestamp columns) as Unix seconds, naive ones taken as UTC. A missing,
    non-finite or unreadable cell names its row."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        col = pd.Series(np.asarray(col.array))
    if pd.api.types.is_bool_dtype(col.dtype):
        raise DataError(
            path, f"timestamps are booleans ({col.dtype})", column=TIMESTAMP, expected=TIME_EXPECTED
        )
    if pd.api.types.is_timedelta64_dtype(col.dtype):  # a length of time, not a moment
        raise DataError(
            path,
            f"timestamps are durations ({col.dtype})",
            column=TIMESTAMP,
            expected=TIME_EXPECTED,
        )
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        values = _unix_seconds(col)
    elif pd.api.types.is_numeric_dtype(col.dtype) and col.dtype != object:
        values = col.to_numpy(dtype=np.float64)
    else:
        values = _text_timestamps(col, path)
    bad = ~np.isfinite(values)
    if bad.any():
        pos = int(np.argmax(bad))
        cell = col.iloc[pos]
        what = "missing timestamp" if pd.isna(cell) else f"timestamp {_short(cell)} is not finite"
        raise row_error(path, pos, TIMESTAMP, what, TIME_EXPECTED)
    return values


def _unix_seconds(col: pd.Series) -> np.ndarray:
    """Datetimes as Unix seconds (NaT as NaN); naive ones are taken as UTC, as ISO text is."""
    if getattr(col.dtype, "tz", None) is None:
        col = col.dt.tz_localize("UTC")
    # microseconds since the epoch: a date of year 1 or 9999 overflows nanoseconds
    micros = col.dt.as_unit("us").array.asi8.astype(np.float64) / 1e6
    micros[col.isna().to_numpy()] = np.nan
    return micros


def _text_timestamps(col: pd.Series, path: Path) -> np.ndarray:
    """Timestamps written as text (or Python objects): numbers, else ISO dates."""
    text = arrow_text(col)
    if text is not None:
        try:
            values = pc.cast(text, pa.float64()).to_numpy()
        except pa.ArrowInvalid:  # dates, or a bad cell: the general path below finds which
            values = None
        if values is not None and not np.isnan(values).any():
            return values
    if col.dtype == object:
        check_scalars(col, path, TIMESTAMP, "timestamp", TIME_EXPECTED)
    present = col.notna().to_numpy()
    values = pd.to_numeric(col, errors="coerce")
    if (values.notna().to_numpy() | ~present).all():  # numbers (a null is reported later)
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    as_dates = pd.to_datetime(col, errors="coerce", utc=True, format="ISO8601")
    as_dates = as_dates.where(col.astype(str).str.match(ISO_DATE.pattern))
    unreadable = values.isna().to_numpy() & as_dates.isna().to_numpy() & present
    if unreadable.any():
        pos = int(np.argmax(unreadable))
        cell = col.iloc[pos]
        what = "blank timestamp" if str(cell).strip() == "" else "is neither a number nor a date"
        raise row_error(
            path,
            pos,
            TIMESTAMP,
            what if what.startswith("blank") else f"timestamp {_short(cell)} {what}",
            TIME_EXPECTED,
        )
    mixed = as_dates.isna().to_numpy() & present
    if mixed.any():  # numbers among dates: no common scale to order them on
        pos = int(np.argmax(mixed))
        raise row_error(
            path,
            pos,
            TIMESTAMP,
            f"timestamp {_short(col.iloc[pos])} is a number among dates",
            "one kind of timestamp in a column: numbers or ISO dates",
        )
    return _unix_seconds(as_dates)
