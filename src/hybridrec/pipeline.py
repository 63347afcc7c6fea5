"""From files (or frames) to a saved, trained model: the train entry point of the API and CLI."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hybridrec import distributed
from hybridrec.artifact import is_artifact
from hybridrec.config import DataConfig, TrainConfig
from hybridrec.data.dataset import RecSysDataset, UnknownCounts
from hybridrec.data.encoding import IdEncoder
from hybridrec.data.holdout import holdout, subset
from hybridrec.data.io import (
    ITEM,
    USER,
    interactions_from_frame,
    is_csv_path,
    parse_ids,
    read_interactions,
    read_table,
)
from hybridrec.data.seen import SeenItems
from hybridrec.errors import ConfigError, DataError
from hybridrec.features.attach import FEATURE_WEIGHT_DECAY, FeatureConfig, SideFeatures
from hybridrec.files import atomic_write_json, exclusive, recover
from hybridrec.models import build_model, capabilities, model_device
from hybridrec.plots import plot_history
from hybridrec.recommend import Recommender
from hybridrec.runtime import resolve_device, set_num_threads
from hybridrec.training import EpochStats, History, fit, resolve_early_stop

logger = logging.getLogger(__name__)

#: Training-curves plot written next to the model.
CURVES = "training_curves.png"
#: Per-epoch history while training, beside (not part of) the artifact: rewriting the
#: artifact's own ``metrics.json`` would break an existing model's checksums.
PROGRESS = "progress.json"

DataLike = str | Path | pd.DataFrame

#: ``val_data`` value (and ``--val`` default) that holds validation rows out of the
#: training data itself (:mod:`hybridrec.data.holdout`).
AUTO = "auto"


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    recommender: Recommender
    history: History
    train_data: RecSysDataset
    val_data: RecSysDataset | None
    val_unknown: UnknownCounts | None
    out: Path | None
    #: False on the ranks other than 0 of a multi-process run: they saved nothing and their
    #: history has no validation metrics.
    is_main: bool = True
    #: With the automatic holdout: its rule, size, the epoch it chose and that epoch's
    #: validation metrics (``history`` is then the retraining run's).
    holdout: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """Metrics of the epoch whose weights were kept (the last one unless early stopping
        picked another) as a flat dict: what ``--json`` prints."""
        best = self.history.best
        out: dict[str, Any] = {
            "epochs": len(self.history.epochs),
            "best_epoch": best.epoch,
            "train_loss": best.train_loss,
            "train_accuracy": best.train_accuracy,
            "samples_per_second": self.history.last.samples_per_second,
            "val_loss": best.val_loss,
            "val_accuracy": best.val_accuracy,
            "val_auc": best.val_auc,
        }
        for name, value in (best.ranking or {}).items():
            # "auc" and "users" exist pointwise too: the ranking ones get their own names
            key = f"val_ranking_{name}" if name in ("auc", "users") else f"val_{name}"
            out[key] = value
        if self.val_unknown is not None:
            out["val_rows"] = self.val_unknown.rows
            out["val_rows_with_unknown"] = self.val_unknown.rows_with_unknown
        if self.out is not None:
            out["model_dir"] = str(self.out)
        for name, value in (self.holdout or {}).items():
            if not isinstance(value, dict):
                out[f"holdout_{name}"] = value
        return out


def load_data(data: DataLike, config: DataConfig, *, labels: bool = True) -> pd.DataFrame:
    """Read a path, or validate an in-memory frame, into the standard interaction frame.

    ``labels``: the rows are read for their labels, so a target column the options name
    must exist (see :func:`hybridrec.data.io.read_interactions`); ``False`` for files of
    positives such as a held-out test set.
    """
    if isinstance(data, pd.DataFrame):
        return interactions_from_frame(data, config, labels=labels)
    return read_interactions(data, config, labels=labels)


def train(
    train_data: DataLike,
    val_data: DataLike | None = AUTO,
    *,
    out: str | Path | None = None,
    model: str = "hybrid",
    model_options: dict[str, Any] | None = None,
    data_config: DataConfig | None = None,
    train_config: TrainConfig | None = None,
    items: DataLike | None = None,
    feature_config: FeatureConfig | None = None,
    user_features: DataLike | None = None,
    item_features: DataLike | None = None,
    show_progress: bool = False,
) -> TrainResult:
    """Train a model on interaction data and optionally save it.

    Args:
        train_data: path to a CSV/Parquet file, or a frame with the configured columns.
        val_data: validation rows (same format), evaluated after every epoch. ``"auto"``
            (the default) holds them out of ``train_data`` (each user's latest interaction,
            see :mod:`hybridrec.data.holdout`), chooses the epochs on them and, with
            ``train_config.refit == "all"``, retrains on every row for that many epochs;
            ``None`` trains without validation.
        out: directory for the artifact; ``progress.json`` there is updated every epoch.
            An existing model there stays intact and loadable until the new one replaces
            it whole; a second process writing the same directory is refused.
        model: registered model name (see ``hybridrec.models.MODELS``).
        model_options: hyper-parameters of that model, e.g. ``{"embedding_dim": 64}``.
        data_config: column names and rating threshold.
        train_config: epochs, batch size, learning rate, seed, device, threads.
        items: the item catalogue: a file or frame with the item column. Its items join the
            encoder even without training rows, so they are ranked (not unknown) in
            evaluation and recommendation.
        feature_config: side-feature files and how to read them
            (:class:`hybridrec.features.attach.FeatureConfig`).
        user_features, item_features: feature frames (or paths) instead of the files of
            ``feature_config``. Ids they name join the encoders even without training rows
            (cold users and items, scored from their features).
        show_progress: show a progress bar per epoch.

    Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) every process calls this;
    they train together with DistributedDataParallel and only rank 0 logs, validates and
    writes ``out`` (see :func:`hybridrec.training.fit`). ``train_config.checkpoint_every`` writes
    ``checkpoint.pt`` to ``train_config.checkpoint_dir`` or ``out``; ``train_config.resume``
    continues from one.

    Returns:
        A :class:`TrainResult` with the ready-to-use :class:`Recommender` and the history.

    Example:
        >>> result = hybridrec.train("train.csv", "val.csv", out="model")  # doctest: +SKIP
        >>> result.recommender.score([1], [42])                             # doctest: +SKIP
    """
    data_config = data_config or DataConfig()
    train_config = train_config or TrainConfig()
    set_num_threads(train_config.num_threads)
    device = resolve_device(train_config.device)
    # under torchrun (WORLD_SIZE > 1): join the process group; each rank runs all of this
    device = distributed.init_from_env(device)
    try:
        with _output(out):
            return _train(
                train_data,
                val_data,
                out=out,
                model=model,
                model_options=model_options,
                data_config=data_config,
                train_config=train_config,
                items=items,
                side=SideFeatures.read(
                    feature_config or FeatureConfig(),
                    data_config.user_col,
                    data_config.item_col,
                    users=user_features,
                    items=item_features,
                ),
                show_progress=show_progress,
                device=device,
            )
    finally:
        distributed.cleanup()


@contextlib.contextmanager
def _output(out: str | Path | None) -> Iterator[None]:
    """The output directory, checked before any data is read and locked for the run.

    A path that is a file, lies under a file or cannot be written is refused now, not after
    the first epoch; a second process training into the same directory is refused
    (:func:`hybridrec.files.exclusive`); a save that a crash interrupted is completed and
    stale temporary files are removed. Only rank 0 writes, so only it checks and locks.
    """
    if out is None or not distributed.is_main():
        yield
        return
    directory = Path(out)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"--out {directory} is a file; give a directory for the model")
    existing = directory if directory.exists() else directory.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"--out {directory}: cannot create the model directory ({existing} is a file)"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {directory}: {existing} is not writable")
    try:  # the parents (not the directory itself: a failed run leaves no empty model)
        directory.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"--out {directory}: cannot create the model directory ({exc.strerror or exc})"
        ) from None
    with exclusive(directory):
        recover(directory, is_artifact)
        yield


def _train(
    train_data: DataLike,
    val_data: DataLike | None,
    *,
    out: str | Path | None,
    model: str,
    model_options: dict[str, Any] | None,
    data_config: DataConfig,
    train_config: TrainConfig,
    items: DataLike | None,
    side: SideFeatures,
    show_progress: bool,
    device: torch.device,
) -> TrainResult:
    main = distributed.is_main()
    side.check_model(model)
    if train_config.weight_decay is None:  # auto: see FEATURE_WEIGHT_DECAY
        decay = FEATURE_WEIGHT_DECAY if side else 0.0
        train_config = replace(train_config, weight_decay=decay)
    train_frame = load_data(train_data, data_config)
    _check_positives(train_frame, train_data, data_config)
    pointwise = capabilities(model).objective == "pointwise"
    if train_frame["target"].min() == 1 and pointwise and train_config.loss != "ce":
        logger.info(
            f"{_name(train_data)} holds only positives: sampling {train_config.negatives} "
            f"{train_config.sampling} negatives per positive each epoch"
        )
    users = IdEncoder.fit(_ids(train_frame[USER].to_numpy(), side.user_ids()))
    item_ids = _ids(train_frame[ITEM].to_numpy(), side.item_ids())
    if items is not None:
        item_ids = np.concatenate([item_ids, read_item_catalog(items, data_config)])
    items = IdEncoder.fit(item_ids)
    train_set, _ = RecSysDataset.from_frame(train_frame, users, items)
    del train_frame, item_ids  # the tensors hold what training needs (~0.5 GB at 20M rows)
    # the training positives: excluded from a user's recommendations, counted for popularity
    positive = train_set.target > 0.5
    seen = SeenItems.from_pairs(
        train_set.user_idx[positive].cpu().numpy(),
        train_set.item_idx[positive].cpu().numpy(),
        num_users=users.num_embeddings,
        num_items=items.num_embeddings,
    )
    auto = isinstance(val_data, str) and val_data == AUTO
    val_set, val_unknown = None, None
    if val_data is not None and not auto:
        val_set, val_unknown = RecSysDataset.from_frame(
            load_data(val_data, data_config), users, items
        )
        logger.info(val_unknown.describe(_name(val_data)))

    def new_model() -> torch.nn.Module:
        torch.manual_seed(train_config.seed)  # model initialisation and dropout
        net = build_model(
            model,
            num_users=users.num_embeddings,
            num_items=items.num_embeddings,
            **{**(model_options or {}), **side.model_options()},
        )
        side.attach(net, users, items, train_set.user_idx[positive], train_set.item_idx[positive])
        return net

    settings: dict[str, Any] = {"data": asdict(data_config), "train": asdict(train_config)}
    if side.tables():
        settings["features"] = side.tables()
    out_dir = Path(out) if out is not None else None

    def write_progress(stats: EpochStats, history: History) -> None:
        if out_dir is not None:  # fit calls this on rank 0 only
            atomic_write_json(out_dir / PROGRESS, {"history": history.to_list()})

    def run(config: TrainConfig, data: RecSysDataset, val: RecSysDataset | None, **kw: Any):
        net = new_model()
        history = fit(
            net, data, val, config, device=device, show_progress=show_progress,
            on_epoch_end=write_progress, checkpoint_dir=out_dir, **kw,
        )  # fmt: skip
        return net, history

    holdout_info = None
    if auto and train_config.early_stop is not None:
        net, history, val_set, holdout_info = _holdout_then_refit(train_set, train_config, run)
        settings["holdout"] = holdout_info
    else:
        net, history = run(train_config, train_set, val_set)
    net.cpu()
    recommender = Recommender(
        net, users, items, model_name=model, config={"settings": settings}, seen=seen
    )
    result = TrainResult(
        recommender,
        history,
        train_set,
        val_set,
        val_unknown,
        out_dir,
        is_main=main,
        holdout=holdout_info,
    )
    if out_dir is not None and main:  # one artifact, written by rank 0
        metrics = {"history": history.to_list(), "final": result.summary()}
        if val_unknown is not None:
            metrics["val_unknown"] = asdict(val_unknown)
        if holdout_info is not None:
            metrics["holdout"] = holdout_info
        recommender.save(out_dir, metrics=metrics)
        plot_history(history, out_dir / CURVES)
        (out_dir / PROGRESS).unlink(missing_ok=True)  # metrics.json now holds the history
        logger.info(f"saved the model to {out_dir}")
    return result


def _check_positives(frame: pd.DataFrame, data: DataLike, config: DataConfig) -> None:
    """Refuse training data without a single positive row: every model would learn to score
    everything 0, and save it as if it were a model."""
    if bool((frame["target"].to_numpy() > 0.5).any()):
        return
    rule = (
        f"no {config.target_col} reaches --threshold {config.threshold:g}"
        if config.threshold is not None
        else f"every {config.target_col} is 0"
    )
    raise DataError(
        _name(data),
        f"no positive rows to learn from: {rule}",
        column=config.target_col,
        expected="at least one positive interaction",
    )


def _holdout_then_refit(
    train_set: RecSysDataset, config: TrainConfig, run: Any
) -> tuple[torch.nn.Module, History, RecSysDataset | None, dict[str, Any]]:
    """No validation file: choose the epochs on rows held out of the training data, then
    (``config.refit == "all"``) retrain on every row for that many epochs.

    Returns ``(model, history of the run whose model is returned, held-out rows, what was
    held out and chosen)``. Checkpoints (``--checkpoint-every``/``--resume``) cover the
    returned run only; the epoch-choosing run is repeated, with the same seed and result,
    when a refit is resumed.
    """
    split = holdout(train_set, config.seed)
    if len(split.val_rows) == 0:
        logger.info("no user has two interactions to hold one out: training without validation")
        net, history = run(replace(config, early_stop=None), train_set, None)
        return net, history, None, {"rule": split.rule, "held_out_rows": 0}
    fit_rows, val_rows = subset(train_set, split.train_rows), subset(train_set, split.val_rows)
    logger.info(
        f"no --val given: holding out {len(val_rows):,} rows ({split.rule}) of "
        f"{len(train_set):,} to choose the number of epochs (--val none turns this off)"
    )
    choose = replace(config, checkpoint_every=0, resume=None)
    net, history = run(choose, fit_rows, val_rows)
    # rank 0 validated; every rank needs the chosen epoch count
    best = max(1, distributed.broadcast_flag(history.best.epoch, model_device(net)))
    best_stats = history.best
    info: dict[str, Any] = {
        **split.describe(),
        "best_epoch": best,
        "metric": resolve_early_stop(choose, val_rows),
        "val": {k: v for k, v in (best_stats.ranking or {}).items()},
    }
    if best_stats.val_loss is not None:
        info["val"].update(loss=best_stats.val_loss, auc=best_stats.val_auc)
    if config.refit == "none":
        logger.info(f"kept the holdout run's epoch {best} (--refit none)")
        return net, history, val_rows, info
    logger.info(f"chose {best} epoch(s); retraining on all {len(train_set):,} rows")
    # the held-in copy and its row index are ~0.7 GB at 20M rows: not kept beside the refit
    del fit_rows, split, net, history
    gc.collect()  # the holdout run's objects, cycles included, before the refit allocates
    refit = replace(config, epochs=best, early_stop=None)
    net, history = run(refit, train_set, None)
    return net, history, val_rows, info


def _ids(ids: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """``ids`` and the ids only a feature file names (cold users or items), in one array."""
    if len(extra) == 0:
        return ids
    if ids.dtype != extra.dtype and object in (ids.dtype, extra.dtype):
        return np.concatenate([ids.astype(object), extra.astype(object)])
    return np.concatenate([ids, extra])


def read_item_catalog(data: DataLike, config: DataConfig) -> np.ndarray:
    """Item ids of a catalogue file or frame (only its item column is read)."""
    frame = data if isinstance(data, pd.DataFrame) else read_table(Path(data))
    if config.item_col not in frame.columns:
        found = ", ".join(repr(str(c)) for c in frame.columns)
        raise DataError(
            _name(data), f"the item catalogue has no column {config.item_col!r}; found {found}"
        )
    is_csv = not isinstance(data, pd.DataFrame) and is_csv_path(Path(data))
    return parse_ids(frame[config.item_col], Path(_name(data)), config.item_col, is_csv)


def _name(data: DataLike) -> str:
    return Path(data).name if not isinstance(data, pd.DataFrame) else "the training frame"
