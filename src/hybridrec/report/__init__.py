"""``hybridrec report``: several saved models on one split, compared in ``report.md`` with
PNG plots (accuracy over K, by user activity, recommended-item popularity)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hybridrec.config import DataConfig
from hybridrec.errors import ConfigError
from hybridrec.evaluation.metrics import check_ks
from hybridrec.files import atomic_write_text, check_output_dir
from hybridrec.report.evaluate import ModelResult, evaluate_models
from hybridrec.report.figures import (
    ACCURACY_PNG,
    ACTIVITY_PNG,
    POPULARITY_PNG,
    plot_accuracy,
    plot_activity,
    plot_popularity,
)
from hybridrec.report.markdown import render

__all__ = ["ModelResult", "write_report"]

REPORT = "report.md"


def main_k(ks: Sequence[int]) -> int:
    """The cut-off of the single-K tables and plots: 10 when asked for, else the middle one."""
    return 10 if 10 in ks else sorted(ks)[len(ks) // 2]


def write_report(
    models: Sequence[str],
    train: str,
    test: str,
    out: str | Path,
    ks: Sequence[int] = (1, 5, 10, 20, 50),
    data_config: DataConfig | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``models`` on ``train``/``test`` and write ``report.md`` and the PNGs to
    ``out`` (checked before any model is loaded); returns the file paths and results."""
    directory = check_output_dir(out, "--out", model_ok=False)
    if not models:
        raise ConfigError("--models needs at least one model directory")
    ks = sorted(set(check_ks(ks)))
    k = main_k(ks)
    results = evaluate_models(models, train, test, ks, data_config or DataConfig(), k,
                              show_progress)  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    files = [
        plot_accuracy(results, ks, directory / ACCURACY_PNG),
        plot_activity(results, k, directory / ACTIVITY_PNG),
        plot_popularity(results, k, directory / POPULARITY_PNG),
    ]
    atomic_write_text(directory / REPORT, render(results, train, test, ks, k))
    return {"files": [str(directory / REPORT), *map(str, files)], "results": results, "k": k}
