"""An embedding table whose rows also know their entity's features.

A user's or item's vector is its id embedding plus the pooled embeddings of its feature
tokens plus a projection of its numeric features (the sum LightFM uses, Kula 2015). An id
with no training interactions has no trained id row, so its vector is its features alone;
training drops the id part of a share of rows (``id_dropout``, DropoutNet, Volkovs et al.
2017) so that features alone are a vector the rest of the model can rank by.

:class:`FeaturedEmbedding` is an ``nn.Embedding``: its id rows are still ``weight`` (so
sparse gradients, lazy Adam, state-dict names and new-user fitting work as for a plain
table); the features live in buffers saved with the weights. ``vectors()`` gives every
row's full vector, which is what scoring all items must use instead of ``weight``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hybridrec.config import option
from hybridrec.errors import ConfigError
from hybridrec.features.table import EncodedFeatures

#: Feature vocabularies up to this many tokens are pooled as a (rows x tokens) weight
#: matrix times the token table: 4-5x faster than ``EmbeddingBag`` forward and backward at
#: 30 tokens (measured), slower from a few hundred tokens on, where the bag takes over.
DENSE_VOCABULARY = 256

#: Buffers of a featured table that are not one row per entity (per feature token, or
#: one value): growing the table for new users or items leaves them as they are.
NOT_ROWS = ("popularity_tokens", "popularity_numeric", "popularity_offset")


@dataclass
class FeatureOptions:
    """The config fields of a model that takes side features (a base of its config)."""

    #: 0.1, chosen on the val splits (docs/benchmarks.md): the item side's dropout costs warm
    #: full-ranking quality (0.3: HR@10 0.163, 0.1: 0.171, none: 0.179; without features
    #: 0.171) while cold items, which the popularity term now carries, lose little (NDCG@20
    #: 0.406 -> 0.390) and cold users nothing.
    id_dropout: float = option(
        0.1,
        "with user or item features: share of training rows whose id embedding is dropped, "
        "so that features alone score ids that never appeared in training (DropoutNet)",
    )
    #: Shapes of the feature tables (FeatureTable.shape()), set from the feature files.
    user_feature_shape: dict[str, int] | None = field(default=None, metadata={"cli": False})
    item_feature_shape: dict[str, int] | None = field(default=None, metadata={"cli": False})

    def check_feature_options(self) -> None:
        if not 0.0 <= self.id_dropout < 1.0:
            raise ConfigError(f"--id-dropout must be in [0, 1), got {self.id_dropout}")


class FeaturedEmbedding(nn.Embedding):
    """Id embedding + feature embedding, row for row.

    Args:
        num_embeddings, embedding_dim, padding_idx: as ``nn.Embedding``.
        shape: the feature table's ``{"tokens", "width", "numeric"}``
            (:meth:`hybridrec.features.FeatureTable.shape`).
        id_dropout: share of training rows whose id part is dropped.

    Example:
        >>> t = FeaturedEmbedding(3, 4, {"tokens": 5, "width": 2, "numeric": 1}, padding_idx=0)
        >>> t(torch.tensor([1, 2])).shape, t.vectors().shape
        (torch.Size([2, 4]), torch.Size([3, 4]))
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        shape: dict[str, int],
        padding_idx: int | None = None,
        id_dropout: float = 0.0,
    ) -> None:
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx)
        self.id_dropout = id_dropout
        self.feature_embedding = nn.EmbeddingBag(
            shape["tokens"], embedding_dim, mode="sum", padding_idx=0
        )
        numeric = shape["numeric"]
        self.numeric_projection = nn.Linear(numeric, embedding_dim, bias=False) if numeric else None
        width = shape["width"]
        self.register_buffer(
            "feature_tokens", torch.zeros(num_embeddings, width, dtype=torch.int64)
        )
        self.register_buffer("feature_weights", torch.zeros(num_embeddings, width))
        self.register_buffer("feature_numeric", torch.zeros(num_embeddings, numeric))
        # rows with training interactions; the others are their features alone
        self.register_buffer("has_id", torch.ones(num_embeddings))
        # the popularity an id-less row's features predict, on the model's score scale
        # (hybridrec.features.popularity fits it after training; zero until then)
        self.register_buffer("popularity_tokens", torch.zeros(shape["tokens"]))
        self.register_buffer("popularity_numeric", torch.zeros(numeric))
        self.register_buffer("popularity_offset", torch.zeros(()))

    def init_features(self, std: float) -> None:
        nn.init.normal_(self.feature_embedding.weight, 0.0, std)
        with torch.no_grad():
            self.feature_embedding.weight[0].zero_()
        if self.numeric_projection is not None:
            nn.init.normal_(self.numeric_projection.weight, 0.0, std)

    def set_features(self, features: EncodedFeatures, has_id: torch.Tensor | None = None) -> None:
        """Load the encoded features (and which rows have a trained id) into the buffers."""
        if features.tokens.shape != self.feature_tokens.shape:
            raise ValueError(
                f"features of shape {tuple(features.tokens.shape)} do not fit the table "
                f"({tuple(self.feature_tokens.shape)})"
            )
        self.feature_tokens.copy_(features.tokens)
        self.feature_weights.copy_(features.weights)
        self.feature_numeric.copy_(features.numeric)
        if has_id is not None:
            self.has_id.copy_(has_id.to(self.has_id.dtype))

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        """(..., D) feature part of the rows ``idx``."""
        flat = idx.reshape(-1)
        rows_now = self.feature_tokens.size(0)  # not num_embeddings: fold-in swaps buffers
        small = len(self.feature_embedding.weight) <= DENSE_VOCABULARY
        if small and rows_now <= 2 * flat.size(0) and not torch.jit.is_tracing():
            # a small table: every row's vector at once, then one gather (no sort)
            every = self._pooled(self.feature_tokens, self.feature_weights, self.feature_numeric)
            return nn.functional.embedding(flat, every).reshape(*idx.shape, -1)
        # each distinct row once: a batch repeats its users (a positive and its negatives)
        # and popular items many times, and the bag's backward sorts every token it saw
        rows, inverse = torch.unique(flat, return_inverse=True)
        out = self._pooled(
            self.feature_tokens[rows], self.feature_weights[rows], self.feature_numeric[rows]
        )
        return out[inverse].reshape(*idx.shape, -1)

    def _pooled(
        self, tokens: torch.Tensor, weights: torch.Tensor, numeric: torch.Tensor
    ) -> torch.Tensor:
        """(R, D) pooled token embeddings plus the numeric projection of R rows."""
        table = self.feature_embedding.weight
        if len(table) <= DENSE_VOCABULARY:  # rows x vocabulary weights, one matrix product
            mix = table.new_zeros(tokens.size(0), table.size(0))  # sizes traced (export)
            out = mix.scatter_add_(1, tokens, weights.to(table.dtype)) @ table
        else:
            out = self.feature_embedding(tokens, per_sample_weights=weights)
        if self.numeric_projection is not None:
            out = out + self.numeric_projection(numeric)
        return out

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        keep = self.has_id[idx]
        if self.training and self.id_dropout > 0:
            keep = keep * (torch.rand(idx.shape, device=idx.device) >= self.id_dropout)
        return super().forward(idx) * keep.unsqueeze(-1) + self.features(idx)

    def feature_popularity(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """(...,) the fitted popularity term of rows ``idx`` (every row when None): what a
        row's features predict for rows without a trained id, zero for the others and for
        the unknown row 0. It is added to an item's score outside training."""
        if idx is None:
            idx = torch.arange(self.num_embeddings, device=self.has_id.device)
        rows, inverse = torch.unique(idx.reshape(-1), return_inverse=True)
        present = (self.feature_weights[rows] > 0).to(self.popularity_tokens.dtype)
        value = (self.popularity_tokens[self.feature_tokens[rows]] * present).sum(-1)
        value = value + self.feature_numeric[rows] @ self.popularity_numeric
        value = (value + self.popularity_offset) * (1.0 - self.has_id[rows])
        value = value * (rows != 0)
        return value[inverse].reshape(idx.shape)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # artifacts saved before the popularity term existed load with it at zero
        for name in NOT_ROWS:
            if prefix + name not in state_dict:
                state_dict[prefix + name] = torch.zeros_like(getattr(self, name))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def vectors(self) -> torch.Tensor:
        """(num_embeddings, D) every row's full vector (no id dropout)."""
        ids = self.weight * self.has_id[:, None]
        return ids + self.features(torch.arange(self.num_embeddings, device=self.weight.device))


def table_vectors(table: nn.Embedding) -> torch.Tensor:
    """Every row's vector of a plain or featured table: what scoring all rows multiplies."""
    return table.vectors() if isinstance(table, FeaturedEmbedding) else table.weight


def item_popularity(table: nn.Module, idx: torch.Tensor | None = None) -> torch.Tensor | None:
    """A featured table's :meth:`FeaturedEmbedding.feature_popularity` outside training;
    None for a plain table or while training (the term is fitted after training)."""
    if not isinstance(table, FeaturedEmbedding) or table.training:
        return None
    return table.feature_popularity(idx)


def idless_rows(table: nn.Module, idx: torch.Tensor) -> torch.Tensor | None:
    """(...,) 1.0 for the rows ``idx`` of a featured table that have no trained id (known by
    their features alone), 0.0 for the others, outside training; None for a plain table or
    while training (terms for id-less rows are fitted after training)."""
    if not isinstance(table, FeaturedEmbedding) or table.training:
        return None
    return 1.0 - table.has_id[idx]


class ColdUserPopularity(nn.Module):
    """A model base for the cold-user term: with user features, a ``cold_user_item_bias``
    buffer (one value per item, fitted after training by
    :func:`hybridrec.features.popularity.fit_cold_user_popularity`) that is added to the
    scores of users without a trained id row, outside training. List
    ``("cold_user_item_bias", "items")`` in the model's ``row_tables`` so ``update`` grows it.
    """

    def init_cold_users(self, num_items: int, user_features: bool) -> None:
        if user_features:
            self.register_buffer("cold_user_item_bias", torch.zeros(num_items))

    def cold_user_bias(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """What the term adds: (B, I) for every item when ``item_idx`` is None, else the shape
        of ``item_idx`` ((B,) pairs or (B, C) groups); None when nothing is added."""
        bias = getattr(self, "cold_user_item_bias", None)
        cold = idless_rows(self.user_embedding, user_idx) if bias is not None else None
        if cold is None:
            return None
        if item_idx is None:
            return cold[:, None] * bias
        values = bias[item_idx]
        return cold.view(-1, *[1] * (values.dim() - 1)) * values

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # artifacts saved before the cold-user term existed load with it at zero
        name = prefix + "cold_user_item_bias"
        if hasattr(self, "cold_user_item_bias") and name not in state_dict:
            state_dict[name] = torch.zeros_like(self.cold_user_item_bias)
        super()._load_from_state_dict(state_dict, prefix, *args)


def rows_with_ids(table: nn.Embedding) -> torch.Tensor:
    """Indices 1.. of the rows that have a trained id (all of a plain table's), on the CPU:
    what "a typical known user" is sampled from, since an id-less row's scores carry terms of
    their own (the cold-user popularity). Every row when none has one."""
    rows = torch.arange(1, table.num_embeddings)
    has_id = getattr(table, "has_id", None)
    if has_id is not None and bool((has_id[1:] > 0).any()):
        rows = rows[has_id[1:].cpu() > 0]
    return rows


def make_table(
    num: int, dim: int, shape: dict[str, int] | None, id_dropout: float, padding_idx: int = 0
) -> nn.Embedding:
    """A plain ``nn.Embedding``, or a :class:`FeaturedEmbedding` when ``shape`` is given."""
    if shape is None:
        return nn.Embedding(num, dim, padding_idx=padding_idx)
    return FeaturedEmbedding(num, dim, shape, padding_idx=padding_idx, id_dropout=id_dropout)


__all__ = [
    "ColdUserPopularity",
    "FeatureOptions",
    "FeaturedEmbedding",
    "NOT_ROWS",
    "idless_rows",
    "item_popularity",
    "make_table",
    "rows_with_ids",
    "table_vectors",
]
