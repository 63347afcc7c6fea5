"""The report's PNGs, drawn with matplotlib (Agg, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hybridrec.plots import pyplot, save_png
from hybridrec.report.evaluate import POPULARITY_GROUPS, ModelResult

ACCURACY_PNG, ACTIVITY_PNG, POPULARITY_PNG = (
    "accuracy_at_k.png",
    "user_activity.png",
    "popularity.png",
)


def group_labels() -> list[str]:
    """Names of the popularity groups, most popular first."""
    step = 100 // POPULARITY_GROUPS
    return [f"top {step}%" if g == 0 else f"{g * step}-{(g + 1) * step}%"
            for g in range(POPULARITY_GROUPS)]  # fmt: skip


def plot_accuracy(results: Sequence[ModelResult], ks: Sequence[int], path: Path) -> Path:
    """HR@K and NDCG@K over K, one line per model."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in zip(axes, ("hr", "ndcg"), ("HR@K", "NDCG@K"), strict=True):
        for r in results:
            ax.plot(ks, [r.metrics.get(f"{metric}@{k}") for k in ks], marker="o", label=r.name)
        ax.set_xscale("log")
        ax.set_xticks(list(ks), [str(k) for k in ks])
        ax.set_xlabel("K")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    return save_png(fig, path)


def plot_activity(results: Sequence[ModelResult], k: int, path: Path) -> Path:
    """HR@K and NDCG@K per user-activity bucket (quartiles of training interactions)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    bins = results[0].slices["user_activity"]["bins"]
    x = np.arange(len(bins))
    width = 0.8 / len(results)
    for ax, metric in zip(axes, (f"hr@{k}", f"ndcg@{k}"), strict=True):
        for j, r in enumerate(results):
            values = [b.get(metric, np.nan) for b in r.slices["user_activity"]["bins"]]
            ax.bar(x + (j - (len(results) - 1) / 2) * width, values, width, label=r.name)
        ax.set_xticks(x, [b["range"] for b in bins])
        ax.set_xlabel("training interactions per user (quartiles)")
        ax.set_title(metric.upper().replace("@", "@"))
    axes[0].legend(fontsize="small")
    return save_png(fig, path)


def plot_popularity(results: Sequence[ModelResult], k: int, path: Path) -> Path:
    """Share of the top-K recommendations in each training-popularity group of items,
    beside the share of the training interactions there."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(POPULARITY_GROUPS)
    series: list[tuple[str, Any, dict[str, Any]]] = [
        ("training interactions", results[0].training_share, {"color": "grey"})
    ] + [(r.name, r.recommended_share, {}) for r in results]
    width = 0.8 / len(series)
    for j, (name, shares, style) in enumerate(series):
        ax.bar(x + (j - (len(series) - 1) / 2) * width, shares, width, label=name, **style)
    ax.set_xticks(x, group_labels())
    ax.set_xlabel("items by training popularity (most popular first, equal-size groups)")
    ax.set_ylabel("share")
    ax.set_title(f"where the top-{k} recommendations fall, against training popularity")
    ax.legend(fontsize="small")
    return save_png(fig, path)
