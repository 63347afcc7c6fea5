"""Memory before training: refuse options whose weights and samples the machine cannot
hold, in one line, before hours of work are spent reaching the allocation that fails."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from hybridrec.config import TrainConfig
from hybridrec.data.columns import one_line
from hybridrec.errors import ConfigError
from hybridrec.models import build_model
from hybridrec.objectives import SAMPLE_CHUNK

logger = logging.getLogger(__name__)


#: float32 copies of every weight while training: the weights, their gradients, Adam's two
#: moments and the weight average (``--ema-decay``).
TRAINING_COPIES = 5
#: int64 arrays of one chunk's sampled negatives alive at once (draws, candidates, the batch).
SAMPLING_COPIES = 4


def check_memory(
    model: str,
    options: dict[str, Any],
    num_users: int,
    num_items: int,
    sampled_positives: int,
    config: TrainConfig,
    device: torch.device,
) -> None:
    """Refuse, before training, options whose memory the machine cannot give.

    The model is built on PyTorch's ``meta`` device (shapes, no storage) to count its
    weights and buffers; training holds :data:`TRAINING_COPIES` float32 copies of the
    weights, and positives-only data a chunk of sampled negatives. Their sum must fit in
    the memory available now (:func:`available_memory`). Activations are not estimated:
    running out of memory later is still reported in one line by the command line.
    """
    try:
        with torch.device("meta"):
            net = build_model(model, num_users=num_users, num_items=num_items, **options)
    except (RuntimeError, TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, ConfigError):
            raise
        logger.debug(f"building the model on the meta device failed: {one_line(exc)}")
        raise ConfigError(
            f"the {model} model cannot be built with these sizes (a tensor would exceed "
            "PyTorch's limits); lower --embedding-dim, --mlp-layers, --hidden-dim or --max-len"
        ) from None
    weights = sum(p.numel() for p in net.parameters())
    buffers = sum(b.numel() * b.element_size() for b in net.buffers())
    per_chunk = min(sampled_positives, SAMPLE_CHUNK)
    chunk = per_chunk * config.negatives * 8 * SAMPLING_COPIES
    state = weights * 4 * TRAINING_COPIES
    need = state + buffers + chunk
    free = available_memory(device)
    if free is not None and need > free:
        parts = {
            f"{weights:,} weights x {TRAINING_COPIES} float32 copies": state,
            "buffers": buffers,
            f"{config.negatives:,} negatives for each of {per_chunk:,} positives": chunk,
        }
        big = [f"{name}: {_gib(size)}" for name, size in parts.items() if size > need / 100]
        raise ConfigError(
            f"training the {model} model needs about {_gib(need)} ({', '.join(big)}), more "
            f"than the {_gib(free)} available on {device.type}; lower --embedding-dim, "
            "--mlp-layers, --hidden-dim, --max-len or --negatives"
        )


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device``: free CUDA memory, else the
    system's available memory (``MemAvailable``; ``os.sysconf`` where there is no
    /proc), capped by a cgroup (container) limit. None when it cannot be told."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    found = [v for v in (_meminfo_available(), _cgroup_headroom()) if v is not None]
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return min(found)


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    """A cgroup v2 memory limit minus the current use, when one is set."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def _gib(size: int) -> str:
    return f"{size / 2**30:,.1f} GiB"
