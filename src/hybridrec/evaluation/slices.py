"""Where a model fails: full-protocol results per user and by group, since averages hide
that a model can serve heavy users well and newcomers badly, or hit only popular items.

- :func:`per_user_frame`: one row per evaluated user (raw id, activity, every metric);
- :func:`by_user_activity`: mean metrics per quartile of the users' training interactions;
- :func:`by_item_popularity`: hit rate, NDCG and MRR of the held-out items per quartile of
  their training popularity (each held-out item counts once, so a user with several
  test items contributes to several bins);
- :func:`full_report`: all of it, and the beyond-accuracy metrics, from one ranking pass.

Bins are quartiles of the values themselves (integers), ``(lo, hi]`` ranges named
``"lo+1-hi"``; repeated quartiles (many users with the same count) merge bins, so there
can be fewer than four.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from hybridrec.data.encoding import IdEncoder
from hybridrec.errors import ConfigError
from hybridrec.evaluation.beyond import ItemPopularity, beyond_accuracy
from hybridrec.evaluation.metrics import check_ks
from hybridrec.evaluation.protocols import FullRanking, rank_full
from hybridrec.files import atomic_write
from hybridrec.models.featured import FeaturedEmbedding


def quartile_edges(values: np.ndarray) -> list[int]:
    """Integer bin edges ``[min - 1, q1, q2, q3, max]`` (duplicates dropped): bin j holds
    the values in ``(edges[j], edges[j + 1]]``.

    Example:
        >>> quartile_edges(np.array([1, 2, 3, 4, 5, 6, 7, 8]))
        [0, 2, 4, 6, 8]
        >>> quartile_edges(np.array([1, 1, 1, 1, 9]))
        [0, 1, 9]
    """
    values = np.asarray(values, dtype=np.int64)
    if len(values) == 0:
        return []
    inner = np.floor(np.quantile(values, [0.25, 0.5, 0.75], method="lower")).astype(np.int64)
    edges = [int(values.min()) - 1, *(int(e) for e in inner), int(values.max())]
    return sorted(set(edges))


def bin_of(values: np.ndarray, edges: list[int]) -> np.ndarray:
    """Index of each value's bin of :func:`quartile_edges`."""
    return np.searchsorted(np.asarray(edges[1:-1]), np.asarray(values), side="left")


def bin_labels(edges: list[int]) -> list[str]:
    """``"lo-hi"`` (inclusive integers) per bin, ``"n"`` when it holds one value."""
    labels = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        labels.append(str(hi) if lo + 1 == hi else f"{lo + 1}-{hi}")
    return labels


def user_activity(
    ranking: FullRanking, train_user_idx: torch.Tensor, train_item_idx: torch.Tensor
) -> np.ndarray:
    """Distinct training items of each evaluated user (the same count as popularity's)."""
    u = torch.as_tensor(train_user_idx).long().cpu().reshape(-1)
    i = torch.as_tensor(train_item_idx).long().cpu().reshape(-1)
    u, i = u[i != 0], i[i != 0]  # items the model does not know are not counted
    span = int(i.max()) + 1 if len(i) else 1
    key = torch.unique(u * span + i)
    size = max(int(ranking.users.max()) if len(ranking.users) else 0, int(u.max()) if len(u) else 0)
    per_user = torch.bincount(key // span, minlength=size + 1)
    return per_user[ranking.users].numpy()


def per_user_frame(
    ranking: FullRanking,
    users: IdEncoder,
    activity: np.ndarray,
    user_col: str,
    extra: dict[str, torch.Tensor] | None = None,
) -> pd.DataFrame:
    """One row per evaluated user: raw id (named like the data's user column), training
    interactions, held-out items, then every per-user metric (``extra``: more of them,
    such as the beyond-accuracy ones)."""
    frame = pd.DataFrame(
        {
            user_col: users.inverse_transform(ranking.users.numpy()),
            "train_interactions": activity,
            "test_items": ranking.num_relevant.numpy(),
        }
    )
    for name, values in {**ranking.per_user, **(extra or {})}.items():
        frame[name] = values.numpy()
    return frame


def by_user_activity(per_user: dict[str, torch.Tensor], activity: np.ndarray) -> dict[str, Any]:
    """Mean of every per-user metric in each quartile of training interactions.

    Returns ``{"by", "edges", "bins": [{"range", "users", metric: mean, ...}]}``.
    """
    edges = quartile_edges(activity)
    which = bin_of(activity, edges)
    bins = []
    for j, label in enumerate(bin_labels(edges)):
        mine = torch.as_tensor(which == j)
        row: dict[str, Any] = {"range": label, "users": int(mine.sum())}
        for name, values in per_user.items():
            row[name] = _nanmean(values[mine])
        bins.append(row)
    return {"by": "training interactions per user", "edges": edges, "bins": bins}


def by_item_popularity(
    ranking: FullRanking, popularity: ItemPopularity, ks: list[int]
) -> dict[str, Any]:
    """HR@K, NDCG@K and MRR of the held-out items, per quartile of their training
    popularity (training users per item; unknown items left out).

    Per held-out item: hr@K = 1 when ranked in the top K, ndcg@K = 1 / log2(rank + 2) when
    it is, mrr = 1 / (rank + 1); with one held-out item per user these are the user's
    HR, NDCG and MRR.
    """
    filled = torch.arange(ranking.items.shape[1])[None, :] < ranking.num_relevant[:, None]
    known = filled & (ranking.items != 0)
    items, ranks = ranking.items[known], ranking.ranks[known]
    counts = popularity.counts[items].numpy()
    edges = quartile_edges(counts)
    which = bin_of(counts, edges)
    bins = []
    for j, label in enumerate(bin_labels(edges)):
        mine = torch.as_tensor(which == j)
        rank = ranks[mine]
        row: dict[str, Any] = {"range": label, "items": int(mine.sum())}
        for k in ks:
            hit = rank < k
            row[f"hr@{k}"] = _nanmean(hit.double())
            row[f"ndcg@{k}"] = _nanmean(torch.where(hit, 1.0 / torch.log2(rank + 2.0), 0.0))
        row["mrr"] = _nanmean(1.0 / (rank + 1.0))
        bins.append(row)
    return {"by": "training users per held-out item", "edges": edges, "bins": bins}


def _nanmean(values: torch.Tensor) -> float:
    values = values.double()
    values = values[~torch.isnan(values)]
    return float(values.mean()) if len(values) else math.nan


#: ``--per-user`` file formats by suffix.
PER_USER_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl"}


def per_user_format(path: str | Path) -> str:
    """The format of a ``--per-user`` file from its suffix; a clear error for another."""
    fmt = PER_USER_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"--per-user {Path(path).name}: name the file with one of "
            f"{', '.join(sorted(PER_USER_FORMATS))} (the format follows the suffix)"
        )
    return fmt


def write_per_user(frame: pd.DataFrame, path: str | Path) -> None:
    """Write the per-user frame atomically (the file appears only when complete)."""
    fmt = per_user_format(path)

    def write(f: IO[bytes]) -> None:
        if fmt == "parquet":
            frame.to_parquet(f, index=False)
        elif fmt == "csv":
            f.write(frame.to_csv(index=False).encode("utf-8"))
        else:
            f.write(frame.to_json(orient="records", lines=True).encode("utf-8"))

    atomic_write(path, write)


@dataclass
class FullReport:
    """The full protocol with everything beyond the averages: ``metrics`` (ranking and
    beyond-accuracy), ``slices`` (by user activity and held-out item popularity) and
    ``per_user`` (one row per evaluated user); ``top`` (users, max K) the recommended item
    indices and ``popularity`` the training popularity they were described with, for
    plots that need the lists themselves (``hybridrec report``)."""

    metrics: dict[str, float]
    beyond: dict[str, float]
    slices: dict[str, Any]
    per_user: pd.DataFrame
    top: torch.Tensor | None = None
    popularity: ItemPopularity | None = None


def full_report(
    model: nn.Module,
    users: IdEncoder,
    train_user_idx: torch.Tensor,
    train_item_idx: torch.Tensor,
    test_user_idx: torch.Tensor,
    test_item_idx: torch.Tensor,
    num_items: int,
    ks: Sequence[int],
    user_col: str = "userId",
    show_progress: bool = False,
) -> FullReport:
    """Rank once with the full protocol, then derive the beyond-accuracy metrics from the
    top-K lists and the slices from the per-user results (no second scoring pass)."""
    ks = check_ks(ks)
    ranking = rank_full(
        model, train_user_idx, train_item_idx, test_user_idx, test_item_idx, num_items,
        ks=ks, show_progress=show_progress, keep_top=True,
    )  # fmt: skip
    popularity = ItemPopularity.from_pairs(train_user_idx, train_item_idx, num_items)
    assert ranking.top is not None
    beyond, beyond_per_user = beyond_accuracy(
        ranking.top, ks, popularity, item_feature_tokens(model)
    )
    activity = user_activity(ranking, train_user_idx, train_item_idx)
    all_per_user = {**ranking.per_user, **beyond_per_user}
    slices = {
        "user_activity": by_user_activity(all_per_user, activity),
        "item_popularity": by_item_popularity(ranking, popularity, ks),
    }
    frame = per_user_frame(ranking, users, activity, user_col, beyond_per_user)
    return FullReport(ranking.metrics, beyond, slices, frame, ranking.top, popularity)


def item_feature_tokens(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The encoded item attributes (tokens, weights) of a model with item features."""
    table = getattr(model, "item_embedding", None)
    if not isinstance(table, FeaturedEmbedding):
        return None
    return table.feature_tokens.cpu(), table.feature_weights.cpu()
