"""Metrics for a terminal: a few aligned lines per protocol, the beyond-accuracy metrics
and the breakdowns by user activity and item popularity."""

from __future__ import annotations

import math
from typing import Any

from hybridrec.evaluation.metrics import RANKING_METRICS

_LABELS = {"hr": "HR", "ndcg": "NDCG", "recall": "Recall", "precision": "Precision", "map": "MAP"}


def format_metrics(metrics: dict[str, float], protocol: str) -> str:
    """A few lines for a terminal: one per K, then MRR/AUC, then any skipped or dropped rows.

    Args:
        metrics: a dict from :func:`evaluate_full` or :func:`evaluate_sampled`.
        protocol: ``"full"``, ``"sampled"`` or any label to print as is.

    Example:
        >>> print(format_metrics({"hr@10": 0.5, "ndcg@10": 0.25, "mrr": 0.2, "auc": 0.9,
        ...                       "users": 4.0}, "full"))
        full ranking (all items not in train), 4 users:
          HR@10 0.5000  NDCG@10 0.2500
          MRR 0.2000  AUC 0.9000
    """
    if protocol == "full":
        label = "full ranking (all items not in train)"
    elif protocol == "sampled":
        negatives = metrics.get("negatives", float("nan"))
        count = (
            f"{negatives:.0f}"
            if math.isfinite(negatives) and negatives == round(negatives)
            else f"~{negatives:.1f}"
        )
        label = f"sampled (test item vs {count} negatives)"
    elif protocol == "cold":
        label = f"cold (test items among the {metrics.get('candidates', 0):.0f} test items)"
    else:
        label = protocol
    users = metrics.get("users")
    header = label + (f", {users:.0f} users" if users is not None else "")
    if metrics.get("queries") is not None and metrics.get("queries") != users:
        header += f" ({metrics['queries']:.0f} test items)"
    lines = [header + ":"]
    ks = sorted({int(key.split("@")[1]) for key in metrics if "@" in key})
    for k in ks:
        parts = [
            f"{_LABELS[name]}@{k} {metrics[f'{name}@{k}']:.4f}"
            for name in RANKING_METRICS
            if f"{name}@{k}" in metrics
        ]
        lines.append("  " + "  ".join(parts))
    tail = [f"{name.upper()} {metrics[name]:.4f}" for name in ("mrr", "auc") if name in metrics]
    if tail:
        lines.append("  " + "  ".join(tail))
    notes = {
        "unknown_test_users": "test rows with an unknown user skipped",
        "unknown_test_items": "test rows with an unknown item counted as misses",
        "unknown_candidates": "candidates with an unknown id dropped",
        "test_items_without_candidates": "test rows without candidates skipped",
        "test_items_in_train": "test items the user also has in training, ranked as usual "
        "(a test file that overlaps train lifts every figure)",
    }
    for key, text in notes.items():
        if metrics.get(key):
            lines.append(f"  {metrics[key]:.0f} {text}")
    return "\n".join(lines)


def format_beyond(metrics: dict[str, float]) -> str:
    """Beyond-accuracy metrics (:func:`hybridrec.evaluation.beyond.beyond_accuracy`), one
    line per K.

    Example:
        >>> print(format_beyond({"coverage@10": 0.25, "gini@10": 0.8, "popularity@10": 120.0,
        ...                      "novelty@10": 2.5, "tail@10": 0.1, "tail_items": 900.0,
        ...                      "catalogue_items": 1000.0}))
        beyond accuracy of the top-K lists (catalogue 1,000 items, long tail 900):
          @10  coverage 0.2500  Gini 0.8000  popularity 120.0  novelty 2.500 bits  tail 0.1000
    """
    ks = sorted({int(key.split("@")[1]) for key in metrics if key.startswith("coverage@")})
    head = (
        f"beyond accuracy of the top-K lists (catalogue {metrics.get('catalogue_items', 0):,.0f}"
        f" items, long tail {metrics.get('tail_items', 0):,.0f}):"
    )
    lines = [head]
    for k in ks:
        parts = [
            f"@{k}",
            f"coverage {metrics[f'coverage@{k}']:.4f}",
            f"Gini {metrics[f'gini@{k}']:.4f}",
            f"popularity {metrics[f'popularity@{k}']:.1f}",
            f"novelty {metrics[f'novelty@{k}']:.3f} bits",
            f"tail {metrics[f'tail@{k}']:.4f}",
        ]
        if f"diversity@{k}" in metrics:
            parts.append(f"diversity {metrics[f'diversity@{k}']:.4f}")
        lines.append("  " + "  ".join(parts))
    return "\n".join(lines)


def format_slices(slices: dict[str, Any], ks: list[int]) -> str:
    """The breakdowns of :func:`hybridrec.evaluation.slices.full_report` as two small tables
    of HR@K and NDCG@K per bin, with the bins' ranges."""
    lines = []
    titles = {
        "user_activity": ("by user activity", "interactions", "users"),
        "item_popularity": ("by popularity of the held-out item", "users/item", "items"),
    }
    for key, (title, column, count) in titles.items():
        part = slices.get(key)
        if not part or not part["bins"]:
            continue
        edges = ", ".join(str(e) for e in part["edges"][1:-1]) or "-"
        lines.append(f"{title} ({part['by']}; quartile edges {edges}):")
        names = [f"{m}@{k}" for k in ks for m in ("hr", "ndcg")]
        header = f"  {column:<14}{count:>7}" + "".join(f"{_label(n):>10}" for n in names)
        lines.append(header)
        for row in part["bins"]:
            cells = "".join(f"{_number(row.get(n)):>10}" for n in names)
            lines.append(f"  {row['range']:<14}{row[count]:>7,}" + cells)
    return "\n".join(lines)


def _label(name: str) -> str:
    metric, _, k = name.partition("@")
    return f"{_LABELS[metric]}@{k}"


def _number(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"
