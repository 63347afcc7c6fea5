"""How one training step runs: sparse or dense tables, DDP, ``torch.compile``, mixed
precision. Each is a choice made once per run, before the first epoch."""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hybridrec.config import TrainConfig
from hybridrec.errors import ConfigError
from hybridrec.objectives import Objective

logger = logging.getLogger(__name__)


#: ``--sparse-embeddings auto`` makes a table sparse above this many weights. Below it
#: (every MovieLens-1M-sized table) one fused dense Adam step is cheaper than SparseAdam's
#: per-step coalescing, and a batch touches a large share of the rows anyway.
SPARSE_MIN_ELEMENTS = 1 << 20


def sparse_tables(
    model: nn.Module, objective: Objective, config: TrainConfig, device: torch.device, world: int
) -> list[nn.Embedding]:
    """The embedding tables to train with sparse gradients (``--sparse-embeddings``), switched
    to ``sparse=True``; empty when the run needs dense gradients.

    Dense Adam updates every row of every table each step, so a step costs the table sizes
    (138K users x 27K items at dim 64: 10M weights) rather than the few thousand rows a
    batch touches. With sparse gradients the tables get "lazy" Adam
    (:class:`hybridrec.training.optim.LazyAdam`: moments and weights of the touched rows only, as
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
    if not objective.supports_sparse:
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


def step_function(
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


def mixed_precision(
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
