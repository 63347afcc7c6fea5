"""From files (or frames) to a saved, trained model: the train entry point of the API and CLI."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hybridrec import distributed
from hybridrec.artifact import FORMAT as ARTIFACT_FORMAT
from hybridrec.artifact import is_artifact
from hybridrec.config import DataConfig, TrainConfig
from hybridrec.data.columns import ITEM, USER, is_csv_path, parse_ids, row_error
from hybridrec.data.dataset import RecSysDataset, UnknownCounts
from hybridrec.data.encoding import CANONICAL_INT, IdEncoder
from hybridrec.data.holdout import holdout, subset
from hybridrec.data.io import interactions_from_frame, read_interactions, read_table
from hybridrec.data.popularity import item_counts
from hybridrec.data.seen import SeenItems
from hybridrec.data.sequences import interactions_newer
from hybridrec.errors import ConfigError, DataError
from hybridrec.features import FeatureData
from hybridrec.features.attach import FEATURE_WEIGHT_DECAY, FeatureConfig, SideFeatures
from hybridrec.features.popularity import fit_cold_user_popularity, fit_feature_popularity
from hybridrec.files import atomic_write_json, check_output_dir, exclusive, recover
from hybridrec.memory import check_memory
from hybridrec.models import build_model, capabilities, model_class, model_device
from hybridrec.plots import plot_history
from hybridrec.recommend import Recommender
from hybridrec.runtime import resolve_device, set_num_threads
from hybridrec.training import EpochStats, History, fit, resolve_early_stop, with_model_defaults
from hybridrec.training.scale import left_to_data, with_data_defaults

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
    run_config: dict[str, Any] | None = None,
    on_epoch_end: Callable[[EpochStats, History], None] | None = None,
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
        run_config: the command's resolved options (:mod:`hybridrec.configfile`), saved in
            the artifact's settings as ``run_config`` so ``hybridrec info`` can print a
            file that reruns the training.
        on_epoch_end: called as ``on_epoch_end(stats, history)`` after every epoch of every
            run (the automatic holdout's refit has no validation metrics), e.g. to report
            to a hyperparameter search. An exception it raises (a pruned trial) ends
            training and propagates unchanged; nothing is saved then.

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
        if out is not None and str(out) == "":
            raise ConfigError("--out must name a directory, got an empty path")
        out = None if out is None else model_dir_path(out)
        check_model_options(model, model_options or {})
        with _output(out, train_config):
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
                run_config=run_config,
                on_epoch_end=on_epoch_end,
            )
    finally:
        distributed.cleanup()


@contextlib.contextmanager
def _output(out: str | Path | None, config: TrainConfig) -> Iterator[None]:
    """The output directory, checked before any data is read and locked for the run.

    A path that is a file, lies under a file or cannot be written is refused now, not after
    the first epoch, and so is a ``--checkpoint-dir`` that could not be written; a second
    process training into the same directory is refused
    (:func:`hybridrec.files.exclusive`); a save that a crash interrupted is completed and
    stale temporary files are removed. Only rank 0 writes, so only it checks and locks.
    """
    if config.checkpoint_every and config.checkpoint_dir is not None and distributed.is_main():
        check_output_dir(config.checkpoint_dir, "--checkpoint-dir")
    if out is None or not distributed.is_main():
        yield
        return
    directory = check_output_dir(out, "--out")
    _check_replaceable(directory)
    try:  # the parents (not the directory itself: a failed run leaves no empty model)
        directory.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"--out {directory}: cannot create the model directory ({exc.strerror or exc})"
        ) from None
    with exclusive(directory):
        recover(directory, is_artifact)
        yield


def check_model_options(model: str, options: dict[str, Any]) -> None:
    """Validate the model's options now, before any data is read (the model itself is
    built once the data has told its number of users and items)."""
    config_class = model_class(model).config_class
    extra = sorted(set(options) - {f.name for f in fields(config_class)})
    if extra:
        raise ConfigError(f"model {model!r} has no option(s) {', '.join(extra)}")
    config_class(**options)


def model_dir_path(out: str | Path) -> Path:
    """``out`` as the model directory's path: absolute when it ends in ``.``/``..`` or is
    empty, since the staging folders and the lock are named after its last part."""
    path = Path(out)
    return Path(os.path.abspath(path)) if path.name in ("", ".", "..") else path


def _check_replaceable(directory: Path) -> None:
    """Refuse an ``--out`` whose replacement would harm something that is not a model.

    A retrain renames the whole directory, so it must not be the working directory (or
    hold it); and a ``config.json`` there that is not a hybridrec model's belongs to
    something else, which the swap would delete.
    """
    resolved = directory.resolve()
    if resolved.name == "" or Path.cwd().resolve().is_relative_to(resolved):
        raise ConfigError(
            f"--out {directory} is the current directory or holds it; a model is replaced as "
            "a whole directory, so give it a folder of its own, e.g. --out model"
        )
    config = directory / "config.json"
    if config.is_file() and not _is_model_config(config):
        raise ConfigError(
            f"--out {directory} holds a config.json that is not a hybridrec model's; choose "
            "another --out (saving would replace that file)"
        )


def _is_model_config(path: Path) -> bool:
    """Whether ``path`` is the ``config.json`` of a hybridrec artifact (even a damaged one)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == ARTIFACT_FORMAT


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
    run_config: dict[str, Any] | None = None,
    on_epoch_end: Callable[[EpochStats, History], None] | None = None,
) -> TrainResult:
    main = distributed.is_main()
    side.check_model(model)
    train_config = with_model_defaults(model, train_config)  # recorded as trained
    if train_config.weight_decay is None:  # auto: see FEATURE_WEIGHT_DECAY
        decay = FEATURE_WEIGHT_DECAY if side else 0.0
        train_config = replace(train_config, weight_decay=decay)
    prepared = _prepare(train_data, data_config, train_config, model, model_options, items,
                        side, device)  # fmt: skip
    users, items, train_set = prepared.users, prepared.items, prepared.train_set
    positive = prepared.positive
    chosen = left_to_data(train_config)
    train_config = with_data_defaults(model, train_set, train_config)  # recorded as trained
    auto = isinstance(val_data, str) and val_data == AUTO
    val_set, val_unknown = None, None
    if val_data is not None and not auto:
        val_set, val_unknown = _validation_rows(val_data, data_config, users, items)

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
    settings["chosen_for_data"] = chosen
    if side.tables():
        settings["features"] = side.tables()
    if run_config is not None:
        settings["run_config"] = run_config
    out_dir = Path(out) if out is not None else None

    def write_progress(stats: EpochStats, history: History) -> None:
        if out_dir is not None:  # fit calls this on rank 0 only
            atomic_write_json(out_dir / PROGRESS, {"history": history.to_list()})
        if on_epoch_end is not None:
            on_epoch_end(stats, history)

    moments: dict[str, torch.Tensor] = {}  # the optimiser state of the last run, for update

    def run(config: TrainConfig, data: RecSysDataset, val: RecSysDataset | None, **kw: Any):
        net = new_model()
        moments.clear()  # every run starts Adam afresh; only the last run's state is kept
        history = fit(
            net, data, val, config, device=device, show_progress=show_progress,
            on_epoch_end=write_progress, checkpoint_dir=out_dir, moments=moments, **kw,
        )  # fmt: skip
        return net, history

    holdout_info = None
    if auto and train_config.early_stop is not None:
        net, history, val_set, holdout_info = _holdout_then_refit(train_set, train_config, run)
        settings["holdout"] = holdout_info
    else:
        net, history = run(train_config, train_set, val_set)
    net.cpu()
    counts = item_counts(train_set.item_idx[positive], items.num_embeddings)
    popularity = fit_feature_popularity(net, counts, train_config.seed)
    if popularity is not None:  # cold items' popularity from their features
        settings["feature_popularity"] = popularity
    cold_users = fit_cold_user_popularity(net, counts)
    if cold_users is not None:  # users known by features alone: popularity added
        settings["cold_user_popularity"] = cold_users
    recommender = Recommender(
        net, users, items, model_name=model, config={"settings": settings}, seen=prepared.seen
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
        _save(result, out_dir, moments)
    return result


@dataclass(frozen=True)
class _Prepared:
    """The training data as training needs it: encoders, encoded rows, positives."""

    users: IdEncoder
    items: IdEncoder
    train_set: RecSysDataset
    positive: torch.Tensor  # (N,) bool: the rows that are positives
    seen: SeenItems


def _prepare(
    train_data: DataLike,
    data_config: DataConfig,
    train_config: TrainConfig,
    model: str,
    model_options: dict[str, Any] | None,
    items: DataLike | None,
    side: SideFeatures,
    device: torch.device,
) -> _Prepared:
    """Read and check the training rows, fit the id encoders (with the ids of the feature
    files and of the item catalogue), refuse options whose memory the machine lacks, and
    encode the rows."""
    train_frame = load_data(train_data, data_config)
    _check_positives(train_frame, train_data, data_config)
    pointwise = capabilities(model).objective == "pointwise"
    if train_frame["target"].min() == 1 and pointwise and train_config.loss != "ce":
        logger.info(
            f"{_name(train_data)} holds only positives: sampling {train_config.negatives} "
            f"{train_config.sampling} negatives per positive each epoch"
        )
    users = IdEncoder.fit(
        _with_features(train_frame[USER].to_numpy(), side.users, data_config.user_col)
    )
    item_ids = _with_features(train_frame[ITEM].to_numpy(), side.items, data_config.item_col)
    if items is not None:
        catalogue = read_item_catalog(items, data_config)
        extra = _same_kind(catalogue, item_ids, _name(items), data_config.item_col)
        item_ids = np.concatenate([item_ids, extra])
    item_enc = IdEncoder.fit(item_ids)
    positives = int((train_frame["target"].to_numpy() > 0.5).sum())
    check_memory(
        model, model_options or {}, users.num_embeddings, item_enc.num_embeddings,
        positives if pointwise and train_frame["target"].min() == 1 else 0, train_config, device,
    )  # fmt: skip
    train_set, _ = RecSysDataset.from_frame(train_frame, users, item_enc)
    del train_frame, item_ids  # the tensors hold what training needs (~0.5 GB at 20M rows)
    # the training positives: excluded from a user's recommendations, counted for popularity
    positive = train_set.target > 0.5
    seen = _seen_items(train_set, positive, users.num_embeddings, item_enc.num_embeddings)
    return _Prepared(users, item_enc, train_set, positive, seen)


def _validation_rows(
    val_data: DataLike, data_config: DataConfig, users: IdEncoder, items: IdEncoder
) -> tuple[RecSysDataset, UnknownCounts]:
    """The ``--val`` rows, encoded with the training encoders (unknown ids counted)."""
    val_frame = load_data(val_data, data_config)
    _check_positives(val_frame, val_data, data_config, "to validate on")
    val_set, val_unknown = RecSysDataset.from_frame(val_frame, users, items)
    logger.info(val_unknown.describe(_name(val_data)))
    return val_set, val_unknown


def _save(result: TrainResult, out_dir: Path, moments: dict[str, torch.Tensor]) -> None:
    """Write the artifact, its metrics and its training curves; the progress file goes."""
    history = result.history
    metrics: dict[str, Any] = {"history": history.to_list(), "final": result.summary()}
    if result.val_unknown is not None:
        metrics["val_unknown"] = asdict(result.val_unknown)
    if result.holdout is not None:
        metrics["holdout"] = result.holdout
    result.recommender.save(out_dir, metrics=metrics, moments=moments)
    plot_history(history, out_dir / CURVES)
    (out_dir / PROGRESS).unlink(missing_ok=True)  # metrics.json now holds the history
    logger.info(f"saved the model to {out_dir}")


def _seen_items(
    train_set: RecSysDataset, positive: torch.Tensor, num_users: int, num_items: int
) -> SeenItems:
    """The training positives a model keeps: with timestamps, also each one's recency, so an
    update can weight old positives as this training did."""
    user_idx = train_set.user_idx[positive].cpu().numpy()
    newer = None
    if train_set.timestamp is not None:
        newer = interactions_newer(user_idx, train_set.timestamp[positive].cpu().numpy())
    return SeenItems.from_pairs(
        user_idx, train_set.item_idx[positive].cpu().numpy(),
        num_users=num_users, num_items=num_items, newer=newer,
    )  # fmt: skip


def _check_positives(
    frame: pd.DataFrame, data: DataLike, config: DataConfig, purpose: str = "to learn from"
) -> None:
    """Refuse data without a single positive row: training would learn to score everything
    0 and save it as if it were a model; validation could rank nothing (its AUC and ranking
    metrics are undefined), so the epoch it keeps would mean nothing."""
    if bool((frame["target"].to_numpy() > 0.5).any()):
        return
    rule = (
        f"no {config.target_col} reaches --threshold {config.threshold:g}"
        if config.threshold is not None
        else f"every {config.target_col} is 0"
    )
    raise DataError(
        _name(data),
        f"no positive rows {purpose}: {rule}",
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


def _with_features(ids: np.ndarray, features: FeatureData | None, column: str) -> np.ndarray:
    """``ids`` and the ids only a feature file names (cold users or items), in one array
    of the training ids' kind."""
    if features is None or len(features.ids) == 0:
        return ids
    source = Path(features.source).name
    return np.concatenate([ids, _same_kind(features.ids, ids, source, column)])


def read_item_catalog(data: DataLike, config: DataConfig) -> np.ndarray:
    """Item ids of a catalogue file or frame (only its item column is read)."""
    frame = data if isinstance(data, pd.DataFrame) else read_table(Path(data))
    if config.item_col not in frame.columns:
        found = ", ".join(repr(str(c)) for c in frame.columns)
        raise DataError(
            _name(data), f"the item catalogue has no column {config.item_col!r}; found {found}"
        )
    if len(frame) == 0:
        raise DataError(_name(data), "the item catalogue has no rows", expected="item ids")
    is_csv = not isinstance(data, pd.DataFrame) and is_csv_path(Path(data))
    return parse_ids(frame[config.item_col], Path(_name(data)), config.item_col, is_csv)


def _same_kind(
    catalogue: np.ndarray, train_ids: np.ndarray, source: str, column: str
) -> np.ndarray:
    """Ids of a catalogue or feature file in the training ids' kind, so one encoder holds
    them all.

    Integer ids join text ids as their text (``42`` is the item ``"42"``, as when scoring);
    text ids cannot join integer ids: the first one is named.
    """
    if (catalogue.dtype == object) == (train_ids.dtype == object) or len(catalogue) == 0:
        return catalogue
    if train_ids.dtype == object:
        return catalogue.astype(str).astype(object)
    pos = int(np.argmax([re.fullmatch(CANONICAL_INT, str(v)) is None for v in catalogue]))
    raise row_error(
        Path(source),
        pos,
        column,
        f"id {catalogue[pos]!r} is text, but the training data's ids in {column!r} are integers",
        "integer ids, like the training data's",
    )


def _name(data: DataLike) -> str:
    return Path(data).name if not isinstance(data, pd.DataFrame) else "the training frame"
