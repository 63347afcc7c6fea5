"""A trained model bundled with its id maps: the object users score and recommend with."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hybridrec.artifact import load_artifact, read_metrics, save_artifact
from hybridrec.data.encoding import IdEncoder
from hybridrec.models import model_device

IdsLike = Sequence[Any] | np.ndarray


class Recommender:
    """Scores raw ``(user_id, item_id)`` pairs with a trained model.

    Ids never seen in training are allowed: they map to the unknown index 0, whose embedding
    is zero, so they get a neutral (not an arbitrary) score.

    Example:
        >>> rec = hybridrec.load("model")                     # doctest: +SKIP
        >>> rec.score(["u1", "u1"], ["i9", "never-seen"])     # doctest: +SKIP
        array([0.83, 0.41], dtype=float32)
    """

    def __init__(
        self,
        model: nn.Module,
        users: IdEncoder,
        items: IdEncoder,
        *,
        model_name: str = "hybrid",
        config: dict[str, Any] | None = None,
        batch_size: int = 65536,
    ) -> None:
        self.model = model.eval()
        self.users = users
        self.items = items
        self.model_name = model_name
        self.config = config or {}
        self.batch_size = batch_size

    @classmethod
    def load(cls, directory: str | Path) -> Recommender:
        """Load an artifact written by :meth:`save` or ``hybridrec train --out``."""
        model, users, items, config = load_artifact(directory)
        config = {**config, "directory": str(directory)}
        return cls(model, users, items, model_name=config["model"], config=config)

    def save(self, directory: str | Path, metrics: dict[str, Any] | None = None) -> Path:
        """Write the artifact atomically (see :mod:`hybridrec.artifact`)."""
        return save_artifact(
            directory,
            model=self.model,
            model_name=self.model_name,
            users=self.users,
            items=self.items,
            metrics=metrics,
            settings=self.config.get("settings"),
        )

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    @torch.no_grad()
    def score_indices(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """Probabilities (N,) for encoded index pairs, computed in batches."""
        out = np.empty(len(user_idx), dtype=np.float32)
        device = self.device
        for start in range(0, len(user_idx), self.batch_size):
            end = start + self.batch_size
            u = torch.as_tensor(user_idx[start:end], device=device)
            i = torch.as_tensor(item_idx[start:end], device=device)
            out[start:end] = torch.sigmoid(self.model(u, i).float()).cpu().numpy()
        return out

    def score(self, user_ids: IdsLike, item_ids: IdsLike) -> np.ndarray:
        """Probability of a positive interaction for each ``(user_ids[k], item_ids[k])``.

        Args:
            user_ids: raw user ids, as in the training file (unknown ids allowed).
            item_ids: raw item ids, same length (unknown ids allowed).

        Returns:
            float32 array of probabilities in (0, 1), one per pair.
        """
        u = self.users.transform(user_ids)
        i = self.items.transform(item_ids)
        if len(u) != len(i):
            raise ValueError(
                f"score() needs as many item ids as user ids, got {len(u)} and {len(i)}"
            )
        return self.score_indices(u, i)

    @property
    def metrics(self) -> dict[str, Any]:
        """Training metrics stored with the artifact, when loaded from one."""
        directory = self.config.get("directory")
        return read_metrics(directory) if directory else {}

    def __repr__(self) -> str:
        return (
            f"Recommender(model={self.model_name!r}, users={len(self.users)}, "
            f"items={len(self.items)})"
        )
