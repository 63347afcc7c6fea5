"""Matrix factorisation with biases: logit = <u, i> + b_u + b_i + b."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from hybridrec.config import check_finite, option
from hybridrec.data.encoding import UNKNOWN_INDEX
from hybridrec.errors import ConfigError
from hybridrec.models.base import RecModel
from hybridrec.models.featured import (
    ColdUserPopularity,
    FeatureOptions,
    item_popularity,
    make_table,
    table_vectors,
)
from hybridrec.models.layers import group_dots, init_embedding


@dataclass
class MFConfig(FeatureOptions):
    """Hyper-parameters of :class:`MatrixFactorization`."""

    num_users: int = field(default=1, metadata={"cli": False})
    num_items: int = field(default=1, metadata={"cli": False})
    embedding_dim: int = option(64, "size of the user and item embeddings")
    init_std: float = option(0.01, "standard deviation of the initial embeddings")

    def __post_init__(self) -> None:
        check_finite(self)
        if self.num_users < 1 or self.num_items < 1:
            raise ConfigError("num_users and num_items must be >= 1")
        self.check_feature_options()
        if self.embedding_dim < 1:
            raise ConfigError(f"--embedding-dim must be >= 1, got {self.embedding_dim}")
        if not self.init_std > 0:
            raise ConfigError(f"--init-std must be positive, got {self.init_std}")


class MatrixFactorization(ColdUserPopularity, RecModel):
    """The classic collaborative-filtering baseline.

    Example:
        >>> model = MatrixFactorization(MFConfig(num_users=3, num_items=4, embedding_dim=8))
        >>> model(torch.tensor([1, 2]), torch.tensor([3, 0])).shape
        torch.Size([2])
    """

    config_class = MFConfig
    #: Per-user tables (``named_parameters`` names): what a new user's vector replaces.
    user_parameters = ("user_embedding.weight", "user_bias.weight")
    retrieval = True
    similar_items = True
    features = True
    #: the cold-user popularity term has one value per item: ``update`` grows it
    row_tables = (*RecModel.row_tables, ("cold_user_item_bias", "items"))

    def __init__(self, config: MFConfig) -> None:
        super().__init__(config)
        dim = config.embedding_dim
        self.user_embedding = make_table(config.num_users, dim, config.user_feature_shape,
                                         config.id_dropout, UNKNOWN_INDEX)  # fmt: skip
        self.item_embedding = make_table(config.num_items, dim, config.item_feature_shape,
                                         config.id_dropout, UNKNOWN_INDEX)  # fmt: skip
        self.user_bias = nn.Embedding(config.num_users, 1, padding_idx=UNKNOWN_INDEX)
        self.item_bias = nn.Embedding(config.num_items, 1, padding_idx=UNKNOWN_INDEX)
        self.global_bias = nn.Parameter(torch.zeros(()))
        init_embedding(self.user_embedding, config.init_std)
        init_embedding(self.item_embedding, config.init_std)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)
        self.init_cold_users(config.num_items, config.user_feature_shape is not None)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Logits (B,)."""
        u = self.user_embedding(user_idx)  # (B, D)
        i = self.item_embedding(item_idx)  # (B, D)
        bias = self.user_bias(user_idx).squeeze(-1) + self.item_bias(item_idx).squeeze(-1)
        popularity = item_popularity(self.item_embedding, item_idx)
        if popularity is not None:  # cold items: what their features predict
            bias = bias + popularity
        cold = self.cold_user_bias(user_idx, item_idx)
        if cold is not None:  # users known by features alone: the catalogue's popularity
            bias = bias + cold
        return (u * i).sum(-1) + bias + self.global_bias

    def score_groups(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Logits (P, C) of each user with its own items (``forward`` on the repeated users,
        one user row per group)."""
        groups, width = item_idx.shape
        flat = item_idx.reshape(-1)
        u = self.user_embedding(user_idx)  # (P, D)
        i = self.item_embedding(flat).view(groups, width, -1)  # (P, C, D)
        bias = self.item_bias(flat).view(groups, width) + self.user_bias(user_idx)  # + (P, 1)
        popularity = item_popularity(self.item_embedding, flat)
        if popularity is not None:
            bias = bias + popularity.view(groups, width)
        cold = self.cold_user_bias(user_idx, item_idx)
        if cold is not None:
            bias = bias + cold
        return group_dots(u, i) + bias + self.global_bias

    def score_all(self, user_idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_items)."""
        u = self.user_embedding(user_idx)  # (B, D)
        scores = u @ table_vectors(self.item_embedding).T  # (B, I)
        scores = scores + self.item_bias.weight.T + self.user_bias(user_idx)  # (1, I) + (B, 1)
        popularity = item_popularity(self.item_embedding)
        if popularity is not None:
            scores = scores + popularity
        cold = self.cold_user_bias(user_idx)
        if cold is not None:
            scores = scores + cold
        return scores + self.global_bias
