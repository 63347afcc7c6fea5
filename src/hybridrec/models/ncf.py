"""Neural collaborative filtering (He et al., WWW 2017): GMF, MLP and their fusion NeuMF.

GMF weighs the element-wise product of the embeddings with a learned vector; MLP runs a
tower on ``[u || i]``; NeuMF keeps separate embeddings for the two towers and feeds the
concatenation of the GMF vector and the MLP's last hidden layer to one output layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from hybridrec.config import check_depth, check_finite, option
from hybridrec.data.encoding import UNKNOWN_INDEX
from hybridrec.errors import ConfigError
from hybridrec.models.base import RecModel
from hybridrec.models.layers import all_pairs, grouped_pairs, init_embedding


@dataclass
class NCFConfig:
    """Hyper-parameters shared by :class:`GMF`, :class:`NCFMLP` and :class:`NeuMF`.

    ``embedding_dim`` sizes the GMF embeddings; the MLP tower's embeddings have
    ``mlp_layer_sizes[0] // 2`` dimensions each, as in the paper.
    """

    num_users: int = field(default=1, metadata={"cli": False})
    num_items: int = field(default=1, metadata={"cli": False})
    embedding_dim: int = option(64, "size of the GMF user and item embeddings")
    mlp_layer_sizes: tuple[int, ...] = option(
        (64, 32, 16),
        "MLP tower sizes; the first is the width of [user || item]",
        flag="--mlp-layers",
    )
    dropout: float = option(0.0, "dropout after each MLP hidden layer (0 disables it)")
    init_std: float = option(0.01, "standard deviation of the initial embeddings")

    def __post_init__(self) -> None:
        check_finite(self)
        self.mlp_layer_sizes = tuple(int(s) for s in self.mlp_layer_sizes)
        if self.num_users < 1 or self.num_items < 1:
            raise ConfigError("num_users and num_items must be >= 1")
        if self.embedding_dim < 1:
            raise ConfigError(f"--embedding-dim must be >= 1, got {self.embedding_dim}")
        check_depth(len(self.mlp_layer_sizes), "--mlp-layers")
        if not self.mlp_layer_sizes or any(s < 2 for s in self.mlp_layer_sizes):
            raise ConfigError(
                f"--mlp-layers must be sizes >= 2 like 64,32,16, got {self.mlp_layer_sizes}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not self.init_std > 0:
            raise ConfigError(f"--init-std must be positive, got {self.init_std}")


def _embeddings(config: NCFConfig, dim: int) -> tuple[nn.Embedding, nn.Embedding]:
    users = nn.Embedding(config.num_users, dim, padding_idx=UNKNOWN_INDEX)
    items = nn.Embedding(config.num_items, dim, padding_idx=UNKNOWN_INDEX)
    init_embedding(users, config.init_std)
    init_embedding(items, config.init_std)
    return users, items


class _Tower(nn.Module):
    """MLP tower: ``[u || i]`` through hidden layers ``mlp_layer_sizes[1:]``."""

    def __init__(self, config: NCFConfig) -> None:
        super().__init__()
        sizes = config.mlp_layer_sizes
        self.user_embedding, self.item_embedding = _embeddings(config, sizes[0] // 2)
        layers: list[nn.Module] = []
        width = 2 * (sizes[0] // 2)
        for size in sizes[1:]:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = size
        self.layers = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.user_embedding(user_idx), self.item_embedding(item_idx)], -1)
        return self.layers(x)  # (B, out_dim)

    def groups(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Hidden output (P, C, out_dim) of each user with its own C items."""
        u = self.user_embedding(user_idx)  # (P, D)
        i = self.item_embedding(item_idx)  # (P, C, D)
        if not len(self.layers):
            return torch.cat([u[:, None].expand(-1, i.size(1), -1), i], -1)
        return grouped_pairs(list(self.layers), u, i)

    def all_items(self, user_idx: torch.Tensor) -> torch.Tensor:
        """Hidden output (B, I, out_dim) for every item."""
        u = self.user_embedding(user_idx)  # (B, D)
        return all_pairs(list(self.layers), u, self.item_embedding.weight)


class GMF(RecModel):
    """Generalised matrix factorisation: logit = h^T (u * i) + b.

    Example:
        >>> GMF(NCFConfig(num_users=3, num_items=4))(torch.tensor([1]), torch.tensor([2])).shape
        torch.Size([1])
    """

    config_class = NCFConfig
    #: Per-user tables (``named_parameters`` names): what a new user's vector replaces.
    user_parameters = ("user_embedding.weight",)
    retrieval = True  # by retrieval_query: u * h
    similar_items = True

    def __init__(self, config: NCFConfig) -> None:
        super().__init__(config)
        self.user_embedding, self.item_embedding = _embeddings(config, config.embedding_dim)
        self.output = nn.Linear(config.embedding_dim, 1)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        gmf = self.user_embedding(user_idx) * self.item_embedding(item_idx)  # (B, D)
        return self.output(gmf).squeeze(-1)

    def score_groups(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Logits (P, C) of each user with its own C items, one user row per group."""
        gmf = self.user_embedding(user_idx)[:, None] * self.item_embedding(item_idx)
        return self.output(gmf).squeeze(-1)

    def score_all(self, user_idx: torch.Tensor) -> torch.Tensor:
        return self.retrieval_query(user_idx) @ self.item_embedding.weight.T + self.output.bias

    def retrieval_query(self, user_idx: torch.Tensor) -> torch.Tensor:
        """(B, D) ``u * h``: its dot product with an item embedding is the logit minus the
        bias, so two-stage retrieval ranks exactly as the model does."""
        return self.user_embedding(user_idx) * self.output.weight  # fold h into u


class NCFMLP(RecModel):
    """The NCF MLP model: logit = w^T tower([u || i]) + b.

    Example:
        >>> NCFMLP(NCFConfig(num_users=3, num_items=4))(torch.tensor([1]), torch.tensor([2])).shape
        torch.Size([1])
    """

    config_class = NCFConfig
    #: Per-user tables (``named_parameters`` names): what a new user's vector replaces.
    user_parameters = ("tower.user_embedding.weight",)
    # no retrieval or similar_items: its embeddings only feed the tower, no dot product

    def __init__(self, config: NCFConfig) -> None:
        super().__init__(config)
        self.tower = _Tower(config)
        self.output = nn.Linear(self.tower.out_dim, 1)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self.output(self.tower(user_idx, item_idx)).squeeze(-1)

    def score_groups(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Logits (P, C) of each user with its own C items, one user row per group."""
        return self.output(self.tower.groups(user_idx, item_idx)).squeeze(-1)

    def score_all(self, user_idx: torch.Tensor) -> torch.Tensor:
        return self.output(self.tower.all_items(user_idx)).squeeze(-1)


class NeuMF(RecModel):
    """NeuMF: GMF vector and MLP tower output, concatenated, through one output layer.

    Example:
        >>> NeuMF(NCFConfig(num_users=3, num_items=4))(torch.tensor([1]), torch.tensor([2])).shape
        torch.Size([1])
    """

    config_class = NCFConfig
    #: Per-user tables (``named_parameters`` names): what a new user's vector replaces.
    user_parameters = ("user_embedding.weight", "tower.user_embedding.weight")
    retrieval = True  # by the GMF branch's embeddings
    similar_items = True

    def __init__(self, config: NCFConfig) -> None:
        super().__init__(config)
        self.user_embedding, self.item_embedding = _embeddings(config, config.embedding_dim)
        self.tower = _Tower(config)
        self.output = nn.Linear(config.embedding_dim + self.tower.out_dim, 1)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        gmf = self.user_embedding(user_idx) * self.item_embedding(item_idx)  # (B, D)
        mlp = self.tower(user_idx, item_idx)  # (B, H)
        return self.output(torch.cat([gmf, mlp], -1)).squeeze(-1)

    def score_groups(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Logits (P, C) of each user with its own C items, one user row per group."""
        gmf = self.user_embedding(user_idx)[:, None] * self.item_embedding(item_idx)
        mlp = self.tower.groups(user_idx, item_idx)  # (P, C, H)
        return self.output(torch.cat([gmf, mlp], -1)).squeeze(-1)

    def score_all(self, user_idx: torch.Tensor) -> torch.Tensor:
        d = self.config.embedding_dim
        w_gmf, w_mlp = self.output.weight[0, :d], self.output.weight[0, d:]
        gmf = (self.user_embedding(user_idx) * w_gmf) @ self.item_embedding.weight.T  # (B, I)
        mlp = self.tower.all_items(user_idx) @ w_mlp  # (B, I)
        return gmf + mlp + self.output.bias
