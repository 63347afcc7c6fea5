"""Reading, validating, encoding and generating interaction data."""

from hybridrec.data.dataset import (
    Batch,
    RecSysDataset,
    UnknownCounts,
    collate_batch,
    iterate_batches,
)
from hybridrec.data.encoding import UNKNOWN_INDEX, IdEncoder
from hybridrec.data.io import read_interactions

__all__ = [
    "UNKNOWN_INDEX",
    "Batch",
    "IdEncoder",
    "RecSysDataset",
    "UnknownCounts",
    "collate_batch",
    "iterate_batches",
    "read_interactions",
]
