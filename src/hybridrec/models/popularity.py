"""Item popularity: the no-learning baseline every result is shown beside."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hybridrec.data.popularity import item_counts
from hybridrec.errors import ConfigError
from hybridrec.models.base import RecModel


@dataclass
class PopularityConfig:
    """Only the table sizes: popularity has no hyper-parameters."""

    num_users: int = field(default=1, metadata={"cli": False})
    num_items: int = field(default=1, metadata={"cli": False})

    def __post_init__(self) -> None:
        if self.num_users < 1 or self.num_items < 1:
            raise ConfigError("num_users and num_items must be >= 1")


class Popularity(RecModel):
    """Scores an item by log(1 + its positive count in training), the same for every user.

    It learns nothing: :meth:`prepare` counts the training positives. The counts are a
    buffer, so they are saved and reloaded with the artifact like any weights.

    Example:
        >>> model = Popularity(PopularityConfig(num_users=2, num_items=3))
        >>> model.prepare(torch.tensor([1, 1, 1]), torch.tensor([2, 2, 1]), torch.ones(3))
        >>> model.score_all(torch.tensor([1])).argmax().item()
        2
    """

    config_class = PopularityConfig
    #: No per-user tables: every user gets the same scores.
    user_parameters = ()
    row_tables = (("item_counts", "items"),)  # an update adds the new positives' counts
    reads_training_data = True  # counts the positives
    trainable = False

    def __init__(self, config: PopularityConfig) -> None:
        super().__init__(config)
        self.register_buffer("item_counts", torch.zeros(config.num_items))

    def prepare(
        self,
        user_idx: torch.Tensor,
        item_idx: torch.Tensor,
        target: torch.Tensor,
        timestamp: torch.Tensor | None = None,
    ) -> None:
        """Count each item's positives in the training rows."""
        counts = item_counts(item_idx, self.config.num_items, target=target)
        self.item_counts.copy_(counts.float())

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return torch.log1p(self.item_counts[item_idx])

    def score_all(self, user_idx: torch.Tensor) -> torch.Tensor:
        return torch.log1p(self.item_counts).expand(len(user_idx), -1)
