"""From files (or frames) to a saved, trained model: the train entry point of the API and CLI."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from hybridrec import distributed
from hybridrec.checkpoint import checkpoint_file, load_checkpoint, run_key
from hybridrec.config import DataConfig, TrainConfig
from hybridrec.data.dataset import RecSysDataset, UnknownCounts
from hybridrec.data.holdout import holdout, subset
from hybridrec.data.popularity import item_counts
from hybridrec.errors import ConfigError
from hybridrec.features.attach import FEATURE_WEIGHT_DECAY, FeatureConfig, SideFeatures
from hybridrec.features.popularity import cold_start_settings
from hybridrec.files import atomic_write_json
from hybridrec.model_dir import model_dir_path, output_dir
from hybridrec.models import build_model, model_class, model_device
from hybridrec.plots import plot_history
from hybridrec.prepare import DataLike, prepare, validation_rows
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
            if isinstance(value, dict):  # the chosen epoch's validation metrics
                out.update({f"holdout_{name}_{k}": v for k, v in value.items()})
            else:
                out[f"holdout_{name}"] = value
        return out


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
    _check_types(data_config=(data_config, DataConfig), train_config=(train_config, TrainConfig))
    device = resolve_device(train_config.device)
    # under torchrun (WORLD_SIZE > 1): join the process group; each rank runs all of this
    device = distributed.init_from_env(device)
    threads = torch.get_num_threads()  # the caller's, restored at the end
    set_num_threads(train_config.num_threads)
    try:
        if out is not None and str(out) == "":
            raise ConfigError("--out must name a directory, got an empty path")
        out = None if out is None else model_dir_path(out)
        check_model_options(model, model_options or {})
        with output_dir(out, train_config):
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
        torch.set_num_threads(threads)


def _check_types(**given: tuple[Any, type]) -> None:
    """A config passed as something else (a dict, say) is a one-line ConfigError, not an
    AttributeError from deep inside training."""
    for name, (value, kind) in given.items():
        if not isinstance(value, kind):
            raise ConfigError(
                f"{name} must be a hybridrec.{kind.__name__}, e.g. {kind.__name__}(**options), "
                f"got {type(value).__name__}"
            )


def check_model_options(model: str, options: dict[str, Any]) -> None:
    """Validate the model's options now, before any data is read (the model itself is
    built once the data has told its number of users and items)."""
    config_class = model_class(model).config_class
    extra = sorted(set(options) - {f.name for f in fields(config_class)})
    if extra:
        raise ConfigError(f"model {model!r} has no option(s) {', '.join(extra)}")
    config_class(**options)


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
    prepared = prepare(train_data, data_config, train_config, model, model_options, items,
                        side, device)  # fmt: skip
    users, items, train_set = prepared.users, prepared.items, prepared.train_set
    positive = prepared.positive
    chosen = left_to_data(train_config)
    train_config = with_data_defaults(model, train_set, train_config)  # recorded as trained
    auto = isinstance(val_data, str) and val_data == AUTO
    val_set, val_unknown = None, None
    if val_data is not None and not auto:
        val_set, val_unknown = validation_rows(val_data, data_config, users, items)

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

    settings = _settings(data_config, train_config, chosen, side, run_config)
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
        checked = config.checkpoint_every > 0 or config.resume is not None
        history = fit(
            net, data, val, config, device=device, show_progress=show_progress,
            on_epoch_end=write_progress, checkpoint_dir=out_dir, moments=moments,
            data_key=run_key(users, items, data, val) if checked else None, **kw,
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
    settings.update(cold_start_settings(net, counts, train_config.seed))
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


def _settings(
    data_config: DataConfig,
    train_config: TrainConfig,
    chosen: list[str],
    side: SideFeatures,
    run_config: dict[str, Any] | None,
) -> dict[str, Any]:
    """The run's settings as the artifact records them (``config.json``'s ``settings``)."""
    settings: dict[str, Any] = {"data": asdict(data_config), "train": asdict(train_config)}
    settings["chosen_for_data"] = chosen
    if side.tables():
        settings["features"] = side.tables()
    if run_config is not None:
        settings["run_config"] = run_config
    return settings


def _holdout_then_refit(
    train_set: RecSysDataset, config: TrainConfig, run: Any
) -> tuple[torch.nn.Module, History, RecSysDataset | None, dict[str, Any]]:
    """No validation file: choose the epochs on rows held out of the training data, then
    (``config.refit == "all"``) retrain on every row for that many epochs.

    Returns ``(model, history of the run whose model is returned, held-out rows, what was
    held out and chosen)``. Checkpoints (``--checkpoint-every``/``--resume``) cover the
    returned run only: the refit, or with ``--refit none`` the epoch-choosing run itself;
    the epoch-choosing run is repeated, with the same seed and result, when a refit is
    resumed.
    """
    if config.resume is not None and not checkpoint_file(config.resume).is_file():
        load_checkpoint(config.resume)  # its "no checkpoint" error now, not after a run
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
    refit = config.refit != "none"  # else the choosing run is the one returned
    choose = replace(config, checkpoint_every=0, resume=None) if refit else config
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
    if not refit:
        logger.info(f"kept the holdout run's epoch {best} (--refit none)")
        return net, history, val_rows, info
    logger.info(f"chose {best} epoch(s); retraining on all {len(train_set):,} rows")
    # the held-in copy and its row index are ~0.7 GB at 20M rows: not kept beside the refit
    del fit_rows, split, net, history
    gc.collect()  # the holdout run's objects, cycles included, before the refit allocates
    net, history = run(replace(config, epochs=best, early_stop=None), train_set, None)
    return net, history, val_rows, info
