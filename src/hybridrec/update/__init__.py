"""Update a trained model with new users, items and interactions, without a full retrain.

``hybridrec update --model OLD --train new.csv --out NEW`` (or ``--events LOG``):

1. the id encoders are extended: every existing id keeps its index, new users and items
   (from the new rows, ``--items`` and the feature files) are appended;
2. the tables grow (:mod:`hybridrec.update.grow`): new rows start from their features when
   the model has them, otherwise from the mean row; Adam's saved state grows with them, so
   training continues rather than restarts;
3. training runs on the new positives, the whole history of every user they touch and a
   replay sample of the others (:mod:`hybridrec.update.rows`), for the epochs that predict
   each touched user's latest new positive best (held out; at most the parent's epochs);
4. the seen items and counts take the new positives; the new artifact records its parent,
   what it was updated with and a watermark (the last event id consumed, the latest
   timestamp), and loads like any other. ``OLD`` is never modified.

Popularity adds the new counts (nothing to train); sasrec appends the new items to each
touched user's history and trains next-item prediction on those histories.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hybridrec.artifact import load_moments, read_metrics
from hybridrec.config import DataConfig, TrainConfig
from hybridrec.data.encoding import IdEncoder
from hybridrec.data.io import ITEM, TARGET, TIMESTAMP, USER, interactions_from_frame
from hybridrec.data.seen import SeenItems
from hybridrec.errors import ConfigError, DataError
from hybridrec.features.popularity import cold_start_settings
from hybridrec.features.read import read_feature_rows
from hybridrec.features.table import FeatureTable
from hybridrec.files import check_output_dir
from hybridrec.model_dir import model_dir_path, output_dir
from hybridrec.models import capabilities
from hybridrec.models.featured import FeaturedEmbedding
from hybridrec.prepare import load_data, read_item_catalog, source_name
from hybridrec.recommend import Recommender
from hybridrec.runtime import threads_for
from hybridrec.training import History
from hybridrec.training.scale import with_data_defaults
from hybridrec.update.grow import Growth, grow_model, grow_moments, grow_seen
from hybridrec.update.lineage import lineage
from hybridrec.update.rows import (
    NewRows,
    hold_out_latest,
    seen_ages,
    seen_histories,
    sequence_histories,
    update_rows,
)
from hybridrec.update.train import mark_trained, store_histories, train_update

logger = logging.getLogger(__name__)

#: What an update trains: ``rows`` (the touched users' and new items' rows, everything else
#: frozen) or ``all`` (every weight, with a replay sample against drift). On the ML-100K
#: val split (3 seeds, last 10% by time) ``rows`` gave sampled HR@10 0.690 / NDCG@10 0.427
#: against 0.688 / 0.417 for ``all`` and 0.699 / 0.427 for a full retrain: training every
#: weight on a tenth of the data moved the model away from the other users.
SCOPES = ("rows", "all")
#: Default ``replay`` of ``scope="all"``: untouched users' rows per row of the touched users.
REPLAY = 1.0

DataLike = str | Path | pd.DataFrame


@dataclass
class UpdateResult:
    """What :func:`update` returns: the updated model and what the update did."""

    recommender: Recommender
    history: History
    info: dict[str, Any]


def update(
    model_dir: str | Path,
    data: DataLike | None = None,
    *,
    out: str | Path,
    events: str | Path | None = None,
    items: DataLike | None = None,
    user_features: DataLike | None = None,
    item_features: DataLike | None = None,
    epochs: int | None = None,
    replay: float | None = None,
    seed: int = 0,
    learning_rate: float | None = None,
    num_threads: int = 1,
    device: str = "auto",
    show_progress: bool = False,
    run_config: dict[str, Any] | None = None,
    scope: str = "rows",
    columns: dict[str, str] | None = None,
) -> UpdateResult:
    """Update the model in ``model_dir`` with new interactions and save it to ``out``.

    Args:
        model_dir: the trained model (never modified).
        data: new interactions (a CSV/Parquet path or a frame, in the columns the model was
            trained with); positives are learned from, other rows are counted and left out.
        out: the new model's directory (not ``model_dir``).
        events: an event log of ``hybridrec serve --events`` instead of ``data``: the
            events after the model's watermark are used.
        items: a catalogue file of items to know even without interactions.
        user_features, item_features: feature files for new users and items of a model
            trained with features (columns as at training; known ids are left as they are).
        epochs: passes over the update's rows. Default: chosen by early stopping on each
            touched user's latest new positive, held out (users with one new positive keep
            it), at most the epochs the parent's training chose (its holdout's best epoch,
            else the epochs it trained); the held-out rows are not trained on but are seen
            items. 0 grows the model and its seen items without training (new rows from
            features or the mean row).
        replay: untouched users' rows to train on, per row of the touched users' (new rows
            and their histories); default 1.0 with ``scope="all"``, 0 with ``"rows"`` (the
            untouched users' rows are frozen then).
        seed: shuffling, sampling and which users are replayed.
        learning_rate: default: the parent's.
        num_threads, device: as for training.
        scope: ``"rows"`` (default) trains only the rows of the users the update touches
            and of the new items, every other weight frozen, so users the update does not
            concern keep their scores; ``"all"`` trains every weight (see :data:`SCOPES`).
        columns: ``user_col``/``item_col``/``target_col`` of this update's files when
            they differ from the columns the model was trained with.
        run_config: the command's resolved options (:mod:`hybridrec.configfile`), saved as
            the new model's ``run_config`` (``hybridrec info`` prints them); the parent's
            training options are not carried over (its path is recorded instead).

    Raises:
        ConfigError: a bad option, ``out`` is ``model_dir``, or no new positives.
        ArtifactError: ``model_dir`` is not a loadable model.
        DataError: the new data is unreadable or invalid (file, row and column named).
    """
    if scope not in SCOPES:
        raise ConfigError(f"--scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if scope == "rows" and replay:  # untouched users' weights are frozen: it would do nothing
        raise ConfigError(
            f"--replay {replay} needs --scope all: with --scope rows every untouched user's "
            "weights are frozen, so replaying their rows changes nothing"
        )
    if replay is None:
        replay = REPLAY if scope == "all" else 0.0
    _check_options(data, events, epochs, replay)
    with threads_for(num_threads):  # the caller's count is back afterwards
        out = model_dir_path(out)
        if Path(out).resolve() == Path(model_dir).resolve():
            raise ConfigError(
                f"--out {out} is the model being updated; an update writes a new model and leaves "
                "the old one as it is: give another --out"
            )
        check_output_dir(out, "--out")  # before the parent is read: a bad --out costs nothing
        parent = Recommender.load(model_dir)
        settings = parent.config.get("settings", {})
        data_config = replace(DataConfig(**settings.get("data", {})), **(columns or {}))
        train_config = _train_config(settings, model_dir, epochs, seed, learning_rate, device)
        # early stopping guards "all" against drift; "rows" cannot drift and uses every new row
        grow_only, choose_epochs = epochs == 0, epochs is None and scope == "all"
        with output_dir(out, train_config):
            frame, source, event_id = _new_interactions(data, events, parent, data_config)
            return _update(
                parent, Path(model_dir), frame, source, event_id,
                out=Path(out), data_config=data_config, train_config=train_config,
                items=items, user_features=user_features, item_features=item_features,
                replay=replay, show_progress=show_progress, grow_only=grow_only,
                choose_epochs=choose_epochs,
                run_config=run_config, scope=scope,
            )  # fmt: skip


def _check_options(
    data: DataLike | None, events: str | Path | None, epochs: int | None, replay: float
) -> None:
    if (data is None) == (events is None):
        raise ConfigError("give the new interactions as --train FILE or --events LOG (one)")
    if epochs is not None and (isinstance(epochs, bool) or not 0 <= epochs <= 10_000):
        raise ConfigError(f"--epochs must be an integer in 0..10000, got {epochs!r}")
    if not (isinstance(replay, int | float) and math.isfinite(replay) and 0 <= replay <= 1000):
        raise ConfigError(f"--replay must be a number in 0..1000, got {replay!r}")


def _train_config(
    settings: dict[str, Any],
    model_dir: str | Path,
    epochs: int | None,
    seed: int,
    learning_rate: float | None,
    device: str,
) -> TrainConfig:
    """The parent's training settings, for ``epochs`` and without validation. A batch size
    and rate that the parent's data size chose are chosen again for the update's rows (a
    20M-row parent's batch of 8,192 would leave a small update a handful of steps)."""
    known = {f.name for f in fields(TrainConfig)}
    stored = {k: v for k, v in settings.get("train", {}).items() if k in known}
    for name in settings.get("chosen_for_data", ()):
        if name in stored:
            stored[name] = None
    if "ks" in stored:
        stored["ks"] = tuple(stored["ks"])
    if epochs is None:
        epochs = _parent_epochs(settings, model_dir)
    config = TrainConfig(**stored)
    return replace(
        config,
        epochs=max(1, epochs),  # 0 (grow only) is handled by the caller
        seed=seed,
        learning_rate=learning_rate or config.learning_rate,
        device=device,
        early_stop=None,
        checkpoint_every=0,
        checkpoint_dir=None,
        resume=None,
        num_threads=config.num_threads,
    )


def _parent_epochs(settings: dict[str, Any], model_dir: str | Path) -> int:
    """The epochs the parent's training chose: its holdout's best epoch, else the epoch its
    early stopping kept (a run with ``--val``), else the epochs it trained."""
    best = settings.get("holdout", {}).get("best_epoch")
    if isinstance(best, int) and best > 0:
        return best
    metrics = read_metrics(model_dir)
    kept = metrics.get("final", {}).get("best_epoch")
    if isinstance(kept, int) and kept > 0:
        return kept
    return max(1, len(metrics.get("history", [])))


def _new_interactions(
    data: DataLike | None,
    events: str | Path | None,
    parent: Recommender,
    data_config: DataConfig,
) -> tuple[pd.DataFrame, str, int | None]:
    """The new rows as the standard frame, where they came from, and the last event id."""
    if events is None:
        assert data is not None
        name = "<DataFrame>" if isinstance(data, pd.DataFrame) else str(data)
        return load_data(data, data_config), name, None
    from hybridrec.events import read_events, watermark_of

    after = watermark_of(parent.config)
    raw, last = read_events(
        events,
        after,
        user_col=data_config.user_col,
        item_col=data_config.item_col,
        target_col=data_config.target_col,
        time_col="timestamp",
    )
    if len(raw) == 0:
        raise ConfigError(
            f"{events} has no events after this model's watermark (event {after}); nothing "
            "to update with"
        )
    if raw["timestamp"].isna().any():  # the log's order (arrival) is the time order then
        if raw["timestamp"].notna().any():
            logger.info(f"{events}: some events have no timestamp; using the log's order")
        raw = raw.drop(columns=["timestamp"])
    source = f"events:{events}"
    return interactions_from_frame(raw, data_config, source=source), source, last


def _update(
    parent: Recommender,
    parent_dir: Path,
    frame: pd.DataFrame,
    source: str,
    event_id: int | None,
    *,
    out: Path,
    data_config: DataConfig,
    train_config: TrainConfig,
    items: DataLike | None,
    user_features: DataLike | None,
    item_features: DataLike | None,
    replay: float,
    show_progress: bool,
    grow_only: bool,
    choose_epochs: bool,
    run_config: dict[str, Any] | None,
    scope: str,
) -> UpdateResult:
    positive = frame[TARGET].to_numpy() > 0.5
    if not positive.any():
        raise ConfigError(f"{source} has no positive interactions; an update learns from them")
    if (~positive).any():  # said plainly: a labelled model's update does not learn from them
        logger.warning(
            f"{source}: {int((~positive).sum()):,} rows are labelled negative (0, or below "
            "--threshold) and are left out: an update learns from positives against sampled "
            "negatives, so it does not learn from labelled ones (a model trained on labels "
            "keeps learning from them only by a full retrain, hybridrec train)"
        )
    new_frame = frame.loc[positive]
    if TIMESTAMP in new_frame.columns:
        new_frame = new_frame.sort_values(TIMESTAMP, kind="stable")
    users, item_enc = _grown_encoders(
        parent, new_frame, source, items, user_features, item_features, data_config
    )
    growth = Growth(
        parent.users.num_embeddings, parent.items.num_embeddings,
        users.num_embeddings, item_enc.num_embeddings,
    )  # fmt: skip
    new = NewRows(
        users.transform(new_frame[USER].to_numpy()),
        item_enc.transform(new_frame[ITEM].to_numpy()),
        timed=TIMESTAMP in new_frame.columns,
    )
    model = grow_model(parent.model, growth)
    _set_features(model, parent, users, item_enc, growth, user_features, item_features)
    declared = capabilities(model)
    histories = (
        sequence_histories(parent.model.histories)  # type: ignore[arg-type]
        if declared.sequences
        else seen_histories(parent.seen or _no_seen(parent))
    )
    train_new, val = new, None
    if choose_epochs and declared.trainable and not grow_only:
        train_new, val = hold_out_latest(new)
        if len(val) == 0:
            val = None
    ages = None if declared.sequences else seen_ages(parent.seen or _no_seen(parent))
    rows = update_rows(train_new, histories, replay, train_config.seed,
                       ordered=declared.sequences, ages=ages)  # fmt: skip
    train_config = with_data_defaults(model, rows.data, train_config)  # recorded as trained
    moments = _grown_moments(parent, parent_dir, growth)
    kept = model.histories.clone() if declared.sequences else None  # type: ignore[union-attr]
    if grow_only and declared.trainable:  # no id row trains: none is marked as trained
        history = History()
    else:
        cold = mark_trained(model, rows)
        history = train_update(
            model, rows, new, val, train_config, moments, show_progress, growth, scope, cold
        )
    if kept is not None:  # with every new item, the held-out latest ones too
        full = rows if val is None else update_rows(new, histories, 0.0, 0, ordered=True)
        store_histories(model, full.data, kept)
    seen = grow_seen(parent.seen or _no_seen(parent), growth, new.user_idx, new.item_idx)
    info = lineage(
        parent, parent_dir, frame, new_frame, source, event_id, growth, rows, train_config,
        grow_only,
    )  # fmt: skip
    info["update"]["replay"] = replay
    if val is not None and history.epochs:
        info["update"].update(
            epochs=history.best.epoch, max_epochs=train_config.epochs, held_out_rows=len(val)
        )
    settings = {**parent.config.get("settings", {}), **info}
    # refitted on every positive so far: new items with rows leave the cold set
    settings.update(cold_start_settings(model.cpu(), seen.item_counts, train_config.seed))
    settings.pop("run_config", None)  # the parent's command; its path is in "update"
    if run_config is not None:
        settings["run_config"] = run_config
    recommender = Recommender(
        model.cpu().eval(), users, item_enc, model_name=parent.model_name,
        config={"settings": settings}, seen=seen,
    )  # fmt: skip
    metrics = {"history": history.to_list(), "update": info["update"]}
    recommender.save(out, metrics=metrics, moments=moments or None)
    logger.info(f"saved the updated model to {out}")
    return UpdateResult(recommender, history, info)


def _no_seen(parent: Recommender) -> SeenItems:
    return SeenItems.empty(parent.users.num_embeddings, parent.items.num_embeddings)


def _grown_encoders(
    parent: Recommender,
    new_frame: pd.DataFrame,
    new_source: str,
    items: DataLike | None,
    user_features: DataLike | None,
    item_features: DataLike | None,
    data_config: DataConfig,
) -> tuple[IdEncoder, IdEncoder]:
    """The parent's encoders with the new users and items appended (from the rows, the
    catalogue and the feature files, in that order)."""
    user_ids = [(new_source, data_config.user_col, new_frame[USER].to_numpy())]
    item_ids = [(new_source, data_config.item_col, new_frame[ITEM].to_numpy())]
    if items is not None:
        catalogue = read_item_catalog(items, data_config)
        item_ids.append((source_name(items, "the items frame"), "", catalogue))
    for source, col, out, what in (
        (user_features, data_config.user_col, user_ids, "the user features frame"),
        (item_features, data_config.item_col, item_ids, "the item features frame"),
    ):
        if source is not None:
            out.append((source_name(source, what), col, read_feature_rows(source, col)[2]))
    encoders = []
    for encoder, parts in ((parent.users, user_ids), (parent.items, item_ids)):
        for name, col, ids in parts:
            try:
                encoder = encoder.extended(ids)
            except ValueError as exc:  # text ids for an integer model: say whose
                where = f"{name}, column {col!r}" if col else name
                raise ConfigError(f"{where}: {exc}") from None
        encoders.append(encoder)
    users, item_enc = encoders
    return users, item_enc


def _set_features(
    model: torch.nn.Module,
    parent: Recommender,
    users: IdEncoder,
    items: IdEncoder,
    growth: Growth,
    user_features: DataLike | None,
    item_features: DataLike | None,
) -> None:
    """Encode the new ids' features (with the vocabularies saved at training) into the
    grown tables; new ids without a feature row get the documented default."""
    stored = parent.config.get("settings", {}).get("features", {})
    for kind, source, encoder, old in (
        ("users", user_features, users, growth.old_users),
        ("items", item_features, items, growth.old_items),
    ):
        table = getattr(model, f"{kind[:-1]}_embedding", None)
        if not isinstance(table, FeaturedEmbedding):
            if source is not None:
                raise ConfigError(
                    f"this model was trained without {kind[:-1]} features; "
                    f"--{kind[:-1]}-features cannot be used to update it"
                )
            continue
        features = FeatureTable.from_dict(stored[kind])
        ids, columns = np.zeros(0), {}
        if source is not None:
            data = parent.config.get("settings", {}).get("data", {})
            id_col = data.get("user_col" if kind == "users" else "item_col", "")
            path, _, ids, columns = read_feature_rows(source, id_col)  # as training found it
            strange = sorted(set(columns) - {f.name for f in features.fields})
            if strange:
                raise DataError(
                    path, f"has column(s) {', '.join(map(repr, strange[:5]))} that are not "
                    f"{kind[:-1]} features of this model"
                )  # fmt: skip
        index = encoder.transform(ids)
        fresh = index >= old
        chosen = {
            name: [cell for cell, keep in zip(cells, fresh, strict=True) if keep]
            for name, cells in columns.items()
        }
        encoded = features.encode(chosen, index[fresh], encoder.num_embeddings, new=True)
        new = slice(old, encoder.num_embeddings)
        with torch.no_grad():
            table.feature_tokens[new] = encoded.tokens[new]
            table.feature_weights[new] = encoded.weights[new]
            table.feature_numeric[new] = encoded.numeric[new]


def _grown_moments(
    parent: Recommender, parent_dir: Path, growth: Growth
) -> dict[str, torch.Tensor]:
    moments = load_moments(parent_dir)
    if moments is None:
        if capabilities(parent.model).trainable:
            logger.info(
                f"{parent_dir} has no saved optimiser state (saved by an older hybridrec): "
                "the update starts Adam afresh"
            )
        return {}
    return grow_moments(moments, parent.model, growth)


__all__ = ["REPLAY", "SCOPES", "UpdateResult", "update"]
