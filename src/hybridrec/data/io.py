"""Read and validate interaction files (CSV or Parquet).

Every problem a user can put in a file becomes a :class:`DataError` naming the file, the
1-based data row (header not counted) and the column, so nothing ends in a traceback.
IDs keep the type they have in the file: integer-looking CSV ids become ``int64`` (only when
the text is the canonical integer, so ``"007"`` stays a string), everything else stays ``str``.
This module finds and reads the columns; :mod:`hybridrec.data.columns` parses each one.
"""

from __future__ import annotations

import contextlib
import csv
import lzma
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from hybridrec.config import DataConfig
from hybridrec.data.columns import (  # the frame's column names are defined there
    FRAME_SOURCE,
    ITEM,
    PARQUET_SUFFIXES,
    TARGET,
    TIMESTAMP,
    USER,
    csv_separator,
    is_csv_path,
    one_line,
    parse_ids,
    parse_target,
    parse_timestamp,
)
from hybridrec.errors import DataError


def read_interactions(
    path: str | Path, config: DataConfig | None = None, *, labels: bool = True
) -> pd.DataFrame:
    """Read ``userId, itemId[, target][, timestamp]`` rows into a validated frame.

    Args:
        path: a ``.csv``/``.tsv`` (anything else is read as CSV) or ``.parquet`` file.
        config: column names and the optional rating threshold.
        labels: the file is read for its labels (training, validation, pointwise
            evaluation). Then a target column that was asked for, by a non-default
            ``target_col`` or a ``threshold``, must exist: a mistyped name would otherwise
            turn every row into a positive. ``False`` for files of positives (held-out
            test rows, the exclusions of ranking evaluation), which use it when present.

    Returns:
        A frame with columns ``user_id``, ``item_id`` (int64 or str), ``target`` (float32 0/1;
        all 1 when the file has no target column) and ``timestamp`` when the file has one.
        ``frame.attrs["has_target"]`` tells whether the file had a target column.

    Raises:
        DataError: the file is missing, unreadable, empty or has a bad row.
    """
    config = config or DataConfig()
    path = Path(path)
    return _interactions(read_table(path), config, path, consume=True, labels=labels)


def interactions_from_frame(
    raw: pd.DataFrame,
    config: DataConfig | None = None,
    *,
    source: str | Path = FRAME_SOURCE,
    labels: bool = True,
) -> pd.DataFrame:
    """Validate an in-memory frame exactly as :func:`read_interactions` validates a file."""
    config = config or DataConfig()
    return _interactions(raw, config, Path(source), consume=False, labels=labels)


def _check_columns(raw: pd.DataFrame, config: DataConfig, path: Path, labels: bool) -> None:
    """Every column the reading needs is there, and no column name appears twice."""
    check_unique_names(path, list(raw.columns))
    found = ", ".join(repr(str(c)) for c in raw.columns) or "no columns"
    missing = [c for c in (config.user_col, config.item_col) if c not in raw.columns]
    if missing:
        raise DataError(
            path,
            f"missing column(s) {', '.join(repr(c) for c in missing)}; found {found}. "
            "Name your columns with --user-col/--item-col/--target-col",
        )
    lookalike = [c for c in raw.columns if str(c).strip().lower() == config.target_col.lower()]
    if labels and config.target_col not in raw.columns and lookalike:
        # " target" or "Target": taken for positives-only data, its 0 rows would be positives
        raise DataError(
            path,
            f"no column {config.target_col!r}, but {str(lookalike[0])!r} differs from it only "
            f"in case or spaces. Rename it, or pass --target-col {str(lookalike[0])!r}; "
            "without a target column every row counts as a positive",
        )
    if labels and config.target_col not in raw.columns and target_asked_for(config):
        why = "--threshold needs it" if config.threshold is not None else "named by --target-col"
        raise DataError(
            path,
            f"missing target column {config.target_col!r} ({why}); found {found}. Name the "
            "file's 0/1 or rating column, or leave out --target-col and --threshold for "
            "positives-only data",
        )


#: The target column's default name: only its absence means "every row is a positive".
DEFAULT_TARGET = DataConfig.__dataclass_fields__["target_col"].default


def target_asked_for(config: DataConfig) -> bool:
    """Whether the options name a target column (a non-default name, or a threshold to
    apply to it), so that a labelled file lacking it is a mistake, not positives-only data."""
    return config.target_col != DEFAULT_TARGET or config.threshold is not None


def _interactions(
    raw: pd.DataFrame, config: DataConfig, path: Path, consume: bool, labels: bool
) -> pd.DataFrame:
    """Validate ``raw`` into the standard frame.

    With ``consume`` (``raw`` was read here and nobody else holds it), each raw column is
    dropped from ``raw`` as soon as it is parsed, so a large file never has all its text
    columns and all their parsed arrays in memory at once.
    """
    is_csv = is_csv_path(path)
    _check_columns(raw, config, path, labels)
    if len(raw) == 0:
        what = "has a header but no rows" if is_csv else "has no rows"
        raise DataError(path, what, expected="at least one interaction")
    has_target = config.target_col in raw.columns
    has_time = TIMESTAMP in raw.columns and TIMESTAMP not in (config.user_col, config.item_col)
    uses = [config.user_col, config.item_col]
    uses += [config.target_col] if has_target else []
    uses += [TIMESTAMP] if has_time else []
    rows = len(raw)

    def column(name: str) -> pd.Series:
        uses.remove(name)
        return raw.pop(name) if consume and name not in uses else raw[name]

    columns = {
        USER: parse_ids(column(config.user_col), path, config.user_col, is_csv),
        ITEM: parse_ids(column(config.item_col), path, config.item_col, is_csv),
    }
    if has_target:
        columns[TARGET] = parse_target(
            column(config.target_col), path, config.target_col, config.threshold
        )
    else:
        columns[TARGET] = np.ones(rows, dtype=np.float32)
    if has_time:
        columns[TIMESTAMP] = parse_timestamp(column(TIMESTAMP), path)
    # A consumed frame's arrays are ours: the result may own them instead of copying (an
    # integer column of a caller's frame can come back as a view of it, so that one copies).
    out = pd.DataFrame(columns, copy=not consume)
    out.attrs["has_target"] = has_target
    out.attrs["path"] = str(path)
    return out


def check_file(path: Path, kind: str, content: str) -> None:
    """A ``DataError`` unless ``path`` is an existing, non-empty file (``kind`` names it)."""
    if not path.exists():
        raise DataError(path, f"file not found: {path}", expected=kind)
    if path == Path("."):  # Path("") is "." too: name both
        raise DataError(path, "the path is empty or '.' (the current directory)", expected=kind)
    if path.is_dir():
        raise DataError(path, f"{path} is a directory", expected=kind)
    if path.is_char_device() or path.is_block_device() or path.is_socket():
        # /dev/zero would be read forever, /dev/null reported as an empty file
        raise DataError(path, f"{path} is a device, not a file", expected=kind)
    if path.is_fifo():  # e.g. <(zcat train.csv.gz): the readers need to read a file twice
        raise DataError(path, f"{path} is a pipe; write it to a file first", expected=kind)
    if path.stat().st_size == 0:
        raise DataError(path, "the file is empty", expected=content)


def read_table(path: Path) -> pd.DataFrame:
    """Every column of a CSV or Parquet file, as read before any validation.

    CSV cells are text; Parquet columns keep their types, with dictionary (categorical)
    columns decoded to their values. A column name that appears twice is refused: which of
    the two a name means would be a guess (pandas would silently rename one ``name.1``).
    """
    check_file(path, "a CSV or Parquet file", "a header row and interactions")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return _read_parquet(path)
    sep = csv_separator(path)
    fast = _read_csv_arrow(path, sep)
    if fast is not None:
        return fast
    try:
        # Read everything as text so ids stay exact and bad cells can be reported by row;
        # index_col=False: a row longer than the header is an error, not an index column
        # that shifts every other column (a warning from pandas, made an error here)
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, index_col=False)
    except pd.errors.ParserWarning as exc:
        raise _long_row(path, sep) from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(path, "the file is empty", expected="a header row") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(path, f"cannot be parsed as CSV: {one_line(exc)}") from exc
    except (OSError, *DECOMPRESSION_ERRORS) as exc:  # also a truncated .gz, .xz, .bz2, .zip
        raise DataError(path, f"cannot be read: {one_line(exc)}") from exc
    check_unique_names(path, _csv_header(path, sep))
    return frame


#: What pandas' readers raise for a damaged compressed file (the suffix picks the codec).
DECOMPRESSION_ERRORS = (EOFError, lzma.LZMAError, zlib.error, zipfile.BadZipFile)


def _long_row(path: Path, sep: str) -> DataError:
    """The error for the first row with more fields than the header (found by reading the
    file again: this runs only once pandas has said there is one)."""
    expected = "as many fields in every row as the header names"
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = csv.reader(f, delimiter=sep)
            width = len(next(rows, []))
            for row, fields in enumerate((r for r in rows if r), start=1):
                if len(fields) > width:
                    return DataError(
                        path,
                        f"{len(fields)} fields, more than the header's {width}",
                        row=row,
                        line=rows.line_num,
                        expected=expected,
                    )
    except (OSError, UnicodeDecodeError, csv.Error):  # compressed, say: no row to name
        pass
    return DataError(path, "a row has more fields than the header", expected=expected)


def check_unique_names(path: str | Path, names: Sequence[object]) -> None:
    """A ``DataError`` naming the first column name that appears more than once.

    Empty names are left out: pandas names them ``Unnamed: N`` and no option can ask for
    one (``--user-col ""`` is refused).
    """
    seen: dict[str, int] = {}
    for position, name in enumerate(map(str, names), start=1):
        if name == "":
            continue
        if name in seen:
            raise DataError(
                path,
                f"column name {name!r} appears twice (columns {seen[name]} and {position})",
                expected="unique column names",
            )
        seen[name] = position


def _csv_header(path: Path, sep: str) -> list[str]:
    """The header row's names as written (pandas' reader renames repeated ones)."""
    try:
        head = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError):
        return []  # the full read above accepted the file; nothing more to learn here
    return [str(name) for name in head.iloc[0]] if len(head) else []


def _read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet file as a frame: names checked first, dictionary columns decoded.

    Nested columns (lists, structs, maps) come through as Python objects; the parsers of
    the columns that are used refuse them, so an unused nested column does no harm.
    """
    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # pyarrow raises many types; all mean "not valid Parquet"
        raise DataError(path, f"cannot be parsed as Parquet: {one_line(exc)}") from exc
    check_unique_names(path, names)
    try:
        # self_destruct: each column's Arrow memory is released once pandas has it
        with _arrow_pool(pa.system_memory_pool()):
            table = _decode_dictionaries(pq.read_table(path))
            return table.to_pandas(self_destruct=True, split_blocks=True)
    except Exception as exc:
        raise DataError(path, f"cannot be parsed as Parquet: {one_line(exc)}") from exc


def _decode_dictionaries(table: pa.Table) -> pa.Table:
    """Dictionary-encoded columns (pandas categoricals) as plain columns of their values,
    so ids and labels are read by the same rules whichever way they were stored."""
    for position, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            plain = pc.cast(table.column(position), field.type.value_type)
            table = table.set_column(position, field.name, plain)
    return table


def _read_csv_arrow(path: Path, sep: str) -> pd.DataFrame | None:
    """Every cell as text, parsed by pyarrow's multi-threaded CSV reader.

    Gives the same frame as ``pd.read_csv(dtype=str, keep_default_na=False)`` (with pandas'
    Arrow-backed strings, no Python object per cell) for a well-formed file, and ``None`` for
    anything pyarrow cannot read the way pandas would (a short or long row, bad UTF-8,
    empty column names), so that pandas' reader decides and reports it. A repeated column
    name is refused here.
    """
    parse = pacsv.ParseOptions(delimiter=sep)
    try:
        with pacsv.open_csv(path, parse_options=parse) as reader:
            names = reader.schema.names
        check_unique_names(path, names)
        if "" in names:
            return None  # pandas names these ("Unnamed: 1")
        table = pacsv.read_csv(
            path,
            memory_pool=_reader_pool(),
            parse_options=parse,
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.large_string()),  # pandas' own kind
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowException, OSError, UnicodeDecodeError):  # a header that is not UTF-8
        return None
    if _has_quotes(path) and any(_has_line_break(column) for column in table.columns):
        # a quote left open runs to the end of the file in pyarrow (one cell holding the
        # rest of the file); pandas refuses it, and reads real quoted line breaks alike
        return None
    frame = table.to_pandas(self_destruct=True, split_blocks=True)
    del table
    return frame


def _has_quotes(path: Path) -> bool:
    """Whether the file has a quote character: a line break can only be inside a value
    within quotes, and one pass over the file's bytes is cheaper than searching every cell
    (~1 s at 20M rows). Compressed files are searched as they are (their bytes
    may hold a quote by chance: the cells are searched then)."""
    buffer = bytearray(1 << 24)  # 16 MiB at a time: no copy of the file in memory
    try:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                if buffer.find(b'"', 0, n) != -1:
                    return True
    except OSError:  # unreadable again: search the cells
        return True
    return False


def _has_line_break(column: pa.ChunkedArray) -> bool:
    return any(pc.any(pc.match_substring(column, c)).as_py() for c in ("\n", "\r"))


@contextlib.contextmanager
def _arrow_pool(pool: pa.MemoryPool) -> Iterator[None]:
    """pyarrow allocates from ``pool`` inside the block (readers that take no pool argument).

    The system allocator for Parquet: the frame's columns are Arrow buffers that pandas
    frees later, and with mimalloc (pyarrow's default) their pages stay with mimalloc, out
    of numpy's and torch's reach, for the rest of the run. Reading 20M rows left 1.75 GB
    resident for a 0.52 GB frame that way, 1.08 GB with the system allocator.
    """
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def _reader_pool() -> pa.MemoryPool:
    """jemalloc where pyarrow has it, else pyarrow's default pool.

    The CSV reader allocates on its worker threads; memory freed later on the main thread
    stays with mimalloc (pyarrow's default) but goes back to the system with jemalloc, which
    lowers the peak of reading 20M rows by ~0.6 GB (numpy cannot reuse mimalloc's pages).
    """
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.default_memory_pool()
