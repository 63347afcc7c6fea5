"""Training curves as a PNG next to the model: loss and validation metrics per epoch."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from hybridrec.files import atomic_write
from hybridrec.training import History


def plot_history(history: History, path: str | Path) -> Path | None:
    """Write ``path`` (PNG) with training loss/accuracy and every validation metric per epoch.

    Returns ``None`` without writing when matplotlib is missing or there is nothing to plot
    (a model without training epochs), so a plot never stops a training run from saving.
    """
    epochs = [e for e in history.epochs if e.epoch > 0]
    if not epochs:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    x = [e.epoch for e in epochs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(x, [e.train_loss for e in epochs], marker="o", label="train loss")
    if any(e.val_loss is not None for e in epochs):
        left.plot(x, [e.val_loss for e in epochs], marker="o", label="val loss")
    left.set_xlabel("epoch")
    left.set_title("loss")
    left.legend()
    right.plot(x, [e.train_accuracy for e in epochs], marker=".", label="train accuracy")
    for name in ("val_accuracy", "val_auc"):
        if any(getattr(e, name) is not None for e in epochs):
            right.plot(x, [getattr(e, name) for e in epochs], marker="o", label=name)
    for name in (epochs[-1].ranking or {}).keys():
        if name.startswith(("hr@", "ndcg@", "recall@", "mrr")):
            right.plot(x, [(e.ranking or {}).get(name) for e in epochs], marker="o", label=name)
    if history.best_epoch is not None:
        right.axvline(history.best_epoch, color="grey", linestyle="--", label="kept epoch")
    right.set_xlabel("epoch")
    right.set_title("validation")
    right.legend(fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return Path(path)


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG atomically (a reader never sees half a file) and close it."""
    plt = pyplot()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return Path(path)
