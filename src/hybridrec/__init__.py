"""hybridrec: implicit-feedback recommenders (dot product + MLP) in PyTorch."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

from hybridrec.config import DataConfig, TrainConfig  # noqa: E402
from hybridrec.data import IdEncoder, RecSysDataset, read_interactions  # noqa: E402
from hybridrec.errors import (  # noqa: E402
    ArtifactError,
    ConfigError,
    DataError,
    HybridRecError,
    HybridRecWarning,
    TrainingDivergedError,
)
from hybridrec.models import MODELS, HybridRecSys, HybridRecSysConfig, build_model  # noqa: E402
from hybridrec.pipeline import TrainResult, train  # noqa: E402
from hybridrec.recommend import Recommender  # noqa: E402
from hybridrec.training import History, fit  # noqa: E402


def load(directory: str | Path) -> Recommender:
    """Load a saved model directory; ``.score(user_ids, item_ids)`` gives probabilities."""
    return Recommender.load(directory)


__all__ = [
    "MODELS",
    "ArtifactError",
    "ConfigError",
    "DataConfig",
    "DataError",
    "History",
    "HybridRecError",
    "HybridRecSys",
    "HybridRecSysConfig",
    "HybridRecWarning",
    "IdEncoder",
    "RecSysDataset",
    "Recommender",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "build_model",
    "fit",
    "load",
    "read_interactions",
    "train",
]
