"""plots.py: training_curves.png next to the model, and no curve without epochs."""

from __future__ import annotations

import math

from hybridrec.plots import plot_history
from hybridrec.training import EpochStats, History
from tests.helpers import planted, train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_training_curves_png_next_to_the_model(tmp_path):
    train_frame, val_frame = planted()
    out = tmp_path / "model"
    result = train(train_frame, val_frame, epochs=3, early_stop="hr@10", patience=1, out=out)
    png = out / "training_curves.png"
    assert png.is_file()
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert (out / "config.json").is_file()
    again = plot_history(result.history, tmp_path / "again.png")
    assert again == tmp_path / "again.png" and again.read_bytes()[:8] == PNG_MAGIC


def test_plot_history_without_epochs_returns_none(tmp_path):
    assert plot_history(History(), tmp_path / "empty.png") is None
    only_validation = History(epochs=[EpochStats(0, math.nan, math.nan, 0.0, 0.0)])
    assert plot_history(only_validation, tmp_path / "zero.png") is None
    assert not (tmp_path / "empty.png").exists() and not (tmp_path / "zero.png").exists()


def test_popularity_saves_without_a_curve(tmp_path):
    train_frame, val_frame = planted()
    train(train_frame, val_frame, model="popularity", out=tmp_path / "pop")
    assert (tmp_path / "pop" / "config.json").is_file()
    assert not (tmp_path / "pop" / "training_curves.png").exists()
