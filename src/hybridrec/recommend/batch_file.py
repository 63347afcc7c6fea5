"""Recommendations for many users written to a file (``hybridrec recommend``, ``--all``).

Users are scored and written a chunk at a time, so memory does not grow with the number of
users, and the file appears only when complete (:func:`hybridrec.files.atomic_write`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridrec.data.columns import PARQUET_SUFFIXES, is_csv_path, parse_ids, row_error
from hybridrec.data.encoding import IdEncoder
from hybridrec.data.io import read_table
from hybridrec.errors import ConfigError, DataError
from hybridrec.files import atomic_write
from hybridrec.recommend.checks import check_chunk_users, check_k, id_list
from hybridrec.recommend.recommender import Recommender
from hybridrec.recommend.result import IdsLike, Recommendation
from hybridrec.recommend.two_stage import check_num_candidates

#: Columns of the file :func:`write_recommendations` writes.
RECOMMENDATION_COLUMNS = ("userId", "rank", "itemId", "score", "source")
#: Output formats by file suffix.
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", **{s: "parquet" for s in PARQUET_SUFFIXES}}


def read_user_ids(path: str | Path, column: str = "userId") -> np.ndarray:
    """User ids from the ``column`` of a CSV or Parquet file, in file order.

    Raises:
        DataError: the file is missing, unreadable, has no such column, no rows or a bad id.
    """
    path = Path(path)
    frame = read_table(path)
    if column not in frame.columns:
        found = ", ".join(repr(str(c)) for c in frame.columns)
        raise DataError(path, f"missing column {column!r}; found {found}")
    if len(frame) == 0:
        raise DataError(path, "has a header but no rows", expected="at least one user id")
    return parse_ids(frame[column], path, column, is_csv_path(path))


def check_id_kind(encoder: IdEncoder, ids: np.ndarray, path: str | Path, column: str) -> None:
    """Refuse text ids for a model whose ids are integers: every one would be an unknown
    user and silently get the popular items (``"42"`` still finds 42)."""
    _, valid = encoder._as_own_kind(np.asarray(ids))
    if valid is not None and not valid.all():
        pos = int(np.argmax(~valid))
        raise row_error(
            Path(path), pos, column, f"user id {ids[pos]!r} is not an integer",
            "integer user ids: the model was trained on integer ids",
        )  # fmt: skip


def output_format(path: str | Path) -> str:
    """``"csv"``, ``"jsonl"`` or ``"parquet"`` from the suffix of ``path``.

    Raises:
        ConfigError: any other suffix.
    """
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"cannot tell the output format of {Path(path).name}: "
            f"name it with one of {', '.join(sorted(OUTPUT_FORMATS))}"
        )
    return fmt


def write_recommendations(
    recommender: Recommender,
    user_ids: IdsLike,
    path: str | Path,
    *,
    k: int = 10,
    exclude_seen: bool = True,
    chunk_users: int | None = None,
    show_progress: bool = False,
    num_candidates: int | str | None = None,
) -> int:
    """Write ``recommend_many(user_ids)`` as rows ``userId, rank, itemId, score, source``.

    Users are processed ``chunk_users`` at a time and each chunk is written before the next
    is scored, so memory does not grow with the number of users. The file appears only when
    complete (a temporary file beside it is renamed over it); its format follows the suffix:
    ``.csv``, ``.jsonl`` or ``.parquet`` (one row group per chunk).

    Args:
        recommender: the model to recommend with.
        user_ids: raw user ids, in output order; unknown users get popular items.
        path: the output file.
        k, exclude_seen: as in :meth:`Recommender.recommend`.
        chunk_users: users per chunk; default :meth:`Recommender.default_chunk_users`.
        show_progress: a progress bar on stderr.
        num_candidates: two-stage top-K with this many candidates per user, as in
            :meth:`Recommender.recommend`; None scores every item.

    Returns:
        The number of rows written.
    """
    from tqdm.auto import tqdm

    fmt = output_format(path)
    k = check_k(k)
    chunk = check_chunk_users(chunk_users) if chunk_users is not None else None
    chunk = chunk or recommender.default_chunk_users()
    num_candidates = check_num_candidates(recommender.model, recommender.model_name, num_candidates)
    users = np.asarray(user_ids)
    if users.dtype.kind not in "iu":  # text (or mixed) ids: keep each id as given
        users = np.asarray(id_list(user_ids, "user_ids"), dtype=object)
    item_dtype = recommender.items.ids.dtype
    written = 0

    def frames() -> Iterable[pd.DataFrame]:
        nonlocal written
        with tqdm(
            total=len(users), unit="user", desc="recommend", file=sys.stderr,
            disable=not show_progress,
        ) as bar:  # fmt: skip
            for start in range(0, len(users), chunk):
                part = users[start : start + chunk]
                recs = recommender.recommend_many(
                    part, k, exclude_seen, chunk_users=chunk, num_candidates=num_candidates
                )
                frame = _frame(part, recs, item_dtype)
                written += len(frame)
                bar.update(len(part))
                yield frame

    def write(f: Any) -> None:
        if fmt == "parquet":
            _write_parquet(f, frames(), users.dtype, item_dtype)
        else:
            _write_text(f, frames(), fmt)

    atomic_write(path, write)
    return written


def _write_parquet(
    f: Any, frames: Iterable[pd.DataFrame], user_dtype: np.dtype, item_dtype: np.dtype
) -> None:
    """Each frame as one row group of a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("userId", _arrow_type(user_dtype)),
            ("rank", pa.int32()),
            ("itemId", _arrow_type(item_dtype)),
            ("score", pa.float32()),
            ("source", pa.string()),
        ]
    )
    with pq.ParquetWriter(f, schema) as writer:
        for frame in frames:
            writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))


def _write_text(f: Any, frames: Iterable[pd.DataFrame], fmt: str) -> None:
    """Frames as CSV (with a header line) or JSON lines, UTF-8."""
    if fmt == "csv":
        f.write((",".join(RECOMMENDATION_COLUMNS) + "\n").encode("utf-8"))
    for frame in frames:
        if len(frame) == 0:
            continue
        if fmt == "csv":
            text = frame.to_csv(index=False, header=False, lineterminator="\n")
        else:
            text = frame.to_json(orient="records", lines=True, double_precision=15)
            text = text if text.endswith("\n") else text + "\n"
        f.write(text.encode("utf-8"))


def _frame(users: np.ndarray, recs: list[Recommendation], item_dtype: np.dtype) -> pd.DataFrame:
    counts = np.array([len(r) for r in recs], dtype=np.int64)
    return pd.DataFrame(
        {
            "userId": np.repeat(users, counts),
            "rank": np.concatenate(
                [np.arange(1, n + 1, dtype=np.int32) for n in counts] or [np.zeros(0, np.int32)]
            ),
            "itemId": np.concatenate([r.item_ids for r in recs] or [np.zeros(0, item_dtype)]),
            "score": np.concatenate([r.scores for r in recs] or [np.zeros(0, np.float32)]).astype(
                np.float32
            ),
            "source": np.repeat(np.array([r.source for r in recs], dtype=object), counts),
        },
        columns=list(RECOMMENDATION_COLUMNS),
    )


def _arrow_type(dtype: np.dtype) -> Any:
    import pyarrow as pa

    return pa.int64() if dtype.kind in "iu" else pa.string()
