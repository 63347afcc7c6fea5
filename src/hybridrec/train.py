"""The training loop: a plain function over a model and encoded data.

The model knows nothing of losses, optimisers or devices; ``fit`` owns all of them. The loop
avoids per-batch overheads that dominate small models on CPU: no ``DataLoader`` (the data is
shuffled once per epoch and sliced), fused Adam, and no host synchronisation per step.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from hybridrec.config import TrainConfig
from hybridrec.data.dataset import RecSysDataset, iterate_batches
from hybridrec.errors import TrainingDivergedError
from hybridrec.evaluate import evaluate_pointwise

logger = logging.getLogger(__name__)

#: Batches between progress-bar updates (each update syncs the device once).
PROGRESS_EVERY = 20


@dataclass
class EpochStats:
    """What one epoch did: training loss/accuracy/throughput and validation metrics."""

    epoch: int
    train_loss: float
    train_accuracy: float
    samples_per_second: float
    seconds: float
    val_loss: float | None = None
    val_accuracy: float | None = None
    val_auc: float | None = None


@dataclass
class History:
    """Per-epoch statistics of a training run, in order."""

    epochs: list[EpochStats] = field(default_factory=list)

    @property
    def last(self) -> EpochStats:
        return self.epochs[-1]

    def to_list(self) -> list[dict[str, float | int | None]]:
        return [asdict(e) for e in self.epochs]


def fit(
    model: nn.Module,
    train: RecSysDataset,
    val: RecSysDataset | None,
    config: TrainConfig,
    *,
    device: torch.device | None = None,
    show_progress: bool = True,
    on_epoch_end: Callable[[EpochStats, History], None] | None = None,
) -> History:
    """Train ``model`` in place with BCE-with-logits and Adam, validating after every epoch.

    Args:
        model: any registered model (``forward(user_idx, item_idx) -> logits``).
        train: the training rows; moved to ``device`` once for the whole run.
        val: rows for validation loss/accuracy/AUC after each epoch, or ``None``.
        config: optimisation settings; ``config.seed`` fixes shuffling and dropout.
        device: where to train (default: the model's current device).
        show_progress: show a tqdm bar with running loss, accuracy and samples/s.
        on_epoch_end: called as ``on_epoch_end(stats, history)`` after each epoch.

    Raises:
        TrainingDivergedError: the loss became NaN or infinite.
    """
    if len(train) == 0:
        raise ValueError("the training data has no rows")
    device = device or next(model.parameters()).device
    model.to(device)
    data = train.to(device)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        **_fast_adam_options(device),
    )
    history = History()
    num_batches = math.ceil(len(data) / config.batch_size)
    for epoch in range(1, config.epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        start = time.perf_counter()
        bar = tqdm(
            total=num_batches,
            desc=f"epoch {epoch}/{config.epochs}",
            unit="batch",
            disable=not show_progress,
            leave=False,
        )
        for step, batch in enumerate(
            iterate_batches(data, config.batch_size, shuffle=True, generator=generator), 1
        ):
            logits = model(batch.user_idx, batch.item_idx)
            loss = F.binary_cross_entropy_with_logits(logits, batch.target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = len(batch.target)
            seen += n
            loss_sum += loss.detach() * n
            correct += ((logits.detach() > 0) == (batch.target > 0.5)).sum()
            if step % PROGRESS_EVERY == 0 or step == num_batches:
                running = loss_sum.item() / seen
                _check_finite(running, epoch, config)
                bar.update(step - bar.n)
                bar.set_postfix(
                    loss=f"{running:.4f}",
                    acc=f"{correct.item() / seen:.4f}",
                    samples_s=f"{seen / (time.perf_counter() - start):,.0f}",
                    refresh=False,
                )
        bar.close()
        seconds = time.perf_counter() - start
        train_loss = loss_sum.item() / seen
        _check_finite(train_loss, epoch, config)
        stats = EpochStats(
            epoch=epoch,
            train_loss=train_loss,
            train_accuracy=correct.item() / seen,
            samples_per_second=seen / seconds,
            seconds=seconds,
        )
        if val is not None and len(val) > 0:
            metrics = evaluate_pointwise(model, val, config.eval_batch_size)
            stats.val_loss = metrics["loss"]
            stats.val_accuracy = metrics["accuracy"]
            stats.val_auc = metrics["auc"]
        history.epochs.append(stats)
        logger.info(_describe(stats, config.epochs))
        if on_epoch_end is not None:
            on_epoch_end(stats, history)
    model.eval()
    return history


def _fast_adam_options(device: torch.device) -> dict[str, bool]:
    """Fused Adam (one kernel for all parameters) where PyTorch supports it on ``device``."""
    if device.type in {"cpu", "cuda"}:
        return {"fused": True}
    return {}


def _check_finite(loss: float, epoch: int, config: TrainConfig) -> None:
    if not math.isfinite(loss):
        raise TrainingDivergedError(
            f"the training loss became {loss} in epoch {epoch}, so the weights are no longer "
            f"meaningful and nothing was saved. Lower the learning rate (now --lr "
            f"{config.learning_rate:g}; try {config.learning_rate / 10:g}) or check the data."
        )


def _describe(stats: EpochStats, epochs: int) -> str:
    text = (
        f"epoch {stats.epoch}/{epochs}: loss {stats.train_loss:.4f} "
        f"acc {stats.train_accuracy:.4f} ({stats.samples_per_second:,.0f} samples/s)"
    )
    if stats.val_loss is not None:
        text += (
            f" | val loss {stats.val_loss:.4f} acc {stats.val_accuracy:.4f} auc {stats.val_auc:.4f}"
        )
    return text
