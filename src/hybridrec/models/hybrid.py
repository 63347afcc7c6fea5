"""The seed's hybrid model: a dot product plus an MLP over ``[user || item]``."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hybridrec.config import check_depth, check_finite, option
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
from hybridrec.models.layers import MLP, all_pairs, group_dots, grouped_pairs, init_embedding


@dataclass
class HybridRecSysConfig(FeatureOptions):
    """Hyper-parameters of :class:`HybridRecSys`.

    ``num_users``/``num_items`` count embedding rows, including the reserved unknown row 0
    (``IdEncoder.num_embeddings``); they come from the data, not from the command line.
    """

    num_users: int = field(default=1, metadata={"cli": False})
    num_items: int = field(default=1, metadata={"cli": False})
    embedding_dim: int = option(64, "size of the user and item embeddings")
    mlp_layer_sizes: tuple[int, ...] = option(
        (64, 32, 16),
        "hidden sizes of the MLP on [user || item], comma-separated",
        flag="--mlp-layers",
    )
    dropout: float = option(0.0, "dropout after each MLP hidden layer (0 disables it)")
    init_std: float = option(0.01, "standard deviation of the initial embeddings")

    def __post_init__(self) -> None:
        check_finite(self)
        self.mlp_layer_sizes = tuple(int(s) for s in self.mlp_layer_sizes)
        if self.num_users < 1 or self.num_items < 1:
            raise ConfigError(
                f"num_users and num_items must be >= 1, got {self.num_users}, {self.num_items}"
            )
        if self.embedding_dim < 1:
            raise ConfigError(f"--embedding-dim must be >= 1, got {self.embedding_dim}")
        check_depth(len(self.mlp_layer_sizes), "--mlp-layers")
        if any(s < 1 for s in self.mlp_layer_sizes):
            raise ConfigError(
                f"--mlp-layers must be positive sizes like 64,32,16, got {self.mlp_layer_sizes}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not self.init_std > 0:
            raise ConfigError(f"--init-std must be positive, got {self.init_std}")
        self.check_feature_options()


class HybridRecSys(ColdUserPopularity, RecModel):
    """Logit = MLP([u || i]) + <u, i> for user embedding u and item embedding i.

    The dot product is matrix factorisation's collaborative signal; the MLP adds the
    non-linear interactions a dot product cannot express. Unknown ids (index 0) have a zero
    embedding, so they get a neutral dot score.

    Example:
        >>> model = HybridRecSys(HybridRecSysConfig(num_users=3, num_items=4, embedding_dim=8))
        >>> model(torch.tensor([1, 2]), torch.tensor([3, 0])).shape
        torch.Size([2])
        >>> model.score_all(torch.tensor([1])).shape
        torch.Size([1, 4])
    """

    config_class = HybridRecSysConfig
    #: Per-user tables (``named_parameters`` names): what a new user's vector replaces.
    user_parameters = ("user_embedding.weight",)
    retrieval = True
    similar_items = True
    features = True
    #: the cold-user popularity term has one value per item: ``update`` grows it
    row_tables = (*RecModel.row_tables, ("cold_user_item_bias", "items"))

    def __init__(self, config: HybridRecSysConfig) -> None:
        super().__init__(config)
        dim = config.embedding_dim
        self.user_embedding = make_table(config.num_users, dim, config.user_feature_shape,
                                         config.id_dropout, UNKNOWN_INDEX)  # fmt: skip
        self.item_embedding = make_table(config.num_items, dim, config.item_feature_shape,
                                         config.id_dropout, UNKNOWN_INDEX)  # fmt: skip
        self.mlp = MLP(2 * dim, config.mlp_layer_sizes, out_dim=1, dropout=config.dropout)
        init_embedding(self.user_embedding, config.init_std)
        init_embedding(self.item_embedding, config.init_std)
        self.init_cold_users(config.num_items, config.user_feature_shape is not None)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Logits (B,) for the pairs ``(user_idx[b], item_idx[b])``."""
        u = self.user_embedding(user_idx)  # (B, D)
        i = self.item_embedding(item_idx)  # (B, D)
        mlp_score = self.mlp(torch.cat([u, i], dim=-1)).squeeze(-1)  # (B,)
        dot_score = (u * i).sum(dim=-1)  # (B,)
        popularity = item_popularity(self.item_embedding, item_idx)
        if popularity is not None:  # cold items: what their features predict
            dot_score = dot_score + popularity
        cold = self.cold_user_bias(user_idx, item_idx)
        if cold is not None:  # users known by features alone: the catalogue's popularity
            dot_score = dot_score + cold
        return mlp_score + dot_score

    def score_groups(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Logits (P, C) of each user ``user_idx[p]`` (P,) with its own items ``item_idx[p]``
        (P, C): ``forward`` on the repeated users, at the cost of one user row per group."""
        groups, width = item_idx.shape
        u = self.user_embedding(user_idx)  # (P, D)
        i = self.item_embedding(item_idx.reshape(-1)).view(groups, width, -1)  # (P, C, D)
        mlp_score = grouped_pairs(list(self.mlp.layers), u, i).squeeze(-1)  # (P, C)
        dot_score = group_dots(u, i)  # (P, C)
        popularity = item_popularity(self.item_embedding, item_idx.reshape(-1))
        if popularity is not None:
            dot_score = dot_score + popularity.view(groups, width)
        cold = self.cold_user_bias(user_idx, item_idx)
        if cold is not None:
            dot_score = dot_score + cold
        return mlp_score + dot_score

    def score_all(self, user_idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_items) of every item for each user, item index 0 included."""
        u = self.user_embedding(user_idx)  # (B, D)
        items = table_vectors(self.item_embedding)  # (I, D)
        mlp_score = all_pairs(list(self.mlp.layers), u, items).squeeze(-1)  # (B, I)
        popularity = item_popularity(self.item_embedding)
        if popularity is not None:
            mlp_score = mlp_score + popularity
        cold = self.cold_user_bias(user_idx)
        if cold is not None:
            mlp_score = mlp_score + cold
        return mlp_score + u @ items.T
