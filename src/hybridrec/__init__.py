"""hybridrec: implicit-feedback recommenders (dot product + MLP) in PyTorch.

The public names below are imported on first use (PEP 562), not with the package: ``import
hybridrec`` then costs milliseconds instead of PyTorch's and pandas' seconds, and the
command line can answer Ctrl-C while they load (:mod:`hybridrec._entry`).
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridrec.errors import (
    ArtifactError,
    ConfigError,
    DataError,
    HybridRecError,
    HybridRecWarning,
    TrainingDivergedError,
)

__version__ = "0.1.0"

#: Each lazily imported public name and the module that defines it.
_EXPORTS = {
    "DataConfig": "hybridrec.config",
    "TrainConfig": "hybridrec.config",
    "IdEncoder": "hybridrec.data",
    "RecSysDataset": "hybridrec.data",
    "read_interactions": "hybridrec.data",
    "MODELS": "hybridrec.models",
    "HybridRecSys": "hybridrec.models",
    "HybridRecSysConfig": "hybridrec.models",
    "build_model": "hybridrec.models",
    "TrainResult": "hybridrec.pipeline",
    "train": "hybridrec.pipeline",
    "Recommender": "hybridrec.recommend",
    "History": "hybridrec.training",
    "fit": "hybridrec.training",
}

if TYPE_CHECKING:
    from hybridrec.config import DataConfig, TrainConfig
    from hybridrec.data import IdEncoder, RecSysDataset, read_interactions
    from hybridrec.models import MODELS, HybridRecSys, HybridRecSysConfig, build_model
    from hybridrec.pipeline import TrainResult, train
    from hybridrec.recommend import Recommender
    from hybridrec.training import History, fit


def __getattr__(name: str) -> Any:
    """A public name on first use; a subpackage (``hybridrec.models``, ...) as the eager
    package made them available."""
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


def load(directory: str | Path) -> Recommender:
    """Load a saved model directory; ``.score(user_ids, item_ids)`` gives probabilities."""
    from hybridrec.recommend import Recommender

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
