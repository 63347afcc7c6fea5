"""A training run's state: what carries from epoch to epoch, saved and restored as one.

Everything a checkpoint must hold to continue a run bit-identically (weights, optimiser,
loss scaler, random streams, early stopping, history, weight average) lives in one
:class:`RunState`, so saving and resuming are one call each; the file format itself is
:mod:`hybridrec.checkpoint`'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hybridrec import distributed
from hybridrec.checkpoint import (
    CheckpointError,
    check_compatible,
    check_same_data,
    config_dict,
    load_checkpoint,
    model_options,
)
from hybridrec.checkpoint import save_checkpoint as write_checkpoint
from hybridrec.config import TrainConfig
from hybridrec.training.average import WeightAverage
from hybridrec.training.history import EpochStats, History
from hybridrec.training.optim import Optimizers
from hybridrec.training.validation import EarlyStopping

logger = logging.getLogger(__name__)


@dataclass
class RunState:
    """The objects of one training run that a checkpoint saves and a resume restores.

    ``generator`` shuffles (the same stream on every rank); ``sample_generator`` draws
    negatives (rank-specific with several processes, else the same object).
    """

    model: nn.Module
    config: TrainConfig
    device: torch.device
    optimizer: Optimizers
    scaler: torch.amp.GradScaler | None
    generator: torch.Generator
    sample_generator: torch.Generator
    stopper: EarlyStopping
    history: History
    average: WeightAverage | None
    #: what the training rows and ids hash to (:func:`hybridrec.checkpoint.data_key`), so
    #: that a resume on other data is refused; None: not checked
    data_key: str | None = None

    def save(self, directory: str | Path, epoch: int) -> None:
        """Every rank contributes its RNG state; rank 0 writes the file atomically."""
        world = distributed.world_size()
        ranks = distributed.gather_objects(self._rng_state(world))
        if not distributed.is_main():
            return
        history, stopper = self.history, self.stopper
        path = write_checkpoint(
            directory,
            {
                "epoch": epoch,
                "stopped_early": history.stopped_early,
                "model_name": type(self.model).__name__,
                "model_options": model_options(self.model),
                "world_size": world,
                "train_config": config_dict(self.config),
                "data_key": self.data_key,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "rng": {"shuffle": self.generator.get_state(), "ranks": ranks},
                "early_stopping": {
                    "best_value": stopper.best_value,
                    "best_epoch": history.best_epoch,
                    "best_state": stopper.best_state,
                    "waited": stopper.waited,
                },
                "history": history.to_list(),
                "weight_average": self.average.state_dict() if self.average is not None else None,
            },
        )
        logger.debug(f"checkpoint of epoch {epoch} written to {path}")

    def resume(self) -> int:
        """Restore ``config.resume``'s checkpoint into the run; the first epoch still to train."""
        where = self.config.resume
        data = load_checkpoint(where)  # type: ignore[arg-type]
        options = model_options(self.model)
        check_compatible(data, self.config, type(self.model).__name__, where, options)  # type: ignore[arg-type]
        check_same_data(data.get("data_key"), self.data_key, where)  # type: ignore[arg-type]
        self._load_weights(data, where)  # type: ignore[arg-type]
        epoch = int(data["epoch"])
        self._load_rng(data["rng"].get("ranks") or [], epoch)
        early = data["early_stopping"]
        self.stopper.best_value = early.get("best_value")
        self.stopper.best_state = early.get("best_state")
        self.stopper.waited = int(early.get("waited", 0))
        history = self.history
        history.epochs = [EpochStats(**row) for row in data["history"]]
        history.best_epoch = early.get("best_epoch")
        history.stopped_early = bool(data.get("stopped_early", False))
        if history.stopped_early:
            logger.info(f"resumed a run that early stopping had ended at epoch {epoch}")
            return self.config.epochs + 1
        logger.info(f"resuming after epoch {epoch} of {self.config.epochs} from {where}")
        return epoch + 1

    def _rng_state(self, world: int) -> dict:
        device = self.device
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "sample": self.sample_generator.get_state() if world > 1 else None,
        }

    def _load_weights(self, data: dict, where: str | Path) -> None:
        try:
            self.model.load_state_dict(data["model"])
            self.optimizer.load_state_dict(data["optimizer"])
            self.generator.set_state(data["rng"]["shuffle"])
            if self.scaler is not None and data.get("scaler"):
                self.scaler.load_state_dict(data["scaler"])
            if self.average is not None:
                self.average.load_state_dict(data.get("weight_average"))
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            raise CheckpointError(
                f"--resume {where}: the checkpoint does not fit this model and data "
                f"({first[:200]}); pass the interrupted run's data and model options"
            ) from None

    def _load_rng(self, ranks: list[dict], epoch: int) -> None:
        """Each rank's own random streams, or fresh ones when the number of ranks changed."""
        rank, world = distributed.rank(), distributed.world_size()
        if len(ranks) == world:
            mine = ranks[rank]
            torch.set_rng_state(mine["torch"])
            if self.device.type == "cuda" and mine.get("cuda") is not None:
                torch.cuda.set_rng_state(mine["cuda"], self.device)
            if world > 1 and mine.get("sample") is not None:
                self.sample_generator.set_state(mine["sample"])
            return
        logger.warning(
            f"the checkpoint was written by {len(ranks)} process(es), this run has {world}: "
            "negatives and dropout continue from new random streams"
        )
        seed = distributed.rank_seed(self.config.seed + epoch, rank)
        torch.manual_seed(seed)
        if world > 1:
            self.sample_generator.manual_seed(seed)
