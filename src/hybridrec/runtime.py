"""Choosing the device and CPU threads: done once, by the caller of ``fit``, never in a model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from hybridrec.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA if present, else Apple MPS, else CPU; other names are checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"--device {name!r} is not a device name; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was asked for but no CUDA GPU is visible; use --device cpu"
        )
    if device.type == "cuda" and device.index is not None:
        if device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {name} does not exist: "
                f"{torch.cuda.device_count()} CUDA device(s) visible"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps was asked for but MPS is not available; use --device cpu")
    if device.type not in {"cpu", "cuda", "mps"}:
        raise ConfigError(f"--device {name!r} is not supported; use auto, cpu, cuda or mps")
    return device


@contextlib.contextmanager
def threads_for(num_threads: int) -> Iterator[None]:
    """:func:`set_num_threads` for the block, the caller's count restored after it: a
    library call (``hybridrec.train``) must not leave the whole process on one thread."""
    before = torch.get_num_threads()
    set_num_threads(num_threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def set_num_threads(num_threads: int) -> None:
    """Set PyTorch's intra-op threads; 0 leaves PyTorch's own choice.

    One thread is the default because on a small machine with another busy process, several
    OpenMP threads wait on each other and small-batch training can get tens of times slower
    (measured in docs/benchmarks.md).
    """
    if num_threads > 0 and torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)
