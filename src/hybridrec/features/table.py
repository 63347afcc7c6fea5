"""User or item attributes as model input: the fitted vocabulary of a feature file.

A feature file has one row per user (or item): its id, then one column per attribute.
Each column is one *field* of one of three kinds:

- ``categorical``: one token per row (``gender``, ``occupation``);
- ``multi``: several tokens joined by a separator (``Action|Comedy``);
- ``numeric``: a number (``age``, ``year``), possibly missing.

The model sees every field as tokens (a numeric field also as tokens: its value's quantile
bucket, so a model can learn "1990s films" without assuming a straight line) plus the
standardised numbers of the numeric fields. :class:`FeatureTable` holds what was fitted on
the training files (vocabularies, bucket edges, means and standard deviations), stored in
the artifact as JSON so the same encoding applies to items that arrive later; a value not
in the vocabulary, or a missing one, maps to its field's "unknown" token, never an error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from hybridrec.errors import ConfigError

Kind = Literal["categorical", "multi", "numeric"]
KINDS: tuple[str, ...] = ("categorical", "multi", "numeric")
#: Quantile buckets of a numeric field's tokens.
NUMERIC_BUCKETS = 10
#: Token 0 pads rows with fewer tokens; it has a zero weight and a zero embedding.
PAD = 0
#: Farthest a new entity's numeric feature may lie from the training mean, in standard
#: deviations: beyond it the model extrapolates into overflowing or saturated scores.
MAX_STANDARD_SCORE = 1000.0


@dataclass
class Field:
    """One fitted column. Its tokens are ``offset`` (unknown or missing) and ``offset + 1 +
    position`` of a value in ``vocab`` (numeric: of its bucket, ``len(edges) + 1`` of them)."""

    name: str
    kind: str
    offset: int
    vocab: list[str] = field(default_factory=list)
    edges: list[float] = field(default_factory=list)  # numeric: inner bucket edges
    mean: float = 0.0
    std: float = 1.0
    width: int = 1  # most tokens one row of this field has

    @property
    def num_tokens(self) -> int:
        if self.kind == "numeric":
            return len(self.edges) + 2
        return len(self.vocab) + 1


@dataclass
class EncodedFeatures:
    """Features of entities 0..E-1 (E = the id encoder's ``num_embeddings``), row-aligned
    with the embedding table. ``tokens`` (E, L) int64, 0-padded; ``weights`` (E, L) float32:
    each field's tokens share a weight of 1, so a field counts once whatever its number of
    tokens; ``numeric`` (E, F) float32 standardised values, 0 when missing."""

    tokens: torch.Tensor
    weights: torch.Tensor
    numeric: torch.Tensor


@dataclass
class FeatureTable:
    """The fields fitted on a feature file (:func:`hybridrec.features.read.fit_features`)."""

    fields: list[Field]
    separator: str = "|"

    @property
    def num_tokens(self) -> int:
        """Token vocabulary size, the padding token included."""
        return 1 + sum(f.num_tokens for f in self.fields)

    @property
    def width(self) -> int:
        return max(1, sum(f.width for f in self.fields))

    @property
    def num_numeric(self) -> int:
        return sum(f.kind == "numeric" for f in self.fields)

    def shape(self) -> dict[str, int]:
        """What a model needs to build its feature layer (the rest is in the buffers)."""
        return {"tokens": self.num_tokens, "width": self.width, "numeric": self.num_numeric}

    def to_dict(self) -> dict[str, Any]:
        return {"separator": self.separator, "fields": [asdict(f) for f in self.fields]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureTable:
        return cls([Field(**f) for f in data["fields"]], data.get("separator", "|"))

    def encode(
        self,
        values: dict[str, list[Any]],
        rows: np.ndarray,
        num_entities: int,
        *,
        new: bool = False,
    ) -> EncodedFeatures:
        """Encode the columns ``values`` (raw cells; None = missing) of the entities at
        embedding rows ``rows`` into :class:`EncodedFeatures` of ``num_entities`` rows.

        Entities without a row (and row 0, the unknown id) get every field's unknown token
        and numeric 0 (the training mean): the documented default for ids with no features.
        ``new``: the cells were not checked when the table was fitted (a request, new
        items): a numeric cell that is not a finite number, or lies more than
        :data:`MAX_STANDARD_SCORE` standard deviations from the training mean (where the
        model's scores overflow or saturate), is a :class:`ConfigError` naming it, not a
        missing value.
        """
        width = self.width
        tokens = np.zeros((num_entities, width), dtype=np.int64)
        weights = np.zeros((num_entities, width), dtype=np.float32)
        numeric = np.zeros((num_entities, max(self.num_numeric, 0)), dtype=np.float32)
        column, numeric_column = 0, 0
        for f in self.fields:
            cells = values.get(f.name, [None] * len(rows))
            field_tokens = np.full((num_entities, f.width), PAD, dtype=np.int64)
            field_tokens[:, 0] = f.offset  # the field's unknown token
            field_weights = np.zeros((num_entities, f.width), dtype=np.float32)
            field_weights[:, 0] = 1.0
            if f.kind == "numeric":
                x = _checked_float(cells, f) if new else _as_float(cells)
                known = ~np.isnan(x)
                bucket = np.searchsorted(np.asarray(f.edges), x[known], side="right")
                field_tokens[rows[known], 0] = f.offset + 1 + bucket
                numeric[rows[known], numeric_column] = (x[known] - f.mean) / f.std
                numeric_column += 1
            else:
                index = {v: i for i, v in enumerate(f.vocab)}
                for row, cell in zip(rows.tolist(), cells, strict=True):
                    ids = [index.get(t, -1) for t in _tokens(cell, f.kind, self.separator)][
                        : f.width
                    ]
                    if not ids:
                        continue
                    field_tokens[row, : len(ids)] = [f.offset + 1 + i for i in ids]  # -1: unknown
                    field_weights[row, : len(ids)] = 1.0 / len(ids)
            tokens[:, column : column + f.width] = field_tokens
            weights[:, column : column + f.width] = field_weights
            column += f.width
        tokens[0], weights[0] = PAD, 0.0  # the unknown id: no features at all
        if len(numeric):
            numeric[0] = 0.0
        return EncodedFeatures(
            torch.from_numpy(tokens), torch.from_numpy(weights), torch.from_numpy(numeric)
        )


def _tokens(cell: Any, kind: str, separator: str) -> list[str]:
    """The tokens of one cell: none when missing, one for a categorical cell, the non-empty
    parts for a multi-valued one."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return []
    text = str(cell).strip()
    if not text:
        return []
    if kind == "multi":
        return [t.strip() for t in text.split(separator) if t.strip()]
    return [text]


def _checked_float(cells: list[Any], f: Field) -> np.ndarray:
    """:func:`_as_float` of cells nobody checked: a number (text of one included) or
    missing (None, blank), within :data:`MAX_STANDARD_SCORE` of the training values."""
    out = np.full(len(cells), np.nan)
    for i, cell in enumerate(cells):
        if cell is None or (isinstance(cell, str) and not cell.strip()):
            continue
        value = np.nan if isinstance(cell, bool) else _float_or_nan(cell)
        if not np.isfinite(value):
            raise ConfigError(
                f"feature {f.name!r}: {str(cell)[:40]!r} is not a finite number (a numeric "
                "feature takes a number, or nothing when unknown)"
            )
        if abs(value - f.mean) > MAX_STANDARD_SCORE * f.std:
            raise ConfigError(
                f"feature {f.name!r}: {value:g} is too far from the training values (mean "
                f"{f.mean:g}, standard deviation {f.std:g}) for the model to score"
            )
        out[i] = value
    return out


def _float_or_nan(cell: Any) -> float:
    try:
        return float(cell)
    except (TypeError, ValueError, OverflowError):
        return np.nan


def _as_float(cells: list[Any]) -> np.ndarray:
    """Floats of numeric cells (NaN where missing); the values were checked when fitted."""
    out = np.full(len(cells), np.nan)
    for i, cell in enumerate(cells):
        if cell is None:
            continue
        try:
            out[i] = float(cell)
        except (TypeError, ValueError):
            continue
    out[~np.isfinite(out)] = np.nan
    return out
