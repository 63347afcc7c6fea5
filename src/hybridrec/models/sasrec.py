"""SASRec: causal self-attention over each user's ordered history (Kang & McAuley, 2018).

A user is represented not by a learned embedding but by the sequence of items they interacted
with: the transformer's output at the last position is the user's state, and an item's score
is its dot product with that state. A new user is therefore just a new sequence: no
retraining, no fitted vector (see :meth:`SASRec.score_sequences`).

The training histories are a buffer filled by :meth:`SASRec.prepare`, so they are saved and
reloaded with the artifact like any weights and ``forward``/``score_all`` keep the registry's
``(user_idx, ...)`` contract. Training is next-item prediction at every position of every
history; ``hybridrec.training`` runs it (``objective = "next_item"``), the model only encodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from hybridrec.config import check_depth, check_finite, option
from hybridrec.data.encoding import UNKNOWN_INDEX
from hybridrec.data.sequences import append_items, pack_histories
from hybridrec.errors import ConfigError
from hybridrec.models.base import RecModel

#: Histories encoded per transformer call: bounds the (users, L, L) attention memory.
STATE_CHUNK = 256


@dataclass
class SASRecConfig:
    """Hyper-parameters of :class:`SASRec` (``num_users``/``num_items`` come from the data)."""

    num_users: int = field(default=1, metadata={"cli": False})
    num_items: int = field(default=1, metadata={"cli": False})
    hidden_dim: int = option(96, "size of item embeddings and of the transformer's states")
    max_len: int = option(200, "most recent items of a history the model reads")
    num_blocks: int = option(2, "transformer blocks")
    num_heads: int = option(1, "attention heads per block (must divide --hidden-dim)")
    dropout: float = option(0.5, "dropout on embeddings, attention and feed-forward layers")

    def __post_init__(self) -> None:
        check_finite(self)
        if self.num_users < 1 or self.num_items < 1:
            raise ConfigError(
                f"num_users and num_items must be >= 1, got {self.num_users}, {self.num_items}"
            )
        for name in ("hidden_dim", "max_len", "num_blocks", "num_heads"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be >= 1, got {getattr(self, name)}")
        check_depth(self.num_blocks, "--num-blocks")
        if self.hidden_dim % self.num_heads:
            raise ConfigError(
                f"--num-heads ({self.num_heads}) must divide --hidden-dim ({self.hidden_dim})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")


class SASRec(RecModel):
    """Score = <last transformer state of the user's history, item embedding>.

    Example:
        >>> model = SASRec(SASRecConfig(num_users=3, num_items=5, hidden_dim=8, max_len=4))
        >>> model.prepare(torch.tensor([1, 1, 2]), torch.tensor([3, 4, 2]), torch.ones(3))
        >>> model.score_all(torch.tensor([1, 2])).shape
        torch.Size([2, 5])
        >>> model.score_sequences(torch.tensor([[0, 0, 3, 4]])).shape
        torch.Size([1, 5])
    """

    config_class = SASRecConfig
    #: No per-user tables: a user is their history, so a new user needs no fitted vector.
    user_parameters = ()
    row_tables = (("histories", "users"), ("item_embedding", "items"))
    sequences = True
    reads_training_data = True  # stores the histories
    similar_items = True
    #: How ``hybridrec.training.fit`` trains it: next-item prediction along each history.
    objective = "next_item"
    #: ``--loss auto``: softmax over the catalogue (best on val/ of the ML-100K benchmark).
    default_loss = "ce"
    #: Early stopping waits 6 epochs: next-item training can stall on the validation metric
    #: for several epochs before it rises again. On ML-100K's val split (automatic holdout,
    #: seeds 0, 1, 2) patience 3 kept epochs 9, 18, 10 (sampled HR@10 0.760, full 0.199 on
    #: the mean), patience 6 epochs 19, 18, 17 (0.776, 0.220).
    default_patience = 6
    #: ... and needs more passes than the pointwise models: with at most 20 epochs the
    #: holdout kept epochs 19, 18, 17 of seeds 0, 1, 2 on ML-100K's val split (full/sampled
    #: HR@10 0.220/0.776), with at most 40 it kept 19, 23, 40 (0.226/0.785).
    default_epochs = 40

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__(config)
        dim = config.hidden_dim
        self.item_embedding = nn.Embedding(config.num_items, dim, padding_idx=UNKNOWN_INDEX)
        # learned positions, counted from the right: the latest item always has the last row
        self.positions = nn.Parameter(torch.empty(config.max_len, dim))
        self.dropout = nn.Dropout(config.dropout)
        block = nn.TransformerEncoderLayer(
            d_model=dim,
            nhead=config.num_heads,
            dim_feedforward=dim,
            dropout=config.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            block, config.num_blocks, norm=nn.LayerNorm(dim), enable_nested_tensor=False
        )
        # Each user's latest max_len training items; filled by prepare().
        self.register_buffer(
            "histories", torch.zeros(config.num_users, config.max_len, dtype=torch.int64)
        )
        nn.init.normal_(self.item_embedding.weight, std=dim**-0.5)
        nn.init.normal_(self.positions, std=dim**-0.5)
        with torch.no_grad():
            self.item_embedding.weight[UNKNOWN_INDEX].zero_()

    def prepare(
        self,
        user_idx: torch.Tensor,
        item_idx: torch.Tensor,
        target: torch.Tensor,
        timestamp: torch.Tensor | None = None,
    ) -> None:
        """Store each user's positive training items in time order (file order without
        timestamps): the histories ``score_all`` reads."""
        positive = target > 0.5
        packed = pack_histories(
            user_idx[positive],
            item_idx[positive],
            self.config.num_users,
            self.config.max_len,
            None if timestamp is None else timestamp[positive],
        )
        self.histories.copy_(packed)

    def encode(self, sequences: torch.Tensor) -> torch.Tensor:
        """States (B, L, D) for left-padded item sequences (B, L), L <= max_len.

        Position ``t`` sees items ``0..t`` only. Padding is masked as a key; a padded
        position still attends to itself, so no softmax row is empty (no NaN).
        """
        length = sequences.shape[1]
        if length > self.config.max_len:
            sequences, length = sequences[:, -self.config.max_len :], self.config.max_len
        real = sequences != UNKNOWN_INDEX  # (B, L)
        x = self.item_embedding(sequences) * math.sqrt(self.config.hidden_dim)
        x = self.dropout(x + self.positions[-length:]) * real.unsqueeze(-1)
        # blocked[b, t, s]: position t may not attend to s (s in the future, or padding)
        eye = torch.eye(length, dtype=torch.bool, device=sequences.device)
        future = torch.ones(length, length, dtype=torch.bool, device=sequences.device).triu(1)
        blocked = future | (~real.unsqueeze(1) & ~eye)  # (B, L, L)
        mask = blocked.repeat_interleave(self.config.num_heads, dim=0)
        states = self.encoder(x, mask=mask)
        return states * real.unsqueeze(-1)

    def user_state(self, sequences: torch.Tensor) -> torch.Tensor:
        """The state (B, D) after each sequence's latest item, ``STATE_CHUNK`` rows at a time."""
        if not _exporting() and len(sequences) == 0:  # attention refuses an empty batch
            return self.item_embedding.weight.new_zeros((0, self.config.hidden_dim))
        if _exporting() or len(sequences) <= STATE_CHUNK:
            return self.encode(sequences)[:, -1]
        return torch.cat(
            [
                self.encode(sequences[start : start + STATE_CHUNK])[:, -1]
                for start in range(0, len(sequences), STATE_CHUNK)
            ]
        )

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Logits (B,) of ``item_idx[b]`` coming next in user ``user_idx[b]``'s history.

        Each distinct user's history is encoded once: callers score many pairs per user
        (the sampled protocol sends 101 per user), and attention costs ``max_len**2`` per
        history. Export traces the plain path (``torch.unique`` has a data-dependent size).
        """
        if _exporting():
            states = self.user_state(self.histories[user_idx])
        else:
            users, inverse = torch.unique(user_idx, return_inverse=True)
            states = self.user_state(self.histories[users])[inverse]
        return (states * self.item_embedding(item_idx)).sum(-1)

    def score_all(self, user_idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_items) of every item for each user: one matrix product."""
        return self.score_sequences(self.histories[user_idx])

    def score_sequences(
        self, sequences: torch.Tensor, user_idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, num_items) for left-padded item sequences (B, n).

        With ``user_idx``, each sequence is appended to that user's training history first
        (a known user with new interactions); otherwise it is the whole history (a new user).
        """
        if user_idx is not None:
            sequences = append_items(self.histories[user_idx], sequences)
        return self.user_state(sequences) @ self.item_embedding.weight.T


def _exporting() -> bool:
    """Tracing or exporting: no branches on tensor sizes (they would freeze the batch size)."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting()
