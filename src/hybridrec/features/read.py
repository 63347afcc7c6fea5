"""Read and validate a user or item feature file (CSV or Parquet), and fit its fields.

The id column is the one named like the interactions' id column (``--item-col``/
``--user-col``) when the file has it, else the first column. Every other column is a
field. A field's kind is stated (``--item-feature-types genres=multi,year=numeric``) or
inferred by this rule, checked on the non-empty cells:

1. every cell is a finite number: ``numeric``;
2. else some cell contains the separator (``|`` by default): ``multi``;
3. else ``categorical``.

So a numeric code (a zip code, an occupation number) is read as a number unless stated
``categorical``. Ids present here but absent from the interactions are kept (that is how
cold items and users arrive); ids in the interactions without a row here get each field's
unknown token and the mean of each number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridrec.data.columns import check_scalars, is_csv_path, parse_ids, row_error
from hybridrec.data.io import check_file, read_table
from hybridrec.errors import ConfigError, DataError
from hybridrec.features.table import KINDS, NUMERIC_BUCKETS, FeatureTable, Field, _tokens

#: Tokens kept per row of a multi-valued field (a row with more keeps its first ones).
MAX_TOKENS = 64


@dataclass
class FeatureData:
    """A validated feature file: raw ids, each field's cells (None = missing) and the
    fitted :class:`FeatureTable`."""

    ids: np.ndarray
    values: dict[str, list[Any]]
    table: FeatureTable
    source: str


def parse_kinds(text: str | None, option: str) -> dict[str, str]:
    """``"genres=multi,year=numeric"`` -> ``{"genres": "multi", "year": "numeric"}``."""
    kinds: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, kind = part.partition("=")
        if not sep or not name.strip() or kind.strip() not in KINDS:
            raise ConfigError(
                f"{option} takes column=kind pairs like genres=multi,year=numeric with kind "
                f"one of {', '.join(KINDS)}; got {part.strip()!r}"
            )
        if name.strip() in kinds and kinds[name.strip()] != kind.strip():
            raise ConfigError(
                f"{option} gives column {name.strip()!r} two kinds, "
                f"{kinds[name.strip()]} and {kind.strip()}; give one"
            )
        kinds[name.strip()] = kind.strip()
    return kinds


def read_features(
    data: str | Path | pd.DataFrame,
    id_col: str,
    kinds: dict[str, str] | None = None,
    separator: str = "|",
    other_col: str | None = None,
) -> FeatureData:
    """Read ``data`` (a path or a frame), validate it and fit its fields.

    Raises:
        DataError: the file is unreadable, has no feature column, a repeated or missing id,
            or a cell that does not fit its stated kind (file, row and column named).
        ConfigError: ``kinds`` names a column the file does not have.
    """
    path, key, ids, columns = read_feature_rows(data, id_col, other_col)
    kinds = dict(kinds or {})
    unknown = sorted(set(kinds) - set(columns))
    if unknown:
        raise ConfigError(
            f"feature types name column(s) {', '.join(map(repr, unknown))} that {path} does "
            f"not have; its feature columns are {', '.join(columns)}"
        )
    values: dict[str, list[Any]] = {}
    fields: list[Field] = []
    offset = 1  # token 0 pads
    for name, cells in columns.items():
        kind = kinds.get(name) or infer_kind(cells, separator)
        f = _fit_field(name, kind, cells, separator, offset, path)
        offset += f.num_tokens
        fields.append(f)
        values[name] = cells
    return FeatureData(ids, values, FeatureTable(fields, separator), str(path))


def read_feature_rows(
    data: str | Path | pd.DataFrame, id_col: str, other_col: str | None = None
) -> tuple[Path, str, np.ndarray, dict[str, list[Any]]]:
    """``(path, id column, ids, {feature column: cells})`` of a feature file or frame, the
    ids checked (parsed as interaction ids are, none missing or repeated); cells are Python
    values with None for missing ones. Nothing is fitted. The id column is ``id_col``, else
    the first column, unless that first column is ``other_col`` (the other entity's id:
    the two feature files swapped)."""
    if isinstance(data, pd.DataFrame):
        # errors name the frame's source when it says one (a service request's items)
        path, frame = Path(data.attrs.get("source", "<DataFrame>")), data
    else:
        path = Path(data)
        check_file(path, "a CSV or Parquet feature file", "a header row and one row per id")
        frame = read_table(path)
    if len(frame.columns) < 2:
        raise DataError(path, "needs an id column and at least one feature column")
    if len(set(map(str, frame.columns))) != len(frame.columns):
        raise DataError(path, "has repeated column names; name each feature once")
    key = id_col if id_col in frame.columns else frame.columns[0]
    if other_col is not None and key == other_col and other_col != id_col:
        raise DataError(
            path,
            f"has no {id_col!r} column, and its first column is {other_col!r}, the other "
            "entity's id",
            expected=f"a {id_col!r} column, or the ids in the first column (are the user and "
            "item feature files swapped?)",
        )
    ids = parse_ids(frame[key], path, str(key), is_csv_path(path))
    _check_unique(ids, path, str(key))
    for c in frame.columns:
        if c != key and frame[c].dtype == object:  # nested Parquet cells, or a frame's lists
            check_scalars(frame[c], path, str(c), "feature value", _NESTED_EXPECTED)
    columns = {str(c): _cells(frame[c]) for c in frame.columns if c != key}
    return path, str(key), ids, columns


_NESTED_EXPECTED = (
    "a number or a text per cell (several values: one text joined by the separator, "
    "e.g. Action|Comedy)"
)


def infer_kind(cells: list[Any], separator: str) -> str:
    """The documented rule: all finite numbers -> numeric; a separator -> multi; else
    categorical (missing cells are ignored)."""
    present = [c for c in cells if c is not None]
    if present and all(_is_number(c) for c in present):
        return "numeric"
    if any(separator in str(c) for c in present):
        return "multi"
    return "categorical"


def _fit_field(name: str, kind: str, cells: list[Any], separator: str, offset: int,
               path: Path) -> Field:  # fmt: skip
    if kind == "numeric":
        x = np.full(len(cells), np.nan)
        for i, cell in enumerate(cells):
            if cell is None:
                continue
            if not _is_number(cell):
                raise row_error(path, i, name, f"{str(cell)[:40]!r} is not a number",
                                "a finite number or an empty cell")  # fmt: skip
            x[i] = float(cell)
        known = x[~np.isnan(x)]
        if len(known) == 0:
            raise DataError(path, "has no values", column=name, expected="at least one number")
        quantiles = np.quantile(known, np.linspace(0, 1, NUMERIC_BUCKETS + 1)[1:-1])
        with np.errstate(over="ignore"):
            std = float(known.std())
        if not np.isfinite(std):  # squares overflow: the feature would be silently zeroed
            raise DataError(
                path,
                f"has values too large to standardise (largest magnitude {np.abs(known).max():g})",
                column=name,
                expected="numbers of magnitude below 1e150",
            )
        return Field(name, kind, offset, edges=[float(e) for e in np.unique(quantiles)],
                     mean=float(known.mean()), std=std if std > 0 else 1.0)  # fmt: skip
    rows = [_tokens(c, kind, separator) for c in cells]
    vocab = sorted({t for r in rows for t in r})
    if not vocab:
        raise DataError(path, "has no values", column=name, expected="at least one value")
    width = 1 if kind == "categorical" else min(max(len(r) for r in rows), MAX_TOKENS)
    return Field(name, kind, offset, vocab=vocab, width=width)


def _cells(col: pd.Series) -> list[Any]:
    """The column's cells as Python values, None where missing or blank."""
    out: list[Any] = []
    for v in col.tolist():
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            out.append(None)
        elif isinstance(v, str) and not v.strip():
            out.append(None)
        else:
            out.append(v)
    return out


def _is_number(cell: Any) -> bool:
    if isinstance(cell, bool):
        return False
    try:
        return bool(np.isfinite(float(cell)))
    except (TypeError, ValueError):
        return False


def _check_unique(ids: np.ndarray, path: Path, column: str) -> None:
    seen: dict[Any, int] = {}
    for pos, value in enumerate(ids.tolist()):
        if value in seen:
            message = f"id {str(value)[:40]!r} repeats row {seen[value] + 1}"
            raise row_error(path, pos, column, message, "one row per id")
        seen[value] = pos
