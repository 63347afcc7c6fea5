"""User and item side features: reading feature files, fitting their fields, encoding them
for a model (:mod:`hybridrec.features.read`, :mod:`hybridrec.features.table`)."""

from __future__ import annotations

import numpy as np

from hybridrec.data.encoding import IdEncoder
from hybridrec.features.read import FeatureData, infer_kind, parse_kinds, read_features
from hybridrec.features.table import EncodedFeatures, FeatureTable, Field


def encode_features(data: FeatureData, encoder: IdEncoder) -> EncodedFeatures:
    """``data``'s features in the row order of ``encoder``'s embedding table; ids the
    encoder does not know are left out (fit the encoder on them first to keep them)."""
    rows = encoder.transform(data.ids)
    known = rows != 0
    values = {name: [c for c, k in zip(cells, known, strict=True) if k]
              for name, cells in data.values.items()}  # fmt: skip
    return data.table.encode(values, np.asarray(rows[known]), encoder.num_embeddings)


__all__ = [
    "EncodedFeatures",
    "FeatureData",
    "FeatureTable",
    "Field",
    "encode_features",
    "infer_kind",
    "parse_kinds",
    "read_features",
]
