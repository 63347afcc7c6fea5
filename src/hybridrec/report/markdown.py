"""``report.md``: the models' results as Markdown tables, with the PNGs beside it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hybridrec.report.evaluate import ModelResult
from hybridrec.report.figures import ACCURACY_PNG, ACTIVITY_PNG, POPULARITY_PNG, group_labels


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; numbers right-aligned, text left-aligned.

    Example:
        >>> print(table(["model", "HR@10"], [["mf", 0.25]]))
        | model | HR@10 |
        |:--|--:|
        | mf | 0.2500 |
    """
    align = ["--:" if rows and isinstance(rows[0][j], int | float) else ":--"
             for j in range(len(header))]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4f}"
    return str(value).replace("|", "\\|")


def accuracy_table(results: Sequence[ModelResult], ks: Sequence[int]) -> str:
    header = ["model", "type", "users", *[f"HR@{k}" for k in ks],
              *[f"NDCG@{k}" for k in ks], "MRR", "AUC"]  # fmt: skip
    rows = [[r.name, r.kind, int(r.metrics.get("users", 0)),
             *[r.metrics.get(f"hr@{k}", math.nan) for k in ks],
             *[r.metrics.get(f"ndcg@{k}", math.nan) for k in ks],
             r.metrics.get("mrr", math.nan), r.metrics.get("auc", math.nan)]
            for r in results]  # fmt: skip
    return table(header, rows)


def beyond_table(results: Sequence[ModelResult], k: int) -> str:
    names = ["coverage", "gini", "popularity", "novelty", "tail"]
    header = ["model", *[f"{n}@{k}" for n in names]]
    rows = [[r.name, *[r.beyond.get(f"{n}@{k}", math.nan) for n in names]] for r in results]
    return table(header, rows)


def activity_table(results: Sequence[ModelResult], k: int) -> str:
    bins = results[0].slices["user_activity"]["bins"]
    header = ["training interactions", "users", *[f"{r.name} NDCG@{k}" for r in results]]
    rows = []
    for j, b in enumerate(bins):
        values = [_bin(r, j).get(f"ndcg@{k}", math.nan) for r in results]
        rows.append([b["range"], int(b["users"]), *values])
    return table(header, rows)


def _bin(result: ModelResult, j: int) -> dict[str, Any]:
    bins = result.slices["user_activity"]["bins"]
    return bins[j] if j < len(bins) else {}


def popularity_table(results: Sequence[ModelResult]) -> str:
    header = ["items by training popularity", "training interactions", *[r.name for r in results]]
    rows = [[label, results[0].training_share[g], *[r.recommended_share[g] for r in results]]
            for g, label in enumerate(group_labels())]  # fmt: skip
    return table(header, rows)


def render(results: Sequence[ModelResult], train: str, test: str, ks: Sequence[int],
           k: int) -> str:  # fmt: skip
    """The whole report."""
    catalogue = int(results[0].beyond.get("catalogue_items", 0))
    parts = [
        "# hybridrec report",
        f"Models evaluated on the same split: training `{train}`, test `{test}`. Full "
        "protocol: every item a user did not interact with in training is a candidate; ties "
        f"count against the model. Catalogue: {catalogue:,} items.",
        "## Accuracy",
        accuracy_table(results, ks),
        f"![HR@K and NDCG@K over K]({ACCURACY_PNG})",
        f"## Beyond accuracy (top {k})",
        "Coverage: share of the catalogue recommended to anyone; Gini: concentration of "
        "the recommendations on few items; popularity: mean training users of a "
        "recommended item; novelty: mean self-information in bits; tail: share of "
        "long-tail items (outside the items making up 80% of the training interactions).",
        beyond_table(results, k),
        f"## By user activity (NDCG@{k})",
        "Users in quartiles of their distinct training items.",
        activity_table(results, k),
        f"![HR and NDCG by user activity]({ACTIVITY_PNG})",
        f"## Recommended-item popularity (top {k})",
        "Items ordered by training popularity and cut into five equal groups; the share "
        "of the training interactions, and of each model's recommendations, in each group.",
        popularity_table(results),
        f"![recommendations against training popularity]({POPULARITY_PNG})",
        "## Models",
        "\n".join(f"- **{r.name}**: `{r.path}` ({r.kind})" for r in results),
    ]
    return "\n\n".join(parts) + "\n"
