"""Pointwise evaluation: loss, accuracy and AUC of a model on labelled rows."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hybridrec.data.dataset import RecSysDataset, iterate_batches
from hybridrec.evaluation.metrics import accuracy, auc
from hybridrec.models import model_device


@torch.no_grad()
def predict_logits(model: nn.Module, data: RecSysDataset, batch_size: int = 65536) -> torch.Tensor:
    """Logits (N,) for every row, in ``eval()`` mode, on the model's device; returned on CPU."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    try:
        parts = [
            model(b.user_idx.to(device), b.item_idx.to(device)).float().cpu()
            for b in iterate_batches(data, batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else torch.zeros(0)


def pointwise_metrics(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """``loss`` (mean BCE with logits), ``accuracy`` and ``auc`` of logits against 0/1 targets."""
    if len(target) == 0:
        nan = float("nan")
        return {"loss": nan, "accuracy": nan, "auc": nan}
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float()).item()
    return {"loss": loss, "accuracy": accuracy(logits, target), "auc": auc(logits, target)}


def evaluate_pointwise(
    model: nn.Module, data: RecSysDataset, batch_size: int = 65536
) -> dict[str, float]:
    """Loss, accuracy and AUC of ``model`` on ``data``."""
    return pointwise_metrics(predict_logits(model, data, batch_size), data.target)
