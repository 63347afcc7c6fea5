"""Process-group helpers for multi-process training with ``torch.distributed``.

``torchrun --nproc_per_node=N -m hybridrec train ...`` starts N copies of the command with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their
environment. :func:`init_from_env` joins the group those describe (only when
``WORLD_SIZE > 1``), choosing the backend from the training device: NCCL for CUDA, gloo for
the CPU. Everything else here works unchanged in a single process, where the collectives are
no-ops, so ``fit`` calls them unconditionally.

Plain functions over PyTorch's default process group; no state of our own except whether this
module created the group (and so must destroy it).
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from hybridrec.errors import ConfigError

logger = logging.getLogger(__name__)

#: How long a collective waits for the other ranks before failing (rank 0 validates alone
#: while the others wait at the epoch's end, so this must cover a full validation).
TIMEOUT = timedelta(minutes=30)

_created_here = False


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset or not a number)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes, if any; return this rank's device.

    Does nothing (and returns ``device``) in a single process, or when a group already
    exists (the caller made it). With CUDA each rank takes GPU ``LOCAL_RANK`` and the NCCL
    backend; on the CPU it uses gloo. Ranks other than 0 log only warnings.

    Raises:
        ConfigError: ``WORLD_SIZE > 1`` but the environment is incomplete, the device is not
            CPU or CUDA, or this PyTorch build has no usable backend.
    """
    global _created_here
    if dist.is_available() and dist.is_initialized():
        return _rank_device(device)
    world = env_world_size()
    if world <= 1:
        return device
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={world} but {', '.join(missing)} not set; start multi-process "
            "training with `torchrun --nproc_per_node=N -m hybridrec train ...`"
        )
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(
            f"multi-process training runs on the CPU (gloo) or CUDA (NCCL), not {device.type}; "
            "pass --device cpu or --device cuda"
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and not dist.is_nccl_available():
        raise ConfigError("this PyTorch build has no NCCL; pass --device cpu to train with gloo")
    if backend == "gloo" and not dist.is_gloo_available():
        raise ConfigError("this PyTorch build has no gloo backend for CPU training")
    device = _rank_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, init_method="env://", timeout=TIMEOUT)
    _created_here = True
    if dist.get_rank() != 0:
        logging.getLogger("hybridrec").setLevel(logging.WARNING)
    logger.info(f"distributed training: {dist.get_world_size()} processes, {backend} backend")
    return device


def _rank_device(device: torch.device) -> torch.device:
    """CUDA: GPU ``LOCAL_RANK`` (each process its own); CPU as it is."""
    if device.type != "cuda":
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if local >= torch.cuda.device_count():
        raise ConfigError(
            f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s) visible; "
            "start at most one process per GPU"
        )
    return torch.device("cuda", local)


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of training processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process logs, validates and writes files: rank 0, or a lone process."""
    return rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place; returned for chaining. A no-op alone."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_flag(value: int, device: torch.device | None = None) -> int:
    """Rank 0's ``value`` on every rank (a small int such as a stop decision)."""
    if world_size() == 1:
        return value
    flag = torch.tensor([value], dtype=torch.int64, device=_collective_device(device))
    dist.broadcast(flag, src=0)
    return int(flag.item())


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` alone."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def rank_seed(seed: int, rank: int) -> int:
    """A seed for ``rank``'s own random streams, statistically independent of the others'."""
    state = np.random.SeedSequence([seed, rank]).generate_state(2, dtype=np.uint64)
    return int(state[0]) & (2**63 - 1)


def cleanup() -> None:
    """Leave the process group if :func:`init_from_env` created it (no barrier: a rank that
    failed must not keep the others waiting)."""
    global _created_here
    if _created_here and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _created_here = False


def _collective_device(device: torch.device | None) -> torch.device:
    """NCCL collectives need CUDA tensors; gloo takes CPU ones."""
    if dist.get_backend() == "nccl":
        return device if device is not None and device.type == "cuda" else torch.device("cuda")
    return torch.device("cpu")
