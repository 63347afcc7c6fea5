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

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from hybridrec import distributed
from hybridrec.config import TrainConfig
from hybridrec.data.dataset import RecSysDataset
from hybridrec.errors import ConfigError, HybridRecError, TrainingDivergedError
from hybridrec.models import capabilities, model_device
from hybridrec.objectives import Objective, make_objective
from hybridrec.runtime import resolve_device
from hybridrec.training.average import WeightAverage
from hybridrec.training.history import EpochStats, History
from hybridrec.training.optim import Optimizers
from hybridrec.training.scale import with_data_defaults
from hybridrec.training.state import RunState
from hybridrec.training.steps import mixed_precision, sparse_tables, step_function
from hybridrec.training.validation import EarlyStopping, Validator, resolve_early_stop

logger = logging.getLogger(__name__)

#: Batches between progress-bar updates (each update syncs the device once).
PROGRESS_EVERY = 20
#: Rank 0's end-of-epoch decision, broadcast to the other ranks.
_CONTINUE, _STOP, _FAILED = 0, 1, 2


def fit(
    model: nn.Module,
    train: RecSysDataset,
    val: RecSysDataset | None,
    config: TrainConfig,
    *,
    device: torch.device | None = None,
    show_progress: bool = True,
    on_epoch_end: Callable[[EpochStats, History], None] | None = None,
    checkpoint_dir: str | Path | None = None,
    moments: dict[str, torch.Tensor] | None = None,
    data_key: str | None = None,
) -> History:
    """Train ``model`` in place with Adam, validating after every epoch.

    Args:
        model: any registered model (``forward(user_idx, item_idx) -> logits``).
        train: the training rows; moved to ``device`` once for the whole run.
        val: validation rows, or ``None``. Labelled rows (0 and 1) get loss/accuracy/AUC;
            positive rows get full-ranking metrics at ``config.ks``.
        config: optimisation settings; ``config.seed`` fixes shuffling, sampling and dropout.
            ``config.checkpoint_every``/``config.resume`` write and read checkpoints.
        device: where to train (default: :func:`training_device`).
        show_progress: show a tqdm bar with running loss, accuracy and samples/s.
        on_epoch_end: called as ``on_epoch_end(stats, history)`` after each epoch (on rank
            0 only when training with several processes).
        checkpoint_dir: where ``checkpoint.pt`` goes when ``config.checkpoint_dir`` is unset.
        moments: Adam's state by parameter name
            (:meth:`~hybridrec.training.optim.Optimizers.export_moments`) to start from,
            replaced in place by the state training ends with: what an artifact keeps so
            that ``hybridrec update`` continues the optimisation. ``None``: not kept.
        data_key: the data's digest (checkpoint.run_key); a resume on other data is refused.

    With a ``torch.distributed`` process group (``torchrun``; see
    :mod:`hybridrec.distributed`) every rank trains on its shard of each epoch under
    DistributedDataParallel; the epoch's loss and accuracy are summed over ranks; rank 0
    alone validates, decides early stopping (sent to the others) and ends up with the kept
    weights; all ranks return.

    Returns:
        The :class:`History`. With early stopping (``config.early_stop``, by default on
        whenever there is validation data) the model ends holding the weights of
        ``history.best_epoch``.

    Raises:
        TrainingDivergedError: the loss became NaN or infinite.
        CheckpointError: ``config.resume`` names a missing or damaged checkpoint.
    """
    config = with_data_defaults(model, train, with_model_defaults(model, config))
    early_stop = _check_options(train, val, config, checkpoint_dir)
    checkpoint_dir = config.checkpoint_dir or checkpoint_dir
    device = device or training_device(model, config)
    model.to(device)
    _prepare(model, train, device)
    validator = Validator(model, train, val, config)
    params = [p for p in model.parameters() if p.requires_grad]
    if not (params and capabilities(model).trainable):  # nothing to learn: validate once
        return _validate_only(model, validator, on_epoch_end)
    generator, sample_generator = _generators(config.seed)
    objective = make_objective(model, train, config, device)
    tables = sparse_tables(model, objective, config, device, distributed.world_size())
    autocast, scaler = mixed_precision(config.amp, device)
    run = RunState(
        model=model,
        config=config,
        device=device,
        optimizer=Optimizers(params, tables, config, device),
        scaler=scaler,
        generator=generator,
        sample_generator=sample_generator,
        stopper=EarlyStopping(early_stop, patience_of(model, config)),
        history=History(),
        average=WeightAverage(params, config.ema_decay) if config.ema_decay > 0 else None,
        data_key=data_key,
    )
    # Subnormal floats (weights or moments decayed towards zero, e.g. feature tokens that
    # only weight decay moves) take a slow path in every CPU product: on ML-100K with side
    # features epochs went from 3.4 s to 23 s after the fourth. Flushing them to zero
    # changes nothing a model can notice (they are below 1e-38); the process-wide switch
    # is turned back off (PyTorch's default) when training ends.
    names = {id(p): name for name, p in model.named_parameters()}
    if moments:
        run.optimizer.import_moments(names, moments)
    torch.set_flush_denormal(True)
    try:
        loop = _Loop(run, objective, validator, autocast, show_progress, on_epoch_end)
        history = loop.run(checkpoint_dir)
        if moments is not None:
            moments.clear()
            moments.update(run.optimizer.export_moments(names))
        return history
    finally:
        torch.set_flush_denormal(False)
        for table in tables:  # sparse gradients are a training setting, not the model's
            table.sparse = False
        model.zero_grad(set_to_none=True)  # the last step's gradients are of no further use


def _generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """``(shuffling, sampling)`` generators. The shuffling one is the same on every rank
    (same permutation, then sharded); negatives, dropout and sequence negatives use
    rank-distinct seeds (with one process, the shuffling generator itself)."""
    generator = torch.Generator().manual_seed(seed)
    if distributed.world_size() == 1:
        return generator, generator
    rank_seed = distributed.rank_seed(seed, distributed.rank())
    torch.manual_seed(rank_seed)
    return generator, torch.Generator().manual_seed(rank_seed)


def _check_options(
    train: RecSysDataset,
    val: RecSysDataset | None,
    config: TrainConfig,
    checkpoint_dir: str | Path | None,
) -> str | None:
    """The early-stopping metric, once the options are known to fit the data."""
    if len(train) == 0:
        raise ValueError("the training data has no rows")
    early_stop = resolve_early_stop(config, val)
    if early_stop is not None and (val is None or len(val) == 0):
        raise ConfigError(
            f"--early-stop {config.early_stop} needs validation data: pass --val "
            "(e.g. the val.csv of `hybridrec split`)"
        )
    if config.checkpoint_every and (config.checkpoint_dir or checkpoint_dir) is None:
        raise ConfigError("--checkpoint-every needs a folder: pass --out or --checkpoint-dir")
    return early_stop


def training_device(model: nn.Module, config: TrainConfig) -> torch.device:
    """``config.device`` resolved, or for ``"auto"`` where ``model`` already is: a caller
    who placed the model has chosen, and an explicit ``TrainConfig(device=...)`` must not
    be ignored (a benchmark that set only the config once trained on a GPU machine's CPU
    and reported it as the GPU's speed)."""
    if config.device == "auto":
        return model_device(model)
    return resolve_device(config.device)


def _prepare(model: nn.Module, train: RecSysDataset, device: torch.device) -> None:
    """Models that declare it (popularity, sasrec) read the training data before any epoch."""
    if capabilities(model).reads_training_data:
        data = train.to(device)
        model.prepare(data.user_idx, data.item_idx, data.target, timestamp=data.timestamp)


def _validate_only(
    model: nn.Module,
    validator: Validator,
    on_epoch_end: Callable[[EpochStats, History], None] | None,
) -> History:
    """A model with nothing to learn: one epoch-0 entry with its validation metrics."""
    history, main = History(), distributed.is_main()
    stats = EpochStats(0, math.nan, math.nan, 0.0, 0.0)
    if main:
        validator(stats)
    history.epochs.append(stats)
    if on_epoch_end is not None and main:
        on_epoch_end(stats, history)
    model.eval()
    return history


@dataclass
class _Loop:
    """The epochs of :func:`fit` over a :class:`RunState`: train, validate, decide, save."""

    state: RunState
    objective: Objective
    validator: Validator
    autocast: Callable[[], Any]
    show_progress: bool
    on_epoch_end: Callable[[EpochStats, History], None] | None

    def run(self, checkpoint_dir: str | Path | None) -> History:
        state, config = self.state, self.state.config
        history, main = state.history, distributed.is_main()
        world = distributed.world_size()
        step = step_function(state.model, self.objective, state.device, world, config.compile)
        first_epoch = state.resume() if config.resume is not None else 1
        for epoch in range(first_epoch, config.epochs + 1):
            stats = self.train_epoch(step, epoch)
            decision = self.decide(stats)
            history.epochs.append(stats)
            history.stopped_early = decision == _STOP
            every = config.checkpoint_every
            if every and (epoch % every == 0 or epoch == config.epochs or decision == _STOP):
                state.save(checkpoint_dir, epoch)  # type: ignore[arg-type]
            if self.on_epoch_end is not None and main:
                self.on_epoch_end(stats, history)
            if decision == _STOP:
                logger.info(
                    f"early stopping: no better {state.stopper.metric} for "
                    f"{state.stopper.patience} "
                    f"epochs; keeping epoch {history.best_epoch}"
                )
                break
        if main and state.stopper.best_state is not None:
            state.model.load_state_dict(state.stopper.best_state)
        elif state.average is not None:  # no early stopping: keep the average, as validated
            state.average.copy_to_model()
        state.model.eval()
        return history

    def train_epoch(self, step: Callable[[Any], tuple[torch.Tensor, torch.Tensor, int]],
                    epoch: int) -> EpochStats:  # fmt: skip
        """One pass over the objective's batches; the loss and accuracy summed over ranks."""
        state, config, device = self.state, self.state.config, self.state.device
        rank, world = distributed.rank(), distributed.world_size()
        state.model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen, start = 0, time.perf_counter()
        batches = self.objective.batches(
            state.generator, rank=rank, world=world, sample_generator=state.sample_generator
        )
        bar = _Progress(epoch, config, self.objective.num_batches, world,
                        self.show_progress and rank == 0)  # fmt: skip
        for index, batch in enumerate(batches, 1):
            with self.autocast():
                loss, hits, n = step(batch)
            self.optimise(loss)
            seen += n
            loss_sum += loss.detach() * n
            correct += hits
            bar.update(index, loss_sum, correct, seen, start)
        bar.close()
        totals = torch.tensor(  # summed over ranks (NCCL reduces CUDA tensors, gloo CPU ones)
            [loss_sum.item(), correct.item(), float(seen)],
            dtype=torch.float64,
            device=device if device.type == "cuda" else "cpu",
        )
        loss_total, correct_total, seen_total = distributed.all_reduce_sum(totals).tolist()
        seconds = time.perf_counter() - start
        _check_finite(loss_total / seen_total, epoch, config)  # the same on every rank
        return EpochStats(
            epoch=epoch,
            train_loss=loss_total / seen_total,
            train_accuracy=correct_total / seen_total,
            samples_per_second=seen_total / seconds,
            seconds=seconds,
        )

    def optimise(self, loss: torch.Tensor) -> None:
        """One optimiser step on ``loss`` (scaled under fp16), then the weight average."""
        state = self.state
        state.optimizer.zero_grad(set_to_none=True)
        if state.scaler is None:
            loss.backward()
            state.optimizer.step()
        else:  # fp16: scale the loss so small gradients do not flush to zero
            state.scaler.scale(loss).backward()
            state.optimizer.step(state.scaler)
            state.scaler.update()
        if state.average is not None:
            state.average.update()

    def decide(self, stats: EpochStats) -> int:
        """Rank 0 validates (on the averaged weights) and decides whether to stop; every
        rank gets the decision."""
        state, device = self.state, self.state.device
        decision = _CONTINUE
        if distributed.is_main():  # the others wait for its decision
            try:
                with (
                    state.average.swapped_in()
                    if state.average is not None
                    else contextlib.nullcontext()
                ):
                    self.validator(stats)
                    logger.info(_describe(stats, state.config.epochs))
                    if state.stopper.update(stats, state.model, state.history):
                        decision = _STOP
            except BaseException:
                distributed.broadcast_flag(_FAILED, device)
                raise
        decision = distributed.broadcast_flag(decision, device)
        if decision == _FAILED:
            raise HybridRecError("training stopped: rank 0 failed (its error is above)")
        return decision


class _Progress:
    """The epoch's tqdm bar with running loss, accuracy and samples/s, refreshed every
    :data:`PROGRESS_EVERY` batches (each refresh syncs the device); on one process it also
    stops a diverged run early."""

    def __init__(self, epoch: int, config: TrainConfig, total: int, world: int, show: bool):
        self.epoch, self.config, self.total, self.world = epoch, config, total, world
        self.main = distributed.is_main()
        self.bar = tqdm(total=total, desc=f"epoch {epoch}/{config.epochs}", unit="batch",
                        disable=not show, leave=False)  # fmt: skip

    def update(self, index: int, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int,
               start: float) -> None:  # fmt: skip
        if not self.main or (index % PROGRESS_EVERY and index < self.total):
            return
        running = loss_sum.item() / seen
        if self.world == 1:  # with several ranks only the summed epoch loss is checked
            _check_finite(running, self.epoch, self.config)
        self.bar.update(index - self.bar.n)
        self.bar.set_postfix(
            loss=f"{running:.4f}",
            acc=f"{correct.item() / seen:.4f}",
            samples_s=f"{self.world * seen / (time.perf_counter() - start):,.0f}",
            refresh=False,
        )

    def close(self) -> None:
        self.bar.close()


def _check_finite(loss: float, epoch: int, config: TrainConfig) -> None:
    if not math.isfinite(loss):
        raise TrainingDivergedError(
            f"the training loss became {loss} in epoch {epoch}, so the weights are no longer "
            f"meaningful and nothing was saved. Lower the learning rate (now --lr "
            f"{config.lr:g}; try {config.lr / 10:g}) or check the data."
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


def with_model_defaults(model: nn.Module | str, config: TrainConfig) -> TrainConfig:
    """``config`` with the options left to the model (``--epochs``) set to its declared
    defaults: sasrec's next-item training needs more passes than the pointwise models."""
    if config.epochs is not None:
        return config
    return replace(config, epochs=capabilities(model).default_epochs)


def patience_of(model: nn.Module, config: TrainConfig) -> int:
    """``--patience``, or the model's declared default when it is not given."""
    return config.patience if config.patience is not None else capabilities(model).default_patience
