"""Validation after each epoch, and the early-stopping decision it feeds.

Validation is bounded whatever the data size (:class:`Validator`); early stopping keeps the
weights of the best epoch by a validation metric (:class:`EarlyStopping`).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

from hybridrec.config import TrainConfig
from hybridrec.data.dataset import RecSysDataset
from hybridrec.errors import ConfigError
from hybridrec.evaluation import evaluate_pointwise
from hybridrec.training.history import EpochStats, History

logger = logging.getLogger(__name__)

#: Validation metrics where smaller is better; every other one is maximised.
LOWER_IS_BETTER = {"loss"}


#: Validation scores at most this many (user, item) pairs per epoch with the full protocol.
VAL_PAIRS = 1 << 25
#: Fewer users than this under the pair budget: rank against sampled items instead.
VAL_MIN_FULL_USERS = 1000
#: Users and fixed sampled candidates per user of the sampled fallback.
VAL_SAMPLED_USERS, VAL_SAMPLED_ITEMS = 5000, 1000


class Validator:
    """Fills an epoch's validation metrics: pointwise on labelled rows, ranking on positives.

    Ranking every item for every validation user costs ``users x items`` model scores per
    epoch (3.7 billion at MovieLens-20M's shape), so validation is bounded: all users when
    they fit :data:`VAL_PAIRS`, else a fixed random sample of users that does (at least
    :data:`VAL_MIN_FULL_USERS`), else (very large catalogues) :data:`VAL_SAMPLED_USERS`
    users ranked against :data:`VAL_SAMPLED_ITEMS` fixed sampled items each. The sample is
    drawn once, so epochs are compared on the same users and candidates.
    """

    def __init__(
        self, model: nn.Module, train: RecSysDataset, val: RecSysDataset | None, config: TrainConfig
    ) -> None:
        self.model, self.train, self.val, self.config = model, train, val, config
        self.labelled = val is not None and bool((val.target < 0.5).any())
        self.positives = None
        self.candidates = None
        if val is not None and bool((val.target > 0.5).any()):
            keep = val.target > 0.5
            self._bound(val.user_idx[keep], val.item_idx[keep])

    def _bound(self, users: torch.Tensor, items: torch.Tensor) -> None:
        """Choose the validation users (and candidates) once, within the budget."""
        num_items = self.model.config.num_items  # type: ignore[union-attr]
        distinct = torch.unique(users)
        train_u, train_i = self.train.user_idx, self.train.item_idx
        if len(distinct) * num_items <= VAL_PAIRS:
            self.positives, self.known = (users, items), (train_u, train_i)
            return
        generator = torch.Generator().manual_seed(self.config.seed)
        shuffled = distinct[torch.randperm(len(distinct), generator=generator)]
        full_users = VAL_PAIRS // num_items
        chosen = shuffled[: max(full_users, 1) if full_users >= VAL_MIN_FULL_USERS else
                          VAL_SAMPLED_USERS]  # fmt: skip
        keep = torch.isin(users, chosen)
        self.positives = (users[keep], items[keep])
        mine = torch.isin(train_u, chosen)
        self.known = (train_u[mine], train_i[mine])
        if full_users >= VAL_MIN_FULL_USERS:
            logger.info(f"validating on {len(chosen):,} of {len(distinct):,} users (full ranking)")
            return
        from hybridrec.data.sampling import NegativeSampler

        seen_u = torch.cat([self.known[0], self.positives[0]])
        seen_i = torch.cat([self.known[1], self.positives[1]])
        sampler = NegativeSampler(seen_u, seen_i, num_items)
        negatives = sampler.sample(chosen, VAL_SAMPLED_ITEMS, generator)
        self.candidates = (chosen.repeat_interleave(VAL_SAMPLED_ITEMS), negatives.flatten())
        logger.info(
            f"validating on {len(chosen):,} of {len(distinct):,} users, each held-out item "
            f"against {VAL_SAMPLED_ITEMS} sampled items ({num_items - 1:,} would cost too much)"
        )

    def __call__(self, stats: EpochStats) -> None:
        from hybridrec.evaluation import evaluate_full, evaluate_sampled

        if self.val is None or len(self.val) == 0:
            return
        if self.labelled:
            metrics = evaluate_pointwise(self.model, self.val, self.config.eval_batch_size)
            stats.val_loss = metrics["loss"]
            stats.val_accuracy = metrics["accuracy"]
            stats.val_auc = metrics["auc"]
        if self.positives is None:
            return
        num_items = self.model.config.num_items  # type: ignore[union-attr]
        args = (self.model, *self.known, *self.positives)
        if self.candidates is None:
            stats.ranking = evaluate_full(*args, num_items=num_items, ks=self.config.ks)
        else:
            stats.ranking = evaluate_sampled(
                *args, num_items=num_items, ks=self.config.ks, candidates=self.candidates
            )


def resolve_early_stop(config: TrainConfig, val: RecSysDataset | None) -> str | None:
    """The metric early stopping watches: ``auto`` picks one that fits the validation data.

    ``auto`` means: no validation data, no early stopping; 0/1-labelled validation rows,
    their loss; positives-only validation rows, full-ranking NDCG at the first ``--k``.
    """
    if config.early_stop != "auto":
        return config.early_stop
    if val is None or len(val) == 0:
        return None
    if bool((val.target < 0.5).any()):
        return "loss"
    return f"ndcg@{config.ks[0]}"


def _improved(value: float, best: float | None, metric: str) -> bool:
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


@dataclass
class EarlyStopping:
    """Best validation value so far, its epoch's weights and the epochs since (rank 0)."""

    metric: str | None
    patience: int
    best_value: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    waited: int = 0

    def update(self, stats: EpochStats, model: nn.Module, history: History) -> bool:
        """Record ``stats``; True when training should stop now."""
        if self.metric is None:
            return False
        value = stats.metric(self.metric)
        if value is None or math.isnan(value):
            raise ConfigError(f"--early-stop {self.metric} needs validation data that provides it")
        if _improved(value, self.best_value, self.metric):
            self.best_value, self.waited = value, 0
            history.best_epoch = stats.epoch
            self.best_state = copy.deepcopy(model.state_dict())
            return False
        self.waited += 1
        return self.waited >= self.patience
