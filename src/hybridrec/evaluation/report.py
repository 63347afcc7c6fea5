"""Metrics for a terminal: a few aligned lines per protocol."""

from __future__ import annotations

import math

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
    }
    for key, text in notes.items():
        if metrics.get(key):
            lines.append(f"  {metrics[key]:.0f} {text}")
    return "\n".join(lines)
