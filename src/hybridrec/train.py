"""The training loop: a plain function over a model and encoded data.

The model knows nothing of losses, optimisers, sampling or devices; ``fit`` owns the
optimiser and the loop, and the model's objective (:mod:`hybridrec.objectives`) owns each
epoch's batches and the loss. The loop avoids the per-batch overheads that dominate small
models on CPU: no ``DataLoader`` (each epoch's rows are gathered once in shuffled order and
sliced), fused Adam, and no host synchronisation per step.

Pointwise models (the default objective) have two regimes, chosen from the data:

- **labelled** rows (the file has 0 and 1 targets): pointwise BCE on the rows as they are;
- **positives only** (implicit feedback): each epoch draws ``negatives`` fresh negatives per
  positive (:class:`~hybridrec.data.sampling.NegativeSampler`) for BCE, or scores each
  positive against a sampled negative for BPR. ``--loss bpr`` always uses this regime, with
  the positive rows of labelled data.

Sequence models (``sasrec``) learn next-item prediction along each user's history instead.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from hybridrec.config import TrainConfig
from hybridrec.data.dataset import RecSysDataset
from hybridrec.errors import ConfigError, TrainingDivergedError
from hybridrec.evaluate import evaluate_pointwise
from hybridrec.models import model_device
from hybridrec.objectives import Objective, make_objective

logger = logging.getLogger(__name__)

#: Batches between progress-bar updates (each update syncs the device once).
PROGRESS_EVERY = 20
#: Validation metrics where smaller is better; every other one is maximised.
LOWER_IS_BETTER = {"loss"}


@dataclass
class EpochStats:
    """What one epoch did: training loss/accuracy/throughput and validation metrics.

    ``val_loss``/``val_accuracy``/``val_auc`` are pointwise metrics on labelled validation
    rows; ``ranking`` holds full-ranking metrics (``hr@10``, ``ndcg@10``, ...) of the
    validation positives against every item the user did not interact with in training.
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    samples_per_second: float
    seconds: float
    val_loss: float | None = None
    val_accuracy: float | None = None
    val_auc: float | None = None
    ranking: dict[str, float] | None = None

    def metric(self, name: str) -> float | None:
        """A validation metric by name; ranking metrics win over pointwise ones (``auc``)."""
        if (
            self.ranking
            and name in self.ranking
            and not (name == "auc" and self.val_auc is not None)
        ):
            return self.ranking[name]
        return {"loss": self.val_loss, "accuracy": self.val_accuracy, "auc": self.val_auc}.get(name)


@dataclass
class History:
    """Per-epoch statistics of a training run, in order, and the epoch whose weights were kept."""

    epochs: list[EpochStats] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    @property
    def last(self) -> EpochStats:
        return self.epochs[-1]

    @property
    def best(self) -> EpochStats:
        """The epoch whose weights the model holds (the last one without early stopping)."""
        if self.best_epoch is None:
            return self.last
        return next(e for e in self.epochs if e.epoch == self.best_epoch)

    def to_list(self) -> list[dict[str, object]]:
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
    """Train ``model`` in place with Adam, validating after every epoch.

    Args:
        model: any registered model (``forward(user_idx, item_idx) -> logits``).
        train: the training rows; moved to ``device`` once for the whole run.
        val: validation rows, or ``None``. Labelled rows (0 and 1) get loss/accuracy/AUC;
            positive rows get full-ranking metrics at ``config.ks``.
        config: optimisation settings; ``config.seed`` fixes shuffling, sampling and dropout.
        device: where to train (default: the model's current device).
        show_progress: show a tqdm bar with running loss, accuracy and samples/s.
        on_epoch_end: called as ``on_epoch_end(stats, history)`` after each epoch.

    Returns:
        The :class:`History`. With early stopping (``config.early_stop``, by default on
        whenever there is validation data) the model ends holding the weights of
        ``history.best_epoch``.

    Raises:
        TrainingDivergedError: the loss became NaN or infinite.
    """
    if len(train) == 0:
        raise ValueError("the training data has no rows")
    early_stop = resolve_early_stop(config, val)
    if early_stop is not None and (val is None or len(val) == 0):
        raise ConfigError(
            f"--early-stop {config.early_stop} needs validation data: pass --val "
            "(e.g. the val.csv of `hybridrec split`)"
        )
    device = device or model_device(model)
    model.to(device)
    prepare = getattr(model, "prepare", None)
    if prepare is not None:  # statistics-based models (popularity) read the data here
        on_device = train.to(device)
        prepare(
            on_device.user_idx, on_device.item_idx, on_device.target, timestamp=on_device.timestamp
        )
    history = History()
    validator = _Validator(model, train, val, config)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:  # nothing to learn: report validation once
        stats = EpochStats(0, math.nan, math.nan, 0.0, 0.0)
        validator(stats)
        history.epochs.append(stats)
        if on_epoch_end is not None:
            on_epoch_end(stats, history)
        model.eval()
        return history

    generator = torch.Generator().manual_seed(config.seed)
    objective = make_objective(model, train, config, device)
    optimizer = torch.optim.Adam(
        params,
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        **_fast_adam_options(device),
    )
    best_value, best_state, waited = None, None, 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        start = time.perf_counter()
        batches = objective.batches(generator)
        num_batches = _num_batches(objective, config)
        bar = tqdm(
            total=num_batches,
            desc=f"epoch {epoch}/{config.epochs}",
            unit="batch",
            disable=not show_progress,
            leave=False,
        )
        for step, batch in enumerate(batches, 1):
            loss, hits, n = objective.step(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += n
            loss_sum += loss.detach() * n
            correct += hits
            if step % PROGRESS_EVERY == 0 or step >= num_batches:
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
        validator(stats)
        history.epochs.append(stats)
        logger.info(_describe(stats, config.epochs))
        stop = False
        if early_stop is not None:
            value = stats.metric(early_stop)
            if value is None or math.isnan(value):
                raise ConfigError(
                    f"--early-stop {early_stop} needs validation data that provides it"
                )
            if _improved(value, best_value, early_stop):
                best_value, waited = value, 0
                history.best_epoch = epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
                stop = waited >= config.patience
        if on_epoch_end is not None:
            on_epoch_end(stats, history)
        if stop:
            history.stopped_early = True
            logger.info(
                f"early stopping: no better {early_stop} for {config.patience} epochs; "
                f"keeping epoch {history.best_epoch}"
            )
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


class _Validator:
    """Fills an epoch's validation metrics: pointwise on labelled rows, ranking on positives."""

    def __init__(
        self, model: nn.Module, train: RecSysDataset, val: RecSysDataset | None, config: TrainConfig
    ) -> None:
        self.model, self.train, self.val, self.config = model, train, val, config
        self.labelled = val is not None and bool((val.target < 0.5).any())
        self.positives = None
        if val is not None and bool((val.target > 0.5).any()):
            keep = val.target > 0.5
            self.positives = (val.user_idx[keep], val.item_idx[keep])

    def __call__(self, stats: EpochStats) -> None:
        from hybridrec.ranking import evaluate_full

        if self.val is None or len(self.val) == 0:
            return
        if self.labelled:
            metrics = evaluate_pointwise(self.model, self.val, self.config.eval_batch_size)
            stats.val_loss = metrics["loss"]
            stats.val_accuracy = metrics["accuracy"]
            stats.val_auc = metrics["auc"]
        if self.positives is not None:
            stats.ranking = evaluate_full(
                self.model,
                self.train.user_idx,
                self.train.item_idx,
                self.positives[0],
                self.positives[1],
                num_items=self.model.config.num_items,  # type: ignore[union-attr]
                ks=self.config.ks,
            )


def _num_batches(objective: Objective, config: TrainConfig) -> int:
    """Batches per epoch for the progress bar (objectives may batch by something else)."""
    per_batch = getattr(objective, "per_batch", None)
    if per_batch is not None:  # batches of whole histories
        return math.ceil(len(objective.histories) / per_batch)  # type: ignore[attr-defined]
    return math.ceil(objective.num_samples / config.batch_size)


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
    if stats.ranking:
        shown = [k for k in stats.ranking if k.startswith(("hr@", "ndcg@"))]
        text += " | " + " ".join(f"{k} {stats.ranking[k]:.4f}" for k in shown)
    return text
