"""Export a trained model as a standalone scorer: TorchScript or ONNX.

The exported graph maps ``(user_idx, item_idx)`` int64 index tensors of equal length to
logits (apply a sigmoid for probabilities), exactly like ``model(user_idx, item_idx)``.
Raw ids are encoded with the artifact's ``id_maps.json`` (index = position + 1, 0 = unknown),
so a serving stack without Python or hybridrec can still score.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from hybridrec.errors import ConfigError
from hybridrec.files import atomic_write

Format = Literal["torchscript", "onnx"]
FORMATS: dict[str, str] = {"torchscript": ".pt", "onnx": ".onnx"}


def export_model(model: nn.Module, path: str | Path, format: Format = "torchscript") -> Path:
    """Write ``model`` as a scorer file at ``path`` (atomically) and return the path.

    Args:
        model: a registered model, e.g. ``hybridrec.load(DIR).model``.
        path: output file.
        format: ``torchscript`` (``torch.jit.load`` to use it) or ``onnx`` (e.g. onnxruntime;
            needs the ``onnx`` and ``onnxscript`` packages to write).
    """
    if format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    model = model.cpu().eval()
    # Example inputs: three pairs; the batch dimension is exported as dynamic.
    users = torch.tensor([1, 1, 0], dtype=torch.int64).clamp(max=model.config.num_users - 1)
    items = torch.tensor([1, 0, 1], dtype=torch.int64).clamp(max=model.config.num_items - 1)
    if format == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(model, (users, items), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        atomic_write(path, lambda f: f.write(buffer.getvalue()))
        return Path(path)
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError(
            "ONNX export needs the onnx and onnxscript packages: pip install onnx onnxscript"
        ) from None
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        model,
        (users, items),
        input_names=["user_idx", "item_idx"],
        output_names=["logits"],
        dynamic_shapes=({0: batch}, {0: batch}),
        dynamo=True,
        verbose=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        program.save(str(Path(tmp) / "model.onnx"))
        data = (Path(tmp) / "model.onnx").read_bytes()
    atomic_write(path, lambda f: f.write(data))
    return Path(path)
