"""Model registry: a new model is one module plus one line in ``MODELS``.

A registered model is a :class:`RecModel`: an ``nn.Module`` built from a single config
dataclass with ``num_users``/``num_items`` fields, with ``forward(user_idx, item_idx) -> (B,)``
logits and ``score_all(user_idx) -> (B, num_items)``. What else it can do (per-user tables
for fold-in, retrieval by dot product, sequences, its objective and loss) it declares in
class attributes that :class:`RecModel` documents; callers ask :func:`capabilities` and
:func:`models_with` instead of naming models or probing attributes.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any

import torch
from torch import nn

from hybridrec.errors import ConfigError
from hybridrec.models.base import Capabilities, RecModel
from hybridrec.models.hybrid import HybridRecSys, HybridRecSysConfig
from hybridrec.models.mf import MatrixFactorization, MFConfig
from hybridrec.models.ncf import GMF, NCFMLP, NCFConfig, NeuMF
from hybridrec.models.popularity import Popularity, PopularityConfig
from hybridrec.models.sasrec import SASRec, SASRecConfig

MODELS: dict[str, type[RecModel]] = {
    "hybrid": HybridRecSys,
    "mf": MatrixFactorization,
    "gmf": GMF,
    "mlp": NCFMLP,
    "neumf": NeuMF,
    "popularity": Popularity,
    "sasrec": SASRec,
}


def register_model(name: str, cls: type[RecModel]) -> None:
    """Add model class ``cls`` to :data:`MODELS` as ``name``: from then on ``train``,
    ``evaluate``, ``recommend``, ``serve``, ``export`` and the CLI's ``--model`` know it.

    Raises:
        ConfigError: ``name`` is taken, or ``cls`` is not a :class:`RecModel` with a
            dataclass ``config_class``.
    """
    if name in MODELS:
        raise ConfigError(f"a model called {name!r} is already registered ({MODELS[name]})")
    if not (isinstance(cls, type) and issubclass(cls, RecModel)):
        raise ConfigError(f"model {name!r} must be a subclass of RecModel, got {cls!r}")
    if not is_dataclass(capabilities(cls).config_class):
        raise ConfigError(f"{cls.__name__}.config_class must be a dataclass")
    MODELS[name] = cls


def model_device(model: nn.Module) -> torch.device:
    """Where a model lives: its first parameter or buffer (statistics-only models have no
    parameters), else the CPU."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_class(name: str) -> type[RecModel]:
    """The registered class called ``name``, or a ``ConfigError`` listing the choices."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}"
        ) from None


def capabilities(model: str | nn.Module | type[nn.Module]) -> Capabilities:
    """What a model can do, by registered name, model or class (see :class:`RecModel`).

    A module that is not a :class:`RecModel` (a stand-in in a test) is a plain pointwise
    model: the defaults.
    """
    if isinstance(model, str):
        model = model_class(model)
    cls = model if isinstance(model, type) else type(model)
    return cls.declared if issubclass(cls, RecModel) else RecModel.declared


def models_with(**wanted: Any) -> tuple[str, ...]:
    """Registered names, in registry order, of the models whose :func:`capabilities` have
    the given values, e.g. ``models_with(retrieval=True)``; for messages and help texts."""
    known = {f.name for f in fields(Capabilities)}
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise TypeError(f"no capability called {', '.join(unknown)}; known: {sorted(known)}")
    return tuple(
        name
        for name, cls in MODELS.items()
        if all(getattr(capabilities(cls), key) == value for key, value in wanted.items())
    )


def build_model(name: str, **config: Any) -> RecModel:
    """Build model ``name`` from keyword hyper-parameters (unknown keys are an error)."""
    cls = model_class(name)
    known = {f.name for f in fields(cls.config_class)}
    extra = sorted(set(config) - known)
    if extra:
        raise ConfigError(f"model {name!r} has no option(s) {', '.join(extra)}")
    return cls(cls.config_class(**config))


__all__ = [
    "GMF",
    "MODELS",
    "NCFMLP",
    "Capabilities",
    "HybridRecSys",
    "HybridRecSysConfig",
    "MFConfig",
    "MatrixFactorization",
    "NCFConfig",
    "NeuMF",
    "Popularity",
    "PopularityConfig",
    "RecModel",
    "SASRec",
    "SASRecConfig",
    "build_model",
    "capabilities",
    "model_class",
    "model_device",
    "models_with",
    "register_model",
]
