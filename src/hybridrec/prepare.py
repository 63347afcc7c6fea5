"""From a training file (or frame) to what training needs: rows read and checked, id
encoders fitted with the catalogue's and feature files' ids, memory checked, rows encoded."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hybridrec.config import DataConfig, TrainConfig
from hybridrec.data.columns import ITEM, USER, is_csv_path, parse_ids, row_error
from hybridrec.data.dataset import RecSysDataset, UnknownCounts
from hybridrec.data.encoding import CANONICAL_INT, IdEncoder
from hybridrec.data.io import interactions_from_frame, read_interactions, read_table
from hybridrec.data.seen import SeenItems
from hybridrec.data.sequences import interactions_newer
from hybridrec.errors import ConfigError, DataError
from hybridrec.features import FeatureData
from hybridrec.features.attach import SideFeatures
from hybridrec.memory import check_memory
from hybridrec.models import capabilities

logger = logging.getLogger(__name__)

DataLike = str | Path | pd.DataFrame


def load_data(data: DataLike, config: DataConfig, *, labels: bool = True) -> pd.DataFrame:
    """Read a path, or validate an in-memory frame, into the standard interaction frame.

    ``labels``: the rows are read for their labels, so a target column the options name
    must exist (see :func:`hybridrec.data.io.read_interactions`); ``False`` for files of
    positives such as a held-out test set.
    """
    if isinstance(data, pd.DataFrame):
        return interactions_from_frame(data, config, labels=labels)
    if not isinstance(data, str | os.PathLike):
        raise ConfigError(
            f"interactions must be a file path or a pandas DataFrame, got {type(data).__name__}"
        )
    return read_interactions(data, config, labels=labels)


def load_positives(data: DataLike, config: DataConfig, purpose: str) -> pd.DataFrame:
    """The positive rows of a file of held-out positives (a ranking's test set): its target
    column, when it has one, decides (after ``--threshold``), so a row labelled 0 is not
    ranked as if the user had chosen it; a file with none is refused."""
    frame = load_data(data, config, labels=False)
    check_positives(frame, data, config, purpose)
    # each distinct (user, item) pair once, by raw ids: once encoded, every unknown item
    # is index 0 and its repeats could no longer be told from distinct unknown items
    positive = frame["target"].to_numpy() > 0.5
    if not positive.all():
        frame = frame[positive].reset_index(drop=True)
    repeated = frame.duplicated([USER, ITEM]).to_numpy()
    return frame[~repeated].reset_index(drop=True) if repeated.any() else frame


@dataclass(frozen=True)
class Prepared:
    """The training data as training needs it: encoders, encoded rows, positives."""

    users: IdEncoder
    items: IdEncoder
    train_set: RecSysDataset
    positive: torch.Tensor  # (N,) bool: the rows that are positives
    seen: SeenItems


def prepare(
    train_data: DataLike,
    data_config: DataConfig,
    train_config: TrainConfig,
    model: str,
    model_options: dict[str, Any] | None,
    items: DataLike | None,
    side: SideFeatures,
    device: torch.device,
) -> Prepared:
    """Read and check the training rows, fit the id encoders (with the ids of the feature
    files and of the item catalogue), refuse options whose memory the machine lacks, and
    encode the rows."""
    train_frame = load_data(train_data, data_config)
    check_positives(train_frame, train_data, data_config)
    pointwise = capabilities(model).objective == "pointwise"
    if train_frame["target"].min() == 1 and pointwise and train_config.loss != "ce":
        logger.info(
            f"{source_name(train_data)} holds only positives: sampling {train_config.negatives} "
            f"{train_config.sampling} negatives per positive each epoch"
        )
    users = IdEncoder.fit(
        with_features(train_frame[USER].to_numpy(), side.users, data_config.user_col)
    )
    item_ids = with_features(train_frame[ITEM].to_numpy(), side.items, data_config.item_col)
    if items is not None:
        catalogue = read_item_catalog(items, data_config)
        extra = same_kind(
            catalogue, item_ids, source_name(items, "the items frame"), data_config.item_col
        )
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
    seen = seen_items(train_set, positive, users.num_embeddings, item_enc.num_embeddings)
    return Prepared(users, item_enc, train_set, positive, seen)


def validation_rows(
    val_data: DataLike, data_config: DataConfig, users: IdEncoder, items: IdEncoder
) -> tuple[RecSysDataset, UnknownCounts]:
    """The ``--val`` rows, encoded with the training encoders (unknown ids counted)."""
    val_frame = load_data(val_data, data_config)
    name = source_name(val_data, "the validation frame")
    check_positives(val_frame, val_data, data_config, "to validate on", name)
    val_set, val_unknown = RecSysDataset.from_frame(val_frame, users, items)
    logger.info(val_unknown.describe(name))
    if val_unknown.rows_with_unknown == val_unknown.rows:  # found now, not after an epoch
        raise DataError(
            name,
            f"none of its {val_unknown.rows:,} rows has both a user and an item of the "
            "training data, so there is nothing to validate on",
            expected="held-out rows of the training data's users and items",
        )
    return val_set, val_unknown


def seen_items(
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


def check_positives(
    frame: pd.DataFrame,
    data: DataLike,
    config: DataConfig,
    purpose: str = "to learn from",
    name: str | None = None,
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
        name or source_name(data),
        f"no positive rows {purpose}: {rule}",
        column=config.target_col,
        expected="at least one positive interaction",
    )


def with_features(ids: np.ndarray, features: FeatureData | None, column: str) -> np.ndarray:
    """``ids`` and the ids only a feature file names (cold users or items), in one array
    of the training ids' kind."""
    if features is None or len(features.ids) == 0:
        return ids
    source = Path(features.source).name
    return np.concatenate([ids, same_kind(features.ids, ids, source, column)])


def read_item_catalog(data: DataLike, config: DataConfig) -> np.ndarray:
    """Item ids of a catalogue file or frame (only its item column is read)."""
    frame = data if isinstance(data, pd.DataFrame) else read_table(Path(data))
    name = source_name(data, "the items frame")
    if config.item_col not in frame.columns:
        found = ", ".join(repr(str(c)) for c in frame.columns)
        raise DataError(
            name, f"the item catalogue has no column {config.item_col!r}; found {found}"
        )
    if len(frame) == 0:
        raise DataError(name, "the item catalogue has no rows", expected="item ids")
    is_csv = not isinstance(data, pd.DataFrame) and is_csv_path(Path(data))
    return parse_ids(frame[config.item_col], Path(name), config.item_col, is_csv)


def same_kind(catalogue: np.ndarray, train_ids: np.ndarray, source: str, column: str) -> np.ndarray:
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


def source_name(data: DataLike, frame_name: str = "the training frame") -> str:
    """How an error names ``data``: the file's name, or ``frame_name`` for a frame."""
    return Path(data).name if not isinstance(data, pd.DataFrame) else frame_name
