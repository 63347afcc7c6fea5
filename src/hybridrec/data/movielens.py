"""Read MovieLens rating files as implicit feedback, and download them into a local cache.

Every reader returns the standard interaction frame of :func:`hybridrec.data.io.read_interactions`
(``user_id``, ``item_id`` int64, ``target`` float32, ``timestamp`` float64). A rating only says
that the user watched the movie, so every kept row is a positive (target 1); ``min_rating=T``
keeps only ratings >= T and drops the rest rather than making them negatives, because a low
rating is still an interaction and implicit data has no observed negatives. ``threshold=T``
(``split --movielens --threshold``) instead keeps every row, labelled 0/1 by its rating, as
``--threshold`` labels any file's target.

Parsing (:mod:`hybridrec.data.ratings_parse`) is fast on good files and precise on bad
ones: the C parser reads typed columns directly (``ratings.dat``'s ``::`` is read as the
one-character separator ``:`` with empty fields in between, which the C engine handles at
full speed where ``sep="::"`` would need the slow Python engine); only when that fails is
the file re-read as text to name the first bad row and column in a :class:`DataError`.

MovieLens may not be redistributed, so hybridrec never ships it: :func:`fetch_movielens`
downloads it from GroupLens into a cache, or uses a zip or ratings file the user put there.
"""

from __future__ import annotations

import http.client
import os
import shutil
import urllib.request
import zipfile
import zlib
from pathlib import Path

import pandas as pd

from hybridrec.data.ratings_parse import (
    ITEM_FIELD,
    RATING_FIELD,
    TS_FIELD,
    USER_FIELD,
    read_headed,
    read_headerless,
    standard_frame,
)
from hybridrec.data.split import write_interactions_csv
from hybridrec.errors import DataError, HybridRecError
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
    names = {0: USER_FIELD, 1: ITEM_FIELD, 2: RATING_FIELD, 3: TS_FIELD}
    raw = read_headerless(path, "\t", names, "user<TAB>item<TAB>rating<TAB>timestamp")
    return standard_frame(raw, path, min_rating, threshold)


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
    names = {0: USER_FIELD, 2: ITEM_FIELD, 4: RATING_FIELD, 6: TS_FIELD}
    raw = read_headerless(path, ":", names, "UserID::MovieID::Rating::Timestamp", ncols=7)
    return standard_frame(raw, path, min_rating, threshold)


def read_ratings_csv(
    path: str | Path, min_rating: float | None = None, threshold: float | None = None
) -> pd.DataFrame:
    """Read MovieLens-latest ``ratings.csv`` (header ``userId,movieId,rating,timestamp``).

    Raises:
        DataError: the file is missing, lacks one of those columns, or has a malformed row.
    """
    path = Path(path)
    columns = {
        "userId": USER_FIELD,
        "movieId": ITEM_FIELD,
        "rating": RATING_FIELD,
        "timestamp": TS_FIELD,
    }
    expected = "a header userId,movieId,rating,timestamp and rows like 1,31,2.5,1260759144"
    raw = read_headed(path, ",", columns, tuple(columns), expected, string_ids=False)
    return standard_frame(raw, path, min_rating, threshold)


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
    columns = {
        "user_id": USER_FIELD,
        "item_id": ITEM_FIELD,
        "rating": RATING_FIELD,
        "timestamp": TS_FIELD,
    }
    expected = "tab-separated columns user_id:token, item_id:token[, rating:float, timestamp:float]"
    raw = read_headed(path, "\t", columns, ("user_id", "item_id"), expected, string_ids=True)
    return standard_frame(raw, path, min_rating, threshold)


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
