"""Several saved models on one split: each ranked once with the full protocol
(:func:`hybridrec.evaluation.slices.full_report`), reduced to what a report shows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybridrec.config import DataConfig
from hybridrec.errors import ConfigError, DataError

#: Popularity groups: the catalogue's items ordered by training popularity, cut into this
#: many groups of equal size (most popular first).
POPULARITY_GROUPS = 5


@dataclass
class ModelResult:
    """One model's results: ranking and beyond-accuracy metrics, the slices by user activity,
    and the share of its top-K recommendations (and of the training interactions) falling
    in each training-popularity group of items."""

    name: str
    path: str
    kind: str
    metrics: dict[str, float]
    beyond: dict[str, float]
    slices: dict[str, Any]
    recommended_share: list[float]
    training_share: list[float]


def label_models(paths: Sequence[str]) -> list[str]:
    """Short names for the table: each directory's name, or its path where names repeat."""
    names = [Path(p).name or str(p) for p in paths]
    return [n if names.count(n) == 1 else str(p) for n, p in zip(names, paths, strict=True)]


def evaluate_models(
    paths: Sequence[str],
    train: str,
    test: str,
    ks: Sequence[int],
    data_config: DataConfig,
    main_k: int,
    show_progress: bool = False,
) -> list[ModelResult]:
    """Every model on the same ``train``/``test`` files; all models are loaded (and so
    checked) before any is evaluated."""
    from hybridrec.data.dataset import RecSysDataset
    from hybridrec.evaluation.slices import full_report
    from hybridrec.prepare import load_data, load_positives
    from hybridrec.recommend import Recommender

    if len({Path(p).resolve() for p in paths}) < len(paths):  # m, m/ and ./m alike
        raise ConfigError("--models names a model twice")
    recommenders = [Recommender.load(p) for p in paths]
    train_frame = load_data(train, data_config, labels=False)
    test_frame = load_positives(test, data_config, "to rank")
    results = []
    for name, path, rec in zip(label_models(paths), paths, recommenders, strict=True):
        tr, _ = RecSysDataset.from_frame(train_frame, rec.users, rec.items)
        te, _ = RecSysDataset.from_frame(test_frame, rec.users, rec.items)
        if not bool((te.user_idx != 0).any()):  # every metric would be NaN (as evaluate)
            raise DataError(
                test,
                f"names no user the model {path} knows",
                column=data_config.user_col,
                expected="held-out rows of users in the model's training data",
            )
        report = full_report(
            rec.model, rec.users, tr.user_idx, tr.item_idx, te.user_idx, te.item_idx,
            rec.items.num_embeddings, ks, user_col=data_config.user_col,
            show_progress=show_progress,
        )  # fmt: skip
        assert report.top is not None and report.popularity is not None
        top = report.top[:, :main_k]
        training, recommended = popularity_shares(report.popularity.counts, top)
        results.append(
            ModelResult(name, str(path), rec.model_name, report.metrics, report.beyond,
                        report.slices, recommended, training)
        )  # fmt: skip
    _check_same_slices(results)
    return results


def _check_same_slices(results: list[ModelResult]) -> None:
    """The report's activity table and plot put every model's slices side by side; models
    that count their users' training interactions differently (trained on other data, or
    not knowing some of this file's items) have other slices, which would be mislabelled."""
    bins = {tuple((b["range"], b["users"]) for b in r.slices["user_activity"]["bins"])
            for r in results}  # fmt: skip
    if len(bins) > 1:
        raise ConfigError(
            "the models count the users' training interactions differently (their id maps "
            "differ: trained on other data), so their activity slices cannot share one "
            "table; report them separately"
        )


def popularity_groups(counts: torch.Tensor, groups: int = POPULARITY_GROUPS) -> np.ndarray:
    """Group of each item index (0 = most popular); the unknown item (0) gets -1.

    Items are ordered by training popularity (ties by index) and cut into ``groups``
    groups of (nearly) equal size.

    Example:
        >>> popularity_groups(torch.tensor([0, 5, 1, 3, 0]), groups=2).tolist()
        [-1, 0, 1, 0, 1]
    """
    values = counts.numpy()[1:]
    order = np.lexsort((np.arange(len(values)), -values))  # most popular first, then index
    group = np.empty(len(values), dtype=np.int64)
    group[order] = np.arange(len(values)) * groups // max(len(values), 1)
    return np.concatenate([[-1], group])


def popularity_shares(counts: torch.Tensor, top: torch.Tensor) -> tuple[list[float], list[float]]:
    """Share of the training interactions, and of the recommendations in ``top``, per
    popularity group (:func:`popularity_groups`)."""
    group = popularity_groups(counts)
    known = group >= 0
    training = np.bincount(group[known], weights=counts.numpy()[known].astype(np.float64),
                           minlength=POPULARITY_GROUPS)  # fmt: skip
    flat = top.reshape(-1).numpy()
    flat = flat[flat > 0]
    recommended = np.bincount(group[flat], minlength=POPULARITY_GROUPS).astype(np.float64)
    return _shares(training), _shares(recommended)


def _shares(values: np.ndarray) -> list[float]:
    total = float(values.sum())
    return [float(v) / total if total else float("nan") for v in values]
