"""What a training run reports: per-epoch statistics and the epoch whose weights were kept."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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
