"""Model registry: a new model is one module plus one line in ``MODELS``.

A registered model is an ``nn.Module`` built from a single config dataclass
(``cls.config_class``) with ``num_users``/``num_items`` fields, and provides
``forward(user_idx, item_idx) -> (B,)`` logits and ``score_all(user_idx) -> (B, num_items)``.
Optional hooks: ``prepare(user_idx, item_idx, target, timestamp=None)`` reads the training
data before training (popularity counts, sasrec histories); ``objective`` names how
``fit`` trains it (see :mod:`hybridrec.objectives`); ``user_parameters`` lists per-user tables
(what a new user's fitted vector replaces); ``score_sequences`` scores item histories
directly (new users of sequence models).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
from torch import nn

from hybridrec.errors import ConfigError
from hybridrec.models.hybrid import HybridRecSys, HybridRecSysConfig
from hybridrec.models.mf import MatrixFactorization, MFConfig
from hybridrec.models.ncf import GMF, NCFMLP, NCFConfig, NeuMF
from hybridrec.models.popularity import Popularity, PopularityConfig
from hybridrec.models.sasrec import SASRec, SASRecConfig

MODELS: dict[str, type[nn.Module]] = {
    "hybrid": HybridRecSys,
    "mf": MatrixFactorization,
    "gmf": GMF,
    "mlp": NCFMLP,
    "neumf": NeuMF,
    "popularity": Popularity,
    "sasrec": SASRec,
}


def model_device(model: nn.Module) -> torch.device:
    """Where a model lives: its first parameter or buffer (statistics-only models have no
    parameters), else the CPU."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_class(name: str) -> type[nn.Module]:
    """The registered class called ``name``, or a ``ConfigError`` listing the choices."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}"
        ) from None


def build_model(name: str, **config: Any) -> nn.Module:
    """Build model ``name`` from keyword hyper-parameters (unknown keys are an error)."""
    cls = model_class(name)
    config_class = cls.config_class  # type: ignore[attr-defined]
    known = {f.name for f in fields(config_class)}
    extra = sorted(set(config) - known)
    if extra:
        raise ConfigError(f"model {name!r} has no option(s) {', '.join(extra)}")
    return cls(config_class(**config))


__all__ = [
    "GMF",
    "MODELS",
    "NCFMLP",
    "HybridRecSys",
    "HybridRecSysConfig",
    "MFConfig",
    "MatrixFactorization",
    "NCFConfig",
    "NeuMF",
    "Popularity",
    "PopularityConfig",
    "SASRec",
    "SASRecConfig",
    "build_model",
    "model_class",
    "model_device",
]
