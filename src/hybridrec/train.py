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
import copy
import inspect
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from hybridrec import distributed
from hybridrec.checkpoint import (
    CheckpointError,
    check_compatible,
    config_dict,
    load_checkpoint,
    save_checkpoint,
)
from hybridrec.config import TrainConfig
from hybridrec.data.dataset import RecSysDataset
from hybridrec.errors import ConfigError, HybridRecError, TrainingDivergedError
from hybridrec.evaluate import evaluate_pointwise
from hybridrec.models import model_device
from hybridrec.objectives import Objective, make_objective
from hybridrec.optim import Optimizers

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
    checkpoint_dir: str | Path | None = None,
) -> History:
    """Train ``model`` in place with Adam, validating after every epoch.

    Args:
        model: any registered model (``forward(user_idx, item_idx) -> logits``).
        train: the training rows; moved to ``device`` once for the whole run.
        val: validation rows, or ``None``. Labelled rows (0 and 1) get loss/accuracy/AUC;
            positive rows get full-ranking metrics at ``config.ks``.
        config: optimisation settings; ``config.seed`` fixes shuffling, sampling and dropout.
            ``config.checkpoint_every``/``config.resume`` write and read checkpoints.
        device: where to train (default: the model's current device).
        show_progress: show a tqdm bar with running loss, accuracy and samples/s.
        on_epoch_end: called as ``on_epoch_end(stats, history)`` after each epoch (on rank
            0 only when training with several processes).
        checkpoint_dir: where ``checkpoint.pt`` goes when ``config.checkpoint_dir`` is unset.

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
    if len(train) == 0:
        raise ValueError("the training data has no rows")
    early_stop = resolve_early_stop(config, val)
    if early_stop is not None and (val is None or len(val) == 0):
        raise ConfigError(
            f"--early-stop {config.early_stop} needs validation data: pass --val "
            "(e.g. the val.csv of `hybridrec split`)"
        )
    checkpoint_dir = config.checkpoint_dir or checkpoint_dir
    if config.checkpoint_every and checkpoint_dir is None:
        raise ConfigError("--checkpoint-every needs a folder: pass --out or --checkpoint-dir")
    rank, world = distributed.rank(), distributed.world_size()
    main = rank == 0
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
        if main:
            validator(stats)
        history.epochs.append(stats)
        if on_epoch_end is not None and main:
            on_epoch_end(stats, history)
        model.eval()
        return history

    # The shuffling generator is the same on every rank (same permutation, then sharded);
    # negatives, dropout and sequence negatives use rank-distinct seeds.
    generator = torch.Generator().manual_seed(config.seed)
    sample_generator = generator
    if world > 1:
        sample_generator = torch.Generator().manual_seed(distributed.rank_seed(config.seed, rank))
        torch.manual_seed(distributed.rank_seed(config.seed, rank))
    objective = make_objective(model, train, config, device)
    tables = _sparse_tables(model, objective, config, device, world)
    try:
        return _train_loop(
            model, objective, params, tables, validator, history, config, device, early_stop,
            show_progress, on_epoch_end, checkpoint_dir, generator, sample_generator,
        )  # fmt: skip
    finally:
        for table in tables:  # sparse gradients are a training setting, not the model's
            table.sparse = False
        model.zero_grad(set_to_none=True)  # the last step's gradients are of no further use


def _train_loop(
    model: nn.Module,
    objective: Objective,
    params: list[nn.Parameter],
    tables: list[nn.Embedding],
    validator: _Validator,
    history: History,
    config: TrainConfig,
    device: torch.device,
    early_stop: str | None,
    show_progress: bool,
    on_epoch_end: Callable[[EpochStats, History], None] | None,
    checkpoint_dir: str | Path | None,
    generator: torch.Generator,
    sample_generator: torch.Generator,
) -> History:
    """The epochs of :func:`fit`, once the run's objects exist."""
    rank, world = distributed.rank(), distributed.world_size()
    main = rank == 0
    optimizer = Optimizers(params, tables, config, device)
    step = _step_function(model, objective, device, world, compile=config.compile)
    autocast, scaler = _mixed_precision(config.amp, device)
    stopper = _EarlyStopping(early_stop, config.patience)
    average = _WeightAverage(params, config.ema_decay) if config.ema_decay > 0 else None
    first_epoch = 1
    if config.resume is not None:
        first_epoch = _resume(
            config,
            model,
            optimizer,
            scaler,
            generator,
            sample_generator,
            stopper,
            history,
            device,
            average,
        )
    for epoch in range(first_epoch, config.epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        start = time.perf_counter()
        batches = objective.batches(
            generator, rank=rank, world=world, sample_generator=sample_generator
        )
        num_batches = _num_batches(objective, config)
        bar = tqdm(
            total=num_batches,
            desc=f"epoch {epoch}/{config.epochs}",
            unit="batch",
            disable=not (show_progress and main),
            leave=False,
        )
        for index, batch in enumerate(batches, 1):
            with autocast():
                loss, hits, n = step(batch)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:  # fp16: scale the loss so small gradients do not flush to zero
                scaler.scale(loss).backward()
                optimizer.step(scaler)
                scaler.update()
            if average is not None:
                average.update()
            seen += n
            loss_sum += loss.detach() * n
            correct += hits
            if main and (index % PROGRESS_EVERY == 0 or index >= num_batches):
                running = loss_sum.item() / seen
                if world == 1:  # with several ranks only the summed epoch loss is checked
                    _check_finite(running, epoch, config)
                bar.update(index - bar.n)
                bar.set_postfix(
                    loss=f"{running:.4f}",
                    acc=f"{correct.item() / seen:.4f}",
                    samples_s=f"{world * seen / (time.perf_counter() - start):,.0f}",
                    refresh=False,
                )
        bar.close()
        totals = torch.tensor(  # summed over ranks (NCCL reduces CUDA tensors, gloo CPU ones)
            [loss_sum.item(), correct.item(), float(seen)],
            dtype=torch.float64,
            device=device if device.type == "cuda" else "cpu",
        )
        loss_total, correct_total, seen_total = distributed.all_reduce_sum(totals).tolist()
        seconds = time.perf_counter() - start
        train_loss = loss_total / seen_total
        _check_finite(train_loss, epoch, config)  # the same summed loss on every rank
        stats = EpochStats(
            epoch=epoch,
            train_loss=train_loss,
            train_accuracy=correct_total / seen_total,
            samples_per_second=seen_total / seconds,
            seconds=seconds,
        )
        decision = _CONTINUE
        if main:  # rank 0 validates and decides; the others wait for its decision
            try:
                with average.swapped_in() if average is not None else contextlib.nullcontext():
                    validator(stats)
                    logger.info(_describe(stats, config.epochs))
                    if stopper.update(stats, model, history):
                        decision = _STOP
            except BaseException:
                distributed.broadcast_flag(_FAILED, device)
                raise
        decision = distributed.broadcast_flag(decision, device)
        if decision == _FAILED:
            raise HybridRecError("training stopped: rank 0 failed (its error is above)")
        history.epochs.append(stats)
        history.stopped_early = decision == _STOP
        every = config.checkpoint_every
        if every and (epoch % every == 0 or epoch == config.epochs or decision == _STOP):
            _save_checkpoint(
                checkpoint_dir,  # type: ignore[arg-type]
                epoch,
                config,
                model,
                optimizer,
                scaler,
                generator,
                sample_generator,
                stopper,
                history,
                device,
                average,
            )
        if on_epoch_end is not None and main:
            on_epoch_end(stats, history)
        if decision == _STOP:
            logger.info(
                f"early stopping: no better {early_stop} for {config.patience} epochs; "
                f"keeping epoch {history.best_epoch}"
            )
            break
    if main and stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
    elif average is not None:  # no early stopping: keep the average, as validated
        average.copy_to_model()
    model.eval()
    return history


#: Weights the average lerps per training step, at most: a larger model updates its
#: average every ``ceil(size / EMA_STEP_ELEMENTS)`` steps (with the decay raised to that
#: power), so the average costs a bounded amount per step whatever the table sizes.
EMA_STEP_ELEMENTS = 1 << 16


class _WeightAverage:
    """Exponential moving average of the trainable weights (``--ema-decay``).

    The last step's weights carry the noise of the last few batches; an average over the
    recent steps is a smoother estimate of the same optimum, so it is what gets validated,
    kept by early stopping and returned. Early on the decay is capped at
    ``(1 + t) / (10 + t)`` so the average is not dominated by the random initialisation.

    A lerp touches every weight, so for large embedding tables it would cost more than the
    (sparse) step itself. The average is therefore updated every ``every`` steps with the
    decay raised to the power ``every``: the same horizon (``1 / (1 - decay)`` steps) at
    ``1 / every`` of the cost (every 3rd step on MovieLens-100K, 5th at MovieLens-1M's
    shape).
    """

    def __init__(self, params: list[torch.Tensor], decay: float, every: int | None = None) -> None:
        # detached views share the parameters' storage: built once, not per step
        self.params, self.decay, self.steps = [p.detach() for p in params], decay, 0
        self.average = [p.clone() for p in self.params]
        size = sum(p.numel() for p in self.params)
        self.every = every or max(1, math.ceil(size / EMA_STEP_ELEMENTS))

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average: a single fused lerp over all weights every ``every``
        steps."""
        self.steps += 1
        if self.steps % self.every:
            return
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps)) ** self.every
        torch._foreach_lerp_(self.average, self.params, 1.0 - decay)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own after it."""
        own = [p.clone() for p in self.params]
        self.copy_to_model()
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, own)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "average": [a.clone() for a in self.average]}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore a checkpoint's average; one without (written with --ema-decay 0) restarts
        the average from the restored weights."""
        if state is None:
            self.steps, self.average = 0, [p.clone() for p in self.params]
            return
        if len(state["average"]) != len(self.average):
            raise ValueError("the checkpoint's weight average has another number of tensors")
        torch._foreach_copy_(self.average, [a.to(self.average[0].device) for a in state["average"]])
        self.steps = int(state["steps"])

    @torch.no_grad()
    def copy_to_model(self) -> None:
        torch._foreach_copy_(self.params, self.average)


#: ``--sparse-embeddings auto`` makes a table sparse above this many weights. Below it
#: (every MovieLens-1M-sized table) one fused dense Adam step is cheaper than SparseAdam's
#: per-step coalescing, and a batch touches a large share of the rows anyway.
SPARSE_MIN_ELEMENTS = 1 << 20


def _sparse_tables(
    model: nn.Module, objective: Objective, config: TrainConfig, device: torch.device, world: int
) -> list[nn.Embedding]:
    """The embedding tables to train with sparse gradients (``--sparse-embeddings``), switched
    to ``sparse=True``; empty when the run needs dense gradients.

    Dense Adam updates every row of every table each step, so a step costs the table sizes
    (138K users x 27K items at dim 64: 10M weights) rather than the few thousand rows a
    batch touches. With sparse gradients the tables get "lazy" Adam
    (:class:`hybridrec.optim.LazyAdam`: moments and weights of the touched rows only, as
    TensorFlow's LazyAdam and the row-wise optimisers of TorchRec/FBGEMM), the dense layers
    keep fused Adam.
    ``auto`` does this for tables of more than :data:`SPARSE_MIN_ELEMENTS` weights.
    """
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    if config.sparse_embeddings == "auto":  # small tables: dense fused Adam is faster
        tables = [t for t in tables if t.weight.numel() > SPARSE_MIN_ELEMENTS]
    if config.sparse_embeddings == "off" or not tables:
        return []
    blockers = []
    if config.weight_decay > 0:
        blockers.append("--weight-decay (lazy Adam has no weight decay)")
    if not getattr(objective, "supports_sparse", False):
        blockers.append(f"the {type(objective).__name__} objective (it reads whole tables)")
    if world > 1 and device.type != "cpu":
        blockers.append("several CUDA processes (NCCL has no sparse all-reduce)")
    if blockers:
        if config.sparse_embeddings == "on":
            raise ConfigError(
                "--sparse-embeddings on is not possible with " + ", ".join(blockers)
                + "; use --sparse-embeddings auto or off"
            )  # fmt: skip
        logger.debug("dense embedding gradients: " + ", ".join(blockers))
        return []
    for table in tables:
        table.sparse = True
    return tables


#: Rank 0's end-of-epoch decision, broadcast to the other ranks.
_CONTINUE, _STOP, _FAILED = 0, 1, 2


class _LossModule(nn.Module):
    """The model and its objective's loss as one module: what DDP wraps.

    DistributedDataParallel averages gradients only for the work done inside its wrapper's
    ``forward`` call. The objectives use the model in ways a plain ``model.forward`` does not
    cover: BPR calls the model twice per step, and ``NextItem`` (sasrec) calls
    ``model.encode`` and reads ``model.item_embedding`` directly. Wrapping the model itself
    would silently leave those gradients unsynchronised, so the ranks would drift apart.
    With the whole loss computed in this module's ``forward`` and *this* module wrapped,
    every use of every parameter belongs to one DDP forward, for any model and any objective
    with no per-model cases, and DDP keeps its bucketed all-reduce overlapped with backward
    (a hand-written all-reduce after ``backward`` would also be correct, but serialises the
    communication and loses DDP's cross-rank checks). Models without parameters
    (popularity) never get here: ``fit`` returns before training them.
    """

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.objective.step(self.model, batch)


def _step_function(
    model: nn.Module, objective: Objective, device: torch.device, world: int, compile: bool
) -> Callable[[Any], tuple[torch.Tensor, torch.Tensor, int]]:
    """``step(batch) -> (loss, hits, n)``: the objective alone, or under DDP with several
    ranks; with ``compile``, through ``torch.compile`` (batch sizes vary: dynamic shapes)."""
    if world == 1:
        if compile:
            return torch.compile(_LossModule(model, objective), dynamic=True)
        return lambda batch: objective.step(model, batch)
    wrapped = _ddp(model, objective, device)
    return torch.compile(wrapped, dynamic=True) if compile else wrapped


def _mixed_precision(
    amp: str, device: torch.device
) -> tuple[Callable[[], Any], torch.amp.GradScaler | None]:
    """``(autocast context factory, loss scaler or None)`` for ``--amp``.

    bf16 has float32's range, so it needs no scaler (CPU and CUDA); fp16 does, and is
    offered on CUDA only. Losses are computed in float32 either way (autocast's policy for
    ``binary_cross_entropy_with_logits`` and ``cross_entropy``); validation runs unautocast.
    """
    if amp == "off":
        return contextlib.nullcontext, None
    if device.type not in ("cpu", "cuda") or (amp == "fp16" and device.type != "cuda"):
        raise ConfigError(
            f"--amp {amp} is not available on {device.type}; use --amp bf16 on the CPU or "
            "CUDA, fp16 on CUDA only"
        )
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    return lambda: torch.autocast(device.type, dtype=dtype), scaler


def _ddp(model: nn.Module, objective: Objective, device: torch.device) -> nn.Module:
    """The DDP-wrapped :class:`_LossModule` of ``model`` and ``objective``."""
    from torch.nn.parallel import DistributedDataParallel

    # buffers (sasrec's histories) are equal on all ranks and never trained: syncing them
    # every step would only cost time (the option was renamed in recent PyTorch)
    no_buffer_sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        else {"broadcast_buffers": False}
    )
    return DistributedDataParallel(
        _LossModule(model, objective),
        device_ids=[device.index] if device.type == "cuda" else None,
        **no_buffer_sync,
    )


@dataclass
class _EarlyStopping:
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


def _rng_state(sample_generator: torch.Generator, device: torch.device, world: int) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "sample": sample_generator.get_state() if world > 1 else None,
    }


def _save_checkpoint(
    directory: str | Path,
    epoch: int,
    config: TrainConfig,
    model: nn.Module,
    optimizer: Optimizers,
    scaler: torch.amp.GradScaler | None,
    generator: torch.Generator,
    sample_generator: torch.Generator,
    stopper: _EarlyStopping,
    history: History,
    device: torch.device,
    average: _WeightAverage | None,
) -> None:
    """Every rank contributes its RNG state; rank 0 writes the file atomically."""
    world = distributed.world_size()
    ranks = distributed.gather_objects(_rng_state(sample_generator, device, world))
    if not distributed.is_main():
        return
    path = save_checkpoint(
        directory,
        {
            "epoch": epoch,
            "stopped_early": history.stopped_early,
            "model_name": type(model).__name__,
            "world_size": world,
            "train_config": config_dict(config),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": {"shuffle": generator.get_state(), "ranks": ranks},
            "early_stopping": {
                "best_value": stopper.best_value,
                "best_epoch": history.best_epoch,
                "best_state": stopper.best_state,
                "waited": stopper.waited,
            },
            "history": history.to_list(),
            "weight_average": average.state_dict() if average is not None else None,
        },
    )
    logger.debug(f"checkpoint of epoch {epoch} written to {path}")


def _resume(
    config: TrainConfig,
    model: nn.Module,
    optimizer: Optimizers,
    scaler: torch.amp.GradScaler | None,
    generator: torch.Generator,
    sample_generator: torch.Generator,
    stopper: _EarlyStopping,
    history: History,
    device: torch.device,
    average: _WeightAverage | None,
) -> int:
    """Restore a checkpoint into the run's objects; the first epoch still to train."""
    where = config.resume
    data = load_checkpoint(where)  # type: ignore[arg-type]
    check_compatible(data, config, type(model).__name__, where)  # type: ignore[arg-type]
    try:
        model.load_state_dict(data["model"])
        optimizer.load_state_dict(data["optimizer"])
        generator.set_state(data["rng"]["shuffle"])
        if scaler is not None and data.get("scaler"):
            scaler.load_state_dict(data["scaler"])
        if average is not None:
            average.load_state_dict(data.get("weight_average"))
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"--resume {where}: the checkpoint does not fit this model and data ({first[:200]}); "
            "pass the interrupted run's data and model options"
        ) from None
    rank, world = distributed.rank(), distributed.world_size()
    ranks = data["rng"].get("ranks") or []
    epoch = int(data["epoch"])
    if len(ranks) == world:
        mine = ranks[rank]
        torch.set_rng_state(mine["torch"])
        if device.type == "cuda" and mine.get("cuda") is not None:
            torch.cuda.set_rng_state(mine["cuda"], device)
        if world > 1 and mine.get("sample") is not None:
            sample_generator.set_state(mine["sample"])
    else:  # another number of processes: fresh rank streams, the run is not bit-identical
        logger.warning(
            f"the checkpoint was written by {len(ranks)} process(es), this run has {world}: "
            "negatives and dropout continue from new random streams"
        )
        seed = distributed.rank_seed(config.seed + epoch, rank)
        torch.manual_seed(seed)
        if world > 1:
            sample_generator.manual_seed(seed)
    early = data["early_stopping"]
    stopper.best_value = early.get("best_value")
    stopper.best_state = early.get("best_state")
    stopper.waited = int(early.get("waited", 0))
    history.epochs = [EpochStats(**row) for row in data["history"]]
    history.best_epoch = early.get("best_epoch")
    history.stopped_early = bool(data.get("stopped_early", False))
    if history.stopped_early:
        logger.info(f"resumed a run that early stopping had ended at epoch {epoch}")
        return config.epochs + 1
    logger.info(f"resuming after epoch {epoch} of {config.epochs} from {where}")
    return epoch + 1


#: Validation scores at most this many (user, item) pairs per epoch with the full protocol.
VAL_PAIRS = 1 << 25
#: Fewer users than this under the pair budget: rank against sampled items instead.
VAL_MIN_FULL_USERS = 1000
#: Users and fixed sampled candidates per user of the sampled fallback.
VAL_SAMPLED_USERS, VAL_SAMPLED_ITEMS = 5000, 1000


class _Validator:
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
        from hybridrec.ranking import evaluate_full, evaluate_sampled

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


def _num_batches(objective: Objective, config: TrainConfig) -> int:
    """Batches per epoch for the progress bar (objectives may batch by something else)."""
    return objective.num_batches if hasattr(objective, "num_batches") else math.ceil(
        objective.num_samples / config.batch_size
    )  # fmt: skip


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
