"""What a model can do, declared in one place: the class attributes of :class:`RecModel`.

Callers never name a model or probe it with ``hasattr``: they ask the registry,
:func:`hybridrec.models.capabilities` (one model) or :func:`hybridrec.models.models_with`
(the models that can do something), which read these attributes. A new model sets the ones
that differ from the defaults, which describe a plain pointwise model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn


class RecModel(nn.Module):
    """Base class of the registered models: built from one config dataclass, scored by
    ``forward(user_idx, item_idx) -> (B,)`` and ``score_all(user_idx) -> (B, num_items)``.

    Example:
        >>> from hybridrec.models import MFConfig, MatrixFactorization, capabilities
        >>> model = MatrixFactorization(MFConfig(num_users=3, num_items=4))
        >>> capabilities(model).retrieval, capabilities("sasrec").objective
        (True, 'next_item')
    """

    #: The config dataclass the model is built from (``num_users``/``num_items`` fields).
    config_class: ClassVar[type]
    #: ``named_parameters`` names of the per-user tables (one row per user): what a new
    #: user's fitted rows replace in ``recommend_for_items``. Empty: no per-user weights,
    #: so a new user gets the popular items (unless the model reads sequences).
    user_parameters: ClassVar[tuple[str, ...]] = ()
    #: Which weights and buffers have one row per user or per item: ``(owner, "users" or
    #: "items")`` pairs, the owner being the name of the module holding the tensor
    #: (``user_embedding`` matches ``tower.user_embedding.weight`` too) or, for a buffer of
    #: the model itself, the buffer's name. ``hybridrec update`` grows these when new users
    #: and items arrive; a model whose row tables are not all listed cannot be updated.
    row_tables: ClassVar[tuple[tuple[str, str], ...]] = (
        ("user_embedding", "users"), ("user_bias", "users"),
        ("item_embedding", "items"), ("item_bias", "items"),
    )  # fmt: skip
    #: ``user_embedding``/``item_embedding`` tables (``nn.Embedding``) whose dot product,
    #: with :meth:`retrieval_query` as the user side, ranks much as the model does: two-stage
    #: top-K (``num_candidates``) and the catalogue loss (``--catalogue-weight``) use it.
    retrieval: ClassVar[bool] = False
    #: An ``item_embedding`` table (``nn.Embedding``): ``similar_items`` compares its rows.
    similar_items: ClassVar[bool] = False
    #: ``score_sequences(sequences, user_idx=None) -> (B, num_items)``: a new user is the
    #: history of items they give, scored directly, with no fitting.
    sequences: ClassVar[bool] = False
    #: ``prepare(user_idx, item_idx, target, timestamp=None)`` reads the training rows
    #: before training (popularity counts them, sasrec stores the histories).
    reads_training_data: ClassVar[bool] = False
    #: How ``hybridrec.training.fit`` trains it (:data:`hybridrec.objectives.OBJECTIVES`).
    objective: ClassVar[str] = "pointwise"
    #: The loss ``--loss auto`` means for this model.
    default_loss: ClassVar[str] = "bce"
    #: Epochs without improvement before early stopping when ``--patience`` is not given.
    default_patience: ClassVar[int] = 3
    #: Most epochs when ``--epochs`` is not given (early stopping usually ends sooner).
    default_epochs: ClassVar[int] = 20
    #: Learns by gradient descent; ``False``: ``fit`` only prepares and validates it.
    trainable: ClassVar[bool] = True
    #: Takes side features (``user_feature_shape``/``item_feature_shape`` in its config, its
    #: ``user_embedding``/``item_embedding`` made by ``models.featured.make_table``).
    features: ClassVar[bool] = False
    #: The attributes above as one value, read when the class is made: asking costs an
    #: attribute lookup, which ``torch.compile`` traces without a graph break.
    declared: ClassVar[Capabilities]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.declared = Capabilities.of(cls)

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    def retrieval_query(self, user_idx: torch.Tensor) -> torch.Tensor:
        """(B, D) user vectors whose dot product with ``item_embedding`` rows ranks items in
        two-stage stage 1: the user embedding, unless a model knows better (GMF)."""
        return self.user_embedding(user_idx)


@dataclass(frozen=True)
class Capabilities:
    """The declaration of a model class (the attributes :class:`RecModel` documents), as
    one read-only value: what :func:`hybridrec.models.capabilities` answers."""

    config_class: type | None
    user_parameters: tuple[str, ...]
    row_tables: tuple[tuple[str, str], ...]
    retrieval: bool
    similar_items: bool
    sequences: bool
    reads_training_data: bool
    objective: str
    default_loss: str
    default_patience: int
    default_epochs: int
    trainable: bool
    features: bool

    @classmethod
    def of(cls, model_class: type[RecModel]) -> Capabilities:
        """What ``model_class`` declares (``config_class`` None where it names none)."""
        return cls(**{f.name: getattr(model_class, f.name, None) for f in fields(cls)})


RecModel.declared = Capabilities.of(RecModel)  # the defaults: a plain pointwise model
