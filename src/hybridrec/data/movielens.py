"""Read MovieLens rating files as implicit feedback, and download them into a local cache.

Every reader returns the standard interaction frame of :func:`hybridrec.data.io.read_interactions`
(``user_id``, ``item_id`` int64, ``target`` float32, ``timestamp`` float64). A rating only says
that the user watched the movie, so every kept row is a positive (target 1); ``min_rating=T``
keeps only ratings >= T and drops the rest rather than making them negatives, because a low
rating is still an interaction and implicit data has no observed negatives.

Parsing is fast on good files and precise on bad ones: the C parser reads typed columns
directly (``ratings.dat``'s ``::`` is read as the one-character separator ``:`` with empty
fields in between, which the C engine handles at full speed where ``sep="::"`` would need the
slow Python engine); only when that fails is the file re-read as text to name the first bad
row and column in a :class:`DataError`.

MovieLens may not be redistributed, so hybridrec never ships it: :func:`fetch_movielens`
downloads it from GroupLens into a cache, or uses a zip or ratings file the user put there.
"""

from __future__ import annotations

import http.client
import math
import os
import re
import shutil
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from hybridrec.data.columns import ITEM, TARGET, TIMESTAMP, USER, one_line
from hybridrec.data.encoding import CANONICAL_INT
from hybridrec.data.io import check_file
from hybridrec.data.split import write_interactions_csv
from hybridrec.errors import ConfigError, DataError, HybridRecError
from hybridrec.files import atomic_write

__all__ = [
    "DATASETS",
    "fetch_movielens",
    "read_atomic_inter",
    "read_ml100k_udata",
    "read_movielens",
    "read_ratings_csv",
    "read_ratings_dat",
    "write_interactions_csv",
]

#: Dataset name -> (zip URL, path of the ratings file inside the zip).
DATASETS: dict[str, tuple[str, str]] = {
    "movielens-100k": (
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        "ml-100k/u.data",
    ),
    "movielens-1m": (
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "ml-1m/ratings.dat",
    ),
}

SUPPORTED_FORMS = (
    "u.data (MovieLens-100K, also u1.base/u1.test...: user<TAB>item<TAB>rating<TAB>timestamp), "
    "ratings.dat (MovieLens-1M/10M: user::item::rating::timestamp), "
    "ratings.csv (MovieLens-latest/20M/25M: header userId,movieId,rating,timestamp) or "
    "*.inter (RecBole atomic file: tab-separated, header like user_id:token item_id:token ...)"
)

_USER, _ITEM, _RATING, _TS = "user", "item", "rating", "timestamp"
_ANY_INT = r"[+-]?[0-9]{1,18}"  # MovieLens ids are integers; "007" is 7 there


# ---------------------------------------------------------------- readers


def read_ml100k_udata(
    path: str | Path, min_rating: float | None = None, threshold: float | None = None
) -> pd.DataFrame:
    """Read MovieLens-100K ``u.data`` (or ``u1.base`` ...): ``user item rating timestamp``.

    Tab-separated, no header. ``min_rating=T`` keeps only ratings >= T; by default every
    rating is a positive.

    Raises:
        DataError: the file is missing or a row is malformed (file, row and column named).
    """
    path = Path(path)
    names = {0: _USER, 1: _ITEM, 2: _RATING, 3: _TS}
    raw = _read_headerless(path, "\t", names, "user<TAB>item<TAB>rating<TAB>timestamp")
    return _standard(raw, path, min_rating, threshold)


def read_ratings_dat(
    path: str | Path, min_rating: float | None = None, threshold: float | None = None
) -> pd.DataFrame:
    """Read MovieLens-1M/10M ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp``, no header.

    ``::`` is parsed as ``:`` with an empty field between, so the fast C parser reads 10M rows
    in seconds; a non-empty field between the colons is reported as a bad separator.

    Raises:
        DataError: the file is missing or a row is malformed (file, row and column named).
    """
    path = Path(path)
    names = {0: _USER, 2: _ITEM, 4: _RATING, 6: _TS}
    raw = _read_headerless(path, ":", names, "UserID::MovieID::Rating::Timestamp", ncols=7)
    return _standard(raw, path, min_rating, threshold)


def read_ratings_csv(
    path: str | Path, min_rating: float | None = None, threshold: float | None = None
) -> pd.DataFrame:
    """Read MovieLens-latest ``ratings.csv`` (header ``userId,movieId,rating,timestamp``).

    Raises:
        DataError: the file is missing, lacks one of those columns, or has a malformed row.
    """
    path = Path(path)
    columns = {"userId": _USER, "movieId": _ITEM, "rating": _RATING, "timestamp": _TS}
    expected = "a header userId,movieId,rating,timestamp and rows like 1,31,2.5,1260759144"
    raw = _read_headed(path, ",", columns, tuple(columns), expected, string_ids=False)
    return _standard(raw, path, min_rating, threshold)


def read_atomic_inter(
    path: str | Path, min_rating: float | None = None, threshold: float | None = None
) -> pd.DataFrame:
    """Read a RecBole atomic ``.inter`` file (tab-separated, typed header ``name:type``).

    Needs ``user_id`` and ``item_id`` columns; ``rating`` and ``timestamp`` are used when
    present (``min_rating`` needs ``rating``). Ids are ``:token`` (text) in RecBole, so as in
    ``read_interactions`` they become int64 when every id is a canonical integer and stay
    ``str`` otherwise (``"007"`` is not merged with ``"7"``).

    Raises:
        DataError: the file is missing, lacks ``user_id``/``item_id``, or has a malformed row.
    """
    path = Path(path)
    columns = {"user_id": _USER, "item_id": _ITEM, "rating": _RATING, "timestamp": _TS}
    expected = "tab-separated columns user_id:token, item_id:token[, rating:float, timestamp:float]"
    raw = _read_headed(path, "\t", columns, ("user_id", "item_id"), expected, string_ids=True)
    return _standard(raw, path, min_rating, threshold)


def read_movielens(
    path: str | Path, min_rating: float | None = None, threshold: float | None = None
) -> pd.DataFrame:
    """Read any supported MovieLens ratings file, choosing the reader by the file name.

    ``*.inter`` -> :func:`read_atomic_inter`; ``u.data``, ``*.data``, ``*.base``, ``*.test``
    -> :func:`read_ml100k_udata`; ``*.dat`` -> :func:`read_ratings_dat`; ``*.csv`` ->
    :func:`read_ratings_csv`. ``min_rating`` drops the rows rated below it; ``threshold``
    keeps every row, labelled 1 where its rating is at least the threshold, else 0.

    Raises:
        DataError: an unrecognised file name (the message lists the supported forms), or a
            bad file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".inter":
        return read_atomic_inter(path, min_rating, threshold)
    if suffix in {".data", ".base", ".test"}:
        return read_ml100k_udata(path, min_rating, threshold)
    if suffix == ".dat":
        return read_ratings_dat(path, min_rating, threshold)
    if suffix == ".csv":
        return read_ratings_csv(path, min_rating, threshold)
    raise DataError(
        path, "is not a recognised MovieLens ratings file", expected="one of " + SUPPORTED_FORMS
    )


# ---------------------------------------------------------------- download with cache


def default_cache_dir() -> Path:
    """``$HYBRIDREC_DATA`` when set, else ``~/.cache/hybridrec``."""
    env = os.environ.get("HYBRIDREC_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hybridrec"


def fetch_movielens(name: str, cache_dir: str | Path | None = None, timeout: float = 30) -> Path:
    """Return the path of dataset ``name``'s ratings file, downloading it once into a cache.

    The ratings file is extracted to ``<cache>/<name>/<file>`` and reused from there. Otherwise
    a zip at ``<cache>/<name>.zip`` is used when present (so an offline machine can be given
    the zip by hand), else the zip is downloaded from GroupLens (atomically: a temp file
    renamed into place, so an interrupted download leaves nothing behind).

    Args:
        name: a key of :data:`DATASETS`.
        cache_dir: defaults to :func:`default_cache_dir`.
        timeout: seconds to wait for the server before giving up.

    Raises:
        HybridRecError: unknown name, the download failed (the message says how to use a local
            copy), or the zip is not a MovieLens zip.
    """
    if name not in DATASETS:
        raise HybridRecError(
            f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}"
        )
    url, member = DATASETS[name]
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / name / Path(member).name
    if target.is_file():
        return target
    zip_path = cache / f"{name}.zip"
    try:
        zip_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HybridRecError(
            f"cannot create the data cache {cache} ({exc}); set HYBRIDREC_DATA to a writable "
            "folder, or pass --data PATH to a local ratings file"
        ) from exc
    if not zip_path.is_file():
        try:
            _download(url, zip_path, timeout)
        except (OSError, http.client.HTTPException) as exc:  # URLError and timeouts are OSError
            raise HybridRecError(_offline_message(name, url, zip_path, exc)) from exc
    _extract(zip_path, member, target)
    return target


def _download(url: str, dest: Path, timeout: float) -> None:
    """Download ``url`` to ``dest`` through a temp file beside it, renamed when complete."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed https URL)
        atomic_write(dest, lambda f: shutil.copyfileobj(response, f, 1 << 20))


def _offline_message(name: str, url: str, zip_path: Path, exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    reason_text = " ".join(str(reason).split()) or type(exc).__name__
    return (
        f"could not download {name} from {url}: {reason_text}\n"
        "MovieLens may not be redistributed (GroupLens license), so hybridrec cannot ship it.\n"
        "To use a local copy instead: pass --data PATH to an existing u.data, ratings.dat, "
        f"ratings.csv or RecBole .inter file, or put {Path(url).name} at {zip_path} "
        "and run again."
    )


def _extract(zip_path: Path, member: str, target: Path) -> None:
    """Copy only the ratings ``member`` out of the zip to ``target``, atomically."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise HybridRecError(
            f"{zip_path} is not a readable zip ({exc}); delete it and run again to download it"
        ) from exc
    with archive:
        names = archive.namelist()
        if member not in names:  # accept a re-packed zip holding the file in another folder
            base = Path(member).name
            matches = [n for n in names if n == base or n.endswith("/" + base)]
            if len(matches) != 1:
                raise HybridRecError(
                    f"{zip_path} has no {member}, so it is not the MovieLens zip; delete it and "
                    f"run again to download it, or replace it with {Path(member).parts[0]}.zip "
                    "from GroupLens"
                )
            member = matches[0]
        try:
            with archive.open(member) as src:
                atomic_write(target, lambda f: shutil.copyfileobj(src, f, 1 << 20))
        except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise HybridRecError(
                f"{zip_path} is damaged ({exc}); delete it and run again to download it"
            ) from exc
        except OSError as exc:
            raise HybridRecError(
                f"cannot write {target} ({exc}); set HYBRIDREC_DATA to a writable folder"
            ) from exc


# ---------------------------------------------------------------- parsing helpers


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
    except OSError as exc:
        raise DataError(path, f"cannot be read: {one_line(exc)}") from exc


def _read_headerless(
    path: Path, sep: str, names: dict[int, str], expected: str, ncols: int | None = None
) -> pd.DataFrame:
    """Read a file without header; ``names`` maps field positions to column names.

    Fields not in ``names`` (the empty ones between the colons of ``::``) must be empty.
    """
    check_file(path, "a MovieLens ratings file", "ratings")
    ncols = ncols or len(names)
    dtypes = {pos: np.float64 for pos in range(ncols)}
    dtypes.update({pos: np.int64 for pos, name in names.items() if name in (_USER, _ITEM)})
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


def _read_headed(
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
    try:
        with open(path, encoding="utf-8") as f:
            header = [h.strip() for h in f.readline().rstrip("\r\n").split(sep)]
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
    names = {header[plain.index(c)]: name for c, name in columns.items() if c in plain}
    id_type = str if string_ids else np.int64
    dtypes = {h: (id_type if name in (_USER, _ITEM) else np.float64) for h, name in names.items()}
    try:
        raw = _read_csv(path, 1, expected, sep=sep, header=0, dtype=dtypes)
    except DataError:
        raise
    except (ValueError, OverflowError):  # a cell did not parse as its type (or overflowed
        # int64): re-read as text to name it
        raw = _read_csv(path, 1, expected, sep=sep, header=0, dtype=str, keep_default_na=False)
    if not isinstance(raw.index, pd.RangeIndex):
        # pandas takes a first data row with one field more than the header as an index column
        raise DataError(
            path,
            f"has more fields than the header's {len(header)}",
            row=1,
            line=2,
            expected=expected,
        )
    labels = {h: h for h in names}
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
        is_id = name in (_USER, _ITEM)
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


def _standard(
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
        if _RATING not in raw.columns:
            raise DataError(
                path, f"--threshold {threshold} needs a rating column, and the file has none"
            )
    if min_rating is not None and not math.isfinite(min_rating):  # >= nan keeps nothing
        raise ConfigError(f"min_rating must be a finite number, got {min_rating}")
    if min_rating is not None:
        if _RATING not in raw.columns:
            raise DataError(
                path, f"min_rating={min_rating} needs a rating column, and the file has none"
            )
        raw = raw[raw[_RATING].to_numpy() >= min_rating]
        if len(raw) == 0:
            raise DataError(
                path,
                f"no rating is >= {min_rating}, so no interaction is left",
                column=_RATING,
                expected="a lower min_rating",
            )
    out = pd.DataFrame(
        {
            USER: raw[_USER].to_numpy(),
            ITEM: raw[_ITEM].to_numpy(),
            TARGET: np.ones(len(raw), dtype=np.float32)
            if threshold is None
            else (raw[_RATING].to_numpy() >= threshold).astype(np.float32),
        }
    )
    if _TS in raw.columns:
        out[TIMESTAMP] = raw[_TS].to_numpy(dtype=np.float64)
    out.attrs["has_target"] = threshold is not None
    out.attrs["path"] = str(path)
    return out
